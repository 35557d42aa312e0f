"""``pifnet-infer weights list | info | download | verify | publish``."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import LocalHub, child_env, entry_dict, make_tiny_weights, run_child, write_manifest

from pifnet_infer.cli import main
from pifnet_infer.cli.weights import format_table
from pifnet_infer.weights import hub as hub_module
from pifnet_infer.weights.manifest import MANIFEST_ENV

COMMIT = "c" * 40


@pytest.fixture
def zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    (tmp_path / "weights").mkdir()
    good = make_tiny_weights(bundled / "tiny.safetensors", seed=0)
    local = make_tiny_weights(tmp_path / "weights" / "local.safetensors", seed=1)
    entries = [
        entry_dict("pifnet-tiny-x2", good, revision="a" * 40, bundled=True),
        entry_dict("pifnet-local-x2", local),
        entry_dict("pifnet-remote-x2", good, revision="b" * 40, filename="remote.safetensors"),
    ]
    monkeypatch.setenv(MANIFEST_ENV, str(write_manifest(tmp_path / "weights_manifest.json", entries)))
    monkeypatch.setattr(hub_module, "bundled_dir", lambda: bundled)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    return tmp_path


def test_format_table_aligns() -> None:
    text = format_table(["A", "LONGER"], [["xxxx", 1], ["y", 22]])
    assert text.splitlines() == ["A     LONGER", "----  ------", "xxxx  1", "y     22"]


def test_list(zoo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0]
    assert header.split() == ["NAME", "HSI", "MSI", "RATIO", "MSI", "SRF", "SIZE", "LOCATION", "LICENCE"]
    assert set(lines[1]) == {"-", " "}
    rows = {line.split()[0]: line for line in lines[2:]}
    assert list(rows) == ["pifnet-tiny-x2", "pifnet-local-x2", "pifnet-remote-x2"]
    location = header.index("LOCATION")
    assert rows["pifnet-tiny-x2"][location:].startswith("bundled")
    assert rows["pifnet-local-x2"][location:].startswith("checkout")
    assert rows["pifnet-remote-x2"][location:].startswith("hub ")


def test_list_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(MANIFEST_ENV, str(write_manifest(tmp_path / "m.json", [])))
    assert main(["weights", "list"]) == 0
    assert "no weights in the manifest" in capsys.readouterr().out


def test_info(zoo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "info", "pifnet-tiny-x2"]) == 0
    out = capsys.readouterr().out
    assert "hsi_bands=8  msi_bands=3  ratio=2  dim=16" in out
    assert "8 bands, 400-750 nm" in out
    assert "raw * 1 + 0 in [0, 1] reflectance" in out
    assert "bundled: " in out
    assert main(["weights", "info", "nope"]) == 1
    assert "available weights: pifnet-tiny-x2, pifnet-local-x2, pifnet-remote-x2" in capsys.readouterr().err


def test_verify_all_then_tampered(zoo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "verify"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["pifnet-tiny-x2"][1:4] == ["bundled", "ok", "ok"]
    assert rows["pifnet-local-x2"][1:4] == ["checkout", "ok", "ok"]
    assert rows["pifnet-remote-x2"][1:4] == ["-", "-", "-"]
    target = zoo / "bundled" / "tiny.safetensors"
    target.write_bytes(target.read_bytes()[:-1] + b" ")
    assert main(["weights", "verify", "pifnet-tiny-x2"]) == 1
    assert capsys.readouterr().out.splitlines()[2].split()[1:3] == ["bundled", "mismatch"]


def test_verify_path(zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "verify", str(zoo / "weights" / "local.safetensors")]) == 0
    assert capsys.readouterr().out.splitlines()[2].split()[:4] == ["pifnet-local-x2", "file", "ok", "ok"]
    stray = make_tiny_weights(tmp_path / "stray.safetensors", seed=5)
    assert main(["weights", "verify", str(stray)]) == 0
    assert capsys.readouterr().out.splitlines()[2].split()[:5] == ["-", "file", "no", "entry", "ok"]
    assert main(["weights", "verify", "pifnet-remote-x2"]) == 1
    assert "weights download pifnet-remote-x2" in capsys.readouterr().err


def test_download_and_verify_through_local_hub(tmp_path: Path) -> None:
    file = make_tiny_weights(tmp_path / "tiny.safetensors", seed=3)
    manifest = write_manifest(
        tmp_path / "m.json", [entry_dict("pifnet-tiny-x2", file, repo_id="org/tiny", revision=COMMIT)]
    )
    body = """
import contextlib, io
from pifnet_infer.cli import main
runs = []
for argv in (["weights", "download", "pifnet-tiny-x2"], ["weights", "verify"]):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    runs.append([rc, buf.getvalue()])
print(json.dumps(runs))
"""
    with LocalHub() as hub:
        hub.add_file("org/tiny", COMMIT, "tiny.safetensors", file.read_bytes())
        env = child_env(
            HF_ENDPOINT=hub.endpoint, HF_HOME=str(tmp_path / "hf"), **{MANIFEST_ENV: str(manifest)}
        )
        (rc_download, out_download), (rc_verify, out_verify) = run_child(body, env)
    assert rc_download == 0 and "sha256 verified" in out_download
    cached = Path(out_download.split(": ", 1)[1].split(" (")[0])
    assert cached.read_bytes() == file.read_bytes() and str(tmp_path / "hf") in str(cached)
    assert rc_verify == 0
    assert out_verify.splitlines()[2].split()[:4] == ["pifnet-tiny-x2", "hub-cache", "ok", "ok"]


@dataclass
class FakeApi:
    """Records what publish sends; answers like HfApi (commit id, then the uploaded file's LFS info)."""

    remote_sha: str | None = None
    calls: list = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.calls = []

    def create_repo(self, repo_id: str, **kw: object) -> None:
        self.calls.append(("create_repo", repo_id, kw))

    def create_commit(self, repo_id: str, *, operations: list, **kw: object) -> SimpleNamespace:
        self.calls.append(
            ("create_commit", repo_id, [(op.path_in_repo, op.path_or_fileobj) for op in operations])
        )
        self.uploaded = {op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations}
        return SimpleNamespace(oid=COMMIT)

    def get_paths_info(self, repo_id: str, paths: list[str], *, revision: str) -> list[SimpleNamespace]:
        self.calls.append(("get_paths_info", repo_id, revision))
        sha = self.remote_sha or hashlib.sha256(self.uploaded[paths[0]]).hexdigest()
        return [SimpleNamespace(path=paths[0], lfs=SimpleNamespace(sha256=sha))]


def test_publish_rewrites_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = make_tiny_weights(tmp_path / "old.safetensors", seed=1)
    new = make_tiny_weights(tmp_path / "pifnet-tiny-x2.safetensors", seed=2)
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "tiny.md").write_text("# tiny\n")
    entry = entry_dict("pifnet-tiny-x2", old, repo_id="org/old", filename=new.name)
    entry["model_card"] = "cards/tiny.md"
    manifest = write_manifest(tmp_path / "weights_manifest.json", [entry])
    monkeypatch.setenv(MANIFEST_ENV, str(manifest))

    api = FakeApi()
    updated = hub_module.publish_weight(new, "org/tiny", api=api)
    assert [c[0] for c in api.calls] == ["create_repo", "create_commit", "get_paths_info"]
    assert api.calls[1][2] == [(new.name, str(new)), ("README.md", str(tmp_path / "cards" / "tiny.md"))]
    assert api.calls[2] == ("get_paths_info", "org/tiny", COMMIT)
    document = json.loads(manifest.read_text())
    assert manifest.read_text() == json.dumps(document, indent=2) + "\n"
    written = document["weights"][0]
    assert (written["repo_id"], written["revision"]) == ("org/tiny", COMMIT)
    assert written["sha256"] == hashlib.sha256(new.read_bytes()).hexdigest() == updated.sha256
    assert written["size_bytes"] == new.stat().st_size
    assert {k: v for k, v in written.items() if k not in ("repo_id", "revision", "sha256", "size_bytes")} == {
        k: v for k, v in entry.items() if k not in ("repo_id", "revision", "sha256", "size_bytes")
    }


def test_publish_refusals_leave_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = make_tiny_weights(tmp_path / "tiny.safetensors", seed=1)
    entry = entry_dict("pifnet-tiny-x2", file)
    manifest = write_manifest(tmp_path / "weights_manifest.json", [entry])
    before = manifest.read_text()
    monkeypatch.setenv(MANIFEST_ENV, str(manifest))
    with pytest.raises(Exception, match=r"LFS sha256 'f+'"):
        hub_module.publish_weight(file, "org/tiny", api=FakeApi(remote_sha="f" * 64))
    other = make_tiny_weights(
        tmp_path / "x4.safetensors", seed=1, config={"hsi_bands": 8, "msi_bands": 3, "ratio": 4, "dim": 16}
    )
    api = FakeApi()
    with pytest.raises(Exception, match="holds config"):
        hub_module.publish_weight(other, "org/tiny", name="pifnet-tiny-x2", api=api)
    assert api.calls == []
    # no manifest entry has that filename
    assert main(["weights", "publish", str(other), "--repo-id", "org/tiny"]) == 1
    assert manifest.read_text() == before

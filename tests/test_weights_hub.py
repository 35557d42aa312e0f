"""Hub loading against a local Hub server, with the real hf_hub_download (issue 5, point 5).

huggingface_hub reads HF_ENDPOINT, HF_HUB_OFFLINE and HF_HOME once at import, so each
environment runs in a fresh interpreter (``run_child``). The scenarios run in order inside one
module fixture: online (server up) -> HF_HUB_OFFLINE=1 (server up, must not be asked) ->
local_files_only (server up, must not be asked) -> server stopped (cache hits only).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import (
    LocalHub,
    child_env,
    entry_dict,
    file_digest,
    make_tiny_weights,
    run_child,
    state_digest,
    write_manifest,
)

from pifnet_infer._version import __version__
from pifnet_infer.errors import ChecksumMismatchError
from pifnet_infer.weights import clear_model_cache, load_model
from pifnet_infer.weights.manifest import MANIFEST_ENV

REPO = "pifnet-test/tiny"
LATER_REPO = "pifnet-test/later"
BAD_REPO = "pifnet-test/corrupt"
R1, R2, R3, R4 = ("1" * 40, "2" * 40, "3" * 40, "4" * 40)

ONLINE = """
out = {}
out["r1"] = attempt(lambda: weights.load_model("tiny-r1", device="cpu"))
weights.clear_model_cache()
out["r1_again"] = attempt(lambda: weights.load_model("tiny-r1", device="cpu"))
out["r2"] = attempt(lambda: weights.load_model("tiny-r2", device="cpu"))
out["r1_at_r2"] = attempt(lambda: weights.load_model("tiny-r1", device="cpu", revision="2" * 40))
out["corrupt"] = attempt(lambda: weights.load_model("tiny-corrupt", device="cpu"))
out["missing"] = attempt(lambda: weights.load_model("tiny-missing", device="cpu"))
out["unknown"] = attempt(lambda: weights.load_model("no-such-weights", device="cpu"))
print(json.dumps(out))
"""

CACHED_AND_NOT = """
kw = dict(device="cpu", local_files_only=%s)
names = %r
print(json.dumps({name: attempt(lambda: weights.load_model(name, **kw)) for name in names}))
"""
EVERYTHING = ("tiny-r1", "tiny-r2", "tiny-later")
# with the server stopped, an uncached file would make huggingface_hub retry with back-off (~20 s):
# that case is covered by HF_HUB_OFFLINE / local_files_only above
CACHED = ("tiny-r1", "tiny-r2")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("hub")
    files = root / "files"
    files.mkdir()
    first = make_tiny_weights(files / "v1.safetensors", seed=1)
    second = make_tiny_weights(files / "v2.safetensors", seed=2)
    hub = LocalHub()
    hub.add_file(REPO, R1, "tiny.safetensors", first.read_bytes())
    hub.add_file(REPO, R2, "tiny.safetensors", second.read_bytes(), branch="main")
    hub.add_file(BAD_REPO, R3, "tiny.safetensors", second.read_bytes())  # manifest expects `first`
    hub.add_file(LATER_REPO, R4, "tiny.safetensors", first.read_bytes())
    manifest = write_manifest(
        root / "weights_manifest.json",
        [
            entry_dict("tiny-r1", first, repo_id=REPO, revision=R1, filename="tiny.safetensors"),
            entry_dict("tiny-r2", second, repo_id=REPO, revision=R2, filename="tiny.safetensors"),
            entry_dict("tiny-corrupt", first, repo_id=BAD_REPO, revision=R3, filename="tiny.safetensors"),
            entry_dict("tiny-missing", first, repo_id=REPO, revision=R1, filename="absent.safetensors"),
            entry_dict("tiny-later", first, repo_id=LATER_REPO, revision=R4, filename="tiny.safetensors"),
        ],
    )
    hf_home = root / "hf"
    env = {"HF_HOME": str(hf_home), MANIFEST_ENV: str(manifest)}
    result: dict = {"first": first, "second": second, "hf_home": hf_home, "manifest": manifest}
    with hub:
        env["HF_ENDPOINT"] = hub.endpoint
        result["online"] = run_child(ONLINE, child_env(**env))
        result["requests_online"] = hub.file_requests()
        result["user_agents"] = list(hub.user_agents)
        result["offline"] = run_child(
            CACHED_AND_NOT % (False, EVERYTHING), child_env(**env, HF_HUB_OFFLINE="1")
        )
        result["requests_offline"] = hub.file_requests()
        result["local_only"] = run_child(CACHED_AND_NOT % (True, EVERYTHING), child_env(**env))
        result["requests_local_only"] = hub.file_requests()
    result["stopped"] = run_child(CACHED_AND_NOT % (False, CACHED), child_env(**env))
    return result


def _cache_blobs(hf_home: Path, repo_id: str) -> dict[str, bytes]:
    folder = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}" / "blobs"
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else {}


def test_first_download_then_cache_hit_with_server_stopped(world: dict) -> None:
    first = file_digest(world["first"])
    assert world["online"]["r1"] == {"ok": first, "entry": "tiny-r1"}
    assert world["online"]["r1_again"]["ok"] == first
    heads = [r for r in world["requests_online"] if r == ("HEAD", f"/{REPO}/resolve/{R1}/tiny.safetensors")]
    assert len(heads) == 1, "a pinned, cached revision must not be asked again"
    assert any(f"pifnet-infer/{__version__}" in ua for ua in world["user_agents"])
    assert world["stopped"]["tiny-r1"]["ok"] == first
    assert world["stopped"]["tiny-r2"]["ok"] == file_digest(world["second"])


def test_two_revisions_both_honoured(world: dict) -> None:
    first, second = file_digest(world["first"]), file_digest(world["second"])
    assert first != second
    assert world["online"]["r2"] == {"ok": second, "entry": "tiny-r2"}
    # an explicit revision overrides the pin (checked against the Hub's LFS sha256)
    assert world["online"]["r1_at_r2"]["ok"] == second


def test_offline_env_with_and_without_cache(world: dict) -> None:
    offline = world["offline"]
    assert offline["tiny-r1"]["ok"] == file_digest(world["first"])
    assert offline["tiny-r2"]["ok"] == file_digest(world["second"])
    assert offline["tiny-later"]["error"] == "WeightsNotFoundError"
    assert "pifnet-infer weights download tiny-later" in offline["tiny-later"]["message"]
    assert "HF_HUB_OFFLINE" in offline["tiny-later"]["message"]
    assert world["requests_offline"] == world["requests_online"], "HF_HUB_OFFLINE=1 must not reach the server"


def test_local_files_only_with_and_without_cache(world: dict) -> None:
    local = world["local_only"]
    assert local["tiny-r1"]["ok"] == file_digest(world["first"])
    assert local["tiny-later"]["error"] == "WeightsNotFoundError"
    assert "pifnet-infer weights download tiny-later" in local["tiny-later"]["message"]
    assert "local_files_only" in local["tiny-later"]["message"]
    assert world["requests_local_only"] == world["requests_online"]


def test_corrupted_download_refused_and_cache_left_as_is(world: dict) -> None:
    corrupt = world["online"]["corrupt"]
    served = world["second"].read_bytes()
    actual, expected = (
        hashlib.sha256(served).hexdigest(),
        hashlib.sha256(world["first"].read_bytes()).hexdigest(),
    )
    assert corrupt["error"] == "ChecksumMismatchError"
    assert (
        actual in corrupt["message"]
        and expected in corrupt["message"]
        and "tiny.safetensors" in corrupt["message"]
    )
    assert _cache_blobs(world["hf_home"], BAD_REPO) == {actual: served}


def test_missing_file_and_unknown_name(world: dict) -> None:
    missing = world["online"]["missing"]
    assert missing["error"] == "WeightsNotFoundError"
    assert "absent.safetensors" in missing["message"] and REPO in missing["message"]
    unknown = world["online"]["unknown"]
    assert unknown["error"] == "WeightsNotFoundError"
    assert "tiny-r1, tiny-r2, tiny-corrupt, tiny-missing, tiny-later" in unknown["message"]


def test_tampered_cache_refused_and_left_as_is(
    world: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "hub"
    shutil.copytree(world["hf_home"] / "hub", cache, symlinks=True)
    monkeypatch.setenv(MANIFEST_ENV, str(world["manifest"]))
    clear_model_cache()
    model = load_model("tiny-r1", device="cpu", cache_dir=cache, local_files_only=True)
    assert state_digest(model.state_dict()) == file_digest(world["first"])
    clear_model_cache()
    blob = (
        cache
        / f"models--{REPO.replace('/', '--')}"
        / "blobs"
        / hashlib.sha256(world["first"].read_bytes()).hexdigest()
    )
    tampered = blob.read_bytes()[:-1] + b"\0"
    blob.write_bytes(tampered)
    with pytest.raises(ChecksumMismatchError, match="weights download tiny-r1 --force-download"):
        load_model("tiny-r1", device="cpu", cache_dir=cache, local_files_only=True)
    assert blob.read_bytes() == tampered
    clear_model_cache()

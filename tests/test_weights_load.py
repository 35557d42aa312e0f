"""load_model / save_weights in-process: file format, strict loading, cache, bundled and checkout files."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import (
    REPO_ROOT,
    TINY_CONFIG,
    entry_dict,
    file_digest,
    make_tiny_weights,
    state_digest,
    write_manifest,
)

from pifnet_infer.config import PIFNetConfig
from pifnet_infer.errors import CheckpointMismatchError, ChecksumMismatchError, WeightsNotFoundError
from pifnet_infer.weights import (
    METADATA_CONFIG_KEY,
    clear_model_cache,
    load_model,
    read_weights_config,
    save_weights,
)
from pifnet_infer.weights import hub as hub_module
from pifnet_infer.weights.manifest import MANIFEST_ENV


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_model_cache()
    yield
    clear_model_cache()


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("w") / "tiny.safetensors", seed=0)


def test_save_writes_config_metadata_and_nothing_else(tiny_file: Path) -> None:
    with safe_open(str(tiny_file), framework="pt") as handle:
        meta = handle.metadata()
    assert json.loads(meta[METADATA_CONFIG_KEY]) == PIFNetConfig(**TINY_CONFIG).to_dict()
    assert read_weights_config(tiny_file) == PIFNetConfig(**TINY_CONFIG)
    assert [p.name for p in tiny_file.parent.iterdir()] == ["tiny.safetensors"]  # no temporary file left


def test_load_path_round_trip(tiny_file: Path) -> None:
    model = load_model(tiny_file, device="cpu")
    assert not model.training
    assert model.weight_entry is None
    assert model.config == PIFNetConfig(**TINY_CONFIG)
    assert state_digest(model.state_dict()) == file_digest(tiny_file)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_cache_per_file_device_dtype(tiny_file: Path) -> None:
    a = load_model(str(tiny_file), device="cpu")
    assert load_model(tiny_file, device="cpu", dtype="float32") is a  # "auto" keeps fp32 parameters
    half = load_model(tiny_file, device="cpu", dtype="bfloat16")
    assert half is not a and all(p.dtype == torch.bfloat16 for p in half.parameters())
    clear_model_cache()
    b = load_model(tiny_file, device="cpu")
    assert b is not a and state_digest(b.state_dict()) == state_digest(a.state_dict())


def test_missing_config_metadata_refused(tiny_file: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare.safetensors"
    save_file(load_file(str(tiny_file)), str(bare))
    with pytest.raises(CheckpointMismatchError, match=re.escape(METADATA_CONFIG_KEY)):
        load_model(bare, device="cpu")


def test_key_differences_refused(tiny_file: Path, tmp_path: Path) -> None:
    state = load_file(str(tiny_file))
    meta = {METADATA_CONFIG_KEY: json.dumps(PIFNetConfig(**TINY_CONFIG).to_dict())}
    removed = "prior_conv.bias"
    state.pop(removed)
    state["extra.weight"] = torch.zeros(2)
    state["msi_head.net.0.weight"] = torch.zeros(16, 4, 3, 3)
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad), metadata=meta)
    with pytest.raises(CheckpointMismatchError) as info:
        load_model(bad, device="cpu")
    message = str(info.value)
    assert f"missing: {removed}" in message
    assert "unexpected: extra.weight" in message
    assert "mis-shaped: msi_head.net.0.weight: expected (16, 3, 3, 3), got (16, 4, 3, 3)" in message


def test_pickle_files_are_never_read(tmp_path: Path, tiny_file: Path) -> None:
    pth = tmp_path / "model.pth"
    torch.save(load_file(str(tiny_file)), pth)
    with pytest.raises(CheckpointMismatchError, match="safetensors"):
        load_model(pth, device="cpu")


def test_torch_load_only_in_convert() -> None:
    users = sorted(
        str(p.relative_to(REPO_ROOT))
        for p in (REPO_ROOT / "pifnet_infer").rglob("*.py")
        if "torch.load(" in p.read_text()
    )
    assert users == ["pifnet_infer/weights/convert.py"]


def test_reserved_metadata_refused(tmp_path: Path) -> None:
    from pifnet_infer.models import PIFNet

    model = PIFNet(PIFNetConfig(**TINY_CONFIG))
    with pytest.raises(ValueError, match="written by pifnet-infer"):
        save_weights(model, tmp_path / "x.safetensors", metadata={METADATA_CONFIG_KEY: "{}"})
    out = save_weights(model, tmp_path / "y.safetensors", metadata={"run": "42"})
    with safe_open(str(out), framework="pt") as handle:
        assert handle.metadata()["run"] == "42"


def test_missing_path_and_unknown_name(
    tmp_path: Path, tiny_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        MANIFEST_ENV, str(write_manifest(tmp_path / "m.json", [entry_dict("tiny-a", tiny_file)]))
    )
    with pytest.raises(WeightsNotFoundError, match=r"absent\.safetensors' does not exist.*weights: tiny-a"):
        load_model(tmp_path / "absent.safetensors")
    with pytest.raises(WeightsNotFoundError, match=r"'pifnet-nothing-x4'; available weights: tiny-a"):
        load_model("pifnet-nothing-x4")
    monkeypatch.setenv(MANIFEST_ENV, str(write_manifest(tmp_path / "m.json", [])))
    with pytest.raises(WeightsNotFoundError, match=r"available weights: none"):
        load_model("pifnet-nothing-x4")


# ----------------------------------------------------------------------------- manifest names, no Hub


@pytest.fixture
def zoo(tmp_path: Path, tiny_file: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A manifest with one bundled entry and one unpublished checkout entry; bundled/ lives in tmp."""
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    (tmp_path / "weights").mkdir()
    other = make_tiny_weights(tmp_path / "weights" / "local.safetensors", seed=1)
    (bundled / "tiny.safetensors").write_bytes(tiny_file.read_bytes())
    entries = [
        entry_dict("tiny-bundled", tiny_file, revision="a" * 40, bundled=True),
        entry_dict("tiny-local", other),
        entry_dict("tiny-nowhere", other, filename="nowhere.safetensors"),
    ]
    monkeypatch.setenv(MANIFEST_ENV, str(write_manifest(tmp_path / "weights_manifest.json", entries)))
    monkeypatch.setattr(hub_module, "bundled_dir", lambda: bundled)
    return tmp_path


def test_bundled_entry_loads_offline_with_entry(zoo: Path, tiny_file: Path) -> None:
    model = load_model("tiny-bundled", device="cpu", local_files_only=True)
    assert model.weight_entry.name == "tiny-bundled"
    assert model.weight_entry.input_range["max"] == 1.0
    assert state_digest(model.state_dict()) == file_digest(tiny_file)
    assert load_model("tiny-bundled", device="cpu") is model


def test_tampered_bundled_file_refused(zoo: Path) -> None:
    target = zoo / "bundled" / "tiny.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    expected = json.loads((zoo / "weights_manifest.json").read_text())["weights"][0]["sha256"]
    with pytest.raises(ChecksumMismatchError) as info:
        load_model("tiny-bundled", device="cpu")
    message = str(info.value)
    actual = hub_module.sha256_file(target)
    assert str(target) in message and expected in message and actual in message and actual != expected
    assert "pip install --force-reinstall" in message
    assert target.read_bytes() == bytes(data)  # left as it was


def test_unpublished_checkout_file(zoo: Path) -> None:
    model = load_model("tiny-local", device="cpu")
    assert state_digest(model.state_dict()) == file_digest(zoo / "weights" / "local.safetensors")
    with pytest.raises(WeightsNotFoundError, match=r"not published.*nowhere\.safetensors.*weights publish"):
        load_model("tiny-nowhere", device="cpu")


def test_manifest_config_must_match_file(zoo: Path, tiny_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = entry_dict(
        "tiny-wrong", tiny_file, revision="a" * 40, bundled=True, config={**TINY_CONFIG, "ratio": 4}
    )
    monkeypatch.setenv(MANIFEST_ENV, str(write_manifest(zoo / "m2.json", [wrong])))
    with pytest.raises(CheckpointMismatchError, match=r"tiny-wrong.*'ratio': \(4, 2\)"):
        load_model("tiny-wrong", device="cpu")

"""Conversion of official .pth checkpoints (issue 3 point 4)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import file_digest, state_digest

from pifnet_infer.cli import main
from pifnet_infer.config import get_preset
from pifnet_infer.errors import CheckpointMismatchError
from pifnet_infer.models import PIFNet
from pifnet_infer.weights import clear_model_cache, load_model, read_weights_config
from pifnet_infer.weights.convert import convert_checkpoint, detect_mamba_variant

PRESET = "cave"  # the smallest official configuration: C=31, c=3


@pytest.fixture(scope="module")
def official_state() -> dict[str, torch.Tensor]:
    """Stand-in for an official checkpoint: a random-init model of the preset (keys per spec section 9)."""
    torch.manual_seed(0)
    return PIFNet(get_preset(PRESET)).state_dict()


def _save(path: Path, obj: object) -> Path:
    torch.save(obj, path)
    return path


def _folder_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("wrap", ["bare", "net", "state_dict", "module"])
def test_convert_round_trip(tmp_path: Path, official_state: dict, wrap: str) -> None:
    state = {f"module.{k}": v for k, v in official_state.items()} if wrap == "module" else official_state
    obj = {wrap: state, "epoch": 300} if wrap in ("net", "state_dict") else state
    src = _save(tmp_path / "PIFNet_CAVEx4_300_45.0000.pth", obj)
    out = tmp_path / "cave.safetensors"
    config = convert_checkpoint(src, out, preset=PRESET)
    assert config == get_preset(PRESET) and read_weights_config(out) == config
    assert file_digest(out) == state_digest(official_state)
    clear_model_cache()
    model = load_model(out, device="cpu")
    assert state_digest(model.state_dict()) == state_digest(official_state)
    clear_model_cache()


def test_ratio_is_stored(tmp_path: Path, official_state: dict) -> None:
    src = _save(tmp_path / "in.pth", official_state)
    convert_checkpoint(src, tmp_path / "x8.safetensors", preset=PRESET, ratio=8)
    assert read_weights_config(tmp_path / "x8.safetensors").ratio == 8


def test_other_band_counts_name_the_fitting_preset(tmp_path: Path, official_state: dict) -> None:
    src = _save(tmp_path / "in.pth", official_state)
    with pytest.raises(
        CheckpointMismatchError, match=r"31 HSI bands and 3 MSI bands.*'chikusei'.*presets that fit: cave"
    ):
        convert_checkpoint(src, tmp_path / "out.safetensors", preset="chikusei")
    assert _folder_names(tmp_path) == ["in.pth"]


def test_key_differences_listed_and_nothing_written(tmp_path: Path, official_state: dict) -> None:
    state = dict(official_state)
    del state["prior_conv.bias"]
    state["tail.net.2.bias"] = torch.zeros(30)
    state["spatial_blocks.0.extra.weight"] = torch.zeros(3)
    src = _save(tmp_path / "in.pth", state)
    with pytest.raises(CheckpointMismatchError) as info:
        convert_checkpoint(src, tmp_path / "out.safetensors", preset=PRESET)
    message = str(info.value)
    assert "missing: prior_conv.bias (64,)" in message
    assert "unexpected: spatial_blocks.0.extra.weight (3,)" in message
    assert "mis-shaped: tail.net.2.bias: expected (31,), got (30,)" in message
    assert "3 difference(s)" in message
    assert _folder_names(tmp_path) == ["in.pth"]


def _spectral_mamba(state: dict) -> dict:
    out = dict(state)
    for key in [k for k in state if k.startswith("inblocks.") and k.endswith(".A_log")]:
        prefix = key[: -len("A_log")]
        for i, k in enumerate((3, 1, 5, 3), start=1):
            out[f"{prefix}conv{i}.weight"] = torch.zeros(128, 128, k, k)
            out[f"{prefix}conv{i}.bias"] = torch.zeros(128)
    return out


def _ss2d(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        if ".blocks." not in key or not key.startswith("inblocks."):
            out[key] = value
            continue
        prefix, leaf = key.rsplit(".", 1)[0] + ".", key.rsplit(".", 1)[1]
        if key.endswith("x_proj.weight"):
            out[prefix.replace("x_proj.", "") + "x_proj_weight"] = torch.zeros(4, 36, 128)
        elif key.endswith("delta_proj.weight"):
            out[prefix.replace("delta_proj.", "") + "dt_projs_weight"] = torch.zeros(4, 128, 4)
        elif key.endswith("delta_proj.bias"):
            out[prefix.replace("delta_proj.", "") + "dt_projs_bias"] = torch.zeros(4, 128)
        elif leaf == "A_log":
            out[prefix + "A_logs"] = value
        elif leaf == "D":
            out[prefix + "Ds"] = value
        elif not key.endswith("in_proj.bias"):
            out[key] = value
    return out


@pytest.mark.parametrize(
    ("transform", "variant"),
    [(_spectral_mamba, "HSRMamba SpectralMamba"), (_ss2d, "MzeroMiko VMamba SS2D/VSSBlock")],
)
def test_other_mamba_variants_named(tmp_path: Path, official_state: dict, transform, variant: str) -> None:
    state = transform(official_state)
    assert detect_mamba_variant(state) == variant
    src = _save(tmp_path / "in.pth", state)
    with pytest.raises(CheckpointMismatchError, match=f"{variant}.*spec section 5.6"):
        convert_checkpoint(src, tmp_path / "out.safetensors", preset=PRESET)
    assert _folder_names(tmp_path) == ["in.pth"]
    assert detect_mamba_variant(official_state) is None


def test_pickled_objects_refused(tmp_path: Path, official_state: dict) -> None:
    src = _save(tmp_path / "in.pth", {"net": official_state, "args": argparse.Namespace(upscale=4)})
    with pytest.raises(CheckpointMismatchError, match="weights-only") as caught:
        convert_checkpoint(src, tmp_path / "out.safetensors", preset=PRESET)
    assert "weights_only=False" not in str(caught.value)  # never relay torch's advice to unpickle anything
    assert _folder_names(tmp_path) == ["in.pth"]


def test_existing_output_needs_overwrite(tmp_path: Path, official_state: dict) -> None:
    src = _save(tmp_path / "in.pth", official_state)
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        convert_checkpoint(src, out, preset=PRESET)
    assert out.read_bytes() == b"keep me"
    convert_checkpoint(src, out, preset=PRESET, overwrite=True)
    assert file_digest(out) == state_digest(official_state)


def test_cli_convert(tmp_path: Path, official_state: dict, capsys: pytest.CaptureFixture[str]) -> None:
    src = _save(tmp_path / "in.pth", official_state)
    out = tmp_path / "out.safetensors"
    assert main(["convert", str(src), str(out), "--preset", PRESET, "--ratio", "2"]) == 0
    assert "31 HSI bands, 3 MSI bands, ratio 2" in capsys.readouterr().out
    assert read_weights_config(out).ratio == 2
    assert main(["convert", str(src), str(tmp_path / "o2.safetensors"), "--preset", "houston"]) == 1
    err = capsys.readouterr().err
    assert "presets that fit: cave" in err
    assert not (tmp_path / "o2.safetensors").exists()


def test_cli_convert_stores_the_band_grid(tmp_path: Path, official_state: dict) -> None:
    from pifnet_infer.weights import clear_model_cache, load_model, model_band_grid

    src = _save(tmp_path / "in.pth", official_state)
    wavelengths = np.linspace(400, 700, 31)
    np.save(tmp_path / "wl.npy", wavelengths)
    out = tmp_path / "out.safetensors"
    assert (
        main(["convert", str(src), str(out), "--preset", PRESET, "--wavelengths", str(tmp_path / "wl.npy")])
        == 0
    )
    clear_model_cache()
    grid = model_band_grid(load_model(out))
    assert grid is not None and grid[1] is None
    np.testing.assert_allclose(grid[0], wavelengths)

"""Reliability (issue 21): no silent garbage, never clobber an input, one-line errors everywhere.

The bad-input catalogue (:data:`CATALOGUE`) has one line per case: what is called, the exception
expected, a phrase of its message; every case also checks that no file was written or changed.
CLI cases raise :class:`CliFailed` (exit code + stderr) so both kinds share one table.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import rasterio
import torch
from test_geotiff import PICK, RATIO, simulate, tiny_model, write_pair
from torch import nn

from pifnet_infer.cli import main
from pifnet_infer.config import PIFNetConfig
from pifnet_infer.data import load_sample
from pifnet_infer.errors import CheckpointMismatchError, MissingDataWarning, ValueRangeError
from pifnet_infer.fusion import fuse
from pifnet_infer.io.geotiff import fuse_geotiff
from pifnet_infer.weights import clear_model_cache, save_weights

NAME = "pifnet-reliability-x4"


class CliFailed(Exception):
    """``pifnet-infer`` exited with a non-zero code; the message is its stderr."""

    def __init__(self, code: int, err: str) -> None:
        super().__init__(err)
        self.code, self.err = code, err


def cli(*argv: object) -> str:
    """Run ``pifnet-infer argv``; stdout on success, :class:`CliFailed` otherwise."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_:  # argparse usage errors
            code = int(exit_.code or 0)
    if code:
        raise CliFailed(code, err.getvalue())
    return out.getvalue()


@dataclass(frozen=True)
class Scene:
    """A tiny scene on disk: HSI/MSI GeoTIFFs, a weight file, and their arrays (PICK bands)."""

    folder: Path
    hsi: Path
    msi: Path
    weights: Path
    lr: np.ndarray
    hr_msi: np.ndarray
    wavelengths: np.ndarray
    hr_cube: np.ndarray


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    s = load_sample("muufl_gulfport_sub")
    lr, msi = simulate(s.cube, RATIO)
    pick = [b - 1 for b in PICK]
    return lr[pick], msi, s.wavelengths_nm[pick], s.cube[pick, : msi.shape[1], : msi.shape[2]]


def manifest_entry(path: Path, model: nn.Module, wavelengths: np.ndarray) -> dict[str, object]:
    """A manifest entry for a local test weight, with a reflectance ``input_range``."""
    return {
        "name": NAME, "repo_id": "test/tiny", "filename": path.name, "revision": None,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "size_bytes": path.stat().st_size,
        "format": "safetensors", "config": model.config.to_dict(),
        "hsi_wavelengths_nm": [float(w) for w in wavelengths], "hsi_fwhm_nm": None,
        "msi_srf": "band-group-means", "msi_bands_description": None,
        "input_range": {"scale": 1.0, "offset": 0.0, "min": 0.0, "max": 1.0, "units": "reflectance"},
        "training": {"data": "none", "protocol": "random init", "command": "none", "commit": "none"},
        "metrics": {"protocol": "none"}, "licence": "MIT", "bundled": False,
        "description": "random-init test weight", "model_card": None,
    }  # fmt: skip


@pytest.fixture
def scene(tmp_path: Path, pair, monkeypatch) -> Scene:
    """The scene, a x10000 copy in ``big/``, and a manifest holding the tiny weight as :data:`NAME`."""
    lr, msi, wavelengths, cube = pair
    hsi_path, msi_path = write_pair(tmp_path, lr, msi, wavelengths=wavelengths)
    (tmp_path / "big").mkdir()
    write_pair(tmp_path / "big", lr * 10000, msi * 10000, wavelengths=wavelengths)
    (tmp_path / "weights").mkdir()
    (tmp_path / "eval").mkdir()
    model = tiny_model()
    weights = save_weights(model, tmp_path / "weights" / "tiny.safetensors")
    manifest = tmp_path / "weights_manifest.json"
    entry = manifest_entry(weights, model, wavelengths)
    manifest.write_text(json.dumps({"schema_version": 1, "weights": [entry]}))
    monkeypatch.setenv("PIFNET_WEIGHTS_MANIFEST", str(manifest))
    return Scene(tmp_path, hsi_path, msi_path, weights, lr, msi, wavelengths, cube)


class Broken(nn.Module):
    """The tiny model's interface, returning ``value`` everywhere (NaN, inf, or absurdly large)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.config = PIFNetConfig(hsi_bands=len(PICK), msi_bands=3, ratio=RATIO, dim=4, d_state=2, expand=1)
        self.value = value
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, lr: torch.Tensor, msi: torch.Tensor) -> torch.Tensor:
        r = self.config.ratio
        return self.gain * 0 * lr.repeat_interleave(r, 2).repeat_interleave(r, 3) + self.value


def _geotiff(s: Scene, model: object, folder: str = "", **kwargs: object) -> Path:
    base = s.folder / folder
    return fuse_geotiff(
        base / "hsi.tif", base / "msi.tif", s.folder / "out.tif", model, progress=False, **kwargs
    )


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``folder`` (hidden ones included): size and sha256."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@dataclass(frozen=True)
class Bad:
    """One catalogue line: ``call(scene)`` must raise ``error`` with ``phrase`` in its message.

    ``setup(scene)`` makes the inputs the case needs, before the folder is snapshot.
    """

    id: str
    call: Callable[[Scene], object]
    error: type[BaseException]
    phrase: str
    setup: Callable[[Scene], object] | None = None


def _fuse_cli(s: Scene, *extra: object) -> str:
    return cli("fuse", "--hsi", s.hsi, "--msi", s.msi, "--weights", s.weights, "--no-progress", *extra)


CATALOGUE = [
    # 1. an output that is an input is refused, naming it, whatever the spelling
    Bad("cli-out-is-hsi", lambda s: _fuse_cli(s, "--out", s.hsi, "--overwrite"), CliFailed, "is the input HSI"),
    Bad("cli-out-dotdot-msi", lambda s: _fuse_cli(s, "--out", s.folder / "x" / ".." / "msi.tif", "--overwrite"),
        CliFailed, "is the input MSI"),
    Bad("api-out-is-msi", lambda s: fuse_geotiff(s.hsi, s.msi, s.msi, s.weights, overwrite=True, progress=False),
        ValueError, "is the input MSI"),
    Bad("api-out-symlink-to-hsi", lambda s: fuse_geotiff(s.hsi, s.msi, _link(s, "symlink"), s.weights,
        overwrite=True, progress=False), ValueError, "is the input HSI"),
    Bad("api-out-hardlink-to-hsi", lambda s: fuse_geotiff(s.hsi, s.msi, _link(s, "hardlink"), s.weights,
        overwrite=True, progress=False), ValueError, "is the input HSI"),
    Bad("cli-adapt-out-is-base", lambda s: cli("adapt", "--hsi", s.hsi, "--msi", s.msi, "--base", s.weights,
        "--out", s.weights, "--overwrite"), CliFailed, "is the input --base"),
    Bad("cli-convert-out-is-in", lambda s: cli("convert", _weights_copy(s), _weights_copy(s), "--preset",
        "chikusei", "--overwrite"), CliFailed, "is the input checkpoint"),
    Bad("cli-simulate-out-is-reference", lambda s: cli("simulate", "--reference", _npy(s), "--ratio", 4, "--srf",
        "sentinel2a-10m", "--out-hsi", _npy(s), "--out-msi", s.folder / "m.npy"), CliFailed,
        "is the input --reference"),
    # 2. inputs far outside the weight's range are refused before compute; garbage output is never written
    Bad("api-x10000-input", lambda s: _geotiff(s, NAME, "big"), ValueRangeError, "pass scale=0.0001"),
    Bad("api-x10000-arrays", lambda s: fuse(s.lr * 10000, s.hr_msi * 10000, NAME, progress=False),
        ValueRangeError, "lr_hsi values span [-452.3, 7046]"),
    Bad("cli-x10000-input", lambda s: cli("fuse", "--hsi", s.folder / "big" / "hsi.tif", "--msi",
        s.folder / "big" / "msi.tif", "--out", s.folder / "out.tif", "--weights", NAME, "--no-progress"),
        CliFailed, "expects [0, 1] (reflectance)"),
    Bad("api-nan-output", lambda s: _geotiff(s, Broken(math.nan)), ValueRangeError, "returned NaN or infinite"),
    Bad("api-inf-output", lambda s: _geotiff(s, Broken(math.inf), cog=True), ValueRangeError, "NaN or infinite"),
    Bad("api-absurd-output", lambda s: _geotiff(s, Broken(1.2e29)), ValueRangeError, "units or a scale"),
    Bad("arrays-absurd-output", lambda s: fuse(s.lr, s.hr_msi, Broken(-5e3), progress=False), ValueRangeError,
        "returned values in [-5000, -5000]"),
    # 3. non-finite weights are refused at load and at conversion, naming the tensor
    Bad("api-nan-weights", lambda s: _geotiff(s, _nan_weights(s)), CheckpointMismatchError,
        "NaN or infinite values in 1 tensor(s): hsi_head.net.0.weight"),
    Bad("cli-convert-nan", lambda s: cli("convert", _pth(s, math.nan), s.folder / "out.safetensors", "--preset",
        "chikusei"), CliFailed, "NaN or infinite values in 1 tensor(s): w;"),
    # 4. an MSI band without valid pixel is named (an HSI band passes through, see below)
    Bad("arrays-msi-band-all-nan", lambda s: fuse(s.lr, _nan_band(s.hr_msi, 1), tiny_model(), progress=False),
        ValueError, "hr_msi band(s) 2 (1-based) have no valid pixel"),
    Bad("arrays-all-nan", lambda s: fuse(s.lr * np.nan, s.hr_msi, tiny_model(), progress=False),
        ValueError, "lr_hsi has no valid pixel"),
    # 6. an integer output that would keep only 0 and 1 is refused, naming the scale that keeps the data
    Bad("api-int16-float-reflectance", lambda s: _geotiff(s, tiny_model(), out_dtype="int16"), ValueError,
        "pass out_scale=0.0001 (CLI: --out-scale 0.0001)"),
    Bad("cli-uint8-float-reflectance", lambda s: _fuse_cli(s, "--out", s.folder / "out.tif", "--out-dtype", "uint8"),
        CliFailed, "a uint8 output stores whole multiples of 1"),
    Bad("arrays-int-out", lambda s: fuse(s.lr, s.hr_msi, tiny_model(), out=np.empty((8, 48, 88), np.int16),
        progress=False), ValueError, "pass a float out array"),
    # 8. evaluate refuses references whose scores would mean nothing
    Bad("cli-evaluate-uint16-reference", lambda s: _evaluate(s), CliFailed, "holds uint16 integers, stored units rather than",
        lambda s: _eval_files(s, (s.hr_cube * 10000).astype(np.uint16))),
    Bad("cli-evaluate-nan-reference", lambda s: _evaluate(s), CliFailed, "holds 4224 NaN or infinite values",
        lambda s: _eval_files(s, _nan_band(s.hr_cube, 0))),
    Bad("cli-evaluate-json-folder-missing", lambda s: _evaluate(s, "--json", s.folder / "no" / "x.json"),
        CliFailed, "does not exist; create it first", lambda s: _eval_files(s, s.hr_cube)),
    Bad("arrays-scale-nan", lambda s: fuse(s.lr, s.hr_msi, tiny_model(), scale=math.nan, progress=False),
        ValueError, "scale must be finite, got nan"),
    Bad("api-offset-inf", lambda s: _geotiff(s, tiny_model(), offset=(0.0, math.inf)), ValueError,
        "offset must be finite, got (0.0, inf)"),
    Bad("arrays-micrometres", lambda s: fuse(s.lr, s.hr_msi, tiny_model(), progress=False,
        hsi_wavelengths_nm=list(s.wavelengths / 1000)), ValueError, "look like micrometres"),
    Bad("cli-hsi-is-a-folder", lambda s: cli("fuse", "--hsi", s.folder / "big", "--msi", s.msi, "--out",
        s.folder / "out.tif"), CliFailed, "is a folder; pass the raster file inside it"),
    Bad("cli-ratio-0", lambda s: _fuse_cli(s, "--out", s.folder / "out.tif", "--ratio", 0), CliFailed,
        "invalid ratio 0"),
    Bad("arrays-read-only-out", lambda s: fuse(s.lr, s.hr_msi, tiny_model(), out=_read_only((8, 48, 88)),
        progress=False), ValueError, "out is read-only"),
    # 10. weights check refuses a path saying so
    Bad("cli-weights-check-path", lambda s: cli("weights", "check", s.weights), CliFailed,
        "weights check takes a manifest name"),
    # 13. the output is a GeoTIFF: other extensions are refused
    Bad("cli-out-png", lambda s: _fuse_cli(s, "--out", s.folder / "x.png"), CliFailed, "must end in .tif or .tiff"),
    # 5. every CLI error is one line, exit 1 (2 for usage), nothing left behind
    Bad("cli-device-foo", lambda s: _fuse_cli(s, "--out", s.folder / "out.tif", "--device", "foo"), CliFailed,
        "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'foo'"),
    Bad("cli-usage", lambda s: _fuse_cli(s, "--out", s.folder / "out.tif", "--tile-size", "x"), CliFailed,
        "(see pifnet-infer fuse --help)"),
]  # fmt: skip

if not torch.cuda.is_available():
    CATALOGUE += [
        Bad("cli-cuda-on-cpu", lambda s: _fuse_cli(s, "--out", s.folder / "out.tif", "--device", "cuda"), CliFailed,
            "asks for CUDA"),
        Bad("cli-demo-cuda-on-cpu", lambda s: _bundled(cli, "demo", "--out-dir", s.folder / "demo", "--device",
            "cuda"), CliFailed, "asks for CUDA"),
    ]  # fmt: skip


def _nan_band(cube: np.ndarray, band: int) -> np.ndarray:
    out = cube.copy()
    out[band] = np.nan
    return out


def _read_only(shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, dtype=np.float32)
    out.flags.writeable = False
    return out


def _eval_files(s: Scene, reference: np.ndarray) -> None:
    """The scene as .npy cubes for ``evaluate``, with ``reference`` as its reference."""
    for name, cube in (("ref.npy", reference), ("lr.npy", s.lr), ("msi.npy", s.hr_msi)):
        np.save(s.folder / "eval" / name, cube)


def _evaluate(s: Scene, *extra: object) -> str:
    """``evaluate --reference --hsi --msi --method pifnet:PATH`` on the files of :func:`_eval_files`."""
    f = s.folder / "eval"
    return cli("evaluate", "--reference", f / "ref.npy", "--hsi", f / "lr.npy", "--msi", f / "msi.npy", "--method",
               f"pifnet:{s.weights}", *extra)  # fmt: skip


def _bundled(call: Callable[..., object], *args: object) -> object:
    """``call(*args)`` with the package's own manifest instead of the scene's."""
    with mock.patch.dict(os.environ):
        os.environ.pop("PIFNET_WEIGHTS_MANIFEST", None)
        return call(*args)


def _link(s: Scene, kind: str) -> Path:
    """A link to the HSI beside it (made before the snapshot, as part of the scene)."""
    link = s.folder / f"{kind}.tif"
    if not link.exists():
        (os.symlink if kind == "symlink" else os.link)(s.hsi, link)
    return link


def _pth(s: Scene, value: float = 0.0) -> Path:
    """A checkpoint holding one tensor ``w`` filled with ``value``."""
    path = s.folder / f"official-{value}.pth"
    if not path.exists():
        torch.save({"w": torch.full((2,), value)}, path)
    return path


def _weights_copy(s: Scene) -> Path:
    """A copy of the tiny weight (torch.load reads safetensors too, so convert may take one)."""
    path = s.folder / "copy.safetensors"
    if not path.exists():
        path.write_bytes(s.weights.read_bytes())
    return path


def _nan_weights(s: Scene) -> Path:
    """The tiny weight with one NaN in ``hsi_head.net.0.weight``."""
    path = s.folder / "nan.safetensors"
    if not path.exists():
        model = tiny_model()
        with torch.no_grad():
            model.hsi_head.net[0].weight[0, 0, 0, 0] = math.nan
        save_weights(model, path)
    return path


def _npy(s: Scene) -> Path:
    path = s.folder / "reference.npy"
    if not path.exists():
        np.save(path, np.ones((8, 8, 8), dtype=np.float32))
    return path


@pytest.mark.parametrize("case", CATALOGUE, ids=[c.id for c in CATALOGUE])
def test_bad_input_catalogue(case: Bad, scene: Scene) -> None:
    for kind in ("symlink", "hardlink"):  # inputs some cases point at, made before the snapshot
        _link(scene, kind)
    _pth(scene), _pth(scene, math.nan), _npy(scene), _nan_weights(scene), _weights_copy(scene)
    if case.setup is not None:
        case.setup(scene)
    before = snapshot(scene.folder)
    clear_model_cache()
    with pytest.raises(case.error) as caught:
        case.call(scene)
    message = str(caught.value)
    assert case.phrase in message, message
    if isinstance(caught.value, CliFailed):
        assert caught.value.code in (1, 2) and message.count("\n") == 1, message  # one line
    assert snapshot(scene.folder) == before, "a file was written or changed"


def test_same_file_sees_through_dotdot_symlinks_and_hard_links(tmp_path: Path) -> None:
    from pifnet_infer.io.atomic import same_file

    (tmp_path / "sub").mkdir()
    a = tmp_path / "a.tif"
    a.write_bytes(b"x")
    os.link(a, tmp_path / "hard.tif")
    os.symlink(a, tmp_path / "soft.tif")
    assert same_file(tmp_path / "sub" / ".." / "a.tif", a)
    assert same_file(tmp_path / "hard.tif", a)
    assert same_file(tmp_path / "soft.tif", a)
    assert not same_file(tmp_path / "new.tif", a)


def test_adapt_refuses_to_save_a_diverged_model(tmp_path: Path) -> None:
    from pifnet_infer.adapt.network import AdaptedModel

    model = AdaptedModel(tiny_model().config)
    model.history.val_steps, model.history.val_loss = [0, 20], [math.nan, math.nan]
    with pytest.raises(ValueRangeError, match="validation loss is nan"):
        model.save(tmp_path / "adapted.safetensors")
    assert list(tmp_path.iterdir()) == []
    model.history.val_loss = [math.nan, 0.5]
    model.history.best_step = 20
    model.save(tmp_path / "adapted.safetensors")  # the returned weights are those of a finite score


def test_in_range_inputs_and_a_sane_model_pass(scene: Scene) -> None:
    out = fuse(scene.lr * 1.3, scene.hr_msi, NAME, progress=False)  # a little beyond [0, 1] is fine
    assert np.isfinite(out).all()


def test_weights_verify_reports_non_finite_tensors(scene: Scene) -> None:
    with pytest.raises(CliFailed) as caught:
        cli("weights", "verify", _nan_weights(scene))
    assert caught.value.code == 1
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["weights", "verify", str(_nan_weights(scene))])
    assert "NaN or infinite values in 1 tensor(s): hsi_head.net.0.weight" in out.getvalue()


def test_unexpected_errors_are_one_line_too(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    import pifnet_infer.io.geotiff

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("first line\nsecond line")

    monkeypatch.setattr(pifnet_infer.io.geotiff, "fuse_geotiff", boom)
    with pytest.raises(CliFailed) as caught:
        _fuse_cli(scene, "--out", scene.folder / "out.tif")
    assert caught.value.code == 1
    assert caught.value.err == (
        "pifnet-infer fuse: error: RuntimeError: first line; second line (run with --debug for the traceback)\n"
    )


def test_an_hsi_band_without_valid_pixel_passes_through(scene: Scene) -> None:
    model = tiny_model()
    lr = _nan_band(scene.lr, 2)
    with pytest.warns(
        MissingDataWarning, match=r"lr_hsi band\(s\) 3 \(1-based\) have no valid pixel"
    ) as record:
        out = fuse(lr, scene.hr_msi, model, progress=False)
    assert len(record) == 1
    assert np.isnan(out[2]).all() and np.isfinite(np.delete(out, 2, axis=0)).all()
    write_pair(scene.folder, lr, scene.hr_msi, wavelengths=scene.wavelengths)
    with pytest.warns(MissingDataWarning, match="the HSI band"):
        path = _geotiff(scene, model)
    with rasterio.open(path) as dst:
        got = dst.read()
    np.testing.assert_allclose(got, out, atol=1e-5, equal_nan=True)


def test_a_value_missing_in_some_bands_is_filled_and_masked_in_those_bands_only(scene: Scene) -> None:
    model = tiny_model()
    lr = scene.lr.copy()
    lr[[1, 4], 2, 3] = np.nan
    out = fuse(lr, scene.hr_msi, model, progress=False)
    expected = np.zeros(out.shape, dtype=bool)
    expected[[1, 4], 8:12, 12:16] = True
    np.testing.assert_array_equal(np.isnan(out), expected)
    write_pair(scene.folder, lr, scene.hr_msi, wavelengths=scene.wavelengths)
    with rasterio.open(_geotiff(scene, model)) as dst:
        np.testing.assert_allclose(dst.read(), out, atol=1e-5, equal_nan=True)


def test_out_scale_stores_float_reflectance_as_integers(scene: Scene) -> None:
    model = tiny_model()
    expected = fuse(scene.lr, scene.hr_msi, model, progress=False)
    out = scene.folder / "int16.tif"
    _fuse_cli(scene, "--out", out, "--out-dtype", "int16", "--out-scale", "1e-4")
    with rasterio.open(out) as dst:
        assert (
            dst.dtypes[0] == "int16"
            and dst.scales == (1e-4,) * len(PICK)
            and dst.offsets == (0.0,) * len(PICK)
        )
        got = dst.read().astype(np.float64) * 1e-4
    np.testing.assert_allclose(got, expected, atol=6e-5)


def test_evaluate_passes_the_reference_wavelengths_to_fuse(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pifnet_infer.api

    seen: dict[str, object] = {}

    def spy(lr: np.ndarray, msi: np.ndarray, **kwargs: object) -> np.ndarray:
        seen.update(kwargs)
        return np.repeat(np.repeat(lr, RATIO, axis=1), RATIO, axis=2)

    monkeypatch.setattr(pifnet_infer.api, "fuse", spy)
    _eval_files(scene, scene.hr_cube)
    np.save(scene.folder / "eval" / "wl.npy", scene.wavelengths)
    _evaluate(scene, "--wavelengths", scene.folder / "eval" / "wl.npy")
    np.testing.assert_allclose(seen["hsi_wavelengths_nm"], scene.wavelengths)
    seen.clear()
    cli("evaluate", "--hsi", scene.folder / "eval" / "lr.npy", "--msi", scene.folder / "eval" / "msi.npy", "--method",
        "pifnet:x", "--wavelengths", scene.folder / "eval" / "wl.npy")  # fmt: skip
    np.testing.assert_allclose(seen["hsi_wavelengths_nm"], scene.wavelengths)


def test_evaluate_warns_about_a_reference_that_is_not_reflectance(scene: Scene, caplog) -> None:
    _eval_files(scene, scene.hr_cube * 100)
    _evaluate(scene)
    assert "scores are meaningless unless the cube is reflectance" in caplog.text


def test_evaluate_help_has_no_rest_markup() -> None:
    text = io.StringIO()
    with contextlib.redirect_stdout(text), pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "``" not in text.getvalue() and ":mod:" not in text.getvalue()


def test_a_weight_loaded_by_path_keeps_its_band_grid(scene: Scene) -> None:
    from pifnet_infer.prepare import fit_band_grid
    from pifnet_infer.spectral import ResampledModel
    from pifnet_infer.weights import load_model, model_band_grid

    clear_model_cache()
    copy = scene.folder / "copy-of-manifest-weight.safetensors"
    copy.write_bytes(scene.weights.read_bytes())
    by_copy = load_model(copy)
    assert by_copy.weight_entry is not None and by_copy.weight_entry.name == NAME
    exported = save_weights(load_model(NAME), scene.folder / "exported.safetensors")
    by_export = load_model(exported)
    assert by_export.weight_entry is None  # another file: its own metadata carries the grid
    for net in (by_copy, by_export):
        np.testing.assert_allclose(model_band_grid(net)[0], scene.wavelengths)
        assert fit_band_grid(net, list(scene.wavelengths)) is net
        shifted = sorted(float(w) + 3.0 for w in scene.wavelengths)
        assert isinstance(fit_band_grid(net, shifted), ResampledModel)


def test_written_files_follow_the_umask(scene: Scene) -> None:
    from pifnet_infer.adapt.network import AdaptedModel

    previous = os.umask(0o027)
    try:
        weights = save_weights(tiny_model(), scene.folder / "saved.safetensors")
        adapted = AdaptedModel(tiny_model().config).save(scene.folder / "adapted.safetensors")
        fused = _geotiff(scene, tiny_model())
    finally:
        os.umask(previous)
    assert {stat.S_IMODE(p.stat().st_mode) for p in (weights, adapted, fused)} == {0o640}


def test_stale_temporaries_of_killed_runs_are_removed_and_live_ones_kept(scene: Scene) -> None:
    import subprocess
    import sys

    from pifnet_infer.io.atomic import _host

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as live:
        try:
            folders = {}
            for kind, pid in (("dead", int(dead.stdout)), ("live", live.pid)):
                folders[kind] = scene.folder / f".out.tif.{pid}@{_host()}.abc123_x.pifnet-tmp"
                folders[kind].mkdir()
                (folders[kind] / "out.tif").write_bytes(b"partial")
            other = scene.folder / f".other.tif.{int(dead.stdout)}@{_host()}.abc123_x.pifnet-tmp"
            elsewhere = scene.folder / f".out.tif.{int(dead.stdout)}@another-host.abc123_x.pifnet-tmp"
            for folder in (other, elsewhere):
                folder.mkdir()
            _geotiff(scene, tiny_model())
            assert not folders["dead"].exists()
            assert folders["live"].exists() and other.exists() and elsewhere.exists()
        finally:
            live.kill()
    assert sorted(p.name for p in scene.folder.glob(".*pifnet-tmp")) == sorted(
        [folders["live"].name, other.name, elsewhere.name]
    )  # and this run's own folder is gone


def test_diagnostics_scores_skip_missing_pixels(scene: Scene) -> None:
    from pifnet_infer.diagnostics import consistency

    lr = scene.lr.copy()
    lr[:, 2, 3] = np.nan
    fused = np.repeat(np.repeat(lr, RATIO, axis=1), RATIO, axis=2)
    srf = np.full((3, len(PICK)), 1.0 / len(PICK), dtype=np.float32)
    scores = consistency(fused, lr, scene.hr_msi, ratio=RATIO, srf_matrix=srf).scores()
    assert all(math.isfinite(v) for v in scores.values()), scores
    complete = consistency(np.nan_to_num(fused), np.nan_to_num(lr), scene.hr_msi, ratio=RATIO, srf_matrix=srf)
    assert complete.spatial_rmse > 0 and math.isfinite(complete.spectral_psnr)


def test_info_names_a_missing_crs(scene: Scene) -> None:
    from affine import Affine
    from test_geotiff import write_raster

    hsi = write_raster(scene.folder / "nocrs-hsi.tif", scene.lr, None, Affine(30, 0, 0, 0, -30, 0))
    msi = write_raster(scene.folder / "nocrs-msi.tif", scene.hr_msi, None, Affine(7.5, 0, 0, 0, -7.5, 0))
    out = cli("info", hsi, msi)
    assert "not derived (HSI and MSI without a CRS)" in out and "CRS differ" not in out


def test_fuse_dask_checks_the_input_range_and_the_output_too(scene: Scene) -> None:
    da = pytest.importorskip("dask.array")
    from pifnet_infer.dask import fuse_dask

    def chunked(lr: np.ndarray, msi: np.ndarray) -> tuple[object, object]:
        return da.from_array(lr, chunks=(-1, 6, 11)), da.from_array(msi, chunks=(-1, 24, 44))

    with pytest.raises(ValueRangeError, match=r"pass scale=0\.0001"):
        fuse_dask(*chunked(scene.lr * 10000, scene.hr_msi * 10000), NAME)
    out = fuse_dask(*chunked(scene.lr, scene.hr_msi), Broken(math.nan))
    with pytest.raises(ValueRangeError, match="returned NaN or infinite"):
        out.compute(scheduler="threads")


def test_cli_warnings_are_one_line(scene: Scene) -> None:
    write_pair(scene.folder, _nan_band(scene.lr, 2), scene.hr_msi, wavelengths=scene.wavelengths)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["fuse", "--hsi", str(scene.hsi), "--msi", str(scene.msi), "--out", str(scene.folder / "o.tif"),
                     "--weights", str(scene.weights), "--no-progress"])  # fmt: skip
    assert code == 0
    assert err.getvalue() == (
        "pifnet-infer fuse: warning: the HSI band(s) 3 (1-based) have no valid pixel (every pixel is NaN); "
        "they stay missing in the output and the other bands are fused\n"
    )

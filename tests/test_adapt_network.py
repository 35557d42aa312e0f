"""Scene adaptation of PIF-Net: initialisation, training safety, determinism, saving, fuse and the CLI."""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

import pifnet_infer.adapt.network as network
from pifnet_infer import cli, metrics
from pifnet_infer.adapt import AdaptedModel, adapt
from pifnet_infer.adapt.init import (
    init_projected_bicubic,
    msi_detail,
    set_msi_detail,
    transfer_weights,
    zero_output,
)
from pifnet_infer.adapt.prior import ClassicalPrior
from pifnet_infer.baselines import bicubic, fit_glp_hs, glp_hs
from pifnet_infer.config import PIFNetConfig
from pifnet_infer.data import load_sample
from pifnet_infer.errors import ShapeMismatchError, SpectralCoverageError
from pifnet_infer.fusion import fuse
from pifnet_infer.models import PIFNet
from pifnet_infer.simulate import crop_to_ratio, resolve_psf, simulate_pair
from pifnet_infer.srf import srf_matrix
from pifnet_infer.weights import load_model, save_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def muufl():
    scene = load_sample("muufl_gulfport_sub")
    lr, msi = simulate_pair(
        scene.cube, 4, srf="sentinel2a-10m", wavelengths_nm=scene.wavelengths_nm, psf="mtf"
    )
    return scene, lr, msi


@pytest.fixture(scope="module")
def small(muufl):
    """A 48 x 48 HR crop (LR 12 x 12, the smallest scene adaptation accepts at ratio 4)."""
    scene = muufl[0]
    lr, msi = simulate_pair(
        scene.cube[:, :48, :48], 4, srf="rgb_gaussian", wavelengths_nm=scene.wavelengths_nm
    )
    return lr, msi


def _run(model: torch.nn.Module, lr: np.ndarray, msi: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(lr)[None], torch.from_numpy(msi)[None])[0].numpy()


@pytest.mark.parametrize("stages", [1, 2])
def test_initialised_network_is_projected_bicubic(stages) -> None:
    rng = np.random.default_rng(0)
    lr = rng.random((20, 6, 6)).astype(np.float32)
    msi = rng.random((3, 24, 24)).astype(np.float32)
    model = PIFNet(PIFNetConfig(20, 3, 4, dim=24, d_state=4, num_stages=stages))
    basis = init_projected_bicubic(model, lr).double().numpy()
    spectra = lr.reshape(20, -1).astype(np.float64)
    mean = spectra.mean(1, keepdims=True)
    up = bicubic(lr, 4).reshape(20, -1)
    expected = (mean + basis @ basis.T @ (up - mean)).reshape(20, 24, 24)
    np.testing.assert_allclose(_run(model, lr, msi), expected, atol=2e-5)
    # the MSI detail path adds E G (M - S^3 M)
    gains = torch.from_numpy(rng.standard_normal((basis.shape[1], 3))).float()
    set_msi_detail(model, gains)
    detail = msi_detail(torch.from_numpy(msi)[None])[0].reshape(3, -1).double().numpy()
    with_detail = expected + (basis @ gains.double().numpy() @ detail).reshape(20, 24, 24)
    np.testing.assert_allclose(_run(model, lr, msi), with_detail, atol=2e-5)


def test_initial_shift_moves_the_upsampling() -> None:
    lr = np.random.default_rng(1).random((8, 8, 8)).astype(np.float32)
    model = PIFNet(PIFNetConfig(8, 2, 4, dim=12, d_state=4, num_stages=1))
    init_projected_bicubic(model, lr, shift=1.0, rank=4)
    shifted = _run(model, lr, np.zeros((2, 32, 32), np.float32))
    init_projected_bicubic(model, lr, shift=0.0, rank=4)
    plain = _run(model, lr, np.zeros((2, 32, 32), np.float32))
    np.testing.assert_allclose(shifted[:, 2:-3, 2:-3], plain[:, 3:-2, 3:-2], atol=2e-5)


def test_adapted_network_alone_beats_bicubic(muufl) -> None:
    scene, lr, msi = muufl
    reference = crop_to_ratio(scene.cube, 4)
    model = adapt(lr, msi, ratio=4, base=None, prior=False, steps=2, progress=False, device="cpu")
    assert isinstance(model, AdaptedModel) and isinstance(model, PIFNet) and model.prior is None
    assert model.weight_entry is None and model.config.hsi_bands == lr.shape[0]
    fused = _run(model, lr, msi)
    assert metrics.psnr(reference, fused) > metrics.psnr(reference, bicubic(lr, 4)) + 1.0
    history = model.history
    assert history.steps == 2 and history.stop_reason == "steps"
    assert history.psf == "estimated" and history.srf == "estimated" and history.val_steps == [0, 2]


def test_adapt_with_its_prior_beats_glp(muufl) -> None:
    scene, lr, msi = muufl
    reference = crop_to_ratio(scene.cube, 4)
    model = adapt(lr, msi, ratio=4, base=None, steps=3, progress=False, device="cpu")
    assert isinstance(model.prior, ClassicalPrior)
    fused = _run(model, lr, msi)
    glp = glp_hs(lr, msi, 4, psf="mtf")  # told the true PSF; adapt fitted its own
    assert metrics.psnr(reference, fused) > metrics.psnr(reference, glp) + 0.1
    assert metrics.sam(reference, fused) < metrics.sam(reference, glp)
    if model.history.best_step == 0:  # early stopping kept the start: the prior alone
        np.testing.assert_allclose(fused, model.prior.fuse(lr, msi, 4), atol=1e-6)


def test_a_zeroed_network_adds_nothing_to_its_prior(small) -> None:
    lr, msi = small
    psf = resolve_psf("official", 4)
    srf = srf_matrix("rgb_gaussian", load_sample("muufl_gulfport_sub").wavelengths_nm)
    prior = ClassicalPrior(psf, srf, fit_glp_hs(lr, msi, 4, psf=psf))
    model = AdaptedModel(PIFNetConfig(lr.shape[0], 3, 4, dim=8, d_state=4, expand=1, num_stages=1), prior)
    zero_output(model)
    np.testing.assert_array_equal(_run(model, lr, msi), prior.fuse(lr, msi, 4))
    assert np.abs(_run(model, lr, msi) - bicubic(lr, 4)).max() > 1e-3
    record = json.loads(json.dumps(prior.to_record()))
    again = ClassicalPrior.from_record(record)
    np.testing.assert_array_equal(again.fuse(lr, msi, 4), prior.fuse(lr, msi, 4))
    with pytest.raises(ValueError, match="unknown adaptation prior"):
        ClassicalPrior.from_record({**record, "method": "gsa"})


def test_adapt_is_deterministic_for_a_seed(small) -> None:
    lr, msi = small
    runs = [
        adapt(lr, msi, ratio=4, base=None, steps=2, progress=False, device="cpu", seed=s) for s in (3, 3, 4)
    ]
    first, second, other = (m.state_dict() for m in runs)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert runs[0].history.train_loss == runs[1].history.train_loss
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_time_budget_stops_training(small) -> None:
    lr, msi = small
    start = time.perf_counter()
    model = adapt(lr, msi, ratio=4, base=None, steps=10_000, time_budget_s=2.0, progress=False, device="cpu")
    elapsed = time.perf_counter() - start
    assert model.history.stop_reason == "time_budget"
    assert model.history.steps < 10_000
    assert elapsed < 2.0 + 15.0  # the budget is checked before each step: at most one step over


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"ratio": 3}, ShapeMismatchError, "ratio"),
        ({"ratio": 1}, ValueError, "ratio"),
        ({"lr_hsi": "nan"}, ValueError, "NaN"),
        ({"lr_hsi": "tiny"}, ShapeMismatchError, "too small"),
        ({"msi_srf": "sentinel2a"}, SpectralCoverageError, "B11"),
        ({"msi_srf": "rgb_gaussian", "hsi_wavelengths": None}, ValueError, "hsi_wavelengths"),
        ({"msi_srf": np.ones((2, 5))}, ShapeMismatchError, "msi_srf"),
        ({"hsi_wavelengths": np.arange(5.0)}, ShapeMismatchError, "hsi_wavelengths"),
        ({"steps": 0}, ValueError, "steps"),
        ({"time_budget_s": -1}, ValueError, "time_budget_s"),
        ({"lr": 0.0}, ValueError, "lr"),
        ({"prior": "yes"}, ValueError, "prior"),
    ],
)
def test_bad_inputs_are_refused_before_training(muufl, monkeypatch, change, error, match) -> None:
    scene, lr, msi = muufl
    monkeypatch.setattr(network, "prepare_scene", lambda *a, **k: pytest.fail("reached the training set-up"))
    kwargs = {"ratio": 4, "base": None, "hsi_wavelengths": scene.wavelengths_nm, "progress": False, **change}
    if change.get("lr_hsi") == "nan":
        lr = lr.copy()
        lr[3, 2, 1] = np.nan
    if change.get("lr_hsi") == "tiny":
        lr, msi = lr[:, :8, :8], msi[:, :32, :32]
    kwargs.pop("lr_hsi", None)
    with pytest.raises(error, match=match):
        adapt(lr, msi, **kwargs)


def test_save_load_and_fuse(small, tmp_path) -> None:
    lr, msi = small
    model = adapt(
        lr,
        msi,
        ratio=4,
        base=None,
        steps=1,
        progress=False,
        device="cpu",
        msi_srf="rgb_gaussian",
        hsi_wavelengths=load_sample("muufl_gulfport_sub").wavelengths_nm,
    )
    direct = _run(model, lr, msi)
    np.testing.assert_allclose(fuse(lr, msi, model=model, progress=False), direct, atol=1e-5)
    # tiles share the scene's GLP-HS injection: fitted per tile, the mean difference was 0.0077
    tiled = fuse(lr, msi, model=model, tile_size=32, progress=False)
    assert np.abs(tiled - direct).mean() < 0.003
    path = model.save(tmp_path / "adapted.safetensors")
    np.testing.assert_array_equal(_run(load_model(path, device="cpu"), lr, msi), direct)
    with safe_open(str(path), "pt") as handle:
        record = json.loads(handle.metadata()["pifnet_infer.adapt"])
    assert record["base"] is None and record["scene_lr_shape"] == list(lr.shape) and record["ratio"] == 4
    assert record["history"]["steps"] == 1 and record["history"]["srf"] == "given"
    assert record["prior"]["method"] == "glp_hs+refine" and load_model(path, device="cpu").prior is not None


def test_base_weight_is_transferred_and_never_modified(small, tmp_path) -> None:
    lr, msi = small
    torch.manual_seed(0)
    base = PIFNet(PIFNetConfig(lr.shape[0] + 5, 3, 4, dim=16, d_state=4, expand=1, num_stages=1))
    path = save_weights(base, tmp_path / "base.safetensors")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    fresh = PIFNet(base.config.replace(hsi_bands=lr.shape[0]))
    skipped = transfer_weights(base, fresh)
    assert "hsi_head.net.0.weight" in skipped and "tail.net.2.weight" in skipped
    assert torch.equal(
        fresh.state_dict()["inblocks.0.blocks.0.in_proj.weight"],
        base.state_dict()["inblocks.0.blocks.0.in_proj.weight"],
    )
    model = adapt(lr, msi, ratio=4, base=str(path), steps=1, progress=False, device="cpu")
    assert model.provenance["base"] == str(path) and model.config.dim == 16
    assert model.prior is not None  # other band counts: the base's head and tail are new, its fusion no start
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_a_base_with_the_scenes_band_counts_starts_from_its_own_fusion(small, tmp_path) -> None:
    lr, msi = small
    torch.manual_seed(0)
    base = PIFNet(PIFNetConfig(lr.shape[0], 3, 4, dim=8, d_state=4, expand=1, num_stages=1))
    path = save_weights(base, tmp_path / "fits.safetensors")
    model = adapt(lr, msi, ratio=4, base=str(path), steps=1, progress=False, device="cpu")
    assert model.prior is None
    assert (
        adapt(lr, msi, ratio=4, base=str(path), prior=True, steps=1, progress=False, device="cpu").prior
        is not None
    )


def test_head_transfer_resamples_the_band_grid() -> None:
    torch.manual_seed(1)
    base = PIFNet(PIFNetConfig(6, 2, 4, dim=8, d_state=4, expand=1, num_stages=1))
    fresh = PIFNet(base.config.replace(hsi_bands=11))
    base_nm, new_nm = np.linspace(400, 900, 6), np.linspace(400, 900, 11)
    transfer_weights(base, fresh, base_wavelengths_nm=base_nm, wavelengths_nm=new_nm)
    # a spectrum linear in wavelength looks the same to both heads
    x_new = torch.from_numpy(np.broadcast_to(new_nm[:, None, None] / 1000, (11, 5, 5)).copy()).float()[None]
    x_base = torch.from_numpy(np.broadcast_to(base_nm[:, None, None] / 1000, (6, 5, 5)).copy()).float()[None]
    w_new, w_base = fresh.hsi_head.net[0], base.hsi_head.net[0]
    torch.testing.assert_close(
        F.conv2d(x_new, w_new.weight), F.conv2d(x_base, w_base.weight), atol=1e-5, rtol=0
    )


def test_cli_adapt(small, tmp_path, monkeypatch, capsys) -> None:
    lr, msi = small
    np.save(tmp_path / "hsi.npy", lr)
    np.save(tmp_path / "msi.npy", msi)
    if "adapt" not in cli.SUBCOMMAND_MODULES:
        monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", (*cli.SUBCOMMAND_MODULES, "adapt"))
    out = tmp_path / "model.safetensors"
    args = [
        "adapt",
        "--hsi",
        str(tmp_path / "hsi.npy"),
        "--msi",
        str(tmp_path / "msi.npy"),
        "--out",
        str(out),
        "--base",
        "none",
        "--steps",
        "1",
        "--no-progress",
    ]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "1 steps" in printed and "prior GLP-HS + refinement" in printed
    assert cli.main([*args, "--prior", "no", "--overwrite"]) == 0
    assert "prior none" in capsys.readouterr().out and load_model(out, device="cpu").prior is None
    assert cli.main(args) == 1  # exists, no --overwrite
    assert "already exists" in capsys.readouterr().err
    assert cli.main([*args[:-5], "--ratio", "3", "--overwrite"]) == 1
    assert "ratio" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_cli_reads_geotiff_with_scale_and_nodata(tmp_path) -> None:
    import rasterio

    from pifnet_infer.cli.adapt import read_image

    data = np.arange(2 * 4 * 5, dtype=np.int16).reshape(2, 4, 5)
    path = tmp_path / "hsi.tif"
    profile = {"driver": "GTiff", "width": 5, "height": 4, "count": 2, "dtype": "int16", "nodata": 7}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.scales = (0.5, 0.5)
        dst.offsets = (1.0, 1.0)
    cube, wavelengths = read_image(path, "HSI")
    expected = data.astype(np.float32) * 0.5 + 1.0
    expected[data == 7] = np.nan
    np.testing.assert_array_equal(cube, expected)
    assert wavelengths is None
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_image(tmp_path / "missing.npy", "HSI")


def test_auto_base_ignores_weights_for_other_hsi_bands() -> None:
    """The bundled RGB x4 weight has 61 HSI bands: for a 72-band scene "auto" trains from scratch."""
    from pifnet_infer.adapt.network import _resolve_base

    assert _resolve_base("auto", 4, 3, 72) == (None, None)
    model, name = _resolve_base("auto", 4, 3, 61)
    assert name == "pifnet-vnir-rgb-x4" and model.config.hsi_bands == 61

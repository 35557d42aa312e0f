"""fuse() on an HSI whose band grid differs from the model's: resample, fuse, bring back the detail."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pifnet_infer.data import load_sample
from pifnet_infer.fusion import fuse
from pifnet_infer.spectral import ResampledModel, SpectralCoverageError, plan_resampling
from pifnet_infer.weights import get_weight, load_model

WEIGHT = "pifnet-vnir-rgb-x4"  # the bundled weight: 61 bands, 400-1000 nm every 10 nm, RGB, x4


class CountingModel(torch.nn.Module):
    """Counts forward calls of the wrapped model (to prove errors come before any tile)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.config, self.calls = model, model.config, 0
        self.weight_entry = model.weight_entry

    def forward(self, lr: torch.Tensor, msi: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(lr, msi)


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(LR-HSI on AVIRIS's own VNIR bands [C, 12, 12], RGB [3, 48, 48], their centres in nm)."""
    from pifnet_infer.simulate import simulate_pair

    sample = load_sample("aviris_gatorsense_vi")
    wl = np.asarray(sample.wavelengths_nm)
    keep = (wl >= 395) & (wl <= 1005) & (sample.cube.reshape(len(wl), -1).max(axis=1) > 0)
    reference = sample.cube[keep][:, 40:88, 40:88]
    lr, msi = simulate_pair(reference, 4, srf="rgb_gaussian", wavelengths_nm=wl[keep], psf="mtf")
    return lr, msi, wl[keep]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_model(WEIGHT, device="cpu")


def test_other_band_grid_is_fused_on_the_model_grid_and_brought_back(scene, model) -> None:
    lr, msi, wl = scene
    entry = get_weight(WEIGHT)
    plan = plan_resampling(wl, None, entry.hsi_wavelengths_nm, entry.hsi_fwhm_nm)
    lr_model = plan.lr_to_model(lr)
    with torch.inference_mode():  # one tile covers the scene: no blending, no padding
        fused_model = model(torch.from_numpy(lr_model)[None], torch.from_numpy(msi)[None])[0].numpy()
    expected = plan.fused_to_user(fused_model, lr_model, lr, 4)

    got = fuse(lr, msi, model, tile_size=48, hsi_wavelengths_nm=wl, progress=False)
    assert got.shape == lr.shape[:1] + msi.shape[1:]
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_auto_picks_the_weight_whose_grid_covers_the_bands(scene, model) -> None:
    lr, msi, wl = scene
    named = fuse(lr, msi, model, tile_size=48, hsi_wavelengths_nm=wl, progress=False)
    auto = fuse(lr, msi, "auto", tile_size=48, hsi_wavelengths_nm=wl, device="cpu", progress=False)
    np.testing.assert_array_equal(auto, named)


def test_the_model_grid_itself_is_not_resampled(scene, model) -> None:
    lr, msi, wl = scene
    entry = get_weight(WEIGHT)
    lr_model = plan_resampling(wl, None, entry.hsi_wavelengths_nm, entry.hsi_fwhm_nm).lr_to_model(lr)
    plain = fuse(lr_model, msi, model, tile_size=24, overlap=8, progress=False)
    on_grid = fuse(
        lr_model, msi, model, tile_size=24, overlap=8, progress=False,
        hsi_wavelengths_nm=entry.hsi_wavelengths_nm, hsi_fwhm_nm=entry.hsi_fwhm_nm,
    )  # fmt: skip
    np.testing.assert_array_equal(on_grid, plain)


def test_wrapped_model_reports_the_user_band_count(scene, model) -> None:
    lr, _, wl = scene
    entry = get_weight(WEIGHT)
    wrapped = ResampledModel(model, plan_resampling(wl, None, entry.hsi_wavelengths_nm, entry.hsi_fwhm_nm))
    assert wrapped.config.hsi_bands == lr.shape[0] != model.config.hsi_bands
    assert wrapped.config.ratio == 4 and wrapped.weight_entry.name == entry.name


@pytest.mark.parametrize(
    ("case", "error", "match"),
    [
        ("band beyond the model range", SpectralCoverageError, r"outside the model's covered range"),
        ("one wavelength too few", ValueError, r"hsi_wavelengths_nm has \d+ values for an HSI of \d+ bands"),
    ],
)
def test_bad_band_grids_fail_before_any_tile(scene, model, case, error, match) -> None:
    lr, msi, wl = scene
    wl = wl.copy()
    if case == "band beyond the model range":
        wl[-1] = 1300.0
    else:
        wl = wl[:-1]
    counting = CountingModel(model)
    with pytest.raises(error, match=match):
        fuse(lr, msi, counting, hsi_wavelengths_nm=wl, progress=False)
    assert counting.calls == 0


def test_refine_makes_the_weak_weight_consistent_with_its_inputs(scene, model) -> None:
    """refine=True runs the consistency refinement on every tile: closer to the reference, and to the LR-HSI."""
    from pifnet_infer.metrics import psnr
    from pifnet_infer.simulate import degrade_spatial

    lr, msi, wl = scene
    reference = _reference(wl)
    kwargs = {"tile_size": 24, "overlap": 8, "hsi_wavelengths_nm": wl, "progress": False}
    plain = fuse(lr, msi, model, **kwargs)
    refined = fuse(lr, msi, model, refine=True, **kwargs)
    assert psnr(reference, refined) > psnr(reference, plain) + 0.5

    def lr_error(x: np.ndarray) -> float:
        return float(np.abs(degrade_spatial(x, 4, "mtf") - lr).mean())

    assert lr_error(refined) < 0.5 * lr_error(plain)


def _reference(wl: np.ndarray) -> np.ndarray:
    sample = load_sample("aviris_gatorsense_vi")
    keep = np.isin(np.asarray(sample.wavelengths_nm), wl)
    return sample.cube[keep][:, 40:88, 40:88]


def test_geotiff_tags_say_the_bands_were_resampled_and_refined(scene, model, tmp_path) -> None:
    import rasterio
    from affine import Affine

    from pifnet_infer.io.geotiff import fuse_geotiff

    lr, msi, wl = scene
    paths = {}
    for name, data, pixel in (("hsi", lr, 4.0), ("msi", msi, 1.0)):
        paths[name] = tmp_path / f"{name}.tif"
        profile = {"driver": "GTiff", "count": data.shape[0], "height": data.shape[1], "width": data.shape[2]}
        profile |= {
            "dtype": "float32",
            "crs": "EPSG:32617",
            "transform": Affine(pixel, 0, 500_000, 0, -pixel, 3_280_000),
        }
        with rasterio.open(paths[name], "w", **profile) as dst:
            dst.write(data.astype(np.float32))
            for band in range(data.shape[0]) if name == "hsi" else ():
                dst.update_tags(band + 1, wavelength=f"{wl[band]}", wavelength_units="nm")
    out = fuse_geotiff(paths["hsi"], paths["msi"], tmp_path / "out.tif", model, refine=True, progress=False)
    with rasterio.open(out) as dst:
        tags = dst.tags()
    assert tags["PIFNET_BAND_GRID"].startswith(
        f"resampled: {lr.shape[0]} HSI bands fused on the model's 61-band"
    )
    assert tags["PIFNET_REFINE"].startswith("tile-wise")

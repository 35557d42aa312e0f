"""Classical baselines: definitions on small arrays, and better than bicubic under the Wald protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pifnet_infer import baselines, metrics
from pifnet_infer.data import load_sample
from pifnet_infer.errors import ShapeMismatchError
from pifnet_infer.simulate import crop_to_ratio, simulate_pair


def test_bicubic_is_torch_bicubic() -> None:
    lr = np.random.default_rng(0).random((3, 7, 9)).astype(np.float32)
    out = baselines.bicubic(lr, 4)
    assert out.shape == (3, 28, 36) and out.dtype == np.float32
    expected = F.interpolate(
        torch.from_numpy(lr)[None], scale_factor=4.0, mode="bicubic", align_corners=False
    )[0]
    np.testing.assert_allclose(out, expected.numpy(), atol=1e-7)
    np.testing.assert_allclose(baselines.bicubic(np.full((1, 5, 5), 0.4, np.float32), 2), 0.4, atol=1e-6)


@pytest.mark.parametrize("method", [baselines.glp_hs, baselines.gsa])
def test_flat_msi_adds_no_detail(method) -> None:
    lr = np.random.default_rng(1).random((5, 8, 8)).astype(np.float32)
    msi = np.full((3, 32, 32), 0.5, dtype=np.float32)
    out = method(lr, msi, 4)
    assert out.shape == (5, 32, 32) and out.dtype == np.float32
    np.testing.assert_allclose(out, baselines.bicubic(lr, 4), atol=1e-6)


@pytest.mark.parametrize(("method", "kwargs"), [(baselines.glp_hs, {}), (baselines.gsa, {"ridge": 0.0})])
def test_exact_detail_when_bands_are_msi_bands(method, kwargs) -> None:
    # HSI bands that are copies of MSI bands: exact regressions, so the fusion must restore them exactly
    rng = np.random.default_rng(2)
    base = rng.random((2, 32, 32)).astype(np.float32)
    ref = np.concatenate([base, base[::-1]])  # 4 HSI bands built from 2 MSI bands
    lr, msi = simulate_pair(ref, 4, srf=np.eye(4)[:2], psf="mtf")
    np.testing.assert_allclose(method(lr, msi, 4, psf="mtf", **kwargs), ref, atol=2e-5)


def test_shape_mismatch() -> None:
    with pytest.raises(ShapeMismatchError, match="msi must be"):
        baselines.glp_hs(np.zeros((3, 8, 8)), np.zeros((2, 30, 32)), 4)
    with pytest.raises(ShapeMismatchError, match="bands, H, W"):
        baselines.gsa(np.zeros((8, 8)), np.zeros((2, 32, 32)), 4)


@pytest.mark.parametrize("sample", ["muufl_gulfport_sub", "aviris_gatorsense_vi"])
@pytest.mark.parametrize("psf", ["official", "mtf"])
def test_beat_bicubic_under_wald_protocol(sample: str, psf: str) -> None:
    scene = load_sample(sample)
    lr, msi = simulate_pair(scene.cube, 4, srf="sentinel2a-10m", wavelengths_nm=scene.wavelengths_nm, psf=psf)
    ref = crop_to_ratio(scene.cube, 4)
    scores = {
        "bicubic": baselines.bicubic(lr, 4),
        "glp": baselines.glp_hs(lr, msi, 4, psf=psf),
        "gsa": baselines.gsa(lr, msi, 4, psf=psf),
    }
    psnr = {k: metrics.psnr(ref, v) for k, v in scores.items()}
    sam = {k: metrics.sam(ref, v) for k, v in scores.items()}
    for method in ("glp", "gsa"):
        assert psnr[method] > psnr["bicubic"] + 1.0, psnr
        assert sam[method] < sam["bicubic"], sam


def test_glp_hs_with_an_injection_fitted_beforehand() -> None:
    scene = load_sample("muufl_gulfport_sub")
    lr, msi = simulate_pair(
        scene.cube[:, :48, :48], 4, srf="rgb_gaussian", wavelengths_nm=scene.wavelengths_nm
    )
    injection = baselines.fit_glp_hs(lr, msi, 4, psf="official")
    assert injection.weights.shape == (lr.shape[0], 3) and injection.gains.shape == (lr.shape[0],)
    np.testing.assert_array_equal(
        baselines.glp_hs(lr, msi, 4, psf="official", injection=injection),
        baselines.glp_hs(lr, msi, 4, psf="official"),
    )
    # a tile fused with the scene's injection differs from one fitted on the tile alone
    tile_lr, tile_msi = lr[:, :6, :6], msi[:, :24, :24]
    own = baselines.glp_hs(tile_lr, tile_msi, 4, psf="official")
    scene_fit = baselines.glp_hs(tile_lr, tile_msi, 4, psf="official", injection=injection)
    assert np.abs(own - scene_fit).max() > 1e-3
    with pytest.raises(ShapeMismatchError, match="injection"):
        baselines.glp_hs(lr[:5], msi, 4, injection=injection)

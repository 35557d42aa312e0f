"""No-reference consistency: a perfect fusion scores ~0 error, bicubic much worse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pifnet_infer import baselines
from pifnet_infer.data import load_sample
from pifnet_infer.diagnostics import Diagnostics, consistency
from pifnet_infer.errors import ShapeMismatchError
from pifnet_infer.simulate import crop_to_ratio, degrade_spatial, simulate_pair
from pifnet_infer.srf import srf_matrix


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    sample = load_sample("muufl_gulfport_sub")
    matrix = srf_matrix("sentinel2a-10m", sample.wavelengths_nm)
    lr, msi = simulate_pair(sample.cube, 4, srf=matrix)
    return crop_to_ratio(sample.cube, 4), lr, msi, matrix


@pytest.mark.parametrize("psf", ["official", "mtf"])
def test_reference_is_consistent_bicubic_is_not(scene, psf: str) -> None:
    ref, _, msi, matrix = scene
    lr = degrade_spatial(ref, 4, psf)
    perfect = consistency(ref, lr, msi, ratio=4, srf_matrix=matrix, psf=psf)
    assert isinstance(perfect, Diagnostics)
    assert perfect.spectral_rmse < 1e-6 and perfect.spatial_rmse < 1e-6
    assert perfect.spectral_psnr > 100 and perfect.spatial_psnr > 100
    assert perfect.spectral_sam < 1e-2 and perfect.spatial_sam < 1e-2
    bicubic = consistency(baselines.bicubic(lr, 4), lr, msi, ratio=4, srf_matrix=matrix, psf=psf)
    assert bicubic.spectral_rmse > 1e-3 and bicubic.spatial_rmse > 1e-2
    assert bicubic.spatial_psnr < perfect.spatial_psnr - 50
    glp = consistency(baselines.glp_hs(lr, msi, 4, psf=psf), lr, msi, ratio=4, srf_matrix=matrix, psf=psf)
    assert glp.spatial_rmse < bicubic.spatial_rmse / 5


def test_maps_and_scores(scene) -> None:
    ref, lr, msi, matrix = scene
    noisy = ref + 0.01 * np.random.default_rng(0).standard_normal(ref.shape).astype(np.float32)
    diag = consistency(torch.from_numpy(noisy), lr, torch.from_numpy(msi), ratio=4, srf_matrix=matrix)
    assert diag.spectral_error_map.shape == lr.shape[1:] and diag.spectral_sam_map.shape == lr.shape[1:]
    assert diag.spatial_error_map.shape == msi.shape[1:] and diag.spatial_sam_map.shape == msi.shape[1:]
    assert diag.spatial_error_map.dtype == np.float32
    # the RMSE of the maps' squares is the scalar RMSE
    assert np.sqrt(np.mean(diag.spatial_error_map.astype(np.float64) ** 2)) == pytest.approx(
        diag.spatial_rmse, rel=1e-5
    )
    assert set(diag.scores()) == {
        "spectral_rmse",
        "spectral_psnr",
        "spectral_sam",
        "spatial_rmse",
        "spatial_psnr",
        "spatial_sam",
    }
    assert 0 < diag.spatial_rmse < 0.01


def test_shape_checks(scene) -> None:
    ref, lr, msi, matrix = scene
    with pytest.raises(ShapeMismatchError, match="fused must be"):
        consistency(ref[:, :-4], lr, msi, ratio=4, srf_matrix=matrix)
    with pytest.raises(ShapeMismatchError, match="srf_matrix"):
        consistency(ref, lr, msi, ratio=4, srf_matrix=matrix[:, :-1])

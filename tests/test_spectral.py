"""Tests of pifnet_infer.spectral: band-grid resampling and the detail-only return path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pifnet_infer.baselines import bicubic
from pifnet_infer.spectral import (
    SpectralCoverageError,
    covered_ranges,
    detail_to_user_grid,
    estimate_fwhm,
    plan_resampling,
    resample_bands,
    resampling_matrix,
    same_grid,
    to_model_grid,
)

SHARED = Path(__file__).parents[1] / ".." / "shared" / "data"
MODEL_WL = np.arange(400.0, 1001.0, 10.0)
MODEL_FWHM = np.full(MODEL_WL.shape, 10.0)


def _user_grid() -> np.ndarray:
    """An AVIRIS-like grid: ~9.7 nm steps, two overlapping spectrometers, not sorted."""
    first = np.arange(398.0, 700.0, 9.7)
    second = np.arange(690.5, 1003.0, 9.7)
    return np.concatenate([first, second])


def test_identity_when_grids_are_equal_numpy_and_torch():
    rng = np.random.default_rng(0)
    lr = rng.random((61, 4, 5), dtype=np.float32)
    fused = rng.random((61, 16, 20), dtype=np.float32)
    plan = plan_resampling(MODEL_WL, MODEL_FWHM, MODEL_WL.copy(), MODEL_FWHM.copy())
    assert plan.identity and plan.to_model is None and plan.to_user is None
    assert to_model_grid(lr, MODEL_WL, None, MODEL_WL, MODEL_FWHM) is lr  # FWHM unknown: centres decide
    assert detail_to_user_grid(fused, lr, 4, MODEL_WL, MODEL_FWHM, MODEL_WL, MODEL_FWHM) is fused
    t_lr, t_fused = torch.from_numpy(lr), torch.from_numpy(fused)
    assert plan.lr_to_model(t_lr) is t_lr
    assert plan.fused_to_user(t_fused, t_lr, t_lr, 4) is t_fused


def test_not_identity_when_fwhm_differs():
    assert not same_grid(MODEL_WL, MODEL_FWHM, MODEL_WL, MODEL_FWHM * 2)
    assert not plan_resampling(MODEL_WL, MODEL_FWHM * 1.5, MODEL_WL, MODEL_FWHM).identity


def test_matrix_rows_are_normalised_and_nonnegative():
    w = resampling_matrix(_user_grid(), None, MODEL_WL, MODEL_FWHM)
    assert w.shape == (MODEL_WL.size, _user_grid().size)
    assert np.all(w >= 0)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)


def test_wide_target_matches_numerical_integration_of_the_spectrum():
    """Narrow 1 nm source bands -> 10 nm Gaussian targets equal the integral of the true spectrum."""

    def spectrum(wl):
        return 0.3 + 0.2 * np.sin(wl / 37.0) + 0.05 * np.cos(wl / 11.0)

    src = np.arange(350.0, 1051.0, 1.0)
    w = resampling_matrix(src, np.full(src.shape, 1.0), MODEL_WL, MODEL_FWHM)
    fine = np.arange(300.0, 1100.0, 0.01)
    sigma = 10.0 / (2 * np.sqrt(2 * np.log(2)))
    expected = [
        np.sum(spectrum(fine) * np.exp(-0.5 * ((fine - c) / sigma) ** 2))
        / np.sum(np.exp(-0.5 * ((fine - c) / sigma) ** 2))
        for c in MODEL_WL
    ]
    np.testing.assert_allclose(w @ spectrum(src), expected, atol=2e-4)


@settings(max_examples=30, deadline=None)
@given(
    a=st.floats(0.0, 1.0),
    b=st.floats(-1e-3, 1e-3),
    step=st.floats(2.0, 15.0),
    width=st.floats(0.5, 2.0),
    seed=st.integers(0, 2**16),
)
def test_linear_spectra_are_reproduced_inside_the_range(a, b, step, width, seed):
    src = np.arange(350.0, 1100.0, step)
    src = src[np.random.default_rng(seed).permutation(src.size)]  # order must not matter
    target = np.arange(450.0, 951.0, 25.0)
    w = resampling_matrix(src, np.full(src.shape, step * width), target, np.full(target.shape, 10.0 * width))
    np.testing.assert_allclose(w @ (a + b * src), a + b * target, atol=1e-6)


def test_unsorted_bands_give_the_same_result_as_sorted():
    wl = _user_grid()
    rng = np.random.default_rng(1)
    cube = rng.random((wl.size, 3, 4)).astype(np.float32)
    order = np.argsort(wl)
    unsorted = to_model_grid(cube, wl, None, MODEL_WL, MODEL_FWHM)
    sorted_ = to_model_grid(cube[order], wl[order], None, MODEL_WL, MODEL_FWHM)
    np.testing.assert_allclose(unsorted, sorted_, rtol=1e-5, atol=1e-6)


def test_equal_centres_are_averaged():
    src = np.array([500.0, 510.0, 510.0, 520.0])
    w = resampling_matrix(src, None, np.array([510.0]), np.array([0.5]))
    assert w[0, 1] == pytest.approx(w[0, 2])
    assert w[0, 0] == pytest.approx(w[0, 3])
    assert w[0, 1] + w[0, 2] > 0.95  # a 0.5 nm band at 510 nm is (almost) the two 510 nm samples


def test_estimate_fwhm_and_covered_ranges():
    wl = np.array([500.0, 520.0, 510.0, 800.0, 810.0])
    np.testing.assert_allclose(estimate_fwhm(wl), [10.0, 10.0, 10.0, 10.0, 10.0])
    np.testing.assert_allclose(estimate_fwhm(np.array([410.0, 400.0, 404.0])), [6.0, 4.0, 5.0])
    grid = np.concatenate([np.arange(400.0, 701.0, 10.0), np.arange(900.0, 1001.0, 10.0)])
    assert covered_ranges(grid, np.full(grid.shape, 10.0)) == [(395.0, 705.0), (895.0, 1005.0)]


def test_user_band_outside_the_model_range_is_refused_with_the_range():
    user = np.append(MODEL_WL[:-1] + 2.0, 1100.0)
    with pytest.raises(SpectralCoverageError, match=r"61 \(1100\.0 nm\).*395\.0-1005\.0 nm"):
        plan_resampling(user, None, MODEL_WL, MODEL_FWHM)


def test_model_band_outside_the_user_range_is_refused():
    user = np.arange(500.0, 1001.0, 10.0)
    with pytest.raises(SpectralCoverageError, match=r"400\.0, 410\.0.*495\.0-1005\.0 nm"):
        to_model_grid(np.zeros((user.size, 2, 2)), user, None, MODEL_WL, MODEL_FWHM)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="micrometres"):
        plan_resampling(MODEL_WL / 1000, None, MODEL_WL, MODEL_FWHM)
    with pytest.raises(ValueError, match="one per band"):
        plan_resampling(MODEL_WL, MODEL_FWHM[:-1], MODEL_WL, MODEL_FWHM)
    plan = plan_resampling(_user_grid(), None, MODEL_WL, MODEL_FWHM)
    with pytest.raises(ValueError, match="bands"):
        plan.lr_to_model(np.zeros((3, 4, 4)))


def test_detail_path_without_detail_is_bicubic_of_the_user_lr():
    """A model output with no detail (its upsampled input) gives the bicubic upsampling of the user's LR."""
    wl = _user_grid()
    lr_user = np.random.default_rng(2).random((wl.size, 6, 5), dtype=np.float32)
    plan = plan_resampling(wl, None, MODEL_WL, MODEL_FWHM)
    lr_model = plan.lr_to_model(lr_user)
    no_detail = bicubic(lr_model, 4)
    out = plan.fused_to_user(no_detail, lr_model, lr_user, 4)
    np.testing.assert_allclose(out, bicubic(lr_user, 4), atol=1e-5)


def test_detail_path_adds_the_resampled_detail_torch_batched():
    wl = _user_grid()
    gen = torch.Generator().manual_seed(3)
    lr_user = torch.rand(2, wl.size, 4, 4, generator=gen, dtype=torch.float64)
    detail = torch.rand(2, MODEL_WL.size, 12, 12, generator=gen, dtype=torch.float64) - 0.5
    plan = plan_resampling(wl, None, MODEL_WL, MODEL_FWHM)
    lr_model = plan.lr_to_model(lr_user)
    up = torch.nn.functional.interpolate(lr_model, scale_factor=3, mode="bicubic", align_corners=False)
    out = plan.fused_to_user(up + detail, lr_model, lr_user, 3)
    up_user = torch.nn.functional.interpolate(lr_user, scale_factor=3, mode="bicubic", align_corners=False)
    expected = up_user + torch.einsum("kc,bchw->bkhw", torch.from_numpy(plan.to_user), detail)
    assert out.dtype == torch.float64 and out.shape == (2, wl.size, 12, 12)
    torch.testing.assert_close(out, expected)
    np_out = plan.fused_to_user((up + detail).numpy(), lr_model.numpy(), lr_user.numpy(), 3)
    np.testing.assert_allclose(np_out, expected.numpy(), atol=1e-10)


def test_resample_bands_keeps_type_and_dtype():
    x = torch.rand(2, MODEL_WL.size, 3, 3)
    out = resample_bands(x, MODEL_WL, MODEL_FWHM, np.array([500.0, 600.0]), None)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (2, 2, 3, 3)


@pytest.mark.shared
def test_detail_path_costs_less_than_whole_spectrum_on_aviris():
    """The documented measurement: AVIRIS (unsorted, FWHM unknown) -> 10 nm VNIR grid and back."""
    folder = SHARED / "aviris_gatorsense_vi"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (../shared holds the developer data sets)")
    from pifnet_infer.metrics import sam
    from pifnet_infer.simulate import degrade_spatial

    meta = json.loads((folder / "meta.json").read_text())
    cube = np.load(folder / "cube.npy").astype(np.float32).transpose(2, 0, 1)[:, :48, :48]
    wl = np.asarray(meta["wavelengths_nm"])
    keep = (wl >= 395.0) & (wl <= 1005.0) & (cube.max(axis=(1, 2)) > 0)
    ref, wl = np.maximum(cube[keep], 0.0), wl[keep]
    plan = plan_resampling(wl, None, MODEL_WL, MODEL_FWHM)
    lr_user = degrade_spatial(ref, 4, "mtf")
    lr_model = plan.lr_to_model(lr_user)
    perfect = plan.lr_to_model(ref)
    whole = sam(ref, np.einsum("kc,chw->khw", plan.to_user, perfect))
    detail = sam(ref, plan.fused_to_user(perfect, lr_model, lr_user, 4))
    assert detail < 0.6 * whole
    assert detail < 0.3

"""Consistency refinement and its building blocks: D and its adjoint, NNLS, SRF and PSF estimation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pifnet_infer import metrics
from pifnet_infer.adapt import BlurDecimate, estimate_psf_sigma, estimate_srf, gaussian_psf_at, nnls, refine
from pifnet_infer.baselines import glp_hs
from pifnet_infer.data import load_sample
from pifnet_infer.errors import ShapeMismatchError
from pifnet_infer.priors.operators import decimation_matrix
from pifnet_infer.priors.refine import hsi_noise_level, noise_gain
from pifnet_infer.simulate import crop_to_ratio, degrade_spatial, simulate_pair
from pifnet_infer.srf import srf_matrix

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def muufl():
    scene = load_sample("muufl_gulfport_sub")
    srf = srf_matrix("sentinel2a-10m", scene.wavelengths_nm, scene.fwhm_nm)
    return scene, srf, crop_to_ratio(scene.cube, 4)


PSFS = ["official", "mtf", gaussian_psf_at(0.8, 1.5), gaussian_psf_at(1.3, 3.0)]


@pytest.mark.parametrize("psf", PSFS, ids=["official", "mtf", "gauss-centre", "gauss-corner"])
@pytest.mark.parametrize("shape", [(32, 40), (35, 42)])
def test_blur_decimate_is_degrade_spatial_and_adjoint_is_exact(psf, shape) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((3, *shape)).astype(np.float32)
    op = BlurDecimate(psf, 4, shape, dtype=torch.float64)
    np.testing.assert_allclose(op(torch.from_numpy(x)).numpy(), degrade_spatial(x, 4, psf), atol=1e-6)
    u = torch.from_numpy(rng.standard_normal((2, *shape)))
    v = torch.from_numpy(rng.standard_normal((2, shape[0] // 4, shape[1] // 4)))
    lhs, rhs = float((op(u) * v).sum()), float((u * op.adjoint(v)).sum())
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))
    assert op.adjoint(v).shape == u.shape


@pytest.mark.parametrize(("sigma", "centre"), [(0.5, 0.0), (1.2, 1.5), (2.0, 3.0)])
def test_decimation_matrix_is_the_separable_operator(sigma, centre) -> None:
    psf = gaussian_psf_at(sigma, centre)
    x = np.random.default_rng(1).random((2, 36, 44))
    rows = decimation_matrix(psf.kernel.sum(0), centre, 4, 36)
    cols = decimation_matrix(psf.kernel.sum(0), centre, 4, 44)
    expected = BlurDecimate(psf, 4, (36, 44), dtype=torch.float64)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(rows @ x @ cols.T, expected, atol=1e-12)


def _brute_force_nnls(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Best x >= 0 by trying every support (independent reference for tiny problems)."""
    best, best_cost = np.zeros(a.shape[1]), float(y @ y)
    for size in range(1, a.shape[1] + 1):
        for support in itertools.combinations(range(a.shape[1]), size):
            sol = np.linalg.lstsq(a[:, support], y, rcond=None)[0]
            if np.all(sol >= 0):
                x = np.zeros(a.shape[1])
                x[list(support)] = sol
                cost = float(np.sum((a @ x - y) ** 2))
                if cost < best_cost - 1e-12:
                    best, best_cost = x, cost
    return best


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 5))
def test_nnls_matches_brute_force(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((12, n))
    y = rng.standard_normal(12)
    x = nnls(a.T @ a, a.T @ y)
    assert np.all(x >= 0)
    np.testing.assert_allclose(x, _brute_force_nnls(a, y), atol=1e-8)


def test_nnls_solves_columns_independently() -> None:
    rng = np.random.default_rng(3)
    a = rng.random((20, 6))
    ys = rng.random((20, 3))
    both = nnls(a.T @ a, a.T @ ys)
    for j in range(3):
        np.testing.assert_allclose(both[:, j], nnls(a.T @ a, a.T @ ys[:, j]), atol=1e-12)
    with pytest.raises(ShapeMismatchError):
        nnls(np.eye(3), np.ones(4))


def test_estimate_srf_recovers_a_nonnegative_response() -> None:
    # HSI bands with independent content: the response is identifiable and must be found
    rng = np.random.default_rng(4)
    hr = rng.random((6, 64, 64)).astype(np.float32)
    truth = np.array([[0.5, 0.5, 0, 0, 0, 0], [0, 0, 0.2, 0.3, 0.5, 0], [0, 0, 0, 0, 0, 1.0]])
    lr, msi = simulate_pair(hr, 4, srf=truth, psf="official")
    found = estimate_srf(lr, msi, 4, "official", ridge=1e-9)
    assert found.shape == (3, 6) and np.all(found >= 0)
    np.testing.assert_allclose(found, truth, atol=1e-3)


@pytest.mark.parametrize(("psf", "sigma", "centre"), [("official", 0.5, 0.0), ("mtf", 1.976, 1.5)])
@pytest.mark.parametrize("known_srf", [True, False])
def test_estimate_psf_sigma_recovers_the_simulation(muufl, psf, sigma, centre, known_srf) -> None:
    scene, srf, _ = muufl
    lr, msi = simulate_pair(scene.cube, 4, srf=srf, psf=psf)
    fit = estimate_psf_sigma(lr, msi, 4, srf_matrix=srf if known_srf else None)
    assert fit.centre == centre
    assert fit.sigma == pytest.approx(sigma, rel=0.03)
    assert fit.residual < 0.01 and np.all(fit.srf_matrix >= 0)


def test_noise_estimates_behave() -> None:
    assert noise_gain("official", 4) < 0.5 < 2.0 < noise_gain("mtf", 4)
    scene = load_sample("aviris_gatorsense_vi")
    levels = [
        hsi_noise_level(
            simulate_pair(
                scene.cube, 4, srf="rgb_gaussian", wavelengths_nm=scene.wavelengths_nm, psf="mtf", snr_db=snr
            )[0]
        )
        for snr in (None, 40, 30, 20)
    ]
    assert levels == sorted(levels)
    assert levels[2] == pytest.approx(10 ** (-30 / 20), rel=0.3)  # 30 dB: relative noise rms 0.032


def _gain(reference, x0, x):
    return metrics.psnr(reference, x) - metrics.psnr(reference, x0), metrics.sam(reference, x) / metrics.sam(
        reference, x0
    )


@pytest.mark.parametrize(
    ("sample", "srf_name"),
    [("muufl_gulfport_sub", "sentinel2a-10m"), ("aviris_gatorsense_vi", "rgb_gaussian")],
)
def test_refine_beats_glp_on_noise_free_pairs(sample, srf_name) -> None:
    scene = load_sample(sample)
    reference = crop_to_ratio(scene.cube, 4)
    lr, msi = simulate_pair(
        scene.cube,
        4,
        srf=srf_name,
        wavelengths_nm=scene.wavelengths_nm,
        fwhm_nm=scene.fwhm_nm,
        psf="official",
    )
    x0 = glp_hs(lr, msi, 4, psf="official")
    x = refine(x0, lr, msi, ratio=4, device="cpu")  # SRF and PSF estimated from the pair
    assert x.shape == x0.shape and x.dtype == np.float32
    psnr_gain, sam_ratio = _gain(reference, x0, x)
    assert psnr_gain > 0.2, psnr_gain
    assert sam_ratio < 0.97, sam_ratio


@pytest.mark.parametrize(
    ("case", "psf_true", "psf_x0", "snr_db", "psf_given"),
    [
        ("snr30", "official", "official", 30, None),
        ("snr30-wide-psf", "mtf", "mtf", 30, None),
        ("psf-mismatch-fitted", "mtf", "official", None, None),
        ("psf-mismatch-given", "mtf", "mtf", None, "official"),
        ("psf-mismatch-given-2", "official", "official", None, "mtf"),
    ],
)
def test_refine_never_makes_noisy_or_mismatched_cases_worse(
    muufl, case, psf_true, psf_x0, snr_db, psf_given
) -> None:
    scene, srf, reference = muufl
    lr, msi = simulate_pair(scene.cube, 4, srf=srf, psf=psf_true, snr_db=snr_db)
    x0 = glp_hs(lr, msi, 4, psf=psf_x0)
    x = refine(x0, lr, msi, ratio=4, srf_matrix=srf, psf=psf_given, device="cpu")
    psnr_gain, sam_ratio = _gain(reference, x0, x)
    assert psnr_gain > -0.02, (case, psnr_gain)
    assert sam_ratio < 1.01, (case, sam_ratio)


def test_refine_leaves_a_consistent_solution_unchanged(muufl) -> None:
    scene, srf, reference = muufl
    lr, msi = simulate_pair(scene.cube, 4, srf=srf, psf="official")
    x = refine(reference, lr, msi, ratio=4, srf_matrix=srf, psf="official", device="cpu")
    assert np.max(np.abs(x - reference)) < 1e-4


def test_refine_refuses_bad_inputs(muufl) -> None:
    scene, srf, reference = muufl
    lr, msi = simulate_pair(scene.cube, 4, srf=srf, psf="official")
    with pytest.raises(ShapeMismatchError, match="hr_msi must be"):
        refine(reference, lr, msi[:, :-4], ratio=4)
    with pytest.raises(ShapeMismatchError, match="x0 must be"):
        refine(reference[:-1], lr, msi, ratio=4)
    with pytest.raises(ShapeMismatchError, match="srf_matrix"):
        refine(reference, lr, msi, ratio=4, srf_matrix=srf[:, :-1])
    bad = lr.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        refine(reference, bad, msi, ratio=4)
    with pytest.raises(ValueError, match="rank"):
        refine(reference, lr, msi, ratio=4, rank=0)
    with pytest.raises(ValueError, match="lam"):
        refine(reference, lr, msi, ratio=4, lam=-1.0)

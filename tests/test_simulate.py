"""Wald-protocol simulation: PSFs, the official degradation, MTF preset, spectral projection, noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pifnet_infer.errors import ShapeMismatchError
from pifnet_infer.simulate import (
    PSF,
    add_noise,
    crop_to_ratio,
    degrade_spatial,
    degrade_spectral,
    gaussian_psf,
    mtf_sigma,
    resolve_psf,
    simulate_pair,
)
from pifnet_infer.srf import srf_matrix


def _official_reference(x: np.ndarray, ratio: int) -> np.ndarray:
    """Spec section 11 by hand: separable [0.10651, 0.78699, 0.10651], reflect padding, keep (r*i, r*j)."""
    w = np.array([0.10651, 0.78699, 0.10651])
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    rows = sum(w[i] * xp[:, i : i + x.shape[1], :] for i in range(3))
    both = sum(w[j] * rows[:, :, j : j + x.shape[2]] for j in range(3))
    return both[:, ::ratio, ::ratio][:, : x.shape[1] // ratio, : x.shape[2] // ratio]


@pytest.mark.parametrize(("size", "sigma"), [(3, 0.5), (7, 1.2), (14, 1.976), (1, 1.0)])
def test_gaussian_psf_sums_to_one_and_is_symmetric(size: int, sigma: float) -> None:
    k = gaussian_psf(size, sigma)
    assert k.shape == (size, size)
    assert k.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(k, k[::-1, ::-1])
    np.testing.assert_allclose(k, k.T)


def test_official_kernel_weights() -> None:
    k = gaussian_psf(3, 0.5)
    np.testing.assert_allclose(k[1] / k[1].sum(), [0.10651, 0.78699, 0.10651], atol=1e-5)
    psf = resolve_psf("official", 4)
    assert psf.centre == 0.0
    np.testing.assert_allclose(psf.kernel, k)


@pytest.mark.parametrize("ratio", [2, 4, 8])
def test_official_protocol_reproduced(ratio: int) -> None:
    x = np.random.default_rng(ratio).random((3, 35, 42)).astype(np.float32)
    out = degrade_spatial(x, ratio)
    assert out.shape == (3, 35 // ratio, 42 // ratio)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, _official_reference(x, ratio), atol=5e-5)  # spec weights have 5 digits


@pytest.mark.parametrize(("ratio", "gain"), [(2, 0.3), (3, 0.25), (4, 0.3), (8, 0.4)])
def test_mtf_preset_gain_at_nyquist(ratio: int, gain: float) -> None:
    sigma = mtf_sigma(ratio, gain)
    assert sigma == pytest.approx(ratio * math.sqrt(-2 * math.log(gain)) / math.pi)
    psf = resolve_psf("mtf", ratio, nyquist_gain=gain)
    size = psf.kernel.shape[0]
    assert (size - ratio) % 2 == 0  # same parity as r: centred on the block
    assert (size - 1) / 2 >= 3 * sigma
    assert psf.centre == (ratio - 1) / 2
    taps = np.arange(size) - (size - 1) / 2
    profile = psf.kernel.sum(axis=0)
    response = float(np.sum(profile * np.cos(2 * np.pi * taps / (2 * ratio))))
    assert response == pytest.approx(gain, abs=0.01)


def test_box_psf_equals_block_average() -> None:
    x = np.random.default_rng(0).random((2, 12, 16)).astype(np.float32)
    for ratio in (2, 4):
        out = degrade_spatial(x, ratio, np.ones((ratio, ratio)))
        expected = x.reshape(2, 12 // ratio, ratio, 16 // ratio, ratio).mean(axis=(2, 4))
        np.testing.assert_allclose(out, expected, atol=1e-6)


def test_mtf_decimation_is_centred() -> None:
    # an image symmetric about its centre stays symmetric only if each LR pixel is centred on its block
    rng = np.random.default_rng(1)
    half = rng.random((1, 32, 16))
    x = np.concatenate([half, half[:, ::-1, ::-1]], axis=2).astype(np.float32)
    x = np.concatenate([x, x[:, ::-1, ::-1]], axis=1)
    x = 0.5 * (x + x[:, ::-1, ::-1])
    mtf = degrade_spatial(x, 4, "mtf")
    np.testing.assert_allclose(mtf, mtf[:, ::-1, ::-1], atol=1e-6)
    official = degrade_spatial(x, 4, "official")
    assert np.abs(official - official[:, ::-1, ::-1]).max() > 1e-3


def test_custom_psf_and_constant_preservation() -> None:
    x = np.random.default_rng(2).random((2, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(
        degrade_spatial(x, 4, PSF(gaussian_psf(3, 0.5), 0.0)), degrade_spatial(x, 4), atol=1e-7
    )
    np.testing.assert_allclose(
        degrade_spatial(x, 4, 3 * gaussian_psf(3, 0.5)), degrade_spatial(x, 4, gaussian_psf(3, 0.5))
    )
    flat = np.full((1, 40, 40), 0.3, dtype=np.float32)
    for psf in ("official", "mtf"):
        np.testing.assert_allclose(degrade_spatial(flat, 4, psf), 0.3, atol=1e-6)
    with pytest.raises(ValueError, match="centre"):
        resolve_psf(PSF(np.ones((3, 3)), 0.5), 4)
    with pytest.raises(ValueError, match="psf"):
        resolve_psf("gauss", 4)  # type: ignore[arg-type]


def test_tensor_in_tensor_out() -> None:
    x = torch.rand(3, 16, 20, dtype=torch.float64)
    out = degrade_spatial(x, 2, "mtf")
    assert isinstance(out, torch.Tensor) and out.shape == (3, 8, 10)
    np.testing.assert_allclose(out.numpy(), degrade_spatial(x.numpy(), 2, "mtf"), atol=1e-6)


def test_too_small_image_rejected() -> None:
    with pytest.raises(ShapeMismatchError, match="too small"):
        degrade_spatial(np.ones((1, 8, 8), dtype=np.float32), 8, "mtf")
    with pytest.raises(ShapeMismatchError, match="smaller than ratio"):
        degrade_spatial(np.ones((1, 3, 8), dtype=np.float32), 4)


def test_degrade_spectral() -> None:
    rng = np.random.default_rng(3)
    hsi = rng.random((5, 4, 6)).astype(np.float32)
    matrix = rng.random((2, 5))
    matrix /= matrix.sum(1, keepdims=True)
    out = degrade_spectral(hsi, matrix)
    np.testing.assert_allclose(out, np.einsum("kc,chw->khw", matrix, hsi), rtol=1e-6)
    np.testing.assert_allclose(degrade_spectral(np.ones((5, 2, 2)), matrix), 1.0, rtol=1e-6)
    wide = rng.random((24, 4, 6)).astype(np.float32)
    wl = np.linspace(420, 950, 24)
    by_name = degrade_spectral(wide, ("sentinel2a-10m", wl, None))
    np.testing.assert_allclose(by_name, degrade_spectral(wide, srf_matrix("sentinel2a-10m", wl)), rtol=1e-6)
    with pytest.raises(ShapeMismatchError, match="SRF matrix"):
        degrade_spectral(hsi, matrix[:, :4])


def test_add_noise_reaches_snr() -> None:
    x = np.random.default_rng(4).uniform(0.2, 0.8, size=(3, 200, 200)).astype(np.float32)
    noisy = add_noise(x, 20.0, rng=7)
    snr = 10 * np.log10(
        np.mean(x.astype(np.float64) ** 2, axis=(1, 2)) / np.mean((noisy - x) ** 2.0, axis=(1, 2))
    )
    np.testing.assert_allclose(snr, 20.0, atol=0.1)
    np.testing.assert_array_equal(add_noise(x, 20.0, rng=7), noisy)


def test_crop_to_ratio() -> None:
    x = np.zeros((2, 10, 13))
    assert crop_to_ratio(x, 4).shape == (2, 8, 12)
    assert crop_to_ratio(x, 1).shape == x.shape


def test_simulate_pair() -> None:
    rng = np.random.default_rng(5)
    ref = rng.random((24, 18, 23)).astype(np.float32)
    wl = np.linspace(420, 950, 24)
    lr, msi = simulate_pair(ref, 4, srf="sentinel2a-10m", wavelengths_nm=wl)
    assert lr.shape == (24, 4, 5) and msi.shape == (4, 16, 20)
    cropped = crop_to_ratio(ref, 4)
    np.testing.assert_allclose(lr, degrade_spatial(cropped, 4))
    np.testing.assert_allclose(msi, degrade_spectral(cropped, srf_matrix("sentinel2a-10m", wl)), rtol=1e-6)
    lr_n, msi_n = simulate_pair(ref, 4, srf="sentinel2a-10m", wavelengths_nm=wl, snr_db=(30.0, 40.0), seed=1)
    assert 0 < np.abs(lr_n - lr).max() and 0 < np.abs(msi_n - msi).max()
    assert np.std(lr_n - lr) > np.std(msi_n - msi)
    with pytest.raises(ValueError, match="wavelengths_nm"):
        simulate_pair(ref, 4, srf="sentinel2a-10m")
    with pytest.raises(ShapeMismatchError, match="bands"):
        simulate_pair(ref, 4, srf="sentinel2a-10m", wavelengths_nm=wl[:20])

"""Metrics against hand-worked values, identities, invariances and second implementations."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pifnet_infer import metrics
from pifnet_infer.errors import ShapeMismatchError
from pifnet_infer.simulate import degrade_spatial


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.uniform(0.05, 0.9, size=(6, 37, 45)).astype(np.float32)
    y = np.clip(x + 0.03 * rng.standard_normal(x.shape), 0, 1).astype(np.float32)
    return x, y


# ----------------------------------------------------------------------------- hand-worked values
def test_psnr_hand_worked() -> None:
    ref = np.array([[[1.0, 0.5], [0.25, 0.0]]])
    est = ref + np.array([[[0.1, -0.1], [0.1, -0.1]]])  # MSE 0.01
    assert metrics.psnr(ref, est) == pytest.approx(20.0)
    assert metrics.psnr(ref, est, peak=2.0) == pytest.approx(20.0 + 20 * math.log10(2.0))
    assert metrics.rmse(ref, est) == pytest.approx(0.1)


def test_band_psnr_hand_worked() -> None:
    ref = np.stack([np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([[0.5, 0.0], [0.25, 0.25]])])
    err = np.stack([np.full((2, 2), 0.1), np.full((2, 2), 0.005)])  # MSE 0.01 and 2.5e-5
    # band 0: peak 1 -> 20 dB; band 1: peak 0.5 -> 10 log10(0.25 / 2.5e-5) = 40 dB
    assert metrics.band_psnr(ref, ref + err) == pytest.approx(30.0)
    # one peak for every band: 20 dB and 10 log10(1 / 2.5e-5) = 46.02 dB
    assert metrics.band_psnr(ref, ref + err, peak="max") == pytest.approx((20.0 + 10 * math.log10(4e4)) / 2)


def test_sam_hand_worked() -> None:
    # pixels: (1,0) vs (1,1) -> 45 deg; (1,1) vs (2,2) -> 0; (0,0) vs (1,0) -> undefined
    ref = np.array([[[1.0, 1.0, 0.0]], [[0.0, 1.0, 0.0]]])
    est = np.array([[[1.0, 2.0, 1.0]], [[1.0, 2.0, 0.0]]])
    assert metrics.sam(ref, est, eps=0.0, zero_norm="count") == pytest.approx((45 + 0 + 90) / 3)
    assert metrics.sam(ref, est, eps=0.0, zero_norm="skip") == pytest.approx(45 / 2)
    assert metrics.sam(ref, est) == pytest.approx(45.0, abs=1e-3)  # official eps: 1e-10 barely matters here
    amap = metrics.sam_map(ref, est, eps=0.0, zero_norm="skip")
    assert amap.shape == (1, 3)
    np.testing.assert_allclose(amap[0, :2], [45.0, 0.0], atol=1e-4)
    assert np.isnan(amap[0, 2])


def test_ergas_hand_worked() -> None:
    checker = np.indices((4, 4)).sum(0) % 2 * 2 - 1  # +-1 pattern
    ref = np.stack([np.full((4, 4), 0.5), np.full((4, 4), 0.25)])
    est = ref + 0.05 * checker  # RMSE 0.05 per band; relative 0.1 and 0.2
    expected = 100 / 4 * math.sqrt((0.1**2 + 0.2**2) / 2)
    assert metrics.ergas(ref, est) == pytest.approx(expected)
    assert metrics.ergas(ref, est, ratio=2) == pytest.approx(2 * expected)


def test_cc_hand_worked() -> None:
    rng = np.random.default_rng(1)
    band = rng.random((8, 9))
    ref = np.stack([band, band])
    est = np.stack([2 * band + 1, -band])  # correlations +1 and -1
    assert metrics.cc(ref, est) == pytest.approx(0.0, abs=1e-12)
    assert metrics.cc(ref[:1], est[:1]) == pytest.approx(1.0)


def test_uiqi_closed_form_for_offset() -> None:
    # one window covering the image, y = x + b: Q = 2 mx my / (mx^2 + my^2)
    rng = np.random.default_rng(2)
    x = rng.random((1, 8, 8))
    y = x + 0.3
    mx, my = x.mean(), y.mean()
    assert metrics.uiqi(x, y, block_size=8) == pytest.approx(2 * mx * my / (mx**2 + my**2))


# ----------------------------------------------------------------------------- identities and invariances
def test_identities(pair: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = pair
    assert metrics.psnr(x, x) == math.inf
    assert metrics.band_psnr(x, x) == math.inf
    assert metrics.sam(x, x, eps=0.0) == pytest.approx(0.0, abs=1e-5)
    assert metrics.sam(x, x) < 0.01  # official eps leaves ~1e-3 degrees
    assert metrics.ergas(x, x) == 0.0
    assert metrics.rmse(x, x) == 0.0
    assert metrics.cc(x, x) == pytest.approx(1.0)
    assert metrics.ssim(x, x) == pytest.approx(1.0)
    assert metrics.uiqi(x, x) == pytest.approx(1.0)
    assert metrics.q2n(x, x) == pytest.approx(1.0)
    assert metrics.q2n(x, x, block_size=8, shift=4) == pytest.approx(1.0)


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(0.01, 100.0), seed=st.integers(0, 2**16))
def test_sam_ignores_positive_scaling(scale: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.1, 1.0, size=(5, 6, 7))
    y = x + 0.1 * rng.standard_normal(x.shape)
    per_pixel = rng.uniform(0.5, 2.0, size=(1, 6, 7))
    base = metrics.sam(x, y, eps=0.0)
    assert metrics.sam(x, scale * y, eps=0.0) == pytest.approx(base, abs=1e-9)
    assert metrics.sam(x, per_pixel * y, eps=0.0) == pytest.approx(base, abs=1e-9)


def test_cc_ignores_affine_maps(pair: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = pair
    assert metrics.cc(x, 3.0 * y - 0.2) == pytest.approx(metrics.cc(x, y))


def test_degradation_lowers_scores(pair: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = pair
    noisier = np.clip(x + 0.1 * np.random.default_rng(3).standard_normal(x.shape), 0, 1)
    for name in ("ssim", "uiqi", "q2n", "cc"):
        fn = getattr(metrics, name)
        assert 0 < fn(x, noisier) < fn(x, y) < 1
    assert metrics.psnr(x, noisier) < metrics.psnr(x, y)
    assert metrics.sam(x, noisier) > metrics.sam(x, y) > 0


# ----------------------------------------------------------------------------- second implementations
def test_ssim_matches_torchmetrics(pair: tuple[np.ndarray, np.ndarray]) -> None:
    tm = pytest.importorskip("torchmetrics.functional.image")
    x, y = pair
    expected = tm.structural_similarity_index_measure(
        torch.from_numpy(y)[None], torch.from_numpy(x)[None], data_range=1.0
    )
    assert metrics.ssim(x, y, border="full") == pytest.approx(float(expected), abs=1e-6)


def test_ssim_valid_matches_skimage(pair: tuple[np.ndarray, np.ndarray]) -> None:
    skm = pytest.importorskip("skimage.metrics")
    x, y = pair
    for data_range in (1.0, 0.5):
        expected = skm.structural_similarity(
            x.astype(np.float64),
            y.astype(np.float64),
            channel_axis=0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=data_range,
        )
        assert metrics.ssim(x, y, data_range=data_range, border="valid") == pytest.approx(expected, abs=1e-5)


def test_psnr_matches_skimage(pair: tuple[np.ndarray, np.ndarray]) -> None:
    skm = pytest.importorskip("skimage.metrics")
    x, y = pair
    assert metrics.psnr(x, y, peak=1.0) == pytest.approx(
        skm.peak_signal_noise_ratio(x, y, data_range=1.0), abs=1e-4
    )
    per_band = [
        skm.peak_signal_noise_ratio(x[b], y[b], data_range=float(x[b].max())) for b in range(x.shape[0])
    ]
    assert metrics.band_psnr(x, y) == pytest.approx(np.mean(per_band), abs=1e-4)


def test_sam_and_ergas_match_torchmetrics(pair: tuple[np.ndarray, np.ndarray]) -> None:
    tm = pytest.importorskip("torchmetrics.functional.image")
    x, y = pair
    xt, yt = torch.from_numpy(x)[None].double(), torch.from_numpy(y)[None].double()
    sam_rad = tm.spectral_angle_mapper(yt, xt)
    assert metrics.sam(x, y, eps=0.0) == pytest.approx(math.degrees(float(sam_rad)), abs=1e-6)
    for ratio in (2, 4, 8):
        expected = tm.error_relative_global_dimensionless_synthesis(yt, xt, ratio=ratio)
        assert metrics.ergas(x, y, ratio=ratio) == pytest.approx(float(expected), rel=1e-9)


def _uiqi_loops(x: np.ndarray, y: np.ndarray, block: int) -> float:
    """Brute-force sliding-window Wang-Bovik Q (no degenerate windows in the test data)."""
    values = []
    for b in range(x.shape[0]):
        for i in range(x.shape[1] - block + 1):
            for j in range(x.shape[2] - block + 1):
                u, v = x[b, i : i + block, j : j + block].ravel(), y[b, i : i + block, j : j + block].ravel()
                c = np.cov(u, v)
                values.append(
                    4
                    * c[0, 1]
                    * u.mean()
                    * v.mean()
                    / ((c[0, 0] + c[1, 1]) * (u.mean() ** 2 + v.mean() ** 2))
                )
    return float(np.mean(values))


def test_uiqi_matches_loops(pair: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = (a[:2, :12, :14].astype(np.float64) for a in pair)
    assert metrics.uiqi(x, y, block_size=4) == pytest.approx(_uiqi_loops(x, y, 4), abs=1e-10)
    assert metrics.uiqi(x, y, block_size=4, stride=4) == pytest.approx(
        np.mean(
            [
                metrics.uiqi(x[:, i : i + 4, j : j + 4], y[:, i : i + 4, j : j + 4], block_size=4)
                for i in range(0, 12, 4)
                for j in range(0, 12, 4)
            ]
        ),
        abs=1e-10,
    )


# ----------------------------------------------------------------------------- Q2n against a literal port
def _conj(v: np.ndarray) -> np.ndarray:
    return np.concatenate([v[..., :1], -v[..., 1:]], axis=-1)


def _onion(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Hypercomplex product of the toolbox, by its recursion (components on the last axis)."""
    n = p.shape[-1]
    if n == 1:
        return p * q
    h = n // 2
    a, b, c, d = p[..., :h], _conj(p[..., h:]), q[..., :h], _conj(q[..., h:])
    if n == 2:
        return np.concatenate([a * c - d * b, a * d + c * b], axis=-1)
    return np.concatenate([_onion(a, c) - _onion(d, _conj(b)), _onion(_conj(a), d) + _onion(c, b)], axis=-1)


def _q2n_literal(ref: np.ndarray, est: np.ndarray, block: int, shift: int) -> float:
    """q2n.m + onions_quality.m step by step (without the uint16 cast), (H, W, bands) internally."""
    gt, fu = ref.transpose(1, 2, 0).astype(np.float64), est.transpose(1, 2, 0).astype(np.float64)
    rows, cols, bands = gt.shape
    stepx, stepy = math.ceil(rows / shift), math.ceil(cols / shift)
    e1, e2 = (stepx - 1) * shift + block - rows, (stepy - 1) * shift + block - cols
    gt = np.pad(gt, ((0, e1), (0, e2), (0, 0)), mode="symmetric")
    fu = np.pad(fu, ((0, e1), (0, e2), (0, 0)), mode="symmetric")
    n = 1 << (bands - 1).bit_length()
    gt = np.concatenate([gt, np.zeros((*gt.shape[:2], n - bands))], axis=2)
    fu = np.concatenate([fu, np.zeros((*fu.shape[:2], n - bands))], axis=2)
    values = np.zeros((stepx, stepy, n))
    for j in range(stepx):
        for i in range(stepy):
            d1 = gt[j * shift : j * shift + block, i * shift : i * shift + block].copy()
            d2 = _conj(fu[j * shift : j * shift + block, i * shift : i * shift + block].copy())
            for b in range(n):
                s, t = d1[..., b].mean(), d1[..., b].std(ddof=1)
                t = t if t != 0 else np.finfo(np.float64).eps
                d1[..., b] = (d1[..., b] - s) / t + 1
                sign = 1.0 if b == 0 else -1.0
                d2[..., b] = sign * (
                    (sign * d2[..., b] - s + 1) if s == 0 else ((sign * d2[..., b] - s) / t + 1)
                )
            m1, m2 = d1.mean((0, 1)), d2.mean((0, 1))
            p = block * block
            f = p / (p - 1)
            var_sum = f * ((d1**2).sum(-1).mean() + (d2**2).sum(-1).mean()) - f * (
                (m1**2).sum() + (m2**2).sum()
            )
            bias = 2 * np.linalg.norm(m1) * np.linalg.norm(m2) / ((m1**2).sum() + (m2**2).sum())
            if var_sum == 0:
                q = np.zeros(n)
                q[-1] = bias
            else:
                qv = f * _onion(d1, d2).mean((0, 1))
                q = (qv - f * _onion(m1, m2)) * bias * 2 / var_sum
            values[j, i] = q
    return float(np.sqrt((values**2).sum(-1)).mean())


@pytest.mark.parametrize(
    ("bands", "size", "block", "shift"),
    [(3, (16, 16), 8, 8), (5, (19, 21), 8, 8), (4, (13, 11), 6, 4), (1, (12, 12), 4, 4)],
)
def test_q2n_matches_literal_port(bands: int, size: tuple[int, int], block: int, shift: int) -> None:
    rng = np.random.default_rng(bands)
    x = rng.uniform(0.1, 1.0, size=(bands, *size))
    y = x + 0.1 * rng.standard_normal(x.shape)
    expected = _q2n_literal(x, y, block, shift)
    assert metrics.q2n(x, y, block_size=block, shift=shift) == pytest.approx(expected, abs=1e-10)


def test_q2n_zero_mean_branch_matches_literal_port() -> None:
    rng = np.random.default_rng(7)
    x = rng.uniform(0.1, 1.0, size=(3, 8, 8))
    x[1] = 0.0  # an all-zero reference band takes the toolbox's "s == 0" branch
    y = x + 0.05 * rng.standard_normal(x.shape)
    assert metrics.q2n(x, y, block_size=8) == pytest.approx(_q2n_literal(x, y, 8, 8), abs=1e-10)


# ----------------------------------------------------------------------------- no-reference
def _q_blocks(a: np.ndarray, b: np.ndarray, block: int) -> float:
    values = []
    for i in range(0, a.shape[0] - block + 1, block):
        for j in range(0, a.shape[1] - block + 1, block):
            u, v = a[i : i + block, j : j + block].ravel(), b[i : i + block, j : j + block].ravel()
            c = np.cov(u, v)
            values.append(
                4 * c[0, 1] * u.mean() * v.mean() / ((c[0, 0] + c[1, 1]) * (u.mean() ** 2 + v.mean() ** 2))
            )
    return float(np.mean(values))


def test_qnr_matches_loops() -> None:
    rng = np.random.default_rng(4)
    ref = rng.uniform(0.1, 1.0, size=(3, 32, 32))
    lr = degrade_spatial(ref, 4).astype(np.float64)
    msi = np.stack([ref[:2].mean(0), ref[1:].mean(0)])
    fused = ref + 0.05 * rng.standard_normal(ref.shape)
    msi_lr = degrade_spatial(msi, 4).astype(np.float64)
    pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
    dl = np.mean([abs(_q_blocks(fused[i], fused[j], 16) - _q_blocks(lr[i], lr[j], 4)) for i, j in pairs])
    ds = np.mean(
        [
            abs(_q_blocks(fused[i], msi[k], 16) - _q_blocks(lr[i], msi_lr[k], 4))
            for i in range(3)
            for k in range(2)
        ]
    )
    out = metrics.qnr(fused, lr, msi, ratio=4, block_size=16)
    assert out["D_lambda"] == pytest.approx(dl, abs=1e-6)
    assert out["D_s"] == pytest.approx(ds, abs=1e-6)
    assert out["QNR"] == pytest.approx((1 - dl) * (1 - ds), abs=1e-6)
    noisy = metrics.qnr(ref + 0.3 * rng.standard_normal(ref.shape), lr, msi, ratio=4, block_size=16)
    assert noisy["QNR"] < out["QNR"]


# ----------------------------------------------------------------------------- evaluate and inputs
def test_evaluate_official_follows_spec(pair: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = pair
    y_out = y.copy()
    y_out[0, :4, :4] = 1.7  # out of range: the official protocol clamps the estimate
    clamped = np.clip(y_out, 0, 1)
    table = metrics.evaluate(x, y_out, ratio=8)
    assert set(table) == {"PSNR", "SSIM", "SAM", "ERGAS", "RMSE", "CC", "Q2n"}
    assert table["PSNR"] == pytest.approx(metrics.psnr(x, clamped, peak="max"))
    assert table["SSIM"] == pytest.approx(metrics.ssim(x, clamped, data_range=1.0, border="full"))
    assert table["SAM"] == pytest.approx(metrics.sam(x, clamped, eps=1e-10, zero_norm="count"))
    assert table["ERGAS"] == pytest.approx(metrics.ergas(x, clamped, ratio=4))  # constant 4 even at ratio 8
    assert table["Q2n"] == pytest.approx(metrics.q2n(x, clamped))


def test_evaluate_a_strip_narrower_than_a_q2n_block() -> None:
    rng = np.random.default_rng(3)
    x = rng.random((4, 24, 88))
    y = x + 0.05 * rng.standard_normal(x.shape)
    table = metrics.evaluate(x, y, ratio=4)
    assert table["Q2n"] == pytest.approx(metrics.q2n(x, np.clip(y, 0, 1), block_size=24))
    assert 0.5 < table["Q2n"] < 1.0


def test_evaluate_standard(pair: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = pair
    table = metrics.evaluate(x, y, ratio=2, protocol="standard")
    assert table["PSNR"] == pytest.approx(metrics.band_psnr(x, y, peak="band_max"))
    assert table["SSIM"] == pytest.approx(
        metrics.ssim(x, y, data_range=float(x.max() - x.min()), border="valid")
    )
    assert table["SAM"] == pytest.approx(metrics.sam(x, y, eps=0.0, zero_norm="skip"))
    assert table["ERGAS"] == pytest.approx(metrics.ergas(x, y, ratio=2))
    with pytest.raises(ValueError, match="protocol"):
        metrics.evaluate(x, y, ratio=2, protocol="paper")  # type: ignore[arg-type]


def test_inputs_torch_batch_and_2d(pair: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = pair
    expected = metrics.evaluate(x, y, ratio=4)
    got = metrics.evaluate(torch.from_numpy(x)[None], torch.from_numpy(y).double(), ratio=4)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6)
    assert metrics.psnr(x[0], y[0]) == pytest.approx(metrics.psnr(x[:1], y[:1]))
    with pytest.raises(ShapeMismatchError, match="same shape"):
        metrics.psnr(x, y[:, :-1])
    with pytest.raises(ShapeMismatchError, match="bands, H, W"):
        metrics.psnr(x[None, None], y[None, None])


def test_chunking_does_not_change_results(
    pair: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = pair
    expected = {**metrics.evaluate(x, y, ratio=4), "uiqi": metrics.uiqi(x, y)}
    monkeypatch.setattr(metrics, "_CHUNK_BYTES", 4096)  # one band / few pixels / one block row per chunk
    got = {**metrics.evaluate(x, y, ratio=4), "uiqi": metrics.uiqi(x, y)}
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12)


def test_small_images_rejected() -> None:
    x = np.ones((2, 6, 6))
    with pytest.raises(ShapeMismatchError, match="too small"):
        metrics.ssim(x, x)
    with pytest.raises(ShapeMismatchError, match="too small"):
        metrics.q2n(x, x, block_size=32)


def test_evaluate_runs_fast_on_a_moderate_cube() -> None:
    rng = np.random.default_rng(5)
    x = rng.random((32, 128, 128), dtype=np.float32)
    start = time.perf_counter()
    metrics.evaluate(x, x + 0.01, ratio=4)
    assert time.perf_counter() - start < 20  # about 0.5 s on 2 idle cores


@pytest.mark.slow
def test_evaluate_big_cube_timing() -> None:
    rng = np.random.default_rng(6)
    x = rng.random((128, 512, 512), dtype=np.float32)
    y = x + 0.02 * rng.standard_normal(x.shape, dtype=np.float32)
    start = time.perf_counter()
    metrics.evaluate(x, y, ratio=4)
    assert time.perf_counter() - start < 120

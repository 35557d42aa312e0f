"""Quality metrics for fused hyperspectral images.

Full reference (a ground-truth HR-HSI exists): :func:`psnr`, :func:`band_psnr`, :func:`ssim`,
:func:`sam`, :func:`ergas`, :func:`rmse`, :func:`cc`, :func:`uiqi`, :func:`q2n`, and
:func:`evaluate`, which returns the usual table under the official PIF-Net protocol (spec
section 13) or the common literature conventions. No reference (real pairs):
:func:`d_lambda`, :func:`d_s`, :func:`qnr` (Alparone et al. 2008).

Inputs are numpy arrays or torch tensors (any device), (bands, H, W) float; a 2-D image
is one band and a leading batch axis of size 1 is dropped. Per-band statistics are
accumulated in float64 over chunks of bands or pixels, windowed filters run in float32
(SSIM) or float64 (UIQI, Q2n, QNR) over chunks of bands, so memory stays bounded.

SSIM is implemented here rather than through torchmetrics: the depthwise 2-D Gaussian
filtering below reproduces torchmetrics >= 1.5 exactly (``border="full"``) and the
older/scikit-image behaviour (``border="valid"``), runs band-chunked (torchmetrics
filters five full-cube copies at once) and keeps evaluation free of the optional
dependency; both libraries serve as references in the tests.

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from pifnet_infer.errors import ShapeMismatchError
from pifnet_infer.simulate import PSFArg, degrade_spatial

_logger = logging.getLogger(__name__)

ArrayLike = np.ndarray | torch.Tensor
Protocol = Literal["official", "standard"]
ZeroNorm = Literal["count", "skip"]

#: bytes of float64 working memory per chunk
_CHUNK_BYTES = 64 * 2**20
#: the official code's ERGAS constant (spec section 13: 100 / 4 whatever the ratio)
OFFICIAL_ERGAS_RATIO = 4
#: the official code's SAM denominator guard
OFFICIAL_SAM_EPS = 1e-10


# ----------------------------------------------------------------------------- inputs
def _cube(x: ArrayLike, name: str) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    elif t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise ShapeMismatchError(f"{name} must be (bands, H, W), got shape {tuple(t.shape)}")
    return t if t.is_floating_point() else t.to(torch.float32)


def _pair(reference: ArrayLike, estimate: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    ref, est = _cube(reference, "reference"), _cube(estimate, "estimate")
    if ref.shape != est.shape:
        raise ShapeMismatchError(
            f"reference and estimate must have the same shape, got {tuple(ref.shape)} and {tuple(est.shape)}"
        )
    return ref, est.to(ref.device)


def _step(per_item_bytes: int) -> int:
    return max(1, _CHUNK_BYTES // max(1, per_item_bytes))


# ----------------------------------------------------------------------------- per-band statistics
def _band_stats(ref: torch.Tensor, est: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-band float64 sums: sse, sx, sy, sxx, syy, sxy (x = reference, y = estimate), max, min, n."""
    bands, height, width = ref.shape
    rows, step = [], _step(24 * height * width)
    for c0 in range(0, bands, step):
        x = ref[c0 : c0 + step].reshape(-1, height * width).double()
        y = est[c0 : c0 + x.shape[0]].reshape(-1, height * width).double()
        d = x - y
        rows.append(
            torch.stack(
                [
                    (d * d).sum(1),
                    x.sum(1),
                    y.sum(1),
                    (x * x).sum(1),
                    (y * y).sum(1),
                    (x * y).sum(1),
                    x.amax(1),
                    x.amin(1),
                ]
            )
        )
    table = torch.cat(rows, dim=1)
    names = ("sse", "sx", "sy", "sxx", "syy", "sxy", "max", "min")
    stats = dict(zip(names, table, strict=True))
    stats["n"] = torch.tensor(float(height * width), dtype=torch.float64, device=table.device)
    return stats


def _psnr_db(mse: torch.Tensor, peak: torch.Tensor) -> torch.Tensor:
    out = 20 * torch.log10(peak) - 10 * torch.log10(mse)
    return torch.where(mse == 0, torch.full_like(out, math.inf), out)


def _peak(stats: dict[str, torch.Tensor], peak: float | str, *, per_band: bool) -> torch.Tensor:
    if peak == "max":
        value = stats["max"].max()
    elif peak == "band_max" and per_band:
        value = stats["max"]
    elif isinstance(peak, int | float) and not isinstance(peak, bool):
        value = torch.tensor(float(peak), dtype=torch.float64, device=stats["max"].device)
    else:
        options = "'max', 'band_max' or a number" if per_band else "'max' or a number"
        raise ValueError(f"peak must be {options}, got {peak!r}")
    if torch.any(value <= 0):
        raise ValueError(f"the PSNR peak must be > 0, got {value.min().item()!r}; pass peak=<data range>")
    return value


def _psnr_cube(stats: dict[str, torch.Tensor], peak: float | str) -> float:
    mse = stats["sse"].sum() / (stats["n"] * stats["sse"].numel())
    return float(_psnr_db(mse, _peak(stats, peak, per_band=False)))


def _psnr_bands(stats: dict[str, torch.Tensor], peak: float | str) -> float:
    return float(_psnr_db(stats["sse"] / stats["n"], _peak(stats, peak, per_band=True)).mean())


def _rmse(stats: dict[str, torch.Tensor]) -> float:
    return float(torch.sqrt(stats["sse"].mean() / stats["n"]))


def psnr(reference: ArrayLike, estimate: ArrayLike, *, peak: float | Literal["max"] = "max") -> float:
    """PSNR (dB) of the whole cube: ``20 log10(peak) - 10 log10(MSE over all bands and pixels)``.

    Args:
        reference: ground truth (bands, H, W).
        estimate: fused result, same shape.
        peak: ``"max"`` (maximum of the reference, as the official code) or a number such as 1.0.

    Returns:
        PSNR in dB; ``inf`` when the images are equal.
    """
    return _psnr_cube(_band_stats(*_pair(reference, estimate)), peak)


def band_psnr(
    reference: ArrayLike, estimate: ArrayLike, *, peak: float | Literal["max", "band_max"] = "band_max"
) -> float:
    """Mean over bands of the per-band PSNR (dB).

    Args:
        reference: ground truth (bands, H, W), float.
        estimate: fused result, same shape.
        peak: ``"band_max"`` (each reference band's maximum), ``"max"`` (the cube's maximum) or a number.
    """
    return _psnr_bands(_band_stats(*_pair(reference, estimate)), peak)


def rmse(reference: ArrayLike, estimate: ArrayLike) -> float:
    """Root mean squared error over all bands and pixels."""
    return _rmse(_band_stats(*_pair(reference, estimate)))


def _ergas(stats: dict[str, torch.Tensor], ratio: float) -> float:
    rel = torch.sqrt(stats["sse"] / stats["n"]) / (stats["sx"] / stats["n"])
    return float(100.0 / ratio * torch.sqrt(torch.mean(rel * rel)))


def ergas(reference: ArrayLike, estimate: ArrayLike, *, ratio: float = OFFICIAL_ERGAS_RATIO) -> float:
    """ERGAS: ``100 / ratio * sqrt(mean_b (RMSE_b / mean_b)^2)``, mean_b = mean of reference band b.

    A reference band of zero mean makes it ``inf`` (NaN when that band is also error-free).

    Args:
        reference: ground truth (bands, H, W), float.
        estimate: fused result, same shape.
        ratio: HR/LR scale factor (the ``h/l`` of Wald's formula is 1/ratio); the default 4 is the
            official code's constant.
    """
    if not ratio > 0:
        raise ValueError(f"ratio must be > 0, got {ratio!r}")
    return _ergas(_band_stats(*_pair(reference, estimate)), ratio)


def _cc(stats: dict[str, torch.Tensor]) -> float:
    n = stats["n"]
    cov = stats["sxy"] / n - stats["sx"] * stats["sy"] / n**2
    vx = stats["sxx"] / n - (stats["sx"] / n) ** 2
    vy = stats["syy"] / n - (stats["sy"] / n) ** 2
    valid = (vx > 0) & (vy > 0)
    if not torch.any(valid):
        return math.nan
    return float((cov[valid] / torch.sqrt(vx[valid] * vy[valid])).mean())


def cc(reference: ArrayLike, estimate: ArrayLike) -> float:
    """Mean over bands of the Pearson correlation; bands constant in either image are skipped (NaN if all are)."""
    return _cc(_band_stats(*_pair(reference, estimate)))


# ----------------------------------------------------------------------------- SAM
def _angles(ref: torch.Tensor, est: torch.Tensor, eps: float, zero_norm: ZeroNorm) -> torch.Tensor:
    """Per-pixel spectral angle in radians, float64 (H*W,); zero-norm pixels are pi/2 ("count") or NaN ("skip")."""
    if zero_norm not in ("count", "skip"):
        raise ValueError(f"zero_norm must be 'count' or 'skip', got {zero_norm!r}")
    bands = ref.shape[0]
    x_all, y_all = ref.reshape(bands, -1), est.reshape(bands, -1)
    step = _step(32 * bands)
    out = []
    for p0 in range(0, x_all.shape[1], step):
        x, y = x_all[:, p0 : p0 + step].double(), y_all[:, p0 : p0 + step].double()
        nx, ny = torch.sqrt((x * x).sum(0)), torch.sqrt((y * y).sum(0))
        angle = torch.acos(torch.clamp((x * y).sum(0) / (nx * ny + eps), -1.0, 1.0))
        fill = math.pi / 2 if zero_norm == "count" else math.nan
        out.append(torch.where((nx > 0) & (ny > 0), angle, torch.full_like(angle, fill)))
    return torch.cat(out)


def sam(
    reference: ArrayLike, estimate: ArrayLike, *, eps: float = OFFICIAL_SAM_EPS, zero_norm: ZeroNorm = "count"
) -> float:
    """Spectral angle mapper in degrees, averaged over pixels.

    ``angle = arccos(clamp(<x, y> / (|x| |y| + eps), -1, 1))``.

    Args:
        reference: ground truth (bands, H, W), float.
        estimate: fused result, same shape.
        eps: denominator guard; 1e-10 is the official value (it makes SAM(x, x) about 1e-3 degrees,
            not exactly 0, for reflectance-scale data); 0 for the textbook form.
        zero_norm: ``"count"`` (official): pixels where either spectrum is all zero count as 90 degrees;
            ``"skip"``: they are left out of the average (NaN if every pixel is).
    """
    angles = _angles(*_pair(reference, estimate), eps, zero_norm)
    return float(torch.rad2deg(angles.nanmean() if zero_norm == "skip" else angles.mean()))


def sam_map(
    reference: ArrayLike, estimate: ArrayLike, *, eps: float = OFFICIAL_SAM_EPS, zero_norm: ZeroNorm = "count"
) -> np.ndarray:
    """Per-pixel spectral angle in degrees, float32 (H, W); zero-norm pixels are 90 ("count") or NaN ("skip")."""
    ref, est = _pair(reference, estimate)
    return torch.rad2deg(_angles(ref, est, eps, zero_norm)).reshape(ref.shape[1:]).float().cpu().numpy()


# ----------------------------------------------------------------------------- SSIM
def ssim(
    reference: ArrayLike,
    estimate: ArrayLike,
    *,
    data_range: float = 1.0,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    border: Literal["full", "valid"] = "full",
) -> float:
    """SSIM with a Gaussian window, per band, averaged over bands and pixels.

    The window is ``2 * int(3.5 sigma + 0.5) + 1`` taps (11 for sigma 1.5), as torchmetrics and scikit-image.

    Args:
        reference: ground truth (bands, H, W), float.
        estimate: fused result, same shape.
        data_range: value range L of the data (C1 = (k1 L)^2, C2 = (k2 L)^2); 1.0 in the official protocol.
        border: ``"full"``: reflect-pad by the window radius and average the whole map (torchmetrics >= 1.5,
            the official protocol with a current torchmetrics); ``"valid"``: average only windows inside the
            image (torchmetrics < 1.5, scikit-image, Wang et al.).
        sigma: standard deviation of the Gaussian window in pixels.
        k1: luminance constant.
        k2: contrast constant.
    """
    ref, est = _pair(reference, estimate)
    if border not in ("full", "valid"):
        raise ValueError(f"border must be 'full' or 'valid', got {border!r}")
    if not data_range > 0 or not sigma > 0:
        raise ValueError(f"data_range and sigma must be > 0, got {data_range!r} and {sigma!r}")
    radius = int(3.5 * sigma + 0.5)
    bands, height, width = ref.shape
    if (border == "full" and min(height, width) <= radius) or min(height, width) < 2 * radius + 1:
        raise ShapeMismatchError(
            f"images of size {(height, width)} are too small for an SSIM window of radius {radius}"
        )
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32, device=ref.device)
    g = torch.exp(-0.5 * (taps / sigma) ** 2)
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :])[None, None]
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    total, count = 0.0, 0
    step = _step(4 * 10 * (height + 2 * radius) * (width + 2 * radius))
    for c0 in range(0, bands, step):
        x, y = est[c0 : c0 + step].float(), ref[c0 : c0 + step].float()
        k = x.shape[0]
        # filtering is linear, so E[x^2] + E[y^2] (all SSIM needs) is one filtered map: 4 maps, not 5
        stack = torch.empty((4 * k, height, width), dtype=torch.float32, device=x.device)
        stack[:k], stack[k : 2 * k] = x, y
        torch.mul(x, x, out=stack[2 * k : 3 * k]).addcmul_(y, y)
        torch.mul(x, y, out=stack[3 * k :])
        if border == "full":
            stack = F.pad(stack[None], (radius,) * 4, mode="reflect")[0]
        moments = F.conv2d(stack[None], kernel.expand(4 * k, 1, -1, -1), groups=4 * k)[0]
        del stack
        # in place: num = (2 mx my + c1)(2 cov + c2), den = (mx^2 + my^2 + c1)(vx + vy + c2)
        mx, my, sq, exy = moments.chunk(4)
        num = mx * my
        exy.sub_(num).mul_(2).add_(c2)
        num.mul_(2).add_(c1).mul_(exy)
        mx.square_().add_(my.square_())
        sq.sub_(mx).clamp_(min=0.0).add_(c2)
        smap = num.div_(mx.add_(c1).mul_(sq))
        total += float(smap.sum(dtype=torch.float64))
        count += smap.numel()
    return total / count


# ----------------------------------------------------------------------------- UIQI
def _q_index(
    mx: torch.Tensor, my: torch.Tensor, vx: torch.Tensor, vy: torch.Tensor, cxy: torch.Tensor
) -> torch.Tensor:
    """Wang-Bovik Q from window moments, with the usual limits when a denominator vanishes."""
    den_m = mx * mx + my * my
    den_v = torch.clamp(vx, min=0) + torch.clamp(vy, min=0)
    flat_v = den_v <= 1e-12 * den_m
    q = 4 * cxy * mx * my / (den_v * den_m)
    q = torch.where(flat_v & (den_m > 0), 2 * mx * my / den_m, q)
    q = torch.where(~flat_v & (den_m == 0), 2 * cxy / den_v, q)
    return torch.where(flat_v & (den_m == 0), torch.ones_like(q), q)


def uiqi(reference: ArrayLike, estimate: ArrayLike, *, block_size: int = 8, stride: int = 1) -> float:
    """Universal image quality index (Wang and Bovik 2002), per band, averaged over windows and bands.

    ``Q = 4 cov(x, y) mean(x) mean(y) / ((var x + var y)(mean(x)^2 + mean(y)^2))`` over
    ``block_size`` x ``block_size`` windows moved by ``stride`` (1: sliding, as the original paper;
    ``block_size``: non-overlapping blocks, as the pansharpening toolboxes). A window where both
    images are constant scores ``2 mx my / (mx^2 + my^2)``, both zero scores 1.
    """
    ref, est = _pair(reference, estimate)
    bands, height, width = ref.shape
    if not 1 <= stride <= block_size <= min(height, width):
        raise ValueError(
            f"need 1 <= stride <= block_size <= {min(height, width)}, got {stride!r}, {block_size!r}"
        )
    total, count = 0.0, 0
    step = _step(8 * 12 * height * width)
    for c0 in range(0, bands, step):
        x, y = ref[c0 : c0 + step].double(), est[c0 : c0 + step].double()
        # centre each band first: the window variances then suffer no cancellation
        shift_x, shift_y = x.mean(dim=(1, 2), keepdim=True), y.mean(dim=(1, 2), keepdim=True)
        x, y = x - shift_x, y - shift_y
        pooled = F.avg_pool2d(torch.stack([x, y, x * x, y * y, x * y]), (1, block_size), (1, stride))
        mx, my, exx, eyy, exy = F.avg_pool2d(pooled, (block_size, 1), (stride, 1))
        q = _q_index(mx + shift_x, my + shift_y, exx - mx * mx, eyy - my * my, exy - mx * my)
        total += float(q.sum())
        count += q.numel()
    return total / count


# ----------------------------------------------------------------------------- Q2^n
def _onion_table(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Structure of the toolbox's hypercomplex product for n = 2^k components.

    The Q2n code (Garzelli and Nencini; Vivone's pansharpening toolbox, ``onion_mult``) multiplies
    x = (a, b), y = (c, d) (halves) as ``(a c - d* b, a* d* + c b*)``, ``*`` negating all but the
    first component, recursively down to scalars. On basis vectors this gives
    ``e_i e_j = s(i, j) e_(i xor j)``; unrolling the recursion on the four quadrants gives the signs
    below. Returns ``(partner, sign)`` with ``partner[i, k] = i xor k`` and ``sign[i, k] = s(i, i xor k)``,
    so that ``(x y)_k = sum_i sign[i, k] x_i y_partner[i, k]``.
    """
    s = np.ones((1, 1))
    while s.shape[0] < n:
        c = np.where(np.arange(s.shape[0]) == 0, 1.0, -1.0)
        top = np.concatenate([s, c[:, None] * c[None, :] * s], axis=1)
        bottom = np.concatenate([c[:, None] * s.T, -c[None, :] * s.T], axis=1)
        s = np.concatenate([top, bottom], axis=0)
    idx = np.arange(n)
    partner = idx[:, None] ^ idx[None, :]
    return torch.from_numpy(partner), torch.from_numpy(s[idx[:, None], partner])


def _onion_mean_product(g: torch.Tensor, partner: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Hypercomplex product averaged over pixels, from cross moments g[b, i, j] = mean_p x_i y_j: (B, n)."""
    rows = torch.arange(g.shape[-1], device=g.device)[:, None]
    return (sign * g[:, rows, partner]).sum(dim=1)


def q2n(
    reference: ArrayLike, estimate: ArrayLike, *, block_size: int = 32, shift: int | None = None
) -> float:
    """Q2^n (Garzelli and Nencini 2009), the hypercomplex extension of UIQI to n-band images.

    Follows ``q2n.m``/``onions_quality.m`` of the pansharpening toolbox: the image is padded at the
    bottom/right by mirroring (edge included) to whole blocks; bands are zero-padded to the next power
    of two n; in each block both images are normalised with the reference band's block mean s and
    sample standard deviation t (``(v - s) / t + 1``; the estimate gets ``v + 1`` where s == 0), the
    estimate is conjugated, and the block's quality is the modulus of
    ``(E[x y] - E[x] E[y]) * 2|mx||my|/(|mx|^2+|my|^2) * 2/(var x + var y)`` (hypercomplex products,
    P/(P-1) sample factors); the index is the mean over blocks. The toolbox casts to uint16 first
    (data in digital numbers); this function does not, so it works on reflectance.

    Each normalised band is affine in the raw band, so every block moment follows from the block's
    centred cross-moment matrix: one batched matrix product per chunk of blocks.

    Args:
        reference: ground truth (bands, H, W), float.
        estimate: fused result, same shape.
        block_size: side of the blocks (32 in the toolbox).
        shift: block step, 1 <= shift <= block_size (default: block_size, non-overlapping).

    Returns:
        Q2n, 1 for identical images.
    """
    ref, est = _pair(reference, estimate)
    shift = block_size if shift is None else shift
    bands, height, width = ref.shape
    if not 1 <= shift <= block_size or block_size < 2:
        raise ValueError(f"need block_size >= 2 and 1 <= shift <= block_size, got {block_size!r}, {shift!r}")
    pads = [(math.ceil(size / shift) - 1) * shift + block_size - size for size in (height, width)]
    if pads[0] >= height or pads[1] >= width:
        raise ShapeMismatchError(
            f"images of size {(height, width)} are too small for Q2n blocks of {block_size}; pass a smaller block_size"
        )
    n = 1 << (bands - 1).bit_length()
    partner, sign = (t.to(ref.device) for t in _onion_table(n))
    conj = torch.where(torch.arange(n, device=ref.device) == 0, 1.0, -1.0).double()
    factor = block_size**2 / (block_size**2 - 1)
    values = []
    for x, y in _blocks(
        (ref, est), block_size, shift, pads, bytes_per_block=8 * (2 * bands * block_size**2 + 4 * n * n)
    ):
        # x' = xc / t + 1 and y' = conj * (a * yc + 1), with xc, yc centred on the reference's block mean s,
        # t its sample std (eps if 0), a = 1 / t (1 where s == 0); padded bands have xc = yc = 0.
        s = x.mean(-1, keepdim=True)
        t = x.std(-1, keepdim=True)
        t = torch.where(t == 0, torch.full_like(t, np.finfo(np.float64).eps), t)
        a = torch.where(s == 0, torch.ones_like(t), 1 / t)
        xc, yc = (x - s) / t, a * (y - s)
        pad = (0, 0, 0, n - bands)
        ey = F.pad(yc.mean(-1, keepdim=True), pad)[..., 0]
        exx = F.pad((xc * xc).mean(-1, keepdim=True), pad)[..., 0]
        eyy = F.pad((yc * yc).mean(-1, keepdim=True), pad)[..., 0]
        cross = F.pad(xc @ yc.transpose(1, 2) / xc.shape[-1], (0, n - bands, 0, n - bands))
        m2 = conj * (ey + 1)
        gram = conj * (cross + ey[:, None, :] + 1)
        n1, n2 = torch.full_like(ey[:, 0], float(n)), (m2 * m2).sum(-1)
        var_sum = factor * ((exx + 1).sum(-1) + (eyy + 2 * ey + 1).sum(-1)) - factor * (n1 + n2)
        mean_bias = 2 * torch.sqrt(n1 * n2) / (n1 + n2)
        qv = factor * _onion_mean_product(gram, partner, sign)
        qm = _onion_mean_product(m2[:, None, :].expand(-1, n, -1), partner, sign)
        q = (qv - factor * qm) * (mean_bias * 2 / var_sum)[:, None]
        last = torch.zeros_like(q)
        last[:, -1] = mean_bias
        q = torch.where((var_sum == 0)[:, None], last, q)
        values.append(torch.linalg.vector_norm(q, dim=-1))
    return float(torch.cat(values).mean())


def _blocks(
    images: tuple[torch.Tensor, ...], block: int, shift: int, pads: list[int], *, bytes_per_block: int
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Chunks of (B, bands, block*block) float64 blocks of each image (mirror-padded bottom/right by ``pads``)."""
    tiled = []
    for img in images:
        if pads[0]:
            img = torch.cat([img, img.flip(1)[:, : pads[0]]], 1)
        if pads[1]:
            img = torch.cat([img, img.flip(2)[:, :, : pads[1]]], 2)
        tiled.append(
            img.unfold(1, block, shift).unfold(2, block, shift)
        )  # (bands, by, bx, block, block) view
    rows, cols = tiled[0].shape[1:3]
    step = max(1, _step(bytes_per_block) // cols)
    for r0 in range(0, rows, step):
        yield tuple(
            t[:, r0 : r0 + step].permute(1, 2, 0, 3, 4).reshape(-1, t.shape[0], block * block).double()
            for t in tiled
        )


# ----------------------------------------------------------------------------- QNR
def _block_q_matrix(x: torch.Tensor, y: torch.Tensor, block: int) -> torch.Tensor:
    """Mean over non-overlapping blocks of Q(x_i, y_j): (bands_x, bands_y) float64."""
    height, width = x.shape[1:]
    if min(height, width) < block:
        raise ShapeMismatchError(
            f"images of size {(height, width)} are smaller than the QNR block of {block} pixels"
        )
    crop = (height - height % block, width - width % block)
    x, y = x[:, : crop[0], : crop[1]], y[:, : crop[0], : crop[1]]
    acc = torch.zeros(x.shape[0], y.shape[0], dtype=torch.float64, device=x.device)
    count = 0
    bytes_per_block = 8 * (block * block * (x.shape[0] + y.shape[0]) + 6 * x.shape[0] * y.shape[0])
    for xb, yb in _blocks((x, y), block, block, [0, 0], bytes_per_block=bytes_per_block):
        mx, my = xb.mean(-1), yb.mean(-1)
        xc, yc = xb - mx[..., None], yb - my[..., None]
        cov = xc @ yc.transpose(1, 2) / xb.shape[-1]
        vx, vy = (xc * xc).mean(-1), (yc * yc).mean(-1)
        acc += _q_index(mx[:, :, None], my[:, None, :], vx[:, :, None], vy[:, None, :], cov).sum(0)
        count += xb.shape[0]
    return acc / count


def _check_no_reference(fused: torch.Tensor, lr: torch.Tensor, ratio: int, block_size: int) -> None:
    if fused.shape[0] != lr.shape[0] or fused.shape[1:] != (lr.shape[1] * ratio, lr.shape[2] * ratio):
        raise ShapeMismatchError(
            f"fused must be (C, r*h, r*w) for lr_hsi {tuple(lr.shape)} and ratio {ratio}, got {tuple(fused.shape)}"
        )
    if block_size % ratio or block_size // ratio < 2:
        raise ValueError(
            f"block_size must be a multiple of ratio with block_size/ratio >= 2, got {block_size!r}"
        )


def d_lambda(
    fused: ArrayLike, lr_hsi: ArrayLike, *, ratio: int, block_size: int = 32, p: float = 1.0
) -> float:
    """Spectral distortion D_lambda (Alparone et al. 2008): 0 is best.

    ``(mean over band pairs l != r of |Q(F_l, F_r) - Q(L_l, L_r)|^p)^(1/p)`` with Q the UIQI on
    non-overlapping blocks, ``block_size`` at full resolution and ``block_size / ratio`` on the LR-HSI
    (the paper's choice; images are cropped to whole blocks).

    Args:
        fused: (C, H, W) fused image, float.
        lr_hsi: (C, H/r, W/r) the LR-HSI that was fused.
        ratio: scale factor r.
        block_size: block side at full resolution (a multiple of r, at least 2r).
        p: exponent.
    """
    f, lr = _cube(fused, "fused"), _cube(lr_hsi, "lr_hsi")
    lr = lr.to(f.device)
    _check_no_reference(f, lr, ratio, block_size)
    if f.shape[0] < 2:
        return 0.0
    diff = (_block_q_matrix(f, f, block_size) - _block_q_matrix(lr, lr, block_size // ratio)).abs() ** p
    off = ~torch.eye(f.shape[0], dtype=torch.bool, device=diff.device)
    return float(diff[off].mean() ** (1 / p))


def d_s(
    fused: ArrayLike,
    lr_hsi: ArrayLike,
    hr_msi: ArrayLike,
    *,
    ratio: int,
    psf: PSFArg = "official",
    block_size: int = 32,
    q: float = 1.0,
) -> float:
    """Spatial distortion D_s (Alparone et al. 2008) generalised to a multi-band MSI: 0 is best.

    ``(mean over HSI bands l and MSI bands k of |Q(F_l, M_k) - Q(L_l, M_k_LR)|^q)^(1/q)``, where M_k_LR
    is the MSI degraded to the LR grid with ``psf`` (:func:`pifnet_infer.simulate.degrade_spatial`);
    blocks as in :func:`d_lambda`.

    Args:
        fused: (C, H, W) fused image, float.
        lr_hsi: (C, H/r, W/r) the LR-HSI that was fused.
        hr_msi: (c, H, W) the HR-MSI that was fused.
        ratio: scale factor r.
        psf: spatial degradation from the HR to the LR grid.
        block_size: block side at full resolution (a multiple of r, at least 2r).
        q: exponent.
    """
    f, lr, msi = _cube(fused, "fused"), _cube(lr_hsi, "lr_hsi"), _cube(hr_msi, "hr_msi")
    lr, msi = lr.to(f.device), msi.to(f.device)
    _check_no_reference(f, lr, ratio, block_size)
    if msi.shape[1:] != f.shape[1:]:
        raise ShapeMismatchError(f"hr_msi must be (c, {f.shape[1]}, {f.shape[2]}), got {tuple(msi.shape)}")
    msi_lr = degrade_spatial(msi, ratio, psf)
    diff = (_block_q_matrix(f, msi, block_size) - _block_q_matrix(lr, msi_lr, block_size // ratio)).abs() ** q
    return float(diff.mean() ** (1 / q))


def qnr(
    fused: ArrayLike,
    lr_hsi: ArrayLike,
    hr_msi: ArrayLike,
    *,
    ratio: int,
    psf: PSFArg = "official",
    block_size: int = 32,
    p: float = 1.0,
    q: float = 1.0,
    alpha: float = 1.0,
    beta: float = 1.0,
) -> dict[str, float]:
    """Quality with no reference: ``{"D_lambda", "D_s", "QNR"}``, QNR = (1 - D_lambda)^alpha (1 - D_s)^beta (1 best)."""
    dl = d_lambda(fused, lr_hsi, ratio=ratio, block_size=block_size, p=p)
    ds = d_s(fused, lr_hsi, hr_msi, ratio=ratio, psf=psf, block_size=block_size, q=q)
    return {"D_lambda": dl, "D_s": ds, "QNR": (1 - dl) ** alpha * (1 - ds) ** beta}


# ----------------------------------------------------------------------------- table
def evaluate(
    reference: ArrayLike, estimate: ArrayLike, *, ratio: int, protocol: Protocol = "official"
) -> dict[str, float]:
    """The usual full-reference table: PSNR, SSIM, SAM, ERGAS, RMSE, CC, Q2n.

    ``protocol="official"`` reproduces the PIF-Net code (spec section 13) for the first four: the
    estimate is clamped to [0, 1] (the reference is not); PSNR over the whole cube with peak = max of
    the reference; SSIM with data_range 1.0, ``border="full"`` (torchmetrics >= 1.5); SAM with eps 1e-10,
    zero-norm pixels counted as 90 degrees; ERGAS with the constant 4 whatever ``ratio`` is.

    ``protocol="standard"`` (common HSI-fusion conventions): no clamping; PSNR = mean per-band PSNR
    with each reference band's maximum as peak; SSIM with data_range = reference max - min and
    ``border="valid"``; SAM with eps 0, zero-norm pixels skipped; ERGAS with 100 / ``ratio``.

    Both: RMSE over the cube, CC = mean per-band correlation, Q2n on 32 x 32 blocks (the multi-band
    UIQI; per-band :func:`uiqi` is left out of the table to keep large cubes fast). Images with a
    side under 32 px (held-out strips, small tiles) get Q2n blocks as large as that side.

    Args:
        reference: ground truth (bands, H, W), float.
        estimate: fused result, same shape.
        ratio: the fusion's scale factor (used by the standard ERGAS).
        protocol: ``"official"`` or ``"standard"``.

    Returns:
        ``{"PSNR", "SSIM", "SAM", "ERGAS", "RMSE", "CC", "Q2n"}`` as floats.
    """
    if protocol not in ("official", "standard"):
        raise ValueError(f"protocol must be 'official' or 'standard', got {protocol!r}")
    start = time.perf_counter()
    ref, est = _pair(reference, estimate)
    if protocol == "official":
        est = est.clamp(0.0, 1.0)
    stats = _band_stats(ref, est)
    if protocol == "official":
        scores = {
            "PSNR": _psnr_cube(stats, "max"),
            "SSIM": ssim(ref, est, data_range=1.0, border="full"),
            "SAM": sam(ref, est, eps=OFFICIAL_SAM_EPS, zero_norm="count"),
            "ERGAS": _ergas(stats, OFFICIAL_ERGAS_RATIO),
        }
    else:
        data_range = float(stats["max"].max() - stats["min"].min())
        scores = {
            "PSNR": _psnr_bands(stats, "band_max"),
            "SSIM": ssim(ref, est, data_range=data_range, border="valid"),
            "SAM": sam(ref, est, eps=0.0, zero_norm="skip"),
            "ERGAS": _ergas(stats, ratio),
        }
    scores["RMSE"] = _rmse(stats)
    scores["CC"] = _cc(stats)
    scores["Q2n"] = q2n(ref, est, block_size=min(32, *ref.shape[-2:]))
    _logger.debug(
        "evaluate(protocol=%r) of a %s cube: %.2f s", protocol, tuple(ref.shape), time.perf_counter() - start
    )
    return scores

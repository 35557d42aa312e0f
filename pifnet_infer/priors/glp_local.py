"""GLP-HS with regression-synthesised detail and local (windowed, clipped) injection gains.

For each HSI band b, an MSI intensity ``P_b = sum_k w_bk M_k`` is synthesised by least squares
(the LR-HSI band regressed on the MSI degraded to the LR grid), as in
:func:`~pifnet_infer.priors.classical.glp_hs`. Its detail ``P_b - low(P_b)`` is injected with a gain
that varies over the image:

    g_b(x) = clip(cov_W(U_b, L_b)(x) / (var_W(L_b)(x) + eps_b), lo, hi),  L_b = low(P_b)

where ``cov_W``/``var_W`` are moments over a ``window`` x ``window`` neighbourhood of x (box filters
on cumulative sums, reflect padding) and U the bicubic LR-HSI. A band whose low-pass does not
co-vary locally with the synthesised intensity (wrong sign, or no relation, as for bands an MSI
does not see) gets no detail there; ``eps_b`` (a small fraction of the band's global variance of
L_b) keeps flat regions from dividing by zero.

.. versionadded:: 0.1
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pifnet_infer.priors.classical import _check_pair, _glp_bands, _regress
from pifnet_infer.simulate import DEFAULT_NYQUIST_GAIN, PSFArg

#: defaults measured on VNIR + RGB x4 (issue 17): 17 x 17 HR window, gains clipped to [0, 2]
DEFAULT_WINDOW = 17
DEFAULT_GAIN_RANGE = (0.0, 2.0)
#: variance floor of the local gain, relative to the band's global variance of L_b
VARIANCE_FLOOR = 1e-2

_CHUNK_BYTES = 64 * 2**20


def box_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over a ``window`` x ``window`` neighbourhood of every pixel of (N, H, W), reflect-padded borders.

    Computed from cumulative sums (cost independent of the window). ``window`` is odd; it is
    reduced to fit the image (reflect padding needs ``window // 2 < min(H, W)``).
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd int, got {window!r}")
    half = min(window // 2, min(x.shape[-2:]) - 1)
    size = 2 * half + 1
    padded = F.pad(x[:, None], (half, half, half, half), mode="reflect")[:, 0]
    padded = F.pad(padded, (1, 0, 1, 0))  # a zero row and column in front of the cumulative sums
    s = padded.cumsum(-1).cumsum(-2)
    return (s[:, size:, size:] - s[:, :-size, size:] - s[:, size:, :-size] + s[:, :-size, :-size]) / size**2


def local_gains(
    up: torch.Tensor,
    low: torch.Tensor,
    *,
    window: int = DEFAULT_WINDOW,
    gain_range: tuple[float, float] = DEFAULT_GAIN_RANGE,
) -> torch.Tensor:
    """Windowed regression gains ``clip(cov_W(up, low) / (var_W(low) + eps), lo, hi)``, band by band.

    Args:
        up: (N, H, W) float64 bicubic LR-HSI bands.
        low: (N, H, W) float64 low-pass synthesised intensities of the same bands.
        window: odd window size in pixels.
        gain_range: (lo, hi) clipping bounds.

    Returns:
        float64 (N, H, W) gains.
    """
    mean_u, mean_l = box_mean(up, window), box_mean(low, window)
    cov = box_mean(up * low, window) - mean_u * mean_l
    var = (box_mean(low * low, window) - mean_l.square()).clamp_min(0.0)
    floor = VARIANCE_FLOOR * low.flatten(1).var(1)[:, None, None] + torch.finfo(low.dtype).tiny
    return (cov / (var + floor)).clamp(*gain_range)


def glp_hs_local(
    lr: np.ndarray,
    msi: np.ndarray,
    ratio: int,
    *,
    psf: PSFArg = "mtf",
    nyquist_gain: float = DEFAULT_NYQUIST_GAIN,
    window: int = DEFAULT_WINDOW,
    gain_range: tuple[float, float] = DEFAULT_GAIN_RANGE,
) -> np.ndarray:
    """GLP-HS with per-band regression-synthesised detail and local injection gains (module docstring).

    Args:
        lr: (C, h, w) LR-HSI, float.
        msi: (c, r*h, r*w) HR-MSI, float.
        ratio: scale factor r.
        psf: degradation linking the two grids (as :func:`~pifnet_infer.priors.classical.glp_hs`).
        nyquist_gain: MTF gain at Nyquist for ``psf="mtf"``.
        window: odd side of the window of the local gains, in HR pixels.
        gain_range: (lo, hi) bounds of the gains.

    Returns:
        float32 (C, r*h, r*w).
    """
    lo, hi = gain_range
    if not lo <= hi:
        raise ValueError(f"gain_range must be (lo, hi) with lo <= hi, got {gain_range!r}")
    x, m = _check_pair(lr, msi, ratio)
    up, m_lr, m_low = _glp_bands(x, m, ratio, psf, nyquist_gain)
    weights = torch.from_numpy(_regress(x.reshape(x.shape[0], -1), m_lr.reshape(m_lr.shape[0], -1)))
    m_t = torch.from_numpy(m).double()
    m_low_t = torch.from_numpy(m_low).double()
    detail_msi = m_t - m_low_t
    out = np.empty_like(up)
    step = max(1, _CHUNK_BYTES // (8 * 6 * up.shape[1] * up.shape[2]))
    for b0 in range(0, up.shape[0], step):
        w = weights[b0 : b0 + step]
        up_b = torch.from_numpy(up[b0 : b0 + step]).double()
        low = torch.einsum("bk,khw->bhw", w, m_low_t)
        gains = local_gains(up_b, low, window=window, gain_range=gain_range)
        detail = torch.einsum("bk,khw->bhw", w, detail_msi)
        out[b0 : b0 + step] = (up_b + gains * detail).float().numpy()
    return out

"""Classical HSI-MSI fusions: bicubic, global-gain GLP-HS and GSA (references, fallbacks and priors).

- :func:`bicubic`: upsampling of the LR-HSI only (no MSI).
- :func:`glp_hs`: MTF-GLP hypersharpening (multiresolution analysis; Aiazzi et al., Selva et al. 2015);
  :func:`fit_glp_hs` fits its injection once for a whole scene.
- :func:`gsa`: Gram-Schmidt adaptive component substitution (Aiazzi et al. 2007), extended to a
  multi-band MSI by giving each HSI band the detail of its most correlated MSI band.

All take numpy (C, h, w) LR-HSI and (c, r*h, r*w) HR-MSI float arrays and return float32
(C, r*h, r*w). Everything is vectorised over pixels (matrix products on flattened bands).
``psf`` is the spatial degradation assumed between the two images (see
:func:`pifnet_infer.simulate.degrade_spatial`): ``"mtf"`` for real sensors; pass the
simulation's PSF (e.g. ``"official"``) when evaluating on simulated pairs, so that the
low-pass MSI shares the geometry of the LR-HSI.

.. versionadded:: 0.1
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pifnet_infer.errors import ShapeMismatchError
from pifnet_infer.simulate import DEFAULT_NYQUIST_GAIN, PSFArg, degrade_spatial

_CHUNK_BYTES = 64 * 2**20


def bicubic(lr: np.ndarray, ratio: int) -> np.ndarray:
    """Bicubic upsampling by ``ratio``, the same upsampling PIF-Net applies to its LR input.

    torch ``interpolate(scale_factor=ratio, mode="bicubic", align_corners=False)``.

    Args:
        lr: (C, h, w) float array.
        ratio: integer scale factor r.

    Returns:
        float32 (C, r*h, r*w).
    """
    x = _cube(lr, "lr")
    if not isinstance(ratio, int | np.integer) or ratio < 1:
        raise ValueError(f"ratio must be a positive int, got {ratio!r}")
    step = max(1, _CHUNK_BYTES // (4 * x.shape[1] * x.shape[2] * ratio * ratio))
    t = torch.from_numpy(x)
    out = [
        F.interpolate(
            t[c0 : c0 + step][None], scale_factor=float(ratio), mode="bicubic", align_corners=False
        )[0]
        for c0 in range(0, x.shape[0], step)
    ]
    return torch.cat(out).numpy()


@dataclass(frozen=True)
class GLPInjection:
    """How GLP-HS injects MSI detail, fitted on one scene (:func:`fit_glp_hs`).

    Attributes:
        weights: float64 (C, c), the MSI combination synthesising each HSI band's intensity.
        gains: float64 (C,), the injection gain of each band.
    """

    weights: np.ndarray
    gains: np.ndarray


def fit_glp_hs(
    lr: np.ndarray,
    msi: np.ndarray,
    ratio: int,
    *,
    psf: PSFArg = "mtf",
    nyquist_gain: float = DEFAULT_NYQUIST_GAIN,
) -> GLPInjection:
    """Fit GLP-HS's injection weights and gains on a scene (arguments as :func:`glp_hs`).

    Fitting once on a whole scene and passing the result to :func:`glp_hs` for each of its tiles
    gives every tile the scene's injection instead of one fitted on the tile alone.
    """
    x, m = _check_pair(lr, msi, ratio)
    up, m_lr, m_low = _glp_bands(x, m, ratio, psf, nyquist_gain)
    return _fit_injection(x, up, m_lr, m_low)


def glp_hs(
    lr: np.ndarray,
    msi: np.ndarray,
    ratio: int,
    *,
    psf: PSFArg = "mtf",
    nyquist_gain: float = DEFAULT_NYQUIST_GAIN,
    injection: GLPInjection | None = None,
) -> np.ndarray:
    """MTF-GLP hypersharpening.

    For each HSI band b, an MSI intensity ``P_b = sum_k w_bk M_k`` is synthesised by least squares
    (LR-HSI band b regressed on the MSI degraded to the LR grid, with intercept). Its detail
    ``P_b - low(P_b)``, with ``low`` = degrade by ``psf`` then bicubic upsampling (the generalised
    Laplacian pyramid), is injected with the regression gain ``g_b = cov(U_b, low(P_b)) / var(low(P_b))``,
    U = :func:`bicubic` of the LR-HSI: ``F_b = U_b + g_b (P_b - low(P_b))``.

    Args:
        lr: (C, h, w) LR-HSI, float.
        msi: (c, r*h, r*w) HR-MSI, float.
        ratio: scale factor r.
        psf: degradation linking the two grids (``"mtf"``: Gaussian matched to ``nyquist_gain``).
        nyquist_gain: MTF gain at Nyquist for ``psf="mtf"``.
        injection: weights and gains fitted beforehand (:func:`fit_glp_hs`, e.g. on the whole scene
            this pair is a tile of); None fits them on this pair.

    Returns:
        float32 (C, r*h, r*w).

    Raises:
        ShapeMismatchError: shapes that do not fit ``ratio``, or an ``injection`` for other band counts.
    """
    x, m = _check_pair(lr, msi, ratio)
    up, m_lr, m_low = _glp_bands(x, m, ratio, psf, nyquist_gain)
    if injection is None:
        injection = _fit_injection(x, up, m_lr, m_low)
    elif injection.weights.shape != (x.shape[0], m.shape[0]) or injection.gains.shape != (x.shape[0],):
        raise ShapeMismatchError(
            f"injection fitted for weights {injection.weights.shape} and gains {injection.gains.shape}; this pair "
            f"needs ({x.shape[0]}, {m.shape[0]}) and ({x.shape[0]},)"
        )
    detail = (injection.gains[:, None] * injection.weights).astype(np.float32) @ (m - m_low).reshape(
        m.shape[0], -1
    )
    return (up.reshape(up.shape[0], -1) + detail).reshape(up.shape)


def _glp_bands(
    x: np.ndarray, m: np.ndarray, ratio: int, psf: PSFArg, nyquist_gain: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bicubic LR-HSI, MSI degraded to the LR grid, its low-pass at HR) of a checked pair."""
    m_lr = degrade_spatial(m, ratio, psf, nyquist_gain=nyquist_gain)
    return bicubic(x, ratio), m_lr, bicubic(m_lr, ratio)


def _fit_injection(x: np.ndarray, up: np.ndarray, m_lr: np.ndarray, m_low: np.ndarray) -> GLPInjection:
    weights = _regress(x.reshape(x.shape[0], -1), m_lr.reshape(m_lr.shape[0], -1))  # (C, c) on centred data
    up_f, m_low_f = up.reshape(up.shape[0], -1), m_low.reshape(m_low.shape[0], -1)
    cov_low = _cov(m_low_f, m_low_f)  # (c, c)
    var_p = np.einsum("bk,kl,bl->b", weights, cov_low, weights)
    cov_up_p = np.einsum("bk,bk->b", _cov(up_f, m_low_f), weights)
    gains = np.where(var_p > 0, cov_up_p / np.where(var_p > 0, var_p, 1.0), 0.0)
    return GLPInjection(weights, gains)


def gsa(
    lr: np.ndarray,
    msi: np.ndarray,
    ratio: int,
    *,
    psf: PSFArg = "mtf",
    nyquist_gain: float = DEFAULT_NYQUIST_GAIN,
    ridge: float = 1e-3,
) -> np.ndarray:
    """Gram-Schmidt adaptive (GSA) component substitution.

    For each MSI band k, an intensity ``I_k`` is the linear combination of the upsampled HSI bands
    whose LR version best fits M_k degraded to the LR grid (ridge-regularised least squares with
    intercept; ``ridge`` is relative to the mean band variance, needed when bands outnumber LR pixels).
    Each HSI band b takes the detail ``M_k - I_k`` of the MSI band k most correlated with it at LR,
    with the Gram-Schmidt gain ``cov(U_b, I_k) / var(I_k)``: ``F_b = U_b + g_b (M_k - I_k)``.

    Args:
        lr: (C, h, w) LR-HSI, float.
        msi: (c, r*h, r*w) HR-MSI, float.
        ratio: scale factor r.
        psf: degradation used to bring the MSI to the LR grid for the regression.
        nyquist_gain: MTF gain at Nyquist for ``psf="mtf"``.
        ridge: Tikhonov weight of the intensity regression.

    Returns:
        float32 (C, r*h, r*w).
    """
    x, m = _check_pair(lr, msi, ratio)
    up, m_lr = bicubic(x, ratio), degrade_spatial(m, ratio, psf, nyquist_gain=nyquist_gain)
    x_f, m_lr_f = x.reshape(x.shape[0], -1), m_lr.reshape(m.shape[0], -1)
    alpha = _regress(m_lr_f, x_f, ridge=ridge)  # (c, C): M_k - mean ~ alpha_k . (HSI - mean)
    up_f = up.reshape(up.shape[0], -1)
    intensity = alpha.astype(np.float32) @ (up_f - x_f.mean(1, keepdims=True)) + m_lr_f.mean(1, keepdims=True)
    cov_ui = _cov(up_f, intensity)  # (C, c)
    var_i = np.diag(_cov(intensity, intensity))
    best = np.argmax(np.abs(_corr(x_f, m_lr_f)), axis=1)  # (C,)
    rows = np.arange(x.shape[0])
    gains = np.where(var_i[best] > 0, cov_ui[rows, best] / np.where(var_i[best] > 0, var_i[best], 1.0), 0.0)
    detail = m.reshape(m.shape[0], -1) - intensity  # (c, H*W)
    return (up_f + gains[:, None].astype(np.float32) * detail[best]).reshape(up.shape)


def _cube(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim != 3:
        raise ShapeMismatchError(f"{name} must be (bands, H, W), got shape {arr.shape}")
    return arr


def _check_pair(lr: np.ndarray, msi: np.ndarray, ratio: int) -> tuple[np.ndarray, np.ndarray]:
    x, m = _cube(lr, "lr"), _cube(msi, "msi")
    if m.shape[1:] != (x.shape[1] * ratio, x.shape[2] * ratio):
        raise ShapeMismatchError(
            f"msi must be (c, {x.shape[1] * ratio}, {x.shape[2] * ratio}) for lr {x.shape} and ratio {ratio}, "
            f"got {m.shape}"
        )
    return x, m


def _cov(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Covariance matrix (rows of a) x (rows of b), float64."""
    a64 = a - a.mean(1, keepdims=True, dtype=np.float64)
    b64 = b - b.mean(1, keepdims=True, dtype=np.float64)
    return np.asarray(a64 @ b64.T / a.shape[1])


def _corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    cov = _cov(a, b)
    sa, sb = np.sqrt(np.diag(_cov(a, a))), np.sqrt(np.diag(_cov(b, b)))
    return np.asarray(cov / np.maximum(sa[:, None] * sb[None, :], np.finfo(np.float64).tiny))


def _regress(targets: np.ndarray, features: np.ndarray, *, ridge: float = 0.0) -> np.ndarray:
    """Least-squares weights (n_targets, n_features) of centred targets on centred features (pixels on axis 1)."""
    gram = _cov(features, features)
    lam = ridge * np.trace(gram) / gram.shape[0]
    return np.asarray(
        np.linalg.lstsq(gram + lam * np.eye(gram.shape[0]), _cov(features, targets), rcond=None)[0].T
    )

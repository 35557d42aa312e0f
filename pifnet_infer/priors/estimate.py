"""Estimate the spectral response (SRF) and the PSF linking an LR-HSI and an HR-MSI of one scene.

Both images see the same scene, so the HR-MSI degraded to the LR grid must match the LR-HSI
projected through the MSI's spectral responses: ``D(msi) ~= R @ lr_hsi``. Given the PSF of D,
R (c, C) is a non-negative least-squares fit (:func:`estimate_srf`); given R (or fitting it on
the way), the PSF is the Gaussian whose width (and sampling offset inside each r x r block)
minimises the relative residual (:func:`estimate_psf_sigma`, a 1-D search over sigma for each
offset). The non-negative least squares are solved by accelerated projected gradient
(:func:`nnls`), so no scipy is needed.

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pifnet_infer.errors import ShapeMismatchError
from pifnet_infer.priors.operators import BlurDecimate, decimation_matrix, gaussian_psf_at
from pifnet_infer.simulate import PSF, PSFArg

_logger = logging.getLogger(__name__)

#: ridge of the SRF fit, relative to the mean eigenvalue of the HSI Gram matrix
DEFAULT_SRF_RIDGE = 1e-4


def nnls(gram: np.ndarray, rhs: np.ndarray, *, tol: float = 1e-12) -> np.ndarray:
    """Minimise ``0.5 x^T G x - b^T x`` over ``x >= 0`` for each column b of ``rhs``.

    This is non-negative least squares ``min ||A x - y||^2, x >= 0`` written with ``G = A^T A``
    and ``b = A^T y``, solved exactly by the Lawson-Hanson active-set method (each step solves
    the unconstrained problem on the current set of positive variables).

    Args:
        gram: float (n, n) symmetric positive definite G (add a small ridge if it is singular).
        rhs: float (n,) or (n, m) right-hand side(s) b.
        tol: a variable enters the positive set when its gradient exceeds ``tol * max|b|``.

    Returns:
        float64 x, shaped like ``rhs``, all entries >= 0.
    """
    g = np.asarray(gram, dtype=np.float64)
    b = np.asarray(rhs, dtype=np.float64)
    if g.ndim != 2 or g.shape[0] != g.shape[1] or b.shape[0] != g.shape[0] or b.ndim not in (1, 2):
        raise ShapeMismatchError(f"gram must be (n, n) and rhs (n,) or (n, m), got {g.shape} and {b.shape}")
    if b.ndim == 1:
        return _nnls_column(g, b, tol)
    return np.stack([_nnls_column(g, b[:, j], tol) for j in range(b.shape[1])], axis=1)


def _nnls_column(g: np.ndarray, b: np.ndarray, tol: float) -> np.ndarray:
    n = b.shape[0]
    x = np.zeros(n)
    positive = np.zeros(n, dtype=bool)
    limit = tol * max(float(np.abs(b).max()), np.finfo(np.float64).tiny)
    for _ in range(3 * n):
        grad = b - g @ x  # minus the gradient
        grad[positive] = -np.inf
        j = int(np.argmax(grad))
        if grad[j] <= limit:
            break
        positive[j] = True
        while positive.any():
            idx = np.flatnonzero(positive)
            trial = np.zeros(n)
            trial[idx] = np.linalg.solve(g[np.ix_(idx, idx)], b[idx])
            if trial[idx].min() > 0:
                x = trial
                break
            shrink = idx[trial[idx] <= 0]
            alpha = float(np.min(x[shrink] / (x[shrink] - trial[shrink])))
            x = x + alpha * (trial - x)
            positive &= x > 0
            x[~positive] = 0.0
    return x


def _flat64(x: np.ndarray | torch.Tensor) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return arr.reshape(arr.shape[0], -1).astype(np.float64)


def _check_pair(lr_hsi: np.ndarray, hr_msi: np.ndarray, ratio: int) -> tuple[np.ndarray, np.ndarray]:
    lr, msi = np.asarray(lr_hsi, dtype=np.float32), np.asarray(hr_msi, dtype=np.float32)
    if lr.ndim != 3 or msi.ndim != 3:
        raise ShapeMismatchError(f"lr_hsi and hr_msi must be (bands, H, W), got {lr.shape} and {msi.shape}")
    if msi.shape[1:] != (lr.shape[1] * ratio, lr.shape[2] * ratio):
        raise ShapeMismatchError(
            f"hr_msi must be (c, {lr.shape[1] * ratio}, {lr.shape[2] * ratio}) for lr_hsi {lr.shape} and "
            f"ratio {ratio}, got {msi.shape}"
        )
    return lr, msi


class _SRFFit:
    """Fits ``D(msi) ~= R lr`` for many candidate D: the HSI Gram matrix is factored once."""

    def __init__(self, lr: np.ndarray, ridge: float) -> None:
        self.y = _flat64(lr)  # (C, n)
        gram = self.y @ self.y.T / self.y.shape[1]
        self.gram = gram + ridge * np.trace(gram) / gram.shape[0] * np.eye(gram.shape[0])
        self._pinv_y = np.linalg.solve(self.gram, self.y) / self.y.shape[1]  # (C, n): R = m @ this.T

    def fit(self, msi_lr: np.ndarray) -> np.ndarray:
        """Non-negative fit R (c, C)."""
        m = _flat64(msi_lr)
        return nnls(self.gram, self.y @ m.T / self.y.shape[1]).T

    def fit_unconstrained(self, msi_lr: np.ndarray) -> np.ndarray:
        """Ridge least-squares fit R (c, C) (no sign constraint; fast, used to rank PSF candidates)."""
        return np.asarray(_flat64(msi_lr) @ self._pinv_y.T)

    def residual(self, msi_lr: np.ndarray, srf: np.ndarray) -> float:
        """Relative residual ||D(msi) - R lr|| / ||D(msi)||."""
        m = _flat64(msi_lr)
        return float(np.linalg.norm(m - srf @ self.y) / max(np.linalg.norm(m), np.finfo(np.float64).tiny))


def estimate_srf(
    lr_hsi: np.ndarray,
    hr_msi: np.ndarray,
    ratio: int,
    psf: PSFArg = "official",
    *,
    ridge: float = DEFAULT_SRF_RIDGE,
) -> np.ndarray:
    """Spectral response matrix R (c, C) that best maps the LR-HSI onto the HR-MSI degraded by ``psf``.

    Non-negative least squares over the LR pixels, ``min ||D(hr_msi) - R lr_hsi||^2 + ridge term``,
    ``R >= 0``. Rows are not forced to sum to 1, so a gain between the two sensors is absorbed.

    Args:
        lr_hsi: (C, h, w) float LR-HSI.
        hr_msi: (c, r*h, r*w) float HR-MSI, in units comparable to the HSI (e.g. both reflectance).
        ratio: scale factor r.
        psf: the spatial degradation between the grids (see :func:`pifnet_infer.simulate.degrade_spatial`).
        ridge: Tikhonov weight relative to the mean eigenvalue of the HSI Gram matrix (regularises
            the many nearly collinear HSI bands).

    Returns:
        float64 (c, C), non-negative.
    """
    lr, msi = _check_pair(lr_hsi, hr_msi, ratio)
    op = BlurDecimate(psf, ratio, msi.shape[1:], dtype=torch.float64)
    fit = _SRFFit(lr, ridge)
    srf = fit.fit(op(torch.from_numpy(msi)).numpy())
    _logger.debug(
        "estimate_srf: relative residual %.4g", fit.residual(op(torch.from_numpy(msi)).numpy(), srf)
    )
    return srf


@dataclass(frozen=True)
class PSFEstimate:
    """A Gaussian PSF fitted to an image pair.

    Attributes:
        sigma: standard deviation in HR pixels.
        centre: offset of the kernel centre inside each r x r block (0: top-left, (r-1)/2: centre).
        residual: relative residual ``||D(msi) - R lr|| / ||D(msi)||`` at the optimum.
        srf_matrix: the (c, C) R used at the optimum (given, or fitted with :func:`estimate_srf`'s method).
    """

    sigma: float
    centre: float
    residual: float
    srf_matrix: np.ndarray

    @property
    def psf(self) -> PSF:
        """The fitted PSF, usable wherever a ``psf=`` argument is taken."""
        return gaussian_psf_at(self.sigma, self.centre)


def estimate_psf_sigma(
    lr_hsi: np.ndarray,
    hr_msi: np.ndarray,
    ratio: int,
    *,
    srf_matrix: np.ndarray | None = None,
    centres: Sequence[float] | None = None,
    sigma_range: tuple[float, float] | None = None,
    ridge: float = DEFAULT_SRF_RIDGE,
) -> PSFEstimate:
    """Fit the width (and block offset) of a Gaussian PSF from the pair itself.

    For each candidate offset, sigma is found by a coarse geometric grid then a golden-section
    search; the residual of ``D_sigma(msi) ~= R lr`` is minimised with R given, or re-fitted by
    ridge least squares for each candidate (variable projection); R is then fitted by non-negative
    least squares at the optimum. The Gaussian is separable, so each candidate costs two small
    matrix products (:func:`~pifnet_infer.priors.operators.decimation_matrix`).

    Args:
        lr_hsi: (C, h, w) float LR-HSI.
        hr_msi: (c, r*h, r*w) float HR-MSI.
        ratio: scale factor r.
        srf_matrix: known (c, C) spectral responses, or None to fit them.
        centres: candidate offsets inside the r x r block (integers or half-integers in [0, r-1]);
            default all of 0, 0.5, ..., r-1.
        sigma_range: (min, max) sigma in HR pixels; default (0.2, 1.2 r).
        ridge: see :func:`estimate_srf`.

    Returns:
        A :class:`PSFEstimate`.
    """
    lr, msi = _check_pair(lr_hsi, hr_msi, ratio)
    known = None if srf_matrix is None else np.asarray(srf_matrix, dtype=np.float64)
    if known is not None and known.shape != (msi.shape[0], lr.shape[0]):
        raise ShapeMismatchError(
            f"srf_matrix must be (msi_bands, hsi_bands) = {(msi.shape[0], lr.shape[0])}, got {known.shape}"
        )
    low, high = sigma_range or (0.2, 1.2 * ratio)
    if not 0 < low < high:
        raise ValueError(f"sigma_range must be (min, max) with 0 < min < max, got {sigma_range!r}")
    offsets = [i / 2 for i in range(2 * ratio - 1)] if centres is None else [float(c) for c in centres]
    fit = _SRFFit(lr, ridge)
    msi64 = msi.astype(np.float64)

    def degrade(sigma: float, centre: float) -> np.ndarray | None:
        g = gaussian_psf_at(sigma, centre).kernel.sum(axis=0)
        try:
            rows = decimation_matrix(g, centre, ratio, msi.shape[1])
            cols = decimation_matrix(g, centre, ratio, msi.shape[2])
        except ShapeMismatchError:
            return None
        return np.asarray(rows @ msi64 @ cols.T)

    def score(sigma: float, centre: float) -> float:
        msi_lr = degrade(sigma, centre)
        if msi_lr is None:
            return math.inf
        return fit.residual(msi_lr, fit.fit_unconstrained(msi_lr) if known is None else known)

    grid = np.geomspace(low, high, 16)
    best: tuple[float, float, float] = (math.inf, low, offsets[0])
    for centre in offsets:
        values = [score(float(s), centre) for s in grid]
        i = int(np.argmin(values))
        a, b = float(grid[max(i - 1, 0)]), float(grid[min(i + 1, len(grid) - 1)])
        sigma = _golden_section(lambda s, c=centre: score(s, c), a, b, iters=16)
        best = min(best, (score(sigma, centre), sigma, centre))
    _, sigma, centre = best
    msi_lr = degrade(sigma, centre)
    if msi_lr is None:
        raise ShapeMismatchError(
            f"the images ({lr.shape[1:]} LR pixels) are too small to fit a PSF at ratio {ratio}"
        )
    srf = fit.fit(msi_lr) if known is None else known
    residual = fit.residual(msi_lr, srf)
    _logger.info(
        "estimated PSF: sigma %.3f HR px, centre %.1f, relative residual %.4g", sigma, centre, residual
    )
    return PSFEstimate(sigma, centre, residual, srf)


def _golden_section(func: Callable[[float], float], a: float, b: float, *, iters: int) -> float:
    """Minimiser of a unimodal ``func`` on [a, b] (golden-section search)."""
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = func(c), func(d)
    for _ in range(iters):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = func(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = func(d)
    return c if fc <= fd else d

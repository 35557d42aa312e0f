"""Checked inputs and training pairs of one scene for :func:`pifnet_infer.adapt.adapt`.

:func:`prepare_scene` refuses bad inputs before any training (shapes that do not fit the ratio,
NaNs, an MSI sensor outside the HSI's wavelength range, a scene too small to cut a training pair),
resolves the PSF and the SRF (given, or estimated from the pair itself) and builds:

- the reduced-resolution pair (Wald protocol): the LR-HSI and the HR-MSI degraded once more by the
  ratio, whose target is the original LR-HSI;
- a held-out mask over that target (blocks of r x r target pixels, about a fifth of them) for early
  stopping;
- the operators of the full-scale consistency losses (D and R).

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from pifnet_infer.errors import ShapeMismatchError
from pifnet_infer.priors.estimate import estimate_psf_sigma, estimate_srf
from pifnet_infer.priors.operators import BlurDecimate
from pifnet_infer.simulate import PSF, PSFArg, resolve_psf
from pifnet_infer.srf import srf_matrix as make_srf_matrix

_logger = logging.getLogger(__name__)

#: smallest reduced-resolution LR-HSI side (LR pixels / ratio) that still gives a training pair
MIN_REDUCED_SIDE = 3
#: fraction of the reduced-resolution target held out for early stopping
HOLDOUT_FRACTION = 0.2


@dataclass(frozen=True, eq=False)
class Scene:
    """One scene ready for adaptation (all arrays float32, channel-first).

    Attributes:
        lr: (C, h, w) LR-HSI.
        msi: (c, r*h, r*w) HR-MSI.
        ratio: r.
        psf: the PSF used for D (given or fitted).
        srf: (c, C) spectral response matrix (given or fitted).
        psf_source, srf_source: ``"given"`` or ``"estimated"``.
        reduced_lr: (C, h//r, w//r) the LR-HSI degraded once more (its top-left r*(h//r) x r*(w//r) part).
        reduced_msi: (c, r*(h//r), r*(w//r)) the HR-MSI degraded to the LR grid, same part.
        holdout: bool (r*(h//r), r*(w//r)), True on the held-out target pixels.
        pair_residual: relative residual ``||D(msi) - R lr|| / ||D(msi)||`` of (psf, srf).
    """

    lr: np.ndarray
    msi: np.ndarray
    ratio: int
    psf: PSF
    srf: np.ndarray
    psf_source: str
    srf_source: str
    reduced_lr: np.ndarray
    reduced_msi: np.ndarray
    holdout: np.ndarray
    pair_residual: float


def _as_cube(x: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 3 or 0 in arr.shape:
        raise ShapeMismatchError(f"{name} must be a non-empty (bands, H, W) array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise ValueError(f"{name} has {bad} NaN or infinite values; fill or crop them before adapting")
    return arr


def check_pair(
    lr_hsi: np.ndarray | torch.Tensor, hr_msi: np.ndarray | torch.Tensor, ratio: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validate an (LR-HSI, HR-MSI) pair for adaptation; returns float32 (C, h, w) and (c, r*h, r*w).

    Raises:
        ShapeMismatchError: not 3-D, sizes that are not ``ratio`` apart, or a scene too small for a
            reduced-resolution training pair (the message gives the minimum size).
        ValueError: bad ratio, NaN/inf values, non-numeric dtype.
    """
    if not isinstance(ratio, int | np.integer) or isinstance(ratio, bool) or ratio < 2:
        raise ValueError(f"ratio must be an int >= 2, got {ratio!r}")
    ratio = int(ratio)
    lr, msi = _as_cube(lr_hsi, "lr_hsi"), _as_cube(hr_msi, "hr_msi")
    h, w = lr.shape[1:]
    if msi.shape[1:] != (ratio * h, ratio * w):
        implied = f"{msi.shape[1] / h:.4g} x {msi.shape[2] / w:.4g}"
        raise ShapeMismatchError(
            f"hr_msi must be (c, {ratio * h}, {ratio * w}) for lr_hsi {lr.shape} and ratio {ratio}, got {msi.shape} "
            f"(the shapes imply a ratio of {implied}); pass the ratio the images have"
        )
    side = MIN_REDUCED_SIDE * ratio
    if h < side or w < side:
        raise ShapeMismatchError(
            f"the scene is too small to cut a reduced-resolution training pair: the LR-HSI is {h}x{w} pixels, "
            f"adaptation at ratio {ratio} needs at least {side}x{side} ({MIN_REDUCED_SIDE} LR pixels after a "
            f"second degradation by {ratio}); use a larger scene or a pretrained weight without adaptation"
        )
    return lr, msi


def resolve_srf(
    msi_srf: str | np.ndarray | None, hsi_wavelengths: np.ndarray | None, hsi_bands: int, msi_bands: int
) -> np.ndarray | None:
    """The (c, C) SRF matrix from a name (needs the HSI wavelengths) or an array; None stays None.

    Raises:
        SpectralCoverageError: an MSI band of the named sensor lies outside the HSI's range.
        ShapeMismatchError: wrong matrix shape or band count.
        ValueError: a name without ``hsi_wavelengths``.
    """
    if msi_srf is None:
        return None
    if isinstance(msi_srf, str):
        if hsi_wavelengths is None:
            raise ValueError(
                f"msi_srf={msi_srf!r} needs hsi_wavelengths (the LR-HSI's band centres in nm) to build the "
                "response matrix; pass them, a (msi_bands, hsi_bands) matrix, or msi_srf=None to estimate it"
            )
        matrix = make_srf_matrix(msi_srf, hsi_wavelengths)
    else:
        matrix = np.asarray(msi_srf, dtype=np.float64)
    if matrix.shape != (msi_bands, hsi_bands) or not np.all(np.isfinite(matrix)) or np.any(matrix < 0):
        raise ShapeMismatchError(
            f"msi_srf must give a finite non-negative (msi_bands, hsi_bands) = {(msi_bands, hsi_bands)} matrix, "
            f"got shape {matrix.shape}" + (f" from {msi_srf!r}" if isinstance(msi_srf, str) else "")
        )
    return matrix


def check_wavelengths(hsi_wavelengths: np.ndarray | list[float] | None, hsi_bands: int) -> np.ndarray | None:
    """HSI band centres as float64 (C,), checked (nm, finite, one per band)."""
    if hsi_wavelengths is None:
        return None
    wl = np.asarray(hsi_wavelengths, dtype=np.float64)
    if wl.shape != (hsi_bands,) or not np.all(np.isfinite(wl)) or np.any(wl <= 0):
        raise ShapeMismatchError(
            f"hsi_wavelengths must hold {hsi_bands} positive finite values (one per LR-HSI band, nm), "
            f"got shape {wl.shape}"
        )
    return wl


def holdout_mask(shape: tuple[int, int], ratio: int, seed: int) -> np.ndarray:
    """bool (H, W): about :data:`HOLDOUT_FRACTION` of the r x r blocks, at least one, never all."""
    rows, cols = shape[0] // ratio, shape[1] // ratio
    blocks = rows * cols
    count = min(blocks - 1, max(1, round(HOLDOUT_FRACTION * blocks)))
    chosen = np.random.default_rng(seed).permutation(blocks)[:count]
    grid = np.zeros(blocks, dtype=bool)
    grid[chosen] = True
    return np.kron(grid.reshape(rows, cols), np.ones((ratio, ratio), dtype=bool))


def prepare_scene(
    lr_hsi: np.ndarray | torch.Tensor,
    hr_msi: np.ndarray | torch.Tensor,
    ratio: int,
    *,
    psf: PSFArg | None,
    srf: np.ndarray | None,
    seed: int,
) -> Scene:
    """Crop, estimate what is unknown, and build the reduced-resolution pair (see module docstring)."""
    lr, msi = check_pair(lr_hsi, hr_msi, ratio)
    if psf is None:
        fitted = estimate_psf_sigma(lr, msi, ratio, srf_matrix=srf)
        used_psf, used_srf = fitted.psf, fitted.srf_matrix
        _logger.info("adapt: fitted PSF sigma %.3f HR px, centre %.1f", fitted.sigma, fitted.centre)
    else:
        used_psf = resolve_psf(psf, ratio)
        used_srf = estimate_srf(lr, msi, ratio, used_psf) if srf is None else srf
    op = BlurDecimate(used_psf, ratio, msi.shape[1:], dtype=torch.float64)
    msi_lr = op(torch.from_numpy(msi)).numpy()
    pred = np.einsum("cC,Chw->chw", used_srf, lr)
    residual = float(np.linalg.norm(msi_lr - pred) / max(np.linalg.norm(msi_lr), np.finfo(np.float64).tiny))
    h, w = lr.shape[1] - lr.shape[1] % ratio, lr.shape[2] - lr.shape[2] % ratio  # the reduced pair's target
    reduced_lr = BlurDecimate(used_psf, ratio, (h, w))(torch.from_numpy(lr[:, :h, :w])).numpy()
    scene = Scene(
        lr=lr,
        msi=msi,
        ratio=ratio,
        psf=used_psf,
        srf=np.asarray(used_srf, dtype=np.float32),
        psf_source="estimated" if psf is None else "given",
        srf_source="estimated" if srf is None else "given",
        reduced_lr=reduced_lr,
        reduced_msi=np.ascontiguousarray(msi_lr[:, :h, :w], dtype=np.float32),
        holdout=holdout_mask((h, w), ratio, seed),
        pair_residual=residual,
    )
    _logger.info(
        "adapt scene: LR %s, ratio %d, PSF %s, SRF %s, pair residual %.3g",
        lr.shape,
        ratio,
        scene.psf_source,
        scene.srf_source,
        residual,
    )
    return scene

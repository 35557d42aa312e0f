"""No-reference consistency checks of a fusion result against its own inputs.

Without a ground truth, a fused HR-HSI can still be checked against the physics that
produced its inputs: degraded spatially (PSF + decimation) it should give back the LR-HSI
(*spectral consistency*), and projected through the MSI's spectral responses it should give
back the HR-MSI (*spatial consistency*). A perfect fusion of a noise-free simulated pair scores
zero error on both; large errors or structured error maps flag a fusion not to trust (or a
wrong PSF / SRF assumption).

.. versionadded:: 0.1
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from pifnet_infer import metrics
from pifnet_infer.errors import ShapeMismatchError
from pifnet_infer.simulate import PSFArg, degrade_spatial, degrade_spectral


@dataclass(frozen=True, eq=False)
class Diagnostics:
    """Consistency scores of a fused image with its inputs.

    Attributes:
        spectral_rmse, spectral_psnr, spectral_sam: degraded fused image vs the LR-HSI
            (RMSE, PSNR in dB with the LR-HSI's maximum as peak, SAM in degrees skipping zero spectra).
        spatial_rmse, spatial_psnr, spatial_sam: fused image projected through the SRF vs the HR-MSI
            (SAM carries no information for a single-band MSI).
        spectral_error_map: float32 (h, w), per-pixel RMSE over HSI bands on the LR grid.
        spectral_sam_map: float32 (h, w), per-pixel spectral angle (degrees; NaN for zero spectra).
        spatial_error_map: float32 (H, W), per-pixel RMSE over MSI bands on the HR grid.
        spatial_sam_map: float32 (H, W), per-pixel angle between MSI spectra (degrees).
    """

    spectral_rmse: float
    spectral_psnr: float
    spectral_sam: float
    spatial_rmse: float
    spatial_psnr: float
    spatial_sam: float
    spectral_error_map: np.ndarray = field(repr=False)
    spectral_sam_map: np.ndarray = field(repr=False)
    spatial_error_map: np.ndarray = field(repr=False)
    spatial_sam_map: np.ndarray = field(repr=False)

    def scores(self) -> dict[str, float]:
        """The six scalar scores by name."""
        names = (
            "spectral_rmse",
            "spectral_psnr",
            "spectral_sam",
            "spatial_rmse",
            "spatial_psnr",
            "spatial_sam",
        )
        return {name: getattr(self, name) for name in names}


def consistency(
    fused: np.ndarray | torch.Tensor,
    lr_hsi: np.ndarray | torch.Tensor,
    hr_msi: np.ndarray | torch.Tensor,
    *,
    ratio: int,
    srf_matrix: np.ndarray,
    psf: PSFArg = "official",
) -> Diagnostics:
    """Spectral and spatial consistency of ``fused`` with its inputs.

    Args:
        fused: (C, H, W) fused HR-HSI, float.
        lr_hsi: (C, H/r, W/r) the LR-HSI that was fused.
        hr_msi: (c, H, W) the HR-MSI that was fused.
        ratio: scale factor r.
        srf_matrix: (c, C) spectral response matrix (:func:`pifnet_infer.srf.srf_matrix`).
        psf: the spatial degradation assumed between the grids (see
            :func:`pifnet_infer.simulate.degrade_spatial`).

    Returns:
        :class:`Diagnostics` with scalar scores and per-pixel maps.
    """
    f, lr, msi = (_numpy(a, name) for a, name in ((fused, "fused"), (lr_hsi, "lr_hsi"), (hr_msi, "hr_msi")))
    matrix = np.asarray(srf_matrix, dtype=np.float32)
    if lr.shape[0] != f.shape[0] or f.shape[1:] != (lr.shape[1] * ratio, lr.shape[2] * ratio):
        raise ShapeMismatchError(
            f"fused must be ({lr.shape[0]}, {lr.shape[1] * ratio}, {lr.shape[2] * ratio}) for lr_hsi {lr.shape} "
            f"and ratio {ratio}, got {f.shape}"
        )
    if msi.shape[1:] != f.shape[1:] or matrix.shape != (msi.shape[0], f.shape[0]):
        raise ShapeMismatchError(
            f"hr_msi must be (c, {f.shape[1]}, {f.shape[2]}) and srf_matrix (c, {f.shape[0]}), "
            f"got {msi.shape} and {matrix.shape}"
        )
    lr_hat = degrade_spatial(f, ratio, psf)
    msi_hat = degrade_spectral(f, matrix)
    spectral, spatial = _compare(lr, lr_hat), _compare(msi, msi_hat)
    return Diagnostics(*spectral[:3], *spatial[:3], *spectral[3:], *spatial[3:])


def _compare(
    observed: np.ndarray, predicted: np.ndarray
) -> tuple[float, float, float, np.ndarray, np.ndarray]:
    """RMSE, PSNR (peak = max of observed), SAM (deg), per-pixel RMSE map and SAM map.

    The scores skip pixels with a NaN in either image (missing inputs), as the SAM does; NaN when none is left.
    """
    error_map = np.sqrt(np.mean(np.square(observed - predicted, dtype=np.float64), axis=0)).astype(np.float32)
    sam_map = metrics.sam_map(observed, predicted, eps=0.0, zero_norm="skip")
    valid = np.isfinite(observed).all(axis=0) & np.isfinite(predicted).all(axis=0)
    if not valid.any():
        return math.nan, math.nan, math.nan, error_map, sam_map
    obs, pred = (
        observed[:, valid][:, :, None],
        predicted[:, valid][:, :, None],
    )  # valid pixels as a (C, N, 1) cube
    return (
        metrics.rmse(obs, pred),
        metrics.psnr(obs, pred, peak="max"),
        float(np.nanmean(sam_map)) if np.any(np.isfinite(sam_map)) else float("nan"),
        error_map,
        sam_map,
    )


def _numpy(x: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 3:
        raise ShapeMismatchError(f"{name} must be (bands, H, W), got shape {arr.shape}")
    return arr.astype(np.float32, copy=False)

"""Shared pieces of the variational fusions: spectral subspace, edge-aware smoothness, conjugate gradients.

.. versionadded:: 0.1
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch


def principal_basis(lr: np.ndarray, rank: int) -> torch.Tensor:
    """float64 (C, k): the k leading left singular vectors of the (uncentred) LR-HSI spectra (C, h, w)."""
    spectra = torch.from_numpy(np.ascontiguousarray(lr).reshape(lr.shape[0], -1)).double()
    u, _, _ = torch.linalg.svd(spectra, full_matrices=False)
    return u[:, : min(int(rank), u.shape[1])]


class EdgeSmoothness:
    """``G^T A G z``: the gradient of ``sum_edges a_e |grad z|_e^2 / 2`` for z of shape (k, H, W).

    The edge weights ``a_e = exp(-|grad msi|_e^2 / (kappa^2 median))`` fall across the MSI's edges,
    so smoothing acts inside regions and not across their boundaries.

    Args:
        msi: (c, H, W) guide image.
        kappa: edge scale, in multiples of the median squared MSI gradient's square root.
    """

    def __init__(self, msi: torch.Tensor, kappa: float) -> None:
        gy = (msi[:, 1:] - msi[:, :-1]).square().sum(0)
        gx = (msi[:, :, 1:] - msi[:, :, :-1]).square().sum(0)
        scale = kappa**2 * torch.cat([gy.flatten(), gx.flatten()]).median()
        scale = scale.clamp_min(torch.finfo(msi.dtype).tiny)
        self.wy, self.wx = torch.exp(-gy / scale), torch.exp(-gx / scale)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """``G^T A G z``, same shape as z."""
        dy = self.wy * (z[:, 1:] - z[:, :-1])
        dx = self.wx * (z[:, :, 1:] - z[:, :, :-1])
        out = torch.zeros_like(z)
        out[:, 1:] += dy
        out[:, :-1] -= dy
        out[:, :, 1:] += dx
        out[:, :, :-1] -= dx
        return out


def conjugate_gradients(
    apply: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    iters: int,
    *,
    tol: float = 1e-6,
    start: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """Solve ``apply(z) = rhs`` (symmetric positive definite operator) by conjugate gradients.

    Args:
        apply: the operator, matrix-free.
        rhs: right-hand side.
        iters: maximum iterations.
        tol: stop when the residual norm falls below ``tol`` times the initial one.
        start: initial guess (zeros when None).

    Returns:
        (z, iterations run).
    """
    z = torch.zeros_like(rhs) if start is None else start.clone()
    res = rhs - apply(z) if start is not None else rhs.clone()
    direction = res.clone()
    rs = float((res * res).sum())
    stop = tol * math.sqrt(rs)
    for done in range(iters):
        if math.sqrt(rs) <= stop:
            return z, done
        a_dir = apply(direction)
        alpha = rs / float((direction * a_dir).sum())
        z = z + alpha * direction
        res = res - alpha * a_dir
        rs_new = float((res * res).sum())
        direction = res + (rs_new / rs) * direction
        rs = rs_new
    return z, iters

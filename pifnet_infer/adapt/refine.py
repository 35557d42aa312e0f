"""Refinement inside the tiling engine: a model whose every output tile is refined (``fuse(..., refine=True)``).

:func:`~pifnet_infer.priors.refine.refine` itself is a classical operation and lives in
:mod:`pifnet_infer.priors`; it is re-exported here as ``pifnet_infer.adapt.refine``.

.. versionadded:: 0.1
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from pifnet_infer.priors.refine import refine
from pifnet_infer.simulate import PSFArg

__all__ = ["RefinedModel", "map_samples", "refine"]


class RefinedModel(nn.Module):
    """A fusion model whose every output tile is passed through :func:`refine` with that tile's inputs.

    This is ``fuse(..., refine=True)``: refinement runs inside the tiling engine, tile by tile, so
    memory stays bounded by the tile and the tiles blend as usual. Autocast is off inside
    :func:`refine` (float64 on CPU, float32 on GPU).

    Args:
        model: the fusion model (``model(lr, msi)`` with a ``.config``).
        srf_matrix: (c, C) spectral responses of the MSI over the output bands, or None to estimate
            them from each tile's pair.
        psf: the PSF, or None to fit a Gaussian to each tile's pair.
    """

    def __init__(
        self, model: nn.Module, *, srf_matrix: np.ndarray | None = None, psf: PSFArg | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.weight_entry = getattr(model, "weight_entry", None)
        self.srf_matrix = srf_matrix
        self.psf = psf

    def forward(self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w), (B, c, r*h, r*w) -> refined (B, C, r*h, r*w) float32."""
        fused = self.model(lr_hsi, hr_msi).float()
        with torch.autocast(fused.device.type, enabled=False):
            return map_samples(
                lambda x0, lr, msi: refine(
                    x0,
                    lr,
                    msi,
                    ratio=self.config.ratio,
                    srf_matrix=self.srf_matrix,
                    psf=self.psf,
                    device=fused.device,
                ),
                fused,
                lr_hsi,
                hr_msi,
            )


def map_samples(fn: Callable[..., np.ndarray], *batches: torch.Tensor) -> torch.Tensor:
    """Apply a numpy function to each sample of aligned batches (as float32 host arrays).

    Returns the stacked results as a tensor on the first batch's device.
    """
    results = [fn(*(t.float().cpu().numpy() for t in sample)) for sample in zip(*batches, strict=True)]
    return torch.from_numpy(np.stack(results)).to(batches[0].device)

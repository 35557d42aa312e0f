"""The classical fusion an adapted network corrects: GLP-HS, then consistency refinement.

With a prior, :class:`~pifnet_infer.adapt.network.AdaptedModel` outputs
``prior(lr, msi) + network(lr, msi)``: the network starts at zero (its last layer zeroed) and learns
only what the scene's own training pair says the classical fusion gets wrong, and early stopping
keeps the prior alone when that does not generalise to held-out pixels. The prior is
:func:`~pifnet_infer.baselines.glp_hs` with the scene's PSF, refined by
:func:`~pifnet_infer.adapt.refine.refine` with the scene's PSF and SRF, computed per input (per
tile inside :func:`pifnet_infer.fuse`). GLP-HS's injection is fitted once on the whole scene
(:func:`~pifnet_infer.baselines.fit_glp_hs`) and reused for every tile; the refinement still sees one
tile at a time.

.. versionadded:: 0.1
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pifnet_infer.adapt.refine import map_samples
from pifnet_infer.priors.classical import GLPInjection, glp_hs
from pifnet_infer.priors.refine import refine
from pifnet_infer.simulate import PSF

#: the name recorded in an adapted model's metadata
PRIOR_NAME = "glp_hs+refine"


@dataclass(frozen=True)
class ClassicalPrior:
    """GLP-HS + consistency refinement with a fixed PSF and SRF (those of the adapted scene).

    Attributes:
        psf: the PSF between the grids.
        srf: (c, C) spectral response matrix of the MSI over the HSI bands (kept as float32, so that
            a saved prior reloads exactly).
        injection: GLP-HS's injection fitted on the scene, or None to fit it on each input.
    """

    psf: PSF
    srf: np.ndarray
    injection: GLPInjection | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "srf", np.asarray(self.srf, dtype=np.float32))

    def fuse(self, lr_hsi: np.ndarray, hr_msi: np.ndarray, ratio: int) -> np.ndarray:
        """(C, h, w), (c, r*h, r*w) float -> float32 (C, r*h, r*w)."""
        first = glp_hs(lr_hsi, hr_msi, ratio, psf=self.psf, injection=self.injection)
        return refine(first, lr_hsi, hr_msi, ratio=ratio, srf_matrix=self.srf, psf=self.psf, device="cpu")

    def __call__(self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor, ratio: int) -> torch.Tensor:
        """A batch (B, C, h, w), (B, c, r*h, r*w) -> float32 (B, C, r*h, r*w) on the inputs' device."""
        return map_samples(lambda lr, msi: self.fuse(lr, msi, ratio), lr_hsi, hr_msi)

    def to_record(self) -> dict[str, Any]:
        """JSON-ready description (saved in an adapted model's metadata)."""
        return {
            "method": PRIOR_NAME,
            "psf_kernel": self.psf.kernel.tolist(),
            "psf_centre": self.psf.centre,
            "srf": self.srf.tolist(),
            "glp_weights": None if self.injection is None else self.injection.weights.tolist(),
            "glp_gains": None if self.injection is None else self.injection.gains.tolist(),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ClassicalPrior:
        """Inverse of :meth:`to_record`.

        Raises:
            ValueError: a record of another method or with missing fields.
        """
        if record.get("method") != PRIOR_NAME:
            raise ValueError(f"unknown adaptation prior {record.get('method')!r}; expected {PRIOR_NAME!r}")
        try:
            psf = PSF(np.asarray(record["psf_kernel"], dtype=np.float64), float(record["psf_centre"]))
            injection = (
                None
                if record["glp_weights"] is None
                else GLPInjection(np.asarray(record["glp_weights"]), np.asarray(record["glp_gains"]))
            )
            return cls(psf, np.asarray(record["srf"]), injection)
        except KeyError as err:
            raise ValueError(f"adaptation prior record lacks {err}; found keys {sorted(record)}") from None

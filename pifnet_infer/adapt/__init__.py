"""Scene-adaptive fusion: consistency refinement of any fusion, and PIF-Net adaptation to one scene.

- :func:`refine`: make a first fusion X0 consistent with its LR-HSI and HR-MSI (conjugate gradients
  in the HSI's spectral subspace; seconds, CPU or GPU).
- :func:`adapt`: train or fine-tune a PIF-Net on the scene's own reduced-resolution pair; returns an
  :class:`AdaptedModel` usable with :func:`pifnet_infer.fuse`. By default the network learns a
  correction of a :class:`ClassicalPrior` (GLP-HS + :func:`refine` with the scene's PSF and SRF).
- :func:`estimate_srf`, :func:`estimate_psf_sigma`: the MSI's spectral responses and the PSF fitted
  from the pair itself.

.. versionadded:: 0.1
"""

from __future__ import annotations

from pifnet_infer.adapt.network import AdaptedModel, AdaptHistory, adapt
from pifnet_infer.adapt.prior import ClassicalPrior
from pifnet_infer.priors.estimate import PSFEstimate, estimate_psf_sigma, estimate_srf, nnls
from pifnet_infer.priors.operators import BlurDecimate, gaussian_psf_at
from pifnet_infer.priors.refine import refine

__all__ = [
    "AdaptHistory",
    "AdaptedModel",
    "BlurDecimate",
    "ClassicalPrior",
    "PSFEstimate",
    "adapt",
    "estimate_psf_sigma",
    "estimate_srf",
    "gaussian_psf_at",
    "nnls",
    "refine",
]

"""Classical HSI-MSI fusion baselines (kept importable here; they live in :mod:`pifnet_infer.priors`).

- :func:`bicubic`: upsampling of the LR-HSI only (no MSI).
- :func:`glp_hs`: MTF-GLP hypersharpening with one regression gain per band; :func:`fit_glp_hs`.
- :func:`glp_hs_local`: GLP-HS with windowed (local), clipped injection gains.
- :func:`gsa`: Gram-Schmidt adaptive component substitution.
- :func:`subspace_fusion`: subspace-regularised variational fusion (HySure class).

.. versionadded:: 0.1
"""

from __future__ import annotations

from pifnet_infer.priors.classical import GLPInjection, bicubic, fit_glp_hs, glp_hs, gsa
from pifnet_infer.priors.glp_local import glp_hs_local
from pifnet_infer.priors.subspace import subspace_fusion

__all__ = ["GLPInjection", "bicubic", "fit_glp_hs", "glp_hs", "glp_hs_local", "gsa", "subspace_fusion"]

"""Classical HSI-MSI fusions, their scene-level fits and the reduced-pair self-validation.

Plain functions on arrays and tensors, below :mod:`pifnet_infer.weights` and the models' users;
nothing here imports the adaptation or the CLI (DESIGN.md, "priors/").

- :mod:`~pifnet_infer.priors.classical`: bicubic, GLP-HS with one gain per band, GSA.
- :mod:`~pifnet_infer.priors.glp_local`: GLP-HS with local (windowed, clipped) gains.
- :mod:`~pifnet_infer.priors.subspace`: subspace-regularised variational fusion (HySure class).
- :mod:`~pifnet_infer.priors.estimate`, :mod:`~pifnet_infer.priors.operators`: PSF and SRF fitted
  from the pair, the blur-and-decimate operator with its adjoint.
- :mod:`~pifnet_infer.priors.select`: choose a method per scene and band group on the reduced pair.

.. versionadded:: 0.1
"""

from __future__ import annotations

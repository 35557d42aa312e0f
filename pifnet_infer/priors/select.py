"""Choose a classical fusion per scene and per band group by self-validation on the reduced pair.

:func:`fit_scene` computes, once per scene, everything the classical fusion needs (the PSF and SRF
fitted from the pair, :func:`~pifnet_infer.priors.estimate.estimate_psf_sigma`, and the choice of
method) into a small serialisable :class:`ClassicalFit`; :func:`fuse_classical` applies it.

The choice (Wald's protocol applied to the scene itself): degrade both images by the ratio with the
fitted PSF, fuse the reduced pair (LR-HSI at 1/r^2 of its size, MSI at the LR-HSI's size) with each
candidate, and score each result against the LR-HSI, which is the reference of that reduced fusion.
Bands are split in two groups, those the MSI sees (:func:`blind_bands`) and those it does not.
With ``method="auto"`` the covered bands get a convex combination of the candidates: the
non-negative least-squares weights that best reproduce the LR-HSI's covered bands from the
reduced fusions (stacking), normalised to sum 1, averaged half and half with uniform weights over
the detail-injecting methods (:data:`SHRINK`; the reduced pair of a small scene is small: on the
shared scenes, VNIR + RGB x4, the plain average of the fusions beat the best single one by up to
1.4 dB while the stacked weights alone were off by up to 0.8 dB). The blind bands get their own
stacked weights, averaged half and half with the covered bands' (a combination of their own,
shrunk towards uniform weights, left a seam between the groups' spectra that cost 0.9 degrees of
SAM on muufl_gulfport_sub; the covered bands' weights alone lost 1.6 dB on jasper_ridge, whose
NIR bands favour the subspace fusion); they keep that combination only when, on the reduced pair,
it beats bicubic on them (evidence that MSI detail helps those bands), and are bicubic otherwise.

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pifnet_infer.errors import ShapeMismatchError
from pifnet_infer.priors.classical import _check_pair, bicubic, glp_hs, gsa
from pifnet_infer.priors.estimate import estimate_psf_sigma, nnls
from pifnet_infer.priors.glp_local import glp_hs_local
from pifnet_infer.priors.operators import gaussian_psf_at
from pifnet_infer.priors.refine import refine
from pifnet_infer.priors.subspace import DEFAULT_RANK, subspace_fusion
from pifnet_infer.simulate import PSF, degrade_spatial

_logger = logging.getLogger(__name__)

#: weight of the uniform combination in the ``method="auto"`` weights (the rest: the stacked weights)
SHRINK = 0.5
#: a band is MSI-blind when its largest response is below this fraction of the SRF's largest entry
BLIND_THRESHOLD = 0.01

Method = Callable[[np.ndarray, np.ndarray, int, PSF, np.ndarray], np.ndarray]

#: the classical fusions, each as ``f(lr, msi, ratio, psf, srf)``
METHODS: dict[str, Method] = {
    "bicubic": lambda lr, msi, ratio, psf, srf: bicubic(lr, ratio),
    "glp_hs": lambda lr, msi, ratio, psf, srf: glp_hs(lr, msi, ratio, psf=psf),
    "glp_hs_local": lambda lr, msi, ratio, psf, srf: glp_hs_local(lr, msi, ratio, psf=psf),
    "gsa": lambda lr, msi, ratio, psf, srf: gsa(lr, msi, ratio, psf=psf),
    "glp_hs_refine": lambda lr, msi, ratio, psf, srf: refine(
        glp_hs(lr, msi, ratio, psf=psf), lr, msi, ratio=ratio, srf_matrix=srf, psf=psf, device="cpu"
    ),
    "subspace": lambda lr, msi, ratio, psf, srf: subspace_fusion(
        lr, msi, ratio, psf=psf, srf=srf, rank=min(DEFAULT_RANK, lr.shape[0])
    ),
}


@dataclass(frozen=True)
class ClassicalFit:
    """Scene-level fit of the classical fusion: fitted operators and the methods of each band group.

    Attributes:
        ratio: scale factor r.
        psf_sigma: width (HR pixels) of the fitted Gaussian PSF.
        psf_centre: its offset inside each r x r block.
        srf: float64 (c, C) spectral responses (given or fitted).
        blind: bool (C,), True for bands the MSI does not see.
        weights: ``{group: {method: weight}}`` for the groups ``"covered"`` and ``"blind"`` (when
            they have bands); the weights of a group are >= 0 and sum to 1.
        scores: reduced-pair PSNR (dB) of every candidate and of the combination on each group.
    """

    ratio: int
    psf_sigma: float
    psf_centre: float
    srf: np.ndarray
    blind: np.ndarray
    weights: dict[str, dict[str, float]]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def psf(self) -> PSF:
        """The fitted PSF."""
        return gaussian_psf_at(self.psf_sigma, self.psf_centre)

    def to_record(self) -> dict[str, Any]:
        """JSON-ready description (e.g. for diagnostics or a GeoTIFF tag)."""
        return {
            "ratio": self.ratio,
            "psf_sigma": self.psf_sigma,
            "psf_centre": self.psf_centre,
            "srf": np.asarray(self.srf).tolist(),
            "blind_bands": np.flatnonzero(self.blind).tolist(),
            "weights": {g: dict(w) for g, w in self.weights.items()},
            "scores": {g: dict(v) for g, v in self.scores.items()},
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ClassicalFit:
        """Inverse of :meth:`to_record`."""
        srf = np.asarray(record["srf"], dtype=np.float64)
        blind = np.zeros(srf.shape[1], dtype=bool)
        blind[record["blind_bands"]] = True
        return cls(
            int(record["ratio"]),
            float(record["psf_sigma"]),
            float(record["psf_centre"]),
            srf,
            blind,
            {g: {m: float(v) for m, v in w.items()} for g, w in record["weights"].items()},
            {g: dict(v) for g, v in record.get("scores", {}).items()},
        )


def blind_bands(srf: np.ndarray, threshold: float = BLIND_THRESHOLD) -> np.ndarray:
    """bool (C,): the HSI bands no MSI band sees.

    An MSI band sees the HSI bands from the first to the last whose response reaches ``threshold``
    times the largest entry of ``srf`` (bands in spectral order): the span is filled, since a fitted
    (non-negative least-squares) SRF is sparse and leaves zeros between the bands it uses.
    """
    r = np.abs(np.asarray(srf, dtype=np.float64))
    strong = r >= threshold * max(float(r.max()), np.finfo(np.float64).tiny)
    seen = np.zeros(r.shape[1], dtype=bool)
    for row in strong:
        idx = np.flatnonzero(row)
        if idx.size:
            seen[idx[0] : idx[-1] + 1] = True
    return ~seen


def check_method(method: str) -> str:
    """Return ``method`` if it is ``"auto"`` or a name of :data:`METHODS`; refuse others, listing the choices."""
    if method != "auto" and method not in METHODS:
        raise ValueError(f"unknown classical method {method!r}; choose 'auto' or one of {sorted(METHODS)}")
    return method


def _stacked_weights(reduced: np.ndarray, target: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """Convex weights (n,): NNLS of target on the n reduced fusions, normalised, averaged with ``uniform``."""
    a = reduced.reshape(reduced.shape[0], -1).astype(np.float64)  # (n, pixels)
    y = target.reshape(-1).astype(np.float64)
    gram = a @ a.T
    w = nnls(gram + 1e-9 * np.trace(gram) * np.eye(gram.shape[0]), a @ y)
    w = w / w.sum() if w.sum() > 0 else uniform
    return np.asarray((1 - SHRINK) * w + SHRINK * uniform)


def fit_scene(
    lr: np.ndarray,
    msi: np.ndarray,
    ratio: int,
    *,
    srf: np.ndarray | None = None,
    method: str = "auto",
) -> ClassicalFit:
    """Fit the PSF (and the SRF when not given) from the pair and weigh the methods of each band group.

    Args:
        lr: (C, h, w) LR-HSI, float.
        msi: (c, r*h, r*w) HR-MSI, float, in units comparable to the HSI.
        ratio: scale factor r.
        srf: known (c, C) spectral responses, or None to fit them (non-negative least squares).
        method: ``"auto"`` (module docstring) or one name of :data:`METHODS`, then used for every band.

    Returns:
        A :class:`ClassicalFit`.

    Raises:
        ValueError: an unknown method (before any computation).
        ShapeMismatchError: shapes that do not fit ``ratio``, or a pair too small for its reduced version.
    """
    check_method(method)
    x, m = _check_pair(lr, msi, ratio)
    fitted = estimate_psf_sigma(x, m, ratio, srf_matrix=srf)
    response = fitted.srf_matrix
    blind = blind_bands(response)
    groups = [(g, mask) for g, mask in (("covered", ~blind), ("blind", blind)) if mask.any()]
    if method != "auto":
        return ClassicalFit(
            int(ratio), fitted.sigma, fitted.centre, response, blind, {g: {method: 1.0} for g, _ in groups}
        )
    psf = fitted.psf
    h, w = (x.shape[1] // ratio) * ratio, (x.shape[2] // ratio) * ratio
    if h == 0 or w == 0:
        raise ShapeMismatchError(
            f"an LR-HSI of {x.shape[1:]} pixels is too small for a reduced pair at ratio {ratio}"
        )
    target = x[:, :h, :w]
    lr_reduced = degrade_spatial(target, ratio, psf)
    msi_reduced = degrade_spatial(m[:, : h * ratio, : w * ratio], ratio, psf)
    names = list(METHODS)
    reduced = np.stack([METHODS[n](lr_reduced, msi_reduced, ratio, psf, response) for n in names])
    peak = max(float(np.abs(target).max()), np.finfo(np.float64).tiny)
    detail = np.array([float(n != "bicubic") for n in names])
    covered = ~blind if (~blind).any() else blind
    wv = _stacked_weights(reduced[:, covered], target[covered], detail / detail.sum())
    weights, scores = {}, {}
    for group, mask in groups:
        if group == "blind":
            wv = _stacked_weights(reduced[:, mask], target[mask], wv)
        combined = np.tensordot(wv, reduced, axes=1)
        errors = {n: float(np.mean((reduced[i, mask] - target[mask]) ** 2)) for i, n in enumerate(names)}
        errors["auto"] = float(np.mean((combined[mask] - target[mask]) ** 2))
        scores[group] = {n: float(10 * np.log10(peak**2 / max(e, 1e-30))) for n, e in errors.items()}
        helps = group == "covered" or errors["auto"] < errors["bicubic"]
        weights[group] = (
            {n: float(v) for n, v in zip(names, wv, strict=True) if v > 0} if helps else {"bicubic": 1.0}
        )
    _logger.info("classical fit: PSF sigma %.3f, weights %s", fitted.sigma, weights)
    return ClassicalFit(int(ratio), fitted.sigma, fitted.centre, response, blind, weights, scores)


def fuse_classical(lr: np.ndarray, msi: np.ndarray, fit: ClassicalFit) -> np.ndarray:
    """Fuse with the weighted methods a :class:`ClassicalFit` holds for each band group.

    Each method with a weight runs once on all bands; each group then takes its combination.

    Args:
        lr: (C, h, w) LR-HSI, float (the scene :func:`fit_scene` saw, or a tile of it).
        msi: (c, r*h, r*w) HR-MSI, float.
        fit: the scene's fit.

    Returns:
        float32 (C, r*h, r*w).
    """
    x, m = _check_pair(lr, msi, fit.ratio)
    if fit.blind.shape != (x.shape[0],):
        raise ShapeMismatchError(f"fit made for {fit.blind.shape[0]} HSI bands, this LR-HSI has {x.shape[0]}")
    out = np.zeros((x.shape[0], *m.shape[1:]), dtype=np.float32)
    used = sorted({n for w in fit.weights.values() for n in w})
    for name in used:
        fused = METHODS[name](x, m, fit.ratio, fit.psf, fit.srf)
        for group, mask in (("covered", ~fit.blind), ("blind", fit.blind)):
            weight = fit.weights.get(group, {}).get(name, 0.0)
            if weight:
                out[mask] += np.float32(weight) * fused[mask]
    return out

"""Spectral response functions (SRFs) of multispectral sensors and the HSI -> MSI response matrix.

A multispectral band sees a weighted average of the spectrum. Given the band
centres (and widths, when known) of a hyperspectral cube, :func:`srf_matrix`
returns the matrix ``R`` (c, C) such that ``msi = R @ hsi`` simulates the
multispectral image; each row sums to 1, so a flat spectrum of 1 gives 1.

Bundled tables (see ``pifnet_infer/data/srf/README.md`` for sources and terms):
``sentinel2a`` (13 bands), ``landsat8_oli`` (9 reflective bands) and named
sub-selections, plus the synthetic ``rgb_gaussian`` camera and ``pan_450_900`` panchromatic band.

.. versionadded:: 0.1
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np

from pifnet_infer.errors import SpectralCoverageError

_logger = logging.getLogger(__name__)

_TABLES = resources.files("pifnet_infer.data") / "srf"

#: name -> (CSV file, selected band columns or None for all). The synthetic responses are built in code.
_PRESETS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "sentinel2a": ("sentinel2a_msi.csv", None),
    "sentinel2a-10m": ("sentinel2a_msi.csv", ("B2", "B3", "B4", "B8")),
    "sentinel2a-20m": ("sentinel2a_msi.csv", ("B5", "B6", "B7", "B8A", "B11", "B12")),
    "landsat8_oli": ("landsat8_oli.csv", None),
    "landsat8_oli-ms": (
        "landsat8_oli.csv",
        ("B1_coastal", "B2_blue", "B3_green", "B4_red", "B5_nir", "B6_swir1", "B7_swir2"),
    ),
    "landsat8_oli-pan": ("landsat8_oli.csv", ("B8_pan",)),
}

#: Synthetic RGB camera: band -> (centre nm, FWHM nm).
RGB_GAUSSIAN_BANDS: dict[str, tuple[float, float]] = {
    "R": (610.0, 80.0),
    "G": (540.0, 80.0),
    "B": (460.0, 80.0),
}

#: Synthetic panchromatic band: flat between these wavelengths (nm), falling linearly to 0 over
#: PAN_EDGE_NM outside them.
PAN_RANGE_NM = (450.0, 900.0)
PAN_EDGE_NM = 10.0

_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


@dataclass(frozen=True, eq=False)
class SpectralResponse:
    """Relative spectral responses of a multispectral sensor, sampled on a common grid.

    Args:
        name: label used in messages (e.g. ``"sentinel2a-10m"``).
        band_names: one name per band, in row order.
        wavelengths_nm: float64 (N,), strictly increasing, nanometres.
        responses: float64 (c, N), relative response >= 0 (peak normalisation irrelevant).
    """

    name: str
    band_names: tuple[str, ...]
    wavelengths_nm: np.ndarray
    responses: np.ndarray

    def __post_init__(self) -> None:
        """Validate and freeze the arrays."""
        wl = np.array(self.wavelengths_nm, dtype=np.float64)  # copies: frozen below
        resp = np.atleast_2d(np.array(self.responses, dtype=np.float64))
        if wl.ndim != 1 or wl.size < 2 or not np.all(np.diff(wl) > 0):
            raise ValueError(
                f"SpectralResponse {self.name!r}: wavelengths_nm must be 1-D strictly increasing"
            )
        if resp.shape != (len(self.band_names), wl.size):
            raise ValueError(
                f"SpectralResponse {self.name!r}: responses must have shape (bands, wavelengths) = "
                f"{(len(self.band_names), wl.size)}, got {resp.shape}"
            )
        if not np.all(np.isfinite(resp)) or np.any(resp < 0) or np.any(resp.sum(axis=1) <= 0):
            raise ValueError(f"SpectralResponse {self.name!r}: responses must be finite, >= 0 and not all 0")
        wl.setflags(write=False)
        resp.setflags(write=False)
        object.__setattr__(self, "band_names", tuple(self.band_names))
        object.__setattr__(self, "wavelengths_nm", wl)
        object.__setattr__(self, "responses", resp)

    @property
    def centres_nm(self) -> np.ndarray:
        """Response-weighted mean wavelength of each band, float64 (c,)."""
        weighted = _cumulative_integral(self.responses * self.wavelengths_nm, self.wavelengths_nm)[:, -1]
        return np.asarray(weighted / _cumulative_integral(self.responses, self.wavelengths_nm)[:, -1])

    def select(self, bands: Sequence[str]) -> SpectralResponse:
        """A response with only ``bands`` (names, in the order given)."""
        missing = [b for b in bands if b not in self.band_names]
        if missing or not bands:
            raise KeyError(
                f"bands {missing or list(bands)!r} not in {self.name!r}; available: {list(self.band_names)}"
            )
        rows = [self.band_names.index(b) for b in bands]
        return SpectralResponse(
            f"{self.name}[{','.join(bands)}]", tuple(bands), self.wavelengths_nm, self.responses[rows]
        )

    def coverage(self, wavelengths_nm: np.ndarray, fwhm_nm: np.ndarray | None = None) -> np.ndarray:
        """Fraction of each band's integrated response inside the HSI range, float64 (c,) in [0, 1].

        The HSI range is [min centre, max centre] widened by half the FWHM of the extreme bands
        (or by half the median band spacing when the FWHM is unknown).
        """
        wl, fwhm = check_band_grid(wavelengths_nm, fwhm_nm)
        lo, hi = _hsi_range(wl, fwhm)
        cum = _cumulative_integral(self.responses, self.wavelengths_nm)
        inside = np.array(
            [np.interp(hi, self.wavelengths_nm, c) - np.interp(lo, self.wavelengths_nm, c) for c in cum]
        )
        return np.asarray(inside / cum[:, -1])

    def matrix(
        self, wavelengths_nm: np.ndarray, fwhm_nm: np.ndarray | None = None, *, min_coverage: float = 0.9
    ) -> np.ndarray:
        """Spectral response matrix R for the given HSI bands (see :func:`srf_matrix`)."""
        wl, fwhm = check_band_grid(wavelengths_nm, fwhm_nm)
        cov = self.coverage(wl, fwhm)
        bad = [
            f"{b!r} ({100 * f:.1f}%)" for b, f in zip(self.band_names, cov, strict=True) if f < min_coverage
        ]
        if bad:
            lo, hi = _hsi_range(wl, fwhm)
            raise SpectralCoverageError(
                f"MSI bands {', '.join(bad)} of {self.name!r} have less than {100 * min_coverage:.0f}% of their "
                f"spectral response inside the HSI range {lo:.1f}-{hi:.1f} nm; select covered bands "
                f"(load_srf(name, bands=[...])) or lower min_coverage"
            )
        _logger.debug(
            "%s: %s for %d HSI bands",
            self.name,
            "interpolation" if fwhm is None else "FWHM integration",
            wl.size,
        )
        if fwhm is None:
            weights = np.stack(
                [np.interp(wl, self.wavelengths_nm, r, left=0.0, right=0.0) for r in self.responses]
            )
        else:
            weights = self._integrate_gaussians(wl, fwhm)
        sums = weights.sum(axis=1)
        if np.any(sums <= 0):
            empty = [b for b, s in zip(self.band_names, sums, strict=True) if s <= 0]
            raise SpectralCoverageError(f"no HSI band falls under MSI bands {empty!r} of {self.name!r}")
        return np.asarray(weights / sums[:, None])

    def _integrate_gaussians(self, wl: np.ndarray, fwhm: np.ndarray) -> np.ndarray:
        """(c, C) integrals of each SRF times each HSI band's peak-1 Gaussian response."""
        step = float(np.clip(fwhm.min() / 8.0, 0.05, np.min(np.diff(self.wavelengths_nm))))
        grid = np.arange(self.wavelengths_nm[0], self.wavelengths_nm[-1] + step / 2, step)
        srf = np.stack([np.interp(grid, self.wavelengths_nm, r) for r in self.responses])
        sigma = fwhm * _FWHM_TO_SIGMA
        gauss = np.exp(-0.5 * ((grid[None, :] - wl[:, None]) / sigma[:, None]) ** 2)
        return np.asarray(srf @ gauss.T * step)


def list_srfs() -> list[str]:
    """Names accepted by :func:`load_srf`."""
    return sorted([*_PRESETS, *_SYNTHETIC])


def load_srf(name: str, *, bands: Sequence[str] | None = None) -> SpectralResponse:
    """Load a bundled spectral response by name.

    Args:
        name: one of :func:`list_srfs`: ``"sentinel2a"`` (B1-B12, B8A), ``"sentinel2a-10m"`` (B2, B3, B4, B8),
            ``"sentinel2a-20m"`` (B5, B6, B7, B8A, B11, B12), ``"landsat8_oli"`` (B1-B9),
            ``"landsat8_oli-ms"`` (B1-B7), ``"landsat8_oli-pan"`` (B8, one panchromatic band),
            ``"rgb_gaussian"`` (synthetic R, G, B; see :func:`rgb_gaussian`), ``"pan_450_900"`` (synthetic
            panchromatic band; see :func:`pan_450_900`).
        bands: optional band names to keep (in this order), e.g. ``["B4", "B8"]``.

    Raises:
        KeyError: unknown name or band; the message lists the valid ones.
    """
    if name in _SYNTHETIC:
        srf = _SYNTHETIC[name]()
    elif name in _PRESETS:
        file, selected = _PRESETS[name]
        table = _read_table(file)
        rows = table.band_names if selected is None else selected
        srf = SpectralResponse(name, rows, table.wavelengths_nm, table.select(rows).responses)
    else:
        raise KeyError(f"unknown spectral response {name!r}; available: {', '.join(list_srfs())}")
    return srf if bands is None else srf.select(bands)


def rgb_gaussian() -> SpectralResponse:
    """A synthetic RGB camera: three Gaussian bands, R 610 nm, G 540 nm, B 460 nm, each 80 nm FWHM.

    This is not a measured camera; it is a freely redistributable stand-in for the
    camera curves used in RGB-HSI fusion papers (whose measured tables carry
    non-commercial licences). Sampled on 380-780 nm at 1 nm.
    """
    grid = np.arange(380.0, 781.0)
    resp = np.stack(
        [np.exp(-0.5 * ((grid - c) / (w * _FWHM_TO_SIGMA)) ** 2) for c, w in RGB_GAUSSIAN_BANDS.values()]
    )
    return SpectralResponse("rgb_gaussian", tuple(RGB_GAUSSIAN_BANDS), grid, resp)


def pan_450_900() -> SpectralResponse:
    """A synthetic panchromatic band: flat from 450 to 900 nm, linear edges down to 0 at 440 and 910 nm.

    Close to the pan bands of ALI (480-690 nm), PRISMA (400-700 nm) or Landsat 8 (503-676 nm) in
    spirit, not a copy of any: a redistributable stand-in for training weights that fuse an HSI with
    "a" panchromatic image. Users with a measured pan response should pass it instead.
    """
    lo, hi = PAN_RANGE_NM
    grid = np.arange(lo - PAN_EDGE_NM - 1, hi + PAN_EDGE_NM + 2, 1.0)
    resp = np.interp(grid, [lo - PAN_EDGE_NM, lo, hi, hi + PAN_EDGE_NM], [0.0, 1.0, 1.0, 0.0])
    return SpectralResponse("pan_450_900", ("PAN",), grid, resp[None, :])


_SYNTHETIC = {"rgb_gaussian": rgb_gaussian, "pan_450_900": pan_450_900}


def srf_matrix(
    srf: str | SpectralResponse,
    wavelengths_nm: Sequence[float] | np.ndarray,
    fwhm_nm: Sequence[float] | np.ndarray | None = None,
    *,
    min_coverage: float = 0.9,
) -> np.ndarray:
    """Spectral response matrix R (c, C) that maps HSI bands to MSI bands.

    With FWHM, each HSI band is modelled as a Gaussian response of that width and
    ``R[k, j]`` is the integral of MSI band k's SRF times HSI band j's Gaussian; without,
    ``R[k, j]`` is MSI band k's SRF interpolated at HSI band j's centre. Rows are then
    normalised to sum to 1. Columns follow the given band order, which need not be
    sorted (overlapping spectrometers, e.g. AVIRIS, give non-monotonic wavelengths).

    Args:
        srf: a name (see :func:`load_srf`) or a :class:`SpectralResponse`.
        wavelengths_nm: HSI band centres in nanometres, (C,).
        fwhm_nm: HSI band widths (full width at half maximum) in nanometres, (C,), or None.
        min_coverage: minimum fraction of each MSI band's response that must fall inside
            the HSI range.

    Returns:
        float64 (c, C), non-negative, each row summing to 1.

    Raises:
        SpectralCoverageError: an MSI band is not covered by the HSI range.
        ValueError: wavelengths not 1-D finite positive nanometres, or FWHM of another length.
    """
    response = load_srf(srf) if isinstance(srf, str) else srf
    wl = np.asarray(wavelengths_nm, dtype=np.float64)
    fwhm = None if fwhm_nm is None else np.asarray(fwhm_nm, dtype=np.float64)
    return response.matrix(wl, fwhm, min_coverage=min_coverage)


@functools.cache
def _read_table(file: str) -> SpectralResponse:
    with resources.as_file(_TABLES / file) as path, open(path) as fh:
        header = fh.readline().strip().split(",")
        table = np.loadtxt(fh, delimiter=",", dtype=np.float64)
    return SpectralResponse(file, tuple(header[1:]), table[:, 0], table[:, 1:].T)


def _cumulative_integral(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Trapezoidal running integral of each row of y over x, starting at 0: shape of y."""
    steps = 0.5 * (y[:, 1:] + y[:, :-1]) * np.diff(x)
    return np.concatenate([np.zeros((y.shape[0], 1)), np.cumsum(steps, axis=1)], axis=1)


def check_band_grid(
    wavelengths_nm: Sequence[float] | np.ndarray,
    fwhm_nm: Sequence[float] | np.ndarray | None,
    name: str = "HSI",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validated float64 band centres (nm) and FWHM (None stays None).

    Raises:
        ValueError: not a non-empty 1-D array of positive finite nm (micrometres are named as such),
            or FWHM not positive, finite and one per band.
    """
    wl = np.asarray(wavelengths_nm, dtype=np.float64)
    if wl.ndim != 1 or wl.size == 0 or not np.all(np.isfinite(wl)) or np.any(wl <= 0):
        raise ValueError(
            f"{name} wavelengths must be a non-empty 1-D array of positive finite nm, got {wl!r}"
        )
    if wl.max() < 100:
        raise ValueError(
            f"{name} wavelengths look like micrometres (max {wl.max()!r}); pass nanometres (multiply by 1000)"
        )
    if fwhm_nm is None:
        return wl, None
    fwhm = np.asarray(fwhm_nm, dtype=np.float64)
    if fwhm.shape != wl.shape or not np.all(np.isfinite(fwhm)) or np.any(fwhm <= 0):
        raise ValueError(
            f"{name} FWHM must be positive, finite and of shape {wl.shape} (one per band), got {fwhm!r}"
        )
    return wl, fwhm


def _hsi_range(wl: np.ndarray, fwhm: np.ndarray | None) -> tuple[float, float]:
    if fwhm is not None:
        return float(np.min(wl - fwhm / 2)), float(np.max(wl + fwhm / 2))
    spacing = np.diff(np.unique(wl))
    half = float(np.median(spacing)) / 2 if spacing.size else 0.0
    return float(wl.min()) - half, float(wl.max()) + half

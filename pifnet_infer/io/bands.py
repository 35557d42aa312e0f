"""Band selection (1-based, like GDAL) and band metadata of rasters.

Metadata are read from what GDAL exposes: band descriptions, nodata, scales and
offsets, per-band ``wavelength``/``fwhm`` items with ``wavelength_units`` (GDAL's
ENVI driver writes them, and so do we), the ENVI header lists (``ENVI``
domain: ``wavelength``, ``fwhm``, ``reflectance scale factor``) and GDAL's
standard ``IMAGERY`` domain (``CENTRAL_WAVELENGTH_UM``, ``FWHM_UM``).
Wavelengths are returned in nanometres.

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pifnet_infer.errors import ShapeMismatchError

_logger = logging.getLogger(__name__)

#: unit name (lower case, as found in ENVI headers and GDAL metadata) -> factor to nanometres
_TO_NM: dict[str, float] = {
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometers": 1.0,
    "nanometre": 1.0,
    "nanometres": 1.0,
    "um": 1e3,
    "µm": 1e3,
    "micron": 1e3,
    "microns": 1e3,
    "micrometer": 1e3,
    "micrometers": 1e3,
    "micrometre": 1e3,
    "micrometres": 1e3,
}


@dataclass(frozen=True)
class BandInfo:
    """Metadata of the selected bands of a raster, in selection order.

    Attributes:
        indexes: 1-based band indexes in the file.
        descriptions: band descriptions (None where empty).
        wavelengths_nm: band centres in nm, or None unless every selected band has one.
        fwhm_nm: band widths in nm, or None unless every selected band has one.
        scales: value scale per band (physical = stored * scale + offset).
        offsets: value offset per band.
        nodata: the nodata value, or None.
        dtype: stored data type name (``"uint16"``, ``"float32"``, ...).
    """

    indexes: tuple[int, ...]
    descriptions: tuple[str | None, ...]
    wavelengths_nm: tuple[float, ...] | None
    fwhm_nm: tuple[float, ...] | None
    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    nodata: float | None
    dtype: str

    @property
    def count(self) -> int:
        """Number of selected bands."""
        return len(self.indexes)


def parse_band_list(text: str) -> tuple[int, ...]:
    """Parse ``"1,2,5-8"`` into ``(1, 2, 5, 6, 7, 8)`` (1-based, order kept; ranges may descend).

    Raises:
        ValueError: the text is not a comma-separated list of integers and ranges.
    """
    result: list[int] = []
    for part in text.split(","):
        item = part.strip()
        match = re.fullmatch(r"(-?\d+)(?:\s*[-:]\s*(-?\d+))?", item)
        if match is None:
            raise ValueError(
                f"band list must look like '1,2,5-8' (1-based), got {text!r} (bad item {item!r})"
            )
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        step = 1 if last >= first else -1
        result.extend(range(first, last + step, step))
    return tuple(result)


def select_bands(bands: Sequence[int] | str | None, count: int, *, name: str = "raster") -> tuple[int, ...]:
    """Validate a 1-based band selection against a raster with ``count`` bands.

    Args:
        bands: 1-based indexes (any order, repeats allowed), a string for :func:`parse_band_list`,
            or None for all bands in file order.
        count: number of bands in the raster.
        name: label for messages (``"hsi_bands"``, ...).

    Raises:
        ShapeMismatchError: empty selection, or an index outside ``1..count``.
    """
    if bands is None:
        return tuple(range(1, count + 1))
    indexes = parse_band_list(bands) if isinstance(bands, str) else tuple(bands)
    if not indexes:
        raise ShapeMismatchError(
            f"{name} is empty; pass 1-based band indexes such as (1, 2, 3) or None for all"
        )
    for index in indexes:
        if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= count:
            raise ShapeMismatchError(
                f"{name} index {index!r} is out of range: the raster has {count} bands, numbered 1..{count} "
                "(1-based, like GDAL)"
            )
    return indexes


def read_band_info(
    dataset: Any, bands: Sequence[int] | str | None = None, *, name: str = "raster"
) -> BandInfo:
    """Read the metadata of the selected bands of an open rasterio dataset.

    Args:
        dataset: an open ``rasterio`` dataset (or ``WarpedVRT``).
        bands: 1-based band selection (see :func:`select_bands`).
        name: label for messages.
    """
    indexes = select_bands(bands, dataset.count, name=name)
    wavelengths = _band_values(dataset, "wavelength", "CENTRAL_WAVELENGTH_UM")
    fwhm = _band_values(dataset, "fwhm", "FWHM_UM")
    scales = [float(s) if s is not None else 1.0 for s in dataset.scales]
    offsets = [float(o) if o is not None else 0.0 for o in dataset.offsets]
    envi_factor = _float_or_none(dataset.tags(ns="ENVI").get("reflectance_scale_factor"))
    if envi_factor and all(s == 1.0 for s in scales) and all(o == 0.0 for o in offsets):
        scales = [1.0 / envi_factor] * dataset.count
    nodata = dataset.nodata
    return BandInfo(
        indexes=indexes,
        descriptions=tuple(dataset.descriptions[i - 1] or None for i in indexes),
        wavelengths_nm=_pick(wavelengths, indexes),
        fwhm_nm=_pick(fwhm, indexes),
        scales=tuple(scales[i - 1] for i in indexes),
        offsets=tuple(offsets[i - 1] for i in indexes),
        nodata=None if nodata is None else float(nodata),
        dtype=str(dataset.dtypes[indexes[0] - 1]),
    )


def band_metadata_tags(wavelength_nm: float | None, fwhm_nm: float | None) -> dict[str, dict[str, str]]:
    """Tags to write on one output band, by namespace (``""`` = default domain).

    The default domain gets ``wavelength``/``fwhm`` in nm with ``wavelength_units``
    (as GDAL's ENVI driver writes them), the ``IMAGERY`` domain the GDAL standard
    ``CENTRAL_WAVELENGTH_UM``/``FWHM_UM``.
    """
    default: dict[str, str] = {}
    imagery: dict[str, str] = {}
    if wavelength_nm is not None:
        default.update(wavelength=f"{wavelength_nm:.6g}", wavelength_units="nm")
        imagery["CENTRAL_WAVELENGTH_UM"] = f"{wavelength_nm / 1e3:.6g}"
    if fwhm_nm is not None:
        default.update(fwhm=f"{fwhm_nm:.6g}", wavelength_units="nm")
        imagery["FWHM_UM"] = f"{fwhm_nm / 1e3:.6g}"
    return {"": default, "IMAGERY": imagery}


def _band_values(dataset: Any, key: str, imagery_key: str) -> list[float | None]:
    """Per-band values of ``key`` in nm from band tags, the ENVI header, or the IMAGERY domain."""
    dataset_units = _lower_keys(dataset.tags()).get("wavelength_units")
    envi = _lower_keys(dataset.tags(ns="ENVI"))
    envi_list = _parse_envi_list(envi.get(key))
    if envi_list is not None and len(envi_list) != dataset.count:
        _logger.warning("ignoring ENVI %r list of %d values for %d bands", key, len(envi_list), dataset.count)
        envi_list = None
    raw: list[float | None] = []
    units: list[str | None] = []
    for band in range(1, dataset.count + 1):
        tags = _lower_keys(dataset.tags(band))
        value = _float_or_none(tags.get(key))
        if value is not None:
            raw.append(value)
            units.append(tags.get("wavelength_units") or dataset_units)
            continue
        if envi_list is not None:
            raw.append(envi_list[band - 1])
            units.append(envi.get("wavelength_units") or dataset_units)
            continue
        imagery = _float_or_none(dataset.tags(band, ns="IMAGERY").get(imagery_key))
        raw.append(imagery)
        units.append("um" if imagery is not None else None)
    return [None if v is None else v * _nm_factor(u, v) for v, u in zip(raw, units, strict=True)]


def _nm_factor(units: str | None, value: float) -> float:
    """Factor to nanometres; without units, values below 100 are taken as micrometres."""
    if units:
        factor = _TO_NM.get(units.strip().lower())
        if factor is not None:
            return factor
        _logger.warning("unknown wavelength units %r; assuming nanometres", units)
        return 1.0
    return 1e3 if value < 100 else 1.0


def _parse_envi_list(text: str | None) -> list[float] | None:
    """``"{0.45, 0.55}"`` -> [0.45, 0.55]; None when absent or not numeric."""
    if not text:
        return None
    items = [item.strip() for item in text.strip().strip("{}").split(",") if item.strip()]
    values = [_float_or_none(item) for item in items]
    if not values or any(v is None for v in values):
        return None
    return [float(v) for v in values if v is not None]


def _float_or_none(text: Any) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _lower_keys(tags: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in tags.items()}


def _pick(values: list[float | None], indexes: tuple[int, ...]) -> tuple[float, ...] | None:
    picked = [values[i - 1] for i in indexes]
    if any(v is None for v in picked):
        return None
    return tuple(float(v) for v in picked if v is not None)

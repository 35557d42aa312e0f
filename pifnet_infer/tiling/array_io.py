"""Source and Sink for arrays in memory (numpy arrays, ``np.memmap``).

:class:`ArraySource` reads windows of an LR-HSI / HR-MSI pair, fills nodata
pixels, mirrors the scene about its border for windows that run past it, and
converts values to the model's range. :class:`ArraySink` writes each band of
final rows the engine hands it into ``out``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from pifnet_infer.errors import MissingDataWarning
from pifnet_infer.tiling.protocols import RowPostprocess, Window

_logger = logging.getLogger(__name__)

Layout = Literal["chw", "hwc"]
#: elements per chunk when scanning an input for invalid values (bounds the scan's memory)
_SCAN_CHUNK_ELEMENTS = 1 << 22


def mirror_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Indices ``start..stop-1`` folded into ``[0, size)`` by mirroring about the border.

    The mirror line is the scene edge itself (numpy's ``"symmetric"`` padding: index -1 reads 0), so a
    mirrored LR window and its HR window stay registered; padding wider than the scene repeats the
    reflection.
    """
    idx = np.arange(start, stop) % (2 * size)
    return np.where(idx < size, idx, 2 * size - 1 - idx)


def band_axis(layout: Layout) -> int:
    """Axis of the bands in an array of this layout."""
    if layout not in ("chw", "hwc"):
        raise ValueError(f"layout must be 'chw' or 'hwc', got {layout!r}")
    return 0 if layout == "chw" else 2


@dataclass(frozen=True)
class ScanResult:
    """What a pass over an input found.

    Attributes:
        invalid: bool (bands, H, W), True where that band is NaN or ``nodata``; None when no pixel is.
        fill: float64 (bands,), per-band mean of the band's valid pixels (raw units), used at its invalid pixels.
        low: float64 (bands,), per-band minimum of the valid pixels (raw units; NaN for an empty band).
        high: float64 (bands,), per-band maximum of the valid pixels (raw units; NaN for an empty band).
    """

    invalid: np.ndarray | None
    fill: np.ndarray
    low: np.ndarray
    high: np.ndarray


def band_fill(
    total: np.ndarray, n_valid: np.ndarray, *, name: str, nodata: float | None, pass_through: bool
) -> np.ndarray:
    """Per-band means of the valid pixels (``total / n_valid``), with bands that have none handled.

    Args:
        total: float64 (bands,), sums of the valid pixels.
        n_valid: (bands,), numbers of valid pixels.
        name: the input, for messages.
        nodata: the nodata value, for messages.
        pass_through: a band without valid pixel is reported by one :class:`~pifnet_infer.errors.MissingDataWarning`
            and filled with the other bands' mean (its output stays missing); False: it is an error.

    Raises:
        ValueError: no valid pixel in any band; or, without ``pass_through``, in some band.
    """
    missing = f"every pixel is NaN{'' if nodata is None else f' or nodata={nodata!r}'}"
    if not n_valid.any():
        raise ValueError(f"{name} has no valid pixel: {missing}")
    empty = np.flatnonzero(n_valid == 0)
    fill = total / np.maximum(n_valid, 1)
    if empty.size:
        listed = ", ".join(str(b + 1) for b in empty)
        if not pass_through:
            raise ValueError(
                f"{name} band(s) {listed} (1-based) have no valid pixel ({missing}); every band of it is needed: "
                "drop those bands and use a model for the others"
            )
        warnings.warn(
            f"{name} band(s) {listed} (1-based) have no valid pixel ({missing}); they stay missing in the output "
            "and the other bands are fused",
            MissingDataWarning,
            stacklevel=4,
        )
        fill[empty] = fill[n_valid > 0].mean()
    return fill


def scan_array(
    array: np.ndarray, layout: Layout, nodata: float | None, *, name: str, pass_through: bool = False
) -> ScanResult:
    """Find invalid pixels of each band and per-band means of the valid ones, a few rows at a time.

    Args:
        array: (bands, H, W) for ``"chw"`` or (H, W, bands) for ``"hwc"``, any real dtype.
        layout: ``"chw"`` or ``"hwc"``.
        nodata: raw value marking missing pixels (NaN is always missing), or None.
        name: argument name used in error messages.
        pass_through: how a band without valid pixel is handled (see :func:`band_fill`).

    Raises:
        ValueError: infinite values, or no valid pixel at all (or in a band, without ``pass_through``).
    """
    axis = band_axis(layout)
    bands = array.shape[axis]
    height, width = (array.shape[1], array.shape[2]) if axis == 0 else (array.shape[0], array.shape[1])
    rows_per_chunk = max(1, _SCAN_CHUNK_ELEMENTS // max(1, bands * width))
    is_float = np.issubdtype(array.dtype, np.floating)
    invalid: np.ndarray | None = None  # allocated at the first missing pixel
    total = np.zeros(bands, dtype=np.float64)
    n_valid = np.zeros(bands, dtype=np.int64)
    low, high = np.full(bands, np.inf), np.full(bands, -np.inf)
    for r0 in range(0, height, rows_per_chunk):
        rows = slice(r0, r0 + rows_per_chunk)
        block = array[:, rows] if axis == 0 else np.moveaxis(array[rows], 2, 0)
        for k, band in enumerate(block):  # one band at a time keeps the temporaries small
            bad = np.zeros(band.shape, dtype=bool)
            if is_float:
                if np.isinf(band).any() and not (nodata is not None and np.isinf(nodata)):
                    raise ValueError(
                        f"{name} contains infinite values; replace them with NaN or a nodata value and pass nodata="
                    )
                bad |= np.isnan(band)
            if nodata is not None and not np.isnan(nodata):
                bad |= band == nodata
            valid = band[~bad] if bad.any() else band
            if bad.any():
                if invalid is None:
                    invalid = np.zeros((bands, height, width), dtype=bool)
                invalid[k, rows] = bad
            if valid.size:
                total[k] += valid.sum(dtype=np.float64)
                n_valid[k] += valid.size
                low[k], high[k] = min(low[k], valid.min()), max(high[k], valid.max())
    fill = band_fill(total, n_valid, name=name, nodata=nodata, pass_through=pass_through)
    low[n_valid == 0], high[n_valid == 0] = np.nan, np.nan
    return ScanResult(invalid, fill, low, high)


@dataclass(frozen=True)
class ArrayInput:
    """One input image and how its raw values map to the model's range.

    Attributes:
        array: (bands, H, W) for ``"chw"`` or (H, W, bands) for ``"hwc"``; any real dtype; may be a memmap.
        layout: ``"chw"`` or ``"hwc"``.
        scale, offset: model value = raw * scale + offset.
        invalid: bool (bands, H, W) (or (H, W): every band), True at missing values, or None.
        fill: (bands,) raw values written at the invalid pixels of each band before conversion, or None.
    """

    array: np.ndarray
    layout: Layout = "chw"
    scale: float = 1.0
    offset: float = 0.0
    invalid: np.ndarray | None = None
    fill: np.ndarray | None = None

    @property
    def bands(self) -> int:
        """Number of bands."""
        return int(self.array.shape[band_axis(self.layout)])

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the image."""
        s = self.array.shape
        return (int(s[1]), int(s[2])) if self.layout == "chw" else (int(s[0]), int(s[1]))

    def read(self, window: Window) -> np.ndarray:
        """Float32 [bands, height, width] in the model's range; outside the image mirrored, nodata filled."""
        height, width = self.shape
        rows = mirror_indices(window.row_off, window.row_end, height)
        cols = mirror_indices(window.col_off, window.col_end, width)
        r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
        inside = r1 - r0 == window.height and c1 - c0 == window.width  # no mirroring needed
        if self.layout == "chw":
            block = self.array[:, r0:r1, c0:c1]
        else:
            block = np.moveaxis(self.array[r0:r1, c0:c1, :], 2, 0)
        block = np.array(block, dtype=np.float32)  # always a copy: the caller's array is never written
        if not inside:
            block = block[:, rows - r0][:, :, cols - c0]
        if self.invalid is not None and self.fill is not None:
            mask = self.invalid[..., r0:r1, c0:c1]
            if not inside:
                mask = mask[..., rows - r0, :][..., cols - c0]
            np.copyto(block, self.fill.astype(np.float32)[:, None, None], where=mask)
        if self.scale != 1.0 or self.offset != 0.0:
            block *= np.float32(self.scale)
            block += np.float32(self.offset)
        return block


class ArraySource:
    """A :class:`~pifnet_infer.tiling.protocols.Source` over an LR-HSI / HR-MSI pair in memory.

    Args:
        lr_hsi: the LR-HSI, (C, h, w) or (h, w, C).
        hr_msi: the HR-MSI, (c, r*h, r*w) or (r*h, r*w, c), same layout.
        ratio: r.
    """

    def __init__(self, lr_hsi: ArrayInput, hr_msi: ArrayInput, ratio: int) -> None:
        h, w = lr_hsi.shape
        if hr_msi.shape != (ratio * h, ratio * w):
            raise ValueError(f"hr_msi must be {(ratio * h, ratio * w)} for ratio {ratio}, got {hr_msi.shape}")
        self.lr = lr_hsi
        self.msi = hr_msi
        self.lr_shape = (h, w)
        self.ratio = ratio
        self.hsi_bands = lr_hsi.bands
        self.msi_bands = hr_msi.bands

    def read(self, lr_window: Window) -> tuple[np.ndarray, np.ndarray]:
        """(lr [C, h', w'], msi [c, r*h', r*w']) float32 in the model's range, mirrored past the border."""
        return self.lr.read(lr_window), self.msi.read(lr_window.scaled(self.ratio))

    def invalid_hr_rows(self, row0: int, row1: int) -> np.ndarray | None:
        """Bool [C or 1, row1-row0, W]: missing output values, or None.

        An output band is missing under its own missing LR-HSI pixels; every band is missing at a pixel
        where any MSI band is.
        """
        r = self.ratio
        mask = None
        if self.lr.invalid is not None:
            lr = self.lr.invalid if self.lr.invalid.ndim == 3 else self.lr.invalid[None]
            mask = lr[:, np.arange(row0, row1) // r][..., np.arange(self.msi.shape[1]) // r]
        if self.msi.invalid is not None:
            msi = self.msi.invalid[..., row0:row1, :]
            msi_rows = msi.any(axis=0) if msi.ndim == 3 else msi
            mask = msi_rows[None] if mask is None else mask | msi_rows
        return mask


def array_postprocess(source: ArraySource, dtype: np.dtype[Any], nodata: float | None) -> RowPostprocess:
    """The :data:`~pifnet_infer.tiling.protocols.RowPostprocess` of :class:`ArraySink` in ``fuse``.

    Converts final rows from the model's range back to the LR-HSI's raw units, writes ``nodata`` (NaN when
    None) at HR pixels covered by missing input pixels, and rounds/clips for an integer ``dtype`` (whose
    callers must pass a ``nodata`` when pixels are missing).
    """
    a, b = source.lr.scale, source.lr.offset  # raw -> model
    integer = np.issubdtype(dtype, np.integer)
    fill = np.nan if nodata is None else nodata

    def finish(row0: int, values: np.ndarray) -> np.ndarray:
        values = (values - np.float32(b)) / np.float32(a) if (a, b) != (1.0, 0.0) else values
        invalid = source.invalid_hr_rows(row0, row0 + values.shape[1])
        if invalid is not None:
            np.copyto(values, np.float32(fill), where=invalid)
        if integer:
            info = np.iinfo(dtype)
            values = np.clip(np.rint(values), info.min, info.max)
        return values

    return finish


class ArraySink:
    """A :class:`~pifnet_infer.tiling.protocols.Sink` that writes final rows into an array.

    The engine blends tiles itself (on the compute device) and hands over finished rows in order;
    this sink applies ``postprocess`` and stores them in ``out``. It holds nothing between writes.

    Args:
        out: (C, H, W) for ``"chw"`` or (H, W, C) for ``"hwc"``; any dtype numpy casts to, may be an
            ``np.memmap``. None allocates a float32 array.
        shape: (C, H, W) of the result.
        layout: layout of ``out``.
        postprocess: called on every band of final rows before it is written (see
            :data:`~pifnet_infer.tiling.protocols.RowPostprocess`).
    """

    def __init__(
        self,
        out: np.ndarray | None,
        shape: tuple[int, int, int],
        *,
        layout: Layout = "chw",
        postprocess: RowPostprocess | None = None,
    ) -> None:
        bands, height, width = shape
        expected = shape if layout == "chw" else (height, width, bands)
        if out is None:
            out = np.empty(expected, dtype=np.float32)
        elif tuple(out.shape) != expected:
            raise ValueError(f"out must have shape {expected} for layout {layout!r}, got {tuple(out.shape)}")
        self.out = out
        self.shape = shape
        self.layout = layout
        self.postprocess = postprocess
        self._done = 0  # rows < _done are written

    def write(self, hr_row0: int, rows: np.ndarray) -> None:
        """Store final rows ``hr_row0 ..`` (float32 [C, n, W], blended and normalised)."""
        if hr_row0 != self._done:
            raise RuntimeError(
                f"internal error: rows from {hr_row0} written while rows from {self._done} are due"
            )
        stop = hr_row0 + rows.shape[1]
        if self.postprocess is not None:
            rows = self.postprocess(hr_row0, rows)
        if self.layout == "chw":
            self.out[:, hr_row0:stop] = rows
        else:
            self.out[hr_row0:stop] = np.moveaxis(rows, 0, 2)
        self._done = stop

    def close(self) -> None:
        """Check every row was written; flush a memmap."""
        if self._done != self.shape[1]:
            raise RuntimeError(f"internal error: only HR rows < {self._done} of {self.shape[1]} were written")
        if isinstance(self.out, np.memmap):
            self.out.flush()

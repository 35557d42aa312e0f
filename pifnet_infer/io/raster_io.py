"""Source and Sink for rasters on disk: :class:`RasterSource`, :class:`RasterSink`.

The raster twins of :mod:`pifnet_infer.tiling.array_io`, for the same tiling
engine: the :class:`RasterSource` reads only the LR window of each tile and the
matching MSI window with rasterio (mirrored past the scene border, missing
pixels filled, scaled to the model's range); the :class:`RasterSink` writes each
band of final rows to the output dataset as soon as no later tile touches it.
rasterio is imported inside functions only.

.. versionadded:: 0.1
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from pifnet_infer.errors import RasterReadError, ShapeMismatchError
from pifnet_infer.tiling.array_io import ArraySink, band_fill, mirror_indices
from pifnet_infer.tiling.protocols import RowPostprocess, Window

#: output block side in pixels (a multiple of 16, as GeoTIFF tiles must be)
BLOCK = 256
#: raster elements read per chunk when scanning an input for missing pixels
_SCAN_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class RasterInput:
    """Selected bands of one raster over the scene, and how raw values map to the model's range.

    Attributes:
        dataset: open rasterio dataset (or ``WarpedVRT``).
        indexes: 1-based bands to read, in order.
        origin: (row, col) in the file of the scene's pixel (0, 0).
        shape: (height, width) of the scene.
        scale: float32 (bands, 1, 1); model value = raw * scale + offset.
        offset: float32 (bands, 1, 1).
        nodata: raw nodata value, or None (NaN is always missing in float rasters).
        fill: float32 (bands,) raw value written at missing pixels, or None when there are none.
        flagged_rows: bool (height,), rows holding a missing pixel, or None when there are none.
        low: float64 (bands,), per-band minimum of the valid pixels (raw units), once scanned.
        high: float64 (bands,), per-band maximum of the valid pixels (raw units), once scanned.
        lock: serialises reads: the engine reads tiles in a background thread while the Sink reads
            missing-pixel masks in the main thread, and a GDAL dataset must not be used by two at once.
    """

    dataset: Any
    indexes: tuple[int, ...]
    origin: tuple[int, int]
    shape: tuple[int, int]
    scale: np.ndarray
    offset: np.ndarray
    nodata: float | None = None
    fill: np.ndarray | None = None
    flagged_rows: np.ndarray | None = None
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def read_raw(self, row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
        """Stored values (file dtype) of scene rows/cols ``[row0, row1) x [col0, col1)``, inside the scene."""
        from rasterio.errors import RasterioIOError
        from rasterio.windows import Window as RioWindow

        window = RioWindow(col0 + self.origin[1], row0 + self.origin[0], col1 - col0, row1 - row0)
        try:
            with self.lock:
                return np.asarray(self.dataset.read(self.indexes, window=window))
        except RasterioIOError as err:
            raise RasterReadError(
                f"reading rows {row0 + self.origin[0]}-{row1 + self.origin[0]}, columns "
                f"{col0 + self.origin[1]}-{col1 + self.origin[1]} of {self.dataset.name!r} failed ({err}); "
                "the file is truncated or corrupt: re-download or re-export it"
            ) from err

    def missing(self, raw: np.ndarray) -> np.ndarray | None:
        """Bool (bands, rows, cols): values that are NaN or nodata; None when the dtype cannot have any."""
        is_float = raw.dtype.kind == "f"
        if not is_float and self.nodata is None:
            return None
        bad = np.isnan(raw) if is_float else np.zeros(raw.shape, dtype=bool)
        if self.nodata is not None and not np.isnan(self.nodata):
            bad |= raw == self.nodata
        return bad

    def read(self, window: Window) -> np.ndarray:
        """Float32 [bands, height, width] in the model's range; mirrored past the border, missing pixels filled."""
        rows = mirror_indices(window.row_off, window.row_end, self.shape[0])
        cols = mirror_indices(window.col_off, window.col_end, self.shape[1])
        r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
        raw = self.read_raw(r0, r1, c0, c1)
        inside = r1 - r0 == window.height and c1 - c0 == window.width
        block = raw.astype(np.float32)
        if not inside:
            block = block[:, rows - r0][:, :, cols - c0]
        if self.fill is not None:
            mask = self.missing(raw)
            if mask is not None and mask.any():
                if not inside:
                    mask = mask[:, rows - r0][:, :, cols - c0]
                np.copyto(block, self.fill[:, None, None], where=mask)
        block *= self.scale
        block += self.offset
        return block

    def missing_rows(self, row0: int, row1: int) -> np.ndarray | None:
        """Bool (bands, row1 - row0, width) of missing values in these scene rows, or None when they have none."""
        if self.flagged_rows is None or not self.flagged_rows[row0:row1].any():
            return None
        return self.missing(self.read_raw(row0, row1, 0, self.shape[1]))


class RasterSource:
    """A :class:`~pifnet_infer.tiling.protocols.Source` reading an LR-HSI / HR-MSI raster pair window by window.

    Args:
        hsi: the HSI input (scene = the whole HSI).
        msi: the MSI input (scene = the MSI window matching the HSI, ``ratio`` times larger).
        ratio: r.
    """

    def __init__(self, hsi: RasterInput, msi: RasterInput, ratio: int) -> None:
        h, w = hsi.shape
        if msi.shape != (h * ratio, w * ratio):
            raise ShapeMismatchError(
                f"MSI scene must be {(h * ratio, w * ratio)} for ratio {ratio}, got {msi.shape}"
            )
        self.hsi = hsi
        self.msi = msi
        self.lr_shape = (h, w)
        self.ratio = ratio
        self.hsi_bands = len(hsi.indexes)
        self.msi_bands = len(msi.indexes)

    def read(self, lr_window: Window) -> tuple[np.ndarray, np.ndarray]:
        """(lr [C, h', w'], msi [c, r*h', r*w']) float32 in the model's range (see the protocol)."""
        return self.hsi.read(lr_window), self.msi.read(lr_window.scaled(self.ratio))

    def missing_hr_rows(self, row0: int, row1: int) -> np.ndarray | None:
        """Bool [C or 1, row1-row0, W]: missing output values, or None.

        An output band is missing under its own missing LR values; every band at a missing MSI pixel.
        """
        r = self.ratio
        lo, hi = row0 // r, (row1 - 1) // r + 1
        mask = None
        lr_missing = self.hsi.missing_rows(lo, hi)
        if lr_missing is not None:
            mask = lr_missing[:, np.arange(row0, row1) // r - lo][..., np.arange(self.msi.shape[1]) // r]
        msi_missing = self.msi.missing_rows(row0, row1)
        if msi_missing is not None:
            any_band = msi_missing.any(axis=0)[None]
            mask = any_band if mask is None else mask | any_band
        return mask


class _StripWriter:
    """Array-like target for :class:`ArraySink`: collects final rows and writes whole strips of blocks."""

    def __init__(self, dataset: Any, block_rows: int) -> None:
        self.dataset = dataset
        self.shape = (dataset.count, dataset.height, dataset.width)
        self._strip = np.empty((dataset.count, block_rows, dataset.width), dtype=dataset.dtypes[0])
        self._start = 0  # first row of the strip
        self._filled = 0  # rows of the strip holding data

    def __setitem__(self, key: tuple[slice, slice], values: np.ndarray) -> None:
        rows = key[1]
        row, stop = rows.start, rows.stop
        if row != self._start + self._filled:
            raise RuntimeError(
                f"rows must arrive in order: expected row {self._start + self._filled}, got {row}"
            )
        done = 0
        while row < stop:
            n = min(stop - row, self._strip.shape[1] - self._filled)
            self._strip[:, self._filled : self._filled + n] = values[:, done : done + n]
            self._filled += n
            row += n
            done += n
            if self._filled == self._strip.shape[1] or self._start + self._filled == self.shape[1]:
                self.flush()

    def flush(self) -> None:
        """Write the rows collected so far."""
        if self._filled == 0:
            return
        from rasterio.windows import Window as RioWindow

        window = RioWindow(0, self._start, self.shape[2], self._filled)
        self.dataset.write(self._strip[:, : self._filled], window=window)
        self._start += self._filled
        self._filled = 0


class RasterSink:
    """A :class:`~pifnet_infer.tiling.protocols.Sink` writing final rows into an open rasterio dataset.

    Final rows from the engine pass ``postprocess`` and are written in strips of ``block_rows`` rows
    (whole output blocks, so compressed blocks are written once). Memory: one strip of
    ``block_rows`` x W x C in the output dtype.

    Args:
        dataset: rasterio dataset open for writing, (C, H, W).
        postprocess: applied to every band of final rows (model range -> output values).
        block_rows: strip height, the output's block height.
    """

    def __init__(self, dataset: Any, postprocess: RowPostprocess, *, block_rows: int = BLOCK) -> None:
        self._writer = _StripWriter(dataset, block_rows)
        self._sink = ArraySink(self._writer, self._writer.shape, postprocess=postprocess)  # type: ignore[arg-type]

    def write(self, hr_row0: int, rows: np.ndarray) -> None:
        """Final rows (see the protocol): postprocess them and write whole strips."""
        self._sink.write(hr_row0, rows)

    def close(self) -> None:
        """Write every remaining row."""
        self._sink.close()
        self._writer.flush()


def raster_postprocess(
    source: RasterSource,
    dtype: np.dtype[Any],
    fill: float,
    *,
    to_model: tuple[np.ndarray, np.ndarray] | None = None,
) -> RowPostprocess:
    """Row postprocess for the output: model range -> the output's stored units, missing pixels -> ``fill``.

    ``to_model``: float32 (bands, 1, 1) scale and offset with model value = stored * scale + offset; None:
    the HSI's stored units. Integer ``dtype`` rounds and clips to the dtype's range (the cast happens when
    the rows are stored).
    """
    scale, offset = (source.hsi.scale, source.hsi.offset) if to_model is None else to_model
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None

    def finish(row0: int, values: np.ndarray) -> np.ndarray:
        values -= offset  # in place: the rows are a fresh array, and they are the largest buffer here
        values /= scale
        missing = source.missing_hr_rows(row0, row0 + values.shape[1])
        if missing is not None:
            np.copyto(values, np.float32(fill), where=missing)
        if info is not None:
            np.clip(np.rint(values, out=values), info.min, info.max, out=values)
        return values

    return finish


def scan_input(inp: RasterInput, name: str, *, pass_through: bool = False) -> RasterInput:
    """Find rows with missing values, the per-band mean, minimum and maximum of valid values (raw units).

    Reads the input a few rows at a time. ``pass_through``: how a band without valid pixel is handled
    (see :func:`~pifnet_infer.tiling.array_io.band_fill`).

    Raises:
        ValueError: infinite values, or no valid pixel (in any band, or in some band without ``pass_through``).
    """
    dtype = np.dtype(inp.dataset.dtypes[inp.indexes[0] - 1])
    height, width = inp.shape
    bands = len(inp.indexes)
    step = max(1, _SCAN_ELEMENTS // max(1, bands * width))
    total = np.zeros(bands, dtype=np.float64)
    n_valid = np.zeros(bands, dtype=np.int64)
    low, high = np.full(bands, np.inf), np.full(bands, -np.inf)
    flagged = np.zeros(height, dtype=bool)
    for r0 in range(0, height, step):
        r1 = min(height, r0 + step)
        raw = inp.read_raw(r0, r1, 0, width)
        if (
            dtype.kind == "f"
            and np.isinf(raw).any()
            and not (inp.nodata is not None and np.isinf(inp.nodata))
        ):
            raise ValueError(
                f"the {name} contains infinite values; set a nodata value for them (e.g. gdal_edit.py)"
            )
        bad = inp.missing(raw)
        if bad is not None and bad.any():
            flagged[r0:r1] = bad.any(axis=(0, 2))
        for k, band in enumerate(raw):
            valid = band if bad is None or not bad[k].any() else band[~bad[k]]
            if valid.size:
                total[k] += valid.sum(dtype=np.float64)
                n_valid[k] += valid.size
                low[k], high[k] = min(low[k], valid.min()), max(high[k], valid.max())
    fill = band_fill(total, n_valid, name=f"the {name}", nodata=inp.nodata, pass_through=pass_through)
    low[n_valid == 0], high[n_valid == 0] = np.nan, np.nan
    if not flagged.any():
        return replace(inp, low=low, high=high)
    return replace(inp, fill=fill.astype(np.float32), flagged_rows=flagged, low=low, high=high)

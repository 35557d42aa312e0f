"""Open rasters and put the MSI on the HSI grid: check it (``align="error"``) or warp it (``"resample"``).

rasterio is imported inside the functions.

.. versionadded:: 0.1
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pifnet_infer.errors import GridMismatchError, RasterReadError
from pifnet_infer.io.bands import BandInfo, read_band_info
from pifnet_infer.io.grids import GridPair, RasterGrid, check_crs, crs_name, match_grids, subdivided_transform
from pifnet_infer.tiling.protocols import Window

_logger = logging.getLogger(__name__)

Align = Literal["error", "resample"]


@contextlib.contextmanager
def open_raster(path: str | os.PathLike[str], name: str) -> Iterator[Any]:
    """Open a raster for reading; missing and unreadable files raise one clear error each."""
    import rasterio
    from rasterio.errors import RasterioIOError

    text = os.fspath(path)
    if not text.startswith("/vsi") and "://" not in text and not Path(text).is_file():
        if Path(text).is_dir():
            raise IsADirectoryError(f"the {name} path {text!r} is a folder; pass the raster file inside it")
        raise FileNotFoundError(f"{name} file {text!r} does not exist")
    try:
        dataset = rasterio.open(text)
    except RasterioIOError as err:
        raise RasterReadError(
            f"cannot read the {name} {text!r} as a raster ({err}); expected a GeoTIFF or another format GDAL reads"
        ) from err
    with dataset:
        yield dataset


def check_ratio(ratio: int) -> int:
    """``ratio`` itself when it is a valid LR -> HR ratio (an int >= 2).

    Raises:
        ValueError: anything else, called invalid.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 2:
        raise ValueError(
            f"invalid ratio {ratio!r}: the LR -> HR ratio is an integer >= 2 (None: from the pixel sizes)"
        )
    return ratio


def _resample_ratio(hsi: Any, msi: Any, ratio: int | None) -> int:
    """The ratio for ``align="resample"``: the given one, or the nearest integer to the pixel-size ratio."""
    if ratio is not None:
        return check_ratio(ratio)
    msi_x, msi_y = RasterGrid.of(msi).pixel_size
    if msi.crs != hsi.crs:
        from rasterio.warp import calculate_default_transform

        transform, _, _ = calculate_default_transform(msi.crs, hsi.crs, msi.width, msi.height, *msi.bounds)
        msi_x, msi_y = RasterGrid(hsi.crs, transform, 1, 1).pixel_size
    hsi_x, hsi_y = RasterGrid.of(hsi).pixel_size
    derived = (hsi_x / msi_x + hsi_y / msi_y) / 2
    nearest = round(derived)
    if nearest < 2 or abs(derived - nearest) > 0.1 * nearest:
        raise GridMismatchError(
            f"the pixel sizes give a ratio of {derived:.4g}, not close to an integer >= 2; pass ratio=N "
            "(CLI: --ratio N) to resample the MSI to the HSI pixel / N"
        )
    return nearest


def _check_covers(hsi: Any, msi: Any, ratio: int) -> None:
    """The MSI footprint (in the HSI's CRS) contains the HSI footprint, within half an output pixel.

    Warping leaves output pixels outside the MSI empty, so a short MSI is refused rather than fused.
    """
    from rasterio.warp import transform_bounds

    bounds = msi.bounds if msi.crs == hsi.crs else transform_bounds(msi.crs, hsi.crs, *msi.bounds)
    mx0, mx1 = sorted((bounds[0], bounds[2]))
    my0, my1 = sorted((bounds[1], bounds[3]))
    hx0, hx1 = sorted((hsi.bounds[0], hsi.bounds[2]))
    hy0, hy1 = sorted((hsi.bounds[1], hsi.bounds[3]))
    tol_x, tol_y = (s / ratio / 2 for s in RasterGrid.of(hsi).pixel_size)
    short = {
        "left": mx0 - hx0, "right": hx1 - mx1, "bottom": my0 - hy0, "top": hy1 - my1,
    }  # fmt: skip
    sides = [
        f"{d:.6g} on the {side}"
        for side, d in short.items()
        if d > (tol_x if side in ("left", "right") else tol_y)
    ]
    if sides:
        raise GridMismatchError(
            f"the MSI does not cover the HSI footprint: it is short by {', '.join(sides)} (in "
            f"{crs_name(hsi.crs)} units; MSI bounds {(mx0, my0, mx1, my1)}, HSI bounds {(hx0, hy0, hx1, hy1)}); "
            "crop the HSI to the area both images cover"
        )


def align_msi(
    hsi: Any, msi: Any, ratio: int | None, align: Align, stack: contextlib.ExitStack
) -> tuple[GridPair, Any, str]:
    """(grid pair, dataset to read the MSI from, one-line note for the output's metadata)."""
    hsi_grid, msi_grid = RasterGrid.of(hsi, "HSI"), RasterGrid.of(msi, "MSI")
    if align == "error":
        pair = match_grids(hsi_grid, msi_grid, ratio)
        return pair, msi, f"aligned (no resampling); MSI window {_window_text(pair.msi_window)}"
    check_crs(hsi_grid, msi_grid, require_equal=False)
    with contextlib.suppress(GridMismatchError):
        pair = match_grids(hsi_grid, msi_grid, ratio)
        return pair, msi, f"aligned (no resampling needed); MSI window {_window_text(pair.msi_window)}"
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    r = _resample_ratio(hsi, msi, ratio)
    _check_covers(hsi, msi, r)
    target = subdivided_transform(hsi.transform, r)
    height, width = hsi.height * r, hsi.width * r
    vrt = stack.enter_context(
        WarpedVRT(
            msi, crs=hsi.crs, transform=target, width=width, height=height, resampling=Resampling.bilinear
        )
    )
    note = (
        f"resampled: MSI warped onto the HSI grid / {r} with rasterio WarpedVRT (bilinear) from "
        f"{crs_name(msi.crs)}, pixel {msi_grid.pixel_size[0]:.6g} x {msi_grid.pixel_size[1]:.6g}, "
        f"origin ({msi.transform.c:.6f}, {msi.transform.f:.6f})"
    )
    _logger.info("align='resample': %s", note)
    pair = GridPair(r, (hsi.height, hsi.width), Window(0, 0, height, width), hsi.crs, hsi.transform, target)
    return pair, vrt, note


def _window_text(w: Window) -> str:
    return f"rows {w.row_off}..{w.row_end}, cols {w.col_off}..{w.col_end}"


@dataclass(frozen=True)
class ScenePair:
    """A whole LR-HSI / HR-MSI pair read into memory, in physical units (scale/offset applied, nodata NaN).

    Attributes:
        lr_hsi: float32 (C, h, w).
        hr_msi: float32 (c, r*h, r*w), the MSI window over the HSI's extent.
        ratio: r.
        hsi_wavelengths_nm: the HSI bands' centres, or None when the file does not say.
    """

    lr_hsi: np.ndarray
    hr_msi: np.ndarray
    ratio: int
    hsi_wavelengths_nm: tuple[float, ...] | None


def read_physical(dataset: Any, info: BandInfo, window: Any = None) -> np.ndarray:
    """Float32 (bands, H, W) of ``info``'s bands in physical units: scale/offset applied, nodata as NaN.

    ``window`` is a rasterio window, or None for the whole raster (it is read at once: not for huge rasters).
    """
    data = dataset.read(list(info.indexes), window=window).astype(np.float32)
    if info.nodata is not None:
        data[data == np.float32(info.nodata)] = np.nan
    scale = np.asarray(info.scales, dtype=np.float32)[:, None, None]
    return data * scale + np.asarray(info.offsets, dtype=np.float32)[:, None, None]


def read_scene_pair(
    hsi_path: str | os.PathLike[str],
    msi_path: str | os.PathLike[str],
    *,
    hsi_bands: Sequence[int] | str | None = None,
    msi_bands: Sequence[int] | str | None = None,
    ratio: int | None = None,
    align: Align = "error",
) -> ScenePair:
    """Read a raster pair whole, on matched grids (what scene adaptation trains on; not for huge scenes).

    Grids are checked and matched exactly as :func:`~pifnet_infer.fuse_geotiff` does (same errors).
    """
    from rasterio.windows import Window as RioWindow

    with contextlib.ExitStack() as stack:
        hsi_ds = stack.enter_context(open_raster(hsi_path, "HSI"))
        msi_ds = stack.enter_context(open_raster(msi_path, "MSI"))
        pair, msi_read, _ = align_msi(hsi_ds, msi_ds, ratio, align, stack)
        hsi = read_band_info(hsi_ds, hsi_bands, name="hsi_bands")
        msi = read_band_info(msi_read, msi_bands, name="msi_bands")
        w = pair.msi_window
        return ScenePair(
            read_physical(hsi_ds, hsi),
            read_physical(msi_read, msi, RioWindow(w.col_off, w.row_off, w.width, w.height)),
            pair.ratio,
            hsi.wavelengths_nm,
        )

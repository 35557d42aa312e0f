"""Grid checks for an LR-HSI / HR-MSI raster pair (pure arithmetic, no pixel I/O).

The HSI grid defines the output: the output grid is the HSI grid with every
pixel split into ``ratio`` x ``ratio`` pixels. The MSI must lie on that
subdivided grid (same CRS, same pixel axes, origin on a subdivided pixel
corner) and cover the whole HSI footprint; it may extend beyond it, in which
case only the matching window of the MSI is read.

Grids are described by :class:`RasterGrid`, built from an open rasterio dataset
or a rasterio profile with :meth:`RasterGrid.of`. Transforms are
``affine.Affine`` objects (rasterio's), CRSs are ``rasterio.crs.CRS`` objects;
this module compares them without importing rasterio.

.. versionadded:: 0.1
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pifnet_infer.errors import GridMismatchError
from pifnet_infer.tiling.protocols import Window

#: Largest accepted distance from an integer of the pixel-size ratio (relative).
RATIO_RTOL = 1e-3
#: Largest accepted misalignment, in MSI (HR) pixels, anywhere over the HSI footprint.
ALIGN_TOL_PX = 0.01


@dataclass(frozen=True)
class RasterGrid:
    """The georeferenced pixel grid of one raster.

    Attributes:
        crs: the raster's CRS (``rasterio.crs.CRS``) or None when it has none.
        transform: pixel -> CRS affine transform (``affine.Affine``).
        width: number of columns.
        height: number of rows.
        name: label used in messages ("HSI", "MSI", a file name).
    """

    crs: Any
    transform: Any
    width: int
    height: int
    name: str = "raster"

    @classmethod
    def of(cls, raster: Any, name: str = "raster") -> RasterGrid:
        """Grid of an open rasterio dataset (or WarpedVRT) or of a profile mapping."""
        if isinstance(raster, Mapping):
            return cls(
                raster.get("crs"), raster["transform"], int(raster["width"]), int(raster["height"]), name
            )
        return cls(raster.crs, raster.transform, int(raster.width), int(raster.height), name)

    @property
    def pixel_size(self) -> tuple[float, float]:
        """(x size, y size) of a pixel in CRS units (lengths of the pixel's edges)."""
        t = self.transform
        return math.hypot(t.a, t.d), math.hypot(t.b, t.e)

    @property
    def crs_name(self) -> str:
        """Short CRS name for messages (EPSG code when known)."""
        return crs_name(self.crs)

    def describe(self) -> str:
        """One line: size, pixel size, origin and CRS."""
        xs, ys = self.pixel_size
        t = self.transform
        return (
            f"{self.name}: {self.width} x {self.height} px, pixel {xs:.6g} x {ys:.6g}, "
            f"origin ({t.c:.6f}, {t.f:.6f}), CRS {self.crs_name}"
        )


@dataclass(frozen=True)
class GridPair:
    """How an HSI grid and an MSI grid fit together (result of :func:`match_grids`).

    Attributes:
        ratio: r, HR pixels per LR pixel along each axis.
        lr_shape: (h, w) of the HSI.
        msi_window: the MSI window (in MSI pixels) that matches the HSI footprint;
            its size is (r*h, r*w).
        crs: the common CRS.
        hsi_transform: the HSI's transform.
        out_transform: the output transform (HSI transform with pixel size / r).
    """

    ratio: int
    lr_shape: tuple[int, int]
    msi_window: Window
    crs: Any
    hsi_transform: Any
    out_transform: Any

    @property
    def hr_shape(self) -> tuple[int, int]:
        """(H, W) = (r*h, r*w), the output size."""
        return self.lr_shape[0] * self.ratio, self.lr_shape[1] * self.ratio

    @property
    def msi_is_cropped(self) -> bool:
        """True when the MSI extends beyond the HSI footprint and only a window of it is used."""
        return self.msi_window.row_off != 0 or self.msi_window.col_off != 0


def crs_name(crs: Any) -> str:
    """``"EPSG:32616"`` style name of a CRS, its WKT start otherwise, ``"none"`` when missing."""
    if not crs:
        return "none"
    epsg = crs.to_epsg() if hasattr(crs, "to_epsg") else None
    if epsg:
        return f"EPSG:{epsg}"
    text = crs.to_string() if hasattr(crs, "to_string") else str(crs)
    return text if len(text) <= 60 else text[:57] + "..."


def check_crs(hsi: RasterGrid, msi: RasterGrid, *, require_equal: bool = True) -> None:
    """Both grids have a CRS and, when ``require_equal``, the same one.

    Raises:
        GridMismatchError: a CRS is missing or the two differ (the message names both).
    """
    for grid in (hsi, msi):
        if not grid.crs:
            raise GridMismatchError(
                f"the {grid.name} has no CRS; assign the right one first, e.g. gdal_edit.py -a_srs EPSG:XXXX FILE"
            )
    if require_equal and hsi.crs != msi.crs:
        raise GridMismatchError(
            f"CRS differ: {hsi.name} is {hsi.crs_name!r}, {msi.name} is {msi.crs_name!r}; reproject one onto "
            "the other (gdalwarp -t_srs) or pass align='resample' (CLI: --align resample) to warp the MSI "
            "onto the HSI grid"
        )


def derive_ratio(
    hsi: RasterGrid, msi: RasterGrid, ratio: int | None = None, *, rtol: float = RATIO_RTOL
) -> int:
    """The integer LR -> HR ratio implied by the pixel sizes.

    Args:
        hsi: the LR-HSI grid.
        msi: the HR-MSI grid (same CRS).
        ratio: the expected ratio, or None to accept whatever integer the pixel sizes give.
        rtol: relative tolerance for "integer".

    Raises:
        GridMismatchError: the x and y ratios differ, are not integers, or differ from ``ratio``.
    """
    (hx, hy), (mx, my) = hsi.pixel_size, msi.pixel_size
    rx, ry = hx / mx, hy / my
    sizes = f"{hsi.name} pixel {hx:.6g} x {hy:.6g}, {msi.name} pixel {mx:.6g} x {my:.6g}"
    if not math.isclose(rx, ry, rel_tol=rtol):
        raise GridMismatchError(
            f"the pixel-size ratio differs between x ({rx:.6g}) and y ({ry:.6g}) ({sizes}); resample the MSI "
            "to square multiples of the HSI pixels or pass align='resample' (CLI: --align resample)"
        )
    nearest = max(round(rx), 1)
    if not math.isclose(rx, nearest, rel_tol=rtol):
        raise GridMismatchError(
            f"the pixel-size ratio {rx:.6g} is not an integer ({sizes}); PIF-Net needs an integer ratio: "
            "resample the MSI to an integer fraction of the HSI pixel or pass align='resample' with ratio=N"
        )
    if ratio is not None and nearest != ratio:
        raise GridMismatchError(
            f"ratio={ratio!r} was given but the pixel sizes give {nearest} ({sizes}); drop the ratio argument "
            "or pass align='resample' to warp the MSI to the requested ratio"
        )
    if nearest < 2:
        raise GridMismatchError(
            f"the {msi.name} pixels are not smaller than the {hsi.name} pixels ({sizes}); pass the LR "
            "hyperspectral image as the HSI and the HR multispectral image as the MSI"
        )
    return nearest


def subdivided_transform(transform: Any, ratio: int) -> Any:
    """``transform`` with every pixel split into ``ratio`` x ``ratio`` pixels (same origin)."""
    from affine import Affine

    return transform @ Affine.scale(1.0 / ratio)


def match_grids(
    hsi: RasterGrid,
    msi: RasterGrid,
    ratio: int | None = None,
    *,
    rtol: float = RATIO_RTOL,
    tol_px: float = ALIGN_TOL_PX,
) -> GridPair:
    """Check that the MSI grid is the HSI grid subdivided by the ratio and find the matching MSI window.

    Args:
        hsi: the LR-HSI grid.
        msi: the HR-MSI grid.
        ratio: expected ratio, or None to derive it from the pixel sizes.
        rtol: relative tolerance of the ratio (see :func:`derive_ratio`).
        tol_px: largest accepted misalignment in MSI pixels, at any corner of the HSI footprint.

    Returns:
        The :class:`GridPair`.

    Raises:
        GridMismatchError: missing/different CRS, non-integer or unexpected ratio, different pixel axes,
            MSI origin off the subdivided grid, or an MSI that does not cover the HSI footprint. The
            message says what differs by how much and how to fix it.
    """
    check_crs(hsi, msi)
    r = derive_ratio(hsi, msi, ratio, rtol=rtol)
    target = subdivided_transform(hsi.transform, r)
    h, w = hsi.height, hsi.width
    hr_h, hr_w = h * r, w * r
    # Where the corners of the HSI footprint fall in MSI pixel coordinates.
    inverse = ~msi.transform
    corners = [(0, 0), (hr_w, 0), (0, hr_h), (hr_w, hr_h)]
    positions = [inverse @ (target @ corner) for corner in corners]
    col0, row0 = positions[0]
    col_off, row_off = round(col0), round(row0)
    drift = max(
        math.hypot(c - (col_off + dc), rr - (row_off + dr))
        for (c, rr), (dc, dr) in zip(positions, corners, strict=True)
    )
    if drift > tol_px:
        raise GridMismatchError(_misalignment_message(hsi, msi, r, positions, corners, col_off, row_off))
    window = Window(row_off, col_off, hr_h, hr_w)
    missing = {
        "left": -col_off,
        "top": -row_off,
        "right": col_off + hr_w - msi.width,
        "bottom": row_off + hr_h - msi.height,
    }
    short = {side: n for side, n in missing.items() if n > 0}
    if short:
        sides = ", ".join(f"{n} px on the {side}" for side, n in short.items())
        raise GridMismatchError(
            f"the {msi.name} does not cover the {hsi.name} footprint: it is short by {sides} (in {msi.name} "
            f"pixels; {msi.name} is {msi.width} x {msi.height}, the {hsi.name} footprint needs {hr_w} x {hr_h} "
            f"starting at column {col_off}, row {row_off}); crop the {hsi.name} to the {msi.name} footprint "
            "(e.g. gdal_translate -projwin) or supply an MSI that covers it"
        )
    return GridPair(r, (h, w), window, hsi.crs, hsi.transform, target)


def _misalignment_message(
    hsi: RasterGrid,
    msi: RasterGrid,
    r: int,
    positions: list[tuple[float, float]],
    corners: list[tuple[int, int]],
    col_off: int,
    row_off: int,
) -> str:
    """Say whether the origin is offset, the axes differ, or both, in MSI pixels."""
    col0, row0 = positions[0]
    parts = []
    if max(abs(col0 - col_off), abs(row0 - row_off)) > 1e-9:
        parts.append(
            f"its pixel corners are shifted from the subdivided {hsi.name} grid by {col_off - col0:+.4g} "
            f"columns and {row_off - row0:+.4g} rows (in {msi.name} pixels)"
        )
    far_c, far_r = positions[3]
    axis_c = far_c - col0 - corners[3][0]
    axis_r = far_r - row0 - corners[3][1]
    if abs(axis_c) > 1e-9 or abs(axis_r) > 1e-9:
        parts.append(
            f"its pixel axes differ from {hsi.name} pixel / {r}, which shifts the far corner of the footprint "
            f"by {axis_c:+.4g} columns and {axis_r:+.4g} rows"
        )
    what = "; ".join(parts) or "it is misaligned"
    return (
        f"the {msi.name} grid is not the {hsi.name} grid subdivided by {r}: {what} ({hsi.describe()}; "
        f"{msi.describe()}); align the rasters (e.g. gdalwarp -tap -tr with the {hsi.name} pixel / {r}) or pass "
        "align='resample' (CLI: --align resample) to warp the MSI onto the subdivided HSI grid"
    )

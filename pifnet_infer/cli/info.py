"""``pifnet-infer info HSI MSI``: both grids, the derived ratio, the alignment verdict and the weights that fit."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register ``info``."""
    parser = subparsers.add_parser(
        "info",
        help="describe an HSI/MSI raster pair: grids, ratio, alignment, fitting weights",
        description="Print the grid (CRS, transform, size, pixel size), bands and data type of both rasters, "
        "the ratio derived from the pixel sizes, whether the MSI grid is the HSI grid subdivided by it "
        "(what `fuse` needs), and which manifest weights fit.",
    )
    parser.add_argument("hsi", metavar="HSI", help="LR hyperspectral raster")
    parser.add_argument("msi", metavar="MSI", help="HR multispectral raster")
    parser.add_argument(
        "--ratio", type=int, metavar="N", help="expected ratio (default: from the pixel sizes)"
    )
    parser.set_defaults(func=run_info)


def _wavelengths(values: tuple[float, ...] | None) -> str:
    if values is None:
        return "unknown"
    return f"{min(values):.1f} .. {max(values):.1f} nm" if len(values) > 1 else f"{values[0]:.1f} nm"


def describe_raster(label: str, path: str, dataset: Any) -> list[str]:
    """Lines describing one raster's grid and bands."""
    from pifnet_infer.io.bands import read_band_info
    from pifnet_infer.io.grids import RasterGrid

    grid = RasterGrid.of(dataset, label)
    band_info = read_band_info(dataset, name=label)
    t = dataset.transform
    xs, ys = grid.pixel_size
    left, bottom, right, top = dataset.bounds
    scales = sorted(set(zip(band_info.scales, band_info.offsets, strict=True)))
    return [
        f"{label}  {path}",
        f"  driver      {dataset.driver}",
        f"  size        {dataset.width} x {dataset.height} px, {dataset.count} bands, {band_info.dtype}",
        f"  CRS         {grid.crs_name}",
        f"  transform   ({t.a:.10g}, {t.b:.10g}, {t.c:.10g}, {t.d:.10g}, {t.e:.10g}, {t.f:.10g})",
        f"  pixel size  {xs:.10g} x {ys:.10g}",
        f"  bounds      left {left:.10g}, bottom {bottom:.10g}, right {right:.10g}, top {top:.10g}",
        f"  wavelengths {_wavelengths(band_info.wavelengths_nm)}",
        f"  nodata      {band_info.nodata}",
        "  scale       " + ", ".join(f"{s:g} (offset {o:g})" for s, o in scales),
    ]


def _fitting_weights(hsi_bands: int, msi_bands: int, ratio: int | None, wavelengths: Any) -> str:
    from pifnet_infer.prepare import fitting_weights

    try:
        fitting, resampled = fitting_weights(hsi_bands, msi_bands, ratio, wavelengths)
    except Exception as err:
        return f"unknown ({type(err).__name__}: {err})"
    if not fitting:
        return (
            f"none for {hsi_bands} HSI bands, {msi_bands} MSI bands, ratio {ratio or 'unknown'} "
            "(select bands with --hsi-bands/--msi-bands, or pass --weights PATH)"
        )
    names = ", ".join(e.name for e in fitting)
    return f"{names} (through band resampling: the HSI bands differ from the weight's grid)" if resampled else names


def run_info(args: argparse.Namespace) -> int:
    """Print the report; exit 0 even when the grids do not fit (the verdict says why)."""
    import contextlib

    from pifnet_infer.errors import GridMismatchError
    from pifnet_infer.io.bands import read_band_info
    from pifnet_infer.io.grids import RasterGrid, derive_ratio, match_grids
    from pifnet_infer.io.rasters import open_raster

    with contextlib.ExitStack() as stack:
        hsi = stack.enter_context(open_raster(args.hsi, "HSI"))
        msi = stack.enter_context(open_raster(args.msi, "MSI"))
        lines = describe_raster("HSI", args.hsi, hsi) + describe_raster("MSI", args.msi, msi)
        hsi_grid, msi_grid = RasterGrid.of(hsi, "HSI"), RasterGrid.of(msi, "MSI")
        ratio: int | None = None
        no_crs = [name for name, dataset in (("HSI", hsi), ("MSI", msi)) if not dataset.crs]
        try:
            if no_crs:
                ratio_text = f"not derived ({' and '.join(no_crs)} without a CRS)"
            elif hsi.crs != msi.crs:
                ratio_text = "not derived (the CRS differ)"
            else:
                ratio = derive_ratio(hsi_grid, msi_grid, args.ratio)
                ratio_text = str(ratio)
        except GridMismatchError as err:
            ratio_text = f"none: {err}"
        lines.append(f"ratio       {ratio_text}")
        try:
            pair = match_grids(hsi_grid, msi_grid, args.ratio)
            w = pair.msi_window
            (height, width), (xs, ys) = (
                pair.hr_shape,
                RasterGrid(pair.crs, pair.out_transform, 1, 1).pixel_size,
            )
            verdict = (
                f"aligned: MSI window rows {w.row_off}..{w.row_end}, cols {w.col_off}..{w.col_end}; "
                f"output {width} x {height} px, pixel {xs:.10g} x {ys:.10g}"
            )
        except GridMismatchError as err:
            verdict = f"not aligned: {err}"
        lines.append(f"alignment   {verdict}")
        wavelengths = read_band_info(hsi, name="HSI").wavelengths_nm
        lines.append(f"weights     {_fitting_weights(hsi.count, msi.count, ratio, wavelengths)}")
    print("\n".join(lines))
    return 0

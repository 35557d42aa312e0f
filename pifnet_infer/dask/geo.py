"""xarray in and out of :func:`~pifnet_infer.dask.fuse_dask`: dims, coordinates at HR resolution, CRS.

Pixel coordinates are pixel centres (rioxarray's convention). With LR centre spacing ``d`` and
ratio ``r``, the HR centres are spaced ``d / r`` and the first one sits ``(r - 1) / 2`` HR pixels
before the first LR centre, so both grids share their outer edges. The CRS and the transform are
written with rioxarray when it is installed; without it, coordinates and attributes are still kept.

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pifnet_infer._utils.optional import try_import
from pifnet_infer.errors import GridMismatchError, ShapeMismatchError

_logger = logging.getLogger(__name__)

DIMS = ("band", "y", "x")
#: HR coordinates of the MSI may differ from the expected ones by this fraction of an HR pixel
COORD_TOLERANCE = 1e-3


def is_dataarray(value: Any) -> bool:
    """True for an ``xarray.DataArray`` (without importing xarray when it is absent)."""
    xr = try_import("xarray")
    return xr is not None and isinstance(value, xr.DataArray)


def check_dims(array: Any, name: str) -> None:
    """Refuse DataArrays whose dims are not ``("band", "y", "x")``, naming the fix."""
    if tuple(array.dims) == DIMS:
        return
    fix = (
        f"call {name}.transpose('band', 'y', 'x')"
        if set(array.dims) == set(DIMS)
        else f"rename them, e.g. {name}.rename({{...}}) (rioxarray.open_rasterio gives {DIMS})"
    )
    raise ShapeMismatchError(f"{name} must have dims {DIMS}, got {tuple(array.dims)}; {fix}")


def _spacing(array: Any, dim: str, name: str) -> tuple[float, float] | None:
    """(first centre, signed spacing) of a regular coordinate, or None when ``dim`` has no coordinate."""
    if dim not in array.coords:
        return None
    values = np.asarray(array.coords[dim].values, dtype=np.float64)
    if values.size >= 2:
        steps = np.diff(values)
        if not np.allclose(steps, steps[0], rtol=1e-6, atol=0.0) or steps[0] == 0:
            raise GridMismatchError(
                f"{name} has irregular {dim!r} coordinates (steps {steps.min():.6g}..{steps.max():.6g}); "
                "fusion needs a regular pixel grid: resample it first (e.g. rioxarray's rio.reproject)"
            )
        return float(values[0]), float(steps[0])
    rio = getattr(array, "rio", None) if try_import("rioxarray") is not None else None
    if rio is not None:
        res_x, res_y = rio.resolution()
        return float(values[0]), float(res_y if dim == "y" else res_x)
    raise GridMismatchError(
        f"{name} has a single {dim!r} coordinate, so its pixel size is unknown; install rioxarray and write a "
        "transform (rio.write_transform), or drop the coordinate"
    )


def hr_coords(lr_hsi: Any, ratio: int) -> dict[str, np.ndarray]:
    """HR pixel-centre coordinates for the ``y``/``x`` coordinates ``lr_hsi`` has."""
    coords = {}
    for dim in ("y", "x"):
        found = _spacing(lr_hsi, dim, "lr_hsi")
        if found is None:
            continue
        first, step = found
        hr_step = step / ratio
        start = first - (ratio - 1) / 2 * hr_step
        coords[dim] = start + np.arange(lr_hsi.sizes[dim] * ratio) * hr_step
    return coords


def check_msi_grid(hr_msi: Any, expected: dict[str, np.ndarray]) -> None:
    """The MSI's ``y``/``x`` coordinates (where it has them) must be the HSI's grid subdivided by the ratio."""
    for dim, values in expected.items():
        if dim not in hr_msi.coords:
            continue
        got = np.asarray(hr_msi.coords[dim].values, dtype=np.float64)
        step = abs(values[1] - values[0]) if values.size > 1 else 1.0
        worst = float(np.max(np.abs(got - values))) / step
        if worst > COORD_TOLERANCE:
            raise GridMismatchError(
                f"hr_msi's {dim!r} coordinates are off the lr_hsi grid subdivided by the ratio by up to "
                f"{worst:.3g} HR pixels (first centre {got[0]!r}, expected {values[0]!r}); crop or resample the "
                "MSI onto it first, e.g. hr_msi.rio.reproject_match(template) with a template on that grid"
            )


def check_crs(lr_hsi: Any, hr_msi: Any) -> Any:
    """The HSI's CRS (None without rioxarray or without a CRS); the MSI's must be the same when it has one."""
    if try_import("rioxarray") is None:
        return None
    crs, other = lr_hsi.rio.crs, hr_msi.rio.crs
    if crs is not None and other is not None and crs != other:
        raise GridMismatchError(
            f"lr_hsi has CRS {crs} but hr_msi has {other}; reproject one onto the other's grid first "
            "(rioxarray: hr_msi.rio.reproject_match(...))"
        )
    return crs


def hr_dataarray(
    data: Any, lr_hsi: Any, ratio: int, coords: dict[str, np.ndarray], crs: Any, nodata: float | None
) -> Any:
    """Wrap the HR result ``data`` (band, y, x) like ``lr_hsi``: band coordinates, scalar coordinates, attrs, CRS.

    The input's ``_FillValue`` attribute is replaced by the value the output holds at missing pixels
    (``nodata``, NaN when None), written with rioxarray when it is installed.
    """
    import xarray as xr

    kept = {}
    for key, coord in lr_hsi.coords.items():
        if "y" in coord.dims or "x" in coord.dims:
            if key not in ("y", "x"):
                _logger.info(
                    "fuse_dask: coordinate %r lies on the LR grid and is dropped from the output", key
                )
            continue
        kept[key] = coord
    attrs = {k: v for k, v in lr_hsi.attrs.items() if k != "_FillValue"}
    out = xr.DataArray(data, dims=DIMS, coords={**kept, **coords}, attrs=attrs, name=lr_hsi.name)
    if try_import("rioxarray") is None:
        return out
    out = out.rio.write_nodata(np.nan if nodata is None else nodata, encoded=False)
    if crs is not None:
        from affine import Affine

        out = out.rio.write_crs(crs)
        out = out.rio.write_transform(lr_hsi.rio.transform() @ Affine.scale(1 / ratio))
    return out

"""``fuse_dask()``: fusion of Dask arrays or xarray DataArrays, one Dask task per output block.

Dask is one more Source/Sink for the same engine (``DESIGN.md``). The output's blocks are the
LR-HSI's spatial chunks times the ratio. Each block is computed by
:func:`~pifnet_infer.tiling.runner.run_tiles` over its tile region (:mod:`pifnet_infer.dask.blocks`):
the tiles of ``fuse()``'s whole-scene grid that touch the block, read from the block plus the halo
``dask.array.map_overlap`` hands it, through the same ArraySource/ArraySink as ``fuse()``. Tile
inputs, blend weights and the order in which tiles add up are those of ``fuse()``, so the blocks
equal it (exactly on CPU with batch 1; within the model's batch noise otherwise), whatever the
chunking.

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from pifnet_infer._utils.device import DTypeArg, resolve_device, resolve_dtype
from pifnet_infer._utils.optional import require
from pifnet_infer.dask import geo
from pifnet_infer.dask.blocks import AxisTiles, axis_tiles, chunk_bounds
from pifnet_infer.dask.workers import model_key, model_token, worker_batch_size, worker_model
from pifnet_infer.errors import ShapeMismatchError
from pifnet_infer.fusion import ScaleArg, scale_pair
from pifnet_infer.prepare import (
    ModelArg,
    affine_range,
    check_batch_size,
    check_input_range,
    model_input_affine,
    output_guard,
    resolve_model,
    resolve_tiling,
)
from pifnet_infer.tiling.array_io import ArrayInput, ArraySink, ArraySource, array_postprocess, band_fill
from pifnet_infer.tiling.runner import run_tiles

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Scan:
    """What one pass over an input found (see :func:`_scan`).

    Attributes:
        fill: per-band fill values, None when nothing is missing.
        low, high: float64 (bands,) minimum and maximum of each band's valid values (NaN for an empty band).
    """

    fill: tuple[float, ...] | None
    low: np.ndarray
    high: np.ndarray


@dataclass(frozen=True)
class BlockPlan:
    """Everything a block task needs besides its pixels and the model (small: travels with every task).

    Attributes:
        lr_shape: (h, w) of the LR scene.
        ratio: LR -> HR factor.
        tile_size, overlap: resolved HR tiling.
        depth: LR halo ``map_overlap`` adds on each side along rows and columns (one tile; 0 for an
            axis in one chunk).
        row_bounds, col_bounds: LR chunk boundaries of the output's blocks.
        lr_affine, msi_affine: (scale, offset) from stored values to the model's input.
        nodata: stored value of missing pixels (NaN always counts as missing).
        lr_fill, msi_fill: per-band stored values written at missing pixels (scene means of the valid
            pixels, as ``fuse()``), None when the input has no missing pixel.
        lr_range: (min, max) of the LR-HSI's valid values in the model's input units (the output check).
        device: ``"auto"`` (resolved on the worker) or a device string.
        dtype: autocast dtype argument, resolved on the worker.
        batch_size: tiles per forward pass or ``"auto"``.
        token: the model's token (worker cache key).
    """

    lr_shape: tuple[int, int]
    ratio: int
    tile_size: int
    overlap: int
    depth: tuple[int, int]
    row_bounds: tuple[int, ...]
    col_bounds: tuple[int, ...]
    lr_affine: tuple[float, float]
    msi_affine: tuple[float, float]
    nodata: float | None
    lr_fill: tuple[float, ...] | None
    msi_fill: tuple[float, ...] | None
    lr_range: tuple[float, float]
    device: str
    dtype: DTypeArg
    batch_size: int | Literal["auto"]
    token: str

    def axes(self) -> tuple[AxisTiles, AxisTiles]:
        """The scene's tiles along rows and columns."""
        blend = "cosine" if self.overlap else "none"
        return (
            axis_tiles(self.lr_shape[0], self.ratio, self.tile_size, self.overlap, blend),
            axis_tiles(self.lr_shape[1], self.ratio, self.tile_size, self.overlap, blend),
        )


def _invalid(block: np.ndarray, nodata: float | None) -> np.ndarray | None:
    """Bool (bands, H, W): NaN or ``nodata`` (as :func:`~pifnet_infer.tiling.array_io.scan_array`), None if none."""
    bad = np.isnan(block) if block.dtype.kind == "f" else np.zeros(block.shape, dtype=bool)
    if nodata is not None and not np.isnan(nodata):
        bad |= block == nodata
    return bad if bad.any() else None


def _input(
    block: np.ndarray, affine: tuple[float, float], fill: tuple[float, ...] | None, nodata: float | None
) -> ArrayInput:
    invalid = None if fill is None else _invalid(block, nodata)
    return ArrayInput(block, "chw", affine[0], affine[1], invalid, None if fill is None else np.asarray(fill))


def fuse_block(
    lr_block: np.ndarray,
    msi_block: np.ndarray,
    *,
    plan: BlockPlan,
    model: nn.Module,
    block_id: tuple[int, int, int],
) -> np.ndarray:
    """One output block: the engine over the block's tile region, cropped to the block.

    ``lr_block``/``msi_block`` are the block with ``map_overlap``'s halo (none past the scene border).
    Returns float32 (C, r*rows, r*cols) in the LR-HSI's stored units.
    """
    r = plan.ratio
    device = resolve_device(plan.device)
    net = worker_model(model, plan.token, device)
    dtype = resolve_dtype(plan.dtype, device)
    regions = []
    for axis, bounds, depth, index, got in zip(
        plan.axes(),
        (plan.row_bounds, plan.col_bounds),
        plan.depth,
        block_id[1:],
        lr_block.shape[1:],
        strict=True,
    ):
        start, stop = bounds[index], bounds[index + 1]
        halo0 = max(0, start - depth)
        if got != min(axis.size, stop + depth) - halo0:
            raise RuntimeError(f"internal error: block {block_id} arrived with {got} LR pixels along an axis")
        v0, v1 = axis.region(start, stop)
        regions.append((start, stop, v0 - halo0, v1 - halo0, v0))
    (s0, s1, y0, y1, vy), (t0, t1, x0, x1, vx) = regions
    source = ArraySource(
        _input(lr_block[:, y0:y1, x0:x1], plan.lr_affine, plan.lr_fill, plan.nodata),
        _input(msi_block[:, r * y0 : r * y1, r * x0 : r * x1], plan.msi_affine, plan.msi_fill, plan.nodata),
        r,
    )
    bands = lr_block.shape[0]
    sink = ArraySink(
        None,
        (bands, r * (y1 - y0), r * (x1 - x0)),
        postprocess=output_guard(array_postprocess(source, np.dtype("float32"), plan.nodata), plan.lr_range),
    )
    batch = worker_batch_size(
        net, plan.token, source, plan.tile_size, plan.batch_size, device=device, dtype=dtype
    )
    run_tiles(
        net, source, sink, tile_size=plan.tile_size, overlap=plan.overlap, batch_size=batch, device=device,
        dtype=dtype, progress=False,
    )  # fmt: skip
    return sink.out[:, r * (s0 - vy) : r * (s1 - vy), r * (t0 - vx) : r * (t1 - vx)].copy()


def _as_dask(value: Any, name: str) -> tuple[Any, Any]:
    """(dask array, DataArray or None) of an input; refuses anything else with the fix."""
    da = require("dask.array", extra="dask")
    if geo.is_dataarray(value):
        geo.check_dims(value, name)
        if not isinstance(value.data, da.Array):
            raise TypeError(
                f"{name} is an in-memory DataArray; open it chunked (rioxarray.open_rasterio(path, chunks=...)) or "
                f"call {name}.chunk({{'y': 1024, 'x': 1024}}) first, or use pifnet_infer.fuse on its values"
            )
        return value.data, value
    if isinstance(value, da.Array):
        return value, None
    raise TypeError(
        f"{name} must be a dask array or an xarray DataArray, got {type(value).__name__}; wrap arrays with "
        "dask.array.from_array(a, chunks=...) or use pifnet_infer.fuse for arrays in memory"
    )


def _check_shapes(lr: Any, msi: Any, scale: ScaleArg) -> tuple[int, int, int]:
    """(ratio, hsi_bands, msi_bands) from shapes and dtypes alone, before any pixel is read."""
    for name, a in (("lr_hsi", lr), ("hr_msi", msi)):
        if a.ndim != 3:
            raise ShapeMismatchError(f"{name} must be 3-D (bands, height, width), got shape {a.shape}")
        if 0 in a.shape:
            raise ShapeMismatchError(f"{name} is empty: shape {a.shape}")
        if a.dtype.kind not in "fiu":
            raise ValueError(f"{name} must hold real numbers (float or int), got dtype {a.dtype}")
        if a.dtype.kind in "iu" and scale is None:
            raise ValueError(
                f"{name} has integer dtype {a.dtype}; pass scale= (and offset=) converting it to the model's "
                "units, e.g. scale=1e-4 for reflectance stored x10000"
            )
    (_, h, w), (_, big_h, big_w) = lr.shape, msi.shape
    if h * w == 1:
        raise ShapeMismatchError(f"lr_hsi has a single pixel (shape {lr.shape}); fusion needs an image")
    if big_h % h or big_w % w or big_h // h != big_w // w:
        raise ShapeMismatchError(
            f"hr_msi {(big_h, big_w)} must be r times lr_hsi {(h, w)} on both axes for one integer r; "
            f"the shapes imply r = {big_h / h:.4g} x {big_w / w:.4g}; crop the MSI to the HSI's footprint"
        )
    return big_h // h, int(lr.shape[0]), int(msi.shape[0])


def _scan(arrays: list[tuple[Any, str]], nodata: float | None) -> list[_Scan]:
    """One streamed pass over each input, computed now: refuse infinite values and inputs without valid pixel;
    per-band means of the valid pixels (float64), used to fill missing pixels exactly as ``fuse()`` does."""
    import dask
    import dask.array as da

    lazy = []
    for x, _ in arrays:
        xf = x.astype(np.float64)
        bad = da.isnan(xf)
        infinite = da.isinf(xf)
        if nodata is not None and not np.isnan(nodata):
            bad = bad | (xf == nodata)
            infinite = infinite & (xf != nodata)
        lazy.append((
            infinite.sum(), bad.sum(axis=(1, 2)), da.where(bad, 0.0, xf).sum(axis=(1, 2)),
            da.where(bad, np.inf, xf).min(axis=(1, 2)), da.where(bad, -np.inf, xf).max(axis=(1, 2)),
        ))  # fmt: skip
    results = []
    for (x, name), (n_inf, n_bad, total, low, high) in zip(arrays, dask.compute(*lazy), strict=True):
        if n_inf:
            raise ValueError(
                f"{name} contains infinite values; replace them with NaN or a nodata value and pass nodata="
            )
        n_valid = x.shape[1] * x.shape[2] - np.asarray(n_bad)
        fill = band_fill(np.asarray(total), n_valid, name=name, nodata=nodata, pass_through=name == "lr_hsi")
        empty = n_valid == 0
        low, high = np.where(empty, np.nan, low), np.where(empty, np.nan, high)
        results.append(_Scan(tuple(float(v) for v in fill) if np.any(n_bad) else None, low, high))
    return results


def _spatial_chunks(lr: Any, depth: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """LR row/column chunks of the output: the LR-HSI's, with chunks shorter than the halo merged (map_overlap
    needs it); an axis shorter than the halo becomes one chunk."""
    from dask.array.overlap import ensure_minimum_chunksize

    return tuple(
        chunks
        if len(chunks) == 1
        else (sum(chunks),)
        if sum(chunks) <= depth
        else ensure_minimum_chunksize(depth, chunks)
        for chunks in lr.chunks[1:]
    )  # type: ignore[return-value]


def fuse_dask(
    lr_hsi: Any,
    hr_msi: Any,
    model: ModelArg = "auto",
    *,
    tile_size: int | Literal["auto"] = "auto",
    overlap: int | Literal["auto"] = "auto",
    batch_size: int | Literal["auto"] = "auto",
    device: str | torch.device = "auto",
    dtype: DTypeArg = "auto",
    scale: ScaleArg = None,
    offset: ScaleArg = None,
    nodata: float | None = None,
) -> Any:
    """Fuse a chunked LR-HSI with an HR-MSI into a lazy HR-HSI: one Dask task per output block.

    Values, tiling and blending are those of :func:`pifnet_infer.fuse` on the same arrays: each block
    runs the tiles of ``fuse()``'s whole-scene grid that touch it (with the halo ``map_overlap`` hands
    it) and keeps its own pixels, so the chunking changes the cost, not the result (tiles straddling
    block edges run once per block they touch; see :func:`~pifnet_infer.dask.tile_overhead`).

    Before the graph is built, the model is resolved and checked against the inputs, and one streamed
    pass over both inputs (computed with the current Dask scheduler) refuses infinite values and
    finds the band means used to fill missing pixels, as ``fuse()`` does. The model goes into the
    graph once; each worker unpickles it once and moves it to its own device once
    (:mod:`pifnet_infer.dask.workers`).

    On a GPU worker that runs out of memory, the engine halves the batch and then the tile size for that
    block (logged), which changes that block's tiling: size ``batch_size``/``tile_size`` to the GPUs.

    Memory per task: the block with a one-tile halo on each side, the model, a float32 output buffer
    for the block's tile region ((C + 1) x region pixels x 4 bytes) and ``batch_size`` tiles of activations.

    Args:
        lr_hsi: the LR-HSI (C, h, w): a dask array, or a dask-backed ``xarray.DataArray`` with dims
            ``("band", "y", "x")`` (e.g. ``rioxarray.open_rasterio(path, chunks=...)``). Float (reflectance)
            or integer with ``scale``; NaN or ``nodata`` marks missing pixels. Its spatial chunks set the
            output's blocks (times the ratio); chunks shorter than one LR tile are merged with a neighbour.
        hr_msi: the HR-MSI (c, r*h, r*w), same kind as ``lr_hsi``; rechunked to match it. A DataArray's
            ``y``/``x`` coordinates, when present, must be the HSI grid subdivided by r.
        model: a loaded PIFNet (or any module with a PIFNet ``.config``), a manifest name, a ``.safetensors``
            path, or ``"auto"``; resolved on the client, shipped to the workers inside the graph.
        tile_size: HR tile side, a multiple of 2*r; ``"auto"`` as in ``fuse()``.
        overlap: HR overlap, a multiple of 2*r; ``"auto"`` as in ``fuse()``.
        batch_size: tiles per forward pass; ``"auto"``: probed once per worker on CUDA, 1 on CPU.
        device: ``"auto"`` (each worker's own CUDA device when it has one, else CPU) or a device.
        dtype: ``"auto"``, ``"float32"``, ``"bfloat16"`` or ``"float16"``, resolved per worker as in ``fuse()``.
        scale: stored -> physical units, a number or an (hsi, msi) pair; required for integer inputs.
        offset: see ``scale``.
        nodata: stored value of missing pixels; they are filled for the network and written back as
            ``nodata`` (NaN when None) wherever they touch the output, as in ``fuse()``.

    Returns:
        A lazy float32 (C, r*h, r*w) dask array, or for DataArray inputs a DataArray with dims
        ``("band", "y", "x")``, the HSI's band and scalar coordinates and attributes, ``y``/``x`` at HR
        pixel centres, and (with rioxarray) the HSI's CRS, its transform scaled by 1/r and the output's
        nodata (``nodata``, NaN when None).

    Raises:
        TypeError: inputs that are not dask arrays or dask-backed DataArrays, or of different kinds.
        ShapeMismatchError: wrong dims, ndim or sizes; a model that does not fit the bands or ratio.
        GridMismatchError: DataArray coordinates or CRS that do not line up.
        ValueError: integer inputs without ``scale``, infinite values, no valid pixel, bad tiling arguments.

    Example:
        >>> hsi = rioxarray.open_rasterio("hsi.tif", chunks={"y": 512, "x": 512})  # doctest: +SKIP
        >>> msi = rioxarray.open_rasterio("msi.tif", chunks={"y": 2048, "x": 2048})  # doctest: +SKIP
        >>> fuse_dask(hsi, msi, model="pifnet-vnir-rgb-x4").to_zarr("fused.zarr")  # doctest: +SKIP

    .. versionadded:: 0.1
    """
    da = require("dask.array", extra="dask")
    lr, lr_xr = _as_dask(lr_hsi, "lr_hsi")
    msi, msi_xr = _as_dask(hr_msi, "hr_msi")
    if (lr_xr is None) != (msi_xr is None):
        raise TypeError("lr_hsi and hr_msi must both be dask arrays or both DataArrays")
    ratio, hsi_bands, msi_bands = _check_shapes(lr, msi, scale)
    coords, crs = {}, None
    if lr_xr is not None:
        coords = geo.hr_coords(lr_xr, ratio)
        geo.check_msi_grid(msi_xr, coords)
        crs = geo.check_crs(lr_xr, msi_xr)
    check_batch_size(batch_size)
    resolve_dtype(dtype, torch.device("cpu"))  # refuses bad names now; resolved per worker later
    if device != "auto":
        resolve_device(device)
    net, _ = resolve_model(
        model, hsi_bands=hsi_bands, msi_bands=msi_bands, ratio=ratio,
        device="auto" if isinstance(model, nn.Module) else "cpu",
    )  # fmt: skip
    h, w = lr.shape[1:]
    tile, lap = resolve_tiling(tile_size, overlap, ratio, (h * ratio, w * ratio))
    (s_hsi, s_msi), (o_hsi, o_msi) = scale_pair(scale, 1.0, "scale"), scale_pair(offset, 0.0, "offset")
    if 0.0 in (s_hsi, s_msi):
        raise ValueError(f"scale must be non-zero, got {scale!r}")
    lr_scan, msi_scan = _scan([(lr, "lr_hsi"), (msi, "hr_msi")], nodata)

    rows, cols = _spatial_chunks(lr, tile // ratio)
    depth = (0 if len(rows) == 1 else tile // ratio, 0 if len(cols) == 1 else tile // ratio)
    lr = lr.rechunk(((hsi_bands,), rows, cols))
    msi = msi.rechunk(((msi_bands,), tuple(r * ratio for r in rows), tuple(c * ratio for c in cols)))
    for scan, name, s, o in ((lr_scan, "lr_hsi", s_hsi, o_hsi), (msi_scan, "hr_msi", s_msi, o_msi)):
        check_input_range(
            net, affine_range(scan.low, scan.high, s, o), name=name, scale=None if scale is None else s
        )
    token = model_token(net)
    m_a, m_b = model_input_affine(net)
    plan = BlockPlan(
        (int(h), int(w)), ratio, tile, lap, depth, chunk_bounds(rows), chunk_bounds(cols),
        (s_hsi * m_a, o_hsi * m_a + m_b), (s_msi * m_a, o_msi * m_a + m_b), nodata, lr_scan.fill, msi_scan.fill,
        affine_range(lr_scan.low, lr_scan.high, s_hsi * m_a, o_hsi * m_a + m_b), str(device), dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch."), batch_size, token,
    )  # fmt: skip
    _logger.info("fuse_dask: LR %dx%d, %dx%d blocks, tiles of %d px, overlap %d, model %s",
                 h, w, len(rows), len(cols), tile, lap, token[:12])  # fmt: skip
    out = da.map_overlap(
        fuse_block, lr, msi,
        depth=[{0: 0, 1: depth[0], 2: depth[1]}, {0: 0, 1: depth[0] * ratio, 2: depth[1] * ratio}],
        boundary="none", trim=False, align_arrays=False, allow_rechunk=False,
        chunks=((hsi_bands,), tuple(r * ratio for r in rows), tuple(c * ratio for c in cols)),
        dtype=np.float32, meta=np.empty((0, 0, 0), dtype=np.float32),
        plan=plan, model=model_key(net, token), token="pifnet-fuse",
    )  # fmt: skip
    if lr_xr is None:
        return out
    return geo.hr_dataarray(out, lr_xr, ratio, coords, crs, nodata)

"""Scale-out with Dask: fuse chunked rasters and many scenes on a cluster (extra ``[dask]``).

- :func:`fuse_dask`: a lazy HR-HSI from dask arrays or xarray DataArrays, equal to ``fuse()``.
- :func:`fuse_to_zarr`: the same, written to a Zarr store atomically (a mosaic).
- :func:`fuse_many`: one task per scene pair on a ``distributed`` client, GeoTIFF outputs written
  atomically, existing valid outputs skipped, a report of what was done, skipped and failed.
- :func:`tile_overhead`: the cost of a chunking, in tiles computed per tile of the scene.

Dask is one more Source/Sink of the same tiling engine; see ``docs/dask.md`` and ``docs/scaling.md``.

.. versionadded:: 0.1
"""

from __future__ import annotations

from pifnet_infer._utils.optional import require

require("dask.array", extra="dask")

from pifnet_infer.dask.arrays import fuse_dask  # noqa: E402
from pifnet_infer.dask.blocks import tile_overhead  # noqa: E402
from pifnet_infer.dask.many import FuseManyReport, SceneResult, fuse_many, verify_output  # noqa: E402
from pifnet_infer.dask.zarr_store import fuse_to_zarr  # noqa: E402

__all__ = [
    "FuseManyReport",
    "SceneResult",
    "fuse_dask",
    "fuse_many",
    "fuse_to_zarr",
    "tile_overhead",
    "verify_output",
]

"""A fused mosaic written to a Zarr store, all at once or not at all: :func:`fuse_to_zarr`.

The store is written into a private temporary folder beside the target (same file system) and
renamed to the target when every block is written; a failed or interrupted run leaves no store
at the target (the temporary folder is removed, except after a hard kill of the client).

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pifnet_infer._utils.optional import require
from pifnet_infer.dask.arrays import fuse_dask
from pifnet_infer.dask.geo import is_dataarray
from pifnet_infer.prepare import ModelArg

_logger = logging.getLogger(__name__)

#: variable name of the result in the store when the output DataArray has no name
VARIABLE = "hr_hsi"


def _uniform(result: Any) -> Any:
    """``result`` rechunked to Zarr's rule (equal chunks, the last may be smaller) when its blocks break it."""
    rows, cols = result.chunks[1:]
    if all(len(set(c[:-1])) <= 1 and c[-1] <= c[0] for c in (rows, cols)):
        return result
    size = {"y": rows[0], "x": cols[0]}
    _logger.info("fuse_to_zarr: blocks rechunked to %dx%d for Zarr", rows[0], cols[0])
    return result.chunk(size) if is_dataarray(result) else result.rechunk((result.shape[0], rows[0], cols[0]))


def _check_target(out: Path, overwrite: bool) -> None:
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output folder {str(out.parent)!r} does not exist; create it first")
    if out.exists() and not overwrite:
        raise FileExistsError(f"output {str(out)!r} already exists; pass overwrite=True to replace it")


def fuse_to_zarr(
    lr_hsi: Any,
    hr_msi: Any,
    out_path: str | os.PathLike[str],
    model: ModelArg = "auto",
    *,
    overwrite: bool = False,
    **options: Any,
) -> Path:
    """Fuse with :func:`~pifnet_infer.dask.fuse_dask` and write the result to a Zarr store atomically.

    Computes with the current Dask scheduler (a ``distributed.Client`` when one is active); workers
    write their blocks straight into the store, so the output folder must be reachable from them.

    Args:
        lr_hsi: as :func:`~pifnet_infer.dask.fuse_dask`.
        hr_msi: as :func:`~pifnet_infer.dask.fuse_dask`.
        out_path: the Zarr store (a folder) to create.
        model: as :func:`~pifnet_infer.dask.fuse_dask`.
        overwrite: replace an existing store (only once the new one is complete).
        **options: other keywords of :func:`~pifnet_infer.dask.fuse_dask`.

    Returns:
        The absolute path of the store. DataArray results are stored as a Dataset with one variable
        (the DataArray's name, else ``"hr_hsi"``) and their coordinates; arrays as a single Zarr array.

    Raises:
        FileExistsError: the store exists and ``overwrite`` is False.
        FileNotFoundError: the output's folder does not exist.

    .. versionadded:: 0.1
    """
    require("zarr", extra="dask")
    out = Path(out_path).expanduser().absolute()
    _check_target(out, overwrite)
    result = _uniform(fuse_dask(lr_hsi, hr_msi, model, **options))
    folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".pifnet-tmp", dir=out.parent))
    try:
        store = folder / out.name
        if is_dataarray(result):
            result.to_dataset(name=result.name or VARIABLE).to_zarr(store, mode="w-")
        else:
            result.to_zarr(str(store))
        _check_target(out, overwrite)
        if out.exists():
            old = folder / "replaced"
            os.replace(out, old)
        os.replace(store, out)
        _logger.info("wrote %s", out)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return out

"""The tiling engine: tile grids, blend windows, Sources/Sinks and the runner.

.. versionadded:: 0.1
"""

from __future__ import annotations

from pifnet_infer.tiling.array_io import ArrayInput, ArraySink, ArraySource
from pifnet_infer.tiling.blend import BlendMode, BlendWindows
from pifnet_infer.tiling.grid import Tile, TileGrid
from pifnet_infer.tiling.protocols import RowPostprocess, Sink, Source, Window
from pifnet_infer.tiling.runner import RunStats, auto_batch_size, run_tiles

__all__ = [
    "ArrayInput",
    "ArraySink",
    "ArraySource",
    "BlendMode",
    "BlendWindows",
    "RowPostprocess",
    "RunStats",
    "Sink",
    "Source",
    "Tile",
    "TileGrid",
    "Window",
    "auto_batch_size",
    "run_tiles",
]

"""Which tiles of the scene's tile grid each Dask block needs: pure window arithmetic.

``fuse()`` lays one :class:`~pifnet_infer.tiling.grid.TileGrid` over the whole scene. A Dask
output block gets exactly ``fuse()``'s values when it is computed from the tiles of that same
grid that touch it, blended with the same windows. Those tiles form a contiguous run of tile
rows and columns; the LR region they cover (the block's *tile region*) is a sub-scene whose own
``TileGrid`` is the scene's grid restricted to it, so the engine can run on the region as if it
were a scene: every pixel of the block then receives the same tiles with the same weights as in
``fuse()``. Tiles of the region that do not touch the block only fill the halo, which is dropped.

.. versionadded:: 0.1
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from pifnet_infer.tiling.blend import BlendMode, axis_weights
from pifnet_infer.tiling.grid import axis_origins


@dataclass(frozen=True, slots=True)
class AxisTiles:
    """The tiles of a scene's grid along one axis.

    Attributes:
        size: LR length of the axis.
        ratio: LR -> HR factor.
        lr_tile: tile length in LR pixels.
        lr_stride: step between regular tile origins in LR pixels.
        origins: LR tile origins (as :func:`~pifnet_infer.tiling.grid.axis_origins`).
        spans: for each tile, the HR span ``[start, stop)`` its blend weight covers (> 0 there).
    """

    size: int
    ratio: int
    lr_tile: int
    lr_stride: int
    origins: tuple[int, ...]
    spans: tuple[tuple[int, int], ...]

    def touching(self, start: int, stop: int) -> range:
        """Indices of the tiles whose blend span meets the LR block ``[start, stop)``."""
        b0, b1 = start * self.ratio, stop * self.ratio
        hits = [k for k, (s, e) in enumerate(self.spans) if s < b1 and e > b0]
        if not hits:
            raise ValueError(f"no tile covers LR pixels [{start}, {stop}) of an axis of {self.size}")
        return range(hits[0], hits[-1] + 1)

    def region(self, start: int, stop: int) -> tuple[int, int]:
        """LR tile region ``[r0, r1)`` of the block ``[start, stop)``: the extent of the tiles touching it.

        A scene shorter than a tile has one tile that runs past it: its region is the whole axis (the
        engine mirrors the outside exactly as ``fuse()`` does).

        Raises:
            RuntimeError: the region's own grid is not the scene's grid restricted to it (cannot happen
                for grids built by :func:`~pifnet_infer.tiling.grid.axis_origins`; checked anyway).
        """
        tiles = self.touching(start, stop)
        r0 = self.origins[tiles[0]]
        r1 = min(self.origins[tiles[-1]] + self.lr_tile, self.size)
        expected = [self.origins[k] - r0 for k in tiles]
        if axis_origins(r1 - r0, self.lr_tile, self.lr_stride) != expected:
            raise RuntimeError(
                f"internal error: the tile region [{r0}, {r1}) of block [{start}, {stop}) does not reproduce "
                f"the scene's tile origins {expected}"
            )
        return r0, r1


@functools.lru_cache(maxsize=64)
def axis_tiles(size: int, ratio: int, tile_size: int, overlap: int, blend: BlendMode) -> AxisTiles:
    """The tiles along an axis of ``size`` LR pixels (``tile_size``/``overlap`` in HR pixels, as ``TileGrid``)."""
    lr_tile, lr_stride = tile_size // ratio, (tile_size - overlap) // ratio
    origins = axis_origins(size, lr_tile, lr_stride)
    weights = axis_weights([o * ratio for o in origins], tile_size, size * ratio, blend)
    return AxisTiles(
        size, ratio, lr_tile, lr_stride, tuple(origins), tuple((start, stop) for start, stop, _ in weights)
    )


def chunk_bounds(chunks: Sequence[int]) -> tuple[int, ...]:
    """``(0, c0, c0 + c1, ...)``: the boundaries of a Dask chunk tuple."""
    return (0, *itertools.accumulate(int(c) for c in chunks))


def tile_overhead(
    lr_shape: tuple[int, int],
    lr_chunks: tuple[Sequence[int], Sequence[int]],
    *,
    ratio: int,
    tile_size: int,
    overlap: int,
) -> float:
    """Tiles computed by a chunked run per tile of the whole-scene grid (1.0 = no overhead).

    Each block computes every tile that touches it, so tiles straddling block edges run more
    than once. Use it to pick chunk sizes: the overhead falls as blocks grow relative to tiles.

    Args:
        lr_shape: (h, w) of the LR scene.
        lr_chunks: LR chunk lengths along rows and columns (Dask's ``chunks[1:]`` of the LR-HSI).
        ratio: LR -> HR factor.
        tile_size: HR tile side (resolved, not ``"auto"``).
        overlap: HR overlap (resolved).

    Returns:
        (tiles computed over all blocks) / (tiles of the scene's grid).

    Example:
        >>> round(tile_overhead((256, 256), ((64,) * 4, (64,) * 4), ratio=4, tile_size=128, overlap=32), 2)
        1.62

    .. versionadded:: 0.1
    """
    blend: BlendMode = "cosine" if overlap else "none"
    per_axis = []
    for size, chunks in zip(lr_shape, lr_chunks, strict=True):
        axis = axis_tiles(int(size), ratio, tile_size, overlap, blend)
        bounds = chunk_bounds(chunks)
        if bounds[-1] != size:
            raise ValueError(f"chunks {tuple(chunks)} do not add up to the axis length {size}")
        computed = sum(len(axis.touching(a, b)) for a, b in itertools.pairwise(bounds))
        per_axis.append(computed / len(axis.origins))
    return per_axis[0] * per_axis[1]

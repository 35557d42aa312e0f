"""Blend windows: the weight every tile gives each HR pixel it covers.

Two modes, one implementation (separable: row weights times column weights):

- ``"cosine"``: where two neighbouring tiles overlap, one fades in and the other
  fades out over the whole overlap with a half-pixel-shifted raised cosine, so
  the two weights sum to 1 and both stay > 0. Tile edges on the scene border
  keep weight 1 (nothing to blend with there). Weights are therefore positive
  everywhere and, for the usual two-tile overlaps, already a partition of
  unity; the Sink still divides by the weight sum, which covers the rare pixel
  seen by three tiles along one axis (a flush last tile with a large overlap).
- ``"none"``: the official protocol's overwrite stitching (spec section 12):
  each tile keeps only the pixels no later tile covers, with weight 1.

.. versionadded:: 0.1
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from pifnet_infer.tiling.grid import Tile, TileGrid
from pifnet_infer.tiling.protocols import Window

BlendMode = Literal["cosine", "none"]
BLEND_MODES: tuple[str, ...] = ("cosine", "none")


def _rise(length: int) -> np.ndarray:
    """Raised cosine from ~0 to ~1 over ``length`` pixels, sampled at pixel centres: values in (0, 1)."""
    x = (np.arange(length, dtype=np.float64) + 0.5) / length
    return 0.5 - 0.5 * np.cos(np.pi * x)


def axis_weights(
    origins: list[int], tile: int, size: int, mode: BlendMode
) -> list[tuple[int, int, np.ndarray]]:
    """Per-tile 1-D weights along one axis.

    Args:
        origins: increasing tile origins (HR pixels), as from :func:`~pifnet_infer.tiling.grid.axis_origins`.
        tile: tile length (HR pixels).
        size: scene length (HR pixels); tiles are clipped to it.
        mode: ``"cosine"`` or ``"none"``.

    Returns:
        For each tile, ``(start, stop, weights)``: the in-scene span the tile contributes to and
        float64 weights > 0 over it.
    """
    if mode not in BLEND_MODES:
        raise ValueError(f"blend mode must be one of {BLEND_MODES}, got {mode!r}")
    result = []
    for k, start in enumerate(origins):
        stop = min(start + tile, size)
        if mode == "none":
            if k + 1 < len(origins):
                stop = min(stop, origins[k + 1])
            result.append((start, stop, np.ones(stop - start)))
            continue
        weights = np.ones(stop - start)
        if k > 0:  # fade in over the overlap with the previous tile
            ramp_end = min(origins[k - 1] + tile, stop)
            weights[: ramp_end - start] *= _rise(ramp_end - start)
        if k + 1 < len(origins):  # fade out over the overlap with the next tile
            ramp_start = origins[k + 1]
            if ramp_start < stop:
                weights[ramp_start - start :] *= 1.0 - _rise(stop - ramp_start)
        result.append((start, stop, weights))
    return result


class BlendWindows:
    """The blend window of every tile of a grid.

    Args:
        grid: the tile grid.
        mode: ``"cosine"`` (smooth, seam-free) or ``"none"`` (official overwrite stitching).

    Example:
        >>> grid = TileGrid((40, 40), ratio=4, tile_size=64, overlap=16)
        >>> window, weight = BlendWindows(grid)(grid.tile(0))
        >>> weight.shape == (window.height, window.width)
        True
    """

    def __init__(self, grid: TileGrid, mode: BlendMode = "cosine") -> None:
        self.mode = mode
        self._rows = axis_weights(grid.hr_row_origins, grid.tile_size, grid.hr_shape[0], mode)
        self._cols = axis_weights(grid.hr_col_origins, grid.tile_size, grid.hr_shape[1], mode)

    def tile_vectors(self, tile: Tile) -> tuple[np.ndarray, np.ndarray]:
        """Float32 row and column weights over the whole tile (length ``tile_size``), 0 where it does not count.

        Their outer product is the tile's weight at every pixel of its window, including any part past the scene.
        """
        vectors = []
        for (start, stop, w), origin in (
            (self._rows[tile.row], tile.hr.row_off),
            (self._cols[tile.col], tile.hr.col_off),
        ):
            full = np.zeros(tile.hr.height, dtype=np.float32)
            full[start - origin : stop - origin] = w
            vectors.append(full)
        return vectors[0], vectors[1]

    def window(self, tile: Tile) -> Window:
        """In-scene HR window the tile contributes to."""
        r0, r1, _ = self._rows[tile.row]
        c0, c1, _ = self._cols[tile.col]
        return Window(r0, c0, r1 - r0, c1 - c0)

    def __call__(self, tile: Tile) -> tuple[Window, np.ndarray]:
        """In-scene HR window the tile contributes to and its float32 weight [height, width] (> 0)."""
        _, _, wr = self._rows[tile.row]
        _, _, wc = self._cols[tile.col]
        return self.window(tile), np.outer(wr.astype(np.float32), wc.astype(np.float32))

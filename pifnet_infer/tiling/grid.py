"""Tile grids laid on the LR pixel grid: pure window arithmetic.

Every tile has the same size (so tiles batch), sits exactly on the LR grid (its
HR window is its LR window times ``ratio``) and has an even HR size (PIF-Net's
Haar transform halves it). Tile origins along each axis are ``0, stride,
2*stride, ...`` while the tile fits, and a last tile flush with the scene
border is added when the regular ones stop short; this is the official test
protocol (spec section 12) when ``overlap == 0``. A scene smaller than a tile
gets one tile at origin 0 whose window runs past the scene: the Source fills
the outside by reflection.

.. versionadded:: 0.1
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pifnet_infer.tiling.protocols import Window


def axis_origins(size: int, tile: int, stride: int) -> list[int]:
    """Tile origins along one axis: regular steps, then one tile flush with the end.

    Args:
        size: length of the axis.
        tile: tile length (> 0).
        stride: step between regular origins (> 0).

    Returns:
        Increasing origins; ``[0]`` when ``size <= tile``.
    """
    if size <= tile:
        return [0]
    origins = list(range(0, size - tile + 1, stride))
    if origins[-1] + tile < size:
        origins.append(size - tile)
    return origins


@dataclass(frozen=True, slots=True)
class Tile:
    """One tile of a :class:`TileGrid`.

    Attributes:
        index: position in row-major order.
        row: tile row (0-based).
        col: tile column (0-based).
        lr: LR window (may run past the scene for scenes smaller than a tile).
        hr: HR window, ``lr.scaled(ratio)``.
    """

    index: int
    row: int
    col: int
    lr: Window
    hr: Window


class TileGrid:
    """The LR and HR windows of every tile of a scene, row-major.

    Args:
        lr_shape: (h, w) of the LR scene; the HR scene is (ratio*h, ratio*w).
        ratio: r, LR -> HR scale factor.
        tile_size: tile side in HR pixels, a positive multiple of ``2 * ratio``.
        overlap: overlap of neighbouring tiles in HR pixels, a multiple of ``2 * ratio``,
            ``0 <= overlap < tile_size``.

    Raises:
        ValueError: a size is not positive or not a multiple of ``2 * ratio``.
    """

    def __init__(self, lr_shape: tuple[int, int], ratio: int, tile_size: int, overlap: int = 0) -> None:
        h, w = (int(v) for v in lr_shape)
        if h < 1 or w < 1:
            raise ValueError(f"lr_shape must be positive, got {lr_shape!r}")
        if ratio < 1:
            raise ValueError(f"ratio must be a positive int, got {ratio!r}")
        step = 2 * ratio
        if tile_size < step or tile_size % step:
            raise ValueError(
                f"tile_size must be a positive multiple of 2*ratio={step} HR pixels, got {tile_size!r}; "
                f"try {max(step, tile_size - tile_size % step)}"
            )
        if overlap < 0 or overlap % step or overlap >= tile_size:
            raise ValueError(
                f"overlap must be a multiple of 2*ratio={step} HR pixels in [0, tile_size={tile_size}), "
                f"got {overlap!r}"
            )
        self.lr_shape = (h, w)
        self.ratio = ratio
        self.tile_size = tile_size
        self.overlap = overlap
        self.hr_shape = (h * ratio, w * ratio)
        lr_tile, lr_stride = tile_size // ratio, (tile_size - overlap) // ratio
        self.lr_tile = lr_tile
        self.lr_row_origins = axis_origins(h, lr_tile, lr_stride)
        self.lr_col_origins = axis_origins(w, lr_tile, lr_stride)

    @property
    def stride(self) -> int:
        """Step between regular tile origins, in HR pixels."""
        return self.tile_size - self.overlap

    @property
    def n_rows(self) -> int:
        """Number of tile rows."""
        return len(self.lr_row_origins)

    @property
    def n_cols(self) -> int:
        """Number of tile columns."""
        return len(self.lr_col_origins)

    @property
    def hr_row_origins(self) -> list[int]:
        """HR row of the top edge of each tile row."""
        return [o * self.ratio for o in self.lr_row_origins]

    @property
    def hr_col_origins(self) -> list[int]:
        """HR column of the left edge of each tile column."""
        return [o * self.ratio for o in self.lr_col_origins]

    def __len__(self) -> int:
        return self.n_rows * self.n_cols

    def tile(self, index: int) -> Tile:
        """The tile at row-major position ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"tile index {index} out of range for a grid of {len(self)} tiles")
        row, col = divmod(index, self.n_cols)
        lr = Window(self.lr_row_origins[row], self.lr_col_origins[col], self.lr_tile, self.lr_tile)
        return Tile(index, row, col, lr, lr.scaled(self.ratio))

    def __iter__(self) -> Iterator[Tile]:
        return (self.tile(i) for i in range(len(self)))

    def rows_final_after(self, row: int) -> int:
        """HR rows below this bound are final once tile rows ``0..row`` are done.

        No tile of a later row touches them: the bound is the next tile row's top
        edge, or the scene height after the last row.
        """
        if row + 1 < self.n_rows:
            return self.lr_row_origins[row + 1] * self.ratio
        return self.hr_shape[0]

    def __repr__(self) -> str:
        return (
            f"TileGrid(lr_shape={self.lr_shape}, ratio={self.ratio}, tile_size={self.tile_size}, "
            f"overlap={self.overlap}, tiles={self.n_rows}x{self.n_cols})"
        )

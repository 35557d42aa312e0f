"""The contracts between the tiling engine and where pixels come from and go to.

A :class:`Source` hands the engine an LR-HSI window and the matching HR-MSI
window; a :class:`Sink` receives the finished output, one band of final rows
at a time (the engine blends the tiles itself). Arrays, GeoTIFFs and Dask blocks differ only in their
Source and Sink; the engine (:mod:`pifnet_infer.tiling.runner`) is the same.

.. versionadded:: 0.1
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True, slots=True)
class Window:
    """A rectangle of pixels: offsets may be negative or run past the scene (padding is read there)."""

    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def row_end(self) -> int:
        """One past the last row."""
        return self.row_off + self.height

    @property
    def col_end(self) -> int:
        """One past the last column."""
        return self.col_off + self.width

    def scaled(self, factor: int) -> Window:
        """The same rectangle on a grid ``factor`` times finer (LR -> HR)."""
        return Window(self.row_off * factor, self.col_off * factor, self.height * factor, self.width * factor)

    def intersection(self, height: int, width: int) -> Window:
        """The part of this window inside a ``height`` x ``width`` scene (may be empty)."""
        r0, c0 = max(self.row_off, 0), max(self.col_off, 0)
        r1, c1 = min(self.row_end, height), min(self.col_end, width)
        return Window(r0, c0, max(r1 - r0, 0), max(c1 - c0, 0))

    def slices(self) -> tuple[slice, slice]:
        """(row slice, column slice) for indexing an in-bounds window."""
        return slice(self.row_off, self.row_end), slice(self.col_off, self.col_end)


#: Optional hook a Sink applies to every band of final rows before writing it:
#: ``(first HR row, float32 [C, rows, W] normalised, in the model's range) -> values to write``
#: (e.g. converted back to the input's units, with nodata restored). Sinks take it as a constructor argument.
RowPostprocess = Callable[[int, np.ndarray], np.ndarray]


@runtime_checkable
class Source(Protocol):
    """Where the input pixels come from.

    Attributes:
        lr_shape: (h, w) of the LR-HSI scene.
        ratio: r, the HR-MSI is (r*h, r*w).
        hsi_bands: C.
        msi_bands: c.
    """

    lr_shape: tuple[int, int]
    ratio: int
    hsi_bands: int
    msi_bands: int

    def read(self, lr_window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read an LR window and its HR counterpart (``lr_window.scaled(ratio)``).

        Returns:
            (lr, msi): float32 arrays [C, h', w'] and [c, r*h', r*w'] in the model's value range.
            Pixels outside the scene are filled by reflection about the scene border (never zeros).
        """
        ...


@runtime_checkable
class Sink(Protocol):
    """Where the finished output goes: rows in order, already blended and normalised by the engine."""

    def write(self, hr_row0: int, rows: np.ndarray) -> None:
        """Write HR rows ``hr_row0 .. hr_row0 + n``: float32 [C, n, W], in the model's range.

        Called with consecutive, non-overlapping bands of rows from the top of the scene down.
        """
        ...

    def close(self) -> None:
        """Every row was written: finish the output."""
        ...

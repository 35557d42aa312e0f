"""TileGrid: coverage, bounds, LR/HR alignment, equal tile sizes, flush last tile (property tests)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pifnet_infer.tiling.grid import TileGrid, axis_origins


@st.composite
def grids(draw: st.DrawFn) -> TileGrid:
    ratio = draw(st.sampled_from([1, 2, 3, 4, 8]))
    step = 2 * ratio
    tile = step * draw(st.integers(1, 12))
    overlap = step * draw(st.integers(0, tile // step - 1))
    h, w = draw(st.integers(1, 80)), draw(st.integers(1, 80))
    return TileGrid((h, w), ratio, tile, overlap)


@settings(max_examples=200, deadline=None)
@given(grids())
def test_every_hr_pixel_is_covered_by_in_bounds_aligned_tiles(grid: TileGrid) -> None:
    big_h, big_w = grid.hr_shape
    covered = np.zeros(grid.hr_shape, dtype=int)
    tiles = list(grid)
    assert len(tiles) == grid.n_rows * grid.n_cols
    for tile in tiles:
        # LR/HR alignment: the HR window is exactly the LR window on the finer grid
        assert (
            tile.hr.row_off == grid.ratio * tile.lr.row_off
            and tile.hr.col_off == grid.ratio * tile.lr.col_off
        )
        assert tile.hr.height == tile.hr.width == grid.tile_size == grid.ratio * tile.lr.height
        assert tile.hr.height % 2 == 0  # the Haar transform halves it
        # in bounds: a tile starts inside the scene and runs past it only when the scene is smaller
        assert 0 <= tile.hr.row_off < big_h and 0 <= tile.hr.col_off < big_w
        assert tile.hr.row_end <= big_h or (tile.hr.row_off == 0 and big_h < grid.tile_size)
        assert tile.hr.col_end <= big_w or (tile.hr.col_off == 0 and big_w < grid.tile_size)
        clipped = tile.hr.intersection(big_h, big_w)
        covered[clipped.slices()] += 1
    assert covered.min() >= 1


@settings(max_examples=200, deadline=None)
@given(grids())
def test_row_major_order_and_flush_last_tile(grid: TileGrid) -> None:
    tiles = list(grid)
    keys = [(t.hr.row_off, t.hr.col_off) for t in tiles]
    assert keys == sorted(keys)
    assert [t.index for t in tiles] == list(range(len(tiles)))
    big_h, big_w = grid.hr_shape
    last = tiles[-1].hr
    if big_h >= grid.tile_size:
        assert last.row_end == big_h
    if big_w >= grid.tile_size:
        assert last.col_end == big_w
    # regular origins step by the stride; only the last may be closer (flush with the border)
    for origins in (grid.hr_row_origins, grid.hr_col_origins):
        steps = np.diff(origins)
        assert (steps[:-1] == grid.stride).all()
        if len(steps):
            assert 0 < steps[-1] <= grid.stride


@settings(max_examples=100, deadline=None)
@given(grids())
def test_rows_final_after_is_safe_and_complete(grid: TileGrid) -> None:
    # no tile of a later row reaches above the bound, and the bound after the last row is the scene height
    for row in range(grid.n_rows):
        bound = grid.rows_final_after(row)
        later_tops = [t.hr.row_off for t in grid if t.row > row]
        assert all(top >= bound for top in later_tops)
    assert grid.rows_final_after(grid.n_rows - 1) == grid.hr_shape[0]


def test_official_protocol_origins() -> None:
    # spec section 12: 64-px tiles, stride 64, last tile moved back flush with the border
    assert axis_origins(256, 64, 64) == [0, 64, 128, 192]
    assert axis_origins(200, 64, 64) == [0, 64, 128, 136]
    grid = TileGrid((50, 50), ratio=4, tile_size=64, overlap=0)
    assert grid.hr_row_origins == [0, 64, 128, 136]


def test_scene_smaller_than_a_tile_gets_one_tile_at_the_origin() -> None:
    grid = TileGrid((5, 9), ratio=4, tile_size=64, overlap=16)
    (tile,) = list(grid)
    assert (tile.hr.row_off, tile.hr.col_off, tile.hr.height) == (0, 0, 64)


@pytest.mark.parametrize(
    ("tile", "overlap", "match"),
    [
        (12, 0, "multiple of 2\\*ratio=8"),
        (0, 0, "tile_size"),
        (64, 4, "overlap"),
        (64, 64, "overlap"),
        (64, -8, "overlap"),
    ],
)
def test_bad_sizes_are_refused(tile: int, overlap: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TileGrid((20, 20), ratio=4, tile_size=tile, overlap=overlap)

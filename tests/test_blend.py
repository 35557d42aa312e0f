"""Blend windows: positive, a partition of unity after normalisation, smooth, and the official overwrite mode."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pifnet_infer.tiling.blend import BlendWindows, axis_weights
from pifnet_infer.tiling.grid import TileGrid, axis_origins


@st.composite
def grids(draw: st.DrawFn) -> TileGrid:
    ratio = draw(st.sampled_from([1, 2, 4, 8]))
    step = 2 * ratio
    tile = step * draw(st.integers(1, 10))
    overlap = step * draw(st.integers(0, tile // step - 1))
    return TileGrid((draw(st.integers(1, 60)), draw(st.integers(1, 60))), ratio, tile, overlap)


def _weight_sum(grid: TileGrid, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(sum of weights, number of contributing tiles) per HR pixel."""
    windows = BlendWindows(grid, mode)
    total = np.zeros(grid.hr_shape)
    count = np.zeros(grid.hr_shape, dtype=int)
    for tile in grid:
        window, weight = windows(tile)
        assert weight.dtype == np.float32 and weight.shape == (window.height, window.width)
        assert (weight > 0).all()
        # the contributing window lies inside the tile and inside the scene
        assert window.intersection(*grid.hr_shape) == window
        assert tile.hr.row_off <= window.row_off and window.row_end <= tile.hr.row_end
        assert tile.hr.col_off <= window.col_off and window.col_end <= tile.hr.col_end
        total[window.slices()] += weight
        count[window.slices()] += 1
    return total, count


@settings(max_examples=150, deadline=None)
@given(grids())
def test_cosine_weights_are_positive_and_cover_every_pixel(grid: TileGrid) -> None:
    total, _ = _weight_sum(grid, "cosine")
    assert total.min() > 0  # normalising by the sum is defined everywhere, scene border included


@settings(max_examples=150, deadline=None)
@given(grids())
def test_cosine_is_a_partition_of_unity_where_two_tiles_meet(grid: TileGrid) -> None:
    # without normalisation the weights already sum to 1 wherever at most two tiles overlap per axis
    total, _ = _weight_sum(grid, "cosine")
    rows = _max_cover(grid.hr_row_origins, grid.tile_size, grid.hr_shape[0])
    cols = _max_cover(grid.hr_col_origins, grid.tile_size, grid.hr_shape[1])
    exact = np.outer(rows <= 2, cols <= 2)
    np.testing.assert_allclose(total[exact], 1.0, atol=1e-6)
    # and after normalisation every pixel's weights sum to 1 by construction; check the blend of a field
    field = np.random.default_rng(0).random(grid.hr_shape)
    blended = np.zeros(grid.hr_shape)
    windows = BlendWindows(grid, "cosine")
    for tile in grid:
        window, weight = windows(tile)
        blended[window.slices()] += weight * field[window.slices()]
    np.testing.assert_allclose(blended / total, field, rtol=1e-6)


def _max_cover(origins: list[int], tile: int, size: int) -> np.ndarray:
    cover = np.zeros(size, dtype=int)
    for o in origins:
        cover[o : min(o + tile, size)] += 1
    return cover


def test_cosine_ramp_is_smooth_and_one_away_from_overlaps() -> None:
    origins = axis_origins(200, 64, 48)  # [0, 48, 96, 136]: regular overlap 16 and a flush overlap of 24
    spans = axis_weights(origins, 64, 200, "cosine")
    for start, stop, w in spans:
        assert np.abs(np.diff(w)).max() <= np.pi / (2 * 16) + 1e-9  # raised cosine over >= 16 px
    start, stop, w = spans[1]
    assert (start, stop) == (48, 112)
    np.testing.assert_allclose(w[16:48], 1.0)  # plateau between the ramps
    assert w[0] < 0.01 and w[-1] < 0.01  # tile edges count least where a neighbour is there
    # tile edges on the scene border keep full weight
    assert spans[0][2][0] == 1.0 and spans[-1][2][-1] == 1.0


@settings(max_examples=150, deadline=None)
@given(grids())
def test_overwrite_mode_gives_every_pixel_to_the_last_tile_covering_it(grid: TileGrid) -> None:
    total, count = _weight_sum(grid, "none")
    assert (count == 1).all() and (total == 1.0).all()
    # owner = last tile in row-major order whose in-scene window covers the pixel (later tiles win)
    expected = np.full(grid.hr_shape, -1)
    for tile in grid:
        expected[tile.hr.intersection(*grid.hr_shape).slices()] = tile.index
    windows = BlendWindows(grid, "none")
    owner = np.full(grid.hr_shape, -1)
    for tile in grid:
        owner[windows(tile)[0].slices()] = tile.index
    np.testing.assert_array_equal(owner, expected)


@settings(max_examples=50, deadline=None)
@given(grids(), st.sampled_from(["cosine", "none"]))
def test_tile_vectors_give_the_window_weights_and_zero_elsewhere(grid: TileGrid, mode: str) -> None:
    windows = BlendWindows(grid, mode)
    for tile in grid:
        window, weight = windows(tile)
        rows, cols = windows.tile_vectors(tile)
        full = np.outer(rows, cols)
        inside = np.zeros_like(full, dtype=bool)
        r0, c0 = window.row_off - tile.hr.row_off, window.col_off - tile.hr.col_off
        inside[r0 : r0 + window.height, c0 : c0 + window.width] = True
        np.testing.assert_array_equal(full[inside].reshape(weight.shape), weight)
        assert (full[~inside] == 0).all()


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="blend mode"):
        axis_weights([0], 8, 8, "linear")  # type: ignore[arg-type]

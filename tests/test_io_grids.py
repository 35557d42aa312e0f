"""Grid checks of HSI/MSI raster pairs: ratio, CRS, alignment, coverage."""

from __future__ import annotations

import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.crs import CRS

from pifnet_infer.errors import GridMismatchError
from pifnet_infer.io.grids import RasterGrid, derive_ratio, match_grids
from pifnet_infer.tiling.protocols import Window

UTM = CRS.from_epsg(32616)
GEO = CRS.from_epsg(4326)
CRS_CHOICES = {"utm": (UTM, 30.0, 500_000.0, 3_300_000.0), "geo": (GEO, 0.00027, -87.3, 30.4)}


def _pair(crs, pixel, x0, y0, h, w, ratio, *, extra=(0, 0, 0, 0), north_up=True):
    """HSI grid and an aligned MSI grid extending ``extra`` = (left, top, right, bottom) HR pixels beyond it."""
    sign = -1.0 if north_up else 1.0
    hsi_t = Affine(pixel, 0.0, x0, 0.0, sign * pixel, y0)
    hr = pixel / ratio
    left, top, right, bottom = extra
    msi_t = Affine(hr, 0.0, x0 - left * hr, 0.0, sign * hr, y0 - sign * top * hr)
    hsi = RasterGrid(crs, hsi_t, w, h, "HSI")
    msi = RasterGrid(crs, msi_t, w * ratio + left + right, h * ratio + top + bottom, "MSI")
    return hsi, msi


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(sorted(CRS_CHOICES)),
    ratio=st.integers(2, 8),
    h=st.integers(1, 300),
    w=st.integers(1, 300),
    extra=st.tuples(*(st.integers(0, 40) for _ in range(4))),
    shift=st.tuples(st.integers(-10_000, 10_000), st.integers(-10_000, 10_000)),
    north_up=st.booleans(),
)
def test_aligned_pairs_match(kind, ratio, h, w, extra, shift, north_up):
    crs, pixel, x0, y0 = CRS_CHOICES[kind]
    x0, y0 = x0 + shift[0] * pixel, y0 + shift[1] * pixel  # non-zero origins, anywhere on the grid
    hsi, msi = _pair(crs, pixel, x0, y0, h, w, ratio, extra=extra, north_up=north_up)
    pair = match_grids(hsi, msi)
    assert pair.ratio == ratio
    assert pair.lr_shape == (h, w)
    assert pair.hr_shape == (h * ratio, w * ratio)
    assert pair.msi_window == Window(extra[1], extra[0], h * ratio, w * ratio)
    assert pair.msi_is_cropped == (extra[0] > 0 or extra[1] > 0)
    # The output grid: same origin as the HSI, pixel / ratio; its pixel (col, row) is MSI pixel + offset.
    assert pair.out_transform.almost_equals(
        Affine(pixel / ratio, 0, x0, 0, (-1 if north_up else 1) * pixel / ratio, y0)
    )
    for col, row in [(0, 0), (w * ratio, h * ratio), (3, 5)]:
        ox, oy = pair.out_transform @ (col, row)
        mx, my = msi.transform @ (col + extra[0], row + extra[1])
        assert ox == pytest.approx(mx, abs=pixel * 1e-6)
        assert oy == pytest.approx(my, abs=pixel * 1e-6)
    assert match_grids(hsi, msi, ratio=ratio) == pair


def test_profiles_and_datasets_give_the_same_grid():
    profile = {"crs": UTM, "transform": Affine(30, 0, 1, 0, -30, 2), "width": 7, "height": 5, "count": 3}
    grid = RasterGrid.of(profile, "HSI")
    assert (grid.width, grid.height, grid.pixel_size) == (7, 5, (30.0, 30.0))
    assert "7 x 5 px" in grid.describe() and "EPSG:32616" in grid.describe()


@pytest.mark.parametrize(("hr_pixel", "expected"), [(12.0, "2.5 is not an integer"), (30.0, "not smaller")])
def test_bad_ratio(hr_pixel, expected):
    hsi = RasterGrid(UTM, Affine(30, 0, 0, 0, -30, 0), 10, 10, "HSI")
    msi = RasterGrid(UTM, Affine(hr_pixel, 0, 0, 0, -hr_pixel, 0), 25, 25, "MSI")
    with pytest.raises(GridMismatchError, match=expected):
        match_grids(hsi, msi)


def test_anisotropic_ratio():
    hsi = RasterGrid(UTM, Affine(30, 0, 0, 0, -30, 0), 10, 10, "HSI")
    msi = RasterGrid(UTM, Affine(10, 0, 0, 0, -15, 0), 30, 20, "MSI")
    with pytest.raises(GridMismatchError, match=r"differs between x \(3\) and y \(2\)"):
        derive_ratio(hsi, msi)


def test_given_ratio_must_agree():
    hsi, msi = _pair(UTM, 30.0, 0.0, 0.0, 10, 10, 4)
    with pytest.raises(GridMismatchError, match="ratio=3 was given but the pixel sizes give 4"):
        match_grids(hsi, msi, ratio=3)


def test_crs_mismatch_names_both():
    hsi, msi = _pair(UTM, 30.0, 0.0, 0.0, 10, 10, 4)
    other = RasterGrid(CRS.from_epsg(32617), msi.transform, msi.width, msi.height, "MSI")
    with pytest.raises(GridMismatchError, match=r"'EPSG:32616'.*'EPSG:32617'.*align='resample'"):
        match_grids(hsi, other)


@pytest.mark.parametrize("which", ["HSI", "MSI"])
def test_missing_crs(which):
    hsi, msi = _pair(UTM, 30.0, 0.0, 0.0, 10, 10, 4)
    hsi = RasterGrid(None if which == "HSI" else UTM, hsi.transform, hsi.width, hsi.height, "HSI")
    msi = RasterGrid(None if which == "MSI" else UTM, msi.transform, msi.width, msi.height, "MSI")
    with pytest.raises(GridMismatchError, match=f"the {which} has no CRS"):
        match_grids(hsi, msi)


def test_offset_origin_is_reported_in_pixels():
    hsi, msi = _pair(UTM, 30.0, 1000.0, 2000.0, 10, 10, 4)
    shifted = RasterGrid(UTM, Affine.translation(0.4 * 7.5, 0) @ msi.transform, msi.width, msi.height, "MSI")
    with pytest.raises(
        GridMismatchError, match=r"pixel corners are shifted .* by \+0\.4 columns and \+0 rows"
    ):
        match_grids(hsi, shifted)


def test_slightly_different_pixel_size_is_reported():
    hsi, msi = _pair(UTM, 30.0, 0.0, 0.0, 100, 100, 4)
    t = msi.transform
    stretched = RasterGrid(UTM, Affine(t.a * 1.0001, 0, t.c, 0, t.e, t.f), msi.width, msi.height, "MSI")
    # 0.01 % is an integer ratio but drifts by 0.04 px over 400 columns: too much
    with pytest.raises(GridMismatchError, match="pixel axes differ"):
        match_grids(hsi, stretched)


def test_tiny_numeric_noise_is_accepted():
    hsi, msi = _pair(GEO, 0.00027, -87.3, 30.4, 50, 50, 3)
    t = msi.transform
    noisy = RasterGrid(
        GEO, Affine(t.a * (1 + 1e-12), 0, t.c + 1e-13, 0, t.e, t.f), msi.width, msi.height, "MSI"
    )
    assert match_grids(hsi, noisy).ratio == 3


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ((-2, 0, 0, 0), "2 px on the left"),
        ((0, 0, 0, -4), "4 px on the bottom"),
        ((0, -1, -3, 0), "1 px on the top, 3 px on the right"),
    ],
)
def test_msi_must_cover_the_hsi(extra, expected):
    hsi, msi = _pair(UTM, 30.0, 0.0, 0.0, 10, 12, 4, extra=extra)
    with pytest.raises(GridMismatchError, match=expected):
        match_grids(hsi, msi)

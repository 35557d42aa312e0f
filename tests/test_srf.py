"""Spectral responses: bundled tables, hand-computed response matrices, coverage checks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pifnet_infer.data import load_sample
from pifnet_infer.errors import PifnetError
from pifnet_infer.srf import SpectralCoverageError, SpectralResponse, list_srfs, load_srf, srf_matrix

SHARED_SRF = Path(__file__).resolve().parents[2] / "shared" / "data" / "srf"


def _box(lo: float, hi: float) -> SpectralResponse:
    grid = np.round(np.arange(300.0, 1000.05, 0.1), 1)  # fine grid: the interpolated edges are 0.1 nm ramps
    return SpectralResponse("box", ("box",), grid, ((grid >= lo) & (grid <= hi)).astype(float)[None])


def test_bundled_tables_and_subsets() -> None:
    assert {"sentinel2a", "sentinel2a-10m", "landsat8_oli", "landsat8_oli-pan", "rgb_gaussian"} <= set(
        list_srfs()
    )
    s2 = load_srf("sentinel2a")
    assert len(s2.band_names) == 13 and s2.band_names[8] == "B8A"
    ten = load_srf("sentinel2a-10m")
    assert ten.band_names == ("B2", "B3", "B4", "B8")
    np.testing.assert_allclose(ten.centres_nm, [492, 560, 665, 833], atol=3)  # ESA's central wavelengths
    pan = load_srf("landsat8_oli-pan")
    assert pan.band_names == ("B8_pan",) and 560 < pan.centres_nm[0] < 620
    assert load_srf("sentinel2a", bands=["B8", "B4"]).band_names == ("B8", "B4")
    with pytest.raises(KeyError, match="available"):
        load_srf("worldview3")
    with pytest.raises(KeyError, match="B13"):
        load_srf("sentinel2a", bands=["B13"])


@pytest.mark.shared
@pytest.mark.parametrize("name", ["sentinel2a_msi.csv", "landsat8_oli.csv"])
def test_bundled_csv_is_the_shared_one(name: str) -> None:
    if not (SHARED_SRF / name).is_file():
        pytest.skip("../shared/data/srf not available")
    bundled = Path(__file__).resolve().parents[1] / "pifnet_infer" / "data" / "srf" / name
    assert bundled.read_bytes() == (SHARED_SRF / name).read_bytes()


def test_rgb_gaussian_is_as_documented() -> None:
    rgb = load_srf("rgb_gaussian")
    assert rgb.band_names == ("R", "G", "B")
    np.testing.assert_allclose(rgb.centres_nm, [610, 540, 460], atol=1)
    for row, centre in zip(rgb.responses, (610, 540, 460), strict=True):
        at = {int(w): v for w, v in zip(rgb.wavelengths_nm, row, strict=True)}
        assert at[centre] == pytest.approx(1.0)
        assert at[centre + 40] == pytest.approx(0.5, abs=1e-9)  # FWHM 80 nm


def test_box_srf_without_fwhm_hand_computed() -> None:
    wl = np.arange(400.0, 701.0, 10.0)  # 31 bands; 500..600 inclusive are 11 of them
    r = srf_matrix(_box(500, 600), wl)
    expected = np.where((wl >= 500) & (wl <= 600), 1 / 11, 0.0)
    np.testing.assert_allclose(r[0], expected, atol=1e-12)


def test_box_srf_with_fwhm_hand_computed() -> None:
    # Gaussian band (FWHM 20 nm) at 590 nm: 10 nm inside the box edge; at 550 nm: wholly inside.
    sigma = 20 / (2 * math.sqrt(2 * math.log(2)))
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    lo, hi = 499.95, 600.05  # the sampled box ramps linearly over 0.1 nm at each edge
    w590 = phi((hi - 590) / sigma) - phi((lo - 590) / sigma)
    w550 = phi((hi - 550) / sigma) - phi((lo - 550) / sigma)
    r = srf_matrix(_box(500, 600), [590.0, 550.0], [20.0, 20.0], min_coverage=0.0)
    np.testing.assert_allclose(r[0], [w590 / (w590 + w550), w550 / (w590 + w550)], atol=5e-5)


def test_flat_spectrum_gives_one_and_unsorted_wavelengths() -> None:
    sample = load_sample("aviris_gatorsense_vi")
    assert np.any(np.diff(sample.wavelengths_nm) < 0)  # the bundled AVIRIS sample is not monotonic
    for fwhm in (None, np.full(224, 10.0)):
        r = srf_matrix("sentinel2a", sample.wavelengths_nm, fwhm)
        assert r.shape == (13, 224)
        assert np.all(r >= 0)
        np.testing.assert_allclose(r @ np.ones(224), 1.0)
    wl = np.linspace(420, 950, 40)
    perm = np.random.default_rng(0).permutation(40)
    base = srf_matrix("sentinel2a-10m", wl, np.full(40, 12.0))
    np.testing.assert_allclose(
        srf_matrix("sentinel2a-10m", wl[perm], np.full(40, 12.0)), base[:, perm], atol=1e-12
    )


def test_fwhm_converges_to_interpolation_for_narrow_bands() -> None:
    wl = np.arange(400.0, 1000.0, 2.0)
    interp = srf_matrix("sentinel2a-10m", wl)
    errors = [
        np.abs(srf_matrix("sentinel2a-10m", wl, np.full(wl.size, f)) - interp).max() for f in (2.0, 1.0, 0.2)
    ]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01 * interp.max()


def test_uncovered_band_is_refused() -> None:
    wl = np.linspace(400, 1000, 60)
    with pytest.raises(SpectralCoverageError, match="B12") as info:
        srf_matrix("sentinel2a", wl)
    assert isinstance(info.value, ValueError) and isinstance(info.value, PifnetError)
    assert "B11" in str(info.value) and "'B8'" not in str(info.value)
    # a band whose response is only partly inside: Samson-like 401-889 nm vs Sentinel-2 B8 (95% inside)
    samson = np.linspace(401, 889, 156)
    srf_matrix("sentinel2a-10m", samson)
    with pytest.raises(SpectralCoverageError, match="B8"):
        srf_matrix("sentinel2a-10m", samson, min_coverage=0.99)


def test_bad_wavelengths() -> None:
    with pytest.raises(ValueError, match="micrometres"):
        srf_matrix("sentinel2a-10m", np.linspace(0.4, 1.0, 50))
    with pytest.raises(ValueError, match=r"FWHM must be .*one per band"):
        srf_matrix("sentinel2a-10m", np.linspace(400, 1000, 50), np.ones(49))
    with pytest.raises(ValueError, match="wavelengths must be a non-empty 1-D array"):
        srf_matrix("sentinel2a-10m", [500.0, float("nan")])


def test_synthetic_pan_is_flat_inside_and_zero_outside() -> None:
    from pifnet_infer.srf import load_srf

    pan = load_srf("pan_450_900")
    wl = np.arange(300.0, 1100.0, 5.0)
    matrix = srf_matrix(pan, wl, np.full(wl.shape, 1.0))
    inside = (wl >= 460) & (wl <= 890)
    assert matrix.shape == (1, wl.size) and matrix.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(matrix[0, inside], matrix[0, inside][0], rtol=1e-3)  # flat
    assert (matrix[0, (wl < 435) | (wl > 915)] < 1e-9).all()

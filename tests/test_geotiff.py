"""fuse_geotiff: georeferencing, equality with in-memory fuse, metadata, errors, atomicity, memory."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS
from torch import nn

from pifnet_infer.config import PIFNetConfig
from pifnet_infer.data import load_sample
from pifnet_infer.errors import GridMismatchError, RasterReadError, ShapeMismatchError
from pifnet_infer.fusion import fuse
from pifnet_infer.io.bands import parse_band_list, read_band_info, select_bands
from pifnet_infer.io.geotiff import fuse_geotiff
from pifnet_infer.models import PIFNet

SHARED = Path(__file__).parents[1] / ".." / "shared"
RATIO = 4
#: the HSI bands the tiny model uses (1-based, deliberately not in file order)
PICK = (60, 5, 12, 20, 28, 36, 44, 52)
UTM = CRS.from_epsg(32616)
GEO = CRS.from_epsg(4326)


def tiny_model(hsi_bands: int = len(PICK), ratio: int = RATIO, seed: int = 0) -> PIFNet:
    """A random-init PIF-Net small enough for CPU tests."""
    torch.manual_seed(seed)
    config = PIFNetConfig(
        hsi_bands=hsi_bands, msi_bands=3, ratio=ratio, dim=4, d_state=2, expand=1, num_stages=1
    )
    return PIFNet(config).eval()


class Cheap(nn.Module):
    """PIF-Net's interface at almost no cost (nearest upsampling plus the MSI mean), for tests of the file side."""

    def __init__(self, config: PIFNetConfig) -> None:
        super().__init__()
        self.config = config
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, lr: torch.Tensor, msi: torch.Tensor) -> torch.Tensor:
        r = self.config.ratio
        return self.gain * lr.repeat_interleave(r, 2).repeat_interleave(r, 3) + msi.mean(1, keepdim=True)


def simulate(cube: np.ndarray, ratio: int) -> tuple[np.ndarray, np.ndarray]:
    """(lr [B, H/r, W/r] block means, msi [3, H, W] means of three band groups), float32."""
    bands, height, width = cube.shape
    height, width = height // ratio * ratio, width // ratio * ratio
    cube = cube[:, :height, :width]
    lr = cube.reshape(bands, height // ratio, ratio, width // ratio, ratio).mean(axis=(2, 4))
    msi = np.stack([g.mean(axis=0) for g in np.array_split(cube, 3, axis=0)])
    return lr.astype(np.float32), msi.astype(np.float32)


def write_raster(path: Path, data: np.ndarray, crs: CRS | None, transform: Affine, **extra) -> Path:
    """Write a (bands, H, W) array as a GeoTIFF (or another driver via ``driver=``)."""
    wavelengths = extra.pop("wavelengths", None)
    descriptions = extra.pop("descriptions", None)
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0]}
    profile |= {"dtype": data.dtype.name, "crs": crs, "transform": transform, **extra}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i in range(data.shape[0]):
            if wavelengths is not None:
                dst.update_tags(i + 1, wavelength=f"{wavelengths[i]}", wavelength_units="Nanometers")
            if descriptions is not None:
                dst.set_band_description(i + 1, descriptions[i])
    return path


def write_pair(
    folder: Path,
    lr: np.ndarray,
    msi: np.ndarray,
    *,
    crs: CRS = UTM,
    origin: tuple[float, float] = (500_120.0, 3_300_480.0),
    pixel: float = 30.0,
    ratio: int = RATIO,
    margin: tuple[int, int] = (0, 0),
    north_up: bool = True,
    wavelengths: np.ndarray | None = None,
) -> tuple[Path, Path]:
    """HSI and MSI GeoTIFFs on aligned grids; the MSI may extend ``margin`` (rows, cols) HR pixels beyond."""
    sign = -1.0 if north_up else 1.0
    hsi_t = Affine(pixel, 0, origin[0], 0, sign * pixel, origin[1])
    hr = pixel / ratio
    top, left = margin
    msi = np.pad(msi, ((0, 0), (top, top + 3), (left, left + 5)), mode="reflect")
    msi_t = Affine(hr, 0, origin[0] - left * hr, 0, sign * hr, origin[1] - sign * top * hr)
    names = None if wavelengths is None else [f"{w:.1f} nm channel" for w in wavelengths]
    hsi = write_raster(folder / "hsi.tif", lr, crs, hsi_t, wavelengths=wavelengths, descriptions=names)
    return hsi, write_raster(folder / "msi.tif", msi, crs, msi_t)


@pytest.fixture(scope="module")
def model() -> PIFNet:
    return tiny_model()


@pytest.fixture(scope="module")
def sample() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MUUFL sample: (lr [72, 12, 22], msi [3, 48, 88], wavelengths)."""
    s = load_sample("muufl_gulfport_sub")
    lr, msi = simulate(s.cube, RATIO)
    return lr, msi, s.wavelengths_nm


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


_REFERENCES: dict[tuple, np.ndarray] = {}


def reference(model: nn.Module, lr: np.ndarray, msi: np.ndarray, **kwargs) -> np.ndarray:
    """In-memory fuse() of the PICK bands (cached: several tests compare with the same result)."""
    key = (id(model), lr.tobytes(), msi.tobytes(), tuple(sorted(kwargs.items())))
    if key not in _REFERENCES:
        _REFERENCES[key] = fuse(lr[[b - 1 for b in PICK]], msi, model, progress=False, **kwargs)
    return _REFERENCES[key]


CASES = {
    "utm-north-up": {"crs": UTM, "origin": (500_120.0, 3_300_480.0), "pixel": 30.0},
    "geographic": {"crs": GEO, "origin": (-87.31, 30.41), "pixel": 0.00027},
    "utm-msi-larger": {"crs": UTM, "origin": (312_345.0, 4_100_010.0), "pixel": 20.0, "margin": (8, 12)},
    "south-up": {"crs": UTM, "origin": (400_000.0, 3_000_000.0), "pixel": 30.0, "north_up": False},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_georeference_and_values_match_fuse(tmp_path, model, sample, case):
    lr, msi, wavelengths = sample
    hsi_path, msi_path = write_pair(tmp_path, lr, msi, wavelengths=wavelengths, **CASES[case])
    out = fuse_geotiff(
        hsi_path,
        msi_path,
        tmp_path / "out.tif",
        model,
        hsi_bands=PICK,
        tile_size=32,
        overlap=8,
        progress=False,
    )
    assert out == tmp_path / "out.tif"
    assert listing(tmp_path) == ["hsi.tif", "msi.tif", "out.tif"]
    with rasterio.open(hsi_path) as hsi, rasterio.open(out) as dst:
        assert dst.crs == hsi.crs
        assert dst.transform.almost_equals(hsi.transform @ Affine.scale(1 / RATIO))
        assert (dst.count, dst.height, dst.width) == (len(PICK), 48, 88)
        assert dst.dtypes[0] == "float32"
        assert dst.block_shapes[0] == (256, 256) and dst.compression.name.lower() == "deflate"
        assert dst.descriptions == tuple(f"{wavelengths[b - 1]:.1f} nm channel" for b in PICK)
        got_wl = [float(dst.tags(k + 1)["wavelength"]) for k in range(len(PICK))]
        np.testing.assert_allclose(got_wl, [wavelengths[b - 1] for b in PICK], atol=1e-3)
        assert dst.tags(1)["wavelength_units"] == "nm"
        tags = dst.tags()
        assert tags["PIFNET_RATIO"] == "4" and tags["PIFNET_HSI_BANDS"] == ",".join(map(str, PICK))
        assert tags["PIFNET_MSI_ALIGNMENT"].startswith("aligned (no resampling)")
        got = dst.read()
    np.testing.assert_allclose(got, reference(model, lr, msi, tile_size=32, overlap=8), atol=1e-5, rtol=0)


def test_integer_input_scale_nodata_and_integer_output(tmp_path, model, sample):
    lr, msi, _ = sample
    stored = np.round(lr * 10_000).astype(np.int16)
    stored[:, 3, 5] = -9999
    stored[:, 7, 0:2] = -9999
    hsi_t = Affine(30, 0, 1000, 0, -30, 2000)
    hsi = write_raster(tmp_path / "hsi.tif", stored, UTM, hsi_t, nodata=-9999)
    with rasterio.open(hsi, "r+") as dst:
        dst.scales = (1e-4,) * dst.count
    msi_path = write_raster(tmp_path / "msi.tif", msi, UTM, hsi_t @ Affine.scale(1 / RATIO))
    out = fuse_geotiff(
        hsi, msi_path, tmp_path / "out.tif", model, hsi_bands=PICK, out_dtype="int16", progress=False
    )
    expected = fuse(
        stored[[b - 1 for b in PICK]], msi, model, scale=(1e-4, 1.0), nodata=-9999,
        out=np.empty((len(PICK), 48, 88), np.int16), progress=False,
    )  # fmt: skip
    with rasterio.open(out) as dst:
        assert dst.dtypes[0] == "int16" and dst.nodata == -9999
        assert dst.scales == (1e-4,) * len(PICK)
        got = dst.read()
    assert (got[:, 12:16, 20:24] == -9999).all() and (got[:, 28:32, 0:8] == -9999).all()
    assert int((got == -9999).sum()) == len(PICK) * 16 * 3
    np.testing.assert_array_equal(got, expected)


def test_float_nan_input_gives_nan_output(tmp_path, model, sample):
    lr, msi, _ = sample
    lr = lr.copy()
    lr[:, 2, 3] = np.nan
    hsi_path, msi_path = write_pair(tmp_path, lr, msi)
    out = fuse_geotiff(hsi_path, msi_path, tmp_path / "out.tif", model, hsi_bands=PICK, progress=False)
    with rasterio.open(out) as dst:
        assert np.isnan(dst.nodata)
        got = dst.read()
    assert np.isnan(got[:, 8:12, 12:16]).all() and int(np.isnan(got).sum()) == len(PICK) * 16
    np.testing.assert_allclose(got, reference(model, lr, msi), atol=1e-5, equal_nan=True)


def test_cog_output_has_overviews(tmp_path):
    cube = load_sample("aviris_gatorsense_vi").cube[::28]  # 8 bands, 90 x 90
    big = np.pad(cube, ((0, 0), (0, 230), (0, 230)), mode="symmetric")[:, :320, :320]
    lr, msi = simulate(big, RATIO)
    hsi_path, msi_path = write_pair(tmp_path, lr, msi)
    cheap = Cheap(PIFNetConfig(hsi_bands=8, msi_bands=3, ratio=RATIO))
    out = fuse_geotiff(
        hsi_path, msi_path, tmp_path / "out.tif", cheap, tile_size=64, overlap=0, cog=True, progress=False
    )
    assert listing(tmp_path) == ["hsi.tif", "msi.tif", "out.tif"]
    with rasterio.open(out) as dst:
        assert dst.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert dst.overviews(1) == [2]
        assert dst.tags()["PIFNET_TILING"] == "tile_size=64 overlap=0 blend=none"
        assert (dst.width, dst.height) == (320, 320)


def test_resample_warps_a_shifted_msi(tmp_path, model, sample):
    lr, msi, _ = sample
    hsi_path, msi_path = write_pair(tmp_path, lr, msi, margin=(2, 2))
    shifted = tmp_path / "shifted.tif"
    with rasterio.open(msi_path) as src:
        data, transform = src.read(), src.transform
    write_raster(shifted, data, UTM, Affine.translation(0.5 * 7.5, -0.25 * 7.5) @ transform)
    with pytest.raises(GridMismatchError, match="pixel corners are shifted"):
        fuse_geotiff(hsi_path, shifted, tmp_path / "out.tif", model, hsi_bands=PICK, progress=False)
    out = fuse_geotiff(
        hsi_path, shifted, tmp_path / "out.tif", model, hsi_bands=PICK, align="resample", progress=False
    )
    with rasterio.open(out) as dst:
        assert dst.tags()["PIFNET_MSI_ALIGNMENT"].startswith("resampled: MSI warped onto the HSI grid / 4")
        assert (dst.height, dst.width) == (48, 88)
        assert np.isfinite(dst.read()).all()
    # shifted 1.5 MSI pixels east without a margin: the warped MSI would miss the HSI's left edge
    write_raster(
        shifted, msi, UTM, Affine.translation(1.5 * 7.5, 0) @ Affine(7.5, 0, 500_120.0, 0, -7.5, 3_300_480.0)
    )
    with pytest.raises(
        GridMismatchError, match=r"does not cover the HSI footprint: it is short by 11\.25 on the left"
    ):
        fuse_geotiff(
            hsi_path, shifted, tmp_path / "o.tif", model, hsi_bands=PICK, align="resample", progress=False
        )
    assert not (tmp_path / "o.tif").exists()


def test_resample_from_another_crs(tmp_path, model, sample):
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    lr, msi, _ = sample
    hsi_path, msi_path = write_pair(tmp_path, lr, msi, margin=(6, 6))
    with rasterio.open(msi_path) as src:
        transform, width, height = calculate_default_transform(
            src.crs, GEO, src.width, src.height, *src.bounds
        )
        warped = np.zeros((3, height, width), np.float32)
        reproject(src.read(), warped, src_transform=src.transform, src_crs=src.crs, dst_transform=transform,
                  dst_crs=GEO, resampling=Resampling.bilinear)  # fmt: skip
    geo = write_raster(tmp_path / "msi_geo.tif", warped, GEO, transform)
    with pytest.raises(GridMismatchError, match="CRS differ"):
        fuse_geotiff(hsi_path, geo, tmp_path / "out.tif", model, hsi_bands=PICK, progress=False)
    out = fuse_geotiff(hsi_path, geo, tmp_path / "out.tif", model, hsi_bands=PICK, align="resample", ratio=4,
                       progress=False)  # fmt: skip
    with rasterio.open(out) as dst, rasterio.open(hsi_path) as hsi:
        assert dst.crs == hsi.crs and dst.transform.almost_equals(hsi.transform @ Affine.scale(0.25))
        assert "from EPSG:4326" in dst.tags()["PIFNET_MSI_ALIGNMENT"]


def test_resample_on_aligned_grids_changes_nothing(tmp_path, model, sample):
    lr, msi, _ = sample
    hsi_path, msi_path = write_pair(tmp_path, lr, msi)
    out = fuse_geotiff(
        hsi_path, msi_path, tmp_path / "b.tif", model, hsi_bands=PICK, align="resample", progress=False
    )
    with rasterio.open(out) as dst:
        np.testing.assert_allclose(dst.read(), reference(model, lr, msi), atol=1e-5, rtol=0)
        assert dst.tags()["PIFNET_MSI_ALIGNMENT"].startswith("aligned (no resampling needed)")


class Exploding(nn.Module):
    """Runs the wrapped model, then raises ``exc`` on forward call number ``after + 1``."""

    def __init__(self, model: nn.Module, after: int, exc: BaseException) -> None:
        super().__init__()
        self.model, self.config, self.after, self.exc, self.calls = model, model.config, after, exc, 0

    def forward(self, lr: torch.Tensor, msi: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.after:
            raise self.exc
        return self.model(lr, msi)


@pytest.mark.parametrize(
    ("where", "exc"),
    [("callback", KeyboardInterrupt), ("forward", KeyboardInterrupt), ("forward", RuntimeError)],
)
def test_interrupted_run_leaves_nothing(tmp_path, model, sample, where, exc):
    lr, msi, _ = sample
    hsi_path, msi_path = write_pair(tmp_path, lr, msi)
    out = tmp_path / "out.tif"
    seen = []

    def callback(done, total):
        seen.append(done)
        if where == "callback" and done == 8:
            raise exc("stop")

    net = Exploding(model, 9, exc("stop")) if where == "forward" else model
    with pytest.raises(exc):
        fuse_geotiff(hsi_path, msi_path, out, net, hsi_bands=PICK, tile_size=16, overlap=0, batch_size=1,
                     callback=callback, progress=False)  # fmt: skip
    assert max(seen) >= 7  # a tile row had been released to the sink before the interruption
    assert listing(tmp_path) == ["hsi.tif", "msi.tif"]


def test_failed_overwrite_keeps_the_old_file(tmp_path, model, sample):
    lr, msi, _ = sample
    hsi_path, msi_path = write_pair(tmp_path, lr, msi)
    out = tmp_path / "out.tif"
    out.write_bytes(b"previous result")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fuse_geotiff(hsi_path, msi_path, out, model, hsi_bands=PICK, progress=False)
    with pytest.raises(KeyboardInterrupt):
        fuse_geotiff(hsi_path, msi_path, out, Exploding(model, 1, KeyboardInterrupt()), hsi_bands=PICK,
                     tile_size=16, overlap=0, batch_size=1, overwrite=True, progress=False)  # fmt: skip
    assert out.read_bytes() == b"previous result"
    fuse_geotiff(hsi_path, msi_path, out, model, hsi_bands=PICK, overwrite=True, progress=False)
    with rasterio.open(out) as dst:
        assert dst.count == len(PICK)
    assert listing(tmp_path) == ["hsi.tif", "msi.tif", "out.tif"]


def _misaligned(folder, lr, msi):
    hsi, msi_path = write_pair(folder, lr, msi)
    with rasterio.open(msi_path, "r+") as dst:
        dst.transform = Affine.translation(2.0, 0.0) @ dst.transform
    return hsi, msi_path


def _non_integer_ratio(folder, lr, msi):
    return write_pair(folder, lr, msi[:, :40, :70], ratio=2.5)  # MSI pixel 12 m


def _other_crs(folder, lr, msi):
    hsi, msi_path = write_pair(folder, lr, msi)
    with rasterio.open(msi_path, "r+") as dst:
        dst.crs = CRS.from_epsg(32617)
    return hsi, msi_path


def _no_crs(folder, lr, msi):
    hsi, msi_path = write_pair(folder, lr, msi)
    with rasterio.open(msi_path) as src:
        data, transform = src.read(), src.transform
    os.remove(msi_path)
    return hsi, write_raster(msi_path, data, None, transform)


def _too_small(folder, lr, msi):
    return write_pair(folder, lr, msi[:, :40, :])[0], write_raster(
        folder / "msi.tif", msi[:, :40, :], UTM, Affine(7.5, 0, 500_120.0, 0, -7.5, 3_300_480.0)
    )


def _missing(folder, lr, msi):
    hsi, _ = write_pair(folder, lr, msi)
    return hsi, folder / "nope.tif"


def _unreadable(folder, lr, msi):
    hsi, msi_path = write_pair(folder, lr, msi)
    msi_path.write_bytes(b"this is not a raster")
    return hsi, msi_path


def _corrupt_block(folder, lr, msi):
    """An MSI whose header is intact but one compressed block in the middle is garbage."""
    hsi, msi_path = write_pair(folder, lr, msi)
    with rasterio.open(msi_path) as src:
        data, profile = src.read(), src.profile
    profile |= {"tiled": True, "blockxsize": 16, "blockysize": 16, "compress": "deflate"}
    with rasterio.open(msi_path, "w", **profile) as dst:
        dst.write(data)
    with rasterio.open(msi_path) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=2))
        size = int(src.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=2))
    raw = bytearray(msi_path.read_bytes())
    raw[offset : offset + size] = bytes(size)  # zeros are not a valid deflate stream
    msi_path.write_bytes(bytes(raw))
    return hsi, msi_path


ERRORS = {
    "misaligned": (
        _misaligned,
        {},
        GridMismatchError,
        r"shifted from the subdivided HSI grid by \+0\.2667 columns",
    ),
    "non-integer-ratio": (_non_integer_ratio, {}, GridMismatchError, "ratio 2.5 is not an integer"),
    "crs-mismatch": (_other_crs, {}, GridMismatchError, "'EPSG:32616', MSI is 'EPSG:32617'"),
    "no-crs": (_no_crs, {}, GridMismatchError, "the MSI has no CRS"),
    "msi-too-small": (_too_small, {}, GridMismatchError, "short by 8 px on the bottom"),
    "missing-file": (_missing, {}, FileNotFoundError, "MSI file .*nope.tif' does not exist"),
    "unreadable-file": (_unreadable, {}, RasterReadError, "cannot read the MSI .* as a raster"),
    "corrupt-block": (_corrupt_block, {}, RasterReadError, r"reading rows .* of '.*msi.tif' failed .* corrupt"),
    "hsi-band-out-of-range": (
        write_pair,
        {"hsi_bands": (1, 73)},
        ShapeMismatchError,
        "index 73 is out of range",
    ),
    "msi-band-zero": (
        write_pair,
        {"msi_bands": (0, 1, 2)},
        ShapeMismatchError,
        "index 0 is out of range: .* 1..3",
    ),
    "model-misfit": (
        write_pair,
        {"hsi_bands": "1-7"},
        ShapeMismatchError,
        "expects hsi_bands=8.* give hsi_bands=7",
    ),
    "given-ratio": (
        write_pair,
        {"ratio": 2},
        GridMismatchError,
        "ratio=2 was given but the pixel sizes give 4",
    ),
    "out-dtype": (write_pair, {"out_dtype": "complex64"}, ValueError, "out_dtype must be one of"),
    "tile-size": (
        write_pair,
        {"tile_size": 12},
        ValueError,
        "tile_size must be 'auto' or a positive multiple of",
    ),
    "align": (write_pair, {"align": "nearest"}, ValueError, "align must be 'error' or 'resample'"),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_errors_are_clear_and_leave_no_file(tmp_path, model, sample, name):
    make, kwargs, exc, message = ERRORS[name]
    lr, msi, _ = sample
    hsi_path, msi_path = make(tmp_path, lr, msi)
    before = listing(tmp_path)
    counting = Exploding(model, 0, AssertionError("a tile ran before the error"))
    kwargs = {"hsi_bands": PICK, "progress": False} | kwargs
    with pytest.raises(exc, match=message):
        fuse_geotiff(hsi_path, msi_path, tmp_path / "out.tif", counting, **kwargs)
    assert counting.calls == 0
    assert listing(tmp_path) == before


def test_integer_without_scale_is_refused(tmp_path, model, sample):
    lr, msi, _ = sample
    hsi = write_raster(tmp_path / "hsi.tif", (lr * 1e4).astype(np.uint16), UTM, Affine(30, 0, 0, 0, -30, 0))
    msi_path = write_raster(tmp_path / "msi.tif", msi, UTM, Affine(7.5, 0, 0, 0, -7.5, 0))
    with pytest.raises(ValueError, match=r"stores integers \(uint16\) without scale metadata; pass scale="):
        fuse_geotiff(hsi, msi_path, tmp_path / "out.tif", model, hsi_bands=PICK, progress=False)
    out = fuse_geotiff(
        hsi, msi_path, tmp_path / "out.tif", model, hsi_bands=PICK, scale=(1e-4, 1.0), progress=False
    )
    with rasterio.open(out) as dst:
        assert dst.scales == (1e-4,) * len(PICK)


def test_envi_input_with_micrometre_wavelengths(tmp_path, model, sample):
    lr, msi, wavelengths = sample
    hsi_t = Affine(30, 0, 1000, 0, -30, 2000)
    envi = write_raster(tmp_path / "hsi.img", lr, UTM, hsi_t, driver="ENVI")
    header = tmp_path / "hsi.hdr"
    microns = ", ".join(f"{w / 1000:.6f}" for w in wavelengths)
    header.write_text(header.read_text() + f"wavelength units = Micrometers\nwavelength = {{{microns}}}\n")
    msi_path = write_raster(tmp_path / "msi.tif", msi, UTM, hsi_t @ Affine.scale(1 / RATIO))
    with rasterio.open(envi) as src:
        info = read_band_info(src, PICK)
    np.testing.assert_allclose(info.wavelengths_nm, [wavelengths[b - 1] for b in PICK], atol=1e-3)
    out = fuse_geotiff(envi, msi_path, tmp_path / "out.tif", model, hsi_bands=PICK, progress=False)
    with rasterio.open(out) as dst:
        assert float(dst.tags(2)["wavelength"]) == pytest.approx(wavelengths[PICK[1] - 1], abs=1e-3)
        assert float(dst.tags(2, ns="IMAGERY")["CENTRAL_WAVELENGTH_UM"]) == pytest.approx(
            wavelengths[PICK[1] - 1] / 1000, abs=1e-5
        )
        np.testing.assert_allclose(dst.read(), reference(model, lr, msi), atol=1e-5)


def test_band_lists():
    assert parse_band_list("1,2,5-8") == (1, 2, 5, 6, 7, 8)
    assert parse_band_list(" 3 , 9-7 ") == (3, 9, 8, 7)
    with pytest.raises(ValueError, match="band list must look like"):
        parse_band_list("1,,2")
    assert select_bands(None, 3) == (1, 2, 3)
    assert select_bands("3,1", 3) == (3, 1)
    with pytest.raises(ShapeMismatchError, match="empty"):
        select_bands((), 3)
    with pytest.raises(ShapeMismatchError, match="out of range"):
        select_bands((1, 2.0), 3)


def test_import_does_not_load_rasterio():
    code = "import sys, pifnet_infer.io.geotiff, pifnet_infer.cli.fuse; print('rasterio' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def write_large_pair(folder: Path, bands: int, lr_side: int = 1024, ratio: int = RATIO) -> tuple[Path, Path]:
    """Smooth synthetic HSI (bands x lr_side^2) and MSI (3 x (ratio*lr_side)^2) as uint16 x 1e-4, in strips."""
    hsi_t = Affine(40.0, 0, 600_000.0, 0, -40.0, 4_000_000.0)
    common = {"driver": "GTiff", "dtype": "uint16", "crs": CRS.from_epsg(32633), "tiled": True}
    paths = folder / "hsi.tif", folder / "msi.tif"
    with rasterio.Env(GDAL_CACHEMAX=64):
        for path, side, count, transform in [
            (paths[0], lr_side, bands, hsi_t), (paths[1], lr_side * ratio, 3, hsi_t @ Affine.scale(1 / ratio))
        ]:  # fmt: skip
            x = np.linspace(0.0, 1.0, side, dtype=np.float32)
            with rasterio.open(
                path, "w", width=side, height=side, count=count, transform=transform, **common
            ) as dst:
                dst.scales = (1e-4,) * count
                for r0 in range(0, side, 512):
                    y = x[r0 : r0 + 512, None]
                    strip = np.stack(
                        [3000 + 2000 * np.sin(6 * y + k) * np.cos(5 * x[None] - k) for k in range(count)]
                    )
                    dst.write(
                        strip.astype(np.uint16), window=rasterio.windows.Window(0, r0, side, strip.shape[1])
                    )
    return paths


#: run in a fresh process by :func:`check_4k_peak_rss` (``{cheap}`` becomes the source of :class:`Cheap`)
PEAK_RSS_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time
    import torch
    from torch import nn
    from pifnet_infer.config import PIFNetConfig
    from pifnet_infer.io.geotiff import fuse_geotiff

    {cheap}
    def peak_rss():
        # VmHWM: this process's own high-water mark (ru_maxrss also counts the parent's RSS inherited at exec)
        try:
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    folder, bands, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    torch.manual_seed(0)
    config = PIFNetConfig(hsi_bands=bands, msi_bands=3, ratio=4, dim=4, d_state=2, expand=1, num_stages=1)
    if kind == "pifnet":
        from pifnet_infer.models import PIFNet

        model = PIFNet(config).eval()
    else:
        torch.set_num_threads(1)  # tiny ops: threads only contend on a shared 2-core machine
        model = Cheap(config).eval()
    baseline = peak_rss()
    start = time.perf_counter()
    fuse_geotiff(f"{folder}/hsi.tif", f"{folder}/msi.tif", f"{folder}/out.tif", model, batch_size=4, progress=False)
    seconds = time.perf_counter() - start
    peak = peak_rss()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"baseline": baseline, "peak": peak, "ru_maxrss": maxrss, "seconds": seconds}))
    """
)


def check_4k_peak_rss(folder: Path, kind: str) -> dict[str, float]:
    """Fuse a 1024^2 x 16 HSI with a 4096^2 x 3 MSI in a fresh process; check the output and its peak RSS.

    ``baseline`` is the process's peak RSS (VmHWM) after importing torch and building the model, ``peak``
    after the run; the output as one float32 array would be 1 GiB.
    """
    bands = 16
    write_large_pair(folder, bands)
    script = PEAK_RSS_SCRIPT.replace("{cheap}", inspect.getsource(Cheap))
    result = subprocess.run(
        [sys.executable, "-c", script, str(folder), str(bands), kind],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    output_bytes = bands * 4096 * 4096 * 4
    with rasterio.open(folder / "out.tif") as dst:
        assert (dst.count, dst.height, dst.width) == (bands, 4096, 4096)
        corner = dst.read(window=rasterio.windows.Window(4000, 4000, 96, 96))
    assert np.isfinite(corner).all() and corner.std() > 0
    print(f"peak RSS {stats['peak'] / 2**20:.0f} MiB (ru_maxrss {stats['ru_maxrss'] / 2**20:.0f} MiB), baseline "
          f"{stats['baseline'] / 2**20:.0f} MiB, output array {output_bytes / 2**20:.0f} MiB, fuse {stats['seconds']:.1f} s")  # fmt: skip
    assert stats["peak"] < 0.65 * output_bytes
    assert stats["peak"] - stats["baseline"] < 0.4 * output_bytes
    return stats


def test_4k_output_streams_with_bounded_memory(tmp_path):
    """Memory of the GeoTIFF path with a model as cheap as possible (the path's buffers do not depend on it)."""
    check_4k_peak_rss(tmp_path, "cheap")


@pytest.mark.slow
def test_4k_output_streams_with_bounded_memory_pifnet(tmp_path):
    """The same with a real (tiny, random-init) PIF-Net: many minutes on 2 CPU cores."""
    check_4k_peak_rss(tmp_path, "pifnet")


SHARED_SCENES = ["jasper_ridge", "samson", "enmap_potsdam"]


@pytest.mark.shared
@pytest.mark.parametrize("name", SHARED_SCENES)
def test_shared_scene_matches_fuse(tmp_path, name):
    folder = SHARED / "data" / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (../shared holds the developer data sets)")
    cube = np.load(folder / "cube.npy").astype(np.float32).transpose(2, 0, 1)[:, :64, :64]
    meta = json.loads((folder / "meta.json").read_text())
    scale = (
        float(meta.get("value_scale_factor", 1.0))
        if isinstance(meta.get("value_scale_factor"), (int, float))
        else 1.0
    )
    lr, msi = simulate(cube * scale, RATIO)
    wavelengths = meta.get("wavelengths_nm")
    hsi_path, msi_path = write_pair(
        tmp_path, lr, msi, crs=GEO, origin=(13.05, 52.40), pixel=0.0003,
        wavelengths=None if wavelengths is None else np.asarray(wavelengths),
    )  # fmt: skip
    picks = tuple(int(b) for b in np.linspace(1, cube.shape[0], len(PICK)).round())
    net = tiny_model()
    out = fuse_geotiff(hsi_path, msi_path, tmp_path / "out.tif", net, hsi_bands=picks, progress=False)
    with rasterio.open(out) as dst:
        got = dst.read()
        assert dst.crs == GEO and (dst.height, dst.width) == (64, 64)
        if wavelengths is not None:
            assert float(dst.tags(1)["wavelength"]) == pytest.approx(wavelengths[picks[0] - 1], abs=1e-3)
    expected = fuse(lr[[b - 1 for b in picks]], msi, net, progress=False)
    np.testing.assert_allclose(got, expected, atol=1e-5)

"""fuse_dask / fuse_to_zarr: equality with fuse() for any chunking, xarray geometry, errors, model shipping, a killed worker."""

from __future__ import annotations

import collections
import itertools
import logging
import os
import sys

import numpy as np
import pytest
import torch
from torch import nn

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
xr = pytest.importorskip("xarray")
cloudpickle = pytest.importorskip("cloudpickle")

from test_fuse import CountingModel, simulated_scene  # noqa: E402
from test_geotiff import tiny_model  # noqa: E402

from pifnet_infer.config import PIFNetConfig  # noqa: E402
from pifnet_infer.dask import fuse_dask, fuse_to_zarr, tile_overhead  # noqa: E402
from pifnet_infer.dask.blocks import axis_tiles, chunk_bounds  # noqa: E402
from pifnet_infer.dask.workers import model_token, placements  # noqa: E402
from pifnet_infer.errors import GridMismatchError, PifnetPerformanceWarning, ShapeMismatchError  # noqa: E402
from pifnet_infer.fusion import fuse  # noqa: E402
from pifnet_infer.tiling.grid import TileGrid  # noqa: E402

# worker processes cannot import this test module: its classes travel by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

_logger = logging.getLogger(__name__)
RATIO = 4
BANDS = 8
#: LR chunks that divide neither side of the 30 x 44 LR scene
CHUNKS = (BANDS, 11, 13)


class TileMean(nn.Module):
    """Cheap, and its output depends on where each tile lies (the tile's MSI mean): wrong tiles or weights show."""

    def __init__(self, bands: int = BANDS) -> None:
        super().__init__()
        self.config = PIFNetConfig(hsi_bands=bands, msi_bands=3, ratio=RATIO, dim=4, d_state=2)
        self.gain = nn.Parameter(torch.tensor(0.5))

    def forward(self, lr: torch.Tensor, msi: torch.Tensor) -> torch.Tensor:
        up = lr.repeat_interleave(RATIO, 2).repeat_interleave(RATIO, 3)
        return up + self.gain * msi.mean(dim=(1, 2, 3), keepdim=True) + 0.1 * msi[:, :1]


class CountUnpickle(nn.Module):
    """Wraps a model; every unpickling appends this process's pid to ``log`` (how often the model was shipped)."""

    def __init__(self, model: nn.Module, log: str) -> None:
        super().__init__()
        self.model, self.config, self.log = model, model.config, log

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")

    def forward(self, lr: torch.Tensor, msi: torch.Tensor) -> torch.Tensor:
        return self.model(lr, msi)


class KillOnce(nn.Module):
    """Kills its worker process at its first forward anywhere (a flag file makes it once per test)."""

    def __init__(self, model: nn.Module, flag: str) -> None:
        super().__init__()
        self.model, self.config, self.flag = model, model.config, flag

    def forward(self, lr: torch.Tensor, msi: torch.Tensor) -> torch.Tensor:
        try:
            with open(self.flag, "x") as f:
                f.write(str(os.getpid()))
        except FileExistsError:
            return self.model(lr, msi)
        os._exit(1)


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    """(lr [8, 30, 44], msi [3, 120, 176]) from the AVIRIS sample mirrored up: a small mosaic."""
    _, lr, msi = simulated_scene((120, 176), bands=BANDS)
    return lr, msi


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return tiny_model(BANDS)


def chunked(lr: np.ndarray, msi: np.ndarray, chunks=CHUNKS) -> tuple:
    return da.from_array(lr, chunks=chunks), da.from_array(msi, chunks=(3, 37, 41))


# --- tile arithmetic -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [3, 8, 9, 30, 47, 64])
@pytest.mark.parametrize(("tile", "overlap"), [(16, 0), (32, 8), (32, 16), (64, 24), (48, 40)])
def test_block_regions_reproduce_the_scene_grid(size, tile, overlap):
    """Every block's tile region, taken as a scene, has the scene's tiles that touch the block, nothing else."""
    axis = axis_tiles(size, RATIO, tile, overlap, "cosine" if overlap else "none")
    grid = TileGrid((size, 1), RATIO, tile, overlap)
    assert list(axis.origins) == grid.lr_row_origins
    for chunk in (1, 2, 5, 7, size):
        bounds = chunk_bounds([chunk] * (size // chunk) + ([size % chunk] if size % chunk else []))
        for start, stop in itertools.pairwise(bounds):
            r0, r1 = axis.region(start, stop)  # raises if the region's grid is not the scene's
            local = TileGrid((r1 - r0, 1), RATIO, tile, overlap).lr_row_origins
            spans = [axis.spans[grid.lr_row_origins.index(o + r0)] for o in local]
            assert all(s < stop * RATIO and e > start * RATIO for s, e in spans)  # all touch the block
            assert r0 <= start and stop <= max(r1, size)


def test_tile_overhead():
    grid = TileGrid((256, 256), RATIO, 128, 32)
    assert tile_overhead((256, 256), ((256,), (256,)), ratio=RATIO, tile_size=128, overlap=32) == 1.0
    overhead = tile_overhead((256, 256), ((64,) * 4, (64,) * 4), ratio=RATIO, tile_size=128, overlap=32)
    touching = [len(axis_tiles(256, RATIO, 128, 32, "cosine").touching(a, a + 64)) for a in range(0, 256, 64)]
    assert overhead == pytest.approx(sum(touching) ** 2 / len(grid))
    assert overhead > 1.5
    with pytest.raises(ValueError, match="add up"):
        tile_overhead((256, 256), ((64,), (256,)), ratio=RATIO, tile_size=128, overlap=32)


# --- equality with fuse() --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunks", "tile", "overlap"),
    [
        ((BANDS, 11, 13), 32, 8),
        ((BANDS, 11, 13), 32, 0),
        ((4, 9, 30), 64, 24),
        ((BANDS, 30, 44), 48, 16),
        ((BANDS, 17, 8), 16, 8),
    ],
)
def test_any_chunking_equals_fuse(scene, chunks, tile, overlap):
    """A position-dependent model, threaded scheduler: chunks that do not divide the scene change nothing."""
    lr, msi = scene
    net = TileMean()
    expected = fuse(lr, msi, net, tile_size=tile, overlap=overlap, progress=False)
    got = fuse_dask(*chunked(lr, msi, chunks), net, tile_size=tile, overlap=overlap)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_array_equal(got.compute(scheduler="threads"), expected)


def test_slow_malloc_setting_is_warned(monkeypatch):
    from pifnet_infer.dask import workers

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    monkeypatch.setattr(workers, "_MODELS", collections.OrderedDict())
    with pytest.warns(PifnetPerformanceWarning, match="MALLOC_TRIM_THRESHOLD_"):
        workers.worker_model(TileMean(), "token", torch.device("cpu"))


def test_callers_model_is_not_modified(scene):
    lr, msi = scene
    net = TileMean().train()
    got = fuse_dask(*chunked(lr, msi), net, tile_size=32, overlap=8).compute(scheduler="threads")
    assert net.training
    np.testing.assert_array_equal(got, fuse(lr, msi, TileMean(), tile_size=32, overlap=8, progress=False))


class Shifted(TileMean):
    """Same tensors as TileMean, another result: the worker cache must tell them apart."""

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, lr: torch.Tensor, msi: torch.Tensor) -> torch.Tensor:
        return super().forward(lr, msi) + self.shift


def test_models_with_equal_tensors_are_not_confused(scene):
    lr, msi = scene
    a = fuse_dask(*chunked(lr, msi), Shifted(0.0), tile_size=32, overlap=8).compute(scheduler="threads")
    b = fuse_dask(*chunked(lr, msi), Shifted(1.0), tile_size=32, overlap=8).compute(scheduler="threads")
    np.testing.assert_allclose(b - a, 1.0, rtol=0, atol=1e-5)


def test_scene_smaller_than_a_tile(scene):
    lr, msi = scene[0][:, :5, :7], scene[1][:, :20, :28]
    expected = fuse(lr, msi, TileMean(), tile_size=32, overlap=8, progress=False)
    got = fuse_dask(*chunked(lr, msi, (BANDS, 3, 4)), TileMean(), tile_size=32, overlap=8)
    np.testing.assert_array_equal(got.compute(scheduler="sync"), expected)


def test_nodata_integer_inputs_and_units(scene):
    lr, msi = (np.round(a * 10000).astype(np.int16) for a in scene)
    lr[:, 3, 5] = -1
    msi[:, 70:73, 100] = -1
    kwargs = {"tile_size": 32, "overlap": 8, "scale": 1e-4, "offset": 0.01, "nodata": -1.0}
    expected = fuse(lr, msi, TileMean(), progress=False, **kwargs)
    got = fuse_dask(*chunked(lr, msi), TileMean(), **kwargs).compute(scheduler="threads")
    assert (got == -1).sum() == (expected == -1).sum() > 0
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_nan_pixels(scene):
    lr, msi = (a.copy() for a in scene)
    lr[2, 20, 30] = np.nan
    expected = fuse(lr, msi, TileMean(), tile_size=32, overlap=8, progress=False)
    got = fuse_dask(*chunked(lr, msi), TileMean(), tile_size=32, overlap=8).compute(scheduler="threads")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_pifnet_on_a_local_cluster_equals_fuse(scene, model, dask_client):
    """The tiny PIF-Net on 2 worker processes, chunks that do not divide the scene: equal to fuse() within 1e-5."""
    lr, msi = scene[0][:, :20, :28], scene[1][:, :80, :112]
    expected = fuse(lr, msi, model, tile_size=32, overlap=8, progress=False)
    got = fuse_dask(*chunked(lr, msi, (BANDS, 9, 11)), model, tile_size=32, overlap=8)
    assert len(got.chunks[1]) > 1 and len(got.chunks[2]) > 1
    result = got.compute()
    error = float(np.abs(result - expected).max())
    _logger.warning(
        "max |fuse_dask - fuse|, tiny PIF-Net, 80x112 HR, blocks %s, 2 workers: %.3g", got.chunks[1:], error
    )
    assert error <= 1e-5
    placed = dask_client.run(placements)
    assert all(
        f"{model_token(model)}@cpu" in per_worker for per_worker in placed.values()
    )  # both computed blocks


def test_model_travels_once_per_worker(scene, dask_client, tmp_path):
    lr, msi = scene
    log = tmp_path / "unpickled.txt"
    wrapped = CountUnpickle(TileMean(), str(log))
    got = fuse_dask(*chunked(lr, msi, (BANDS, 8, 11)), wrapped, tile_size=32, overlap=8)
    got.compute()
    unpickled = collections.Counter(int(pid) for pid in log.read_text().split())
    workers = set(dask_client.run(os.getpid).values())
    assert got.numblocks[1] * got.numblocks[2] >= 12
    # at most once per worker process, not once per block (the client/scheduler process may also unpickle the graph)
    assert 1 <= sum(unpickled[pid] for pid in workers) <= 2
    assert all(unpickled[pid] <= 1 for pid in workers)
    counts = dask_client.run(placements)
    assert all(n == 1 for per_worker in counts.values() for n in per_worker.values())


def test_a_killed_worker_loses_nothing(scene, dask_client, tmp_path):
    """A worker process dies at its first tile; Dask reruns its blocks elsewhere; the result still equals fuse()."""
    lr, msi = scene
    flag = tmp_path / "killed.pid"
    expected = fuse(lr, msi, TileMean(), tile_size=32, overlap=8, progress=False)
    before = set(dask_client.scheduler_info()["workers"])
    result = fuse_dask(*chunked(lr, msi), KillOnce(TileMean(), str(flag)), tile_size=32, overlap=8).compute()
    killed = int(flag.read_text())
    assert killed != os.getpid()
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)  # that worker process is gone
    np.testing.assert_array_equal(result, expected)
    dask_client.wait_for_workers(2, timeout=60)
    assert set(dask_client.scheduler_info()["workers"]) != before  # the nanny replaced it


# --- xarray ----------------------------------------------------------------------------------------


def dataarrays(lr: np.ndarray, msi: np.ndarray, *, crs: str | None = "EPSG:32616", pixel: float = 30.0):
    """LR/HR DataArrays on aligned grids (pixel centres, north up), with a wavelength coordinate on the HSI."""
    x0, y0 = 500_000.0, 3_300_000.0
    hr = pixel / RATIO

    def make(a, step, name, bands):
        h, w = a.shape[1:]
        coords = {
            "band": np.arange(1, a.shape[0] + 1),
            "y": y0 - step * (np.arange(h) + 0.5),
            "x": x0 + step * (np.arange(w) + 0.5),
        }
        out = xr.DataArray(
            a, dims=("band", "y", "x"), coords=coords, name=name, attrs={"units": "reflectance"}
        )
        if bands:
            out = out.assign_coords(wavelength=("band", np.linspace(450.0, 900.0, a.shape[0])))
        if crs is not None:
            out = out.rio.write_crs(crs)
        return out.chunk({"band": -1, "y": 11 if step == pixel else 50, "x": 13 if step == pixel else 50})

    return make(lr, pixel, "hsi", True), make(msi, hr, "msi", False)


def test_dataarray_geometry_and_values(scene):
    pytest.importorskip("rioxarray")
    lr, msi = scene
    lr_xr, msi_xr = dataarrays(lr, msi)
    out = fuse_dask(lr_xr, msi_xr, TileMean(), tile_size=32, overlap=8)
    assert out.dims == ("band", "y", "x") and out.shape == (BANDS, 120, 176)
    assert out.name == "hsi" and out.attrs["units"] == "reflectance"
    np.testing.assert_array_equal(out.wavelength, lr_xr.wavelength)
    np.testing.assert_allclose(out.x, msi_xr.x, rtol=0, atol=1e-6)  # HR centres = the MSI's own grid
    np.testing.assert_allclose(out.y, msi_xr.y, rtol=0, atol=1e-6)
    assert out.rio.crs == lr_xr.rio.crs
    assert np.isnan(out.rio.nodata) and "_FillValue" not in lr_xr.attrs
    assert out.rio.transform() == pytest.approx(msi_xr.rio.transform())
    np.testing.assert_array_equal(
        out.values, fuse(lr, msi, TileMean(), tile_size=32, overlap=8, progress=False)
    )


def test_zarr_store_is_atomic_and_complete(scene, tmp_path):
    pytest.importorskip("zarr")
    pytest.importorskip("rioxarray")
    lr, msi = scene
    lr_xr, msi_xr = dataarrays(lr, msi)
    store = tmp_path / "mosaic.zarr"
    assert fuse_to_zarr(lr_xr, msi_xr, store, TileMean(), tile_size=32, overlap=8) == store
    back = xr.open_zarr(store)["hsi"]
    np.testing.assert_array_equal(
        back.values, fuse(lr, msi, TileMean(), tile_size=32, overlap=8, progress=False)
    )
    np.testing.assert_allclose(back.x, msi_xr.x)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fuse_to_zarr(lr_xr, msi_xr, store, TileMean(), tile_size=32, overlap=8)
    plain = tmp_path / "plain.zarr"
    fuse_to_zarr(*chunked(lr, msi), plain, TileMean(), tile_size=32, overlap=8)
    fuse_to_zarr(*chunked(lr, msi), plain, TileMean(), tile_size=16, overlap=8, overwrite=True)
    np.testing.assert_array_equal(
        da.from_zarr(str(plain)).compute(), fuse(lr, msi, TileMean(), tile_size=16, overlap=8, progress=False)
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mosaic.zarr", "plain.zarr"]


# --- errors, all before any tile runs --------------------------------------------------------------


def _errors(lr, msi):
    pytest.importorskip("rioxarray")
    lr_xr, msi_xr = dataarrays(lr, msi)
    lr_d, msi_d = chunked(lr, msi)
    inf = lr.copy()
    inf[0, 0, 0] = np.inf
    return {
        "numpy": (TypeError, "dask array or an xarray", (lr, msi), {}),
        "mixed": (TypeError, "both", (lr_d, msi_xr), {}),
        "in-memory DataArray": (TypeError, "chunk", (lr_xr.compute(), msi_xr.compute()), {}),
        "dims": (ShapeMismatchError, "transpose", (lr_xr.transpose("y", "x", "band"), msi_xr), {}),
        "ratio": (ShapeMismatchError, "r times", (lr_d, msi_d[:, :, :170]), {}),
        "bands": (ShapeMismatchError, "hsi_bands=8", (lr_d[:5], msi_d), {}),
        "integer": (ValueError, "scale=", (lr_d.astype(np.int16), msi_d), {}),
        "infinite": (ValueError, "infinite", (da.from_array(inf, chunks=CHUNKS), msi_d), {}),
        "tile": (ValueError, "tile_size", (lr_d, msi_d), {"tile_size": 30}),
        "crs": (GridMismatchError, "CRS", (lr_xr, msi_xr.rio.write_crs("EPSG:4326")), {}),
        "off-grid": (
            GridMismatchError,
            "reproject_match",
            (lr_xr, msi_xr.assign_coords(x=msi_xr.x + 3.0)),
            {},
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "numpy",
        "mixed",
        "in-memory DataArray",
        "dims",
        "ratio",
        "bands",
        "integer",
        "infinite",
        "tile",
        "crs",
        "off-grid",
    ],
)
def test_errors_come_before_any_tile(scene, case):
    exc, match, args, kwargs = _errors(*scene)[case]
    counting = CountingModel(TileMean())
    with pytest.raises(exc, match=match):
        fuse_dask(*args, counting, **kwargs)
    assert counting.calls == 0


def test_import_pifnet_infer_does_not_import_dask():
    import subprocess

    code = "import sys, pifnet_infer; pifnet_infer.fuse; assert 'dask' not in sys.modules and 'distributed' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_weights_path(scene, tmp_path):
    """A weight file works like in fuse(): resolved on the client and shipped, so workers need no copy of it."""
    from pifnet_infer.weights import save_weights

    lr, msi = scene
    net = tiny_model(BANDS, seed=3)
    path = save_weights(net, tmp_path / "tiny.safetensors")
    got = fuse_dask(*chunked(lr, msi), path, tile_size=32, overlap=8)
    path.unlink()
    got = got.compute(scheduler="threads")
    np.testing.assert_allclose(
        got, fuse(lr, msi, net, tile_size=32, overlap=8, progress=False), rtol=0, atol=1e-6
    )

"""fuse_many on a LocalCluster: one task per scene, equality with fuse(), resume, a killed worker, failure reports."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
rasterio = pytest.importorskip("rasterio")

from test_dask import BANDS, KillOnce, TileMean  # noqa: E402  (test_dask's classes travel to workers by value)
from test_fuse import simulated_scene  # noqa: E402
from test_geotiff import tiny_model, write_pair  # noqa: E402

from pifnet_infer.dask import fuse_many, verify_output  # noqa: E402
from pifnet_infer.fusion import fuse  # noqa: E402
from pifnet_infer.weights import save_weights  # noqa: E402

TILING = {"tile_size": 32, "overlap": 8}


@pytest.fixture(scope="module")
def crops() -> list[tuple[np.ndarray, np.ndarray]]:
    """Four different (lr [8, 10, 12], msi [3, 40, 48]) scenes cut from the AVIRIS sample mosaic."""
    _, lr, msi = simulated_scene((120, 176), bands=BANDS)
    return [
        (lr[:, r : r + 10, c : c + 12], msi[:, 4 * r : 4 * r + 40, 4 * c : 4 * c + 48])
        for r, c in ((0, 0), (5, 20), (18, 7), (20, 30))
    ]


def write_scenes(folder: Path, crops) -> list[tuple[Path, Path]]:
    pairs = []
    for i, (lr, msi) in enumerate(crops):
        sub = folder / f"scene{i}"
        sub.mkdir()
        hsi, msi_path = write_pair(sub, lr, msi)
        hsi, msi_path = hsi.rename(sub / f"hsi{i}.tif"), msi_path.rename(sub / f"msi{i}.tif")
        pairs.append((hsi, msi_path, f"scene{i}.tif"))
    return pairs


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_scenes_then_resume_recomputes_only_what_is_missing(dask_client, crops, tmp_path):
    net = tiny_model(BANDS)
    weights = save_weights(
        net, tmp_path / "tiny.safetensors"
    )  # by path: each worker loads it once (load_model cache)
    pairs = write_scenes(tmp_path, crops)
    out = tmp_path / "out"
    out.mkdir()
    report = fuse_many(pairs, out, str(weights), client=dask_client, progress=False, **TILING)
    assert report.ok and len(report.done) == 4 and not report.skipped, report.summary()
    assert len({r.worker for r in report.done}) == 2  # both workers took scenes
    for i, (lr, msi) in enumerate(crops):
        np.testing.assert_allclose(
            read(out / f"scene{i}.tif"), fuse(lr, msi, net, progress=False, **TILING), rtol=0, atol=1e-6
        )

    # an interrupted run: one output missing, one truncated, a temporary folder left by a killed attempt
    (out / "scene0.tif").unlink()
    data = (out / "scene1.tif").read_bytes()
    (out / "scene1.tif").write_bytes(data[: len(data) // 2])
    (out / ".scene2.tif.x1y2.pifnet-tmp").mkdir()
    kept = {i: (out / f"scene{i}.tif").stat().st_mtime_ns for i in (2, 3)}
    again = fuse_many(pairs, out, str(weights), client=dask_client, progress=False, **TILING)
    assert sorted(r.out.name for r in again.done) == ["scene0.tif", "scene1.tif"]
    assert sorted(r.out.name for r in again.skipped) == ["scene2.tif", "scene3.tif"]
    assert "replaced" in next(r.reason for r in again.done if r.out.name == "scene1.tif")
    assert {i: (out / f"scene{i}.tif").stat().st_mtime_ns for i in (2, 3)} == kept  # untouched
    assert listing(out) == [f"scene{i}.tif" for i in range(4)]
    for i in (0, 1):
        lr, msi = crops[i]
        np.testing.assert_allclose(
            read(out / f"scene{i}.tif"), fuse(lr, msi, net, progress=False, **TILING), rtol=0, atol=1e-6
        )
    forced = fuse_many(
        pairs[:1], out, str(weights), client=dask_client, progress=False, overwrite=True, **TILING
    )
    assert len(forced.done) == 1 and forced.done[0].reason == "replaced: overwrite=True"


def test_a_killed_worker_loses_and_duplicates_nothing(dask_client, crops, tmp_path):
    """The first tile anywhere kills its worker process; every scene still ends up written once and right."""
    flag = tmp_path / "killed.pid"
    pairs = write_scenes(tmp_path, crops)
    out = tmp_path / "out"
    out.mkdir()
    report = fuse_many(
        pairs, out, KillOnce(TileMean(), str(flag)), client=dask_client, progress=False, **TILING
    )
    killed = int(flag.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)
    assert report.ok and len(report.done) == 4, report.summary()
    assert listing(out) == [f"scene{i}.tif" for i in range(4)]  # no duplicate, no temporary folder left
    for i, (lr, msi) in enumerate(crops):
        np.testing.assert_array_equal(
            read(out / f"scene{i}.tif"), fuse(lr, msi, TileMean(), progress=False, **TILING)
        )
    dask_client.wait_for_workers(2, timeout=60)


def test_failures_are_reported_not_raised(dask_client, crops, tmp_path):
    pairs = write_scenes(tmp_path, crops[:2])
    (tmp_path / "few").mkdir()
    few = write_pair(tmp_path / "few", crops[2][0][:5], crops[2][1])  # 5 HSI bands: the model needs 8
    jobs = [*pairs, (*few, "few.tif"), (tmp_path / "nope.tif", pairs[0][1], "nope.tif")]
    out = tmp_path / "out"
    out.mkdir()
    report = fuse_many(jobs, out, TileMean(), client=dask_client, retries=0, progress=False, **TILING)
    assert len(report.done) == 2
    reasons = {r.out.name: r.reason for r in report.failed}
    assert reasons["nope.tif"].startswith("input not found")
    assert "ShapeMismatchError" in reasons["few.tif"] and "hsi_bands=8" in reasons["few.tif"]
    assert "2 done, 0 skipped, 2 failed" in report.summary()
    assert listing(out) == ["scene0.tif", "scene1.tif"]


def test_argument_errors(dask_client, tmp_path):
    pair = (tmp_path / "a.tif", tmp_path / "b.tif")
    with pytest.raises(TypeError, match="tile_sise"):
        fuse_many([pair], tmp_path, client=dask_client, tile_sise=32)
    with pytest.raises(ValueError, match="both write"):
        fuse_many([pair, (tmp_path / "c" / "a.tif", tmp_path / "b.tif")], tmp_path, client=dask_client)
    with pytest.raises(FileNotFoundError, match="create it"):
        fuse_many([pair], tmp_path / "missing", client=dask_client)
    with pytest.raises(ValueError, match="retries"):
        fuse_many([pair], tmp_path, client=dask_client, retries=-1)


def test_verify_output(crops, tmp_path):
    from pifnet_infer.io.geotiff import fuse_geotiff

    (hsi, msi, _), (_, msi2, _) = write_scenes(tmp_path, crops[:2])
    out = fuse_geotiff(hsi, msi, tmp_path / "o.tif", TileMean(), progress=False, **TILING)
    assert verify_output(out, hsi, msi) is None
    assert verify_output(out, hsi, msi, hsi_bands=[1, 2]) is not None
    assert verify_output(out, hsi, msi, ratio=2) is not None
    assert "PIFNET_MODEL" in verify_output(out, hsi, msi, model="pifnet-vnir-rgb-x4")
    assert "expected" in verify_output(out, hsi, msi2)  # the tag names scene0's MSI
    assert "not written by pifnet-infer" in verify_output(hsi, hsi, msi)
    (tmp_path / "junk.tif").write_bytes(b"not a raster")
    assert "cannot be read" in verify_output(tmp_path / "junk.tif", hsi, msi)

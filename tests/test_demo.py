"""``pifnet-infer demo``: files, georeference, printed scores, honesty note, exit codes."""

from __future__ import annotations

import contextlib
import io
import json
import re

import numpy as np
import pytest
import rasterio

from pifnet_infer.cli import main
from pifnet_infer.data import load_sample
from pifnet_infer.demo import DEMO_CRS, DEMO_ORIGIN, TEST_STRIPS
from pifnet_infer.fusion import fuse
from pifnet_infer.weights import get_weight

METHODS = ("bicubic", "GLP-HS", "PIF-Net")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """Run the CLI once; (exit code, stdout, output folder)."""
    out = tmp_path_factory.mktemp("demo") / "out"
    buffer = io.StringIO()  # capsys is function-scoped: capture by hand for a module-scoped run
    with contextlib.redirect_stdout(buffer):
        code = main(["demo", "--out-dir", str(out), "--no-progress"])
    return code, buffer.getvalue(), out


def _official_psnr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """The official protocol's PSNR, written out: estimate clamped to [0, 1], peak = reference max."""
    mse = np.mean((np.clip(estimate.astype(np.float64), 0, 1) - reference.astype(np.float64)) ** 2)
    return float(10 * np.log10(reference.max() ** 2 / mse))


def test_exit_code_and_files(demo_run) -> None:
    code, _, out = demo_run
    assert code == 0
    for name in ("lr_hsi.tif", "hr_msi.tif", "fused.tif", "metrics.json", "demo.png"):
        assert (out / name).is_file(), name
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "demo.png").stat().st_size < 300_000


def test_outputs_are_georeferenced_on_the_made_up_grid(demo_run) -> None:
    _, _, out = demo_run
    with rasterio.open(out / "lr_hsi.tif") as lr, rasterio.open(out / "fused.tif") as fused:
        assert lr.crs.to_string() == fused.crs.to_string() == DEMO_CRS
        assert (lr.transform.a, lr.transform.c, lr.transform.f) == (4.0, *DEMO_ORIGIN)
        assert (fused.transform.a, -fused.transform.e) == (1.0, 1.0)
        assert (fused.transform.c, fused.transform.f) == DEMO_ORIGIN
        assert (fused.height, fused.width) == (lr.height * 4, lr.width * 4)
        assert fused.count == lr.count
        assert "made-up" in lr.tags()["PIFNET_DEMO_GEOREFERENCE"]
        wl_in = [float(lr.tags(b)["wavelength"]) for b in range(1, lr.count + 1)]
        wl_out = [float(fused.tags(b)["wavelength"]) for b in range(1, fused.count + 1)]
    assert wl_out == wl_in
    assert 395 <= min(wl_in) and max(wl_in) <= 1005 and wl_in == sorted(wl_in)


def test_scores_printed_match_an_independent_psnr(demo_run) -> None:
    _, stdout, out = demo_run
    scores = json.loads((out / "metrics.json").read_text())["scores"]
    assert set(scores) == set(METHODS)
    for method in METHODS:
        row = re.search(rf"^{re.escape(method)}\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", stdout, re.M)
        assert row is not None, f"no printed row for {method}:\n{stdout}"
        assert float(row.group(1)) == pytest.approx(scores[method]["PSNR"], abs=1e-4)
        assert float(row.group(3)) == pytest.approx(scores[method]["SAM"], abs=1e-4)

    # Rebuild the reference independently from the sample and check PIF-Net's PSNR from the written file.
    sample = load_sample("aviris_gatorsense_vi")
    with rasterio.open(out / "fused.tif") as src:
        fused = src.read()
        wl = np.array([float(src.tags(b)["wavelength"]) for b in range(1, src.count + 1)])
    (r0, r1), (c0, c1) = TEST_STRIPS["aviris_gatorsense_vi"]
    index = [int(np.flatnonzero(np.isclose(sample.wavelengths_nm, w, atol=5e-3))[0]) for w in wl]
    reference = np.maximum(sample.cube[index, r0:r1, c0:c1], 0)
    assert _official_psnr(reference, fused) == pytest.approx(scores["PIF-Net"]["PSNR"], abs=1e-3)


def test_honest_note_compares_with_glp(demo_run) -> None:
    _, stdout, out = demo_run
    scores = json.loads((out / "metrics.json").read_text())["scores"]
    gap = scores["GLP-HS"]["PSNR"] - scores["PIF-Net"]["PSNR"]
    assert "experiment" in stdout
    assert f"{abs(gap):.2f} dB" in stdout
    held_out = -get_weight("pifnet-vnir-rgb-x4").metrics["target"]["psnr_gap_db"]
    assert f"{held_out:.1f} dB PSNR below GLP-HS" in stdout


def test_geotiff_pipeline_gives_what_fuse_gives_on_arrays(demo_run) -> None:
    _, _, out = demo_run
    with rasterio.open(out / "lr_hsi.tif") as lr_src, rasterio.open(out / "hr_msi.tif") as msi_src:
        lr, msi = lr_src.read(), msi_src.read()
        wl = [float(lr_src.tags(b)["wavelength"]) for b in range(1, lr_src.count + 1)]
    with rasterio.open(out / "fused.tif") as src:
        fused = src.read()
    expected = fuse(lr, msi, "pifnet-vnir-rgb-x4", hsi_wavelengths_nm=wl, device="cpu", progress=False)
    np.testing.assert_allclose(fused, expected, atol=1e-5)


@pytest.mark.parametrize("name", sorted(TEST_STRIPS))
def test_demo_strips_are_the_training_test_strips(name) -> None:
    from training.data import split_slices

    sample = load_sample(name)
    splits = split_slices(*sample.cube.shape[1:], 4, sample.mask)
    rows, cols = splits["test"]
    assert TEST_STRIPS[name] == ((rows.start, rows.stop), (cols.start, cols.stop))
    if sample.mask is not None:
        (r0, r1), (c0, c1) = TEST_STRIPS[name]
        assert sample.mask[r0:r1, c0:c1].all()


def test_unknown_sample_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--sample", "nope"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_no_figure_writes_no_png(tmp_path, capsys) -> None:
    assert (
        main(
            [
                "demo",
                "--out-dir",
                str(tmp_path),
                "--no-figure",
                "--no-progress",
                "--sample",
                "muufl_gulfport_sub",
            ]
        )
        == 0
    )
    assert not (tmp_path / "demo.png").exists()
    assert (tmp_path / "fused.tif").is_file()
    assert "muufl_gulfport_sub" in capsys.readouterr().out

"""``pifnet-infer fuse``, ``info`` and ``env``: outputs, exit codes (0 ok, 1 error, 2 usage), one-line errors."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from test_geotiff import PICK, RATIO, listing, simulate, tiny_model, write_pair

from pifnet_infer.cli import main
from pifnet_infer.data import load_sample
from pifnet_infer.fusion import fuse
from pifnet_infer.weights import save_weights

NAME = "pifnet-test-x4"


@pytest.fixture(scope="module")
def sample():
    s = load_sample("muufl_gulfport_sub")
    lr, msi = simulate(s.cube, RATIO)
    return lr, msi, s.wavelengths_nm


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, sample):
    """A manifest with one unpublished tiny weight (file in weights/ beside it) that fits the PICK bands."""
    folder = tmp_path_factory.mktemp("zoo")
    (folder / "weights").mkdir()
    model = tiny_model()
    path = save_weights(model, folder / "weights" / "tiny.safetensors")
    entry = {
        "name": NAME, "repo_id": "test/tiny", "filename": path.name, "revision": None,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "size_bytes": path.stat().st_size,
        "format": "safetensors", "config": model.config.to_dict(),
        "hsi_wavelengths_nm": [float(sample[2][b - 1]) for b in PICK], "hsi_fwhm_nm": None,
        "msi_srf": "band-group-means", "msi_bands_description": None,
        "input_range": {"scale": 1.0, "offset": 0.0, "min": 0.0, "max": 1.0, "units": "reflectance"},
        "training": {"data": "none", "protocol": "random init", "command": "none", "commit": "none"},
        "metrics": {"protocol": "none"}, "licence": "MIT", "bundled": False,
        "description": "random-init test weight", "model_card": None,
    }  # fmt: skip
    manifest = folder / "weights_manifest.json"
    manifest.write_text(json.dumps({"schema_version": 1, "weights": [entry]}))
    return manifest, path, model


@pytest.fixture
def use_zoo(zoo, monkeypatch):
    monkeypatch.setenv("PIFNET_WEIGHTS_MANIFEST", str(zoo[0]))
    return zoo


def picked_pair(folder, sample, **kwargs):
    """A pair whose HSI holds only the PICK bands (so the test weight fits it as is)."""
    lr, msi, wavelengths = sample
    return write_pair(
        folder, lr[[b - 1 for b in PICK]], msi, wavelengths=wavelengths[[b - 1 for b in PICK]], **kwargs
    )


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_info_reports_grids_ratio_alignment_and_weights(tmp_path, sample, use_zoo, capsys):
    hsi, msi = picked_pair(tmp_path, sample)
    code, out, err = run_cli(capsys, "info", str(hsi), str(msi))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"HSI  {hsi}" and f"MSI  {msi}" in lines
    assert "  size        22 x 12 px, 8 bands, float32" in lines
    assert "  size        93 x 51 px, 3 bands, float32" in lines
    assert "  transform   (30, 0, 500120, 0, -30, 3300480)" in lines
    assert "  transform   (7.5, 0, 500120, 0, -7.5, 3300480)" in lines
    assert lines.count("  CRS         EPSG:32616") == 2
    assert "ratio       4" in lines
    assert (
        "alignment   aligned: MSI window rows 0..48, cols 0..88; output 88 x 48 px, pixel 7.5 x 7.5" in lines
    )
    assert f"weights     {NAME}" in lines


def test_info_says_what_differs(tmp_path, sample, use_zoo, capsys):
    hsi, msi = picked_pair(tmp_path, sample)
    with rasterio.open(msi, "r+") as dst:
        dst.transform = Affine.translation(0.0, 3.75) @ dst.transform
    code, out, _ = run_cli(capsys, "info", str(hsi), str(msi))
    assert code == 0
    assert (
        "alignment   not aligned: the MSI grid is not the HSI grid subdivided by 4: its pixel corners are "
        in out
    )
    assert "+0 columns and -0.5 rows" in out


def test_fuse_auto_weight_matches_fuse(tmp_path, sample, use_zoo, capsys):
    hsi, msi = picked_pair(tmp_path, sample)
    out = tmp_path / "out.tif"
    code, stdout, err = run_cli(
        capsys, "fuse", "--hsi", str(hsi), "--msi", str(msi), "--out", str(out), "--tile-size", "32",
        "--overlap", "8", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert stdout.startswith(f"wrote {out} in ")
    lr, msi_array, _ = sample
    expected = fuse(lr[[b - 1 for b in PICK]], msi_array, NAME, tile_size=32, overlap=8, progress=False)
    with rasterio.open(out) as dst:
        assert dst.tags()["PIFNET_MODEL"] == NAME
        np.testing.assert_allclose(dst.read(), expected, atol=1e-5)


def test_fuse_with_weight_file_band_selection_and_cog(tmp_path, sample, zoo, capsys):
    lr, msi, wavelengths = sample
    hsi_path, msi_path = write_pair(tmp_path, lr, msi, wavelengths=wavelengths)
    out = tmp_path / "out.tif"
    code, _, err = run_cli(
        capsys, "fuse", "--hsi", str(hsi_path), "--msi", str(msi_path), "--out", str(out), "--weights", str(zoo[1]),
        "--hsi-bands", ",".join(map(str, PICK)), "--msi-bands", "1-3", "--cog", "--out-dtype", "float64",
        "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    with rasterio.open(out) as dst:
        assert dst.dtypes[0] == "float64" and dst.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert dst.tags()["PIFNET_MODEL"] == "tiny.safetensors"
        np.testing.assert_allclose(
            dst.read(), fuse(lr[[b - 1 for b in PICK]], msi, zoo[2], progress=False), atol=1e-5
        )


def _other_crs(path):
    with rasterio.open(path, "r+") as dst:
        dst.crs = CRS.from_epsg(32617)


CLI_ERRORS = {
    "missing-file": (["--msi", "absent.tif"], None, "MSI file 'absent.tif' does not exist"),
    "crs-mismatch": ([], _other_crs, "CRS differ: HSI is 'EPSG:32616', MSI is 'EPSG:32617'"),
    "band-out-of-range": (
        ["--hsi-bands", "1,9"],
        None,
        "hsi_bands index 9 is out of range: the raster has 8 bands",
    ),
    "unknown-weight": (["--weights", "pifnet-nope-x4"], None, "pifnet-nope-x4"),
    "given-ratio": (["--ratio", "3"], None, "ratio=3 was given but the pixel sizes give 4"),
    "out-dtype": (["--out-dtype", "float16"], None, "out_dtype must be one of"),
}


@pytest.mark.parametrize("case", sorted(CLI_ERRORS))
def test_fuse_errors_are_one_line_with_exit_1(tmp_path, sample, use_zoo, capsys, case):
    extra, damage, message = CLI_ERRORS[case]
    hsi, msi = picked_pair(tmp_path, sample)
    if damage is not None:
        damage(msi)
    before = listing(tmp_path)
    args = {"--hsi": str(hsi), "--msi": str(msi), "--out": str(tmp_path / "out.tif")}
    args |= dict(zip(extra[::2], extra[1::2], strict=True))
    code, _, err = run_cli(capsys, "fuse", *[x for kv in args.items() for x in kv], "--no-progress")
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("pifnet-infer fuse: error: ")
    assert message in err and "Traceback" not in err
    assert listing(tmp_path) == before


def test_existing_output_is_refused_then_overwritten(tmp_path, sample, use_zoo, capsys):
    hsi, msi = picked_pair(tmp_path, sample)
    out = tmp_path / "out.tif"
    out.write_bytes(b"keep me")
    argv = ["fuse", "--hsi", str(hsi), "--msi", str(msi), "--out", str(out), "--no-progress"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 1 and "already exists; pass overwrite=True (CLI: --overwrite)" in err
    assert out.read_bytes() == b"keep me"
    code, _, err = run_cli(capsys, *argv, "--overwrite")
    assert code == 0, err
    with rasterio.open(out) as dst:
        assert dst.count == len(PICK)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fuse", "--hsi", "a.tif", "--msi", "b.tif"], "the following arguments are required: --out"),
        (
            ["fuse", "--hsi", "a", "--msi", "b", "--out", "c", "--hsi-bands", "1,x"],
            "band list must look like",
        ),
        (
            ["fuse", "--hsi", "a", "--msi", "b", "--out", "c", "--align", "nearest"],
            "invalid choice: 'nearest'",
        ),
        (
            ["fuse", "--hsi", "a", "--msi", "b", "--out", "c", "--tile-size", "big"],
            "expected 'auto' or a positive",
        ),
        (
            ["fuse", "--hsi", "a", "--msi", "b", "--out", "c", "--scale", "1,2,3"],
            "expected a number or 'HSI,MSI'",
        ),
        (["fuse", "--hsi", "a", "--msi", "b", "--out", "c", "--threads", "0"], "expected an integer >= 1"),
        (["info", "a.tif"], "the following arguments are required: MSI"),
    ],
)
def test_usage_errors_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="HSI file"):
        main(
            [
                "--debug",
                "fuse",
                "--hsi",
                str(tmp_path / "a.tif"),
                "--msi",
                "b.tif",
                "--out",
                str(tmp_path / "c.tif"),
            ]
        )


def test_env_lists_versions_and_accelerators(capsys):
    code, out, _ = run_cli(capsys, "env")
    assert code == 0
    labels = [line.split("  ")[0] for line in out.splitlines()]
    for label in ("pifnet-infer", "python", "torch", "torch threads", "numpy", "rasterio", "CUDA devices"):
        assert label in labels
    for label in (
        "huggingface_hub",
        "triton",
        "mamba_ssm selective_scan_cuda",
        "torchvision",
        "weights cache",
    ):
        assert label in labels
    assert "(GDAL " in out


def test_console_entry_point_exit_codes(tmp_path):
    def run(*argv):
        return subprocess.run([sys.executable, "-m", "pifnet_infer", *argv], capture_output=True, text=True)

    help_run = run("fuse", "--help")
    assert help_run.returncode == 0 and "--hsi-bands" in help_run.stdout and "--cog" in help_run.stdout
    bad = run("fuse", "--hsi", str(tmp_path / "a.tif"), "--msi", "b.tif", "--out", str(tmp_path / "c.tif"))
    assert bad.returncode == 1
    assert bad.stderr.strip().count("\n") == 0 and "HSI file" in bad.stderr
    assert run("fuse").returncode == 2


def test_sigterm_removes_the_partial_output(tmp_path, sample, zoo):
    hsi, msi = picked_pair(tmp_path, sample)
    argv = [
        "fuse",
        "--hsi",
        str(hsi),
        "--msi",
        str(msi),
        "--out",
        str(tmp_path / "out.tif"),
        "--weights",
        str(zoo[1]),
    ]
    argv += ["--tile-size", "16", "--overlap", "0", "--batch-size", "1", "--no-progress"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pifnet_infer", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob(".out.tif.*.pifnet-tmp")):  # the run has started writing
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and err.strip() == "pifnet-infer: interrupted"
    assert listing(tmp_path) == ["hsi.tif", "msi.tif"]


def test_refine_flag_brings_the_output_closer_to_the_lr_hsi(tmp_path, sample, zoo, capsys):
    from pifnet_infer.simulate import degrade_spatial

    hsi, msi = picked_pair(tmp_path, sample)
    outputs = {}
    for name, extra in (("plain", []), ("refined", ["--refine"])):
        out = tmp_path / f"{name}.tif"
        argv = ["fuse", "--hsi", str(hsi), "--msi", str(msi), "--out", str(out), "--weights", str(zoo[1])]
        code, _, err = run_cli(capsys, *argv, "--no-progress", *extra)
        assert code == 0, err
        with rasterio.open(out) as dst:
            outputs[name] = dst.read()
    with rasterio.open(hsi) as src:
        lr = src.read()

    def lr_error(x: np.ndarray) -> float:
        return float(np.abs(degrade_spatial(x, RATIO, "mtf") - lr).mean())

    assert lr_error(outputs["refined"]) < 0.7 * lr_error(outputs["plain"])


def test_adapt_flag_trains_on_the_scene_then_fuses(tmp_path, sample, capsys):
    hsi, msi = picked_pair(tmp_path, sample)
    out = tmp_path / "adapted.tif"
    argv = ["fuse", "--hsi", str(hsi), "--msi", str(msi), "--out", str(out), "--weights", "none"]
    code, stdout, err = run_cli(capsys, *argv, "--adapt", "--adapt-seconds", "4", "--no-progress")
    assert code == 0, err
    assert "adapted in" in stdout and "base None" in stdout
    with rasterio.open(out) as dst, rasterio.open(hsi) as src:
        assert (dst.count, dst.height, dst.width) == (src.count, src.height * RATIO, src.width * RATIO)
        assert dst.transform.a == pytest.approx(src.transform.a / RATIO)
        assert np.isfinite(dst.read()).all()


def test_adapt_refuses_an_existing_output_before_training(tmp_path, sample, capsys):
    hsi, msi = picked_pair(tmp_path, sample)
    (tmp_path / "taken.tif").write_bytes(b"x")
    argv = ["fuse", "--hsi", str(hsi), "--msi", str(msi), "--out", str(tmp_path / "taken.tif"), "--adapt"]
    start = time.monotonic()
    code, _, err = run_cli(capsys, *argv)
    assert code == 1 and "exists" in err and time.monotonic() - start < 30

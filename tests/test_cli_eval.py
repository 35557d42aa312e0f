"""``pifnet-infer simulate`` and ``pifnet-infer evaluate`` end to end on the bundled samples."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from pifnet_infer import baselines, metrics
from pifnet_infer.cli import main
from pifnet_infer.data import load_sample


@pytest.fixture
def pair(tmp_path: Path) -> dict[str, Path]:
    paths = {k: tmp_path / f"{k}.npy" for k in ("hsi", "msi", "ref")}
    argv = [
        "simulate",
        "--sample",
        "muufl_gulfport_sub",
        "--ratio",
        "4",
        "--srf",
        "sentinel2a-10m",
        "--out-hsi",
        str(paths["hsi"]),
        "--out-msi",
        str(paths["msi"]),
        "--out-reference",
        str(paths["ref"]),
    ]
    assert main(argv) == 0
    return paths


def test_simulate_writes_the_pair(pair: dict[str, Path]) -> None:
    lr, msi, ref = (np.load(pair[k]) for k in ("hsi", "msi", "ref"))
    assert lr.shape == (72, 12, 22) and msi.shape == (4, 48, 88) and ref.shape == (72, 48, 88)
    assert lr.dtype == np.float32 and msi.dtype == np.float32
    np.testing.assert_array_equal(ref, load_sample("muufl_gulfport_sub").cube[:, :48])


def test_evaluate_full_reference_json(
    pair: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores.json"
    argv = [
        "evaluate",
        "--reference",
        str(pair["ref"]),
        "--hsi",
        str(pair["hsi"]),
        "--msi",
        str(pair["msi"]),
        "--method",
        "bicubic,glp",
        "--method",
        "gsa",
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "PSNR" in printed and "gsa" in printed
    report = json.loads(out.read_text())
    assert report["mode"] == "full-reference" and report["ratio"] == 4 and report["protocol"] == "official"
    assert list(report["results"]) == ["bicubic", "glp", "gsa"]
    lr, msi, ref = (np.load(pair[k]) for k in ("hsi", "msi", "ref"))
    expected = metrics.evaluate(ref, baselines.glp_hs(lr, msi, 4, psf="official"), ratio=4)
    for key, value in expected.items():
        assert report["results"]["glp"][key] == pytest.approx(value)


def test_evaluate_simulates_from_a_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = load_sample("aviris_gatorsense_vi")
    np.save(tmp_path / "cube.npy", sample.cube.transpose(1, 2, 0))  # stored (H, W, bands)
    (tmp_path / "meta.json").write_text(json.dumps({"wavelengths_nm": sample.wavelengths_nm.tolist()}))
    out = tmp_path / "o.json"
    argv = [
        "evaluate",
        "--reference",
        str(tmp_path / "cube.npy"),
        "--layout",
        "hwc",
        "--wavelengths",
        str(tmp_path / "meta.json"),
        "--drop-empty-bands",
        "--ratio",
        "4",
        "--srf",
        "sentinel2a-10m",
        "--psf",
        "mtf",
        "--protocol",
        "standard",
        "--method",
        "bicubic",
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["shape"] == [181, 88, 88]  # 43 all-zero bands dropped, cropped to multiples of 4
    assert all(v is not None for v in report["results"]["bicubic"].values())


def test_evaluate_no_reference(
    pair: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wl = tmp_path / "wl.txt"
    wl.write_text("\n".join(str(w) for w in load_sample("muufl_gulfport_sub").wavelengths_nm))
    argv = [
        "evaluate",
        "--hsi",
        str(pair["hsi"]),
        "--msi",
        str(pair["msi"]),
        "--method",
        "bicubic,glp",
        "--srf",
        "sentinel2a-10m",
        "--wavelengths",
        str(wl),
        "--json",
        str(tmp_path / "o.json"),
    ]
    assert main(argv) == 0
    results = json.loads((tmp_path / "o.json").read_text())["results"]
    assert {"D_lambda", "D_s", "QNR", "spectral_rmse", "spatial_rmse"} <= set(results["glp"])
    assert results["glp"]["QNR"] > results["bicubic"]["QNR"]
    assert results["glp"]["spatial_rmse"] < results["bicubic"]["spatial_rmse"]


def test_errors_are_one_line(
    pair: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ["evaluate", "--hsi", str(pair["hsi"]), "--msi", str(pair["msi"])]
    assert main([*base, "--method", "nearest"]) == 1
    assert "unknown --method 'nearest'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "pifnet_infer.api", None)  # as if api.py could not be imported
    assert main([*base, "--method", "pifnet:any"]) == 1
    assert "pifnet_infer.api.fuse" in capsys.readouterr().err
    assert main(["evaluate", "--hsi", str(pair["hsi"])]) == 1
    assert "--hsi and --msi go together" in capsys.readouterr().err
    tif = tmp_path / "x.tif"
    argv = [
        "simulate",
        "--reference",
        str(tif),
        "--ratio",
        "4",
        "--srf",
        "sentinel2a-10m",
        "--out-hsi",
        str(tmp_path / "a.npy"),
        "--out-msi",
        str(tmp_path / "b.npy"),
    ]
    assert main(argv) == 1
    assert "only .npy" in capsys.readouterr().err
    argv = [
        "simulate",
        "--sample",
        "muufl_gulfport_sub",
        "--ratio",
        "4",
        "--srf",
        "sentinel2a",
        "--out-hsi",
        str(tmp_path / "a.npy"),
        "--out-msi",
        str(tmp_path / "b.npy"),
    ]
    assert main(argv) == 1
    assert "B12" in capsys.readouterr().err  # MUUFL stops at 1043 nm

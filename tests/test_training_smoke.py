"""Smoke tests of training/: setups, one tiny training step, an exact resume, evaluation and export."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pifnet_infer.weights import load_model
from pifnet_infer.weights.manifest import parse_entry
from training import ablation, evaluate, export, train
from training.data import BatchMaker, load_library, load_scenes, split_slices
from training.setups import SETUPS, WATER_VAPOUR_GAPS_NM, get_setup

SETUP = "pifnet-vnir-rgb-x4"


def _fake_data(root):
    """A 64 x 64 scene on 390-1010 nm (covers the VNIR grid) and two tiny spectral libraries."""
    rng = np.random.default_rng(0)
    wl = np.arange(390.0, 1011.0, 10.0)
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    spectra = 0.1 + 0.4 * rng.random((4, wl.size))
    maps = np.stack([np.sin(3 * xx) ** 2, np.cos(2 * yy) ** 2, xx * yy, 1 - xx])
    cube = np.einsum("phw,pc->hwc", maps / maps.sum(0), spectra).astype(np.float16)
    scene = root / "fake_scene"
    scene.mkdir(parents=True)
    np.save(scene / "cube.npy", cube)
    (scene / "meta.json").write_text(json.dumps({"wavelengths_nm": wl.tolist(), "fwhm_nm": None}))
    lib = root / "spectra"
    lib.mkdir()
    lib_wl = np.arange(370.0, 2510.0, 10.0)
    np.savez(
        lib / "usgs_1995_aviris224.npz",
        wavelengths_nm=lib_wl,
        fwhm_nm=np.full(lib_wl.shape, 10.0),
        spectra=rng.random((8, lib_wl.size)).astype(np.float32),
    )
    np.savez(lib / "earthlib_optimized.npz", wavelengths_nm=lib_wl, spectra=rng.random((8, lib_wl.size)))
    return root


def _train(out_dir, data_dir, *extra):
    args = [
        "--setup",
        SETUP,
        "--out-dir",
        str(out_dir),
        "--data-dir",
        str(data_dir),
        "--scenes",
        "fake_scene",
    ]
    args += ["--dim", "4", "--crop", "16", "--batch-size", "1", "--total-steps", "3", "--threads", "1"]
    return train.main([*args, "--log-every", "1", *extra])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run A: two steps in one chunk; run B: one step, then --resume for one more."""
    root = tmp_path_factory.mktemp("training")
    data = _fake_data(root / "data")
    assert _train(root / "a", data, "--chunk-steps", "2") == 0
    assert _train(root / "b", data, "--chunk-steps", "1") == 0
    first = load_file(str(root / "b" / "last.safetensors"))
    assert _train(root / "b", data, "--chunk-steps", "5") == 2  # existing run without --resume: refused
    assert _train(root / "b", data, "--resume", "--chunk-steps", "1") == 0
    return root, data, first


def test_setups_are_consistent():
    assert set(SETUPS) == {"pifnet-vnirswir-s2-x3", "pifnet-vnirswir-pan-x3", "pifnet-vnir-rgb-x4"}
    for setup in SETUPS.values():
        matrix = setup.srf_matrix()
        config = setup.config()
        assert (
            matrix.shape
            == (config.msi_bands, config.hsi_bands)
            == (len(setup.msi_bands_description), setup.wavelengths_nm.size)
        )
        np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
        assert np.all(np.diff(setup.wavelengths_nm) >= 10.0)
    swir = get_setup("pifnet-vnirswir-s2-x3").wavelengths_nm
    assert swir.size == 169 and swir.min() == 400.0 and swir.max() == 2450.0
    for lo, hi in WATER_VAPOUR_GAPS_NM:
        assert not np.any((swir >= lo) & (swir <= hi))
    with pytest.raises(KeyError, match="available"):
        get_setup("nope")


def test_splits_are_disjoint_and_respect_the_mask():
    valid = np.ones((51, 88), dtype=bool)
    valid[29:, 36:] = False
    splits = split_slices(51, 88, 4, valid)
    cols = [splits[k][1] for k in ("train", "val", "test")]
    assert all(a.stop <= b.start for a, b in itertools.pairwise(cols))
    for key in ("val", "test"):
        rows, c = splits[key]
        assert valid[rows, c].all() and (rows.stop - rows.start) % 4 == 0 and rows.stop > rows.start


def test_one_step_then_resume_equals_two_steps(runs):
    root, _, first = runs
    a = load_file(str(root / "a" / "last.safetensors"))
    b = load_file(str(root / "b" / "last.safetensors"))
    assert json.loads((root / "b" / "last.json").read_text())["step"] == 2
    assert set(a) == set(b) and any(k.startswith("optim.") for k in a)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-7, msg=key)
    moved = [k for k in first if k.startswith("model.") and not torch.equal(first[k], b[k])]
    assert moved, "the resumed step changed no parameter"
    log = [json.loads(x) for x in (root / "b" / "log.jsonl").read_text().splitlines()]
    assert sum(r.get("event") == "chunk_start" for r in log) == 2
    assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)
    assert (root / "b" / "loss.png").stat().st_size > 0


def test_evaluate_and_export_produce_a_valid_manifest_entry(runs):
    root, data, _ = runs
    best = root / "b" / "best.safetensors"
    assert load_model(best).config.dim == 4
    assert evaluate.main(["--weights", str(best), "--setup", SETUP, "--out-dir", str(root / "eval"),
                          "--data-dir", str(data), "--scenes", "fake_scene"]) == 0  # fmt: skip
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert set(metrics["mean"]) >= {"bicubic", "glp_hs", "gsa", "pifnet_fp32"}
    assert "| fake_scene | glp_hs |" in (root / "eval" / "metrics.md").read_text()
    out = root / "export"
    assert export.main(["--run-dir", str(root / "b"), "--metrics", str(root / "eval" / "metrics.json"),
                        "--out-dir", str(out)]) == 0  # fmt: skip
    entry = json.loads((out / f"{SETUP}.manifest-entry.json").read_text())
    parsed = parse_entry(entry)
    assert parsed.size_bytes == (out / f"{SETUP}.safetensors").stat().st_size
    assert parsed.revision is None and not parsed.bundled
    assert "--resume" in parsed.training["command"]
    assert load_model(out / f"{SETUP}.safetensors").config == parsed.config


def test_without_augmentation_a_sample_is_an_unaltered_training_crop(tmp_path):
    data = _fake_data(tmp_path / "data")
    setup = get_setup(SETUP)
    scenes = load_scenes(setup, ("fake_scene",), data)
    common = {"crop": 16, "synthetic_fraction": 0.0, "seed": 1}
    plain = BatchMaker(setup, scenes, load_library(setup, data), augment=False, **common)
    region = scenes[0].region("train")
    windows = np.lib.stride_tricks.sliding_window_view(region, (16, 16), axis=(1, 2))
    for _ in range(5):
        ref = plain.reference()
        match = np.all(windows == np.clip(ref, 0, None)[:, None, None], axis=(0, 3, 4))
        assert match.any()  # an exact window of the training region
    augmented = BatchMaker(setup, scenes, load_library(setup, data), **common).reference()
    match = np.all(np.isclose(windows, augmented[:, None, None]), axis=(0, 3, 4))
    assert not match.any()  # gain and tilt change the values


def test_ablation_trains_and_evaluates_each_variant(tmp_path):
    data = _fake_data(tmp_path / "data")
    out = tmp_path / "ablation"
    args = ["--setup", SETUP, "--out-dir", str(out), "--variants", "full", "no-augment", "--total-steps", "2"]
    args += ["--dim", "4", "--crop", "16", "--batch-size", "1", "--scenes", "fake_scene"]
    args += ["--data-dir", str(data)]
    assert ablation.main(args) == 0
    table = (out / SETUP / "summary.md").read_text()
    assert "| full | 2 |" in table and "| no-augment | 2 |" in table and "no-synthetic" not in table
    record = json.loads((out / SETUP / "no-augment" / "last.json").read_text())
    assert record["args"]["augment"] is False


def test_residual_prior_run_starts_at_the_prior_and_validates_with_it(runs, tmp_path):
    """Step 0 of a --residual-prior run adds exactly nothing to GLP-HS; validation scores prior + network."""
    _, data, _ = runs
    # a learning rate of 1e-9 keeps the network within ~1e-9 of its start (Adam steps are about lr in size)
    assert (
        _train(tmp_path / "r", data, "--residual-prior", "glp_hs", "--chunk-steps", "1", "--lr", "1e-9") == 0
    )
    last = load_file(str(tmp_path / "r" / "last.safetensors"))
    assert json.loads((tmp_path / "r" / "last.json").read_text())["args"]["residual_prior"] == "glp_hs"
    assert (
        last["model.tail.net.2.weight"].abs().max() < 1e-8
        and last["model.tail.net.2.bias"].abs().max() < 1e-8
    )
    row = json.loads((tmp_path / "r" / "log.jsonl").read_text().splitlines()[-1])
    assert abs(row["val_psnr"] - row["val_glp_hs_psnr"]) < 0.01  # the network adds nothing yet

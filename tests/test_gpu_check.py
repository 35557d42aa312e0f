"""The prepared GPU check (benchmarks/gpu_check.py, gpu_prepare.sh) runs end to end on the CPU (issue 20).

``--dry-run`` exercises every section's code at tiny sizes, so the script cannot rot between the rare
sessions that have a GPU; the prepare step must build its carry folder and print the commands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SECTIONS = {"environment", "pytest_gpu", "scan", "model", "fuse", "profile", "train_step"}


def test_dry_run_runs_every_section_and_records_it(tmp_path):
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = report["sections"]
    assert set(sections) == SECTIONS
    assert {name: s["status"] for name, s in sections.items()} == dict.fromkeys(SECTIONS, "ok")
    assert report["dry_run"] is True and sections["environment"]["versions"]["torch"]
    assert "skipped" in sections["pytest_gpu"]["summary"][0]  # collected, skipped without CUDA
    fuse = sections["fuse"]
    assert fuse["speedup_defaults_over_official"] > 0
    assert abs(fuse["runs"]["defaults"]["psnr_gap_vs_whole_db"]) < 0.5
    assert all(row["ms"]["torch"] > 0 for row in sections["scan"]["rows"])
    assert sections["train_step"]["s_per_step"] > 0


def test_an_unknown_device_request_is_refused_without_cuda():
    if __import__("torch").cuda.is_available():
        pytest.skip("a CUDA device is present")
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--out", os.devnull + "x"], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and "no CUDA device" in done.stderr


def _prepare(carry: Path, shared: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHARED_DIR": str(shared)}
    return subprocess.run(["bash", "benchmarks/gpu_prepare.sh", str(carry)], cwd=ROOT, env=env,
                          capture_output=True, text=True)  # fmt: skip


def test_prepare_writes_the_commit_and_prints_both_commands(tmp_path):
    done = _prepare(tmp_path / "carry", tmp_path / "no-shared")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "carry" / "commit").read_text().strip()
    assert "benchmarks/gpu_check.py --out" in done.stdout and "training/gpu_recipe.sh" in done.stdout
    assert "no training data" in done.stderr


@pytest.mark.shared
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent (a plain clone)")
def test_prepare_carries_the_permissive_training_data_under_30_mb(tmp_path):
    from training.data import PERMISSIVE_SCENES

    done = _prepare(tmp_path / "carry", SHARED_DATA.parent)
    assert done.returncode == 0, done.stderr
    data = tmp_path / "carry" / "data"
    assert {p.name for p in data.iterdir()} == {*PERMISSIVE_SCENES, "spectra", "srf"}
    assert all((data / name / "cube.npy").is_file() for name in PERMISSIVE_SCENES)
    assert sum(f.stat().st_size for f in data.rglob("*") if f.is_file()) < 30 * 2**20

"""Smoke run of benchmarks/bench_cpu_anchor.py (``--quick``: 64-px scene, one thread, no JSON written)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_reports_every_case_and_the_ratios():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_cpu_anchor.py"), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for case in ("whole", "naive", "torch", "loop", "defaults"):
        assert f"  {case} " in result.stdout
    assert "b/a = " in result.stdout
    assert "wrote" not in result.stdout

"""The documentation builds with ``mkdocs build --strict`` (API reference from the docstrings)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
    reason='mkdocs/mkdocstrings not installed (pip install -e ".[docs]")',
)
def test_mkdocs_build_strict(tmp_path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    api = (site / "api" / "fuse" / "index.html").read_text()
    assert "hsi_wavelengths_nm" in api  # the docstring was rendered, not just the page title
    weights = (site / "weights" / "index.html").read_text()
    assert "pifnet-vnir-rgb-x4" in weights and "<!-- weights-table -->" not in weights  # the hook filled it
    cli = (site / "cli" / "index.html").read_text()
    assert "pifnet-infer demo" in cli and "--out-dir" in cli

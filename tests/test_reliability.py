"""Reliability (issue 21): no silent garbage, never clobber an input, one-line errors everywhere.

The bad-input catalogue (:data:`CATALOGUE`) has one line per case: what is called, the exception
expected, a phrase of its message; every case also checks that no file was written or changed.
CLI cases raise :class:`CliFailed` (exit code + stderr) so both kinds share one table.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from test_geotiff import PICK, RATIO, simulate, tiny_model, write_pair

from pifnet_infer.cli import main
from pifnet_infer.data import load_sample
from pifnet_infer.io.geotiff import fuse_geotiff
from pifnet_infer.weights import clear_model_cache, save_weights

NAME = "pifnet-reliability-x4"


class CliFailed(Exception):
    """``pifnet-infer`` exited with a non-zero code; the message is its stderr."""

    def __init__(self, code: int, err: str) -> None:
        super().__init__(err)
        self.code, self.err = code, err


def cli(*argv: object) -> str:
    """Run ``pifnet-infer argv``; stdout on success, :class:`CliFailed` otherwise."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_:  # argparse usage errors
            code = int(exit_.code or 0)
    if code:
        raise CliFailed(code, err.getvalue())
    return out.getvalue()


@dataclass(frozen=True)
class Scene:
    """A tiny scene on disk: HSI/MSI GeoTIFFs, a weight file, and their arrays (PICK bands)."""

    folder: Path
    hsi: Path
    msi: Path
    weights: Path
    lr: np.ndarray
    hr_msi: np.ndarray
    wavelengths: np.ndarray


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = load_sample("muufl_gulfport_sub")
    lr, msi = simulate(s.cube, RATIO)
    pick = [b - 1 for b in PICK]
    return lr[pick], msi, s.wavelengths_nm[pick]


@pytest.fixture
def scene(tmp_path: Path, pair) -> Scene:
    lr, msi, wavelengths = pair
    hsi_path, msi_path = write_pair(tmp_path, lr, msi, wavelengths=wavelengths)
    weights = save_weights(tiny_model(), tmp_path / "tiny.safetensors")
    return Scene(tmp_path, hsi_path, msi_path, weights, lr, msi, wavelengths)


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``folder`` (hidden ones included): size and sha256."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@dataclass(frozen=True)
class Bad:
    """One catalogue line: ``call(scene)`` must raise ``error`` with ``phrase`` in its message."""

    id: str
    call: Callable[[Scene], object]
    error: type[BaseException]
    phrase: str


def _fuse_cli(s: Scene, *extra: object) -> str:
    return cli("fuse", "--hsi", s.hsi, "--msi", s.msi, "--weights", s.weights, "--no-progress", *extra)


CATALOGUE = [
    # 1. an output that is an input is refused, naming it, whatever the spelling
    Bad("cli-out-is-hsi", lambda s: _fuse_cli(s, "--out", s.hsi, "--overwrite"), CliFailed, "is the input HSI"),
    Bad("cli-out-dotdot-msi", lambda s: _fuse_cli(s, "--out", s.folder / "x" / ".." / "msi.tif", "--overwrite"),
        CliFailed, "is the input MSI"),
    Bad("api-out-is-msi", lambda s: fuse_geotiff(s.hsi, s.msi, s.msi, s.weights, overwrite=True, progress=False),
        ValueError, "is the input MSI"),
    Bad("api-out-symlink-to-hsi", lambda s: fuse_geotiff(s.hsi, s.msi, _link(s, "symlink"), s.weights,
        overwrite=True, progress=False), ValueError, "is the input HSI"),
    Bad("api-out-hardlink-to-hsi", lambda s: fuse_geotiff(s.hsi, s.msi, _link(s, "hardlink"), s.weights,
        overwrite=True, progress=False), ValueError, "is the input HSI"),
    Bad("cli-adapt-out-is-base", lambda s: cli("adapt", "--hsi", s.hsi, "--msi", s.msi, "--base", s.weights,
        "--out", s.weights, "--overwrite"), CliFailed, "is the input --base"),
    Bad("cli-convert-out-is-in", lambda s: cli("convert", _pth(s), _pth(s), "--preset", "chikusei",
        "--overwrite"), CliFailed, "is the input checkpoint"),
    Bad("cli-simulate-out-is-reference", lambda s: cli("simulate", "--reference", _npy(s), "--ratio", 4, "--srf",
        "sentinel2a-10m", "--out-hsi", _npy(s), "--out-msi", s.folder / "m.npy"), CliFailed,
        "is the input --reference"),
]  # fmt: skip


def _link(s: Scene, kind: str) -> Path:
    """A link to the HSI beside it (made before the snapshot, as part of the scene)."""
    link = s.folder / f"{kind}.tif"
    if not link.exists():
        (os.symlink if kind == "symlink" else os.link)(s.hsi, link)
    return link


def _pth(s: Scene) -> Path:
    path = s.folder / "official.safetensors"
    if not path.exists():
        torch.save({"w": torch.zeros(2)}, path)
    return path


def _npy(s: Scene) -> Path:
    path = s.folder / "reference.npy"
    if not path.exists():
        np.save(path, np.ones((8, 8, 8), dtype=np.float32))
    return path


@pytest.mark.parametrize("case", CATALOGUE, ids=[c.id for c in CATALOGUE])
def test_bad_input_catalogue(case: Bad, scene: Scene) -> None:
    for kind in ("symlink", "hardlink"):  # inputs some cases point at, made before the snapshot
        _link(scene, kind)
    _pth(scene), _npy(scene)
    before = snapshot(scene.folder)
    clear_model_cache()
    with pytest.raises(case.error) as caught:
        case.call(scene)
    message = str(caught.value)
    assert case.phrase in message, message
    if isinstance(caught.value, CliFailed):
        assert caught.value.code in (1, 2) and message.count("\n") == 1, message  # one line
    assert snapshot(scene.folder) == before, "a file was written or changed"


def test_same_file_sees_through_dotdot_symlinks_and_hard_links(tmp_path: Path) -> None:
    from pifnet_infer.io.atomic import same_file

    (tmp_path / "sub").mkdir()
    a = tmp_path / "a.tif"
    a.write_bytes(b"x")
    os.link(a, tmp_path / "hard.tif")
    os.symlink(a, tmp_path / "soft.tif")
    assert same_file(tmp_path / "sub" / ".." / "a.tif", a)
    assert same_file(tmp_path / "hard.tif", a)
    assert same_file(tmp_path / "soft.tif", a)
    assert not same_file(tmp_path / "new.tif", a)

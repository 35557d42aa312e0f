"""Atomic output: rename on success, nothing left behind on failure."""

from __future__ import annotations

import os

import pytest

from pifnet_infer.io.atomic import atomic_output, check_output_path


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_success_renames_and_cleans(tmp_path):
    out = tmp_path / "fused.tif"
    with atomic_output(out) as tmp:
        assert tmp.path.parent.parent == tmp_path
        assert tmp.path.parent != tmp_path  # private folder beside the output
        tmp.path.write_bytes(b"data")
        tmp.scratch("intermediate.tif").write_bytes(b"scratch")
        assert not out.exists()
    assert out.read_bytes() == b"data"
    assert _listing(tmp_path) == ["fused.tif"]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failure_leaves_nothing(tmp_path, exc):
    out = tmp_path / "fused.tif"
    with pytest.raises(type(exc)):
        with atomic_output(out) as tmp:
            tmp.path.write_bytes(b"partial")
            (tmp.folder / "fused.tif.aux.xml").write_text("<sidecar/>")
            raise exc
    assert _listing(tmp_path) == []


def test_existing_output_refused_then_overwritten(tmp_path):
    out = tmp_path / "fused.tif"
    out.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        with atomic_output(out):
            pytest.fail("the body must not run")
    assert out.read_bytes() == b"old"
    with atomic_output(out, overwrite=True) as tmp:
        tmp.path.write_bytes(b"new")
    assert out.read_bytes() == b"new"
    assert _listing(tmp_path) == ["fused.tif"]


def test_failed_overwrite_keeps_the_old_file(tmp_path):
    out = tmp_path / "fused.tif"
    out.write_bytes(b"old")
    with pytest.raises(ValueError):
        with atomic_output(out, overwrite=True) as tmp:
            tmp.path.write_bytes(b"half")
            raise ValueError
    assert out.read_bytes() == b"old"
    assert _listing(tmp_path) == ["fused.tif"]


def test_output_appearing_during_the_run_is_not_clobbered(tmp_path):
    out = tmp_path / "fused.tif"
    with pytest.raises(FileExistsError, match="appeared while writing"):
        with atomic_output(out) as tmp:
            tmp.path.write_bytes(b"mine")
            out.write_bytes(b"someone else's")
    assert out.read_bytes() == b"someone else's"
    assert _listing(tmp_path) == ["fused.tif"]


def test_nothing_written_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_output(tmp_path / "fused.tif"):
            pass
    assert _listing(tmp_path) == []


def test_bad_output_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "out.tif")
    with pytest.raises(IsADirectoryError):
        check_output_path(tmp_path)
    assert check_output_path(os.fspath(tmp_path / "x.tif")) == tmp_path / "x.tif"


def test_scratch_names_are_plain(tmp_path):
    with pytest.raises(ValueError, match="plain file name"):
        with atomic_output(tmp_path / "fused.tif") as tmp:
            tmp.scratch("../escape.tif")
    assert _listing(tmp_path) == []

"""Atomic output files: write beside the target, rename only on success.

A run writes into a private temporary folder created in the output's folder
(same file system, so the final rename is atomic). On success the finished file
is renamed to the output path; on any exception, ``KeyboardInterrupt``
included, the temporary folder and everything GDAL put in it (sidecars,
intermediate copies) are removed, so a failed run leaves nothing behind. A run
that is killed outright (SIGKILL) cannot clean up: its folder, named with its pid,
is removed by the next run writing the same output.

.. versionadded:: 0.1
"""

from __future__ import annotations

import glob
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

_logger = logging.getLogger(__name__)


PathArg = str | os.PathLike[str]


def same_file(a: PathArg, b: PathArg) -> bool:
    """Whether two paths name one file: after ``..``, symlinks and, when both exist, hard links (device + inode)."""
    first, second = Path(a).expanduser(), Path(b).expanduser()
    if first.exists() and second.exists():
        return os.path.samefile(first, second)
    return first.resolve() == second.resolve()


def check_not_input(out_path: PathArg, inputs: Mapping[str, PathArg | None]) -> None:
    """Refuse an output that is one of the inputs, so that no run ever replaces what it reads.

    Args:
        out_path: the file to write.
        inputs: what the run reads, by the name the user knows it by (``"--hsi"``, ``"reference"``);
            None values are skipped.

    Raises:
        ValueError: ``out_path`` is the same file as an input (the message names it).
    """
    for name, path in inputs.items():
        if path is not None and same_file(out_path, path):
            raise ValueError(
                f"output {str(out_path)!r} is the input {name} {str(path)!r}; an input is never replaced, "
                "even with overwrite: write to another path"
            )


def check_output_path(
    out_path: PathArg, *, overwrite: bool = False, inputs: Mapping[str, PathArg | None] | None = None
) -> Path:
    """Check that ``out_path`` can be written, without creating anything.

    Args:
        out_path: the file to write.
        overwrite: allow replacing an existing file (never one of ``inputs``).
        inputs: the files the run reads, by name (see :func:`check_not_input`).

    Returns:
        The output path as an absolute :class:`~pathlib.Path`.

    Raises:
        ValueError: the output is one of ``inputs``.
        FileExistsError: the output exists and ``overwrite`` is False.
        IsADirectoryError: the output path is a folder.
        FileNotFoundError: the output's folder does not exist.
    """
    out = Path(out_path).expanduser().absolute()
    check_not_input(out, inputs or {})
    if out.is_dir():
        raise IsADirectoryError(
            f"output path {str(out)!r} is a folder; pass a file name such as {str(out / 'fused.tif')!r}"
        )
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output folder {str(out.parent)!r} does not exist; create it first")
    if out.exists() and not overwrite:
        raise FileExistsError(
            f"output {str(out)!r} already exists; pass overwrite=True (CLI: --overwrite) to replace it"
        )
    return out


def temp_file_beside(target: PathArg) -> Path:
    """A new, empty, dot-named file in ``target``'s folder, for writing ``target`` then renaming it.

    Created with mode 0666 less the umask, as a plain ``open`` would (``tempfile.mkstemp`` makes 0600
    files, and the rename would keep that mode on the output).
    """
    folder, name = Path(target).parent, Path(target).name
    while True:
        path = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return path


class AtomicOutput:
    """The temporary paths of one atomic write (see :func:`atomic_output`).

    Attributes:
        path: the temporary file that becomes the output on success.
        folder: the private temporary folder holding ``path`` and any scratch files.
    """

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.path = folder / name

    def scratch(self, name: str) -> Path:
        """A path for an intermediate file, removed with the temporary folder."""
        if Path(name).name != name or name == self.path.name:
            raise ValueError(
                f"scratch name must be a plain file name other than {self.path.name!r}, got {name!r}"
            )
        return self.folder / name


_SUFFIX = ".pifnet-tmp"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())


def _writer() -> str:
    """``pid@host`` of this process, in its temporary folders' names."""
    return f"{os.getpid()}@{_host()}"


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(out_path: PathArg) -> list[Path]:
    """Remove the temporary folders that killed runs (SIGKILL, power loss) left beside ``out_path``.

    A folder is stale when the process that made it (``pid@host`` is in its name) ran on this host and
    no longer exists; the folders of live writers, this process's own and other hosts' (a shared file
    system) are never touched.

    Returns:
        The folders removed.
    """
    out = Path(out_path).expanduser().absolute()
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(\d+)@{re.escape(_host())}\.[^.]+{re.escape(_SUFFIX)}")
    removed = []
    for entry in out.parent.glob(f".{glob.escape(out.name)}.*{_SUFFIX}"):
        match = pattern.fullmatch(entry.name)
        if match is None or not entry.is_dir():
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or _alive(pid):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        _logger.info("removed %s, left by a run (pid %d) that was killed", entry, pid)
        removed.append(entry)
    return removed


@contextmanager
def atomic_output(out_path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[AtomicOutput]:
    """Context manager for writing ``out_path`` all at once or not at all.

    Write the result to ``tmp.path`` inside the ``with`` block. When the block
    ends normally, ``tmp.path`` is renamed to ``out_path``; when it raises
    (any exception, ``KeyboardInterrupt`` included) nothing appears at
    ``out_path`` and the temporary folder is removed. Folders left beside
    ``out_path`` by killed runs are removed first (:func:`remove_stale_temporaries`).

    Example:
        >>> with atomic_output("fused.tif") as tmp:  # doctest: +SKIP
        ...     write_raster(tmp.path)

    Raises:
        FileExistsError: the output exists and ``overwrite`` is False (checked on
            entry and again just before the rename).
        FileNotFoundError: the output's folder does not exist.
    """
    out = check_output_path(out_path, overwrite=overwrite)
    remove_stale_temporaries(out)
    folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.{_writer()}.", suffix=_SUFFIX, dir=out.parent))
    try:
        tmp = AtomicOutput(folder, out.name)
        yield tmp
        if not tmp.path.is_file():
            raise FileNotFoundError(f"nothing was written to the temporary file {str(tmp.path)!r}")
        if out.exists() and not overwrite:
            raise FileExistsError(
                f"output {str(out)!r} appeared while writing; pass overwrite=True (CLI: --overwrite) to replace it"
            )
        os.replace(tmp.path, out)
        _logger.debug("wrote %s", out)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

"""``fuse_many()``: many scene pairs on a Dask cluster, one task per scene, resumable.

Each scene pair becomes one ``distributed`` task that runs :func:`~pifnet_infer.fuse_geotiff` on a
worker, which writes its GeoTIFF atomically (temporary file, rename on success). Outputs that
already exist and pass :func:`verify_output` are skipped, so running the same call again after a
crash recomputes only what is missing or broken. A task that fails is retried ``retries`` times;
a task whose worker dies is rescheduled by Dask on another worker; a task that finds its output
already complete (its earlier attempt finished just before its worker died) reports it done
without writing again, so each output is written once.

.. versionadded:: 0.1
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from torch import nn

from pifnet_infer._utils.device import resolve_device
from pifnet_infer._utils.optional import require
from pifnet_infer._utils.progress import progress_bar
from pifnet_infer.dask.workers import model_key, model_token, worker_model
from pifnet_infer.io.bands import select_bands
from pifnet_infer.io.geotiff import fuse_geotiff
from pifnet_infer.prepare import ModelArg

_logger = logging.getLogger(__name__)

Status = Literal["done", "skipped", "failed"]
PathArg = str | os.PathLike[str]
#: fuse_geotiff keywords that fuse_many sets itself
_MANAGED = ("hsi_path", "msi_path", "out_path", "model", "overwrite", "progress", "callback")


@dataclass(frozen=True)
class SceneResult:
    """What happened to one scene pair.

    Attributes:
        hsi, msi: the input rasters.
        out: the output GeoTIFF.
        status: ``"done"`` (written by this run), ``"skipped"`` (already complete) or ``"failed"``.
        reason: why it was skipped or failed, or a note on how it was done (empty otherwise).
        seconds: time spent in the task on the worker (0 when not run).
        worker: address of the worker that ran it, when known.
    """

    hsi: Path
    msi: Path
    out: Path
    status: Status
    reason: str = ""
    seconds: float = 0.0
    worker: str | None = None


@dataclass
class FuseManyReport:
    """The outcome of :func:`fuse_many`, one :class:`SceneResult` per scene pair in each list."""

    done: list[SceneResult] = field(default_factory=list)
    skipped: list[SceneResult] = field(default_factory=list)
    failed: list[SceneResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no scene failed."""
        return not self.failed

    def add(self, result: SceneResult) -> None:
        """File a result under its status."""
        {"done": self.done, "skipped": self.skipped, "failed": self.failed}[result.status].append(result)

    def summary(self) -> str:
        """One line per failure after a count line."""
        lines = [f"{len(self.done)} done, {len(self.skipped)} skipped, {len(self.failed)} failed"]
        lines += [f"failed: {r.hsi.name} -> {r.out.name}: {r.reason}" for r in self.failed]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Job:
    hsi: Path
    msi: Path
    out: Path
    #: (inode, mtime in ns) of the output when the job was submitted: a file with another identity was
    #: written by an attempt of this run
    previous: tuple[int, int] | None = None


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def verify_output(
    out_path: PathArg,
    hsi_path: PathArg,
    msi_path: PathArg,
    *,
    hsi_bands: Sequence[int] | str | None = None,
    ratio: int | None = None,
    model: ModelArg | None = None,
) -> str | None:
    """Why ``out_path`` is not a complete fusion of this pair, or None when it is.

    An output verifies when all of these hold: it opens as a raster; its ``PIFNET_VERSION`` tag exists;
    its ``PIFNET_HSI``/``PIFNET_MSI`` tags are the inputs' file names; its ``PIFNET_RATIO`` tag is an
    integer r (equal to ``ratio`` when given) and its size is the HSI's times r; its band count and
    ``PIFNET_HSI_BANDS`` tag are the selected HSI bands (``hsi_bands``, default all); its CRS is the
    HSI's; ``PIFNET_MODEL`` names ``model`` when it is a manifest name or a path (not ``"auto"`` nor a
    module); and its last pixel decodes (a truncated file fails there).

    .. versionadded:: 0.1
    """
    import rasterio
    from rasterio.windows import Window

    hsi_name, msi_name = Path(hsi_path).name, Path(msi_path).name
    try:
        with rasterio.open(out_path) as dst, rasterio.open(hsi_path) as hsi:
            tags = dst.tags()
            if "PIFNET_VERSION" not in tags:
                return "no PIFNET_VERSION tag: not written by pifnet-infer"
            for key, expected in (("PIFNET_HSI", hsi_name), ("PIFNET_MSI", msi_name)):
                if tags.get(key) != expected:
                    return f"tag {key} is {tags.get(key)!r}, expected {expected!r}"
            if isinstance(model, (str, os.PathLike)) and str(model) != "auto":
                expected = Path(model).name
                if tags.get("PIFNET_MODEL") != expected:
                    return f"tag PIFNET_MODEL is {tags.get('PIFNET_MODEL')!r}, expected {expected!r}"
            text = tags.get("PIFNET_RATIO", "")
            if not text.isdigit() or int(text) < 1 or (ratio is not None and int(text) != ratio):
                return f"tag PIFNET_RATIO is {text!r}, expected {ratio if ratio is not None else 'a positive integer'}"
            r = int(text)
            if (dst.height, dst.width) != (hsi.height * r, hsi.width * r):
                return f"size {dst.height}x{dst.width}, expected {hsi.height * r}x{hsi.width * r} (HSI x {r})"
            bands = ",".join(map(str, select_bands(hsi_bands, hsi.count, name="hsi_bands")))
            if tags.get("PIFNET_HSI_BANDS") != bands or dst.count != bands.count(",") + 1:
                return f"{dst.count} bands ({tags.get('PIFNET_HSI_BANDS')!r}), expected HSI bands {bands!r}"
            if dst.crs != hsi.crs:
                return f"CRS {dst.crs}, expected the HSI's {hsi.crs}"
            dst.read(dst.count, window=Window(dst.width - 1, dst.height - 1, 1, 1))
    except (rasterio.errors.RasterioError, OSError) as err:
        return f"cannot be read: {err}"
    return None


def _fuse_scene(job: _Job, model: Any, token: str | None, options: dict[str, Any]) -> SceneResult:
    """Worker side: fuse one pair unless its output is already complete (then report it done)."""
    from distributed import get_worker

    try:
        address: str | None = get_worker().address
    except ValueError:  # not on a worker (tests calling it directly)
        address = None
    start = time.perf_counter()
    check = {
        "hsi_bands": options.get("hsi_bands"),
        "ratio": options.get("ratio"),
        "model": model if token is None else None,
    }
    current = _identity(job.out)
    if (
        current is not None
        and current != job.previous
        and verify_output(job.out, job.hsi, job.msi, **check) is None
    ):
        return SceneResult(
            job.hsi, job.msi, job.out, "done", "found complete (an earlier attempt wrote it)", 0.0, address
        )
    net = model
    if token is not None:
        device = resolve_device(options.get("device", "auto"))
        net = worker_model(model, token, device)
        options = {**options, "device": device}
    try:
        fuse_geotiff(job.hsi, job.msi, job.out, net, overwrite=job.out.exists(), progress=False, **options)
    except FileExistsError:  # another attempt of this task renamed its output first
        if verify_output(job.out, job.hsi, job.msi, **check) is not None:
            raise
    return SceneResult(job.hsi, job.msi, job.out, "done", "", time.perf_counter() - start, address)


def _jobs(pairs: Iterable[Sequence[PathArg]], out_dir: Path, suffix: str) -> list[_Job]:
    jobs, seen = [], {}
    for i, pair in enumerate(pairs):
        if isinstance(pair, (str, os.PathLike)) or len(pair) not in (2, 3):
            raise ValueError(
                f"pairs[{i}] must be (hsi_path, msi_path) or (hsi_path, msi_path, out_name), got {pair!r}"
            )
        hsi, msi = Path(pair[0]).expanduser().absolute(), Path(pair[1]).expanduser().absolute()
        name = str(pair[2]) if len(pair) == 3 else f"{hsi.stem}{suffix}"
        if Path(name).name != name:
            raise ValueError(f"pairs[{i}]: the output name must be a plain file name, got {name!r}")
        if name in seen:
            raise ValueError(
                f"pairs[{seen[name]}] and pairs[{i}] both write {name!r}; give each pair its own output name "
                "as a third item, (hsi_path, msi_path, out_name)"
            )
        seen[name] = i
        jobs.append(_Job(hsi, msi, out_dir / name))
    return jobs


def _check_options(options: dict[str, Any]) -> None:
    allowed = sorted(set(inspect.signature(fuse_geotiff).parameters) - set(_MANAGED))
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"fuse_many got unexpected keyword arguments {unknown}; fuse_geotiff options are {allowed}"
        )


def _remove_debris(jobs: list[_Job]) -> None:
    """Temporary folders left by attempts whose worker was killed (atomic writes could not clean up)."""
    for job in jobs:
        for folder in job.out.parent.glob(f".{job.out.name}.*.pifnet-tmp"):
            _logger.info("removing %s, left by an interrupted attempt", folder)
            shutil.rmtree(folder, ignore_errors=True)


def fuse_many(
    pairs: Iterable[Sequence[PathArg]],
    out_dir: PathArg,
    model: ModelArg = "auto",
    *,
    client: Any = None,
    retries: int = 2,
    overwrite: bool = False,
    suffix: str = "_fused.tif",
    progress: bool = True,
    **options: Any,
) -> FuseManyReport:
    """Fuse many LR-HSI / HR-MSI raster pairs on a Dask cluster, one task per pair, resumably.

    Before submitting, every existing output is checked with :func:`verify_output`: complete ones are
    skipped (unless ``overwrite``), broken ones are recomputed (the reason is kept in the report).
    Pairs whose inputs do not exist fail at once. Workers must see the inputs and ``out_dir`` at the
    same paths (a shared file system). A failing task is retried ``retries`` times; tasks of a worker
    that dies are rescheduled by Dask. At the end, temporary folders that killed attempts left beside
    these outputs are removed.

    Args:
        pairs: ``(hsi_path, msi_path)`` or ``(hsi_path, msi_path, out_name)`` items.
        out_dir: existing folder for the outputs; the default name is the HSI's stem plus ``suffix``.
        model: a manifest name or ``.safetensors`` path (loaded once per worker process by
            :func:`~pifnet_infer.load_model`'s cache), ``"auto"`` (chosen per scene), or a loaded
            PIFNet (shipped to each worker once, placed once per worker and device).
        client: a ``distributed.Client``; None uses the current one.
        retries: extra attempts for a task that raises.
        overwrite: recompute outputs even when they verify.
        suffix: output name suffix for pairs without an explicit name.
        progress: show a progress bar over scenes.
        **options: keywords of :func:`~pifnet_infer.fuse_geotiff` (``hsi_bands``, ``ratio``, ``tile_size``,
            ``device``, ``cog``, ...); ``device="auto"`` is each worker's own GPU when it has one.

    Returns:
        A :class:`FuseManyReport` (``done``, ``skipped``, ``failed`` with reasons); it never raises for
        a failed scene.

    Raises:
        TypeError: unknown options.
        ValueError: malformed pairs, two pairs writing one output, no Dask client, negative retries.
        FileNotFoundError: ``out_dir`` does not exist.

    .. versionadded:: 0.1
    """
    distributed = require("distributed", extra="dask")
    _check_options(options)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a non-negative int, got {retries!r}")
    folder = Path(out_dir).expanduser().absolute()
    if not folder.is_dir():
        raise FileNotFoundError(f"output folder {str(folder)!r} does not exist; create it first")
    jobs = _jobs(pairs, folder, suffix)
    if isinstance(model, (str, os.PathLike)) and Path(model).is_file():
        model = str(Path(model).absolute())  # workers may start elsewhere
    if client is None:
        try:
            client = distributed.get_client()
        except ValueError as err:
            raise ValueError("fuse_many needs a Dask cluster: pass client=distributed.Client(...)") from err
    report = FuseManyReport()
    check = {"hsi_bands": options.get("hsi_bands"), "ratio": options.get("ratio"), "model": model}
    todo = []
    for job in jobs:
        missing = [str(p) for p in (job.hsi, job.msi) if not p.is_file()]
        if missing:
            report.add(
                SceneResult(job.hsi, job.msi, job.out, "failed", f"input not found: {', '.join(missing)}")
            )
            continue
        why = verify_output(job.out, job.hsi, job.msi, **check) if job.out.exists() else "missing"
        if why is None and not overwrite:
            report.add(SceneResult(job.hsi, job.msi, job.out, "skipped", "exists and verifies"))
        else:
            note = "" if why == "missing" else f"replaced: {why or 'overwrite=True'}"
            todo.append((replace(job, previous=_identity(job.out)), note))
    token = None
    shipped: Any = model
    if isinstance(model, nn.Module):
        token = model_token(model)
        shipped = client.compute(model_key(model, token))
    futures = {
        client.submit(
            _fuse_scene, job, shipped, token, options, key=f"pifnet-scene-{job.out.stem}-{uuid.uuid4().hex[:8]}",
            retries=retries, pure=False,
        ): (job, note)
        for job, note in todo
    }  # fmt: skip
    _logger.info("fuse_many: %d scenes to fuse, %d skipped, %d failed before start",
                 len(todo), len(report.skipped), len(report.failed))  # fmt: skip
    bar = progress_bar(len(futures), enabled=progress, desc="scenes", unit="scene")
    try:
        for future in distributed.as_completed(futures):
            job, note = futures[future]
            try:
                result: SceneResult = future.result()
                report.add(SceneResult(**{**result.__dict__, "reason": result.reason or note}))
            except Exception as err:
                report.add(SceneResult(job.hsi, job.msi, job.out, "failed", f"{type(err).__name__}: {err}"))
            bar.update(1)
    finally:
        bar.close()
    _remove_debris(jobs)
    _logger.info("fuse_many: %s", report.summary())
    return report

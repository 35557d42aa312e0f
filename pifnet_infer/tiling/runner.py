"""The tiling engine: Source -> batches of tiles -> model -> blend -> Sink.

One engine for every entry point. A background thread reads batches of tiles
from the Source (into pinned host buffers and, on CUDA, copies them to the
device on a side stream) while the model runs the previous batch under
``torch.inference_mode()`` and autocast. Results are weighted by the blend
window and summed into a strip of open output rows on the compute device
(:class:`_Strip`, one tile high); after each complete tile row its final rows
are normalised there, copied back without blocking and written by the Sink
while the next batch computes, so the host only ever copies finished rows. On
CUDA out-of-memory the batch is halved, then the tile size, and the run
continues from the current tile row (logged once).

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from pifnet_infer._utils.progress import progress_bar
from pifnet_infer._utils.threads import cpu_threads
from pifnet_infer.tiling.blend import BlendMode, BlendWindows
from pifnet_infer.tiling.grid import Tile, TileGrid
from pifnet_infer.tiling.protocols import Sink, Source, Window

_logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
#: per tile row and per tile column, the blend weights over a whole tile (on the compute device)
_DeviceWeights = tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]
#: finished output rows: (first HR row, float32 [C, n, W] on the host, event after which they are there)
_RowsOut = tuple[int, torch.Tensor, "torch.cuda.Event | None"]
#: "auto" batch size on CPU: batches of 4 were no faster per pixel than single tiles on 2 cores
#: (torch scan backend, 64-px tiles: 436 vs 427 us/px at dim 16, 3890 vs 2457 at dim 64)
CPU_BATCH = 1
#: CUDA out-of-memory (``torch.OutOfMemoryError`` in recent torch)
_OOM = torch.cuda.OutOfMemoryError


@dataclass
class RunStats:
    """What a run did.

    Attributes:
        tiles: tiles computed.
        tile_size: HR tile size at the end (smaller than asked after an out-of-memory backoff).
        overlap: HR overlap at the end.
        batch_size: batch size at the end.
        backoffs: number of out-of-memory backoffs.
        seconds: wall time of the run.
    """

    tiles: int
    tile_size: int
    overlap: int
    batch_size: int
    backoffs: int = 0
    seconds: float = 0.0


@dataclass
class _Batch:
    tiles: list[Tile]
    lr: torch.Tensor  # [n, C, t, t] on the compute device (or host)
    msi: torch.Tensor  # [n, c, r*t, r*t]
    ready: torch.cuda.Event | None  # recorded after the host-to-device copy


class _ShrinkTile(Exception):
    """Out of memory at batch 1: restart from this LR row with a smaller tile."""

    def __init__(self, lr_row: int) -> None:
        super().__init__(lr_row)
        self.lr_row = lr_row


def _shift(window: Window, rows: int) -> Window:
    return replace(window, row_off=window.row_off + rows)


class _Strip:
    """Blend accumulators for the open output rows, on the compute device.

    Holds ``capacity`` HR rows (the tile height: a tile row plus the overlap its predecessor left
    open) starting at HR row :attr:`top`: a weighted sum [C, capacity, W] and a weight sum
    [capacity, W], float32. :meth:`finish` normalises the rows that no later tile touches and moves
    the strip down past them.
    """

    def __init__(self, bands: int, width: int, capacity: int, device: torch.device) -> None:
        self.top = 0
        self.capacity = capacity
        self.values = torch.zeros((bands, capacity, width), device=device)
        self.weights = torch.zeros((capacity, width), device=device)

    def add(self, window: Window, weighted: torch.Tensor, weight: torch.Tensor) -> None:
        """Add a weighted tile [C, h, w] and its weights [h, w] at an in-scene HR window."""
        r0 = window.row_off - self.top
        if r0 < 0 or r0 + window.height > self.capacity:
            raise RuntimeError(
                f"internal error: tile rows {window.row_off}..{window.row_end} outside the open rows "
                f"{self.top}..{self.top + self.capacity}"
            )
        rows, cols = slice(r0, r0 + window.height), slice(window.col_off, window.col_end)
        self.values[:, rows, cols] += weighted
        self.weights[rows, cols] += weight

    def finish(self, row_end: int) -> torch.Tensor:
        """Normalised rows ``top..row_end`` [C, n, W]; the strip then starts at ``row_end``."""
        n = row_end - self.top
        weights = self.weights[:n]
        if not bool((weights > 0).all()):
            raise RuntimeError(
                f"HR rows {self.top}..{row_end} were finished before every pixel received a tile"
            )
        done = self.values[:, :n] / weights
        self.values = torch.cat([self.values[:, n:], torch.zeros_like(self.values[:, :n])], dim=1)
        self.weights = torch.cat([self.weights[n:], torch.zeros_like(self.weights[:n])])
        self.top = row_end
        return done


class _Prefetcher:
    """Reads batches of tiles from a Source in a background thread (``depth`` batches ahead)."""

    _DONE = object()

    def __init__(
        self,
        source: Source,
        tiles: list[Tile],
        lr_row_offset: int,
        batch_size: int,
        device: torch.device,
        depth: int = 2,
    ) -> None:
        self._source = source
        self._tiles = tiles
        self._offset = lr_row_offset
        self._batch_size = batch_size
        self._device = device
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="pifnet-prefetch", daemon=True)
        self._thread.start()

    def _read(self, tiles: list[Tile]) -> _Batch:
        cuda = self._device.type == "cuda"
        lr = msi = None
        for i, tile in enumerate(tiles):
            lr_np, msi_np = self._source.read(_shift(tile.lr, self._offset))
            if lr is None or msi is None:
                lr = torch.empty((len(tiles), *lr_np.shape), dtype=torch.float32, pin_memory=cuda)
                msi = torch.empty((len(tiles), *msi_np.shape), dtype=torch.float32, pin_memory=cuda)
            lr[i].numpy()[...] = lr_np
            msi[i].numpy()[...] = msi_np
        if lr is None or msi is None:
            raise RuntimeError("internal error: empty batch of tiles")
        if self._stream is None:
            return _Batch(tiles, lr, msi, None)
        with torch.cuda.stream(self._stream):
            lr_dev = lr.to(self._device, non_blocking=True)
            msi_dev = msi.to(self._device, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(self._stream)
        return _Batch(tiles, lr_dev, msi_dev, ready)

    def _work(self) -> None:
        try:
            for start in range(0, len(self._tiles), self._batch_size):
                if self._stop.is_set():
                    return
                self._put(self._read(self._tiles[start : start + self._batch_size]))
            self._put(self._DONE)
        except BaseException as err:  # handed to the consumer, which re-raises it
            self._put(err)

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[_Batch]:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class _Engine:
    """State of one run (see :func:`run_tiles`)."""

    def __init__(
        self,
        model: nn.Module,
        source: Source,
        sink: Sink,
        *,
        blend: BlendMode,
        batch_size: int,
        device: torch.device,
        dtype: torch.dtype,
        progress: bool,
        callback: ProgressCallback | None,
        total: int,
    ) -> None:
        self.model, self.source, self.sink = model, source, sink
        self.blend, self.batch_size, self.device, self.dtype = blend, batch_size, device, dtype
        self.callback = callback
        self.bar = progress_bar(total, enabled=progress, desc="fuse", unit="tile")
        self.done = 0
        self.backoffs = 0
        self.strip: _Strip | None = None

    def note_backoff(self, what: str) -> None:
        self.backoffs += 1
        log = _logger.warning if self.backoffs == 1 else _logger.debug
        log("CUDA out of memory: %s and continuing (further backoffs are logged at DEBUG)", what)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def run_pass(self, grid: TileGrid, lr_row_offset: int) -> None:
        """Compute every tile of ``grid`` (a grid over the scene rows from ``lr_row_offset`` down)."""
        hr_offset = lr_row_offset * grid.ratio
        windows = BlendWindows(grid, self.blend)
        weights = self._device_weights(grid, windows)
        left_in_row = [grid.n_cols] * grid.n_rows
        total = self.done + len(grid)
        if self.bar.total != total:  # after an out-of-memory backoff to smaller tiles
            self.bar.total = total
            self.bar.refresh()
        if self.strip is None:
            self.strip = _Strip(self.source.hsi_bands, grid.hr_shape[1], grid.tile_size, self.device)
        strip = self.strip

        def blend(out: torch.Tensor, tile_weights: torch.Tensor, tiles: list[Tile]) -> list[_RowsOut]:
            finished = []
            for i, tile in enumerate(tiles):
                window = windows.window(tile)
                rows = slice(window.row_off - tile.hr.row_off, window.row_end - tile.hr.row_off)
                cols = slice(window.col_off - tile.hr.col_off, window.col_end - tile.hr.col_off)
                strip.add(_shift(window, hr_offset), out[i, :, rows, cols], tile_weights[i, rows, cols])
                left_in_row[tile.row] -= 1
                if left_in_row[tile.row] == 0:
                    finished.append(self._rows_out(strip, grid.rows_final_after(tile.row) + hr_offset))
                self.done += 1
                self.bar.update(1)
                if self.callback is not None:
                    self.callback(self.done, total)
            return finished

        unwritten: list[_RowsOut] = []
        prefetch = _Prefetcher(self.source, list(grid), lr_row_offset, self.batch_size, self.device)
        try:
            for batch in prefetch:
                todo = deque(_split(batch, self.batch_size))
                while todo:
                    chunk = todo.popleft()
                    try:
                        result = self._forward(chunk, weights)
                    except _OOM:
                        result = None  # recover outside the handler: its traceback pins device memory
                    self._write(unwritten)  # rows finished by earlier batches, copied while this one computes
                    unwritten = []
                    if result is None and len(chunk.tiles) > 1:
                        self.batch_size = max(1, min(self.batch_size, len(chunk.tiles)) // 2)
                        self.note_backoff(f"batch size halved to {self.batch_size}")
                        todo.extendleft(reversed(_split(chunk, self.batch_size)))
                        continue
                    if result is None:
                        raise _ShrinkTile(chunk.tiles[0].lr.row_off + lr_row_offset)
                    unwritten = blend(*result, chunk.tiles)
            self._write(unwritten)
        finally:
            prefetch.close()

    def _rows_out(self, strip: _Strip, row_end: int) -> _RowsOut:
        """Finish the strip's rows up to ``row_end`` and start copying them to the host."""
        row0 = strip.top
        rows = strip.finish(row_end)
        if self.device.type != "cuda":
            return row0, rows, None
        host = torch.empty(rows.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(rows, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record(torch.cuda.current_stream(self.device))
        return row0, host, copied

    def _write(self, finished: list[_RowsOut]) -> None:
        for row0, rows, copied in finished:
            if copied is not None:
                copied.synchronize()
            self.sink.write(row0, rows.numpy())

    def _device_weights(self, grid: TileGrid, windows: BlendWindows) -> _DeviceWeights:
        """Separable full-tile weights on the device: one vector per tile row and one per tile column."""
        rows: dict[int, torch.Tensor] = {}
        cols: dict[int, torch.Tensor] = {}
        for tile in grid:
            if tile.row not in rows or tile.col not in cols:
                row, col = windows.tile_vectors(tile)
                rows.setdefault(tile.row, torch.from_numpy(row).to(self.device))
                cols.setdefault(tile.col, torch.from_numpy(col).to(self.device))
        return rows, cols

    def _forward(self, batch: _Batch, weights: _DeviceWeights) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's output times each tile's blend weights [n, C, t, t], and those weights [n, t, t]."""
        if batch.ready is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(batch.ready)
            batch.lr.record_stream(stream)
            batch.msi.record_stream(stream)
        lr, msi = batch.lr.to(self.device), batch.msi.to(self.device)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            out = self.model(lr, msi)
        rows, cols = weights
        tile_weights = torch.stack([torch.outer(rows[t.row], cols[t.col]) for t in batch.tiles])
        return out.float() * tile_weights.unsqueeze(1), tile_weights


def _split(batch: _Batch, size: int) -> list[_Batch]:
    return [
        _Batch(batch.tiles[i : i + size], batch.lr[i : i + size], batch.msi[i : i + size], batch.ready)
        for i in range(0, len(batch.tiles), size)
    ]


def auto_batch_size(
    model: nn.Module,
    source: Source,
    tile_size: int,
    *,
    device: torch.device,
    dtype: torch.dtype,
    max_batch: int = 64,
) -> int:
    """Tiles per forward pass: :data:`CPU_BATCH` on CPU; on CUDA from free memory and one probe tile.

    The probe runs one zero tile and measures the peak memory it allocates; the batch is the number of
    such tiles that fit in 70% of the free memory (the out-of-memory backoff covers a wrong guess).
    """
    if device.type != "cuda":
        return CPU_BATCH
    t = tile_size // source.ratio
    lr = torch.zeros((1, source.hsi_bands, t, t), device=device)
    msi = torch.zeros((1, source.msi_bands, tile_size, tile_size), device=device)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    try:
        with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            model(lr, msi)
    except _OOM:
        torch.cuda.empty_cache()
        return 1
    per_tile = max(torch.cuda.max_memory_allocated(device) - base, 1)
    free, _ = torch.cuda.mem_get_info(device)
    batch = int(max(1, min(max_batch, 0.7 * free // per_tile)))
    _logger.info(
        "auto batch size %d (%.0f MiB per %d px tile, %.0f MiB free)",
        batch,
        per_tile / 2**20,
        tile_size,
        free / 2**20,
    )
    return batch


def run_tiles(
    model: nn.Module,
    source: Source,
    sink: Sink,
    *,
    tile_size: int,
    overlap: int,
    blend: BlendMode | Literal["auto"] = "auto",
    batch_size: int = 1,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    callback: ProgressCallback | None = None,
) -> RunStats:
    """Run ``model`` over every tile of ``source`` and write the blended result to ``sink``.

    Args:
        model: maps (lr [B, C, t, t], msi [B, c, r*t, r*t]) to [B, C, r*t, r*t]; already on ``device``.
        source: the inputs (:class:`~pifnet_infer.tiling.protocols.Source`).
        sink: the output (:class:`~pifnet_infer.tiling.protocols.Sink`); closed at the end.
        tile_size: HR tile side, a multiple of ``2 * source.ratio``.
        overlap: HR overlap, a multiple of ``2 * source.ratio``, smaller than ``tile_size``.
        blend: ``"cosine"`` (smooth blending), ``"none"`` (overwrite stitching, the official protocol), or
            ``"auto"``: ``"none"`` when ``overlap == 0``, else ``"cosine"``.
        batch_size: tiles per forward pass.
        device: compute device; None uses the model's.
        dtype: autocast dtype (float32 disables autocast; the model keeps its scan state in fp32).
        progress: show a progress bar over tiles.
        callback: called as ``callback(done, total)`` after every tile.

    Returns:
        :class:`RunStats`. Memory: on the device about ``batch_size`` tiles of activations; on the
        host what the Source and Sink hold plus two batches of tiles in flight. Torch's CPU threads are
        capped at the physical cores for the run (:func:`pifnet_infer._utils.threads.cpu_threads`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if device is None:
        device = next(iter(model.parameters())).device
    if blend == "auto":
        blend = "cosine" if overlap else "none"
    h, w = source.lr_shape
    grid = TileGrid((h, w), source.ratio, tile_size, overlap)
    engine = _Engine(
        model,
        source,
        sink,
        blend=blend,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        progress=progress,
        callback=callback,
        total=len(grid),
    )
    step = 2 * source.ratio
    lr_row_offset = 0
    start = time.perf_counter()
    try:
        with torch.inference_mode(), cpu_threads():
            while True:
                try:
                    engine.run_pass(grid, lr_row_offset)
                    break
                except _ShrinkTile as shrink:
                    if tile_size <= step:
                        raise RuntimeError(
                            f"CUDA out of memory with one tile of {tile_size} HR pixels, the smallest possible; "
                            "free GPU memory or use device='cpu'"
                        ) from None
                    tile_size = max(step, tile_size // 2 // step * step)
                    overlap = min(overlap // 2 // step * step, tile_size - step)
                    engine.note_backoff(f"tile size halved to {tile_size} (overlap {overlap})")
                    lr_row_offset = shrink.lr_row
                    grid = TileGrid((h - lr_row_offset, w), source.ratio, tile_size, overlap)
        sink.close()
    finally:
        engine.bar.close()
    stats = RunStats(
        engine.done, tile_size, overlap, engine.batch_size, engine.backoffs, time.perf_counter() - start
    )
    _logger.info("fused %d tiles in %.1f s (%s)", stats.tiles, stats.seconds, stats)
    return stats

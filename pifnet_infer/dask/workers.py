"""The model on the workers: shipped once per graph, placed once per worker process and device.

The client resolves the model once (name, path or module, checked against the inputs by
:func:`~pifnet_infer.prepare.resolve_model`) and puts a CPU copy into the task graph as a
single key (:func:`model_key`): every task that needs it depends on that key, so a worker
receives and unpickles it once, whatever the number of tasks, and a worker that dies gets it
again from the graph. On the worker, :func:`worker_model` moves it to the worker's device once
and caches it in the process (keyed by the model's token and the device); ``device="auto"``
resolves on each worker, so a GPU worker uses its own GPU (one GPU per worker process, as
``dask-cuda`` sets ``CUDA_VISIBLE_DEVICES``).

.. versionadded:: 0.1
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import threading
import warnings
from collections import OrderedDict
from typing import Any, Literal

import torch
from torch import nn

from pifnet_infer.errors import PifnetPerformanceWarning
from pifnet_infer.tiling.protocols import Source
from pifnet_infer.tiling.runner import auto_batch_size

_logger = logging.getLogger(__name__)

#: glibc trims freed memory back to the OS above this many bytes when ``MALLOC_TRIM_THRESHOLD_`` is set;
#: distributed sets 65536 in its workers, which made torch CPU inference 2-3x slower (benchmarks/bench_dask.py)
SLOW_TRIM_BELOW = 1 << 24
#: models kept per worker process (distinct model tokens x devices); the oldest is dropped beyond it
MAX_CACHED_MODELS = 4

_LOCK = threading.Lock()
_MODELS: OrderedDict[tuple[str, str], nn.Module] = OrderedDict()
_BATCH: dict[tuple[str, str, int, str], int] = {}
_LOADS: dict[tuple[str, str], int] = {}


def model_token(net: nn.Module) -> str:
    """A hex digest of the pickled CPU copy of the model (its class, every attribute and tensor): the cache key."""
    import cloudpickle  # a dependency of dask

    return hashlib.sha256(cloudpickle.dumps(cpu_copy(net))).hexdigest()[:32]


def cpu_copy(net: nn.Module) -> nn.Module:
    """What travels to the workers: the model itself when it is on the CPU in ``eval()`` mode, else a CPU copy
    in ``eval()`` mode (the caller's model is never modified)."""
    tensors = [*net.parameters(), *net.buffers()]
    if not net.training and all(t.device.type == "cpu" for t in tensors):
        return net
    return copy.deepcopy(net).to("cpu").eval()


def model_key(net: nn.Module, token: str) -> Any:
    """A ``dask.delayed`` holding the model under the key ``pifnet-model-<token>`` (one graph key)."""
    import dask

    return dask.delayed(cpu_copy(net), name=f"pifnet-model-{token}", pure=True)


def _warn_if_trimming(device: torch.device) -> None:
    """Warn (once per process, at the first placement) when the worker's malloc setting slows CPU inference."""
    value = os.environ.get("MALLOC_TRIM_THRESHOLD_", "")
    if device.type == "cpu" and value.isdigit() and int(value) < SLOW_TRIM_BELOW:
        warnings.warn(
            f"this Dask worker runs with MALLOC_TRIM_THRESHOLD_={value} (distributed's default), which made CPU "
            "inference 2-3x slower in our benchmark; start workers with "
            "dask.config.set({'distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_': None}) "
            "(see docs/dask.md)",
            PifnetPerformanceWarning,
            stacklevel=3,
        )


def worker_model(net: nn.Module, token: str, device: torch.device) -> nn.Module:
    """The shipped model (from :func:`cpu_copy`) on ``device``, moved there once per process (cached by token
    and device).

    On the CPU the shipped object itself is used; on another device a copy is moved there, so the
    object in the worker's memory (or the caller's, with the threaded scheduler) is never modified.
    """
    key = (token, str(device))
    with _LOCK:
        cached = _MODELS.get(key)
        if cached is not None:
            _MODELS.move_to_end(key)
            return cached
        first = not _MODELS
        placed = net if device.type == "cpu" else copy.deepcopy(net).to(device)
        _MODELS[key] = placed
        _LOADS[key] = _LOADS.get(key, 0) + 1
        while len(_MODELS) > MAX_CACHED_MODELS:
            _MODELS.popitem(last=False)
    _logger.info("model %s placed on %s in this worker", token[:12], device)
    if first:
        _warn_if_trimming(device)
    return placed


def worker_batch_size(
    net: nn.Module,
    token: str,
    source: Source,
    tile_size: int,
    batch_size: int | Literal["auto"],
    *,
    device: torch.device,
    dtype: torch.dtype,
) -> int:
    """``batch_size``, or for ``"auto"`` :func:`~pifnet_infer.tiling.runner.auto_batch_size` probed once per process."""
    if batch_size != "auto":
        return batch_size
    key = (token, str(device), tile_size, str(dtype))
    with _LOCK:
        if key in _BATCH:
            return _BATCH[key]
    size = auto_batch_size(net, source, tile_size, device=device, dtype=dtype)
    with _LOCK:
        _BATCH[key] = size
    return size


def placements() -> dict[str, int]:
    """How many times each ``token@device`` model was placed in this process (for tests and diagnostics)."""
    with _LOCK:
        return {f"{token}@{device}": n for (token, device), n in _LOADS.items()}

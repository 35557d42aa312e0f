"""CPU thread count: the physical cores this process may use, and a guard against oversubscription.

Torch's own default intra-op thread count comes from the machine, not from the CPU set or the CPU quota of
a container: on a 64-core host a container limited to 2 CPUs still gets many threads, which then compete
for 2 CPUs. :func:`physical_cores` counts what this process may actually use, and :func:`cpu_threads`
lowers torch's count to it for the duration of a call, never raising it, so a smaller count chosen by the
user (``torch.set_num_threads``, ``OMP_NUM_THREADS``) is kept.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

_logger = logging.getLogger(__name__)

_SYS_CPU = Path("/sys/devices/system/cpu")
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def _cpu_quota() -> int | None:
    """CPUs allowed by the cgroup v2 quota (``cpu.max``, rounded up), or ``None`` without a quota."""
    try:
        quota, period = _CGROUP_CPU_MAX.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def physical_cores() -> int:
    """Physical CPU cores this process may run on (Linux: CPU affinity, SMT siblings, cgroup quota).

    Hyper-threads of one core count once (``/sys/devices/system/cpu/cpuN/topology``); without that
    information each logical CPU counts as a core. Elsewhere: ``os.cpu_count()``.

    .. versionadded:: 0.1
    """
    if not hasattr(os, "sched_getaffinity"):
        return os.cpu_count() or 1
    cores = set()
    for cpu in os.sched_getaffinity(0):
        topology = _SYS_CPU / f"cpu{cpu}" / "topology"
        try:
            cores.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        except OSError:
            cores.add(("logical", str(cpu)))
    quota = _cpu_quota()
    return max(1, min(len(cores), quota) if quota is not None else len(cores))


@contextmanager
def cpu_threads(threads: int | None = None) -> Iterator[int]:
    """Run a block with ``threads`` torch threads, or at most :func:`physical_cores` when ``None``.

    The previous count is restored afterwards. Yields the count in use.

    .. versionadded:: 0.1
    """
    previous = torch.get_num_threads()
    wanted = threads if threads is not None else min(previous, physical_cores())
    if wanted != previous:
        _logger.debug("torch threads %d -> %d for this call", previous, wanted)
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if wanted != previous:
            torch.set_num_threads(previous)

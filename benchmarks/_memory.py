"""Peak resident memory of the running process, sampled in a thread (shared by the benchmarks; Linux)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def rss_bytes() -> int:
    """This process's resident set size now, in bytes (from ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_rss(interval: float = 0.005) -> Iterator[dict[str, int]]:
    """Sample the RSS every ``interval`` s; yields a dict filled with ``baseline`` and ``peak`` bytes."""
    result = {"baseline": rss_bytes(), "peak": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            result["peak"] = max(result["peak"], rss_bytes())
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        result["peak"] = max(result["peak"], rss_bytes())

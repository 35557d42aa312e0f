"""Host memory of fuse() at 1k^2 and 4k^2 HR output (issue 7 point 4): bounded by inputs + output + tiles.

Every run happens in a fresh process that loads the inputs from ``.npy`` files (so no freed memory
of the scene simulation is lying around), then records during ``fuse``: peak anonymous RSS above
the baseline taken once inputs and model exist (RssAnon: the process's own memory; pages of an
``out=`` memmap are file-backed and not in it), peak total RSS, and the anonymous RSS after every
tile. Its drift (median over the last quarter of the tiles minus the first quarter) is the engine's
per-tile overhead with ``out=`` memmap, and should be ~0; with an in-memory output it includes the
output's pages being written. A tiny random-init PIF-Net (width 4, one stage, 2 states) keeps the
4k^2 runs to minutes on a CPU (``--tile-size 256`` halves the time): host memory of the engine does
not depend on the network, only the device activations do.

    python benchmarks/bench_fuse_memory.py [--sizes 1024 4096] [--bands 8] [--tile-size auto]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _results import write_record  # benchmarks/ is on sys.path when run as a script
from bench_fuse import RATIO, RESULTS, environment, simulated_scene

from pifnet_infer import PIFNet, PIFNetConfig
from pifnet_infer.fusion import fuse


def status_kib(field: str) -> int:
    """A ``kB`` field of /proc/self/status (e.g. ``RssAnon``, ``VmRSS``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def model_config(bands: int) -> PIFNetConfig:
    """The tiny configuration used for memory runs."""
    return PIFNetConfig(hsi_bands=bands, msi_bands=3, ratio=RATIO, dim=4, num_stages=1, d_state=2, expand=1)


def worker(folder: Path, memmap: bool, tile: int | str) -> dict[str, Any]:
    """One fuse() in this (fresh) process, with memory sampling; MiB figures relative to the baseline."""
    lr, msi = np.load(folder / "lr.npy"), np.load(folder / "msi.npy")
    torch.manual_seed(0)
    model = PIFNet(model_config(lr.shape[0])).eval()
    shape = (lr.shape[0], msi.shape[1], msi.shape[2])
    out = (
        np.lib.format.open_memmap(folder / "out.npy", mode="w+", dtype=np.float32, shape=shape)
        if memmap
        else None
    )
    base_anon, base_rss = status_kib("RssAnon"), status_kib("VmRSS")
    peaks = {"anon": base_anon, "rss": base_rss}
    trace: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peaks["anon"] = max(peaks["anon"], status_kib("RssAnon"))
            peaks["rss"] = max(peaks["rss"], status_kib("VmRSS"))
            stop.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    result = fuse(lr, msi, model, tile_size=tile, progress=False, out=out,
                  callback=lambda done, total: trace.append(status_kib("RssAnon")))  # fmt: skip
    seconds = time.perf_counter() - start
    stop.set()
    thread.join()
    anon = np.array(trace, dtype=np.float64)
    quarter = max(1, len(anon) // 4)
    return {
        "tiles": len(trace),
        "seconds": seconds,
        "inputs_mib": (lr.nbytes + msi.nbytes) / 2**20,
        "output_mib": result.nbytes / 2**20,
        "baseline_rss_mib": base_rss / 1024,
        "peak_anon_increase_mib": (peaks["anon"] - base_anon) / 1024,
        "peak_rss_increase_mib": (peaks["rss"] - base_rss) / 1024,
        "anon_drift_first_to_last_quarter_mib": float(np.median(anon[-quarter:]) - np.median(anon[:quarter]))
        / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--bands", type=int, default=8)
    parser.add_argument("--tile-size", default="auto", help='HR tile side or "auto" (128)')
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--memmap", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    tile = args.tile_size if args.tile_size == "auto" else int(args.tile_size)
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.memmap, tile)))
        return

    report: dict[str, Any] = {
        "model": {**model_config(args.bands).to_dict(), "weights": "random init"},
        "tile_size": tile,
        "environment": environment(torch.device("cpu")),
        "runs": {},
    }
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            _, lr, msi = simulated_scene(size, args.bands)
            np.save(Path(tmp) / "lr.npy", lr)
            np.save(Path(tmp) / "msi.npy", msi)
            del lr, msi
            entry = {}
            for mode in ("in_memory_out", "memmap_out"):
                command = [sys.executable, __file__, "--worker", tmp, "--tile-size", str(tile)]
                command += ["--memmap"] if mode == "memmap_out" else []
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode:
                    raise RuntimeError(f"worker failed:\n{done.stderr}")
                entry[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        report["runs"][f"{size}x{size}"] = entry
        print(size, json.dumps(entry, indent=2), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = write_record(args.out, "bench_fuse_memory_cpu", report, indent=2)
    print(f"written {path}")


if __name__ == "__main__":
    main()

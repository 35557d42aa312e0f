"""Benchmark fuse_dask on a LocalCluster: 1 vs 2 CPU workers, and the overlap overhead vs chunk size (issue 11).

One scene, one run, one process as the client:

(a) in-memory ``fuse()`` with one torch thread: the reference for values and time;
(b) ``fuse_dask`` on a LocalCluster of 1 worker, then of 2 workers (processes, 1 thread each: Dask
    sets ``OMP_NUM_THREADS=1`` in workers), same chunks: throughput (HR Mpx/s) and scaling efficiency
    ``T(1 worker) / (2 x T(2 workers))``; workers start without Dask's ``MALLOC_TRIM_THRESHOLD_=65536``
    (see ``docs/dask.md``), and one more 1-worker run with it shows its cost;
(c) on 1 worker, several LR chunk sizes: tiles computed per tile of the whole-scene grid (predicted
    by :func:`pifnet_infer.dask.tile_overhead`) and the measured time relative to ``fuse()``.

Each cluster first computes a small warm-up scene (worker start-up, first forward), which is not
timed. Every dask result is compared with (a): max |dask - fuse|. The model is a random-init
PIF-Net (speed does not depend on the weights). Writes JSON to ``benchmarks/results/``.
Time on a shared machine varies: run nothing else meanwhile.

    python benchmarks/bench_dask.py                       # about 2-3 minutes on 2 idle cores
    python benchmarks/bench_dask.py --size 256 --dim 16 --chunks 8 16 32 64
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _results import write_record  # benchmarks/ is on sys.path when run as a script
from bench_fuse import RATIO, environment, simulated_scene

from pifnet_infer import PIFNet, PIFNetConfig
from pifnet_infer.dask import fuse_dask, tile_overhead
from pifnet_infer.fusion import fuse

RESULTS = Path(__file__).resolve().parent / "results"


def timed_compute(lazy: Any) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    result = lazy.compute()
    return result, time.perf_counter() - start


def cluster_runs(
    n_workers: int,
    model: PIFNet,
    lr: np.ndarray,
    msi: np.ndarray,
    chunk_sizes: list[int],
    tiling: dict[str, int],
    *,
    malloc_trim: bool = False,
) -> dict[int, dict[str, Any]]:
    """Times of fuse_dask on a fresh LocalCluster for each LR chunk size (after an untimed warm-up).

    ``malloc_trim=False`` removes ``MALLOC_TRIM_THRESHOLD_=65536`` from the workers' environment (distributed
    sets it by default; it made torch CPU inference 2-3x slower here), as ``docs/dask.md`` recommends.
    """
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster

    runs = {}
    environ = {} if malloc_trim else {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
    with (
        dask.config.set(environ),
        LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
    ):
        with Client(cluster) as client:
            small = (da.from_array(lr[:, :16, :16]), da.from_array(msi[:, : 16 * RATIO, : 16 * RATIO]))
            fuse_dask(*small, model, **tiling).compute()
            client.run(lambda: None)
            for size in chunk_sizes:
                lazy = fuse_dask(
                    da.from_array(lr, chunks=(lr.shape[0], size, size)),
                    da.from_array(msi, chunks=(msi.shape[0], size * RATIO, size * RATIO)),
                    model,
                    **tiling,
                )
                result, seconds = timed_compute(lazy)
                runs[size] = {
                    "seconds": seconds,
                    "blocks": lazy.numblocks[1] * lazy.numblocks[2],
                    "result": result,
                }
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=192, help="HR scene side (pixels)")
    parser.add_argument("--bands", type=int, default=16, help="HSI bands")
    parser.add_argument("--dim", type=int, default=8, help="model width")
    parser.add_argument("--tile-size", type=int, default=32)
    parser.add_argument("--overlap", type=int, default=8)
    parser.add_argument(
        "--scaling-chunks", type=int, default=12, help="LR chunk side for the 1 vs 2 workers runs"
    )
    parser.add_argument(
        "--chunks", type=int, nargs="+", default=[8, 12, 24, 48], help="LR chunk sides for (c)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    load_before = os.getloadavg()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = PIFNet(PIFNetConfig(hsi_bands=args.bands, msi_bands=3, ratio=RATIO, dim=args.dim)).eval()
    _, lr, msi = simulated_scene(args.size, args.bands)
    tiling = {"tile_size": args.tile_size, "overlap": args.overlap}
    megapixels = args.size**2 / 1e6
    lr_side = args.size // RATIO

    fuse(lr[:, :16, :16], msi[:, :64, :64], model, progress=False, **tiling)  # warm-up
    start = time.perf_counter()
    expected = fuse(lr, msi, model, progress=False, **tiling)
    t_fuse = time.perf_counter() - start

    one = cluster_runs(1, model, lr, msi, sorted({args.scaling_chunks, *args.chunks}), tiling)
    two = cluster_runs(2, model, lr, msi, [args.scaling_chunks], tiling)
    trimmed = cluster_runs(1, model, lr, msi, [args.scaling_chunks], tiling, malloc_trim=True)

    def row(run: dict[str, Any], size: int) -> dict[str, Any]:
        chunks = [size] * (lr_side // size) + ([lr_side % size] if lr_side % size else [])
        predicted = tile_overhead((lr_side, lr_side), (chunks, chunks), ratio=RATIO, **tiling)
        return {
            "lr_chunk": size,
            "hr_block": size * RATIO,
            "blocks": run["blocks"],
            "seconds": run["seconds"],
            "mpx_per_s": megapixels / run["seconds"],
            "tiles_computed_per_scene_tile": predicted,
            "time_vs_fuse": run["seconds"] / t_fuse,
            "max_abs_vs_fuse": float(np.abs(run["result"] - expected).max()),
        }

    s = args.scaling_chunks
    t1, t2 = one[s]["seconds"], two[s]["seconds"]
    report = {
        "scene": {
            "hr_size": args.size,
            "bands": args.bands,
            "msi_bands": 3,
            "ratio": RATIO,
            "sample": "aviris_gatorsense_vi",
        },
        "model": {
            **model.config.to_dict(),
            "weights": "random init",
            "pickled_bytes": len(pickle.dumps(model)),
        },
        "tiling": tiling,
        "environment": environment(torch.device("cpu")),
        "note": "LocalCluster, processes, 1 thread per worker (torch 1 thread); in-memory inputs shipped in the graph",
        "load_average_1_5_15_min": {"before": load_before, "after": os.getloadavg()},
        "fuse_in_memory": {"seconds": t_fuse, "mpx_per_s": megapixels / t_fuse, "torch_threads": 1},
        "scaling": {
            "lr_chunk": s,
            "one_worker": row(one[s], s),
            "two_workers": row(two[s], s),
            "speedup": t1 / t2,
            "efficiency": t1 / (2 * t2),
        },
        "overlap_overhead_one_worker": [row(one[size], size) for size in args.chunks],
        "one_worker_with_dask_default_malloc_trim": row(trimmed[s], s),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = write_record(args.out, "bench_dask_cpu", report)
    print(
        json.dumps(
            {"scaling": report["scaling"], "overhead": report["overlap_overhead_one_worker"]}, indent=1
        )
    )
    print(f"fuse(): {t_fuse:.1f} s; wrote {path}")


if __name__ == "__main__":
    main()

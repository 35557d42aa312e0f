"""Benchmark the selective-scan backends on PIF-Net's VMamba shapes (issue 4 point 6a).

Shapes: K=4 directions x d_inner 128 = 512 scan channels, d_state 16, called as the model calls it (D skip,
no gate, softplus already applied). Lengths L = side^2 for sides 32..512 (capped on the CPU), batch 1..16.
The baseline, measured in the same run, is the torch backend in float32; every row reports its speedup
over that baseline at the same (batch, L). ``--torch-chunks`` adds rows for other chunk sizes of the torch
backend (how its default was chosen). Writes JSON to ``benchmarks/results/``.

    python benchmarks/bench_scan.py                                   # the first GPU, else the CPU
    python benchmarks/bench_scan.py --device cpu --sides 32 64 --batches 1 --torch-chunks 16 32 64 128
    python benchmarks/bench_scan.py --device cuda --dtypes float32 bfloat16
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _results import write_record  # benchmarks/ is on sys.path when run as a script

from pifnet_infer import __version__
from pifnet_infer._utils.device import resolve_device, resolve_dtype
from pifnet_infer._utils.optional import try_import
from pifnet_infer.errors import BackendUnavailableError
from pifnet_infer.ops import available_backends, selective_scan
from pifnet_infer.ops.scan._torch import CHUNK, selective_scan_torch

RESULTS = Path(__file__).resolve().parent / "results"
CHANNELS = 4 * 128
D_STATE = 16


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return f"{models[0]} ({len(models)} logical CPUs)" if models else platform.processor() or "cpu"


def environment(device: torch.device) -> dict[str, Any]:
    """Device name, versions, git commit, CPU threads and load (the CPU machines are shared)."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout.strip()

    versions = {"python": platform.python_version(), "torch": torch.__version__, "pifnet_infer": __version__}
    for module in ("triton", "mamba_ssm", "torchvision"):
        mod = try_import(module)
        versions[module] = getattr(mod, "__version__", "installed") if mod is not None else None
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "device_type": device.type,
        "cpu_threads": torch.get_num_threads(),
        "load_average_1m_at_start": os.getloadavg()[0],
        "versions": versions,
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain")),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "backends_available": available_backends()["selective_scan"],
    }


def refusal(backend: str, device: torch.device) -> str | None:
    """Why ``backend`` cannot scan float32 tensors on ``device`` (the selector's message), or ``None``."""
    try:
        with torch.inference_mode():
            selective_scan(**scan_inputs(1, 16, torch.float32, device), backend=backend)
    except BackendUnavailableError as err:
        return str(err)
    return None


def scan_inputs(batch: int, length: int, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    """Inputs shaped and scaled like one VMamba call of PIF-Net (A = -exp(log(1..16)), D = 1)."""
    g = torch.Generator(device=device).manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, device=device)

    return {
        "u": randn(batch, CHANNELS, length).to(dtype),
        "delta": torch.nn.functional.softplus(randn(batch, CHANNELS, length) - 2.0).to(dtype),
        "A": -torch.arange(1, D_STATE + 1, device=device, dtype=torch.float32).repeat(CHANNELS, 1),
        "B": randn(batch, D_STATE, length).to(dtype),
        "C": randn(batch, D_STATE, length).to(dtype),
        "D": torch.ones(CHANNELS, device=device),
    }


def timed(run: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """(wall, process CPU) time of one call in ms."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3


def measure(
    runs: dict[str, Callable[[], Any]], device: torch.device, repeat: int, budget_s: float
) -> dict[str, list]:
    """Warm every run up once, then time them round-robin ``repeat`` times, so that a change of load on a
    shared machine hits all of them alike. A run whose warm-up exceeds ``budget_s`` keeps that one time."""
    times = {name: [timed(run, device)] for name, run in runs.items()}
    active = [name for name in runs if times[name][0][0] / 1e3 <= budget_s]
    for name in active:
        times[name] = []
    for _ in range(repeat):
        for name in active:
            times[name].append(timed(runs[name], device))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backends", nargs="+", default=["torch", "triton", "mamba"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--sides", nargs="+", type=int, default=[32, 64, 128, 256, 512], help="L = side^2")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument(
        "--max-cpu-length", type=int, default=64 * 64, help="skip longer sequences on the CPU"
    )
    parser.add_argument(
        "--torch-chunks", nargs="*", type=int, default=[], help="extra torch chunk sizes to time"
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--budget-s", type=float, default=20.0, help="time one call only if the warm-up exceeds it"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    device = resolve_device(args.device)
    env = environment(device)
    lengths = [s * s for s in args.sides if device.type == "cuda" or s * s <= args.max_cpu_length]
    requested = [resolve_dtype(d, device) for d in args.dtypes]
    dtypes = [torch.float32, *(d for d in requested if d != torch.float32)]
    skipped = {b: reason for b in args.backends if (reason := refusal(b, device)) is not None}
    runnable = [b for b in args.backends if b not in skipped]
    chunks = [c for c in args.torch_chunks if c != CHUNK] if "torch" in runnable else []

    rows: list[dict[str, Any]] = []
    with torch.inference_mode():
        for batch in args.batches:
            for length in lengths:
                baseline = None
                for dtype in dtypes:
                    x = scan_inputs(batch, length, dtype, device)
                    runs: dict[str, Callable[[], Any]] = {
                        b: (lambda b=b, x=x: selective_scan(**x, backend=b)) for b in runnable
                    }
                    if dtype == torch.float32:
                        runs |= {
                            f"torch[chunk={c}]": (lambda c=c, x=x: selective_scan_torch(**x, chunk=c))
                            for c in chunks
                        }
                    for name, times in measure(runs, device, args.repeat, args.budget_s).items():
                        median = statistics.median(wall for wall, _ in times)
                        if name == "torch" and dtype == torch.float32:
                            baseline = median
                        row = {
                            "backend": name,
                            "dtype": str(dtype).removeprefix("torch."),
                            "batch": batch,
                            "length": length,
                            "ms_median": round(median, 3),
                            "ms_min": round(min(wall for wall, _ in times), 3),
                            "cpu_ms_median": round(statistics.median(cpu for _, cpu in times), 3),
                            "calls": len(times),
                            "speedup_vs_torch_fp32": round(baseline / median, 2) if baseline else None,
                        }
                        rows.append(row)
                        print(
                            f"B={batch:<3d} L={length:<7d} {row['dtype']:<9s} {name:<16s} {median:10.2f} ms "
                            f"(CPU {row['cpu_ms_median']:10.2f} ms)  x{row['speedup_vs_torch_fp32']}",
                            flush=True,
                        )
    env["load_average_1m_at_end"] = os.getloadavg()[0]
    report = {
        "benchmark": "selective_scan",
        "shape": {"channels": CHANNELS, "d_state": D_STATE, "directions": 4, "d_inner": 128},
        "torch_default_chunk": CHUNK,
        "command": ["python", "benchmarks/bench_scan.py", *sys.argv[1:]],
        "environment": env,
        "skipped_backends": skipped,
        "results": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = write_record(args.out, f"bench_scan_{device.type}", report, indent=2)
    print(f"written {path}")


if __name__ == "__main__":
    main()

"""PIF-Net on a CPU against the naive port of the official code, in one run (issue 19 point 3).

Chikusei preset (128 HSI bands, 4 MSI bands, ratio 4, dim 64), random weights, one simulated scene of
``--size`` HR pixels. For each thread count in ``--threads`` (set with ``torch.set_num_threads``):

- (a) ``naive``: our model with the scan replaced by :func:`naive_scan`, a plain per-position loop (the
  official code's compute: one ``exp``, one multiply-add and one sum over states per position), under the
  official protocol: ``fuse(tile_size=64, overlap=0, batch_size=1, dtype="float32")``;
- (t) ``torch``: the same tiling with ``PIFNET_SCAN_BACKEND=torch`` (the chunked reference, the CPU default
  before issue 19);
- (b) ``loop``: the same tiling with ``PIFNET_SCAN_BACKEND=loop`` (the CPU default since issue 19);
- (c) ``defaults``: ``fuse()`` with every knob ``"auto"``;
- ``whole``: whole-image inference (no tiles), the reference for the PSNR columns.

Each case runs once to warm up, then ``--repeats`` times; the fastest run counts. Speed is HR pixels per
CPU-second (``time.process_time``, all threads of the process), so one and two threads compare at equal
cost. ``psnr_vs_whole_db`` is the PSNR of a case's output against whole-image inference, peak = the range
of that output (random weights: no ground truth; higher is closer, ``inf`` identical). ``--train`` adds one
training step (forward + backward + Adam, batch 4 crops of 32 HR px) per CPU scan backend; ``--memory``
the peak RSS of a fresh one-thread process per backend for one fuse() (official tiling) and one step.
Writes JSON to ``benchmarks/results/``. Run nothing else meanwhile: the CPU machines are shared.

    python benchmarks/bench_cpu_anchor.py --train --memory         # 128 px, 1 and 2 threads (~5 min)
    python benchmarks/bench_cpu_anchor.py --quick                  # smoke run (tests)
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from _results import write_record  # benchmarks/ is on sys.path when run as a script

from pifnet_infer import PIFNet, __version__, load_sample
from pifnet_infer.config import get_preset
from pifnet_infer.fusion import fuse
from pifnet_infer.models import vmamba
from pifnet_infer.simulate import simulate_pair

RESULTS = Path(__file__).resolve().parent / "results"
OFFICIAL = {"tile_size": 64, "overlap": 0, "batch_size": 1, "dtype": "float32"}


def naive_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """The selective scan as a plain loop over positions on [batch, channels, length] tensors, float32."""
    u, delta, A, B, C = (t.float() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    delta_u = delta * u
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    y = torch.empty_like(u)
    for t in range(u.shape[-1]):
        h = torch.exp(delta[:, :, t, None] * A) * h + delta_u[:, :, t, None] * B[:, None, :, t]
        y[:, :, t] = (h * C[:, None, :, t]).sum(-1)
    if D is not None:
        y = y + D.float()[:, None] * u
    if z is not None:
        y = y * F.silu(z.float())
    return y


@contextmanager
def scan(backend: str) -> Iterator[None]:
    """Run the model with scan ``backend``: ``"naive"`` (patched in), a registered name, or ``"auto"``."""
    if backend == "naive":
        with mock.patch.object(vmamba, "selective_scan", naive_scan):
            yield
        return
    with mock.patch.dict(os.environ, {"PIFNET_SCAN_BACKEND": backend}):
        yield


def scene(size: int, bands: int, msi_bands: int, ratio: int) -> tuple[np.ndarray, np.ndarray]:
    """(lr_hsi, hr_msi) float32: a bundled sample's bands, mirrored up to size x size, simulated (Wald)."""
    cube = load_sample("aviris_gatorsense_vi").cube
    cube = cube[np.linspace(0, cube.shape[0] - 1, bands).round().astype(int)]
    pad = ((0, 0), (0, max(0, size - cube.shape[1])), (0, max(0, size - cube.shape[2])))
    reference = np.clip(np.pad(cube, pad, mode="symmetric")[:, :size, :size], 0, 1).astype(np.float32)
    srf = np.zeros((msi_bands, bands))
    for i, group in enumerate(np.array_split(np.arange(bands), msi_bands)):
        srf[i, group] = 1.0 / len(group)
    lr, msi = simulate_pair(reference, ratio, srf=srf, psf="official")
    return lr.astype(np.float32), msi.astype(np.float32)


def timed(run: Callable[[], Any], repeats: int) -> tuple[Any, dict[str, float]]:
    """Warm up, then the fastest of ``repeats`` runs: CPU and wall seconds."""
    run()
    best: dict[str, float] = {}
    out = None
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        out = run()
        stats = {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}
        if not best or stats["cpu_s"] < best["cpu_s"]:
            best = stats
    return out, best


def peak_memory_mib(backend: str, task: str, size: int) -> float:
    """Peak RSS (MiB) of a fresh process that runs ``task`` once with scan ``backend``, one thread.

    ``task``: ``"fuse"`` (official tiling on the ``size`` scene) or ``"train"`` (one training step).
    """
    code = (
        "import sys, torch\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "import bench_cpu_anchor as b\n"
        "torch.set_num_threads(1)\n"
        f"with b.scan({backend!r}):\n"
        f"    {f'b.fuse_once({size})' if task == 'fuse' else 'b.training_step(32, 4)()'}\n"
        "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])\n"
    )  # VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork + exec
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(result.stdout.split()[-1]) / 1024


def fuse_once(size: int) -> None:
    """One fuse() of the chikusei preset on the ``size`` scene under the official tiling (for peak_memory_mib)."""
    config = get_preset("chikusei")
    lr, msi = scene(size, config.hsi_bands, config.msi_bands, config.ratio)
    fuse(lr, msi, PIFNet(config).eval(), device="cpu", progress=False, **OFFICIAL)


def psnr_db(x: np.ndarray, reference: np.ndarray) -> float:
    """PSNR of ``x`` against ``reference``, peak = the reference's range."""
    mse = float(np.mean((x.astype(np.float64) - reference) ** 2))
    peak = float(reference.max() - reference.min())
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def inference(model: PIFNet, lr: np.ndarray, msi: np.ndarray, repeats: int) -> dict[str, dict[str, Any]]:
    """Cases (a), (t), (b), (c) and whole-image inference at the current thread count."""

    def whole() -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(lr)[None], torch.from_numpy(msi)[None])[0].numpy()

    cases: dict[str, tuple[str, Callable[[], np.ndarray]]] = {
        "whole": ("auto", whole),
        "naive": ("naive", lambda: fuse(lr, msi, model, device="cpu", progress=False, **OFFICIAL)),
        "torch": ("torch", lambda: fuse(lr, msi, model, device="cpu", progress=False, **OFFICIAL)),
        "loop": ("loop", lambda: fuse(lr, msi, model, device="cpu", progress=False, **OFFICIAL)),
        "defaults": ("auto", lambda: fuse(lr, msi, model, device="cpu", progress=False)),
    }
    pixels = msi.shape[-2] * msi.shape[-1]
    rows: dict[str, dict[str, Any]] = {}
    outputs: dict[str, np.ndarray] = {}
    for name, (backend, run) in cases.items():
        with scan(backend):
            outputs[name], stats = timed(run, repeats)
        rows[name] = {**stats, "hr_px_per_cpu_s": pixels / stats["cpu_s"]}
        print(
            f"  {name:9s} {stats['cpu_s']:7.2f} CPU-s  {rows[name]['hr_px_per_cpu_s']:8.0f} HR px/CPU-s",
            flush=True,
        )
    for name in rows:
        rows[name]["psnr_vs_whole_db"] = psnr_db(outputs[name], outputs["whole"])
        rows[name]["speed_vs_naive"] = rows[name]["hr_px_per_cpu_s"] / rows["naive"]["hr_px_per_cpu_s"]
    return rows


def training_step(crop: int, batch: int) -> Callable[[], None]:
    """One training step of the chikusei preset (forward, L1 loss, backward, Adam) on random crops."""
    config = get_preset("chikusei")
    torch.manual_seed(0)
    model = PIFNet(config).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    lr = torch.rand(batch, config.hsi_bands, crop // config.ratio, crop // config.ratio)
    msi, target = (
        torch.rand(batch, config.msi_bands, crop, crop),
        torch.rand(batch, config.hsi_bands, crop, crop),
    )

    def step() -> None:
        optimiser.zero_grad()
        F.l1_loss(model(lr, msi), target).backward()
        optimiser.step()

    return step


def training(crop: int, batch: int, repeats: int) -> dict[str, dict[str, float]]:
    """:func:`training_step` timed per CPU scan backend, at the current thread count."""
    rows = {}
    for backend in ("torch", "loop"):
        with scan(backend):
            _, rows[backend] = timed(training_step(crop, batch), repeats)
        print(f"  train {backend:5s} {rows[backend]['cpu_s']:7.2f} CPU-s per step", flush=True)
    return rows


def environment() -> dict[str, Any]:
    """CPU model (lscpu), versions, git commit, load."""
    root = Path(__file__).resolve().parents[1]

    def run(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, cwd=root, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    lscpu = dict(line.split(":", 1) for line in run("lscpu").splitlines() if ":" in line)
    return {
        "cpu": lscpu.get("Model name", "unknown").strip(),
        "logical_cpus": os.cpu_count(),
        "cores_per_socket": lscpu.get("Core(s) per socket", "?").strip(),
        "threads_per_core": lscpu.get("Thread(s) per core", "?").strip(),
        "load_average_1m_at_start": os.getloadavg()[0],
        "versions": {"torch": torch.__version__, "pifnet_infer": __version__},
        "git_commit": run("git", "rev-parse", "HEAD"),
        "git_dirty": bool(run("git", "status", "--porcelain")),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main() -> None:
    """Parse arguments, run every thread count, print a summary and write the JSON record."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=128, help="HR scene side in pixels (default 128)")
    parser.add_argument(
        "--threads", type=int, nargs="*", default=[1, 2], help="thread counts (default 1 2; none: no timings)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per case after a warm-up")
    parser.add_argument("--train", action="store_true", help="also time a training step per scan backend")
    parser.add_argument(
        "--memory", action="store_true", help="also peak RSS of fuse and of a training step per scan backend"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 64-px scene, one thread, no JSON")
    args = parser.parse_args()
    if args.quick:
        args.size, args.threads = 64, [1]
    config = get_preset("chikusei")
    lr, msi = scene(args.size, config.hsi_bands, config.msi_bands, config.ratio)
    torch.manual_seed(0)
    model = PIFNet(config).eval()
    record: dict[str, Any] = {
        "environment": environment(),
        "size": args.size,
        "official": OFFICIAL,
        "runs": {},
    }
    for threads in args.threads:
        torch.set_num_threads(threads)
        print(f"{threads} thread(s), {args.size}x{args.size} HR scene", flush=True)
        run = {"inference": inference(model, lr, msi, args.repeats)}
        if args.train:
            run["training"] = training(crop=32, batch=4, repeats=args.repeats)
        record["runs"][str(threads)] = run
        rows = run["inference"]
        print(
            f"  b/a = {rows['loop']['speed_vs_naive']:.2f}, c/a = {rows['defaults']['speed_vs_naive']:.2f}, "
            f"PSNR vs whole: a {rows['naive']['psnr_vs_whole_db']:.1f} dB, "
            f"c {rows['defaults']['psnr_vs_whole_db']:.1f} dB",
            flush=True,
        )
    if args.memory:
        record["peak_rss_mib"] = {}
        for task in ("fuse", "train"):
            for backend in ("torch", "loop", "naive"):
                if task == "train" and backend == "naive":
                    continue
                mib = peak_memory_mib(backend, task, args.size)
                record["peak_rss_mib"][f"{task}_{backend}"] = mib
                print(f"  peak RSS {task} {backend}: {mib:.0f} MiB (fresh process, one thread)", flush=True)
    if not args.quick:
        print(f"wrote {write_record(RESULTS, 'bench_cpu_anchor', record)}")


if __name__ == "__main__":
    main()

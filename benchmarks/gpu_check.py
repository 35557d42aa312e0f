"""Everything GPU-side in one call: parity tests, scan, model, fuse() and a training step (issue 20).

Run on the GPU machine with the command ``benchmarks/gpu_prepare.sh`` prints (one call, at most 8
minutes). Each section is timed against a baseline measured in the same run (ratios, not absolute
times), and ``OUT/gpu_check.json`` is rewritten after every section, so a run cut off by its time limit
still returns what it measured. Sections:

- ``environment``: device name, driver, torch/triton/mamba-ssm/torchvision versions, Python, commit;
- ``pytest_gpu``: the GPU parity tests (``pytest -m gpu``; the tests disable TF32 themselves);
- ``scan``: selective scan, every available backend against the torch backend, float32, 512 channels,
  d_state 16, L = side^2 for batch 1 and 8;
- ``model``: PIF-Net forward (the official width, 128 HSI bands) at 128^2 and 256^2 HR tiles: float32 with
  the torch backends (the baseline), float32 with the fast backends, bfloat16 autocast with the fast
  backends; HR Mpx/s, speed-up and PSNR change against the baseline;
- ``fuse``: on one simulated 1024^2 scene, the official protocol (64-px tiles, no overlap, batch 1,
  float32) against ``fuse()`` defaults and a few other tilings: HR Mpx/s, ratio, PSNR gap to whole-image
  float32 inference, peak GPU memory; then defaults on a 4096^2 scene (the 1024^2 inputs tiled 4 x 4) for peak GPU memory;
- ``profile``: torch.profiler's top kernels of one bfloat16 forward at the default tile (where time goes);
- ``train_step``: optimiser steps per second of the GPU training recipe (``training/gpu_recipe.sh``).

The model has random weights whose last layer is fitted by least squares to the reference
(``bench_fuse.fitted_output_layer``), so errors read in reflectance units; speed does not depend on
the weights. Float32 references run with TF32 off; speed runs keep torch's defaults (what users get).

``--dry-run`` runs the same code on the CPU at tiny sizes (in the test suite, so this script cannot
rot between GPU runs).

    python benchmarks/gpu_check.py --out "$OUT"          # on the GPU machine
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]  # bench_fuse helpers, the package and training/

from bench_fuse import fitted_output_layer, psnr, simulated_scene  # noqa: E402

from pifnet_infer import PIFNet, PIFNetConfig, __version__  # noqa: E402
from pifnet_infer._utils.optional import try_import  # noqa: E402
from pifnet_infer.errors import BackendUnavailableError  # noqa: E402
from pifnet_infer.fusion import fuse  # noqa: E402
from pifnet_infer.ops import available_backends, selective_scan  # noqa: E402

RATIO = 4
SCAN_CHANNELS, D_STATE = 4 * 128, 16  # K=4 directions x d_inner 128, as PIF-Net calls the scan


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of one run (the GPU sizes, or tiny ones for ``--dry-run``)."""

    scan_sides: tuple[int, ...]
    scan_batches: tuple[int, ...]
    bands: int
    dim: int
    model_tiles: tuple[int, ...]
    model_batch: int
    fuse_size: int
    fuse_big_factor: int
    official_tile: int
    train_crop: int
    train_batch: int
    train_dim: int
    train_steps: int
    pytest_timeout_s: int
    fuse_sweep: tuple[tuple[int, int], ...]  # extra (tile, overlap) settings timed beside the defaults
    profile_batch: int


GPU = Sizes((32, 64, 128, 256), (1, 8), 128, 64, (128, 256), 4, 1024, 4, 64, 40, 16, 64, 12, 150,
            ((256, 32), (256, 64), (512, 64)), 16)  # fmt: skip
DRY = Sizes((8, 16), (1, 2), 8, 8, (16, 32), 2, 64, 2, 16, 16, 2, 8, 2, 120, ((32, 8),), 2)


class Report:
    """The JSON record, rewritten atomically after every section."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {**header, "sections": {}}
        self.write()

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        os.replace(tmp, self.path)

    def section(self, name: str, run: Callable[[], dict[str, Any]], deadline: float) -> None:
        """Run one section, recording its result, its error or that the time budget ran out."""
        start = time.perf_counter()
        if time.monotonic() > deadline:
            result: dict[str, Any] = {"status": "skipped: time budget spent"}
        else:
            print(f"== {name}", flush=True)
            try:
                result = {"status": "ok", **run()}
            except Exception as err:  # recorded; the next section still runs
                traceback.print_exc()
                result = {
                    "status": f"error: {type(err).__name__}: {err}",
                    "traceback": traceback.format_exc(),
                }
        result["seconds"] = round(time.perf_counter() - start, 2)
        self.data["sections"][name] = result
        self.write()
        print(
            json.dumps({k: v for k, v in result.items() if k != "traceback"}, default=str)[:2000], flush=True
        )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[[], Any], device: torch.device, budget_s: float = 1.0) -> float:
    """Median wall time of ``fn`` after one warm-up call, repeated to fill about ``budget_s``."""
    fn()
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    first = time.perf_counter() - start
    times = [first]
    for _ in range(max(0, min(9, int(budget_s / max(first, 1e-6)) - 1))):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


@contextlib.contextmanager
def backends(scan: str | None, deform: str | None) -> Iterator[None]:
    """Force the scan and deformable-conv backends (``None``: automatic) through their variables."""
    saved = {k: os.environ.get(k) for k in ("PIFNET_SCAN_BACKEND", "PIFNET_DEFORM_BACKEND")}
    for key, value in zip(saved, (scan, deform), strict=True):
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """True float32 matmuls and convolutions (TF32 is not float32-exact)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def peak_memory_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def commit() -> str:
    """The commit under test: ``GPU_CHECK_COMMIT`` (the prepare step's record), else git's HEAD."""
    if os.environ.get("GPU_CHECK_COMMIT"):
        return os.environ["GPU_CHECK_COMMIT"]
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def environment(device: torch.device) -> dict[str, Any]:
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                "pifnet_infer": __version__}  # fmt: skip
    for module in ("triton", "mamba_ssm", "torchvision"):
        try:
            mod = try_import(module)
        except Exception as err:  # torchvision beside a mismatched torch raises at import
            versions[module] = f"does not import: {err}"
            continue
        versions[module] = getattr(mod, "__version__", "installed") if mod is not None else None
    info: dict[str, Any] = {"device_type": device.type, "versions": versions, "commit": commit(),
                            "backends_available": available_backends(), "cpu_count": os.cpu_count()}  # fmt: skip
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True,
        )  # fmt: skip
        info |= {"device": props.name, "multiprocessors": props.multi_processor_count,
                 "memory_gib": props.total_memory / 2**30, "nvidia_smi": smi.stdout.strip(),
                 "cuda": torch.version.cuda}  # fmt: skip
    else:
        info["device"] = platform.processor() or "cpu"
    return info


def pytest_gpu(sizes: Sizes, out_dir: Path) -> dict[str, Any]:
    """``pytest -m gpu`` in a subprocess (the project's addopts need plugins the GPU image lacks)."""
    command = [sys.executable, "-m", "pytest", "-o", "addopts=", "-m", "gpu", "-p", "no:cacheprovider", "-q",
               "-rs", "--tb=short", "tests/test_gpu_parity.py"]  # fmt: skip
    log = out_dir / "pytest_gpu.log"
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=sizes.pytest_timeout_s
        )
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as err:
        output = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        output, code = output + f"\nTIMEOUT after {sizes.pytest_timeout_s} s", None
    log.write_text(output)
    summary = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", line)]
    failed = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
    status = "ok" if code == 0 else f"failed: pytest exit code {code}"
    return {"status": status, "command": " ".join(command), "returncode": code, "summary": summary[-1:] or None,
            "failed": failed[:40], "log": log.name}  # fmt: skip


def scan_inputs(batch: int, length: int, device: torch.device) -> dict[str, Any]:
    """The scan as PIF-Net calls it: D skip, no gate, softplus already applied, float32."""
    g = torch.Generator(device=device).manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, device=device)

    return {
        "u": randn(batch, SCAN_CHANNELS, length),
        "delta": torch.nn.functional.softplus(randn(batch, SCAN_CHANNELS, length) - 2.0),
        "A": -torch.arange(1, D_STATE + 1, device=device, dtype=torch.float32).repeat(SCAN_CHANNELS, 1),
        "B": randn(batch, D_STATE, length),
        "C": randn(batch, D_STATE, length),
        "D": randn(SCAN_CHANNELS),
    }


def scan_section(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    rows, unavailable = [], {}
    for side in sizes.scan_sides:
        for batch in sizes.scan_batches:
            x = scan_inputs(batch, side * side, device)
            row: dict[str, Any] = {"side": side, "length": side * side, "batch": batch, "ms": {}}
            with torch.inference_mode():
                reference = selective_scan(**x, backend="torch")
                for backend in ("torch", "triton", "mamba"):
                    try:
                        out = selective_scan(**x, backend=backend)
                    except BackendUnavailableError as err:
                        unavailable[backend] = str(err)
                        continue
                    scale = reference.abs().max().clamp_min(1e-30)
                    row.setdefault("rel_err_vs_torch", {})[backend] = float(
                        (out - reference).abs().max() / scale
                    )
                    seconds = seconds_per_call(lambda b=backend, x=x: selective_scan(**x, backend=b), device)
                    row["ms"][backend] = 1e3 * seconds
            row["speedup_vs_torch"] = {k: row["ms"]["torch"] / v for k, v in row["ms"].items()}
            rows.append(row)
            del x, reference
            print(json.dumps(row), flush=True)
    return {"channels": SCAN_CHANNELS, "d_state": D_STATE, "dtype": "float32", "unavailable": unavailable,
            "rows": rows}  # fmt: skip


def model_config(sizes: Sizes) -> PIFNetConfig:
    """The official width (dim 64 on GPU) with 128 HSI bands and 3 MSI bands (bench_fuse's scene)."""
    return PIFNetConfig(hsi_bands=sizes.bands, msi_bands=3, ratio=RATIO, dim=sizes.dim)


MODEL_VARIANTS = {  # name: (scan backend, deform backend, autocast dtype); the first is the baseline
    "fp32 torch backends": ("torch", "torch", torch.float32),
    "fp32 fast backends": (None, None, torch.float32),
    "bf16 fast backends": (None, None, torch.bfloat16),
}


def fitted_model(sizes: Sizes, device: torch.device, lr: np.ndarray, msi: np.ndarray, reference: np.ndarray
                 ) -> tuple[PIFNet, np.ndarray, float]:  # fmt: skip
    """Random PIF-Net with its output layer fitted to ``reference``; its whole-image float32 output and time."""
    torch.manual_seed(0)
    model = PIFNet(model_config(sizes)).to(device).eval()
    with torch.inference_mode(), no_tf32():
        lr_t, msi_t = torch.from_numpy(lr)[None].to(device), torch.from_numpy(msi)[None].to(device)
        model(lr_t[..., :8, :8], msi_t[..., : 8 * RATIO, : 8 * RATIO])  # lazy inits, kernel compilation
        sync(device)
        start = time.perf_counter()
        whole = model(lr_t, msi_t)[0].float().cpu().numpy()
        seconds = time.perf_counter() - start
    return model, fitted_output_layer(model, whole, reference), seconds


def model_section(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    side = max(sizes.model_tiles)
    reference, lr, msi = simulated_scene(side, sizes.bands)
    model, _, _ = fitted_model(sizes, device, lr, msi, reference)
    rows = []
    for tile in sizes.model_tiles:
        n = side // tile
        crops = [(i * tile, j * tile) for i in range(n) for j in range(n)]
        crops = (crops * sizes.model_batch)[: sizes.model_batch]
        t = tile // RATIO
        lr_b = torch.stack([torch.from_numpy(lr[:, y // RATIO : y // RATIO + t, x // RATIO : x // RATIO + t])
                            for y, x in crops]).to(device)  # fmt: skip
        msi_b = torch.stack([torch.from_numpy(msi[:, y : y + tile, x : x + tile]) for y, x in crops]).to(
            device
        )
        ref_b = np.stack([reference[:, y : y + tile, x : x + tile] for y, x in crops])
        row: dict[str, Any] = {"tile": tile, "batch": sizes.model_batch, "variants": {}}
        baseline_out = None
        for name, (scan, deform, dtype) in MODEL_VARIANTS.items():

            def forward(scan: str | None = scan, deform: str | None = deform, dtype: torch.dtype = dtype,
                        inputs: tuple[torch.Tensor, torch.Tensor] = (lr_b, msi_b)) -> torch.Tensor:  # fmt: skip
                autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
                with backends(scan, deform), torch.inference_mode(), autocast:
                    return model(*inputs)

            try:
                with no_tf32() if baseline_out is None else contextlib.nullcontext():
                    out = forward().float().cpu().numpy()
                    seconds = seconds_per_call(forward, device)
            except BackendUnavailableError as err:
                row["variants"][name] = {"unavailable": str(err)[:200]}
                continue
            if baseline_out is None:
                baseline_out = out
            row["variants"][name] = {
                "ms": 1e3 * seconds,
                "hr_mpx_per_s": sizes.model_batch * tile * tile / 1e6 / seconds,
                "psnr_db": psnr(out, ref_b),
                "psnr_change_vs_baseline_db": psnr(out, ref_b) - psnr(baseline_out, ref_b),
                "max_abs_vs_baseline": float(np.abs(out - baseline_out).max()),
            }
        base = next(iter(row["variants"].values()))["ms"]
        for variant in row["variants"].values():
            if "ms" in variant:
                variant["speedup_vs_baseline"] = base / variant["ms"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"model": model_config(sizes).to_dict(), "baseline": next(iter(MODEL_VARIANTS)), "rows": rows}


def fuse_section(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    size = sizes.fuse_size
    start = time.perf_counter()
    reference, lr, msi = simulated_scene(size, sizes.bands)
    simulate_s = time.perf_counter() - start
    reset_peak(device)
    model, whole, whole_s = fitted_model(sizes, device, lr, msi, reference)
    whole_psnr = psnr(whole, reference)
    runs: dict[str, Any] = {
        "whole-image fp32": {"seconds": whole_s, "hr_mpx_per_s": size * size / 1e6 / whole_s,
                             "psnr_db": whole_psnr, "peak_gpu_mib": peak_memory_mib(device)},
    }  # fmt: skip
    settings: dict[str, dict[str, Any]] = {
        "official": {"tile_size": sizes.official_tile, "overlap": 0, "batch_size": 1, "dtype": "float32"},
        "defaults": {},
        **{f"tile {t} overlap {o}": {"tile_size": t, "overlap": o} for t, o in sizes.fuse_sweep},
    }
    for kwargs in settings.values():  # warm-up on a crop of two tiles: kernels compiled, algorithms chosen
        side = 2 * kwargs.get("tile_size", 128) // RATIO
        fuse(lr[:, :side, :side], msi[:, : side * RATIO, : side * RATIO], model, device=device, progress=False,
             **kwargs)  # fmt: skip
    for name, kwargs in settings.items():
        reset_peak(device)
        start = time.perf_counter()
        out = fuse(lr, msi, model, device=device, progress=False, **kwargs)
        seconds = time.perf_counter() - start
        runs[name] = {
            "arguments": kwargs or "all auto", "seconds": seconds, "hr_mpx_per_s": size * size / 1e6 / seconds,
            "psnr_db": psnr(out, reference), "psnr_gap_vs_whole_db": psnr(out, reference) - whole_psnr,
            "max_abs_vs_whole": float(np.abs(out - whole).max()), "peak_gpu_mib": peak_memory_mib(device),
        }  # fmt: skip
        print(name, json.dumps(runs[name]), flush=True)
        del out
    factor = sizes.fuse_big_factor
    big_lr, big_msi = np.tile(lr, (1, factor, factor)), np.tile(msi, (1, factor, factor))
    reset_peak(device)
    start = time.perf_counter()
    out = fuse(big_lr, big_msi, model, device=device, progress=False)
    seconds = time.perf_counter() - start
    big = size * factor
    runs[f"defaults {big}^2"] = {"seconds": seconds, "hr_mpx_per_s": big * big / 1e6 / seconds,
                                 "peak_gpu_mib": peak_memory_mib(device), "finite": bool(np.isfinite(out).all())}  # fmt: skip
    del out, big_lr, big_msi
    result: dict[str, Any] = {
        "scene": {"hr_size": size, "bands": sizes.bands, "msi_bands": 3, "ratio": RATIO,
                  "sample": "aviris_gatorsense_vi mirrored", "simulate_seconds": simulate_s},
        "model": model_config(sizes).to_dict(), "runs": runs,
        "speedup_defaults_over_official": runs["defaults"]["hr_mpx_per_s"] / runs["official"]["hr_mpx_per_s"],
    }  # fmt: skip
    if device.type == "cuda":
        result["peak_gpu_growth_big_over_small"] = (
            runs[f"defaults {big}^2"]["peak_gpu_mib"] / runs["defaults"]["peak_gpu_mib"]
        )
    return result


def profile_section(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    """Where one forward of the defaults' batch spends its time (torch.profiler, top kernels and ops)."""
    from torch.profiler import ProfilerActivity, profile

    tile = sizes.model_tiles[0]
    torch.manual_seed(0)
    model = PIFNet(model_config(sizes)).to(device).eval()
    lr = torch.rand(sizes.profile_batch, sizes.bands, tile // RATIO, tile // RATIO, device=device)
    msi = torch.rand(sizes.profile_batch, 3, tile, tile, device=device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def forward() -> None:
        with torch.inference_mode(), autocast:
            model(lr, msi)

    seconds = seconds_per_call(forward, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        forward()
        sync(device)
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    events = prof.key_averages()
    return {"tile": tile, "batch": sizes.profile_batch, "dtype": str(dtype), "ms_per_forward": 1e3 * seconds,
            "hr_mpx_per_s": sizes.profile_batch * tile * tile / 1e6 / seconds,
            "kernel_launches": sum(e.count for e in events if e.key.startswith("cuda") and "Launch" in e.key),
            "table": events.table(sort_by=sort, row_limit=30, max_name_column_width=60)}  # fmt: skip


def train_step_section(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    """Optimiser steps of the GPU training recipe's settings on random batches (speed only)."""
    from training.setups import get_setup
    from training.train import train_step

    setup = get_setup("pifnet-vnir-rgb-x4")
    reset_peak(device)
    torch.manual_seed(0)
    model = PIFNet(setup.config(sizes.train_dim)).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.01)
    c, k, crop, n = model.config.hsi_bands, model.config.msi_bands, sizes.train_crop, sizes.train_batch
    batch = [torch.rand(n, c, crop // setup.ratio, crop // setup.ratio, device=device),
             torch.rand(n, k, crop, crop, device=device), torch.rand(n, c, crop, crop, device=device)]  # fmt: skip
    train_step(model, optimizer, batch, 4e-4)  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(sizes.train_steps):
        train_step(model, optimizer, batch, 4e-4)
    sync(device)
    per_step = (time.perf_counter() - start) / sizes.train_steps
    return {"setup": setup.name, "dim": sizes.train_dim, "crop": crop, "batch": n, "steps": sizes.train_steps,
            "s_per_step": per_step, "steps_per_s": 1 / per_step, "hr_mpx_per_s": n * crop * crop / 1e6 / per_step,
            "peak_gpu_mib": peak_memory_mib(device)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    parser.add_argument(
        "--dry-run", action="store_true", help="tiny sizes on the CPU (the test suite runs this)"
    )
    parser.add_argument(
        "--budget-s", type=float, default=420.0, help="start no section after this many seconds"
    )
    parser.add_argument("--sections", nargs="*", default=None, help="run only these sections")
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: run on the GPU machine, or pass --dry-run")
    sizes = DRY if args.dry_run else GPU
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget_s
    report = Report(args.out / "gpu_check.json", {
        "script": "benchmarks/gpu_check.py", "argv": sys.argv[1:] if argv is None else argv,
        "dry_run": args.dry_run, "sizes": asdict(sizes), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })  # fmt: skip
    sections: dict[str, Callable[[], dict[str, Any]]] = {
        "environment": lambda: environment(device),
        "pytest_gpu": lambda: pytest_gpu(sizes, args.out),
        "scan": lambda: scan_section(sizes, device),
        "model": lambda: model_section(sizes, device),
        "fuse": lambda: fuse_section(sizes, device),
        "profile": lambda: profile_section(sizes, device),
        "train_step": lambda: train_step_section(sizes, device),
    }
    for name, run in sections.items():
        if args.sections is None or name in args.sections:
            report.section(name, run, deadline)
    failed = [k for k, v in report.data["sections"].items() if v["status"] != "ok"]
    print(f"written {report.path}; sections not ok: {failed or 'none'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark fuse(): the official test protocol vs our defaults, on one scene, in one run (issue 7 point 8).

(a) official: 64-px HR tiles (32 for ratio 8), stride = tile, no overlap, overwrite, batch 1, fp32;
(b) defaults: ``tile_size``/``overlap``/``batch_size``/``dtype`` all ``"auto"``.

Each run happens in a fresh process. For each: HR megapixels per second, peak RSS (and peak CUDA
memory on a GPU), the
max/mean |tiled - whole-image|, the PSNR against the reference and the seam excess (mean |gradient|
across tile edges over that elsewhere, relative to whole-image inference, minus 1). The model is a
random-init PIF-Net (no trained weights exist yet) whose output layer is fitted by least squares to
the reference so that errors read in reflectance units; speed does not depend on the weights.
``--sweep`` adds tilings (quality vs tile size). Writes JSON to ``benchmarks/results/``.
Time and memory on a shared machine vary: run nothing else meanwhile, and compare runs of one file.

    python benchmarks/bench_fuse.py                      # CPU or the first GPU
    python benchmarks/bench_fuse.py --seam-map benchmarks/results/seam_map.png
    python benchmarks/bench_fuse.py --dim 16 --bands 16 --sweep 32 64 96 128 192 128:16 128:64 128:0
    python benchmarks/bench_fuse.py --size 1024 --bands 128 --device cuda
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _memory import peak_rss  # benchmarks/ is on sys.path when run as a script
from _results import write_record  # benchmarks/ is on sys.path when run as a script
from safetensors.torch import load_file, save_file

from pifnet_infer import PIFNet, PIFNetConfig, load_sample
from pifnet_infer._utils.device import resolve_device
from pifnet_infer.fusion import fuse
from pifnet_infer.simulate import simulate_pair

RESULTS = Path(__file__).resolve().parent / "results"
RATIO = 4


def simulated_scene(size: int, bands: int, sample: str = "aviris_gatorsense_vi") -> tuple[np.ndarray, ...]:
    """(reference, lr_hsi, hr_msi) float32 in [0, 1]: a bundled sample's bands mirrored up to size x size."""
    cube = load_sample(sample).cube
    cube = cube[np.linspace(0, cube.shape[0] - 1, bands + 2).round().astype(int)[1:-1]]
    pad = ((0, 0), (0, max(0, size - cube.shape[1])), (0, max(0, size - cube.shape[2])))
    reference = np.clip(np.pad(cube, pad, mode="symmetric")[:, :size, :size], 0, 1).astype(np.float32)
    srf = np.zeros((3, bands))
    for i, group in enumerate(np.array_split(np.arange(bands), 3)):
        srf[i, group] = 1.0 / len(group)
    lr, msi = simulate_pair(reference, RATIO, srf=srf, psf="official")
    return reference, lr, msi


def measure(run: Callable[[], Any], device: torch.device) -> tuple[np.ndarray, dict[str, float]]:
    """Run once, timing it and recording peak host and device memory."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    with peak_rss() as rss:
        start = time.perf_counter()
        out = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    stats = {
        "seconds": seconds,
        "peak_rss_mib": rss["peak"] / 2**20,
        "peak_rss_increase_mib": (rss["peak"] - rss["baseline"]) / 2**20,
    }
    if device.type == "cuda":
        stats["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return np.asarray(out), stats


def psnr(x: np.ndarray, reference: np.ndarray) -> float:
    """PSNR (dB) over the cube after clamping to [0, 1]."""
    mse = float(np.mean((np.clip(x, 0, 1).astype(np.float64) - reference) ** 2))
    return 10 * float(np.log10(1.0 / mse))


def save_seam_map(errors: dict[str, np.ndarray], path: Path) -> None:
    """Side-by-side maps of the band-mean |tiled - whole-image| per HR pixel, one shared log colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    maps = {name: err.mean(axis=0) for name, err in errors.items()}
    high = max(float(m.max()) for m in maps.values())
    norm = LogNorm(vmin=max(high * 1e-4, 1e-7), vmax=high)
    fig, axes = plt.subplots(1, len(maps), figsize=(5.2 * len(maps), 4.8), constrained_layout=True)
    for ax, (name, m) in zip(np.atleast_1d(axes), maps.items(), strict=True):
        image = ax.imshow(np.maximum(m, norm.vmin), norm=norm, cmap="magma")
        ax.set_title(f"{name}\nmean {m.mean():.2e}, max {m.max():.2e}", fontsize=10)
        ax.set_axis_off()
    fig.colorbar(image, ax=axes, shrink=0.8, label="|tiled - whole-image|, mean over bands")
    fig.suptitle("PIF-Net (random init) tiled vs whole-image inference", fontsize=11)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def environment(device: torch.device) -> dict[str, Any]:
    """Device name, versions, git commit."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            platform.processor(),
        )
    return {
        "device": str(device),
        "device_name": name,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "git_commit": commit,
        "git_dirty": dirty,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def fitted_output_layer(model: PIFNet, whole: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Fold the per-band least-squares affine map (whole-image output -> reference) into the last conv.

    A random-init model's output is then on the data's scale, so errors read in reflectance units. The
    last layer is linear, so the fitted model's whole-image output is the same map applied to ``whole``,
    which is returned.
    """
    out = whole.reshape(whole.shape[0], -1).astype(np.float64)
    ref = reference.reshape(reference.shape[0], -1).astype(np.float64)
    gain = ((out - out.mean(1, keepdims=True)) * (ref - ref.mean(1, keepdims=True))).mean(1) / out.var(1)
    bias = ref.mean(1) - gain * out.mean(1)
    last = model.tail.net[-1]
    with torch.no_grad():
        gain_t, bias_t = (torch.from_numpy(v).to(last.weight) for v in (gain, bias))
        last.weight.mul_(gain_t[:, None, None, None])
        last.bias.mul_(gain_t).add_(bias_t)
    return (gain[:, None, None] * whole + bias[:, None, None]).astype(np.float32)


def seam_excess(tiled: np.ndarray, whole: np.ndarray, tile: int, overlap: int) -> float:
    """Mean |gradient| across tile edges over that elsewhere, relative to whole-image inference, minus 1."""

    def ratio(x: np.ndarray) -> float:
        values = []
        for axis in (1, 2):
            size = x.shape[axis]
            origins = list(range(0, size - tile + 1, tile - overlap)) or [0]
            if origins[-1] + tile < size:
                origins.append(size - tile)
            edges = sorted({o for o in origins if o > 0} | {o + tile for o in origins if o + tile < size})
            if not edges:
                continue
            grad = np.abs(np.diff(x.astype(np.float64), axis=axis)).mean(axis=(0, 3 - axis))
            lines = np.array(edges) - 1
            values.append(grad[lines].mean() / np.delete(grad, lines).mean())
        return float(np.mean(values)) if values else 1.0

    return ratio(tiled) / ratio(whole) - 1.0


def parse_tiling(spec: str) -> dict[str, Any]:
    """ "TILE" (auto overlap) or "TILE:OVERLAP" -> fuse keyword arguments."""
    tile, _, overlap = spec.partition(":")
    return {"tile_size": int(tile), "overlap": int(overlap) if overlap else "auto"}


def worker(args: argparse.Namespace) -> None:
    """One measured run in a fresh process (so peak RSS belongs to that run alone); stats JSON on stdout."""
    device = resolve_device(args.device)
    config = PIFNetConfig(hsi_bands=args.bands, msi_bands=3, ratio=RATIO, dim=args.dim)
    model = PIFNet(config).eval()
    model.load_state_dict(load_file(args.model_file), strict=True)
    model.to(device)
    _, lr, msi = simulated_scene(args.size, args.bands)
    kwargs = json.loads(args.worker)
    fuse(lr[:, :16, :16], msi[:, :64, :64], model, device=device, progress=False)  # warm-up (lazy inits)
    settings: list[tuple[Any, ...]] = []  # (lr shape, tile, overlap, batch, device, dtype) logged by fuse
    capture = logging.Handler()
    capture.emit = lambda record: settings.append(tuple(record.args or ()))  # type: ignore[method-assign]
    logging.getLogger("pifnet_infer.fusion").addHandler(capture)
    logging.getLogger("pifnet_infer.fusion").setLevel(logging.INFO)

    def run() -> np.ndarray:
        if kwargs is None:  # whole-image inference
            with torch.inference_mode():
                x = model(torch.from_numpy(lr)[None].to(device), torch.from_numpy(msi)[None].to(device))
            return x[0].float().cpu().numpy()
        return fuse(lr, msi, model, device=device, progress=False, **kwargs)

    out, stats = measure(run, device)
    np.save(args.out_file, out)
    if kwargs is not None:
        _, tile, overlap, batch, _, dtype = settings[-1]
        stats["resolved"] = {"tile_size": tile, "overlap": overlap, "batch_size": batch, "dtype": str(dtype)}
    print(json.dumps(stats))


def spawn(
    args: argparse.Namespace, kwargs: dict[str, Any] | None, model_file: Path, out_file: Path
) -> dict[str, Any]:
    """Run :func:`worker` in a subprocess with the same scene and device."""
    command = [
        sys.executable, __file__, "--worker", json.dumps(kwargs), "--model-file", str(model_file),
        "--out-file", str(out_file), "--size", str(args.size), "--bands", str(args.bands), "--dim", str(args.dim),
        "--device", args.device,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"worker {kwargs} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256, help="HR scene side (pixels)")
    parser.add_argument("--bands", type=int, default=32, help="HSI bands")
    parser.add_argument("--dim", type=int, default=64, help="model width (64 = the official models)")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--sweep", nargs="*", default=[], metavar="TILE[:OVERLAP]", help="extra tilings to measure"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--seam-map", type=Path, default=None, help="save a PNG of |tiled - whole| per pixel")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model-file", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out-file", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args)
        return

    device = resolve_device(args.device)
    torch.manual_seed(0)
    config = PIFNetConfig(hsi_bands=args.bands, msi_bands=3, ratio=RATIO, dim=args.dim)
    model = PIFNet(config).eval()
    reference, _, _ = simulated_scene(args.size, args.bands)
    megapixels = args.size**2 / 1e6
    official_tile = 32 if RATIO == 8 else 64
    official = f"official ({official_tile} px tiles, no overlap, batch 1, fp32)"
    defaults = "defaults (all auto)"
    runs: dict[str, dict[str, Any]] = {
        official: {"tile_size": official_tile, "overlap": 0, "batch_size": 1, "dtype": "float32"},
        defaults: {},
        **{f"tile {spec}": parse_tiling(spec) for spec in args.sweep},
    }
    report: dict[str, Any] = {
        "scene": {"hr_size": args.size, "bands": args.bands, "msi_bands": 3, "ratio": RATIO,
                  "sample": "aviris_gatorsense_vi"},
        "model": {**config.to_dict(), "weights": "random init, output layer fitted to the reference"},
        "environment": environment(device),
        "note": "each run in a fresh process; peak RSS = that process's peak (scene + model + run)",
        "runs": {},
    }  # fmt: skip
    errors: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_file, out_file = Path(tmp) / "model.safetensors", Path(tmp) / "out.npy"
        save_file(model.state_dict(), model_file)
        stats = spawn(args, None, model_file, out_file)
        whole = fitted_output_layer(model, np.load(out_file), reference)
        save_file(model.state_dict(), model_file)
        base_psnr = psnr(whole, reference)
        report["runs"]["whole-image fp32"] = {
            **stats,
            "mpx_per_s": megapixels / stats["seconds"],
            "psnr_db": base_psnr,
        }
        for name, kwargs in runs.items():
            stats = spawn(args, kwargs, model_file, out_file)
            out = np.load(out_file)
            err = errors[name] = np.abs(out - whole)
            tile, overlap = stats["resolved"]["tile_size"], stats["resolved"]["overlap"]
            report["runs"][name] = {
                "arguments": kwargs or "all auto", **stats, "mpx_per_s": megapixels / stats["seconds"],
                "psnr_db": psnr(out, reference), "psnr_gap_vs_whole_db": psnr(out, reference) - base_psnr,
                "max_abs_vs_whole": float(err.max()), "mean_abs_vs_whole": float(err.mean()),
                "seam_excess": seam_excess(out, whole, tile, overlap),
            }  # fmt: skip
            print(name, json.dumps(report["runs"][name]), flush=True)
    report["speedup_defaults_over_official"] = (
        report["runs"][defaults]["mpx_per_s"] / report["runs"][official]["mpx_per_s"]
    )
    if args.seam_map is not None:
        save_seam_map({k: errors[k] for k in (defaults, official)}, args.seam_map)
        report["seam_map"] = str(args.seam_map)
    args.out.mkdir(parents=True, exist_ok=True)
    path = write_record(args.out, f"bench_fuse_{device.type}", report, indent=2)
    print(json.dumps(report, indent=2))
    print(f"written {path}")


if __name__ == "__main__":
    main()

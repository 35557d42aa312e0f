"""Benchmark the GeoTIFF path against in-memory fuse() on the same scene, in one run (issue 8 point 7).

The scene (a bundled sample's bands mirrored up to ``--size`` HR pixels) is written as an LR-HSI and an
HR-MSI GeoTIFF (tiled, deflate). Then, alternately and ``--repeats`` times each:

(a) ``fuse(lr, msi, model)`` on the arrays already in memory;
(b) ``fuse_geotiff(hsi.tif, msi.tif, out.tif, model)``: windowed reads, nodata scan, blending into row
    strips, deflate-compressed tiled output, atomic rename;

with the same model, tile size, overlap and batch size. Reported: best wall time of each, the I/O
overhead ratio (b)/(a), HR megapixels per second, peak RSS above the process's baseline (sampled), and
the largest |(b) - (a)|. Models: random-init PIF-Nets of the given widths (speed does not depend on the
weights) and, with ``--cheap``, a stand-in with PIF-Net's interface that costs almost nothing (nearest
upsampling plus the MSI mean), whose ratio bounds the overhead from above. JSON goes to
``benchmarks/results/``.

    python benchmarks/bench_geotiff.py                          # 512 px, 16 bands, dim 64 and dim 8
    python benchmarks/bench_geotiff.py --size 2048 --dims --cheap --repeats 3
    python benchmarks/bench_geotiff.py --size 1024 --dims 64 --device cuda
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from _memory import peak_rss  # benchmarks/ is on sys.path when run as a script
from _results import write_record  # benchmarks/ is on sys.path when run as a script
from affine import Affine

from pifnet_infer import PIFNet, PIFNetConfig, fuse, fuse_geotiff, load_sample
from pifnet_infer._utils.device import resolve_device

RESULTS = Path(__file__).resolve().parent / "results"
RATIO = 4


def scene(size: int, bands: int) -> tuple[np.ndarray, np.ndarray]:
    """(lr [bands, size/4, size/4], msi [3, size, size]) float32: block means and band-group means of a sample."""
    cube = load_sample("aviris_gatorsense_vi").cube
    cube = cube[np.linspace(0, cube.shape[0] - 1, bands + 2).round().astype(int)[1:-1]]
    pad = ((0, 0), (0, max(0, size - cube.shape[1])), (0, max(0, size - cube.shape[2])))
    hr = np.clip(np.pad(cube, pad, mode="symmetric")[:, :size, :size], 0, 1)
    lr = hr.reshape(bands, size // RATIO, RATIO, size // RATIO, RATIO).mean(axis=(2, 4))
    msi = np.stack([g.mean(axis=0) for g in np.array_split(hr, 3, axis=0)])
    return lr.astype(np.float32), msi.astype(np.float32)


def write_geotiff(path: Path, data: np.ndarray, transform: Affine) -> Path:
    profile = {
        "driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
        "dtype": "float32", "crs": "EPSG:32616", "transform": transform, "tiled": True, "compress": "deflate",
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


class Cheap(torch.nn.Module):
    """PIF-Net's interface at almost no cost: nearest upsampling of the LR-HSI plus the MSI mean."""

    def __init__(self, config: PIFNetConfig) -> None:
        super().__init__()
        self.config = config
        self.gain = torch.nn.Parameter(torch.ones(()))

    def forward(self, lr: torch.Tensor, msi: torch.Tensor) -> torch.Tensor:
        r = self.config.ratio
        return self.gain * lr.repeat_interleave(r, 2).repeat_interleave(r, 3) + msi.mean(1, keepdim=True)


def bench_model(
    args: argparse.Namespace, dim: int | None, folder: Path, lr: np.ndarray, msi: np.ndarray
) -> dict[str, Any]:
    """Time (a) and (b) for a PIF-Net of width ``dim``, or for :class:`Cheap` when ``dim`` is None."""
    device = resolve_device(args.device)
    torch.manual_seed(0)
    config = PIFNetConfig(hsi_bands=lr.shape[0], msi_bands=3, ratio=RATIO, dim=dim or 64)
    model = (Cheap(config) if dim is None else PIFNet(config)).eval().to(device)
    knobs = {
        "tile_size": args.tile_size,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
        "progress": False,
    }
    hsi, msi_path = folder / "hsi.tif", folder / "msi.tif"
    fuse(lr[:, :8, :8], msi[:, :32, :32], model, tile_size=32, overlap=0, progress=False)  # warm-up
    times: dict[str, list[float]] = {"memory": [], "geotiff": []}
    rss: dict[str, int] = {"memory": 0, "geotiff": 0}
    in_memory = None
    for _ in range(args.repeats):
        with peak_rss() as mem:
            start = time.perf_counter()
            in_memory = fuse(lr, msi, model, **knobs)
            times["memory"].append(time.perf_counter() - start)
        rss["memory"] = max(rss["memory"], mem["peak"] - mem["baseline"])
        with peak_rss() as mem:
            start = time.perf_counter()
            out = fuse_geotiff(hsi, msi_path, folder / "out.tif", model, overwrite=True, **knobs)
            times["geotiff"].append(time.perf_counter() - start)
        rss["geotiff"] = max(rss["geotiff"], mem["peak"] - mem["baseline"])
    with rasterio.open(out) as src:
        diff = float(np.abs(src.read() - np.asarray(in_memory)).max())
        out_mb = os.path.getsize(out) / 1e6
    megapixels = msi.shape[1] * msi.shape[2] / 1e6
    best = {k: min(v) for k, v in times.items()}
    return {
        "model": "cheap stand-in" if dim is None else f"PIFNet dim={dim}", "seconds": times,
        "best_seconds": best, "io_overhead_ratio": best["geotiff"] / best["memory"],
        "hr_megapixels_per_s": {k: megapixels / v for k, v in best.items()},
        "peak_rss_above_baseline_mb": {k: v / 1e6 for k, v in rss.items()},
        "max_abs_diff": diff, "output_file_mb": out_mb,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="HR side in pixels (multiple of 4)")
    parser.add_argument("--bands", type=int, default=16, help="HSI bands")
    parser.add_argument("--dims", type=int, nargs="*", default=[64, 8], help="PIF-Net widths (64 = official)")
    parser.add_argument("--cheap", action="store_true", help="also run the near-free stand-in model")
    parser.add_argument("--tile-size", type=int, default=128)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    lr, msi = scene(args.size, args.bands)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        hsi_t = Affine(30.0, 0, 500_000.0, 0, -30.0, 3_300_000.0)
        write_geotiff(folder / "hsi.tif", lr, hsi_t)
        write_geotiff(folder / "msi.tif", msi, hsi_t @ Affine.scale(1 / RATIO))
        for dim in [*args.dims, *([None] if args.cheap else [])]:
            runs.append(bench_model(args, dim, folder, lr, msi))
            r = runs[-1]
            print(
                f"{r['model']}: in-memory {r['best_seconds']['memory']:.2f} s, GeoTIFF {r['best_seconds']['geotiff']:.2f} s, "
                f"overhead x{r['io_overhead_ratio']:.2f}, RSS +{r['peak_rss_above_baseline_mb']['memory']:.0f} / "
                f"+{r['peak_rss_above_baseline_mb']['geotiff']:.0f} MB, max |diff| {r['max_abs_diff']:.2e}"
            )
    device = resolve_device(args.device)
    record = {
        "benchmark": "bench_geotiff", "args": vars(args), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__, "load_average": os.getloadavg(), "runs": runs,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    path = write_record(RESULTS, f"bench_geotiff_{device.type}_{args.size}px", record)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

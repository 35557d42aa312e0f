"""Benchmark scene-adaptive fusion (issue 12 point 5): PSNR/SAM against time under the Wald protocol.

For each scene (bundled samples; ``../shared/data`` scenes when present, for measurement only) and
each condition, a pair is simulated with the ``sentinel2a-10m`` MSI (``--srf``; no shipped weight
fits these band grids) and fused by:

- ``bicubic``, ``gsa``, ``glp`` (classical baselines, told the nominal PSF);
- ``glp+refine``: :func:`pifnet_infer.adapt.refine` of the GLP result (PSF and SRF fitted from the pair);
- ``adapt``: :func:`pifnet_infer.adapt.adapt` from scratch under a time budget (PSF and SRF fitted),
  a network correction of its classical prior; ``adapt:prior-only``: that prior alone (GLP-HS with the
  fitted PSF, refined);
- ``adapt-no-prior``: the network alone (``prior=False``), and ``adapt-no-prior+refine`` its output refined;
- ``adapt-pretrained``: from ``--pretrained`` or else the closest manifest weight, when there is one.

Conditions: ``clean`` (official PSF, noise-free), ``snr30`` (official PSF, 30 dB on both images),
``psf-mismatch`` (simulated with the MTF-matched PSF, the baselines told ``official``).
Writes JSON to ``benchmarks/results/``; prints a Markdown table.

    python benchmarks/bench_adapt.py                          # CPU, 60 s adaptation budget
    python benchmarks/bench_adapt.py --budget 20 --scenes muufl_gulfport_sub
    python benchmarks/bench_adapt.py --device cuda --budget 300 --threads 0
    python benchmarks/bench_adapt.py --srf rgb_gaussian --pretrained pifnet-vnir-rgb-x4
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _results import write_record  # benchmarks/ is on sys.path when run as a script

from pifnet_infer import metrics
from pifnet_infer.adapt import adapt, refine
from pifnet_infer.adapt.network import DEFAULT_LR
from pifnet_infer.baselines import bicubic, glp_hs, gsa
from pifnet_infer.data import list_samples, load_sample
from pifnet_infer.simulate import crop_to_ratio, simulate_pair
from pifnet_infer.weights import list_weights

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RATIO = 4
DEFAULT_SRF = "sentinel2a-10m"
CONDITIONS = {  # name: (simulated PSF, PSF the baselines are told, SNR dB)
    "clean": ("official", "official", None),
    "snr30": ("official", "official", 30.0),
    "psf-mismatch": ("mtf", "official", None),
}


def load_scene(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(cube (C, H, W) float32, wavelengths nm, fwhm nm or None) of a bundled or shared scene."""
    if name in list_samples():
        sample = load_sample(name)
        return sample.cube, np.asarray(sample.wavelengths_nm), sample.fwhm_nm
    folder = SHARED / name
    meta = json.loads((folder / "meta.json").read_text())
    cube = np.load(folder / "cube.npy").astype(np.float32).transpose(2, 0, 1)
    fwhm = None if meta.get("fwhm_nm") is None else np.asarray(meta["fwhm_nm"])
    return np.ascontiguousarray(cube), np.asarray(meta["wavelengths_nm"]), fwhm


def timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run_scene(name: str, condition: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    cube, wavelengths, fwhm = load_scene(name)
    psf_true, psf_told, snr = CONDITIONS[condition]
    lr, msi = simulate_pair(
        cube, RATIO, srf=args.srf, wavelengths_nm=wavelengths, fwhm_nm=fwhm, psf=psf_true, snr_db=snr, seed=0
    )
    reference = crop_to_ratio(cube, RATIO)
    results: dict[str, tuple[np.ndarray, float]] = {}
    extra: dict[str, dict[str, Any]] = {}
    results["bicubic"] = timed(lambda: bicubic(lr, RATIO))
    results["gsa"] = timed(lambda: gsa(lr, msi, RATIO, psf=psf_told))
    results["glp"] = timed(lambda: glp_hs(lr, msi, RATIO, psf=psf_told))
    glp_out, glp_time = results["glp"]
    refined, refine_time = timed(lambda: refine(glp_out, lr, msi, ratio=RATIO, device=args.device))
    results["glp+refine"] = (refined, glp_time + refine_time)
    pretrained = args.pretrained or ("auto" if list_weights() else None)
    variants: list[tuple[str, str | None, bool | str]] = [
        ("adapt", None, "auto"),
        ("adapt-no-prior", None, False),
    ]
    if pretrained and not args.no_pretrained:
        variants.append(("adapt-pretrained", pretrained, "auto"))
    for label, base, prior in variants:
        start = time.perf_counter()
        model = adapt(
            lr,
            msi,
            ratio=RATIO,
            base=base,
            prior=prior,
            lr=args.lr,
            time_budget_s=args.budget,
            device=args.device,
            progress=False,
            seed=0,
        )
        dev = next(model.parameters()).device
        with torch.no_grad():
            fused = (
                model(torch.from_numpy(lr)[None].to(dev), torch.from_numpy(msi)[None].to(dev))[0]
                .cpu()
                .numpy()
            )
        adapt_time = time.perf_counter() - start
        results[label] = (fused, adapt_time)
        history = model.history
        extra[label] = {"steps": history.steps, "best_step": history.best_step, "stop": history.stop_reason}
        if model.prior is not None:  # the prior alone: what the network's correction is measured against
            results[f"{label}:prior-only"] = timed(lambda m=model: m.prior.fuse(lr, msi, RATIO))
        else:
            refined, refine_time = timed(lambda f=fused: refine(f, lr, msi, ratio=RATIO, device=args.device))
            results[f"{label}+refine"] = (refined, adapt_time + refine_time)
            extra[f"{label}+refine"] = extra[label]
    return [
        {
            "scene": name,
            "hr_shape": list(reference.shape[1:]),
            "bands": int(reference.shape[0]),
            "condition": condition,
            "method": method,
            "psnr": metrics.psnr(reference, out),
            "sam": metrics.sam(reference, out),
            "seconds": seconds,
            **extra.get(method, {}),
        }
        for method, (out, seconds) in results.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenes",
        nargs="+",
        default=["muufl_gulfport_sub", "aviris_gatorsense_vi", "jasper_ridge", "enmap_potsdam"],
    )
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    parser.add_argument("--budget", type=float, default=60.0, help="adaptation time budget, seconds")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lr", type=float, default=DEFAULT_LR, help="adaptation learning rate")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (0: leave torch's default)"
    )
    parser.add_argument("--srf", default=DEFAULT_SRF, help="MSI spectral response of the simulation")
    parser.add_argument("--pretrained", help="base weight (name or .safetensors) for adapt-pretrained")
    parser.add_argument("--no-pretrained", action="store_true", help="skip adapt-from-pretrained")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    scenes = [s for s in args.scenes if s in list_samples() or (SHARED / s / "cube.npy").is_file()]
    rows = []
    for scene in scenes:
        for condition in args.conditions:
            rows.extend(run_scene(scene, condition, args))
            print(f"done {scene} {condition}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    record = {
        "benchmark": "bench_adapt",
        "device": device,
        "threads": torch.get_num_threads(),
        "budget_s": args.budget,
        "lr": args.lr,
        "srf": args.srf,
        "pretrained": args.pretrained,
        "ratio": RATIO,
        "weights": list_weights(),
        "rows": rows,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    path = write_record(RESULTS, f"bench_adapt_{args.device.split(':')[0]}", record)
    print("\n| scene (HR) | condition | method | PSNR dB | SAM deg | time s |\n|---|---|---|---|---|---|")
    for row in rows:
        steps = f" ({row['steps']} steps, {row['stop']})" if "steps" in row else ""
        print(
            f"| {row['scene']} {row['hr_shape'][0]}x{row['hr_shape'][1]}x{row['bands']} | {row['condition']} | "
            f"{row['method']}{steps} | {row['psnr']:.2f} | {row['sam']:.2f} | {row['seconds']:.1f} |"
        )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

"""Benchmark classical fusion quality (issue 17): every fusion, and the default path, on simulated pairs.

Scenes: the permissively licensed cubes of ``../shared/data`` with band centres (``aviris_gatorsense_vi``
MIT, ``muufl_gulfport_sub`` MIT, ``jasper_ridge`` CC0, ``samson`` CC0 with approximate wavelengths);
restricted ones (``enmap_potsdam``, ``pavia_centre_crop``) are left out. Nothing here is trained: the
constants of the fusions are fixed beforehand, so every scene is a held-out scene (the
leave-one-scene-out protocol reduces to scoring each scene); note that the defaults of
:mod:`pifnet_infer.priors` (window, shrinkage, subspace mu) were chosen while looking at these scenes.

Setups (HSI band range, MSI response, ratio): ``vnir-rgb-x4`` (400-1000 nm, ``rgb_gaussian``, 4),
``vnirswir-rgb-x4``, ``vnirswir-s2-x3`` (``sentinel2a-10m``: B2, B3, B4, B8), ``vnirswir-pan-x3``
(``pan_450_900``), ``vnirswir-l8-x3`` (``landsat8_oli-ms``: B1-B7, with SWIR), VNIR-SWIR = 400-2500 nm.
Pairs follow Wald's protocol with the MTF-matched Gaussian PSF (gain 0.3 at Nyquist).
Conditions: ``clean``; ``snr30`` (30 dB on both images); ``psf+30``/``psf-30`` (true PSF 30 % wider or
narrower than the nominal one the classical methods are told); ``grid`` (HSI bands 430-2400 nm
without 1270-1450 nm; 430-1000 for VNIR) and ``grid-water`` (430-2400 nm, water bands kept): the
MSI is simulated from the full spectrum, the HSI and the reference keep the cropped bands.

Methods: ``bicubic``; ``glp_hs`` (today's, one gain per band), ``glp_hs_local``, ``gsa`` and
``subspace``, told the nominal PSF and the SRF computed on the HSI grid; ``classical_prior``: the
adaptation's prior (GLP-HS + refine) with the PSF and SRF fitted from the pair; ``default``:
:func:`pifnet_infer.priors.select.fit_scene` + :func:`~pifnet_infer.priors.select.fuse_classical`
(PSF and SRF fitted, reduced-pair stacking). Per case: PSNR, SAM, ERGAS, SSIM, PSNR over the bands
the MSI does not see (``psnr_blind``), seconds; the gate compares ``default`` with the best other
method of the case (PSNR >= best - 0.1 dB, SAM <= 1.05 x that method's SAM; mean >= best + 1 dB).

    python benchmarks/bench_quality.py --jobs 2          # all cases
    python benchmarks/bench_quality.py --quick           # the cases tests/test_bench_quality.py gates
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _results import write_record  # benchmarks/ is on sys.path when run as a script

from pifnet_infer import metrics
from pifnet_infer.adapt import ClassicalPrior
from pifnet_infer.priors.classical import bicubic, glp_hs, gsa
from pifnet_infer.priors.estimate import estimate_psf_sigma
from pifnet_infer.priors.glp_local import glp_hs_local
from pifnet_infer.priors.operators import gaussian_psf_at
from pifnet_infer.priors.select import blind_bands, fit_scene, fuse_classical
from pifnet_infer.priors.subspace import DEFAULT_RANK, subspace_fusion
from pifnet_infer.simulate import PSFArg, crop_to_ratio, mtf_sigma, simulate_pair
from pifnet_infer.srf import srf_matrix

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SCENES = {
    "aviris_gatorsense_vi": "MIT",
    "jasper_ridge": "CC0-1.0",
    "muufl_gulfport_sub": "MIT",
    "samson": "CC0-1.0 (approximate wavelengths)",
}
#: setup -> (HSI band range nm, MSI response, ratio)
SETUPS: dict[str, tuple[tuple[float, float], str, int]] = {
    "vnir-rgb-x4": ((400.0, 1000.0), "rgb_gaussian", 4),
    "vnirswir-rgb-x4": ((400.0, 2500.0), "rgb_gaussian", 4),
    "vnirswir-s2-x3": ((400.0, 2500.0), "sentinel2a-10m", 3),
    "vnirswir-pan-x3": ((400.0, 2500.0), "pan_450_900", 3),
    "vnirswir-l8-x3": ((400.0, 2500.0), "landsat8_oli-ms", 3),
}
WATER = (1270.0, 1450.0)
GRID = (430.0, 2400.0)
GATE_PSNR_DB, GATE_SAM_RATIO, GATE_MEAN_DB = 0.1, 1.05, 1.0


@dataclass(frozen=True)
class Condition:
    """How a case departs from the clean simulation."""

    snr_db: float | None = None
    psf_scale: float = 1.0
    grid: bool = False
    keep_water: bool = False


CONDITIONS = {
    "clean": Condition(),
    "snr30": Condition(snr_db=30.0),
    "psf+30": Condition(psf_scale=1.3),
    "psf-30": Condition(psf_scale=0.7),
    "grid": Condition(grid=True),
    "grid-water": Condition(grid=True, keep_water=True),
}
QUICK = [("muufl_gulfport_sub", "vnir-rgb-x4", "clean"), ("muufl_gulfport_sub", "vnir-rgb-x4", "snr30")]


def load_scene(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(cube (C, H, W) float32, band centres nm) of a shared scene."""
    folder = SHARED / name
    meta = json.loads((folder / "meta.json").read_text())
    cube = np.load(folder / "cube.npy").astype(np.float32).transpose(2, 0, 1)
    return np.ascontiguousarray(cube), np.asarray(meta["wavelengths_nm"], dtype=np.float64)


def all_cases() -> list[tuple[str, str, str]]:
    """Every (scene, setup, condition) whose scene spans the setup's bands (VNIR setups: no water variant), by setup."""
    spans = {
        scene: float(load_scene(scene)[1].max())
        for scene in SCENES
        if (SHARED / scene / "cube.npy").is_file()
    }
    return [
        (scene, setup, condition)
        for setup, ((_, high), _, _) in SETUPS.items()
        for condition in CONDITIONS
        if not (condition == "grid-water" and high <= 1000)
        for scene, top in spans.items()
        if high <= 1000 or top >= 2000
    ]


def _timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _classical_prior(lr: np.ndarray, msi: np.ndarray, ratio: int) -> np.ndarray:
    fitted = estimate_psf_sigma(lr, msi, ratio)
    return ClassicalPrior(fitted.psf, fitted.srf_matrix).fuse(lr, msi, ratio)


def run_case(case: tuple[str, str, str]) -> list[dict[str, Any]]:
    """Simulate one case and score every method; one row per method."""
    scene, setup, condition = case
    (low, high), srf_name, ratio = SETUPS[setup]
    cond = CONDITIONS[condition]
    cube, wl = load_scene(scene)
    keep = (wl >= low) & (wl <= high)
    full, full_wl = crop_to_ratio(cube[keep], ratio), wl[keep]
    psf: PSFArg = "mtf"
    if cond.psf_scale != 1.0:
        psf = gaussian_psf_at(cond.psf_scale * mtf_sigma(ratio), (ratio - 1) / 2)
    lr, msi = simulate_pair(
        full, ratio, srf=srf_name, wavelengths_nm=full_wl, psf=psf, snr_db=cond.snr_db, seed=0
    )
    bands = np.ones(full_wl.shape, dtype=bool)
    if cond.grid:
        bands = (full_wl >= GRID[0]) & (full_wl <= min(GRID[1], high))
        if not cond.keep_water:
            bands &= (full_wl < WATER[0]) | (full_wl > WATER[1])
    lr, ref, hsi_wl = lr[bands], full[bands], full_wl[bands]
    nominal = srf_matrix(srf_name, hsi_wl, min_coverage=0.0)
    blind = blind_bands(nominal)
    rank = min(DEFAULT_RANK, lr.shape[0])
    methods: dict[str, Callable[[], np.ndarray]] = {
        "bicubic": lambda: bicubic(lr, ratio),
        "glp_hs": lambda: glp_hs(lr, msi, ratio, psf="mtf"),
        "glp_hs_local": lambda: glp_hs_local(lr, msi, ratio, psf="mtf"),
        "gsa": lambda: gsa(lr, msi, ratio, psf="mtf"),
        "subspace": lambda: subspace_fusion(lr, msi, ratio, srf=nominal, psf="mtf", rank=rank),
        "classical_prior": lambda: _classical_prior(lr, msi, ratio),
        "default": lambda: fuse_classical(lr, msi, fit_scene(lr, msi, ratio)),
    }
    rows = []
    for method, fn in methods.items():
        out, seconds = _timed(fn)
        rows.append(
            {
                "scene": scene,
                "setup": setup,
                "condition": condition,
                "method": method,
                "hr_shape": list(ref.shape[1:]),
                "bands": int(ref.shape[0]),
                "blind_bands": int(blind.sum()),
                "psnr": metrics.psnr(ref, out),
                "sam": metrics.sam(ref, out),
                "ergas": metrics.ergas(ref, out, ratio=ratio),
                "ssim": metrics.ssim(ref, out),
                "psnr_blind": metrics.psnr(ref[blind], out[blind]) if blind.any() else None,
                "seconds": seconds,
            }
        )
    return rows


def gate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per case: the default path against the best other method (by PSNR) of that case."""
    by_case: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_case.setdefault((row["scene"], row["setup"], row["condition"]), {})[row["method"]] = row
    table = []
    for case, methods in by_case.items():
        default = methods["default"]
        best = max((r for m, r in methods.items() if m != "default"), key=lambda r: r["psnr"])
        table.append(
            {
                "case": list(case),
                "best": best["method"],
                "best_psnr": best["psnr"],
                "default_psnr": default["psnr"],
                "delta_psnr": default["psnr"] - best["psnr"],
                "sam_ratio": default["sam"] / best["sam"],
                "passes": default["psnr"] >= best["psnr"] - GATE_PSNR_DB
                and default["sam"] <= GATE_SAM_RATIO * best["sam"],
            }
        )
    return table


def _init_worker() -> None:
    torch.set_num_threads(1)


def run(cases: list[tuple[str, str, str]], jobs: int) -> list[dict[str, Any]]:
    """Rows of every case, ``jobs`` worker processes (one torch thread each)."""
    done: list[dict[str, Any]] = []

    def report(rows: list[dict[str, Any]]) -> None:
        done.extend(rows)
        (entry,) = gate(rows)
        print(
            f"{' '.join(entry['case'])}: default {entry['delta_psnr']:+.2f} dB vs {entry['best']}", flush=True
        )

    if jobs <= 1:
        _init_worker()
        for case in cases:
            report(run_case(case))
    else:
        with multiprocessing.get_context("spawn").Pool(jobs, initializer=_init_worker) as pool:
            for rows in pool.imap(run_case, cases):
                report(rows)
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the gated quick cases")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    args = parser.parse_args()
    start = time.perf_counter()
    cases = QUICK if args.quick else all_cases()
    rows = run(cases, args.jobs)
    table = gate(rows)
    deltas = [t["delta_psnr"] for t in table]
    summary = {
        "cases": len(table),
        "passing": sum(t["passes"] for t in table),
        "mean_delta_psnr": float(np.mean(deltas)),
        "gate_holds": all(t["passes"] for t in table) and float(np.mean(deltas)) >= GATE_MEAN_DB,
        "wall_s": time.perf_counter() - start,
    }
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, check=False
    ).stdout.strip()
    record = {
        "benchmark": "bench_quality",
        "command": " ".join(sys.argv),
        "commit": commit,
        "jobs": args.jobs,
    }
    record |= {"machine": platform.processor() or platform.machine(), "load_average": os.getloadavg()}
    record |= {"torch": torch.__version__, "quick": args.quick, "scenes": SCENES}
    record |= {"summary": summary, "gate": table, "rows": rows, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    path = write_record(RESULTS, "bench_quality_cpu" + ("_quick" if args.quick else ""), record)
    print(
        "| scene | setup | condition | best other | its PSNR | default PSNR | delta dB | SAM ratio | gate |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for t in table:
        print(
            f"| {' | '.join(t['case'])} | {t['best']} | {t['best_psnr']:.2f} | {t['default_psnr']:.2f} | "
            f"{t['delta_psnr']:+.2f} | {t['sam_ratio']:.3f} | {'yes' if t['passes'] else 'no'} |"
        )
    print(f"\n{summary}\nwrote {path}")


if __name__ == "__main__":
    main()

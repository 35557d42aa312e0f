"""Measure what spectral resampling to a model's grid costs (``python -m training.spectral_cost``).

For each scene (the user's own band grid, unsorted, FWHM unknown) and each model grid of
:mod:`training.setups`, the user's bands inside the model's covered range are kept, a Wald pair is
simulated on the user's grid (all-zero bad bands dropped) (MTF PSF, Nyquist gain 0.3, ratio 4, MSI from the setup's response),
and a fused image on the model's grid is brought back to the user's bands in two ways:

- ``whole``: the whole fused spectrum resampled model -> user;
- ``detail``: ``up(lr_user) + to_user(fused_model - up(lr_model))`` (:mod:`pifnet_infer.spectral`).

Two fusers on the model grid: ``oracle`` (the reference itself resampled to the model grid, i.e. a
perfect model: the error is the resampling alone) and GLP-HS. ``direct`` is GLP-HS run on the
user's grid (no resampling). Prints a markdown table and writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pifnet_infer.baselines import glp_hs
from pifnet_infer.metrics import psnr, sam
from pifnet_infer.simulate import crop_to_ratio, degrade_spatial
from pifnet_infer.spectral import covered_ranges, plan_resampling
from pifnet_infer.srf import srf_matrix
from training.data import DATA_DIR, read_scene
from training.setups import SETUPS

RATIO = 4


def measure(scene: str, setup_name: str, data_dir: Path = DATA_DIR) -> dict[str, float]:
    """SAM (degrees) and PSNR (dB) of each path for one scene and one model grid."""
    setup = SETUPS[setup_name]
    cube, wl, _ = read_scene(scene, data_dir)
    if wl is None:
        raise ValueError(f"{scene} has no wavelengths")
    inside = np.zeros(wl.shape, dtype=bool)
    for lo, hi in covered_ranges(setup.wavelengths_nm, setup.fwhm_nm):
        inside |= (wl >= lo) & (wl <= hi)
    wl, ref = wl[inside], crop_to_ratio(cube[inside], RATIO)
    plan = plan_resampling(wl, None, setup.wavelengths_nm, setup.fwhm_nm)
    msi = np.einsum("kc,chw->khw", srf_matrix(setup.response(), wl, plan.user_fwhm_nm), ref).astype(
        np.float32
    )
    lr_user = degrade_spatial(ref, RATIO, "mtf")
    lr_model = plan.lr_to_model(lr_user)
    if plan.to_user is None:
        raise RuntimeError(f"{scene} is already on the {setup_name} grid: nothing to measure")
    fused = {"oracle": plan.lr_to_model(ref), "glp_hs": glp_hs(lr_model, msi, RATIO, psf="mtf")}
    row: dict[str, float] = {"user_bands": int(wl.size), "model_bands": int(setup.wavelengths_nm.size)}
    direct = glp_hs(lr_user, msi, RATIO, psf="mtf")
    row["direct_glp_hs_sam"], row["direct_glp_hs_psnr"] = sam(ref, direct), psnr(ref, direct)
    for fuser, out in fused.items():
        whole = np.einsum("kc,chw->khw", plan.to_user, out)
        detail = plan.fused_to_user(out, lr_model, lr_user, RATIO)
        row[f"{fuser}_whole_sam"], row[f"{fuser}_whole_psnr"] = sam(ref, whole), psnr(ref, whole)
        row[f"{fuser}_detail_sam"], row[f"{fuser}_detail_psnr"] = sam(ref, detail), psnr(ref, detail)
    return row


def main() -> int:
    """Run the measurement over the scenes with wavelengths."""
    parser = argparse.ArgumentParser(
        prog="python -m training.spectral_cost", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--scenes", default="aviris_gatorsense_vi,jasper_ridge")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = {}
    for scene in args.scenes.split(","):
        for setup_name in ("pifnet-vnir-rgb-x4", "pifnet-vnirswir-s2-x3"):
            rows[f"{scene} -> {setup_name}"] = measure(scene, setup_name)
    cols = ["user_bands", "direct_glp_hs_sam", "oracle_whole_sam", "oracle_detail_sam", "glp_hs_whole_sam",
            "glp_hs_detail_sam", "oracle_whole_psnr", "oracle_detail_psnr"]  # fmt: skip
    print("| scene -> model grid | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for key, row in rows.items():
        print(
            f"| {key} | "
            + " | ".join(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in cols)
            + " |"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

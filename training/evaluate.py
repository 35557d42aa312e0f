"""Held-out evaluation of a trained weight against classical fusion.

    python -m training.evaluate --weights pifnet_infer/weights/bundled/pifnet-vnir-rgb-x4.safetensors \\
        --setup pifnet-vnir-rgb-x4 --out-dir weights/runs/pifnet-vnir-rgb-x4/eval

On the test strip of every scene that covers the setup's grid (:func:`training.data.test_pairs`:
MTF PSF with Nyquist gain 0.3, no noise, the setup's MSI response), PIF-Net is compared with
bicubic upsampling, GLP-HS and GSA (both told the true PSF), with the
official protocol's PSNR (peak = reference max), SSIM (data range 1), SAM (degrees) and ERGAS
(:func:`scores`). PIF-Net also runs under CPU bf16 autocast when
the platform supports it. Writes ``metrics.json`` and ``metrics.md`` (the markdown table).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pifnet_infer.baselines import bicubic, glp_hs, gsa
from pifnet_infer.metrics import ergas, psnr, sam, ssim
from pifnet_infer.models import PIFNet
from pifnet_infer.weights import load_model
from training.data import DATA_DIR, PERMISSIVE_SCENES, TEST_PSF_GAIN, load_scenes, test_pairs
from training.setups import SETUPS, Setup, get_setup

_logger = logging.getLogger("training.evaluate")

METRICS = ("PSNR", "SSIM", "SAM", "ERGAS")
CLASSICAL = ("bicubic", "glp_hs", "gsa")


def pifnet_runner(model: PIFNet, dtype: torch.dtype) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A fuser running ``model`` in fp32, or under CPU autocast to ``dtype``."""

    def run(lr: np.ndarray, msi: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            out = model(torch.from_numpy(lr)[None], torch.from_numpy(msi)[None])[0]
        return out.float().numpy()

    return run


def scores(reference: np.ndarray, estimate: np.ndarray, ratio: int) -> dict[str, float]:
    """PSNR, SSIM, SAM, ERGAS as the official protocol computes them (estimate clamped to [0, 1]).

    PSNR peak = reference max, SSIM data range 1 with full borders, SAM in degrees (eps 1e-10),
    ERGAS with 100 / ``ratio`` (the official code's constant 4 equals it for ratio 4).
    """
    est = np.clip(estimate, 0.0, 1.0)
    return {
        "PSNR": psnr(reference, est, peak="max"),
        "SSIM": ssim(reference, est, data_range=1.0, border="full"),
        "SAM": sam(reference, est),
        "ERGAS": ergas(reference, est, ratio=ratio),
    }


def classical_fusers(ratio: int) -> dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """Bicubic, GLP-HS and GSA for a ratio, told the evaluation's PSF."""
    return {
        "bicubic": lambda lr, msi: bicubic(lr, ratio),
        "glp_hs": lambda lr, msi: glp_hs(lr, msi, ratio, psf="mtf", nyquist_gain=TEST_PSF_GAIN),
        "gsa": lambda lr, msi: gsa(lr, msi, ratio, psf="mtf", nyquist_gain=TEST_PSF_GAIN),
    }


def evaluate_weight(
    weights: Path, setup: Setup, scenes: tuple[str, ...] = PERMISSIVE_SCENES, data_dir: Path = DATA_DIR
) -> dict[str, Any]:
    """Scores per scene and method, their mean over scenes, and PIF-Net's gap to the best classical method."""
    model = load_model(weights, device="cpu")
    fusers = classical_fusers(setup.ratio)
    fusers["pifnet_fp32"] = pifnet_runner(model, torch.float32)
    bf16_error = None
    try:
        pifnet_runner(model, torch.bfloat16)(np.zeros((setup.wavelengths_nm.size, 4, 4), np.float32),
                                             np.zeros((len(setup.msi_bands_description), 4 * setup.ratio,
                                                       4 * setup.ratio), np.float32))  # fmt: skip
        fusers["pifnet_bf16"] = pifnet_runner(model, torch.bfloat16)
    except (RuntimeError, TypeError) as err:
        bf16_error = f"{type(err).__name__}: {err}"
        _logger.warning("bf16 autocast unavailable on this CPU: %s", bf16_error)
    per_scene: dict[str, dict[str, dict[str, float]]] = {}
    for name, lr, msi, ref in test_pairs(setup, load_scenes(setup, scenes, data_dir)):
        per_scene[name] = {}
        for method, fuse in fusers.items():
            start = time.perf_counter()
            out = fuse(lr, msi)
            seconds = time.perf_counter() - start
            per_scene[name][method] = scores(ref, out, setup.ratio) | {"seconds": seconds}
        per_scene[name]["shape"] = list(ref.shape)  # type: ignore[assignment]
    methods = list(fusers)
    mean = {m: {k: float(np.mean([per_scene[s][m][k] for s in per_scene])) for k in METRICS} for m in methods}
    best_psnr = max(CLASSICAL[1:], key=lambda m: mean[m]["PSNR"])
    best_sam = min(CLASSICAL[1:], key=lambda m: mean[m]["SAM"])
    target = {
        "best_classical_psnr": best_psnr,
        "psnr_gap_db": mean["pifnet_fp32"]["PSNR"] - mean[best_psnr]["PSNR"],
        "best_classical_sam": best_sam,
        "sam_gap_deg": mean["pifnet_fp32"]["SAM"] - mean[best_sam]["SAM"],
    }
    target["met"] = target["psnr_gap_db"] >= 0 and target["sam_gap_deg"] <= 0
    return {
        "weights": str(weights),
        "setup": setup.name,
        "protocol": "official PSNR/SSIM/SAM, ERGAS 100/ratio (training.evaluate.scores); Wald simulation: MTF PSF gain "
        f"{TEST_PSF_GAIN}, ratio {setup.ratio}, MSI {setup.msi_srf}, no noise; held-out test strips",
        "per_scene": per_scene,
        "mean": mean,
        "target": target,
        "bf16_error": bf16_error,
    }


def markdown_table(result: dict[str, Any]) -> str:
    """Per-scene and mean rows, one column per metric."""
    lines = ["| scene | method | PSNR (dB) | SSIM | SAM (deg) | ERGAS |", "|---|---|---|---|---|---|"]
    blocks = [*result["per_scene"].items(), ("**mean**", result["mean"])]
    for scene, methods in blocks:
        for method, scores in methods.items():
            if method == "shape":
                continue
            lines.append(
                f"| {scene} | {method} | {scores['PSNR']:.2f} | {scores['SSIM']:.4f} | {scores['SAM']:.2f} "
                f"| {scores['ERGAS']:.2f} |"
            )
    t = result["target"]
    lines.append("")
    lines.append(
        f"Target (mean PSNR >= best classical, mean SAM <= best classical): "
        f"{'met' if t['met'] else 'NOT met'}; PSNR {t['psnr_gap_db']:+.2f} dB vs {t['best_classical_psnr']}, "
        f"SAM {t['sam_gap_deg']:+.2f} deg vs {t['best_classical_sam']}."
    )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate, write ``metrics.json`` and ``metrics.md``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, type=Path)
    parser.add_argument("--setup", required=True, choices=sorted(SETUPS))
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--scenes", default=",".join(PERMISSIVE_SCENES))
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = evaluate_weight(
        args.weights, get_setup(args.setup), tuple(args.scenes.split(",")), args.data_dir
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "metrics.json").write_text(json.dumps(result, indent=1))
    table = markdown_table(result)
    (args.out_dir / "metrics.md").write_text(table)
    _logger.info("\n%s", table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Export a trained run as a shippable weight file and its manifest entry.

    python -m training.export --run-dir weights/runs/pifnet-vnir-rgb-x4 \\
        --metrics weights/runs/pifnet-vnir-rgb-x4/eval/metrics.json --out-dir weights

Writes ``OUT_DIR/<setup>.safetensors`` (fp32, the run's ``best.safetensors`` re-saved with the
training provenance in its metadata) and ``OUT_DIR/<setup>.manifest-entry.json``, an entry that
:func:`pifnet_infer.weights.manifest.parse_entry` accepts (checked before writing), with sha256,
size, the commands and commit of every training chunk, the hardware and duration, and the held-out
metrics with the gap to the best classical baseline. The lead merges the entry into
``weights_manifest.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pifnet_infer.weights import build_model_from_file, save_weights
from pifnet_infer.weights.hub import sha256_file
from pifnet_infer.weights.manifest import parse_entry
from training.data import RESTRICTED_SCENES, split_slices
from training.setups import get_setup

_logger = logging.getLogger("training.export")

REPO_OWNER = "pifnet-infer"
LICENCE = "Apache-2.0"
#: bundled sample whose held-out test strip gives each exported weight its self-check record
SELF_CHECK_SAMPLE = "aviris_gatorsense_vi"


def hardware() -> str:
    """A one-line description of this machine's CPU (and GPU when present)."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cpus = os.cpu_count()
    return f"CPU only: {platform.processor() or platform.machine()}, {cpus} cores, torch {torch.__version__}"


def manifest_entry(
    setup_name: str, weight_file: Path, run_state: dict[str, Any], metrics: dict[str, Any], card: str
) -> dict[str, Any]:
    """The manifest entry of an exported weight (see ``weights_manifest.schema.json``)."""
    setup = get_setup(setup_name)
    config = build_model_from_file(weight_file).config
    target = metrics["target"]
    mean = metrics["mean"]
    verdict = (
        "beats the best classical baseline"
        if target["met"]
        else f"below classical fusion: {target['psnr_gap_db']:+.1f} dB PSNR vs {target['best_classical_psnr']}, "
        f"{target['sam_gap_deg']:+.1f} deg SAM vs {target['best_classical_sam']}; prefer GLP-HS/GSA"
    )
    hours = run_state["train_seconds"] / 3600
    return {
        "name": setup.name,
        "repo_id": f"{REPO_OWNER}/{setup.name}",
        "filename": weight_file.name,
        "revision": None,
        "sha256": sha256_file(weight_file),
        "size_bytes": weight_file.stat().st_size,
        "format": "safetensors",
        "config": config.to_dict(),
        "hsi_wavelengths_nm": [float(w) for w in setup.wavelengths_nm],
        "hsi_fwhm_nm": [float(w) for w in setup.fwhm_nm],
        "msi_srf": setup.msi_srf,
        "msi_bands_description": list(setup.msi_bands_description),
        "input_range": {"scale": 1.0, "offset": 0.0, "min": 0.0, "max": 1.0, "units": "reflectance"},
        "training": {
            "data": "train strips (first 55 % along the longer axis) of "
            + ", ".join(run_state["args"]["scenes"].split(","))
            + " from ../shared/data, plus synthetic scenes (USGS 1995 + earthlib spectra mixed with "
            "abundance maps unmixed from those train strips); no GPL or unlicensed data",
            "protocol": "Wald: MTF-Gaussian PSF (Nyquist gain 0.2-0.4), decimation by the ratio, MSI through "
            f"{setup.msi_srf}; crops {run_state['args']['crop']} px, flips, rot90, brightness x0.6-1.4, "
            "smooth spectral tilt, noise (30 % of samples)",
            "command": " && ".join(run_state["commands"]),
            "commit": ", ".join(sorted(set(run_state.get("commits", [])))) or "unknown",
            "hardware": hardware(),
            "duration": f"{hours:.2f} h training wall time, {run_state['step']} steps of batch "
            f"{run_state['args']['batch_size']}, {run_state['chunks']} chunks",
        },
        "metrics": {
            "protocol": metrics["protocol"],
            "mean": mean,
            "per_scene": {
                s: {m: v for m, v in d.items() if m != "shape"} for s, d in metrics["per_scene"].items()
            },
            "target": target,
        },
        "licence": LICENCE,
        "bundled": False,
        "description": f"{setup.wavelengths_nm.size}-band {setup.wavelengths_nm.min():.0f}-"
        f"{setup.wavelengths_nm.max():.0f} nm HSI + {setup.msi_srf}, x{setup.ratio}, CPU-trained "
        f"dim {config.dim}; {verdict}",
        "model_card": card,
    }


def self_check(model: torch.nn.Module, entry: Any) -> dict[str, Any]:
    """The ``metrics.self_check`` record: PSNR on the test strip of the bundled :data:`SELF_CHECK_SAMPLE`.

    The strip is the one :func:`training.data.split_slices` holds out, so the record is a held-out
    score that ``pifnet-infer weights check`` (and CI) can reproduce without ``../shared``.
    """
    from pifnet_infer.data import load_sample
    from pifnet_infer.weights.selfcheck import TOLERANCE_DB, measure_psnr

    height, width = load_sample(SELF_CHECK_SAMPLE).cube.shape[1:]
    rows, cols = split_slices(height, width, entry.config.ratio)["test"]
    window = (rows.start, rows.stop), (cols.start, cols.stop)
    psnr = measure_psnr(model.eval(), entry, SELF_CHECK_SAMPLE, *window)
    return {
        "sample": SELF_CHECK_SAMPLE, "rows": list(window[0]), "cols": list(window[1]), "psnr": round(psnr, 6),
        "tolerance_db": TOLERANCE_DB, "command": "python -m training.export (measured at export)",
    }  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Re-save the best checkpoint, write the manifest entry."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--metrics", required=True, type=Path, help="metrics.json from training.evaluate")
    parser.add_argument("--out-dir", type=Path, default=Path("weights"))
    parser.add_argument("--checkpoint", default="best.safetensors")
    args = parser.parse_args(argv)
    state = json.loads((args.run_dir / "last.json").read_text())
    log = [json.loads(line) for line in (args.run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    state["commits"] = [r["commit"] for r in log if r.get("event") == "chunk_start"]
    setup = get_setup(state["args"]["setup"])
    restricted = sorted(set(state["args"]["scenes"].split(",")) & set(RESTRICTED_SCENES))
    if restricted:
        raise SystemExit(
            f"run {args.run_dir} trained on {restricted} (GPL or unlicensed data): not exporting"
        )
    metrics = json.loads(args.metrics.read_text())
    model = build_model_from_file(args.run_dir / args.checkpoint)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"{setup.name}.safetensors"
    save_weights(
        model,
        out,
        metadata={
            "pifnet_infer.source": f"training run {args.run_dir.name}, {args.checkpoint}, step {state['step']}"
        },
    )
    entry = manifest_entry(setup.name, out, state, metrics, f"docs/model_cards/{setup.name}.md")
    entry["metrics"]["self_check"] = self_check(model, parse_entry(entry, where=str(out)))
    parse_entry(entry, where=str(out))  # refuse to write an entry the manifest would reject
    entry_file = args.out_dir / f"{setup.name}.manifest-entry.json"
    entry_file.write_text(json.dumps(entry, indent=1) + "\n")
    _logger.info(
        "wrote %s (%d bytes, sha256 %s) and %s", out, entry["size_bytes"], entry["sha256"], entry_file
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

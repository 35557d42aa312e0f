"""What augmentation and synthetic scenes bring: train the same setup with each left out, then evaluate.

    python -m training.ablation --setup pifnet-vnir-rgb-x4 --out-dir weights/runs/ablation \\
        --variants full no-synthetic no-augment --total-steps 150 --threads 1

Each variant is one :mod:`training.train` run (resumed chunk after chunk until ``--total-steps``),
evaluated on the held-out test strips by :mod:`training.evaluate`. The variants differ only in the
flags below; seed, width, crop, batch and schedule are shared. ``summary.md`` in ``--out-dir``
gathers the mean test scores of every variant evaluated there so far. Checkpoints stay in the
variant folders; only ``eval/``, ``log.jsonl`` and ``loss.png`` are worth keeping.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from training import evaluate, train
from training.data import DATA_DIR, PERMISSIVE_SCENES
from training.setups import SETUPS

_logger = logging.getLogger("training.ablation")

#: variant name: the training flags that make it
VARIANTS: dict[str, list[str]] = {
    "full": [],
    "no-synthetic": ["--synthetic-fraction", "0"],
    "no-augment": ["--no-augment"],
    "no-augment-no-synthetic": ["--no-augment", "--synthetic-fraction", "0"],
}


def run_variant(name: str, args: argparse.Namespace) -> Path:
    """Train (resuming until done) and evaluate one variant; returns its folder."""
    folder = args.out_dir / args.setup / name
    common = ["--setup", args.setup, "--out-dir", str(folder), "--minutes", str(args.minutes)]
    common += ["--dim", str(args.dim), "--crop", str(args.crop), "--batch-size", str(args.batch_size)]
    common += ["--total-steps", str(args.total_steps), "--threads", str(args.threads)]
    data = ["--scenes", args.scenes, "--data-dir", str(args.data_dir)]
    while True:
        state = folder / "last.json"
        step = json.loads(state.read_text())["step"] if state.is_file() else 0
        if step >= args.total_steps:
            break
        resume = ["--resume"] if state.is_file() else []
        if train.main([*common, *data, *VARIANTS[name], *resume]) != 0:
            raise RuntimeError(f"training variant {name!r} failed; see its log in {folder}")
    weights = ["--weights", str(folder / "best.safetensors"), "--setup", args.setup]
    evaluate.main([*weights, "--out-dir", str(folder / "eval"), "--threads", str(args.threads), *data])
    return folder


def summary(root: Path) -> str:
    """Markdown table of the mean test scores of every evaluated variant under ``root``."""
    lines = [
        "| variant | steps | PIF-Net PSNR dB | SAM deg | bicubic PSNR | GLP-HS PSNR |",
        "|---|---|---|---|---|---|",
    ]
    for name in VARIANTS:
        metrics = root / name / "eval" / "metrics.json"
        if not metrics.is_file():
            continue
        mean = json.loads(metrics.read_text())["mean"]
        step = json.loads((root / name / "last.json").read_text())["step"]
        lines.append(
            f"| {name} | {step} | {mean['pifnet_fp32']['PSNR']:.2f} | {mean['pifnet_fp32']['SAM']:.2f} | "
            f"{mean['bicubic']['PSNR']:.2f} | {mean['glp_hs']['PSNR']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the requested variants, then write ``summary.md``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m training.ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--setup", required=True, choices=sorted(SETUPS))
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--total-steps", type=int, default=150)
    parser.add_argument("--minutes", type=float, default=10.0, help="wall time of each training chunk")
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--scenes", default=",".join(PERMISSIVE_SCENES), help="comma-separated shared/data folders"
    )
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    args = parser.parse_args(argv)
    for name in args.variants:
        run_variant(name, args)
    table = summary(args.out_dir / args.setup)
    (args.out_dir / args.setup / "summary.md").write_text(table)
    _logger.info("\n%s", table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

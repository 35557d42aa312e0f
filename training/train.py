"""Resumable PIF-Net training in time-boxed chunks.

    python -m training.train --setup pifnet-vnir-rgb-x4 --out-dir weights/runs/vnir-rgb --minutes 10 [--resume]

Recipe: the official one (AdamW lr 4e-4, weight decay 0.01, L1 loss on the unclamped output, step
decay x0.1 after two thirds of training; spec section 10.3), adapted to our data volume: the
schedule is set in optimiser steps (``--total-steps``) instead of epochs because our "epoch" is an
endless stream of random crops of a few scenes plus synthetic scenes (:mod:`training.data`); the
crop is small (default 32 HR px, 128 in the official code) so that a CPU does a useful number of
steps; the feature width ``--dim`` may be slimmer than the official 64 for CPU-trained weights;
gradients are clipped to norm :data:`GRAD_CLIP_NORM` and a batch with a non-finite loss or gradient
is skipped.

Every chunk ends (after ``--minutes``) by saving ``DIR/last.safetensors`` (model + AdamW state) and
``DIR/last.json`` (step, RNG state, arguments), validating on the validation strips, appending to
``DIR/log.jsonl`` and plotting ``DIR/loss.png``; the best model by validation PSNR is kept as
``DIR/best.safetensors`` (a plain weight file for :func:`pifnet_infer.weights.load_model`).
``--resume`` continues from ``DIR/last.*`` with the arguments stored there.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pifnet_infer._utils.device import resolve_device
from pifnet_infer._utils.threads import physical_cores
from pifnet_infer.baselines import bicubic, glp_hs
from pifnet_infer.metrics import psnr, sam
from pifnet_infer.models import PIFNet
from pifnet_infer.weights import save_state_dict, save_weights
from training.data import (
    DATA_DIR,
    PERMISSIVE_SCENES,
    TEST_PSF_GAIN,
    BatchMaker,
    load_library,
    load_scenes,
    test_pairs,
)
from training.setups import SETUPS, get_setup

_logger = logging.getLogger("training.train")
#: gradient norm clip (not in the official recipe): a VNIR-SWIR run without it reached a NaN loss at step 30
GRAD_CLIP_NORM = 1.0

_RESUMED_ARGS = (
    "setup", "dim", "crop", "batch_size", "total_steps", "lr", "weight_decay", "synthetic_fraction",
    "noise_probability", "augment", "seed", "scenes", "residual_prior",
)  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--setup", required=True, choices=sorted(SETUPS))
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--minutes", type=float, default=10.0, help="wall time of this chunk (at most 10)")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.* (its arguments win)")
    p.add_argument("--dim", type=int, default=64, help="feature width (official: 64)")
    p.add_argument("--crop", type=int, default=32, help="HR crop size in pixels (multiple of the ratio)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--total-steps", type=int, default=3000, help="schedule length: lr x0.1 after 2/3")
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--synthetic-fraction", type=float, default=0.4)
    p.add_argument("--noise-probability", type=float, default=0.3)
    p.add_argument("--no-augment", dest="augment", action="store_false", help="crops only: no flips etc.")
    p.add_argument("--seed", type=int, default=3407)
    p.add_argument(
        "--scenes", default=",".join(PERMISSIVE_SCENES), help="comma-separated shared/data folders"
    )
    p.add_argument("--data-dir", type=Path, default=DATA_DIR)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: the physical cores)")
    p.add_argument(
        "--residual-prior",
        choices=("none", "glp_hs"),
        default="none",
        help="learn the correction of a classical prior (output = prior + network, last layer starts at zero); "
        "an experiment for the prior-guided weights: the saved file holds the network alone",
    )
    p.add_argument("--device", default="cpu", help='"cpu", "cuda", "cuda:N" or "auto" (CUDA when available)')
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument(
        "--chunk-steps", type=int, default=0, help="also stop this chunk after this many steps (0: no limit)"
    )
    args = p.parse_args(argv)
    if not 0 < args.minutes <= 10:
        p.error(f"--minutes must be in (0, 10], got {args.minutes}")
    return args


def learning_rate(step: int, base: float, total: int) -> float:
    """Step decay: ``base`` until 2/3 of ``total`` steps, then ``base / 10``."""
    return base if step < (2 * total) // 3 else base * 0.1


def classical_prior(lr_hsi: torch.Tensor, hr_msi: torch.Tensor, ratio: int) -> torch.Tensor:
    """GLP-HS of every sample of a batch (told the test protocol's PSF), on the inputs' device."""
    fused = [
        glp_hs(lr.cpu().numpy(), msi.cpu().numpy(), ratio, psf="mtf", nyquist_gain=TEST_PSF_GAIN)
        for lr, msi in zip(lr_hsi, hr_msi, strict=True)
    ]
    return torch.from_numpy(np.stack(fused)).to(lr_hsi.device)


def train_step(
    model: PIFNet, optimizer: torch.optim.Optimizer, batch: Sequence[torch.Tensor], lr: float
) -> float | None:
    """One optimiser step on ``(lr_hsi, hr_msi, reference)`` (on the model's device); returns the L1 loss.

    Returns ``None`` (and leaves the weights unchanged) when the loss or the gradient norm is not finite.
    """
    lr_hsi, hr_msi, ref = batch
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = torch.nn.functional.l1_loss(model(lr_hsi, hr_msi), ref)
    optimizer.zero_grad(set_to_none=True)
    if not torch.isfinite(loss):
        finite = all(bool(torch.isfinite(t).all()) for t in batch)
        _logger.warning("loss %s (inputs finite: %s); batch skipped", loss.item(), finite)
        return None
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
    if not torch.isfinite(norm):
        _logger.warning("gradient norm %s; batch skipped", norm.item())
        optimizer.zero_grad(set_to_none=True)
        return None
    optimizer.step()
    return float(loss.item())


def git_commit() -> str:
    """HEAD commit of the repository (``"unknown"`` outside git), ``+dirty`` when files differ."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def save_checkpoint(
    out_dir: Path, model: PIFNet, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Model + AdamW moments to ``last.safetensors``, counters and RNG to ``last.json`` (both atomic)."""
    tensors = {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()}
    opt_state = optimizer.state_dict()
    for index, slot in opt_state["state"].items():
        for key, value in slot.items():
            value = torch.as_tensor(value).cpu()
            tensors[f"optim.{index}.{key}"] = value.reshape(-1) if key == "step" else value
    save_state_dict(tensors, out_dir / "last.safetensors", config=model.config)
    tmp = out_dir / "last.json.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, out_dir / "last.json")


def load_checkpoint(out_dir: Path, model: PIFNet, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Inverse of :func:`save_checkpoint`; returns the JSON state."""
    from safetensors.torch import load_file

    tensors = load_file(str(out_dir / "last.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    opt_state = optimizer.state_dict()
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            slots.setdefault(int(index), {})[name] = value.reshape(()) if name == "step" else value
    opt_state["state"] = slots
    optimizer.load_state_dict(opt_state)
    return dict(json.loads((out_dir / "last.json").read_text()))


@torch.no_grad()
def validate(
    model: PIFNet, pairs: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], residual_prior: str = "none"
) -> dict[str, float]:
    """Mean PSNR (peak = reference max) and SAM (degrees) of the model (plus its prior) on the validation strips."""
    model.eval()
    device = next(model.parameters()).device
    scores: list[tuple[float, float]] = []
    for _, lr, msi, ref in pairs:
        out = model(torch.from_numpy(lr)[None].to(device), torch.from_numpy(msi)[None].to(device))
        out = out[0].cpu()
        if residual_prior == "glp_hs":
            out = (
                out
                + classical_prior(
                    torch.from_numpy(lr)[None], torch.from_numpy(msi)[None], model.config.ratio
                )[0]
            )
        out = out.clamp(0, None)
        scores.append((psnr(ref, out), sam(ref, out)))
    model.train()
    return {
        "val_psnr": float(np.mean([s[0] for s in scores])),
        "val_sam": float(np.mean([s[1] for s in scores])),
    }


def plot_log(out_dir: Path) -> None:
    """Loss (and validation PSNR) curves of ``log.jsonl`` to ``loss.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    # a chunk stopped before saving is re-run from the last checkpoint: keep the re-run's rows
    train = sorted({r["step"]: r for r in rows if "loss" in r}.values(), key=lambda r: r["step"])
    val = [r for r in rows if "val_psnr" in r]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    if train:
        ax[0].plot([r["step"] for r in train], [r["loss"] for r in train])
        ax[0].set_yscale("log")
    ax[0].set(xlabel="step", ylabel="L1 loss (mean of log interval)", title="training loss")
    if val:
        ax[1].plot([r["step"] for r in val], [r["val_psnr"] for r in val], "o-", label="PIF-Net")
        for key, label in (("val_bicubic_psnr", "bicubic"), ("val_glp_hs_psnr", "GLP-HS")):
            points = [(r["step"], r[key]) for r in val if key in r]
            if points:
                ax[1].plot(*zip(*points, strict=True), "x--", label=label)
        ax[1].legend()
    ax[1].set(xlabel="step", ylabel="PSNR (dB)", title="validation strips")
    fig.tight_layout()
    fig.savefig(out_dir / "loss.png", dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one training chunk; returns an exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    resuming = (out_dir / "last.json").is_file()
    if resuming and not args.resume:
        _logger.error(
            "%s already holds a run; pass --resume to continue it or choose another --out-dir", out_dir
        )
        return 2
    state: dict[str, Any] = {}
    if resuming:
        state = json.loads((out_dir / "last.json").read_text())
        for key in _RESUMED_ARGS:  # runs from before an option existed keep its default
            setattr(args, key, state["args"].get(key, getattr(args, key)))
    torch.set_num_threads(args.threads or physical_cores())
    setup = get_setup(args.setup)
    scenes = load_scenes(setup, tuple(args.scenes.split(",")), args.data_dir)
    library = load_library(setup, args.data_dir)
    maker = BatchMaker(
        setup, scenes, library, crop=args.crop, synthetic_fraction=args.synthetic_fraction,
        noise_probability=args.noise_probability, augment=args.augment, seed=args.seed,
    )  # fmt: skip
    val_pairs = test_pairs(setup, scenes, "val")
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    model = PIFNet(setup.config(args.dim)).to(device)
    if args.residual_prior != "none" and not resuming:
        torch.nn.init.zeros_(model.tail.net[-1].weight)  # an untrained model adds nothing to the prior
        torch.nn.init.zeros_(model.tail.net[-1].bias)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    if resuming:
        state = load_checkpoint(out_dir, model, optimizer)
        maker.rng.bit_generator.state = state["rng"]
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
    step = int(state.get("step", 0))
    best = float(state.get("best_val_psnr", -math.inf))
    command = " ".join(["python -m training.train", *(sys.argv[1:] if argv is None else argv)])
    _logger.info("setup %s, %s, step %d, %d params", setup.name, model.config, step,
                 sum(p.numel() for p in model.parameters()))  # fmt: skip
    model.train()
    start = time.monotonic()
    deadline = start + 60.0 * args.minutes
    losses: list[float] = []
    interval_start = time.monotonic()
    with (out_dir / "log.jsonl").open("a") as log:
        log.write(json.dumps({"event": "chunk_start", "step": step, "command": command, "commit": git_commit(),
                              "threads": torch.get_num_threads(), "time": time.time()}) + "\n")  # fmt: skip
        chunk_end = step + args.chunk_steps if args.chunk_steps else args.total_steps
        while time.monotonic() < deadline and step < min(args.total_steps, chunk_end):
            batch = list(maker.batch(args.batch_size))
            if args.residual_prior == "glp_hs":
                batch[2] = batch[2] - classical_prior(batch[0], batch[1], setup.ratio)
            batch = [t.to(device, non_blocking=True) for t in batch]
            loss = train_step(model, optimizer, batch, learning_rate(step, args.lr, args.total_steps))
            if loss is None:
                continue
            step += 1
            losses.append(loss)
            if step % args.log_every == 0:
                now = time.monotonic()
                log.write(json.dumps({"step": step, "loss": float(np.mean(losses)), "lr": optimizer.param_groups[0]["lr"],
                                      "s_per_step": (now - interval_start) / len(losses)}) + "\n")  # fmt: skip
                log.flush()
                _logger.info(
                    "step %d loss %.5f (%.2f s/step)",
                    step,
                    np.mean(losses),
                    (now - interval_start) / len(losses),
                )
                losses, interval_start = [], now
        val = validate(model, val_pairs, args.residual_prior)
        baselines = {
            name: float(np.mean([psnr(ref, fuse(lr, msi)) for _, lr, msi, ref in val_pairs]))
            for name, fuse in (
                ("val_bicubic_psnr", lambda lr, msi: bicubic(lr, setup.ratio)),
                (
                    "val_glp_hs_psnr",
                    lambda lr, msi: glp_hs(lr, msi, setup.ratio, psf="mtf", nyquist_gain=TEST_PSF_GAIN),
                ),
            )
        }
        elapsed = float(state.get("train_seconds", 0.0)) + time.monotonic() - start
        log.write(json.dumps({"step": step, **val, **baselines, "train_seconds": elapsed}) + "\n")
    _logger.info(
        "step %d: val PSNR %.2f dB (bicubic %.2f, GLP-HS %.2f), SAM %.2f deg",
        step,
        val["val_psnr"],
        baselines["val_bicubic_psnr"],
        baselines["val_glp_hs_psnr"],
        val["val_sam"],
    )
    if val["val_psnr"] > best:
        best = val["val_psnr"]
        save_weights(
            model,
            out_dir / "best.safetensors",
            metadata={
                "pifnet_infer.source": f"training step {step}"
                + (
                    ""
                    if args.residual_prior == "none"
                    else f", network alone: add {args.residual_prior} to its output"
                )
            },
        )
    save_checkpoint(out_dir, model, optimizer, {
        "step": step, "best_val_psnr": best, "train_seconds": elapsed, "rng": maker.rng.bit_generator.state,
        "torch_rng": torch.get_rng_state().tolist(), "args": {k: getattr(args, k) for k in _RESUMED_ARGS},
        "chunks": int(state.get("chunks", 0)) + 1, "commands": [*state.get("commands", []), command],
    })  # fmt: skip
    plot_log(out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

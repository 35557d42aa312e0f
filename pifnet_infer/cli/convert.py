"""``pifnet-infer convert IN.pth OUT.safetensors --preset NAME [--ratio R] [--overwrite]``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pifnet_infer.config import PRESETS


def add_parser(subparsers: Any) -> None:
    """Register ``convert``."""
    parser = subparsers.add_parser(
        "convert",
        help="convert an official PIF-Net .pth checkpoint to safetensors",
        description="Check an official checkpoint's keys and shapes against a preset and write it as "
        "safetensors with the configuration in its metadata. Nothing is written if any check fails.",
    )
    parser.add_argument(
        "input", metavar="IN.pth", help="official checkpoint (bare state_dict, or under 'net'/'state_dict')"
    )
    parser.add_argument("output", metavar="OUT.safetensors")
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS), help="official configuration")
    parser.add_argument("--ratio", type=int, help="LR -> HR ratio the checkpoint was trained for (default 4)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument(
        "--wavelengths", type=Path, metavar="FILE",
        help="HSI band centres in nm the checkpoint was trained on (.npy/.json/.txt), stored in OUT's metadata",
    )  # fmt: skip
    parser.add_argument("--fwhm", type=Path, metavar="FILE", help="band widths in nm, same formats")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pifnet_infer.cli.simulate import read_vector
    from pifnet_infer.weights.convert import convert_checkpoint

    if args.fwhm is not None and args.wavelengths is None:
        raise ValueError("--fwhm needs --wavelengths")
    band_grid = None
    if args.wavelengths is not None:
        fwhm = None if args.fwhm is None else read_vector(args.fwhm, "fwhm_nm").tolist()
        band_grid = (read_vector(args.wavelengths, "wavelengths_nm").tolist(), fwhm)
    config = convert_checkpoint(
        args.input, args.output, preset=args.preset, ratio=args.ratio, overwrite=args.overwrite,
        band_grid=band_grid,
    )  # fmt: skip
    print(
        f"wrote {args.output}: preset {args.preset}, {config.hsi_bands} HSI bands, {config.msi_bands} MSI bands, "
        f"ratio {config.ratio}"
    )
    return 0

"""``pifnet-infer adapt --hsi A --msi B --out model.safetensors``: :func:`pifnet_infer.adapt.adapt`.

Inputs are ``.npy`` cubes (bands, H, W) or rasters GDAL reads (GeoTIFF, ...; read whole, with the
bands' scale/offset applied, nodata as NaN, band wavelengths taken from the metadata when present).
The adapted weights are written as safetensors with their provenance; fuse with them through
``pifnet-infer fuse --weights model.safetensors`` or ``fuse(..., model="model.safetensors")``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from pifnet_infer.errors import ShapeMismatchError


def read_image(path: Path, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A float32 (bands, H, W) image and its band centres in nm (None when unknown).

    ``.npy`` files hold the cube channel-first; anything else is opened with rasterio (imported here).
    """
    if path.suffix.lower() == ".npy":
        if not path.is_file():
            raise FileNotFoundError(f"{name} file {str(path)!r} does not exist")
        cube = np.load(path)
        if cube.ndim != 3:
            raise ShapeMismatchError(
                f"{name} {str(path)!r} must hold a (bands, H, W) cube, got shape {cube.shape}"
            )
        return np.ascontiguousarray(cube, dtype=np.float32), None
    from pifnet_infer.io.bands import read_band_info
    from pifnet_infer.io.rasters import open_raster, read_physical

    with open_raster(path, name) as dataset:
        info = read_band_info(dataset, name=name)
        data = read_physical(dataset, info)
    wavelengths = None if info.wavelengths_nm is None else np.asarray(info.wavelengths_nm, dtype=np.float64)
    return data, wavelengths


def _ratio(args: argparse.Namespace, hsi: np.ndarray, msi: np.ndarray) -> int:
    if args.ratio is not None:
        return int(args.ratio)
    ry, rx = msi.shape[1] / hsi.shape[1], msi.shape[2] / hsi.shape[2]
    if ry != rx or not ry.is_integer():
        raise ShapeMismatchError(
            f"cannot infer --ratio from the sizes: HSI {hsi.shape[1:]} and MSI {msi.shape[1:]} (ratio {ry:.4g} x "
            f"{rx:.4g}); pass --ratio"
        )
    return int(ry)


def _run(args: argparse.Namespace) -> int:
    from pifnet_infer.adapt import adapt
    from pifnet_infer.cli.simulate import read_vector
    from pifnet_infer.io.atomic import check_output_path

    start = time.perf_counter()
    base_file = args.base if Path(args.base).is_file() else None
    out = check_output_path(
        args.out, overwrite=args.overwrite, inputs={"--hsi": args.hsi, "--msi": args.msi, "--base": base_file}
    )
    if out.suffix != ".safetensors":
        raise ValueError(f"--out must end in .safetensors, got {str(args.out)!r}")
    hsi, wavelengths = read_image(args.hsi, "HSI")
    msi, _ = read_image(args.msi, "MSI")
    if args.wavelengths is not None:
        wavelengths = read_vector(args.wavelengths, "wavelengths_nm")
    base: Any = None if args.base.lower() == "none" else args.base
    model = adapt(
        hsi,
        msi,
        ratio=_ratio(args, hsi, msi),
        base=base,
        hsi_wavelengths=wavelengths,
        msi_srf=args.srf,
        psf=args.psf,
        prior={"auto": "auto", "yes": True, "no": False}[args.prior],
        steps=args.steps,
        time_budget_s=args.time_budget,
        device=args.device,
        progress=not args.no_progress,
        seed=args.seed,
    )
    model.save(out)
    h = model.history
    print(
        f"wrote {out}: {h.steps} steps ({h.stop_reason}), best held-out L1 {h.best_val_loss:.4g} at step "
        f"{h.best_step}, "
        f"PSF {h.psf}, SRF {h.srf}, base {model.provenance.get('base') or 'none (from scratch)'}, "
        f"prior {'GLP-HS + refinement' if model.prior is not None else 'none'}, "
        f"{time.perf_counter() - start:.1f} s"
    )
    return 0


def _steps(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {text!r}")
    return value


def add_parser(subparsers: Any) -> None:
    """Register ``adapt``."""
    parser = subparsers.add_parser(
        "adapt",
        help="adapt a PIF-Net to one scene (train on its own reduced-resolution pair)",
        description="Train or fine-tune a PIF-Net on the scene's own pair (Wald protocol: both images degraded "
        "once more by the ratio, the LR-HSI as target) with full-scale consistency losses, early stopping on a "
        "held-out part and an optional time budget; write the weights as safetensors with their provenance.",
    )
    parser.add_argument(
        "--hsi", type=Path, required=True, metavar="PATH", help="LR-HSI: .npy (bands,H,W) or raster"
    )
    parser.add_argument(
        "--msi", type=Path, required=True, metavar="PATH", help="HR-MSI: .npy (bands,H,W) or raster"
    )
    parser.add_argument("--out", type=Path, required=True, metavar="MODEL.safetensors", help="output weights")
    parser.add_argument("--ratio", type=int, help="scale factor (default: from the image sizes)")
    parser.add_argument(
        "--srf", metavar="NAME", help="MSI spectral response (e.g. sentinel2a-10m); default: estimated"
    )
    parser.add_argument(
        "--wavelengths", type=Path, metavar="FILE", help="HSI band centres in nm (.npy/.json/.txt)"
    )
    parser.add_argument("--psf", choices=("official", "mtf"), help="PSF between the grids; default: fitted")
    parser.add_argument(
        "--base",
        default="auto",
        metavar="NAME|PATH|none",
        help="starting weight: auto (default), a name, a path, none",
    )
    parser.add_argument(
        "--prior",
        choices=("auto", "yes", "no"),
        default="auto",
        help="learn a correction of GLP-HS + refinement (yes) or the whole image (no); auto: yes unless the "
        "base weight has the scene's band counts",
    )
    parser.add_argument("--steps", type=_steps, default="auto", help="maximum training steps (default auto)")
    parser.add_argument("--time-budget", type=float, metavar="S", help="stop after S seconds of wall time")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=_run)

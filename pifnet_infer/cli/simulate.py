"""``pifnet-infer simulate``: make an (LR-HSI, HR-MSI) test pair from a reference cube (Wald protocol).

Also holds the reference-loading options shared with ``pifnet-infer evaluate``.
Inputs are ``.npy`` cubes or bundled samples; GeoTIFF input is not supported here yet.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pifnet_infer.errors import PifnetError, ShapeMismatchError

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reference:
    """A reference cube (bands, H, W) float32 with its band centres/widths (nm) when known."""

    cube: np.ndarray
    wavelengths_nm: np.ndarray | None
    fwhm_nm: np.ndarray | None
    label: str


def add_reference_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """Options that name a reference cube and its spectral metadata, and the degradation to simulate."""
    src = parser.add_mutually_exclusive_group(required=required)
    src.add_argument("--reference", type=Path, metavar="REF.npy", help="reference HR-HSI cube (.npy)")
    src.add_argument("--sample", metavar="NAME", help="a bundled sample as reference (see load_sample)")
    parser.add_argument(
        "--layout", choices=("chw", "hwc"), default="chw", help="axis order of --reference (default chw)"
    )
    parser.add_argument(
        "--wavelengths",
        type=Path,
        metavar="FILE",
        help="band centres in nm: .npy, .txt/.csv, or .json (a list, or an object with 'wavelengths_nm')",
    )
    parser.add_argument(
        "--fwhm", type=Path, metavar="FILE", help="band widths in nm, same formats ('fwhm_nm')"
    )
    parser.add_argument(
        "--drop-empty-bands",
        action="store_true",
        help="remove bands that are all zero in the reference (e.g. zeroed water-absorption bands)",
    )
    parser.add_argument("--ratio", type=int, help="scale factor between the LR-HSI and HR-MSI grids")
    parser.add_argument(
        "--srf", metavar="NAME", help="spectral response of the simulated MSI (e.g. sentinel2a-10m)"
    )
    parser.add_argument("--psf", choices=("official", "mtf"), default="official", help="spatial degradation")
    parser.add_argument("--snr-db", type=float, help="add Gaussian noise at this SNR (dB) to both images")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")


def load_reference(args: argparse.Namespace) -> Reference:
    """The reference named by ``--reference``/``--sample``, with wavelengths, empty bands dropped if asked."""
    if args.sample is not None:
        from pifnet_infer.data import load_sample

        sample = load_sample(args.sample)
        cube, wavelengths, fwhm, label = (
            sample.cube,
            sample.wavelengths_nm,
            sample.fwhm_nm,
            f"sample:{args.sample}",
        )
    else:
        cube, label = read_cube(args.reference, args.layout), str(args.reference)
        wavelengths, fwhm = None, None
    if args.wavelengths is not None:
        wavelengths = read_vector(args.wavelengths, "wavelengths_nm")
    if args.fwhm is not None:
        fwhm = read_vector(args.fwhm, "fwhm_nm")
    for name, vec in (("wavelengths", wavelengths), ("fwhm", fwhm)):
        if vec is not None and vec.shape != (cube.shape[0],):
            raise ShapeMismatchError(
                f"--{name} has {vec.size} values but the reference has {cube.shape[0]} bands"
            )
    if args.drop_empty_bands:
        keep = np.any(cube != 0, axis=(1, 2))
        _logger.info("dropping %d all-zero bands of %d", int((~keep).sum()), keep.size)
        cube = cube[keep]
        wavelengths = None if wavelengths is None else wavelengths[keep]
        fwhm = None if fwhm is None else fwhm[keep]
    return Reference(cube, wavelengths, fwhm, label)


def simulate_from_args(ref: Reference, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(reference cropped to the ratio, lr_hsi, hr_msi)`` simulated as the options say."""
    from pifnet_infer.simulate import crop_to_ratio, simulate_pair

    if args.ratio is None or args.srf is None:
        raise PifnetError("simulating a pair needs --ratio and --srf (e.g. --ratio 4 --srf sentinel2a-10m)")
    if ref.wavelengths_nm is None:
        raise PifnetError(f"{ref.label} has no band wavelengths; pass --wavelengths FILE to use an SRF")
    lr, msi = simulate_pair(
        ref.cube,
        args.ratio,
        srf=args.srf,
        wavelengths_nm=ref.wavelengths_nm,
        fwhm_nm=ref.fwhm_nm,
        psf=args.psf,
        snr_db=args.snr_db,
        seed=args.seed,
    )
    return crop_to_ratio(ref.cube, args.ratio), lr, msi


def read_cube(path: Path, layout: str = "chw") -> np.ndarray:
    """A (bands, H, W) float32 cube from a ``.npy`` file stored in ``layout`` order.

    Raises:
        PifnetError: not ``.npy``, integers (stored units, not physical values), or NaN / infinite values.
        ShapeMismatchError: not a 3-D cube.
    """
    if path.suffix.lower() != ".npy":
        raise PifnetError(
            f"{str(path)!r}: only .npy cubes are supported by this command for now (GeoTIFF input will come "
            "later); save the array with numpy.save"
        )
    cube = np.load(path)
    if cube.ndim != 3:
        raise ShapeMismatchError(f"{str(path)!r} must hold a 3-D cube, got shape {cube.shape}")
    if cube.dtype.kind in "iub":
        raise PifnetError(
            f"{str(path)!r} holds {cube.dtype} integers, stored units rather than physical values: scores and "
            "simulations assume reflectance in [0, 1]; save it as float divided by its scale (e.g. cube / 10000)"
        )
    finite = np.isfinite(cube)
    if not finite.all():
        raise PifnetError(
            f"{str(path)!r} holds {int(finite.size - finite.sum())} NaN or infinite values; scores and simulations "
            "need a complete cube: crop or fill the missing pixels first"
        )
    if layout == "hwc":
        cube = cube.transpose(2, 0, 1)
    return np.ascontiguousarray(cube, dtype=np.float32)


def read_vector(path: Path, key: str) -> np.ndarray:
    """A float64 1-D vector from .npy, .json (list or object holding ``key``) or text (comma/space/newline separated)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        data: Any = np.load(path)
    elif suffix == ".json":
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            if data.get(key) is None:
                raise PifnetError(f"{str(path)!r} has no {key!r} entry")
            data = data[key]
    else:
        data = path.read_text().replace(",", " ").split()
    return np.asarray(data, dtype=np.float64).ravel()


def _run(args: argparse.Namespace) -> int:
    from pifnet_infer.io.atomic import check_not_input

    inputs = {"--reference": args.reference, "--wavelengths": args.wavelengths, "--fwhm": args.fwhm}
    for out in (args.out_hsi, args.out_msi, args.out_reference):
        if out is not None:
            check_not_input(out, inputs)
    ref = load_reference(args)
    cropped, lr, msi = simulate_from_args(ref, args)
    np.save(args.out_hsi, lr)
    np.save(args.out_msi, msi)
    if args.out_reference is not None:
        np.save(args.out_reference, cropped)
    print(
        f"{ref.label}: reference {cropped.shape} -> LR-HSI {lr.shape} ({args.out_hsi}), "
        f"HR-MSI {msi.shape} ({args.out_msi}); ratio {args.ratio}, srf {args.srf}, psf {args.psf}"
        + (f", SNR {args.snr_db} dB" if args.snr_db is not None else "")
    )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``pifnet-infer simulate``."""
    parser = subparsers.add_parser(
        "simulate",
        help="make an LR-HSI / HR-MSI test pair from a reference cube (Wald protocol)",
        description="Blur and decimate a reference HR-HSI into an LR-HSI and project it through a sensor's "
        "spectral responses into an HR-MSI. Sizes are cropped to multiples of --ratio (top-left kept).",
    )
    add_reference_arguments(parser, required=True)
    parser.add_argument(
        "--out-hsi", type=Path, required=True, metavar="A.npy", help="output LR-HSI (.npy, chw)"
    )
    parser.add_argument(
        "--out-msi", type=Path, required=True, metavar="B.npy", help="output HR-MSI (.npy, chw)"
    )
    parser.add_argument("--out-reference", type=Path, metavar="R.npy", help="also save the cropped reference")
    parser.set_defaults(func=_run)

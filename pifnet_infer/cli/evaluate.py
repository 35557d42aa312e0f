"""``pifnet-infer evaluate``: score fusion methods, with or without a reference.

Three modes:

- ``--reference``/``--sample`` alone: simulate the pair (``--ratio --srf [--psf --snr-db]``), fuse it with
  each ``--method`` and compare with the (cropped) reference;
- ``--reference`` with ``--hsi --msi``: fuse that pair and compare with the reference;
- ``--hsi --msi`` alone (real data): no-reference scores, QNR (D_lambda, D_s), plus the spectral and
  spatial consistency of :mod:`pifnet_infer.diagnostics` when ``--srf`` and ``--wavelengths`` are given.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pifnet_infer.cli.simulate import (
    add_reference_arguments,
    load_reference,
    read_cube,
    read_vector,
    simulate_from_args,
)
from pifnet_infer.errors import PifnetError, ShapeMismatchError
from pifnet_infer.io.atomic import check_output_path

_logger = logging.getLogger(__name__)

CLASSICAL = ("bicubic", "glp", "gsa")
#: a reference peaking above this is not reflectance (the official protocol's scores assume [0, 1])
REFLECTANCE_PEAK = 2.0


def fuse_with(
    method: str,
    lr: np.ndarray,
    msi: np.ndarray,
    ratio: int,
    psf: str,
    wavelengths_nm: np.ndarray | None = None,
    fwhm_nm: np.ndarray | None = None,
) -> np.ndarray:
    """Run one method: ``bicubic``, ``glp``, ``gsa`` or ``pifnet:NAME`` (via :func:`pifnet_infer.api.fuse`).

    ``wavelengths_nm``/``fwhm_nm``: the LR-HSI's band grid, passed to ``fuse`` as its ``hsi_wavelengths_nm``
    / ``hsi_fwhm_nm`` (so a weight on another grid is resampled, as ``fuse`` does).
    """
    from pifnet_infer import baselines

    if method.startswith("pifnet:"):
        try:
            from pifnet_infer.api import fuse
        except ImportError as err:
            raise PifnetError(
                f"--method {method} needs pifnet_infer.api.fuse, which could not be imported ({err}); "
                f"use one of {', '.join(CLASSICAL)}"
            ) from err
        fused = fuse(
            lr, msi, model=method.split(":", 1)[1], hsi_wavelengths_nm=None if wavelengths_nm is None else
            list(wavelengths_nm), hsi_fwhm_nm=None if fwhm_nm is None else list(fwhm_nm),
        )  # fmt: skip
        return np.asarray(fused, dtype=np.float32)
    runners: dict[str, Callable[[], np.ndarray]] = {
        "bicubic": lambda: baselines.bicubic(lr, ratio),
        "glp": lambda: baselines.glp_hs(lr, msi, ratio, psf=psf),
        "gsa": lambda: baselines.gsa(lr, msi, ratio, psf=psf),
    }
    if method not in runners:
        raise PifnetError(f"unknown method {method!r}; use {', '.join(CLASSICAL)} or pifnet:NAME")
    return runners[method]()


def _methods(values: list[str] | None) -> list[str]:
    names = [m.strip() for v in (values or [",".join(CLASSICAL)]) for m in v.split(",") if m.strip()]
    return list(dict.fromkeys(names))


def _ratio(args: argparse.Namespace, lr: np.ndarray, msi: np.ndarray) -> int:
    if (
        msi.shape[1] % lr.shape[1]
        or msi.shape[2] % lr.shape[2]
        or msi.shape[1] // lr.shape[1] != msi.shape[2] // lr.shape[2]
    ):
        raise ShapeMismatchError(
            f"HR-MSI {msi.shape} is not an integer multiple of LR-HSI {lr.shape} in both axes"
        )
    ratio = msi.shape[1] // lr.shape[1]
    if args.ratio is not None and args.ratio != ratio:
        raise ShapeMismatchError(
            f"--ratio {args.ratio} but the images' sizes give {ratio} ({lr.shape} vs {msi.shape})"
        )
    return ratio


def _full_reference(args: argparse.Namespace) -> tuple[dict[str, dict[str, float]], dict[str, object]]:
    from pifnet_infer.metrics import evaluate

    ref = load_reference(args)
    if args.hsi is not None:
        lr, msi = read_cube(args.hsi), read_cube(args.msi)
        ratio = _ratio(args, lr, msi)
        cube = ref.cube
        if cube.shape != (lr.shape[0], *msi.shape[1:]):
            raise ShapeMismatchError(
                f"reference {cube.shape} does not match LR-HSI {lr.shape} / HR-MSI {msi.shape}"
            )
    else:
        cube, lr, msi = simulate_from_args(ref, args)
        ratio = args.ratio
    empty = int(np.sum(~np.any(cube != 0, axis=(1, 2))))
    if empty:
        _logger.warning(
            "%d reference bands are all zero, which makes ERGAS undefined; pass --drop-empty-bands", empty
        )
    peak = float(cube.max())
    if args.protocol == "official" and peak > REFLECTANCE_PEAK:
        _logger.warning(
            "the reference reaches %.4g: the official protocol clamps estimates to [0, 1] and scores SSIM on "
            "[0, 1], so its scores are meaningless unless the cube is reflectance; divide it by its scale",
            peak,
        )
    results = {
        m: evaluate(
            cube, fuse_with(m, lr, msi, ratio, args.psf, ref.wavelengths_nm, ref.fwhm_nm), ratio=ratio,
            protocol=args.protocol,
        )
        for m in args.methods
    }  # fmt: skip
    info = {
        "mode": "full-reference",
        "reference": ref.label,
        "shape": list(cube.shape),
        "ratio": ratio,
        "protocol": args.protocol,
        "psf": args.psf,
        "srf": args.srf,
        "snr_db": args.snr_db,
    }
    return results, info


def _no_reference(args: argparse.Namespace) -> tuple[dict[str, dict[str, float]], dict[str, object]]:
    from pifnet_infer.diagnostics import consistency
    from pifnet_infer.metrics import qnr
    from pifnet_infer.srf import srf_matrix

    lr, msi = read_cube(args.hsi), read_cube(args.msi)
    ratio = _ratio(args, lr, msi)
    wavelengths = None if args.wavelengths is None else read_vector(args.wavelengths, "wavelengths_nm")
    fwhm = None if args.fwhm is None else read_vector(args.fwhm, "fwhm_nm")
    matrix = None
    if args.srf is not None:
        if wavelengths is None:
            raise PifnetError(
                "--srf without a reference needs --wavelengths FILE (the LR-HSI's band centres)"
            )
        matrix = srf_matrix(args.srf, wavelengths, fwhm)
    results = {}
    for method in args.methods:
        fused = fuse_with(method, lr, msi, ratio, args.psf, wavelengths, fwhm)
        row = qnr(fused, lr, msi, ratio=ratio, psf=args.psf)
        if matrix is not None:
            row.update(consistency(fused, lr, msi, ratio=ratio, srf_matrix=matrix, psf=args.psf).scores())
        results[method] = row
    info = {
        "mode": "no-reference",
        "hsi": str(args.hsi),
        "msi": str(args.msi),
        "ratio": ratio,
        "psf": args.psf,
        "srf": args.srf,
    }
    return results, info


def format_table(results: dict[str, dict[str, float]]) -> str:
    """Methods as rows, metrics as columns."""
    columns = list(dict.fromkeys(k for row in results.values() for k in row))
    width = max(len("method"), *(len(m) for m in results))
    lines = [f"{'method':<{width}}  " + "  ".join(f"{c:>10}" for c in columns)]
    for method, row in results.items():
        lines.append(f"{method:<{width}}  " + "  ".join(f"{row.get(c, math.nan):>10.4f}" for c in columns))
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    args.methods = _methods(args.method)
    unknown = [m for m in args.methods if m not in CLASSICAL and not m.startswith("pifnet:")]
    if unknown:
        raise PifnetError(f"unknown --method {unknown[0]!r}; use {', '.join(CLASSICAL)} or pifnet:NAME")
    if (args.hsi is None) != (args.msi is None):
        raise PifnetError("--hsi and --msi go together")
    has_reference = args.reference is not None or args.sample is not None
    if not has_reference and args.hsi is None:
        raise PifnetError(
            "pass --reference/--sample (full reference), --hsi and --msi (no reference), or both"
        )
    if args.json is not None:  # before minutes of fusion, not after
        check_output_path(
            args.json,
            overwrite=True,
            inputs={"--reference": args.reference, "--hsi": args.hsi, "--msi": args.msi},
        )
    results, info = _full_reference(args) if has_reference else _no_reference(args)
    print(", ".join(f"{k}={v}" for k, v in info.items() if v is not None))
    print(format_table(results))
    if args.json is not None:
        clean = {
            m: {k: (v if math.isfinite(v) else None) for k, v in row.items()} for m, row in results.items()
        }
        args.json.write_text(json.dumps({**info, "results": clean}, indent=2) + "\n")
    return 0


def plain_text(doc: str) -> str:
    """A docstring for ``--help``: reST roles and inline literals reduced to their text."""
    return re.sub(r":\w+:`~?([^`]+)`", r"\1", doc).replace("``", "")


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``pifnet-infer evaluate``."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score fusion methods (bicubic, glp, gsa, pifnet:NAME) with or without a reference",
        description=plain_text(__doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_reference_arguments(parser, required=False)
    parser.add_argument("--hsi", type=Path, metavar="A.npy", help="LR-HSI to fuse (.npy, chw)")
    parser.add_argument("--msi", type=Path, metavar="B.npy", help="HR-MSI to fuse (.npy, chw)")
    parser.add_argument(
        "--method",
        action="append",
        metavar="M",
        help="bicubic, glp, gsa or pifnet:NAME; repeat or comma-separate (default: bicubic,glp,gsa)",
    )
    parser.add_argument(
        "--protocol", choices=("official", "standard"), default="official", help="metric conventions"
    )
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="also write the results as JSON")
    parser.set_defaults(func=_run)

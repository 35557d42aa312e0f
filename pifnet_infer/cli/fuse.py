"""``pifnet-infer fuse --hsi A.tif --msi B.tif --out C.tif [options]``: :func:`~pifnet_infer.io.geotiff.fuse_geotiff`."""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any


def auto_or_int(text: str) -> int | str:
    """argparse type: ``"auto"`` or a positive integer."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a non-negative integer, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def number_or_pair(text: str) -> float | tuple[float, float]:
    """argparse type: ``"1e-4"`` (both inputs) or ``"1e-4,1"`` (HSI, MSI)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise argparse.ArgumentTypeError(f"expected a number or 'HSI,MSI' numbers, got {text!r}")


def band_list(text: str) -> tuple[int, ...]:
    """argparse type: 1-based band list such as ``"1,2,5-8"``."""
    from pifnet_infer.io.bands import parse_band_list

    try:
        return parse_band_list(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_parser(subparsers: Any) -> None:
    """Register ``fuse``."""
    parser = subparsers.add_parser(
        "fuse",
        help="fuse an LR-HSI raster with an HR-MSI raster into a GeoTIFF",
        description="Fuse a low-resolution hyperspectral raster with a high-resolution multispectral raster of "
        "the same place into a georeferenced high-resolution hyperspectral GeoTIFF, window by window "
        "(memory bounded by the tiles, not the scene). The output appears only when the run succeeds.",
    )
    io = parser.add_argument_group("files")
    io.add_argument(
        "--hsi", required=True, metavar="PATH", help="LR hyperspectral raster (GeoTIFF, ENVI, VRT, ...)"
    )
    io.add_argument(
        "--msi", required=True, metavar="PATH", help="HR multispectral raster on the subdivided HSI grid"
    )
    io.add_argument("--out", required=True, metavar="PATH", help="output GeoTIFF")
    io.add_argument("--overwrite", action="store_true", help="replace an existing output")
    io.add_argument("--cog", action="store_true", help="write a Cloud-Optimized GeoTIFF with overviews")
    io.add_argument(
        "--out-dtype", metavar="TYPE", help="output data type: float32 (default), float64, int16, uint16, ..."
    )
    io.add_argument(
        "--out-scale", type=float, metavar="S",
        help="store value / S (scale tag S), e.g. 1e-4 to write reflectance as int16 (default: the HSI's units)",
    )  # fmt: skip
    model = parser.add_argument_group("model and inputs")
    model.add_argument(
        "--weights", default="auto", metavar="NAME|PATH",
        help="manifest weight name or .safetensors file (default: auto, the one weight that fits the inputs)",
    )  # fmt: skip
    model.add_argument(
        "--hsi-bands", type=band_list, metavar="LIST", help="HSI bands to use, 1-based: 1,2,5-8"
    )
    model.add_argument("--msi-bands", type=band_list, metavar="LIST", help="MSI bands to use, 1-based")
    model.add_argument(
        "--ratio", type=int, metavar="N", help="LR -> HR ratio (default: from the pixel sizes)"
    )
    model.add_argument(
        "--align", choices=("error", "resample"), default="error",
        help="misaligned grids: stop with an error (default) or warp the MSI onto the HSI grid",
    )  # fmt: skip
    model.add_argument(
        "--scale", type=number_or_pair, metavar="S[,S]",
        help="stored -> physical value scale, for both inputs or HSI,MSI (default: the files' metadata)",
    )  # fmt: skip
    model.add_argument("--offset", type=number_or_pair, metavar="O[,O]", help="value offset, like --scale")
    model.add_argument(
        "--nodata", type=float, help="stored value of missing pixels (default: the files' nodata)"
    )
    run = parser.add_argument_group("execution")
    run.add_argument(
        "--tile-size", type=auto_or_int, default="auto", metavar="N", help="HR tile side (default: auto)"
    )
    run.add_argument(
        "--overlap", type=auto_or_int, default="auto", metavar="N", help="HR tile overlap (default: auto)"
    )
    run.add_argument(
        "--batch-size", type=auto_or_int, default="auto", metavar="N", help="tiles per forward pass"
    )
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default: auto)")
    run.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16", "float16"),
        help="compute precision",
    )
    run.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="CPU threads for torch, at most the physical cores this process may use (default: that many)",
    )
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    scene = parser.add_argument_group("scene adaptation (see the README: when to use what)")
    scene.add_argument(
        "--refine", action="store_true",
        help="make every fused tile consistent with its LR-HSI and HR-MSI (pifnet_infer.adapt.refine)",
    )  # fmt: skip
    scene.add_argument(
        "--adapt", action="store_true",
        help="first fine-tune the model on this scene's own reduced-resolution pair (reads both rasters whole; "
        "--weights is the starting point, 'none' trains from scratch), then fuse with it",
    )  # fmt: skip
    scene.add_argument(
        "--adapt-seconds", type=float, default=60.0, metavar="S", help="time budget of --adapt (default: 60)"
    )
    parser.set_defaults(func=run_fuse)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM (batch-system timeouts, ``kill``) into ``KeyboardInterrupt`` so the run cleans up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_fuse(args: argparse.Namespace) -> int:
    """Run :func:`fuse_geotiff` with the parsed arguments; print the output path.

    SIGTERM interrupts the run like Ctrl-C: the partial output is removed and the exit code is 130.
    """
    from pifnet_infer._utils.threads import cpu_threads
    from pifnet_infer.io.geotiff import fuse_geotiff

    start = time.perf_counter()
    with sigterm_as_interrupt(), cpu_threads(args.threads):
        model = _adapted(args) if args.adapt else args.weights
        out = fuse_geotiff(
            args.hsi, args.msi, args.out, model, hsi_bands=args.hsi_bands, msi_bands=args.msi_bands,
            ratio=args.ratio, align=args.align, tile_size=args.tile_size, overlap=args.overlap,
            batch_size=args.batch_size, device=args.device, dtype=args.dtype, scale=args.scale,
            offset=args.offset, nodata=args.nodata, out_dtype=args.out_dtype, out_scale=args.out_scale, cog=args.cog,
            overwrite=args.overwrite, refine=args.refine, progress=not args.no_progress,
        )  # fmt: skip
    print(f"wrote {out} in {time.perf_counter() - start:.1f} s")
    return 0


def _adapted(args: argparse.Namespace) -> Any:
    """The model of ``--adapt``: :func:`pifnet_infer.adapt.adapt` on the whole raster pair, within the budget."""
    from pifnet_infer.adapt import adapt
    from pifnet_infer.io.atomic import check_output_path
    from pifnet_infer.io.rasters import read_scene_pair

    # refuse before minutes of training
    check_output_path(args.out, overwrite=args.overwrite, inputs={"--hsi": args.hsi, "--msi": args.msi})
    pair = read_scene_pair(
        args.hsi,
        args.msi,
        hsi_bands=args.hsi_bands,
        msi_bands=args.msi_bands,
        ratio=args.ratio,
        align=args.align,
    )
    base = None if str(args.weights).lower() == "none" else args.weights
    model = adapt(
        pair.lr_hsi, pair.hr_msi, ratio=pair.ratio, base=base, hsi_wavelengths=pair.hsi_wavelengths_nm,
        time_budget_s=args.adapt_seconds, device=args.device, progress=not args.no_progress,
    )  # fmt: skip
    history = model.history
    print(f"adapted in {history.seconds:.0f} s: {history.steps} steps ({history.stop_reason}), base {base}")
    return model

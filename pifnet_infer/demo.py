"""The end-to-end demo behind ``pifnet-infer demo``: :func:`run_demo`.

One call runs the whole georeferenced pipeline on a bundled sample, offline, in seconds on a CPU:

1. cut the held-out **test strip** of a bundled scene (the part the bundled weight never saw in
   training: the last 30 % along the scene's longer axis, see its model card) and keep the bands the
   weight's band grid covers; this is the reference HR-HSI;
2. simulate the Wald pair from it (:func:`pifnet_infer.simulate.simulate_pair`: MTF-matched PSF,
   decimation by the ratio, the weight's MSI spectral response);
3. write the LR-HSI and the HR-MSI as GeoTIFFs on a **made-up** grid (UTM zone 17N, an arbitrary
   origin, 4 m and 1 m pixels; the samples' true locations are not known) with band wavelengths,
   and fuse them with :func:`pifnet_infer.fuse_geotiff` into a third GeoTIFF;
4. score the fused result, and the bicubic and GLP-HS baselines, against the reference
   (:func:`pifnet_infer.metrics.evaluate`, official protocol) and draw a comparison figure
   (needs matplotlib).

The bundled weight is experimental and scores below GLP-HS on held-out data; the demo prints the
baselines next to it so that this is visible.

.. versionadded:: 0.1
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from pifnet_infer._utils.device import resolve_device
from pifnet_infer._utils.optional import require, try_import
from pifnet_infer.data import load_sample
from pifnet_infer.errors import PifnetError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_logger = logging.getLogger(__name__)

#: the bundled weight the demo fuses with
DEFAULT_WEIGHT = "pifnet-vnir-rgb-x4"
DEFAULT_SAMPLE = "aviris_gatorsense_vi"
#: held-out test strip (rows, cols) of each bundled sample, as ``training.data.split_slices`` cuts it
#: for ratio 4 (last 30 % along the longer axis; MUUFL's narrowed to fully valid rows);
#: ``tests/test_demo.py`` checks these against the training code
TEST_STRIPS: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "aviris_gatorsense_vi": ((64, 88), (0, 88)),
    "muufl_gulfport_sub": ((0, 28), (64, 88)),
}
#: made-up georeference of the demo rasters (the samples' real locations are not known)
DEMO_CRS = "EPSG:32617"
DEMO_ORIGIN = (500_000.0, 3_280_000.0)
DEMO_HR_PIXEL_M = 1.0
DEMO_NOTE = (
    "made-up georeference for the pifnet-infer demo: EPSG:32617 with an arbitrary origin; "
    "the sample's real location is not known"
)
#: band centres (nm) shown as red, green, blue in the false-colour panels (colour infrared)
FALSE_COLOUR_NM = (860.0, 650.0, 550.0)
#: metrics printed by the demo
SCORES = ("PSNR", "SSIM", "SAM", "ERGAS")
FILES = {"lr_hsi": "lr_hsi.tif", "hr_msi": "hr_msi.tif", "fused": "fused.tif"}
FIGURE = "demo.png"
METRICS_JSON = "metrics.json"


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` made.

    Attributes:
        sample: bundled sample name.
        weight: the weight fused with.
        rows: (first, stop) rows of the test strip in the sample (HR pixels).
        cols: (first, stop) columns of the test strip.
        wavelengths_nm: centres of the HSI bands used, sorted (C,).
        ratio: LR -> HR factor.
        paths: ``{"lr_hsi", "hr_msi", "fused", "metrics"}`` -> written file.
        figure: the PNG comparison figure, or None when it was not drawn.
        scores: ``{method: {"PSNR", "SSIM", "SAM", "ERGAS", "seconds"}}`` for ``bicubic``, ``GLP-HS``
            and ``PIF-Net`` against the reference.
        images: the arrays (float32, (bands, H, W)): ``reference``, ``lr_hsi``, ``hr_msi``, ``fused``
            (read back from the fused GeoTIFF), ``bicubic``, ``glp_hs``.
    """

    sample: str
    weight: str
    rows: tuple[int, int]
    cols: tuple[int, int]
    wavelengths_nm: np.ndarray
    ratio: int
    paths: dict[str, Path]
    figure: Path | None
    scores: dict[str, dict[str, float]]
    images: dict[str, np.ndarray] = field(repr=False)


def run_demo(
    out_dir: str | Path = "pifnet-demo",
    *,
    sample: str = DEFAULT_SAMPLE,
    weight: str = DEFAULT_WEIGHT,
    device: str | torch.device = "auto",
    figure: bool | Literal["auto"] = "auto",
    progress: bool = True,
) -> DemoResult:
    """Fuse the held-out test strip of a bundled sample through the GeoTIFF pipeline and score it.

    Files written to ``out_dir`` (created; earlier demo files there are replaced): ``lr_hsi.tif``,
    ``hr_msi.tif``, ``fused.tif`` (float32 reflectance, made-up UTM 17N grid, band wavelengths in the
    metadata), ``metrics.json`` and, with matplotlib, ``demo.png``.

    Args:
        out_dir: output folder.
        sample: a bundled sample with a test strip in :data:`TEST_STRIPS`.
        weight: manifest name of the weight (its band grid must cover part of the sample's bands).
        device: compute device for the fusion (``"auto"``: CUDA when available, else CPU).
        figure: draw ``demo.png``: True (raises without matplotlib), False, or ``"auto"`` (when
            matplotlib imports; a warning is logged otherwise).
        progress: show a progress bar over tiles.

    Returns:
        A :class:`DemoResult`.

    Raises:
        KeyError: ``sample`` has no test strip or ``weight`` is not in the manifest.
        MissingDependencyError: ``figure=True`` without matplotlib.
        PifnetError: the sample has no band inside the weight's grid.

    Example:
        >>> result = run_demo("pifnet-demo")  # doctest: +SKIP
        >>> print(result.paths["fused"], result.figure)  # doctest: +SKIP
        pifnet-demo/fused.tif pifnet-demo/demo.png

    .. versionadded:: 0.1
    """
    from pifnet_infer.baselines import bicubic, glp_hs
    from pifnet_infer.io.geotiff import fuse_geotiff
    from pifnet_infer.metrics import evaluate
    from pifnet_infer.simulate import simulate_pair
    from pifnet_infer.weights import get_weight

    entry = get_weight(weight)
    if sample not in TEST_STRIPS:
        raise KeyError(f"no test strip for sample {sample!r}; use one of {', '.join(TEST_STRIPS)}")
    draw = _want_figure(figure)
    resolve_device(device)  # a bad device fails before any file is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ratio = entry.config.ratio
    reference, wavelengths = held_out_strip(sample, weight)
    lr, msi = simulate_pair(reference, ratio, srf=entry.msi_srf, wavelengths_nm=wavelengths, psf="mtf")

    paths = {key: out / name for key, name in FILES.items()}
    _write_raster(paths["lr_hsi"], lr, DEMO_HR_PIXEL_M * ratio, wavelengths=wavelengths)
    _write_raster(paths["hr_msi"], msi, DEMO_HR_PIXEL_M, descriptions=entry.msi_bands_description)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    fuse_geotiff(
        paths["lr_hsi"],
        paths["hr_msi"],
        paths["fused"],
        weight,
        device=device,
        overwrite=True,
        progress=progress,
    )
    seconds["PIF-Net"] = time.perf_counter() - start
    fused = _read_raster(paths["fused"])
    start = time.perf_counter()
    up = bicubic(lr, ratio)
    seconds["bicubic"] = time.perf_counter() - start
    start = time.perf_counter()
    glp = glp_hs(lr, msi, ratio, psf="mtf")
    seconds["GLP-HS"] = time.perf_counter() - start

    estimates = {"bicubic": up, "GLP-HS": glp, "PIF-Net": fused}
    scores: dict[str, dict[str, float]] = {}
    for method, estimate in estimates.items():
        table = evaluate(reference, estimate, ratio=ratio, protocol="official")
        scores[method] = {k: float(table[k]) for k in SCORES} | {"seconds": seconds[method]}
    (rows, cols) = TEST_STRIPS[sample]
    paths["metrics"] = out / METRICS_JSON
    paths["metrics"].write_text(
        json.dumps(
            {"sample": sample, "rows": rows, "cols": cols, "weight": weight, "ratio": ratio,
             "protocol": "official", "scores": scores},
            indent=2,
        ) + "\n"
    )  # fmt: skip
    images = {
        "reference": reference,
        "lr_hsi": lr,
        "hr_msi": msi,
        "fused": fused,
        "bicubic": up,
        "glp_hs": glp,
    }
    result = DemoResult(sample, weight, rows, cols, wavelengths, ratio, paths, None, scores, images)
    if draw:
        figure_path = out / FIGURE
        save_figure(result, figure_path)
        result = DemoResult(
            sample, weight, rows, cols, wavelengths, ratio, paths, figure_path, scores, images
        )
    return result


def _want_figure(figure: bool | Literal["auto"]) -> bool:
    if figure == "auto":
        if try_import("matplotlib") is None:
            _logger.warning(
                'no demo.png: matplotlib is not installed (pip install "pifnet-infer[notebooks]")'
            )
            return False
        return True
    if figure:
        require("matplotlib", extra="notebooks")
    return bool(figure)


def held_out_strip(
    sample: str = DEFAULT_SAMPLE, weight: str = DEFAULT_WEIGHT
) -> tuple[np.ndarray, np.ndarray]:
    """The held-out test strip of a bundled sample, on the sample's bands that the weight's grid covers.

    Bands are sorted by wavelength; bands the provider zeroed (bad bands) are dropped and negative
    values clipped to 0, as in training.

    Args:
        sample: a bundled sample with an entry in :data:`TEST_STRIPS`.
        weight: manifest name of the weight whose band grid selects the bands.

    Returns:
        ``(reference, wavelengths_nm)``: float32 (C, H, W) reflectance and float64 (C,) band centres.

    Raises:
        KeyError: no test strip for ``sample``, or ``weight`` is not in the manifest.
        PifnetError: the sample has no band inside the weight's grid.

    .. versionadded:: 0.1
    """
    from pifnet_infer.spectral import covered_ranges
    from pifnet_infer.weights import get_weight

    if sample not in TEST_STRIPS:
        raise KeyError(f"no test strip for sample {sample!r}; use one of {', '.join(TEST_STRIPS)}")
    entry = get_weight(weight)

    scene = load_sample(sample)
    if scene.wavelengths_nm is None or entry.hsi_wavelengths_nm is None:
        raise PifnetError(
            f"sample {sample!r} and weight {entry.name!r} must both state their band wavelengths"
        )
    wl = np.asarray(scene.wavelengths_nm)
    ranges = covered_ranges(entry.hsi_wavelengths_nm, entry.hsi_fwhm_nm)
    inside = np.zeros(wl.shape, dtype=bool)
    for lo, hi in ranges:
        inside |= (wl >= lo) & (wl <= hi)
    inside &= scene.cube.reshape(wl.size, -1).max(axis=1) > 0  # drop bad bands the provider zeroed
    if not inside.any():
        raise PifnetError(f"sample {sample!r} has no band inside the band grid of {entry.name!r} ({ranges})")
    keep = np.flatnonzero(inside)[np.argsort(wl[inside], kind="stable")]
    (r0, r1), (c0, c1) = TEST_STRIPS[sample]
    cube = np.maximum(scene.cube[keep, r0:r1, c0:c1], 0.0)
    return np.ascontiguousarray(cube, dtype=np.float32), wl[keep]


def _write_raster(
    path: Path,
    cube: np.ndarray,
    pixel_m: float,
    *,
    wavelengths: np.ndarray | None = None,
    descriptions: tuple[str, ...] | None = None,
) -> None:
    """A float32 GeoTIFF of ``cube`` (bands, H, W) on the made-up demo grid."""
    import rasterio
    from rasterio.transform import Affine

    from pifnet_infer.io.bands import band_metadata_tags

    profile = {
        "driver": "GTiff", "width": cube.shape[2], "height": cube.shape[1], "count": cube.shape[0],
        "dtype": "float32", "crs": DEMO_CRS, "transform": Affine(pixel_m, 0.0, DEMO_ORIGIN[0], 0.0, -pixel_m, DEMO_ORIGIN[1]),
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(cube.astype(np.float32))
        dst.update_tags(PIFNET_DEMO_GEOREFERENCE=DEMO_NOTE)
        for band in range(cube.shape[0]):
            if wavelengths is not None:
                dst.set_band_description(band + 1, f"{wavelengths[band]:.6g} nm")
                for namespace, items in band_metadata_tags(float(wavelengths[band]), None).items():
                    dst.update_tags(band + 1, ns=namespace or None, **items)
            elif descriptions is not None:
                dst.set_band_description(band + 1, descriptions[band])


def _read_raster(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return np.asarray(src.read(), dtype=np.float32)


# ----------------------------------------------------------------------------- figure
def false_colour(
    cube: np.ndarray, wavelengths_nm: np.ndarray, limits: np.ndarray | None = None
) -> np.ndarray:
    """An (H, W, 3) image in [0, 1] of the bands nearest :data:`FALSE_COLOUR_NM` (colour infrared).

    Args:
        cube: (bands, H, W) reflectance.
        wavelengths_nm: (bands,) centres.
        limits: (3, 2) low/high per channel; None: the 2nd and 98th percentiles of ``cube``.
    """
    picks = [int(np.argmin(np.abs(np.asarray(wavelengths_nm) - nm))) for nm in FALSE_COLOUR_NM]
    return stretch(cube[picks], limits)


def stretch(rgb: np.ndarray, limits: np.ndarray | None = None) -> np.ndarray:
    """(3, H, W) -> (H, W, 3) in [0, 1], each channel stretched linearly between ``limits`` (see above)."""
    if limits is None:
        limits = percentile_limits(rgb)
    low, high = limits[:, 0, None, None], limits[:, 1, None, None]
    return np.clip((rgb - low) / np.maximum(high - low, 1e-12), 0.0, 1.0).transpose(1, 2, 0)


def percentile_limits(rgb: np.ndarray, low: float = 2.0, high: float = 98.0) -> np.ndarray:
    """(3, 2) per-channel percentiles of a (3, H, W) image."""
    return np.stack([np.percentile(rgb.reshape(3, -1), q, axis=1) for q in (low, high)], axis=1)


def error_map(reference: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """Per-pixel RMSE over the bands, (H, W), in the cubes' units."""
    return np.sqrt(np.mean((np.clip(estimate, 0.0, 1.0) - reference) ** 2, axis=0))


def save_figure(result: DemoResult, path: str | Path) -> Path:
    """Draw the demo's comparison figure: inputs, reference, PIF-Net and GLP-HS results and errors.

    Uses matplotlib's object-oriented API (no pyplot, no display needed).

    Raises:
        MissingDependencyError: matplotlib is not installed.
    """
    require("matplotlib", extra="notebooks")
    from matplotlib.figure import Figure

    im, wl, r = result.images, result.wavelengths_nm, result.ratio
    picks = [int(np.argmin(np.abs(wl - nm))) for nm in FALSE_COLOUR_NM]
    limits = percentile_limits(im["reference"][picks])
    lr_nearest = np.repeat(np.repeat(im["lr_hsi"], r, axis=1), r, axis=2)
    errors = {
        name: error_map(im["reference"], im[key])
        for name, key in (("PIF-Net", "fused"), ("GLP-HS", "glp_hs"))
    }
    vmax = float(max(np.percentile(e, 99) for e in errors.values()))
    s = result.scores
    label = "  |  ".join(f"{m} {s[m]['PSNR']:.2f} dB, SAM {s[m]['SAM']:.2f} deg" for m in s)
    panels: list[tuple[str, np.ndarray, bool]] = [
        (f"LR-HSI ({im['lr_hsi'].shape[0]} bands, x{r} coarser), false colour", false_colour(lr_nearest, wl, limits), False),
        ("HR-MSI (RGB), what adds the spatial detail", stretch(im["hr_msi"]), False),
        ("Reference HR-HSI (held-out test strip), false colour", false_colour(im["reference"], wl, limits), False),
        (f"PIF-Net fused ({result.weight}), false colour", false_colour(im["fused"], wl, limits), False),
        ("PIF-Net error: per-pixel RMSE", errors["PIF-Net"], True),
        ("GLP-HS (classical) error: per-pixel RMSE", errors["GLP-HS"], True),
    ]  # fmt: skip
    height, width = im["reference"].shape[1:]
    panel_w = 5.0
    fig = Figure(
        figsize=(2 * panel_w + 0.8, 3 * (panel_w * height / width + 0.3) + 0.8), layout="constrained"
    )
    axes = fig.subplots(3, 2)
    last = None
    for ax, (title, image, is_error) in zip(axes.ravel(), panels, strict=True):
        last = _panel(ax, title, image, vmax if is_error else None) or last
    if last is not None:
        fig.colorbar(last, ax=axes[2, :].tolist(), label="RMSE (reflectance)", shrink=0.9)
    (r0, r1), (c0, c1) = result.rows, result.cols
    fig.suptitle(
        f"pifnet-infer demo: {result.sample}, test strip rows {r0}-{r1 - 1}, cols {c0}-{c1 - 1} (never seen in "
        f"training); false colour = {'/'.join(f'{nm:.0f}' for nm in FALSE_COLOUR_NM)} nm as R/G/B\n{label}\n"
        "The bundled PIF-Net weight is experimental: below GLP-HS on held-out data.",
        fontsize=9,
    )
    out = Path(path)
    fig.savefig(out, dpi=100)
    return out


def _panel(ax: Axes, title: str, image: np.ndarray, vmax: float | None) -> Any:
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if vmax is None:
        ax.imshow(image, interpolation="nearest")
        return None
    return ax.imshow(image, cmap="magma", vmin=0.0, vmax=vmax, interpolation="nearest")

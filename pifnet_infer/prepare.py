"""The prepare step every entry point shares: pick the model, the device and the tiling, once.

:func:`~pifnet_infer.fuse`, :func:`~pifnet_infer.fuse_geotiff` and the Dask path all call these
before the first tile, so the same arguments are accepted, resolved and refused the same way
everywhere (see ``DESIGN.md``: validate shapes, bands and ratio -> resolve weights -> tile).

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from pifnet_infer._utils.device import resolve_device
from pifnet_infer.errors import ShapeMismatchError, ValueRangeError
from pifnet_infer.tiling.protocols import RowPostprocess

if TYPE_CHECKING:
    from pifnet_infer.weights import WeightEntry

_logger = logging.getLogger(__name__)

ModelArg = nn.Module | str | os.PathLike[str]
#: HR tile side the official models were trained on (spec section 10.2); the "auto" tile size
DEFAULT_TILE = 128
#: inputs may lie this many widths of a weight's ``input_range`` beyond it before they are refused
INPUT_RANGE_SLACK = 2.0
#: model outputs lying this many widths of the LR-HSI's value range beyond it are garbage, not a fusion
OUTPUT_RANGE_SLACK = 10.0
#: an integer output must resolve the data's range in at least this many steps (fewer for narrow dtypes)
INTEGER_OUTPUT_STEPS = 1000


def describe_entries(entries: Sequence[WeightEntry]) -> str:
    """``name (hsi_bands=.., msi_bands=.., ratio=..), ...`` or ``none``."""
    return (
        ", ".join(
            f"{e.name} (hsi_bands={e.config.hsi_bands}, msi_bands={e.config.msi_bands}, ratio={e.config.ratio})"
            for e in entries
        )
        or "none"
    )


def _fitting_entries(hsi_bands: int, msi_bands: int, ratio: int) -> str:
    try:
        return describe_entries(fitting_weights(hsi_bands, msi_bands, ratio)[0])
    except Exception as err:  # the listing is only a hint: the error stands without it
        _logger.debug("could not list fitting weights: %s", err)
        return "unknown (manifest unavailable)"


def _check_device(net: nn.Module, compute: torch.device, device: str | torch.device) -> None:
    held = next(iter(net.parameters())).device
    if held.type != compute.type or (None not in (held.index, compute.index) and held.index != compute.index):
        raise ValueError(
            f"the model is on {held} but device={device!r}; call model.to(device) or pass device='auto'"
        )


def resolve_model(
    model: ModelArg,
    *,
    hsi_bands: int,
    msi_bands: int,
    ratio: int,
    device: str | torch.device = "auto",
    wavelengths_nm: Sequence[float] | None = None,
    fwhm_nm: Sequence[float] | None = None,
    hint: str = "",
) -> tuple[nn.Module, torch.device]:
    """The model that fits the inputs, and the device to compute on.

    Args:
        model: a loaded PIFNet (kept on its device), a manifest name, a ``.safetensors`` path, or
            ``"auto"``: the one manifest weight that fits the band counts, the ratio and (when
            given) the HSI wavelengths.
        hsi_bands: HSI bands of the input.
        msi_bands: MSI bands of the input.
        ratio: the LR -> HR ratio of the input.
        device: ``"auto"`` (the model's device for a loaded model, else CUDA when available) or a device.
        wavelengths_nm: the HSI's band centres (nm), when known. A model whose manifest gives another
            band grid that covers them is wrapped in a :class:`~pifnet_infer.spectral.ResampledModel`
            (fuse on the model's grid, bring back the detail); ``"auto"`` prefers a weight on exactly
            this grid, else the one weight whose grid covers it.
        fwhm_nm: the HSI's band widths (nm), when known (else estimated from the spacing).
        hint: how the caller's user fixes a misfit (appended to the error messages).

    Raises:
        ShapeMismatchError: the model does not fit the band counts or the ratio.
        SpectralCoverageError: the model's band grid and the HSI's do not cover each other.
        ValueError: ``"auto"`` finds no single weight; the model sits on another device than ``device``.
        TypeError: ``model`` is not a PIFNet, a name or a path.
    """
    if wavelengths_nm is not None:
        from pifnet_infer.srf import check_band_grid

        check_band_grid(wavelengths_nm, fwhm_nm, "HSI")  # nm, not micrometres, whatever the model
        if len(wavelengths_nm) != hsi_bands:
            raise ValueError(
                f"hsi_wavelengths_nm has {len(wavelengths_nm)} values for an HSI of {hsi_bands} bands; give one per band"
            )
    if isinstance(model, nn.Module):
        net = model
        compute = next(iter(net.parameters())).device if device == "auto" else resolve_device(device)
        _check_device(net, compute, device)
    else:
        from pifnet_infer import weights  # lazy: manifest and hub code only when a name is given

        compute = resolve_device(device)
        if isinstance(model, str) and model == "auto":
            model = _auto_weight(hsi_bands, msi_bands, ratio, wavelengths_nm, fwhm_nm, hint).name
        net = weights.load_model(model, device=compute, dtype="float32")
    if getattr(net, "config", None) is None:
        raise TypeError(
            f"model must be a PIFNet (with a .config), a manifest name or a path, got {type(net).__name__}"
        )
    if wavelengths_nm is not None:
        net = fit_band_grid(net, wavelengths_nm, fwhm_nm)
    config = net.config
    if ratio != config.ratio:
        raise ShapeMismatchError(
            f"the inputs imply ratio {ratio} (HR-MSI size / LR-HSI size) but the model has ratio {config.ratio}; "
            f"pass an HR-MSI {config.ratio} times the LR-HSI or a model for ratio {ratio}"
        )
    if (hsi_bands, msi_bands) != (config.hsi_bands, config.msi_bands):
        raise ShapeMismatchError(
            f"the model expects hsi_bands={config.hsi_bands}, msi_bands={config.msi_bands}; the inputs give "
            f"hsi_bands={hsi_bands}, msi_bands={msi_bands}. Manifest entries that fit: "
            f"{_fitting_entries(hsi_bands, msi_bands, ratio)}" + (f"; {hint}" if hint else "")
        )
    return net, compute


def fitting_weights(
    hsi_bands: int,
    msi_bands: int,
    ratio: int | None,
    wavelengths_nm: Sequence[float] | None = None,
    fwhm_nm: Sequence[float] | None = None,
) -> tuple[list[WeightEntry], bool]:
    """(manifest weights that fit, whether they need band resampling).

    Weights on exactly the HSI's band count (and grid, when ``wavelengths_nm`` is given) come first;
    when there are none and the wavelengths are known, the weights whose band grid covers them
    (fused through :class:`~pifnet_infer.spectral.ResampledModel`).
    """
    from pifnet_infer import weights

    fitting = weights.weights_for(
        hsi_bands=hsi_bands, msi_bands=msi_bands, ratio=ratio, wavelengths_nm=wavelengths_nm
    )
    if fitting or wavelengths_nm is None:
        return fitting, False
    covering = [
        e
        for e in weights.weights_for(msi_bands=msi_bands, ratio=ratio)
        if e.hsi_wavelengths_nm is not None and _covers(e, wavelengths_nm, fwhm_nm)
    ]
    return covering, bool(covering)


def _auto_weight(
    hsi_bands: int,
    msi_bands: int,
    ratio: int,
    wavelengths_nm: Sequence[float] | None,
    fwhm_nm: Sequence[float] | None,
    hint: str,
) -> WeightEntry:
    """The one manifest weight for ``model="auto"``: on the HSI's exact grid, else covering it."""
    from pifnet_infer import weights

    fitting, _ = fitting_weights(hsi_bands, msi_bands, ratio, wavelengths_nm, fwhm_nm)
    if len(fitting) == 1:
        return fitting[0]
    every = [weights.get_weight(n) for n in weights.list_weights()]
    listing = (
        f"candidates: {describe_entries(fitting)}" if fitting else f"manifest entries: {describe_entries(every)}"
    )
    grid = "" if wavelengths_nm is None else f" (or a grid covering {min(wavelengths_nm):.0f}-{max(wavelengths_nm):.0f} nm)"
    raise ValueError(
        f"model='auto' needs exactly one manifest weight for hsi_bands={hsi_bands}{grid}, msi_bands={msi_bands}, "
        f"ratio={ratio}; {listing}; pass model=NAME, a .safetensors path or a loaded PIFNet"
        + (f"; {hint}" if hint else "")
    )


def _covers(entry: WeightEntry, wavelengths_nm: Sequence[float], fwhm_nm: Sequence[float] | None) -> bool:
    from pifnet_infer.spectral import SpectralCoverageError, plan_resampling

    try:
        plan_resampling(wavelengths_nm, fwhm_nm, entry.hsi_wavelengths_nm, entry.hsi_fwhm_nm)
    except SpectralCoverageError:
        return False
    return True


def fit_band_grid(
    net: nn.Module, wavelengths_nm: Sequence[float], fwhm_nm: Sequence[float] | None = None
) -> nn.Module:
    """``net`` itself when the HSI is on its band grid, else a :class:`~pifnet_infer.spectral.ResampledModel`.

    A model without a band grid (its manifest entry's ``hsi_wavelengths_nm`` or its file's, see
    :func:`~pifnet_infer.weights.model_band_grid`) is returned as it is: its band count must then match the
    HSI's (checked by the caller).

    Raises:
        SpectralCoverageError: the grids do not cover each other (the message names the covered range).
        ValueError: ``wavelengths_nm`` / ``fwhm_nm`` are not positive finite nm.
    """
    from pifnet_infer.spectral import ResampledModel, plan_resampling
    from pifnet_infer.weights import model_band_grid

    grid = model_band_grid(net)
    if grid is None:
        return net
    plan = plan_resampling(wavelengths_nm, fwhm_nm, grid[0], grid[1])
    return net if plan.identity else ResampledModel(net, plan)


def model_input_affine(net: nn.Module) -> tuple[float, float]:
    """(a, b) with model input = a * value + b, from the weight's manifest ``input_range`` (identity without)."""
    entry = getattr(net, "weight_entry", None)
    if entry is None:
        return 1.0, 0.0
    return float(entry.input_range["scale"]), float(entry.input_range["offset"])


def _round_to(value: float, step: int) -> int:
    return max(step, round(value / step) * step)


def resolve_tiling(
    tile_size: int | Literal["auto"], overlap: int | Literal["auto"], ratio: int, hr_shape: tuple[int, int]
) -> tuple[int, int]:
    """(tile_size, overlap) in HR pixels: "auto" resolved, explicit values checked.

    Both are multiples of ``2 * ratio`` (tiles sit on the LR grid, and the model halves them once);
    ``0 <= overlap < tile_size``. ``"auto"``: :data:`DEFAULT_TILE` (smaller for small scenes) and
    a quarter of the tile.
    """
    step = 2 * ratio
    if tile_size == "auto":
        scene = -(-max(hr_shape) // step) * step
        tile_size = min(_round_to(DEFAULT_TILE, step), scene)
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < step or tile_size % step:
        raise ValueError(
            f"tile_size must be 'auto' or a positive multiple of 2*ratio={step}, got {tile_size!r}"
        )
    if overlap == "auto":
        overlap = min(_round_to(tile_size / 4, step), tile_size - step)
    if (
        isinstance(overlap, bool)
        or not isinstance(overlap, int)
        or overlap < 0
        or overlap % step
        or overlap >= tile_size
    ):
        raise ValueError(
            f"overlap must be 'auto' or a multiple of 2*ratio={step} in [0, tile_size={tile_size}), got {overlap!r}"
        )
    return tile_size, overlap


def check_batch_size(batch_size: int | Literal["auto"]) -> None:
    """Refuse anything but ``"auto"`` or a positive int."""
    if batch_size != "auto" and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be 'auto' or a positive int, got {batch_size!r}")


def model_srf_matrix(net: nn.Module) -> np.ndarray | None:
    """(c, C) spectral responses of the model's MSI over the bands it outputs, from its manifest entry.

    The entry's band grid, or the user's for a :class:`~pifnet_infer.spectral.ResampledModel`;
    None when the model has no manifest entry with wavelengths (a plain module, a local file) or its
    response is not one of :func:`pifnet_infer.srf.list_srfs`.
    """
    from pifnet_infer.spectral import ResampledModel
    from pifnet_infer.srf import srf_matrix

    entry = getattr(net, "weight_entry", None)
    if entry is None or entry.hsi_wavelengths_nm is None:
        return None
    if isinstance(net, ResampledModel):  # the output is on the user's bands
        wavelengths, fwhm = net.plan.user_wavelengths_nm, net.plan.user_fwhm_nm
    else:
        wavelengths, fwhm = entry.hsi_wavelengths_nm, entry.hsi_fwhm_nm
    try:
        return srf_matrix(entry.msi_srf, wavelengths, fwhm)
    except KeyError:  # a response this library does not ship
        _logger.info("%s: MSI response %r is not bundled; it will be estimated", entry.name, entry.msi_srf)
        return None


def with_refinement(net: nn.Module) -> nn.Module:
    """``net`` with :func:`~pifnet_infer.adapt.refine` applied to each tile (``refine=True`` of the entry points).

    The MSI's spectral responses come from the model's manifest entry when it has one
    (:func:`model_srf_matrix`), else they are estimated from each tile's pair; the PSF is fitted.
    """
    from pifnet_infer.adapt.refine import RefinedModel

    return RefinedModel(net, srf_matrix=model_srf_matrix(net))


def affine_range(
    low: np.ndarray, high: np.ndarray, scale: np.ndarray | float, offset: np.ndarray | float
) -> tuple[float, float]:
    """(min, max) over bands of ``value * scale + offset`` for per-band value ranges ``[low, high]``."""
    ends = np.stack([np.asarray(low) * scale + offset, np.asarray(high) * scale + offset])
    ends = ends[:, np.isfinite(ends).all(axis=0)]  # bands without a valid pixel have no range
    if ends.size == 0:
        return math.nan, math.nan
    return float(ends.min()), float(ends.max())


def check_input_range(
    net: nn.Module, observed: tuple[float, float], *, name: str, scale: float | None
) -> None:
    """Refuse inputs far outside the weight's manifest ``input_range``, before any compute.

    The one place this policy lives (per-scene normalisation may replace it). A model without a manifest
    entry (a plain module, a local file) has no stated range and passes.

    Args:
        net: the model (``net.weight_entry.input_range``: model input = value * scale + offset in [min, max]).
        observed: (min, max) of the valid input values, in the user's units (after ``scale``/``offset``).
        name: the input as the user knows it (``"lr_hsi"``, ``"HSI"``).
        scale: the ``scale`` the user gave (None: none), to suggest a corrected one.

    Raises:
        ValueRangeError: the values reach more than :data:`INPUT_RANGE_SLACK` range widths beyond the range.
    """
    entry = getattr(net, "weight_entry", None)
    rng = getattr(entry, "input_range", {})
    if "min" not in rng or "max" not in rng or not all(math.isfinite(v) for v in observed):
        return
    a, b = model_input_affine(net)
    lo, hi = sorted(((float(rng["min"]) - b) / a, (float(rng["max"]) - b) / a))
    slack = INPUT_RANGE_SLACK * (hi - lo)
    if lo - slack <= observed[0] and observed[1] <= hi + slack:
        return
    peak = max(abs(observed[0]), abs(observed[1]))
    factor = 10.0 ** round(math.log10(max(abs(lo), abs(hi)) / peak)) if peak > 0 else 1.0
    raise ValueRangeError(
        f"the {name} values span [{observed[0]:.4g}, {observed[1]:.4g}] but weight {getattr(entry, 'name', '')!r} "
        f"expects [{lo:.4g}, {hi:.4g}] ({rng.get('units', 'model units')}); the inputs are likely in other units or scaled: pass "
        f"scale={(scale or 1.0) * factor:g} (CLI: --scale) converting them, e.g. 1e-4 for reflectance stored x10000"
    )


def output_guard(postprocess: RowPostprocess, lr_range: tuple[float, float]) -> RowPostprocess:
    """``postprocess`` preceded by a check that the model's output rows are finite and plausible.

    Args:
        postprocess: the Sink's row postprocess (model units -> output values).
        lr_range: (min, max) of the LR-HSI's valid values in the model's input units.

    Returns:
        A postprocess raising :class:`~pifnet_infer.errors.ValueRangeError` on non-finite values or
        values more than :data:`OUTPUT_RANGE_SLACK` widths of ``lr_range`` beyond it, so an atomic output
        is never committed.
    """
    lo, hi = lr_range
    width = max(hi - lo, abs(lo), abs(hi), 1e-6)
    low, high = lo - OUTPUT_RANGE_SLACK * width, hi + OUTPUT_RANGE_SLACK * width
    cause = (
        "the inputs are likely in units or a scale the weight was not trained on: check scale=/offset= "
        "(CLI: --scale/--offset); nothing was written"
    )

    def guarded(row0: int, values: np.ndarray) -> np.ndarray:
        if not np.isfinite(values).all():
            raise ValueRangeError(f"the model returned NaN or infinite values (HR rows from {row0}); {cause}")
        v_min, v_max = float(values.min()), float(values.max())
        if v_min < low or v_max > high:
            raise ValueRangeError(
                f"the model returned values in [{v_min:.4g}, {v_max:.4g}] (its input units) for an LR-HSI in "
                f"[{lo:.4g}, {hi:.4g}] (HR rows from {row0}); {cause}"
            )
        return postprocess(row0, values)

    return guarded


def check_integer_output(
    dtype: np.dtype[Any], observed: tuple[float, float], scale: float, offset: float, *, fix: str
) -> None:
    """Refuse an integer output that would destroy the data: steps too coarse for its range, or range too small.

    Args:
        dtype: the output dtype (anything but an integer dtype passes).
        observed: (min, max) of the data in physical units.
        scale: physical units per stored integer step (physical = stored * scale + offset).
        offset: see ``scale``.
        fix: how to fix it, with ``{suggested}`` standing for a power-of-ten scale that fits the data.

    Raises:
        ValueError: fewer than :data:`INTEGER_OUTPUT_STEPS` steps (a quarter of the dtype's for narrow
            dtypes) over the data's range, or values beyond the dtype's range.
    """
    lo, hi = observed
    if dtype.kind not in "iu" or not (math.isfinite(lo) and math.isfinite(hi)):
        return
    info = np.iinfo(dtype)
    stored = sorted(((lo - offset) / scale, (hi - offset) / scale))
    peak = max(abs(lo - offset), abs(hi - offset))
    suggested = 10.0 ** math.ceil(math.log10(peak / info.max)) if peak > 0 else 1.0
    advice = fix.format(suggested=f"{suggested:g}")
    steps = min(INTEGER_OUTPUT_STEPS, (int(info.max) - int(info.min)) // 4)
    if hi > lo and stored[1] - stored[0] < steps:
        raise ValueError(
            f"a {dtype} output stores whole multiples of {scale:g} but the values span [{lo:.4g}, {hi:.4g}]: "
            f"{stored[1] - stored[0]:.3g} steps, the data would be lost; {advice}"
        )
    if stored[0] < info.min or stored[1] > info.max:
        raise ValueError(
            f"the values span [{lo:.4g}, {hi:.4g}], stored as [{stored[0]:.4g}, {stored[1]:.4g}] in steps of "
            f"{scale:g}: beyond {dtype}'s [{info.min}, {info.max}]; {advice}"
        )

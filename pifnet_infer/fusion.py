"""``fuse()``: whole-scene HSI-MSI fusion of arrays in memory, tile by tile.

Everything is checked first (shapes, ratio, bands, dtypes, devices, values),
then the scene goes through the tiling engine (:mod:`pifnet_infer.tiling`):
an :class:`~pifnet_infer.tiling.array_io.ArraySource` feeds tiles, the model
runs them in batches, an :class:`~pifnet_infer.tiling.array_io.ArraySink`
blends them into the output.

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from pifnet_infer._utils.device import DTypeArg, resolve_dtype
from pifnet_infer.errors import ShapeMismatchError
from pifnet_infer.prepare import (
    ModelArg,
    affine_range,
    check_batch_size,
    check_input_range,
    check_integer_output,
    model_input_affine,
    model_srf_matrix,
    output_guard,
    resolve_model,
    resolve_tiling,
    with_refinement,
)
from pifnet_infer.tiling.array_io import (
    ArrayInput,
    ArraySink,
    ArraySource,
    Layout,
    array_postprocess,
    band_axis,
    scan_array,
)
from pifnet_infer.tiling.runner import auto_batch_size, run_tiles

if TYPE_CHECKING:
    from pifnet_infer.diagnostics import Diagnostics

_logger = logging.getLogger(__name__)

ArrayLike = np.ndarray | torch.Tensor
ScaleArg = float | tuple[float, float] | None


@dataclass(frozen=True)
class _Prepared:
    """Checked inputs (still as given) and their geometry."""

    lr: ArrayLike
    msi: ArrayLike
    ratio: int
    hsi_bands: int
    msi_bands: int
    lr_shape: tuple[int, int]
    as_tensor: bool
    tensor_device: torch.device | None


def scale_pair(value: ScaleArg, default: float, name: str) -> tuple[float, float]:
    """``scale``/``offset`` as (HSI, MSI) floats."""
    if value is None:
        return default, default
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be a number or a (hsi, msi) pair, got {value!r}")
        pair = float(value[0]), float(value[1])
    else:
        pair = float(value), float(value)
    if not all(math.isfinite(v) for v in pair):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return pair


def _dtype_kind(a: ArrayLike) -> str:
    """numpy dtype kind ("f", "i", "u", "b", "c", ...) of an array or tensor."""
    if isinstance(a, torch.Tensor):
        if a.dtype.is_floating_point:
            return "f"
        if a.dtype.is_complex:
            return "c"
        return "b" if a.dtype == torch.bool else "i"
    return str(a.dtype.kind)


def _check_arrays(
    lr_hsi: Any, hr_msi: Any, layout: str, scale: ScaleArg, model_ratio: int | None
) -> _Prepared:
    """Kinds, devices, dtypes, ndim, sizes and the implied ratio, without touching the pixels."""
    band = band_axis(layout)  # also validates layout
    for name, a in (("lr_hsi", lr_hsi), ("hr_msi", hr_msi)):
        if not isinstance(a, (np.ndarray, torch.Tensor)):
            raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(a).__name__}")
    as_tensor = isinstance(lr_hsi, torch.Tensor)
    if as_tensor != isinstance(hr_msi, torch.Tensor):
        raise TypeError(
            f"lr_hsi and hr_msi must both be numpy arrays or both torch tensors, got "
            f"{type(lr_hsi).__name__} and {type(hr_msi).__name__}"
        )
    if as_tensor and lr_hsi.device != hr_msi.device:
        raise ValueError(
            f"lr_hsi is on {lr_hsi.device} but hr_msi is on {hr_msi.device}; move both to one device"
        )
    expected = "(bands, height, width)" if layout == "chw" else "(height, width, bands)"
    for name, a in (("lr_hsi", lr_hsi), ("hr_msi", hr_msi)):
        if a.ndim != 3:
            raise ShapeMismatchError(
                f"{name} must be 3-D {expected} for layout={layout!r}, got shape {tuple(a.shape)}"
                + ("; drop the batch axis (fuse takes one scene)" if a.ndim == 4 else "")
            )
        if 0 in a.shape:
            raise ShapeMismatchError(f"{name} is empty: shape {tuple(a.shape)}")
        kind = _dtype_kind(a)
        if kind not in "fiu":
            raise ValueError(f"{name} must hold real numbers (float or int), got dtype {a.dtype}")
        if kind in "iu" and scale is None:
            raise ValueError(
                f"{name} has integer dtype {a.dtype}; pass scale= (and offset=) converting it to the model's "
                "units, e.g. scale=1e-4 for reflectance stored x10000"
            )
    spatial = [i for i in range(3) if i != band]
    h, w = (int(lr_hsi.shape[i]) for i in spatial)
    big_h, big_w = (int(hr_msi.shape[i]) for i in spatial)
    if h * w == 1:
        raise ShapeMismatchError(
            f"lr_hsi has a single pixel (shape {tuple(lr_hsi.shape)}); fusion needs an image"
        )
    if big_h % h or big_w % w or big_h // h != big_w // w:
        has = f"; the model has ratio {model_ratio}" if model_ratio else ""
        hint = "" if layout == "hwc" else "; if your arrays are (height, width, bands), pass layout='hwc'"
        raise ShapeMismatchError(
            f"hr_msi {(big_h, big_w)} must be r times lr_hsi {(h, w)} on both axes for one integer r; "
            f"the shapes imply r = {big_h / h:.4g} x {big_w / w:.4g}{has}{hint}"
        )
    return _Prepared(
        lr_hsi,
        hr_msi,
        big_h // h,
        int(lr_hsi.shape[band]),
        int(hr_msi.shape[band]),
        (h, w),
        as_tensor,
        lr_hsi.device if as_tensor else None,
    )


def _to_numpy(a: ArrayLike) -> np.ndarray:
    """A numpy view of a CPU tensor, a host copy of a GPU tensor (bf16 widened to fp32), arrays as they are."""
    if not isinstance(a, torch.Tensor):
        return a
    a = a.detach()
    if a.dtype == torch.bfloat16:
        a = a.float()
    return a.cpu().numpy()


def _output(out: Any, prep: _Prepared, layout: Layout) -> tuple[np.ndarray, Callable[[], ArrayLike]]:
    """(numpy buffer the Sink writes into, function returning the result once it is written)."""
    h, w = prep.lr_shape
    c, big_h, big_w = prep.hsi_bands, h * prep.ratio, w * prep.ratio
    expected = (c, big_h, big_w) if layout == "chw" else (big_h, big_w, c)
    if out is None:
        buffer = np.empty(expected, dtype=np.float32)
        if not prep.as_tensor:
            return buffer, lambda: buffer
        return buffer, lambda: torch.from_numpy(buffer).to(prep.tensor_device)
    if not isinstance(out, (np.ndarray, torch.Tensor)):
        raise TypeError(
            f"out must be a numpy array, an np.memmap or a torch tensor, got {type(out).__name__}"
        )
    if tuple(out.shape) != expected:
        raise ShapeMismatchError(
            f"out must have shape {expected} (layout={layout!r}), got {tuple(out.shape)}"
        )
    if isinstance(out, np.ndarray):
        if not out.flags.writeable:
            raise ValueError(
                "out is read-only (e.g. an np.memmap opened with mode='r'); pass a writable array (mode='r+' or 'w+')"
            )
        return out, lambda: out
    if out.device.type == "cpu" and out.dtype != torch.bfloat16:
        return out.numpy(), lambda: out
    host = np.empty(expected, dtype=np.float32)
    return host, lambda: out.copy_(torch.from_numpy(host))


def _diagnostics_srf(net: nn.Module) -> np.ndarray:
    """(c, C) spectral response matrix of the model's MSI, from its manifest entry (for ``return_diagnostics``)."""
    srf = model_srf_matrix(net)
    if srf is None:
        raise ValueError(
            "return_diagnostics=True needs the MSI spectral responses and HSI wavelengths of the model's manifest "
            "entry, and this model has none; call pifnet_infer.diagnostics.consistency(fused, lr_hsi, hr_msi, "
            "ratio=..., srf_matrix=...) with your sensor's responses instead"
        )
    return srf


def fuse(
    lr_hsi: ArrayLike,
    hr_msi: ArrayLike,
    model: ModelArg = "auto",
    *,
    tile_size: int | Literal["auto"] = "auto",
    overlap: int | Literal["auto"] = "auto",
    batch_size: int | Literal["auto"] = "auto",
    device: str | torch.device = "auto",
    dtype: DTypeArg = "auto",
    layout: Layout = "chw",
    scale: ScaleArg = None,
    offset: ScaleArg = None,
    nodata: float | None = None,
    progress: bool = True,
    out: np.ndarray | torch.Tensor | None = None,
    callback: Callable[[int, int], None] | None = None,
    hsi_wavelengths_nm: Sequence[float] | None = None,
    hsi_fwhm_nm: Sequence[float] | None = None,
    refine: bool = False,
    return_diagnostics: bool = False,
) -> ArrayLike | tuple[ArrayLike, Diagnostics]:
    """Fuse an LR-HSI with an HR-MSI of the same scene into an HR-HSI, tile by tile.

    The scene is cut into tiles laid on the LR grid that overlap by ``overlap`` HR pixels; each tile
    is fused and the tiles are blended with a smooth raised-cosine window (weights > 0 up to the scene
    border; windows past the border are filled by mirroring, never zeros). PIF-Net's scans see one
    tile, so the result differs slightly from whole-image inference (measured in
    ``tests/test_fuse_quality.py``). ``overlap=0`` stitches by overwriting instead: with
    ``tile_size=64`` (``32`` for ratio 8) that is the official test protocol (spec section 12).

    Memory: the inputs, the output (none with ``out=`` an ``np.memmap``), float32 accumulators for
    about one tile row of output (tile_size x W x (C + 1) x 4 bytes), and ``batch_size`` tiles of
    activations on the device.

    Args:
        lr_hsi: the LR-HSI, (C, h, w) for ``layout="chw"`` or (h, w, C) for ``"hwc"``; float (reflectance,
            typically [0, 1]) or integer with ``scale``; NaN or ``nodata`` marks missing pixels. A numpy
            array (memmaps welcome) or a torch tensor on any device.
        hr_msi: the HR-MSI, (c, r*h, r*w) or (r*h, r*w, c), same kind as ``lr_hsi``.
        model: a loaded PIFNet, a manifest name, a ``.safetensors`` path, or ``"auto"``: the one
            manifest weight whose band counts and ratio fit the inputs.
        tile_size: HR tile side, a multiple of 2*r; ``"auto"``: 128 (the training patch size),
            smaller for small scenes.
        overlap: HR overlap between tiles, a multiple of 2*r; ``"auto"``: about a quarter of the tile.
        batch_size: tiles per forward pass; ``"auto"``: from free GPU memory on CUDA, small on CPU.
        device: compute device; ``"auto"``: the model's device for a loaded model, else CUDA when
            available, else CPU.
        dtype: ``"auto"`` (bf16/fp16 autocast on CUDA, fp32 on CPU), ``"float32"``, ``"bfloat16"``, ``"float16"``.
        layout: ``"chw"`` (torch, rasterio) or ``"hwc"`` (spectral-python, .mat); never guessed.
        scale: raw -> physical units, ``value = raw * scale + offset`` (rasterio's meaning); a number
            or an (hsi, msi) pair. Required for integer inputs.
        offset: see ``scale``.
        nodata: raw value of missing pixels (NaN is always missing). Missing values are filled with their
            band's mean for the network (only in the bands where they are missing) and set back to
            ``nodata`` (NaN when None) in the output: in that band at every HR pixel a missing LR-HSI
            value covers, in every band at a missing HR-MSI pixel. An LR-HSI band without any valid
            pixel gives a :class:`~pifnet_infer.errors.MissingDataWarning` and an output band entirely
            missing; an HR-MSI band without any is an error.
        progress: show a progress bar over tiles (``PIFNET_DISABLE_PROGRESS_BARS=1`` hides it).
        out: where to write the result: a numpy array or ``np.memmap`` (results larger than RAM),
            or a torch tensor, shaped like the output; returned.
        callback: ``callback(done, total)`` after every tile.
        hsi_wavelengths_nm: the LR-HSI's band centres in nm (one per band). When the model was trained on
            another band grid that covers them (its manifest ``hsi_wavelengths_nm``), each tile is
            resampled onto the model's grid, fused there, and only the detail the model adds comes back
            to these bands (:class:`~pifnet_infer.spectral.ResampledModel`); equal grids are not
            resampled. With ``model="auto"`` the one weight on this grid, or covering it, is chosen.
        hsi_fwhm_nm: the bands' FWHM in nm, when known (else estimated from the band spacing).
        refine: pass every fused tile through :func:`pifnet_infer.adapt.refine` (consistency with that
            tile's LR-HSI and HR-MSI, in their spectral subspace; about as long again as the model on a
            CPU). It helps a weak or mismatched model most; see the README's "When to use what".
        return_diagnostics: also return :func:`pifnet_infer.diagnostics.consistency` of the result with
            its inputs (in physical units, with the PSF of the official protocol and the MSI spectral
            responses of the model's manifest entry; NaN where inputs are missing).

    Returns:
        The HR-HSI (C, r*h, r*w) or (r*h, r*w, C), float32 in the LR-HSI's units (``out``'s dtype
        when given): a numpy array for numpy inputs, a tensor on the inputs' device for tensors.
        With ``return_diagnostics``: ``(hr_hsi, Diagnostics)``.

    Raises:
        ShapeMismatchError: wrong ndim, sizes, ratio or band counts (the message names what fits).
        ValueError: integer inputs without ``scale``, infinite values, no valid pixel, bad tiling
            arguments, no single weight for ``model="auto"``.
        ValueRangeError: inputs far outside the weight's ``input_range`` (before any compute), or a
            model output that is NaN, infinite or absurd (the inputs' units or scale are likely wrong).
        TypeError: inputs of different kinds, or not arrays.
        SpectralCoverageError: ``hsi_wavelengths_nm`` and the model's band grid do not cover each other.

    Example:
        >>> hr_hsi = fuse(lr_hsi, rgb, model="pifnet-vnir-rgb-x4", hsi_wavelengths_nm=wl)  # doctest: +SKIP

    .. versionadded:: 0.1
    """
    model_ratio = getattr(getattr(model, "config", None), "ratio", None)
    prep = _check_arrays(lr_hsi, hr_msi, layout, scale, model_ratio)
    net, compute = resolve_model(
        model, hsi_bands=prep.hsi_bands, msi_bands=prep.msi_bands, ratio=prep.ratio, device=device,
        wavelengths_nm=hsi_wavelengths_nm, fwhm_nm=hsi_fwhm_nm,
    )  # fmt: skip
    srf = _diagnostics_srf(net) if return_diagnostics else None
    if refine:
        net = with_refinement(net)
    compute_dtype = resolve_dtype(dtype, compute)
    h, w = prep.lr_shape
    tile, lap = resolve_tiling(tile_size, overlap, prep.ratio, (h * prep.ratio, w * prep.ratio))
    check_batch_size(batch_size)
    buffer, result = _output(out, prep, layout)
    (s_hsi, s_msi), (o_hsi, o_msi) = scale_pair(scale, 1.0, "scale"), scale_pair(offset, 0.0, "offset")
    if 0.0 in (s_hsi, s_msi):
        raise ValueError(f"scale must be non-zero, got {scale!r}")
    lr, msi = _to_numpy(prep.lr), _to_numpy(prep.msi)
    scans = [
        scan_array(lr, layout, nodata, name="lr_hsi", pass_through=True),
        scan_array(msi, layout, nodata, name="hr_msi"),
    ]
    missing = any(s.invalid is not None for s in scans)
    if missing and np.issubdtype(buffer.dtype, np.integer) and (nodata is None or np.isnan(nodata)):
        raise ValueError(
            f"the inputs have missing pixels and out has integer dtype {buffer.dtype}; pass nodata="
        )

    check_integer_output(  # the output is in the LR-HSI's raw units: steps of 1
        buffer.dtype, affine_range(scans[0].low, scans[0].high, 1.0, 0.0), 1.0, 0.0,
        fix="pass a float out array, or the LR-HSI as integers with their scale=",
    )  # fmt: skip
    for scan, name, s, o in ((scans[0], "lr_hsi", s_hsi, o_hsi), (scans[1], "hr_msi", s_msi, o_msi)):
        check_input_range(
            net, affine_range(scan.low, scan.high, s, o), name=name, scale=None if scale is None else s
        )
    m_a, m_b = model_input_affine(net)  # model input = m_a * value + m_b
    source = ArraySource(
        ArrayInput(lr, layout, s_hsi * m_a, o_hsi * m_a + m_b, scans[0].invalid, scans[0].fill),
        ArrayInput(msi, layout, s_msi * m_a, o_msi * m_a + m_b, scans[1].invalid, scans[1].fill),
        prep.ratio,
    )
    sink = ArraySink(
        buffer,
        (prep.hsi_bands, h * prep.ratio, w * prep.ratio),
        layout=layout,
        postprocess=output_guard(
            array_postprocess(source, buffer.dtype, nodata),
            affine_range(scans[0].low, scans[0].high, source.lr.scale, source.lr.offset),
        ),
    )
    if batch_size == "auto":
        batch_size = auto_batch_size(net, source, tile, device=compute, dtype=compute_dtype)
    _logger.info("fuse: LR %s, tiles of %d px, overlap %d, batch %d, %s %s",
                 "x".join(map(str, prep.lr_shape)), tile, lap, batch_size, compute, compute_dtype)  # fmt: skip
    was_training = net.training
    net.eval()
    try:
        run_tiles(
            net, source, sink, tile_size=tile, overlap=lap, batch_size=batch_size, device=compute,
            dtype=compute_dtype, progress=progress, callback=callback,
        )  # fmt: skip
    finally:
        net.train(was_training)
    if srf is None:
        return result()
    from pifnet_infer.diagnostics import consistency

    def physical(a: np.ndarray, s: float, o: float) -> np.ndarray:
        chw = a if layout == "chw" else np.moveaxis(a, 2, 0)
        return chw.astype(np.float32) * np.float32(s) + np.float32(o)

    report = consistency(
        physical(buffer, s_hsi, o_hsi), physical(lr, s_hsi, o_hsi), physical(msi, s_msi, o_msi),
        ratio=prep.ratio, srf_matrix=srf,
    )  # fmt: skip
    return result(), report

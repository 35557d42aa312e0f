"""Deformable convolution v1 (no modulation mask) with ``torchvision.ops.deform_conv2d`` semantics.

Two backends behind :func:`deform_conv2d`, chosen as described in :mod:`pifnet_infer.ops.backend`
(``backend=`` argument, else ``$PIFNET_DEFORM_BACKEND``, else the fastest available):

- ``torchvision``: torchvision's CUDA kernel, on CUDA when torchvision imports and a tiny call works.
- ``torch``: one ``grid_sample`` gathering every kernel tap into columns [B, Cin*kh*kw, Hout*Wout]
  and one matrix product with the weight; any device, differentiable.

Sampling rule (spec section 7): output pixel (y, x), tap (ki, kj) reads the input at
``(y - padding + ki + dy, x - padding + kj + dx)`` by bilinear interpolation, where out-of-image
neighbours count as 0 (a point at or beyond -1 or H/W reads 0). Offsets are (dy, dx) pairs per tap,
taps in row-major kernel order: channel ``2*(ki*kw + kj)`` is dy, the next one dx.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pifnet_infer._utils.optional import require
from pifnet_infer.errors import ShapeMismatchError
from pifnet_infer.ops.backend import Backend, BackendRegistry, all_of, cuda_probe, import_probe, register


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """Sampling positions need float32 at least: bfloat16 cannot even tell pixel 300 from 301."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _deform_conv2d_torch(
    x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int
) -> torch.Tensor:
    batch, in_channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    out_h, out_w = offset.shape[-2:]
    dtype = _compute_dtype(x)
    taps = kh * kw
    offset = offset.to(dtype).reshape(batch, taps, 2, out_h, out_w)
    tap_y = torch.arange(kh, device=x.device, dtype=dtype).repeat_interleave(kw)  # [taps]
    tap_x = torch.arange(kw, device=x.device, dtype=dtype).repeat(kh)
    rows = torch.arange(out_h, device=x.device, dtype=dtype) - padding
    cols = torch.arange(out_w, device=x.device, dtype=dtype) - padding
    pos_y = rows[None, :, None] + tap_y[:, None, None] + offset[:, :, 0]  # [B, taps, out_h, out_w]
    pos_x = cols[None, None, :] + tap_x[:, None, None] + offset[:, :, 1]
    # align_corners=False maps pixel p to (2p + 1)/size - 1: exact for any size, including 1
    grid = torch.stack([(2 * pos_x + 1) / width - 1, (2 * pos_y + 1) / height - 1], dim=-1)
    sampled = F.grid_sample(
        x.to(dtype),
        grid.view(batch, taps * out_h, out_w, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # [B, Cin, taps*out_h, out_w]
    columns = sampled.view(batch, in_channels * taps, out_h * out_w)  # Cin-major, tap-minor like weight
    out = weight.reshape(out_channels, in_channels * taps).to(dtype) @ columns
    if bias is not None:
        out = out + bias.to(dtype)[:, None]
    return out.view(batch, out_channels, out_h, out_w).to(x.dtype)


def _deform_conv2d_torchvision(
    x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int
) -> torch.Tensor:
    ops = require("torchvision.ops", extra="gpu")
    # torchvision's kernel has no bfloat16; its own autocast runs it in float32 too
    dtype = _compute_dtype(x)
    out: torch.Tensor = ops.deform_conv2d(
        x.to(dtype),
        offset.to(dtype),
        weight.to(dtype),
        None if bias is None else bias.to(dtype),
        padding=padding,
    )
    return out.to(x.dtype)


def _torchvision_works() -> str | None:
    """``None`` when torchvision's deform_conv2d runs on CUDA (a failure raises; the registry reports it)."""
    ops = require("torchvision.ops", extra="gpu")
    x = torch.ones(1, 1, 3, 3, device="cuda")
    ops.deform_conv2d(
        x, torch.zeros(1, 18, 3, 3, device="cuda"), torch.ones(1, 1, 3, 3, device="cuda"), padding=1
    )
    torch.cuda.synchronize()
    return None


_REGISTRY = register(
    BackendRegistry(
        "deform_conv2d",
        "PIFNET_DEFORM_BACKEND",
        [
            Backend(
                name="torchvision",
                load=lambda: _deform_conv2d_torchvision,
                probe=all_of(
                    import_probe("torchvision", install='pip install "pifnet-infer[gpu]"'),
                    cuda_probe,
                    _torchvision_works,
                ),
                supports=lambda device: device.type == "cuda",
                auto_devices=frozenset({"cuda"}),
            ),
            Backend(
                name="torch",
                load=lambda: _deform_conv2d_torch,
                probe=lambda: None,
                supports=lambda device: True,
                auto_devices=None,
            ),
        ],
    )
)


def _check_inputs(
    x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int
) -> None:
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an integer >= 0, got {padding!r}")
    for name, tensor in (("x", x), ("offset", offset), ("weight", weight), ("bias", bias)):
        if tensor is None:
            continue
        if not tensor.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")
        if tensor.device != x.device:
            raise ValueError(
                f"{name} is on {tensor.device} but x is on {x.device}; move all inputs to one device"
            )
    if x.ndim != 4 or weight.ndim != 4 or weight.shape[1] != x.shape[1]:
        raise ShapeMismatchError(
            f"expected x [B, Cin, H, W] and weight [Cout, Cin, kh, kw] with the same Cin (groups=1), got x "
            f"{tuple(x.shape)!r} and weight {tuple(weight.shape)!r}"
        )
    batch, _, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    expected = (batch, 2 * kh * kw, height + 2 * padding - kh + 1, width + 2 * padding - kw + 1)
    if min(expected[2:]) < 1 or tuple(offset.shape) != expected:
        raise ShapeMismatchError(
            f"offset must be [B, 2*kh*kw, Hout, Wout] = {expected!r} for x {tuple(x.shape)!r}, weight "
            f"{tuple(weight.shape)!r} and padding {padding}, got {tuple(offset.shape)!r}"
        )
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ShapeMismatchError(f"bias must have shape {(out_channels,)!r}, got {tuple(bias.shape)!r}")


def deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    padding: int = 1,
    backend: str | None = None,
) -> torch.Tensor:
    """Deformable convolution (DCNv1): stride 1, dilation 1, groups 1, one offset group, no mask.

    Args:
        x: input [B, Cin, H, W], float; 16-bit inputs are computed in float32.
        offset: sampling offsets in pixels [B, 2*kh*kw, Hout, Wout], (dy, dx) per tap, taps row-major;
            Hout = H + 2*padding - kh + 1 (likewise Wout).
        weight: kernel [Cout, Cin, kh, kw].
        bias: [Cout] or ``None``.
        padding: zero padding on every side (the input is 0 outside the image).
        backend: ``"torch"``, ``"torchvision"``, or ``None``/``"auto"``.

    Returns:
        [B, Cout, Hout, Wout] in the dtype of ``x``.

    Raises:
        ShapeMismatchError: shapes do not fit together.
        BackendUnavailableError: the requested backend cannot run here (no silent fallback).

    .. versionadded:: 0.1
    """
    _check_inputs(x, offset, weight, bias, padding)
    return _REGISTRY.select(x, backend).load()(x, offset, weight, bias, padding)

"""Selective scan on mamba-ssm's compiled CUDA kernel (``selective_scan_cuda``).

mamba-ssm ships as source only; since mid-2026 a plain install skips the CUDA extension, so the backend is
probed by importing ``selective_scan_cuda`` itself (see :mod:`pifnet_infer.ops.scan`). Inputs are passed
in float32 so that the kernel's output, which has the dtype of ``u``, is float32 as the model requires.
"""

from __future__ import annotations

import torch

from pifnet_infer._utils.optional import require


def selective_scan_mamba(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """Selective scan on mamba-ssm's ``selective_scan_fn``; arguments as in :func:`pifnet_infer.ops.selective_scan`.

    Returns float32 [batch, channels, length]; differentiable (mamba-ssm provides the backward kernel).
    """
    interface = require("mamba_ssm.ops.selective_scan_interface", extra="mamba")

    def fp32(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.float().contiguous()

    out: torch.Tensor = interface.selective_scan_fn(
        fp32(u),
        fp32(delta),
        fp32(A),
        fp32(B),
        fp32(C),
        D=fp32(D),
        z=fp32(z),
        delta_bias=fp32(delta_bias),
        delta_softplus=delta_softplus,
    )
    return out.float()

"""Selective scan as one fused Triton kernel (forward only).

One program per (batch, channel). It walks along the sequence in blocks of ``BLOCK_L`` positions; inside
a block the pairs ``(exp(delta*A), delta*u*B)`` of all ``d_state`` states are combined by
``tl.associative_scan`` and the state entering the block is added with its cumulative decay; the state at
the end of the block is carried to the next. State and sums are float32 whatever the input dtype
(float32, bfloat16 or float16). Positions past the end of the sequence get ``delta = 0`` (decay 1, no
input), so the carried state is exact for any length.

This module imports triton at import time: import it only through the backend registry. On a CPU it runs
under ``TRITON_INTERPRET=1`` (set before this module is imported), for tests only.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _compose(a_prev, b_prev, a_next, b_next):  # type: ignore[no-untyped-def]
    """Step ``prev`` then step ``next`` of ``h <- a * h + b``."""
    return a_prev * a_next, a_next * b_prev + b_next


@triton.jit
def _selective_scan_kernel(  # type: ignore[no-untyped-def]
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    z_ptr,
    bias_ptr,
    out_ptr,
    channels,
    length,
    d_state,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)  # batch * channels + channel
    batch = pid // channels
    channel = pid % channels
    row = pid * length  # start of this (batch, channel) row in u, delta, z and out
    bc_row = batch * d_state * length  # start of this batch in B and C

    states = tl.arange(0, BLOCK_N)
    state_mask = states < d_state
    A = tl.load(A_ptr + channel * d_state + states, mask=state_mask, other=0.0).to(tl.float32)
    if HAS_D:
        skip = tl.load(D_ptr + channel).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + channel).to(tl.float32)
    is_last = tl.arange(0, BLOCK_L) == BLOCK_L - 1
    h = tl.zeros([BLOCK_N], dtype=tl.float32)

    for start in range(0, length, BLOCK_L):
        pos = start + tl.arange(0, BLOCK_L)
        pos_mask = pos < length
        u = tl.load(u_ptr + row + pos, mask=pos_mask, other=0.0).to(tl.float32)
        dt = tl.load(delta_ptr + row + pos, mask=pos_mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt = dt + bias
        if SOFTPLUS:
            dt = tl.where(dt > 20.0, dt, tl.log(1.0 + tl.exp(dt)))  # torch's softplus threshold
        dt = tl.where(pos_mask, dt, 0.0)

        bc_offsets = bc_row + states[:, None] * length + pos[None, :]
        bc_mask = state_mask[:, None] & pos_mask[None, :]
        B = tl.load(B_ptr + bc_offsets, mask=bc_mask, other=0.0).to(tl.float32)
        C = tl.load(C_ptr + bc_offsets, mask=bc_mask, other=0.0).to(tl.float32)

        decay = tl.exp(dt[None, :] * A[:, None])  # [BLOCK_N, BLOCK_L]
        drive = (dt * u)[None, :] * B
        decay, drive = tl.associative_scan((decay, drive), axis=1, combine_fn=_compose)
        hs = decay * h[:, None] + drive
        y = tl.sum(C * hs, axis=0)
        if HAS_D:
            y = y + skip * u
        if HAS_Z:
            z = tl.load(z_ptr + row + pos, mask=pos_mask, other=0.0).to(tl.float32)
            y = y * z * tl.sigmoid(z)
        tl.store(out_ptr + row + pos, y, mask=pos_mask)
        h = tl.sum(tl.where(is_last[None, :], hs, 0.0), axis=1)


def selective_scan_triton(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    *,
    block_l: int | None = None,
) -> torch.Tensor:
    """Selective scan on the Triton kernel; arguments as in :func:`pifnet_infer.ops.selective_scan`.

    ``block_l`` (a power of two >= 16) overrides the number of positions scanned per block (default:
    the length rounded up to a power of two, within 16..128). Returns float32 [batch, channels, length].
    """
    batch, channels, length = u.shape
    d_state = A.shape[1]
    out = torch.empty(batch, channels, length, device=u.device, dtype=torch.float32)
    # unused pointers still need a tensor; u is never read through them (HAS_* flags are False)
    _selective_scan_kernel[(batch * channels,)](
        u.contiguous(),
        delta.contiguous(),
        A.contiguous(),
        B.contiguous(),
        C.contiguous(),
        u if D is None else D.contiguous(),
        u if z is None else z.contiguous(),
        u if delta_bias is None else delta_bias.contiguous(),
        out,
        channels,
        length,
        d_state,
        HAS_D=D is not None,
        HAS_Z=z is not None,
        HAS_BIAS=delta_bias is not None,
        SOFTPLUS=delta_softplus,
        BLOCK_N=triton.next_power_of_2(d_state),
        BLOCK_L=block_l or min(128, max(16, triton.next_power_of_2(length))),
    )
    return out

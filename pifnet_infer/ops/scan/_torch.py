"""Selective scan in pure PyTorch: the reference backend, chunked, differentiable, any device.

The recurrence ``h_t = a_t * h_{t-1} + b_t`` (per channel and state, ``a_t = exp(delta_t * A)``,
``b_t = delta_t * u_t * B_t``) is cut into chunks of :data:`CHUNK` positions. Inside a chunk all
positions are solved at once by a Hillis-Steele inclusive scan over the pairs ``(a, b)`` (log2(CHUNK)
vectorised steps); the state at the end of a chunk is carried into the next one. Only decays
``exp(delta * A)`` of single steps and their products are formed, never ``exp`` of a difference of
cumulative sums, so nothing can overflow that the true recurrence would not. Memory: the output and
``delta * u`` ([batch, channels, L] each) plus a few [batch, channels, d_state, CHUNK] tensors per chunk;
about 100 MB above the inputs for batch 1, 512 channels, d_state 16, L = 16384 (measured).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

#: positions solved together. For 512 channels x 16 states on the shared 2-core CPU machines (L = 1024
#: and 4096), 16 and 32 were fastest (within ~15%, their order varying between runs), 64 was 5-30% slower,
#: 8 and 128 1.2-2x slower. 32 halves the Python overhead of 16 and keeps a chunk's [1, 512, 16, 32]
#: float32 tensors at 1 MiB. ``python benchmarks/bench_scan.py --device cpu --sides 32 64 --torch-chunks 8 16 64 128``
CHUNK = 32


def _scan_chunk(
    delta: torch.Tensor,
    delta_u: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    h: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve one chunk. delta, delta_u: [b, d, t]; A: [d, n]; B, C: [b, n, t]; h: [b, d, n] (state before).

    Returns ``y`` [b, d, t] (without the D skip and the gate) and the state after the chunk.
    """
    a = torch.exp(delta[:, :, None, :] * A[None, :, :, None])  # [b, d, n, t]
    b = delta_u[:, :, None, :] * B[:, None, :, :]
    b[..., 0].addcmul_(a[..., 0], h)  # the state entering the chunk
    length = a.shape[-1]
    shift = 1
    while shift < length:
        # (a, b)[t] <- (a, b)[t - shift] then (a, b)[t]: now composes steps t-2*shift+1 .. t.
        # Updated copies, not in-place updates, so that autograd keeps the values it saved.
        composed = b.clone()
        composed[..., shift:].addcmul_(a[..., shift:], b[..., :-shift])
        b = composed
        if 2 * shift < length:  # the last step needs no products of a
            composed = a.clone()
            composed[..., shift:].mul_(a[..., :-shift])
            a = composed
        shift *= 2
    y = (b * C[:, None]).sum(dim=2)  # <C_t, h_t>; faster on CPU than einsum's batched matmul
    return y, b[..., -1]


def selective_scan_torch(
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
    chunk: int = CHUNK,
) -> torch.Tensor:
    """Selective scan with mamba-ssm's semantics; arguments as in :func:`pifnet_infer.ops.selective_scan`.

    State, accumulation and output are float32 (float64 if ``u`` is float64). With gradients enabled,
    each chunk is recomputed in the backward pass (activation checkpointing) so that training memory
    stays O(length) instead of O(length * d_state * log2(chunk)).
    """
    dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    u = u.to(dtype)
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    A, B, C = A.to(dtype), B.to(dtype), C.to(dtype)
    delta_u = delta * u
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (delta_u, A, B, C))
    out = torch.empty_like(u)  # written chunk by chunk: no list of small tensors fragmenting the heap
    for start in range(0, u.shape[-1], chunk):
        window = slice(start, start + chunk)
        args = (delta[..., window], delta_u[..., window], A, B[..., window], C[..., window], h)
        out[..., window], h = (
            checkpoint(_scan_chunk, *args, use_reentrant=False) if needs_grad else _scan_chunk(*args)
        )
    if D is not None:
        out = out + D.to(dtype)[:, None] * u
    if z is not None:
        out = out * F.silu(z.to(dtype))
    return out

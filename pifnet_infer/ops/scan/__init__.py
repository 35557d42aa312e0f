"""Selective scan (the S6 recurrence of Mamba) behind one function with four backends.

==========  ==========================================================  =================================
backend     implementation                                              runs on
==========  ==========================================================  =================================
``mamba``   mamba-ssm's compiled ``selective_scan_cuda`` kernel         CUDA, differentiable
``triton``  fused Triton kernel (:mod:`._triton`), forward only         CUDA (CPU under TRITON_INTERPRET=1,
                                                                        tests only, never chosen
                                                                        automatically)
``loop``    per-position loop on contiguous blocks (:mod:`._loop`),     any device (picked on the CPU),
            hand-written backward                                       differentiable
``torch``   chunked pure PyTorch (:mod:`._torch`), the reference        any device, differentiable
==========  ==========================================================  =================================

Selection: ``backend=`` argument, else ``$PIFNET_SCAN_BACKEND``, else the fastest available for the
device (see :mod:`pifnet_infer.ops.backend`).
"""

from __future__ import annotations

import os

import torch

from pifnet_infer.errors import ShapeMismatchError
from pifnet_infer.ops.backend import (
    Backend,
    BackendRegistry,
    all_of,
    cuda_probe,
    import_probe,
    lazy,
    register,
)

_PACKAGE = __name__
_FAST_DTYPES = frozenset({torch.float32, torch.bfloat16, torch.float16})


def _triton_runs_on(device: torch.device) -> bool:
    return device.type == "cuda" or (device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")


_REGISTRY = register(
    BackendRegistry(
        "selective_scan",
        "PIFNET_SCAN_BACKEND",
        [
            Backend(
                name="mamba",
                load=lazy(f"{_PACKAGE}._mamba", "selective_scan_mamba"),
                probe=all_of(
                    import_probe(
                        "selective_scan_cuda",
                        "mamba_ssm.ops.selective_scan_interface",
                        install='a plain "pip install mamba-ssm" skips this CUDA extension; '
                        "build it with MAMBA_FORCE_BUILD=TRUE (README, GPU section)",
                    ),
                    cuda_probe,
                ),
                supports=lambda device: device.type == "cuda",
                auto_devices=frozenset({"cuda"}),
                dtypes=_FAST_DTYPES,
            ),
            Backend(
                name="triton",
                load=lazy(f"{_PACKAGE}._triton", "selective_scan_triton"),
                probe=import_probe("triton", install='pip install "pifnet-infer[gpu]"'),
                supports=_triton_runs_on,
                auto_devices=frozenset({"cuda"}),
                dtypes=_FAST_DTYPES,
                differentiable=False,
            ),
            Backend(
                name="loop",
                load=lazy(f"{_PACKAGE}._loop", "selective_scan_loop"),
                probe=lambda: None,
                supports=lambda device: True,
                auto_devices=frozenset({"cpu"}),
            ),
            Backend(
                name="torch",
                load=lazy(f"{_PACKAGE}._torch", "selective_scan_torch"),
                probe=lambda: None,
                supports=lambda device: True,
                auto_devices=None,
            ),
        ],
    )
)


def _check_inputs(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    optional: dict[str, torch.Tensor | None],
) -> None:
    if u.ndim != 3 or u.shape[-1] < 1:
        raise ShapeMismatchError(
            f"u must be [batch, channels, length] with length >= 1, got shape {tuple(u.shape)!r}"
        )
    if A.ndim != 2:
        raise ShapeMismatchError(f"A must be [channels, d_state], got shape {tuple(A.shape)!r}")
    batch, channels, length = u.shape
    d_state = A.shape[1]
    expected = {
        "delta": (batch, channels, length),
        "A": (channels, d_state),
        "B": (batch, d_state, length),
        "C": (batch, d_state, length),
        "D": (channels,),
        "z": (batch, channels, length),
        "delta_bias": (channels,),
    }
    tensors = {"u": u, "delta": delta, "A": A, "B": B, "C": C, **optional}
    for name, tensor in tensors.items():
        if tensor is None:
            continue
        if not tensor.is_floating_point():
            raise TypeError(f"{name} must be a real floating-point tensor, got dtype {tensor.dtype}")
        if tensor.device != u.device:
            raise ValueError(
                f"{name} is on {tensor.device} but u is on {u.device}; move all inputs to one device"
            )
        if name != "u" and tuple(tensor.shape) != expected[name]:
            hint = (
                " (grouped B/C of shape [batch, groups, d_state, length] are not supported)"
                if name in ("B", "C")
                else ""
            )
            raise ShapeMismatchError(
                f"{name} must have shape {expected[name]!r} for u of shape {tuple(u.shape)!r} and A of shape "
                f"{tuple(A.shape)!r}, got {tuple(tensor.shape)!r}{hint}"
            )


def selective_scan(
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
    backend: str | None = None,
) -> torch.Tensor:
    """Selective scan with mamba-ssm's ``selective_scan_fn`` semantics (B and C: variable, one group).

    With ``delta <- softplus(delta + delta_bias)`` (each part optional), for every batch ``b``, channel
    ``k`` and position ``t``, from ``h = 0``::

        h_t[k, :] = exp(delta_t[k] * A[k, :]) * h_{t-1}[k, :] + delta_t[k] * u_t[k] * B_t[:]
        y_t[k]    = <C_t, h_t[k, :]> + D[k] * u_t[k],   then y *= silu(z)

    Args:
        u: input [batch, channels, length], float (float32/bfloat16/float16; float64 on ``torch``).
        delta: step sizes [batch, channels, length], same dtypes; positive after the optional softplus.
        A: state matrix [channels, d_state], real (usually negative: ``-exp(A_log)``).
        B: input projection [batch, d_state, length], shared by all channels.
        C: output projection [batch, d_state, length], shared by all channels.
        D: skip weights [channels], or ``None``.
        z: gate [batch, channels, length], or ``None``.
        delta_bias: [channels] added to ``delta`` before the softplus, or ``None``.
        delta_softplus: apply softplus to ``delta``.
        backend: ``"torch"``, ``"loop"``, ``"triton"``, ``"mamba"``, or ``None``/``"auto"`` (see module docstring).

    Returns:
        y [batch, channels, length], float32 whatever the input dtype (float64 for float64 ``u``); the
        state and all sums are kept in that precision.

    Raises:
        ShapeMismatchError: shapes do not match each other.
        TypeError: a tensor is not floating point.
        BackendUnavailableError: the requested backend cannot run here (no silent fallback).

    .. versionadded:: 0.1
    """
    optional = {"D": D, "z": z, "delta_bias": delta_bias}
    _check_inputs(u, delta, A, B, C, optional)
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (u, delta, A, B, C, *optional.values()) if t is not None
    )
    chosen = _REGISTRY.select(u, backend, needs_grad=needs_grad)
    return chosen.load()(u, delta, A, B, C, D, z, delta_bias, delta_softplus)

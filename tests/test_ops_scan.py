"""Selective scan: every backend that runs here against a slow sequential loop written in this file.

The two CPU backends (``torch``, the chunked reference, and ``loop``, picked automatically on the CPU) run
the same cases; ``loop`` is also checked against ``torch`` directly, gradients included.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from pifnet_infer.errors import BackendUnavailableError, ShapeMismatchError
from pifnet_infer.ops import selective_scan
from pifnet_infer.ops.scan._loop import BLOCK, selective_scan_loop
from pifnet_infer.ops.scan._torch import CHUNK, selective_scan_torch

CPU_BACKENDS = ("torch", "loop")

OPTIONAL = ("D", "z", "delta_bias")


def sequential_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t; y_t = <C_t, h_t> + D u_t; y *= silu(z); one step at a time, fp64."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = torch.log1p(torch.exp(delta))
    h = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=torch.float64)
    ys = []
    for t in range(u.shape[-1]):
        h = (
            torch.exp(delta[:, :, t, None] * A) * h
            + (delta[:, :, t] * u[:, :, t])[:, :, None] * B[:, None, :, t]
        )
        ys.append((h * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D.double()[:, None] * u
    if z is not None:
        z = z.double()
        y = y * z * torch.sigmoid(z)
    return y


def make_inputs(
    batch, channels, d_state, length, *, dtype=torch.float64, seed=0, with_=OPTIONAL, softplus=True
):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    delta = randn(batch, channels, length) - 1.0
    delta_bias = 0.5 * randn(channels)
    if not softplus:  # the recurrence wants positive steps; softplus would make them so
        delta, delta_bias = F.softplus(delta), delta_bias.abs()
    inputs = {
        "u": randn(batch, channels, length),
        "delta": delta,
        "A": -torch.exp(randn(channels, d_state).clamp(-2, 2.5)),  # decay rates 0.1 .. 12
        "B": randn(batch, d_state, length),
        "C": randn(batch, d_state, length),
        "D": randn(channels) if "D" in with_ else None,
        "z": randn(batch, channels, length) if "z" in with_ else None,
        "delta_bias": delta_bias if "delta_bias" in with_ else None,
    }
    return {k: None if v is None else v.to(dtype) for k, v in inputs.items()}


def rel_err(out, ref):
    """Max error relative to the output's scale (element-wise relative error is meaningless near 0)."""
    return ((out.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


CASES = [  # batch, channels, d_state, length, optional inputs, softplus
    (1, 4, 16, 1, OPTIONAL, True),
    (2, 3, 16, CHUNK, (), False),
    (1, 5, 16, CHUNK + 1, ("D",), True),
    (2, 4, 7, 2 * CHUNK + 13, ("z", "delta_bias"), False),
    (3, 2, 1, 97, OPTIONAL, False),
    (1, 8, 16, 3 * CHUNK, OPTIONAL, True),
    (2, 3, 5, 2 * BLOCK + 7, ("D", "delta_bias"), True),
]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize(("batch", "channels", "d_state", "length", "with_", "softplus"), CASES)
def test_fp32_matches_sequential_reference(batch, channels, d_state, length, with_, softplus, backend):
    x = make_inputs(batch, channels, d_state, length, dtype=torch.float32, with_=with_, softplus=softplus)
    ref = sequential_scan(**x, delta_softplus=softplus)
    out = selective_scan(**x, delta_softplus=softplus, backend=backend)
    assert out.dtype == torch.float32
    assert out.shape == (batch, channels, length)
    assert rel_err(out, ref) <= 1e-5


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 6),
    d_state=st.integers(1, 17),
    length=st.integers(1, 3 * CHUNK + 5),
    with_=st.lists(st.sampled_from(OPTIONAL), unique=True),
    softplus=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fp64_matches_sequential_reference(backend, batch, channels, d_state, length, with_, softplus, seed):
    x = make_inputs(batch, channels, d_state, length, with_=tuple(with_), softplus=softplus, seed=seed)
    out = selective_scan(**x, delta_softplus=softplus, backend=backend)
    assert out.dtype == torch.float64
    assert rel_err(out, sequential_scan(**x, delta_softplus=softplus)) <= 1e-10


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 6),
    d_state=st.integers(1, 17),
    length=st.integers(1, 3 * BLOCK + 5),
    with_=st.lists(st.sampled_from(OPTIONAL), unique=True),
    softplus=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_loop_matches_torch_reference(batch, channels, d_state, length, with_, softplus, dtype, seed):
    x = make_inputs(
        batch, channels, d_state, length, dtype=dtype, with_=tuple(with_), softplus=softplus, seed=seed
    )
    out = selective_scan(**x, delta_softplus=softplus, backend="loop")
    ref = selective_scan(**x, delta_softplus=softplus, backend="torch")
    assert out.dtype == ref.dtype
    assert rel_err(out, ref.double()) <= (1e-10 if dtype == torch.float64 else 1e-5)


def test_loop_is_chosen_automatically_on_the_cpu():
    x = make_inputs(1, 2, 3, 4, dtype=torch.float32)
    assert selective_scan(**x).shape == (1, 2, 4)
    from pifnet_infer.ops.scan import _REGISTRY

    assert _REGISTRY.select(x["u"]).name == "loop"


@pytest.mark.parametrize("chunk", [1, 5, 32, 1000])
def test_chunk_size_only_changes_rounding(chunk):
    x = make_inputs(2, 3, 16, 150, seed=3)
    out = selective_scan_torch(**x, delta_softplus=True, chunk=chunk)
    assert rel_err(out, selective_scan_torch(**x, delta_softplus=True)) <= 1e-13


@pytest.mark.parametrize("block", [1, 5, 32, 1000])
def test_block_size_only_changes_rounding(block):
    x = make_inputs(2, 3, 16, 150, seed=3)
    out = selective_scan_loop(**x, delta_softplus=True, block=block)
    assert rel_err(out, selective_scan_torch(**x, delta_softplus=True)) <= 1e-13


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_large_steps_stay_finite(backend):
    """delta*A down to -1e4: the decays underflow to 0 as they should; nothing overflows."""
    x = make_inputs(1, 4, 16, 2 * CHUNK + 1, seed=4, with_=(), softplus=False)
    x["delta"] = x["delta"] * 200.0
    out = selective_scan(**x, backend=backend)
    assert torch.isfinite(out).all()
    assert rel_err(out, sequential_scan(**x)) <= 1e-10


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_give_float32_output_computed_in_float32(dtype, backend):
    x = make_inputs(2, 3, 16, 70, dtype=dtype, seed=5)
    out = selective_scan(**x, backend=backend, delta_softplus=True)
    assert out.dtype == torch.float32
    upcast = {k: None if v is None else v.float() for k, v in x.items()}
    assert rel_err(out, sequential_scan(**upcast, delta_softplus=True)) <= 1e-5


def test_gradcheck_fp64():
    x = make_inputs(1, 2, 2, 9, seed=6)
    names = list(x)

    def fn(*tensors):  # chunk 4: gradients also flow through the state carried between chunks
        return selective_scan_torch(**dict(zip(names, tensors, strict=True)), delta_softplus=True, chunk=4)

    inputs = tuple(t.clone().requires_grad_(True) for t in x.values())
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, fast_mode=True)


def test_loop_gradcheck_fp64():
    x = make_inputs(1, 2, 2, 9, seed=6)
    names = list(x)

    def fn(*tensors):  # block 4: the adjoint also flows through the state carried between blocks
        return selective_scan_loop(**dict(zip(names, tensors, strict=True)), delta_softplus=True, block=4)

    inputs = tuple(t.clone().requires_grad_(True) for t in x.values())
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, fast_mode=True)


@pytest.mark.parametrize("block", [1, 7, BLOCK])
@pytest.mark.parametrize(("batch", "channels", "d_state", "length", "with_", "softplus"), CASES)
def test_loop_gradients_match_torch_reference(batch, channels, d_state, length, with_, softplus, block):
    x = make_inputs(batch, channels, d_state, length, with_=with_, softplus=softplus, seed=length)
    weight = torch.randn(
        batch, channels, length, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    grads = []
    for fn in (partial(selective_scan_loop, block=block), selective_scan_torch):
        leaves = {k: None if v is None else v.clone().requires_grad_(True) for k, v in x.items()}
        (fn(**leaves, delta_softplus=softplus) * weight).sum().backward()
        grads.append({k: v.grad for k, v in leaves.items() if v is not None})
    for name, ref in grads[1].items():
        assert rel_err(grads[0][name], ref) <= 1e-10, name


def test_gradient_matches_sequential_reference():
    """Gradients through the chunked, checkpointed scan equal those through the plain loop (fp64)."""
    x = make_inputs(2, 3, 4, CHUNK + 9, seed=7)
    grads = []
    for fn in (lambda **k: selective_scan(**k, backend="torch"), sequential_scan):
        leaves = {k: v.clone().requires_grad_(True) for k, v in x.items()}
        fn(**leaves, delta_softplus=True).square().sum().backward()
        grads.append([leaves[k].grad for k in x])
    for ours, ref in zip(*grads, strict=True):
        assert rel_err(ours, ref) <= 1e-10


@pytest.mark.slow
def test_memory_of_a_long_scan_stays_small():
    """Batch 1, 512 channels, d_state 16, L = 16384 (a 256-px HR tile): peak RSS grows < 300 MB."""
    code = (
        "import resource, torch\n"
        "from pifnet_infer.ops import selective_scan\n"
        "L = 16384\n"
        "u, delta = torch.randn(1, 512, L), torch.rand(1, 512, L)\n"
        "A, B, C = -torch.rand(512, 16), torch.randn(1, 16, L), torch.randn(1, 16, L)\n"
        "selective_scan(u[..., :64], delta[..., :64], A, B[..., :64], C[..., :64], backend='torch')\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "with torch.inference_mode():\n"
        "    selective_scan(u, delta, A, B, C, torch.ones(512), backend='torch')\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(result.stdout) < 300


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"B": torch.zeros(1, 2, 4, 5)}, ShapeMismatchError, "grouped"),
        ({"A": torch.zeros(3, 4, 1)}, ShapeMismatchError, "A must be"),
        ({"delta": torch.zeros(1, 3, 6)}, ShapeMismatchError, "delta must have shape"),
        ({"D": torch.zeros(4)}, ShapeMismatchError, r"D must have shape \(3,\)"),
        ({"u": torch.zeros(1, 3, 0)}, ShapeMismatchError, "length >= 1"),
        ({"C": torch.zeros(1, 4, 5, dtype=torch.int64)}, TypeError, "C must be a real floating-point"),
    ],
)
def test_bad_inputs_are_refused_with_the_expected_shape(change, error, match):
    x = make_inputs(1, 3, 4, 5, dtype=torch.float32)
    x.update(change)
    with pytest.raises(error, match=match):
        selective_scan(**x)


# ---- triton kernel (CPU: TRITON_INTERPRET=1 interpreter, small shapes) --------------------------------


def _triton_skip_reason() -> str | None:
    from pifnet_infer._utils.optional import try_import

    if try_import("triton") is None:
        return 'triton is not installed (pip install "pifnet-infer[gpu]")'
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        return "no CUDA device; set TRITON_INTERPRET=1 to run the triton kernel on the CPU interpreter"
    return None


TRITON_SKIP = _triton_skip_reason()
requires_triton = pytest.mark.skipif(TRITON_SKIP is not None, reason=TRITON_SKIP or "")
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

TRITON_CASES = [  # batch, channels, d_state, length, optional inputs, softplus
    (1, 2, 16, 1, OPTIONAL, True),
    (2, 3, 16, 16, (), False),
    (1, 2, 5, 45, ("D", "z", "delta_bias"), True),  # d_state not a power of two, length < block
]


def on_triton_device(x):
    return {k: None if v is None else v.to(TRITON_DEVICE) for k, v in x.items()}


@pytest.mark.triton
@requires_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("batch", "channels", "d_state", "length", "with_", "softplus"), TRITON_CASES)
def test_triton_matches_sequential_reference(batch, channels, d_state, length, with_, softplus, dtype):
    x = make_inputs(batch, channels, d_state, length, dtype=dtype, with_=with_, softplus=softplus, seed=8)
    with torch.inference_mode():
        out = selective_scan(**on_triton_device(x), delta_softplus=softplus, backend="triton")
    assert out.dtype == torch.float32
    # the reference sees the same rounded 16-bit inputs, and the kernel keeps its state in fp32: same bound
    assert rel_err(out.cpu(), sequential_scan(**x, delta_softplus=softplus)) <= 1e-5


@pytest.mark.triton
@requires_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_triton_carries_state_across_blocks(dtype):
    from pifnet_infer.ops.scan._triton import selective_scan_triton

    x = make_inputs(2, 2, 16, 45, dtype=dtype, seed=9)  # blocks of 16: two full ones and a partial one
    with torch.inference_mode():
        out = selective_scan_triton(**on_triton_device(x), delta_softplus=True, block_l=16)
    assert rel_err(out.cpu(), sequential_scan(**x, delta_softplus=True)) <= 1e-5


@pytest.mark.triton
@requires_triton
def test_triton_is_forward_only():
    x = on_triton_device(make_inputs(1, 2, 4, 8, dtype=torch.float32))
    x["u"].requires_grad_(True)
    with pytest.raises(BackendUnavailableError, match="forward-only"):
        selective_scan(**x, backend="triton")

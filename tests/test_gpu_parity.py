"""GPU parity: every fast backend against the torch backend on the same CUDA tensors (``pytest -m gpu``).

Bounds, as max |difference| / max |reference|:

- float32, and 16-bit inputs compared with the torch backend on the *same* rounded inputs: 1e-4. Every
  backend upcasts the inputs and keeps state and sums in float32, so only the order of the float32
  operations differs (observed ~1e-6).
- 16-bit inputs against the torch backend on the original float32 inputs (the accuracy cost of feeding
  the scan 16-bit activations): 10 unit roundoffs, 2e-2 for bfloat16 (u = 2^-9) and 5e-3 for float16
  (u = 2^-11). First order, y carries the relative rounding errors of u, delta, B and C (one u each) plus
  delta*A's in the exponent (|delta*A| up to a few here), i.e. about 6u for a single term, and the sum
  over states averages part of that away. Measured with the torch backend on the CPU for the model's
  shapes (512 channels, d_state 16, L = 1024 and 4096): bfloat16 4.2e-3 to 5.7e-3, float16 5.1e-4 to 5.4e-4.
- Deformable convolution in 16 bits: both backends compute in float32 and round the output once, so two
  results may differ by one output ulp: 2^-8 (bfloat16) or 2^-11 (float16) relative, bounded by 1e-2 and 2e-3.

TF32 is disabled: TF32 matmuls and convolutions are not float32-exact.
"""

from __future__ import annotations

import pytest
import torch

from pifnet_infer._utils.optional import try_import
from pifnet_infer.errors import BackendUnavailableError
from pifnet_infer.ops import deform_conv2d, selective_scan

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SAME_INPUT_BOUND = 1e-4
INPUT_ROUNDING_BOUND = {torch.bfloat16: 2e-2, torch.float16: 5e-3}
DEFORM_BOUND = {torch.float32: 1e-4, torch.bfloat16: 1e-2, torch.float16: 2e-3}


@pytest.fixture(autouse=True)
def _no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def rel_err(out, ref):
    return ((out.double() - ref.double()).abs().max() / ref.double().abs().max().clamp_min(1e-30)).item()


def require_backend(op, *args, backend, **kwargs):
    """Run ``op`` on ``backend`` or skip with the selector's reason."""
    try:
        return op(*args, backend=backend, **kwargs)
    except BackendUnavailableError as err:
        pytest.skip(str(err))


def scan_inputs(batch, channels, d_state, length, *, full, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, device="cuda")

    x = {
        "u": randn(batch, channels, length),
        "delta": torch.nn.functional.softplus(randn(batch, channels, length) - 2.0),
        "A": -torch.arange(1, d_state + 1, device="cuda", dtype=torch.float32).repeat(channels, 1),
        "B": randn(batch, d_state, length),
        "C": randn(batch, d_state, length),
        "D": randn(channels),
    }
    if full:
        x |= {
            "z": randn(batch, channels, length),
            "delta_bias": 0.5 * randn(channels),
            "delta_softplus": True,
        }
        x["delta"] = randn(batch, channels, length) - 1.0
    return x


SCAN_SHAPES = [  # batch, channels, d_state, length
    (1, 512, 16, 1024),
    (2, 512, 16, 4096),
    (1, 512, 16, 16384),
    (1, 512, 16, 65536),
    (4, 128, 16, 1000),
    (1, 64, 16, 1),
    (3, 32, 5, 333),
    (2, 16, 1, 129),
]


@pytest.mark.parametrize("backend", ["triton", "mamba"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("full", [False, True], ids=["model-call", "all-options"])
@pytest.mark.parametrize("shape", SCAN_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_scan_backend_matches_torch(backend, dtype, full, shape):
    x32 = scan_inputs(*shape, full=full)
    x = {k: v.to(dtype) if k in ("u", "delta", "B", "C", "z") else v for k, v in x32.items()}
    with torch.inference_mode():
        out = require_backend(selective_scan, **x, backend=backend)
        same_input = selective_scan(**x, backend="torch")
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all()
        assert rel_err(out, same_input) <= SAME_INPUT_BOUND
        if dtype != torch.float32:
            assert rel_err(out, selective_scan(**x32, backend="torch")) <= INPUT_ROUNDING_BOUND[dtype]


def test_mamba_backend_gradients_match_torch():
    x = scan_inputs(2, 64, 16, 700, full=True)
    grads = []
    for backend in ("torch", "mamba"):
        leaves = {k: v.clone().requires_grad_(True) if torch.is_tensor(v) else v for k, v in x.items()}
        require_backend(selective_scan, **leaves, backend=backend).square().mean().backward()
        grads.append({k: v.grad for k, v in leaves.items() if torch.is_tensor(v)})
    for name in grads[0]:
        assert rel_err(grads[1][name], grads[0][name]) <= 1e-3, name


DEFORM_SHAPES = [  # batch, cin, cout, height, width, padding
    (1, 64, 64, 64, 64, 1),
    (2, 64, 64, 32, 48, 1),
    (4, 8, 16, 17, 9, 0),
    (1, 3, 5, 1, 7, 2),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", DEFORM_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_deform_conv_torchvision_matches_torch(dtype, shape):
    batch, cin, cout, height, width, padding = shape
    g = torch.Generator(device="cuda").manual_seed(1)
    out_h, out_w = height + 2 * padding - 2, width + 2 * padding - 2

    def randn(*s):
        return torch.randn(*s, generator=g, device="cuda").to(dtype)

    args = (randn(batch, cin, height, width), 3 * randn(batch, 18, out_h, out_w), randn(cout, cin, 3, 3))
    kwargs = {"bias": randn(cout), "padding": padding}
    with torch.inference_mode():
        out = require_backend(deform_conv2d, *args, backend="torchvision", **kwargs)
        ref = deform_conv2d(*args, backend="torch", **kwargs)
    assert out.dtype == dtype
    assert rel_err(out, ref) <= DEFORM_BOUND[dtype]


@pytest.mark.parametrize(
    ("scan", "deform"), [("triton", "torch"), ("mamba", "torch"), ("torch", "torchvision")]
)
def test_whole_model_matches_across_backends(scan, deform, monkeypatch):
    models = try_import("pifnet_infer.models")
    if models is None:
        pytest.skip("pifnet_infer.models does not import")
    from pifnet_infer.config import get_preset

    torch.manual_seed(0)
    model = models.PIFNet(get_preset("chikusei")).cuda().eval()
    lr_hsi = torch.rand(2, 128, 16, 16, device="cuda")
    hr_msi = torch.rand(2, 4, 64, 64, device="cuda")
    outputs = []
    for scan_backend, deform_backend in (("torch", "torch"), (scan, deform)):
        monkeypatch.setenv("PIFNET_SCAN_BACKEND", scan_backend)
        monkeypatch.setenv("PIFNET_DEFORM_BACKEND", deform_backend)
        with torch.inference_mode():
            try:
                outputs.append(model(lr_hsi, hr_msi))
            except BackendUnavailableError as err:
                pytest.skip(str(err))
    assert rel_err(outputs[1], outputs[0]) <= SAME_INPUT_BOUND

"""Deformable convolution: the grid_sample path against an explicit bilinear reference written here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from pifnet_infer._utils.optional import try_import
from pifnet_infer.errors import ShapeMismatchError
from pifnet_infer.ops import deform_conv2d


def bilinear(img, y, x):
    """Sample img [C, H, W] at float positions y, x [P] the way torchvision's DCN kernel does -> [C, P]."""
    _, height, width = img.shape
    inside_image = (y > -1) & (y < height) & (x > -1) & (x < width)
    y0, x0 = torch.floor(y), torch.floor(x)
    out = torch.zeros(img.shape[0], y.numel(), dtype=img.dtype)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            valid = inside_image & (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
            values = img[:, yy.long().clamp(0, height - 1), xx.long().clamp(0, width - 1)]
            out += values * (wy * wx * valid)
    return out


def reference_deform_conv(x, offset, weight, bias, padding):
    """Output (y, x) = bias + sum over taps (ki, kj) and Cin of W * S(y - p + ki + dy, x - p + kj + dx)."""
    batch = x.shape[0]
    out_channels, _, kh, kw = weight.shape
    out_h, out_w = offset.shape[-2:]
    oy, ox = torch.meshgrid(torch.arange(out_h), torch.arange(out_w), indexing="ij")
    out = torch.zeros(batch, out_channels, out_h * out_w, dtype=x.dtype)
    for b in range(batch):
        for ki in range(kh):
            for kj in range(kw):
                k = ki * kw + kj
                py = (oy - padding + ki + offset[b, 2 * k]).flatten()
                px = (ox - padding + kj + offset[b, 2 * k + 1]).flatten()
                out[b] += weight[:, :, ki, kj] @ bilinear(x[b], py, px)
    if bias is not None:
        out += bias[None, :, None]
    return out.view(batch, out_channels, out_h, out_w)


def make_inputs(batch, cin, cout, height, width, kh, kw, padding, *, spread=2.0, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    out_h, out_w = height + 2 * padding - kh + 1, width + 2 * padding - kw + 1
    return {
        "x": torch.randn(batch, cin, height, width, generator=g, dtype=torch.float64),
        "offset": spread * torch.randn(batch, 2 * kh * kw, out_h, out_w, generator=g, dtype=torch.float64),
        "weight": torch.randn(cout, cin, kh, kw, generator=g, dtype=torch.float64),
        "bias": torch.randn(cout, generator=g, dtype=torch.float64) if bias else None,
    }


def rel_err(out, ref):
    return ((out.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(1, 2),
    cin=st.integers(1, 4),
    cout=st.integers(1, 3),
    height=st.integers(1, 7),
    width=st.integers(1, 7),
    kernel=st.sampled_from([(3, 3), (1, 1), (2, 3)]),
    padding=st.integers(0, 2),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fp64_matches_explicit_bilinear_reference(
    batch, cin, cout, height, width, kernel, padding, bias, seed
):
    kh, kw = kernel
    if height + 2 * padding < kh or width + 2 * padding < kw:
        return
    x = make_inputs(batch, cin, cout, height, width, kh, kw, padding, bias=bias, seed=seed)
    out = deform_conv2d(**x, padding=padding, backend="torch")
    assert out.dtype == torch.float64
    assert rel_err(out, reference_deform_conv(**x, padding=padding)) <= 1e-12


@pytest.mark.parametrize("shape", [(2, 5, 4, 9, 11), (1, 3, 2, 1, 6), (1, 2, 3, 16, 16)])
def test_fp32_matches_explicit_bilinear_reference(shape):
    x = make_inputs(*shape, 3, 3, 1, spread=3.0, seed=1)
    out = deform_conv2d(**{k: v.float() for k, v in x.items()})
    assert out.dtype == torch.float32
    assert rel_err(out, reference_deform_conv(**x, padding=1)) <= 1e-5


def test_zero_offsets_reduce_to_conv2d():
    x = make_inputs(2, 3, 4, 8, 6, 3, 3, 1, spread=0.0, seed=2)
    assert rel_err(deform_conv2d(**x), F.conv2d(x["x"], x["weight"], x["bias"], padding=1)) <= 1e-13


def test_points_on_or_beyond_the_border_read_zero_and_half_a_pixel_in_reads_half():
    """1x1 kernel, no padding: every output pixel samples one chosen point of the input."""
    x = torch.arange(1.0, 13.0, dtype=torch.float64).view(1, 1, 3, 4)
    weight = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    rows = torch.arange(3.0, dtype=torch.float64)[:, None].expand(3, 4)

    def sample_rows_at(target_row):
        offset = torch.zeros(1, 2, 3, 4, dtype=torch.float64)
        offset[0, 0] = target_row - rows
        return deform_conv2d(x, offset, weight, torch.tensor([0.5], dtype=torch.float64), padding=0)[0, 0]

    bias_only = torch.full((3, 4), 0.5, dtype=torch.float64)
    close = {"rtol": 0.0, "atol": 1e-12}  # positions pass through grid_sample's normalisation: rounding only
    torch.testing.assert_close(sample_rows_at(-1.0), bias_only, **close)
    torch.testing.assert_close(sample_rows_at(3.0), bias_only, **close)
    torch.testing.assert_close(sample_rows_at(2.5), 0.5 + 0.5 * x[0, 0, 2].expand(3, 4), **close)
    torch.testing.assert_close(sample_rows_at(-0.25), 0.5 + 0.75 * x[0, 0, 0].expand(3, 4), **close)


def test_offset_channels_are_dy_dx_pairs_per_tap_row_major():
    """Moving only tap (0, 2)'s dx by +1 equals a conv with that tap's weight shifted to a wider kernel."""
    x = make_inputs(1, 2, 2, 6, 7, 3, 3, 1, spread=0.0, seed=3)
    x["offset"][:, 2 * 2 + 1] = 1.0  # tap k = 0*3 + 2, channel 2k+1 = dx
    wide = torch.zeros(2, 2, 3, 4, dtype=torch.float64)
    wide[..., :3] = x["weight"]
    wide[:, :, 0, 2] = 0.0
    wide[:, :, 0, 3] = x["weight"][:, :, 0, 2]
    expected = F.conv2d(F.pad(x["x"], (1, 2, 1, 1)), wide, x["bias"])
    assert rel_err(deform_conv2d(**x), expected) <= 1e-13


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_are_sampled_in_float32(dtype):
    x = make_inputs(1, 4, 3, 20, 20, 3, 3, 1, spread=4.0, seed=4)
    half = {k: v.to(dtype) for k, v in x.items()}
    out = deform_conv2d(**half)
    assert out.dtype == dtype
    expected = reference_deform_conv(**{k: v.double() for k, v in half.items()}, padding=1)
    assert rel_err(out, expected) <= 1e-2  # only the final rounding to 16 bits (2**-8 relative) remains


def test_gradcheck_fp64():
    x = make_inputs(1, 2, 2, 3, 4, 3, 3, 1, spread=0.7, seed=5)
    inputs = tuple(v.clone().requires_grad_(True) for v in x.values())
    assert torch.autograd.gradcheck(lambda *t: deform_conv2d(*t), inputs, eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "match"),
    [
        ({"offset": torch.zeros(1, 9, 5, 6)}, {}, ShapeMismatchError, r"offset must be .*\(1, 18, 5, 6\)"),
        ({"weight": torch.zeros(4, 3, 3, 3)}, {}, ShapeMismatchError, "same Cin"),
        ({"bias": torch.zeros(3)}, {}, ShapeMismatchError, r"bias must have shape \(4,\)"),
        ({}, {"padding": 0}, ShapeMismatchError, r"\(1, 18, 3, 4\)"),
        ({}, {"padding": -1}, ValueError, "padding must be an integer"),
        ({"x": torch.zeros(1, 2, 5, 6, dtype=torch.int32)}, {}, TypeError, "x must be a floating-point"),
    ],
)
def test_bad_inputs_are_refused(change, kwargs, error, match):
    x = {k: v.float() for k, v in make_inputs(1, 2, 4, 5, 6, 3, 3, 1).items()}
    x.update(change)
    with pytest.raises(error, match=match):
        deform_conv2d(**x, **kwargs)


TORCHVISION_OPS = try_import("torchvision.ops")


@pytest.mark.skipif(
    TORCHVISION_OPS is None,
    reason="torchvision absent or not importable (PyPI torchvision raises RuntimeError beside CPU-only torch)",
)
@pytest.mark.parametrize("padding", [0, 1, 2])
def test_matches_torchvision(padding):
    x = make_inputs(2, 3, 4, 7, 9, 3, 3, padding, spread=3.0, seed=6)
    expected = TORCHVISION_OPS.deform_conv2d(x["x"], x["offset"], x["weight"], x["bias"], padding=padding)
    assert rel_err(deform_conv2d(**x, padding=padding, backend="torch"), expected) <= 1e-12

"""The four VMamba scan orders and their merge, checked against spec section 5.3's index formulas."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pifnet_infer.errors import ShapeMismatchError
from pifnet_infer.ops import cross_merge, cross_scan


def positions(i, j, height, width):
    """Sequence index of pixel (i, j) in s0, s1, s2, s3 (spec section 5.3 step 3)."""
    length = height * width
    return (i * width + j, j * height + i, length - 1 - (i * width + j), length - 1 - (j * height + i))


@pytest.mark.parametrize(("height", "width"), [(3, 5), (4, 4), (1, 6), (6, 1)])
def test_cross_scan_follows_the_spec_index_formulas(height, width):
    d = 2
    x = torch.arange(2 * d * height * width, dtype=torch.float32).view(2, d, height, width)
    u = cross_scan(x)
    assert u.shape == (2, 4 * d, height * width)
    for i in range(height):
        for j in range(width):
            for k, t in enumerate(positions(i, j, height, width)):
                assert torch.equal(u[:, k * d : (k + 1) * d, t], x[:, :, i, j])


@pytest.mark.parametrize(("height", "width"), [(3, 5), (2, 2), (1, 4)])
def test_cross_merge_follows_the_spec_index_formula(height, width):
    d = 3
    y = torch.randn(2, 4 * d, height * width, dtype=torch.float64)
    merged = cross_merge(y, height, width)
    assert merged.shape == (2, d, height, width)
    for i in range(height):
        for j in range(width):
            expected = sum(y[:, k * d : (k + 1) * d, t] for k, t in enumerate(positions(i, j, height, width)))
            torch.testing.assert_close(merged[:, :, i, j], expected, rtol=0, atol=1e-14)


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 2), d=st.integers(1, 4), height=st.integers(1, 9), width=st.integers(1, 9))
def test_merge_is_the_adjoint_of_scan(batch, d, height, width):
    g = torch.Generator().manual_seed(height * 31 + width)
    x = torch.randn(batch, d, height, width, generator=g, dtype=torch.float64)
    y = torch.randn(batch, 4 * d, height * width, generator=g, dtype=torch.float64)
    torch.testing.assert_close((cross_scan(x) * y).sum(), (x * cross_merge(y, height, width)).sum())
    torch.testing.assert_close(cross_merge(cross_scan(x), height, width), 4 * x)


def test_bad_shapes_are_refused():
    with pytest.raises(ShapeMismatchError, match=r"\[B, d, H, W\]"):
        cross_scan(torch.zeros(2, 3, 4))
    with pytest.raises(ShapeMismatchError, match=r"\[B, 4\*d, 12\]"):
        cross_merge(torch.zeros(1, 8, 10), 3, 4)
    with pytest.raises(ShapeMismatchError, match=r"got shape \(1, 6, 12\)"):
        cross_merge(torch.zeros(1, 6, 12), 3, 4)

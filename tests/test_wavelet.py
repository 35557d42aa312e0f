import pytest
import torch

from pifnet_infer.models.wavelet import haar_dwt, haar_iwt


def test_hand_worked_2x2_block():
    # one 2x2 block [[a, b], [c, d]] = [[1, 2], [3, 4]]
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    ll, hl, lh, hh = (t.item() for t in haar_dwt(x))
    assert ll == pytest.approx((1 + 2 + 3 + 4) / 2)
    assert hl == pytest.approx((-1 + 2 - 3 + 4) / 2)  # odd minus even columns
    assert lh == pytest.approx((-1 - 2 + 3 + 4) / 2)  # odd minus even rows
    assert hh == pytest.approx((1 - 2 - 3 + 4) / 2)


@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (1, 1, 2, 2), (1, 4, 16, 32)])
def test_perfect_reconstruction_and_energy(shape):
    x = torch.randn(*shape, dtype=torch.float64)
    bands = haar_dwt(x)
    assert all(b.shape == (*shape[:2], shape[2] // 2, shape[3] // 2) for b in bands)
    # orthonormal: energy preserved
    assert sum(float((b**2).sum()) for b in bands) == pytest.approx(float((x**2).sum()), rel=1e-12)
    y = haar_iwt(torch.cat(bands, dim=1))
    torch.testing.assert_close(y, x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", [(7, 6), (6, 9), (5, 5), (1, 3), (3, 1)])
def test_odd_sizes_are_padded_and_cropped_back(size):
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    bands = haar_dwt(x)
    assert bands[0].shape[-2:] == ((size[0] + 1) // 2, (size[1] + 1) // 2)
    y = haar_iwt(torch.cat(bands, dim=1), size=size)
    torch.testing.assert_close(y, x, rtol=0, atol=1e-12)

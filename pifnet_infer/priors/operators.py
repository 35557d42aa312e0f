"""The spatial degradation D (PSF blur + decimation) as a linear operator with its exact adjoint.

:class:`BlurDecimate` computes what :func:`pifnet_infer.simulate.degrade_spatial` computes
(same PSF geometry, reflect padding at the borders) for a fixed HR size, and adds
:meth:`BlurDecimate.adjoint`, the transpose D^T, needed by least-squares solvers:
``<D x, y> == <x, D^T y>`` to rounding error. Padding and cropping are written as one gather of
rows and columns (index maps), so the adjoint is the matching scatter-add (``index_add_``) after a
transposed strided convolution.

.. versionadded:: 0.1
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from pifnet_infer.errors import ShapeMismatchError
from pifnet_infer.simulate import PSF, PSFArg, gaussian_psf, resolve_psf


def gaussian_psf_at(sigma: float, centre: float) -> PSF:
    """A Gaussian PSF of width ``sigma`` (HR pixels) whose centre falls at ``centre`` in each r x r block.

    Args:
        sigma: standard deviation in HR pixels, > 0.
        centre: offset 0 ... r-1 inside the block, integer or half-integer (0: top-left pixel,
            (r-1)/2: block centre). Integer centres get an odd kernel, half-integers an even one,
            of half-width at least 3 sigma.

    Returns:
        A :class:`~pifnet_infer.simulate.PSF`.
    """
    if (2 * centre) % 1:
        raise ValueError(f"centre must be an integer or a half-integer, got {centre!r}")
    if float(centre).is_integer():
        size = 2 * math.ceil(3 * sigma) + 1
    else:
        size = 2 * math.ceil(3 * sigma + 0.5)
    return PSF(gaussian_psf(size, sigma), float(centre))


def _reflect_indices(length: int, ratio: int, size: int, first: int) -> torch.Tensor:
    """Source index of every padded position ``first ... last`` along one axis (reflect at 0 and length-1)."""
    n_out = length // ratio
    if n_out == 0:
        raise ShapeMismatchError(f"an axis of {length} pixels is shorter than ratio {ratio}")
    pos = np.arange(first, ratio * (n_out - 1) + first + size)
    src = np.where(pos < 0, -pos, pos)
    src = np.where(src > length - 1, 2 * (length - 1) - src, src)
    if src.min() < 0 or src.max() > length - 1:
        raise ShapeMismatchError(
            f"an axis of {length} pixels is too small for a {size}-tap PSF at ratio {ratio} "
            "(reflect padding needs more pixels than the padding); use a larger image or a narrower PSF"
        )
    return torch.from_numpy(src.astype(np.int64))


def decimation_matrix(kernel_1d: np.ndarray, centre: float, ratio: int, length: int) -> np.ndarray:
    """The 1-D blur-and-decimate operator of one axis as a float64 (length // ratio, length) matrix.

    For a separable PSF ``outer(g, g)``, ``D(x) = A @ x @ A.T`` with ``A = decimation_matrix(g, ...)``
    (same geometry and reflect padding as :class:`BlurDecimate`).
    """
    g = np.asarray(kernel_1d, dtype=np.float64)
    size = g.shape[0]
    src = _reflect_indices(length, ratio, size, round(centre - (size - 1) / 2)).numpy()
    n_out = length // ratio
    matrix = np.zeros((n_out, length))
    rows = np.repeat(np.arange(n_out), size)
    cols = src[(ratio * np.arange(n_out))[:, None] + np.arange(size)[None, :]].ravel()
    np.add.at(matrix, (rows, cols), np.tile(g[::-1], n_out))
    return matrix


class BlurDecimate:
    """D: (..., H, W) -> (..., H // r, W // r), blur by a PSF then keep one pixel per r x r block.

    Args:
        psf: ``"official"``, ``"mtf"``, a (k, k) kernel or a :class:`~pifnet_infer.simulate.PSF`.
        ratio: decimation factor r.
        hr_shape: (H, W) of the inputs; pixels beyond the last full block are ignored by D
            (and receive 0 from D^T).
        device: where the kernel and index maps live.
        dtype: floating dtype of the kernel (inputs are cast to it).
    """

    def __init__(
        self,
        psf: PSFArg,
        ratio: int,
        hr_shape: tuple[int, int],
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.psf = resolve_psf(psf, ratio)
        self.ratio = int(ratio)
        self.hr_shape = (int(hr_shape[0]), int(hr_shape[1]))
        self.lr_shape = (self.hr_shape[0] // self.ratio, self.hr_shape[1] // self.ratio)
        size = self.psf.kernel.shape[0]
        first = round(self.psf.centre - (size - 1) / 2)
        self._rows = _reflect_indices(self.hr_shape[0], self.ratio, size, first).to(device)
        self._cols = _reflect_indices(self.hr_shape[1], self.ratio, size, first).to(device)
        kernel = np.ascontiguousarray(self.psf.kernel[::-1, ::-1])
        self._weight = torch.from_numpy(kernel).to(device=device, dtype=dtype)[None, None]

    def _flat(self, x: torch.Tensor, shape: tuple[int, int], name: str) -> torch.Tensor:
        if tuple(x.shape[-2:]) != shape:
            raise ShapeMismatchError(f"{name} must end in {shape}, got shape {tuple(x.shape)}")
        return x.reshape(-1, 1, *shape).to(self._weight.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """D x for x of shape (..., H, W): (..., H // r, W // r)."""
        flat = self._flat(x, self.hr_shape, "x")
        padded = flat.index_select(2, self._rows).index_select(3, self._cols)
        out = F.conv2d(padded, self._weight, stride=self.ratio)
        return out.reshape(*x.shape[:-2], *self.lr_shape)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """D^T y for y of shape (..., H // r, W // r): (..., H, W)."""
        flat = self._flat(y, self.lr_shape, "y")
        padded = F.conv_transpose2d(flat, self._weight, stride=self.ratio)
        n = flat.shape[0]
        height, width = self.hr_shape
        cols = padded.new_zeros(n, 1, padded.shape[2], width).index_add_(3, self._cols, padded)
        out = padded.new_zeros(n, 1, height, width).index_add_(2, self._rows, cols)
        return out.reshape(*y.shape[:-2], height, width)

    def gram(self, x: torch.Tensor) -> torch.Tensor:
        """D^T D x, same shape as x."""
        return self.adjoint(self(x))

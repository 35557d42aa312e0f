"""Wald-protocol simulation: make an (LR-HSI, HR-MSI) pair from a reference HR-HSI.

The LR-HSI is the reference blurred by a point spread function (PSF) and decimated
by ``ratio``; the HR-MSI is the reference projected through a sensor's spectral
responses (:mod:`pifnet_infer.srf`). Both may get Gaussian noise at a given SNR.

PSF presets:

- ``"official"``: the PIF-Net code (spec section 11): 3x3 Gaussian, sigma 0.5 (1-D weights
  0.10651, 0.78699, 0.10651), reflect padding, then nearest decimation that keeps pixel
  (r*i, r*j), the top-left pixel of each r x r block.
- ``"mtf"``: the Gaussian matched to a sensor MTF (Aiazzi et al., MTF-GLP). A Gaussian of
  standard deviation sigma (HR pixels) has MTF(f) = exp(-2 pi^2 sigma^2 f^2), f in cycles per
  HR pixel. Setting the gain at the LR Nyquist frequency f = 1/(2r) to ``nyquist_gain`` g gives
  ``sigma = r * sqrt(-2 ln g) / pi`` (r = 4, g = 0.3: sigma = 1.976). The kernel has the parity
  of r and half-width at least 3 sigma (size ``2*ceil(3 sigma) + 1`` for odd r,
  ``2*ceil(3 sigma + 0.5)`` for even r; 14 for r = 4), so its centre falls exactly on the
  centre of each r x r block: LR pixel i then represents HR pixels r*i ... r*i + r - 1, the
  geometry that bicubic upsampling with ``align_corners=False`` assumes.

Arrays are channel-first (bands, H, W) float32. Sizes that are not multiples of ``ratio``
are cropped to the largest multiple, keeping the top-left corner (:func:`crop_to_ratio`).

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from pifnet_infer.errors import ShapeMismatchError
from pifnet_infer.srf import SpectralResponse, srf_matrix

_logger = logging.getLogger(__name__)

#: sigma and size of the official PIF-Net blur (spec section 11)
OFFICIAL_SIGMA = 0.5
OFFICIAL_KERNEL_SIZE = 3
#: default MTF gain at the LR Nyquist frequency for the ``"mtf"`` preset
DEFAULT_NYQUIST_GAIN = 0.3

_CHUNK_BYTES = 64 * 2**20

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


@dataclass(frozen=True, eq=False)
class PSF:
    """A point spread function and where it is sampled.

    Args:
        kernel: float64 (k, k), non-negative weights summing to 1, applied as a convolution.
        centre: HR offset (0 ... r-1, may be a half-integer) inside each r x r block on which the
            kernel centre falls when decimating; 0 keeps the top-left pixel, (r-1)/2 is the block centre.
    """

    kernel: np.ndarray
    centre: float


PSFArg = Literal["official", "mtf"] | np.ndarray | PSF


def gaussian_psf(kernel_size: int, sigma: float) -> np.ndarray:
    """Sampled 2-D Gaussian, float64 (k, k), summing to 1.

    Taps sit at ``arange(k) - (k - 1) / 2`` (half-integers for even k), as torchvision's
    ``GaussianBlur``: ``gaussian_psf(3, 0.5)`` has 1-D weights (0.10651, 0.78699, 0.10651).
    """
    if not isinstance(kernel_size, int) or kernel_size < 1:
        raise ValueError(f"kernel_size must be a positive int, got {kernel_size!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    x = np.arange(kernel_size, dtype=np.float64) - (kernel_size - 1) / 2
    g = np.exp(-0.5 * (x / sigma) ** 2)
    g /= g.sum()
    return np.outer(g, g)


def mtf_sigma(ratio: int, nyquist_gain: float = DEFAULT_NYQUIST_GAIN) -> float:
    """Standard deviation (HR pixels) of the Gaussian whose MTF is ``nyquist_gain`` at the LR Nyquist frequency."""
    if not 0 < nyquist_gain < 1:
        raise ValueError(f"nyquist_gain must be in (0, 1), got {nyquist_gain!r}")
    return ratio * math.sqrt(-2.0 * math.log(nyquist_gain)) / math.pi


def resolve_psf(psf: PSFArg, ratio: int, *, nyquist_gain: float = DEFAULT_NYQUIST_GAIN) -> PSF:
    """Turn a preset name, a kernel array or a :class:`PSF` into a :class:`PSF` for ``ratio``.

    A bare kernel array is normalised to sum 1 and centred on the block centre when its size
    has the parity of ``ratio``, otherwise half a pixel up-left of it.
    """
    _check_ratio(ratio)
    if isinstance(psf, str):
        if psf == "official":
            return PSF(gaussian_psf(OFFICIAL_KERNEL_SIZE, OFFICIAL_SIGMA), 0.0)
        if psf == "mtf":
            sigma = mtf_sigma(ratio, nyquist_gain)
            size = 2 * math.ceil(3 * sigma) + 1 if ratio % 2 else 2 * math.ceil(3 * sigma + 0.5)
            return PSF(gaussian_psf(size, sigma), (ratio - 1) / 2)
        raise ValueError(f"psf must be 'official', 'mtf', a 2-D kernel array or a PSF, got {psf!r}")
    kernel = np.asarray(psf.kernel if isinstance(psf, PSF) else psf, dtype=np.float64)
    if (
        kernel.ndim != 2
        or kernel.shape[0] != kernel.shape[1]
        or not np.all(np.isfinite(kernel))
        or kernel.sum() <= 0
    ):
        raise ValueError(
            f"a PSF kernel must be a square 2-D finite array with a positive sum, got shape {kernel.shape}"
        )
    if isinstance(psf, PSF):
        centre = float(psf.centre)
    else:
        centre = (ratio - 1) / 2 if (kernel.shape[0] - ratio) % 2 == 0 else (ratio - 2) / 2
    if ((kernel.shape[0] - 1) / 2 - centre) % 1:
        raise ValueError(
            f"PSF centre {centre!r} does not fall on a tap of a {kernel.shape[0]}-tap kernel; "
            "use an integer centre for odd kernels, a half-integer for even ones"
        )
    return PSF(kernel / kernel.sum(), centre)


def degrade_spatial(
    hsi: ArrayT, ratio: int, psf: PSFArg = "official", *, nyquist_gain: float = DEFAULT_NYQUIST_GAIN
) -> ArrayT:
    """Blur with a PSF and decimate by ``ratio``.

    Args:
        hsi: (bands, H, W) float array (numpy or torch; torch stays on its device).
        ratio: integer decimation factor r.
        psf: ``"official"``, ``"mtf"``, a (k, k) kernel or a :class:`PSF` (see module docstring).
        nyquist_gain: MTF gain at Nyquist for ``psf="mtf"``.

    Returns:
        (bands, H // r, W // r) float32, same array type as ``hsi``. Pixels beyond the last full
        r x r block are ignored; borders are reflect-padded.
    """
    ratio = _check_ratio(ratio)
    kernel = resolve_psf(psf, ratio, nyquist_gain=nyquist_gain)
    x = _as_tensor3(hsi, "hsi")
    out = _blur_decimate(x, ratio, kernel)
    return out if isinstance(hsi, torch.Tensor) else out.cpu().numpy()


def degrade_spectral(
    hsi: np.ndarray,
    srf: np.ndarray | tuple[str | SpectralResponse, Sequence[float], Sequence[float] | None],
) -> np.ndarray:
    """Project HSI bands to MSI bands: ``msi[k] = sum_j R[k, j] * hsi[j]``.

    Args:
        hsi: (C, H, W) float array.
        srf: the response matrix R (c, C), or ``(name or SpectralResponse, wavelengths_nm, fwhm_nm or None)``.

    Returns:
        (c, H, W) float32.
    """
    x = np.asarray(hsi, dtype=np.float32)
    if x.ndim != 3:
        raise ShapeMismatchError(f"hsi must be (bands, H, W), got shape {x.shape}")
    matrix = np.asarray(
        srf_matrix(srf[0], srf[1], srf[2]) if isinstance(srf, tuple) else srf, dtype=np.float32
    )
    if matrix.ndim != 2 or matrix.shape[1] != x.shape[0]:
        raise ShapeMismatchError(
            f"SRF matrix must be (msi_bands, {x.shape[0]}) for an HSI with {x.shape[0]} bands, got {matrix.shape}; "
            "build it from this HSI's wavelengths with pifnet_infer.srf.srf_matrix"
        )
    return (matrix @ x.reshape(x.shape[0], -1)).reshape(matrix.shape[0], *x.shape[1:])


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Add white Gaussian noise at ``snr_db`` per band (noise power = mean(x_b^2) / 10^(snr/10)).

    Args:
        x: (bands, H, W) float array.
        snr_db: signal-to-noise ratio in dB, the same for every band.
        rng: a numpy Generator or a seed.

    Returns:
        A new float32 array of the same shape.
    """
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 3:
        raise ShapeMismatchError(f"x must be (bands, H, W), got shape {arr.shape}")
    power = np.mean(np.square(arr, dtype=np.float64), axis=(1, 2))
    sigma = np.sqrt(power / 10.0 ** (snr_db / 10.0)).astype(np.float32)
    noise = np.random.default_rng(rng).standard_normal(arr.shape, dtype=np.float32)
    return arr + noise * sigma[:, None, None]


def crop_to_ratio(x: ArrayT, ratio: int) -> ArrayT:
    """Crop (..., H, W) to the largest multiple of ``ratio`` in both axes, keeping the top-left corner."""
    _check_ratio(ratio)
    height, width = x.shape[-2] - x.shape[-2] % ratio, x.shape[-1] - x.shape[-1] % ratio
    if height == 0 or width == 0:
        raise ShapeMismatchError(f"image of size {tuple(x.shape[-2:])} is smaller than ratio {ratio}")
    if (height, width) != tuple(x.shape[-2:]):
        _logger.info("cropping %s to %s (multiple of ratio %d)", tuple(x.shape[-2:]), (height, width), ratio)
    return x[..., :height, :width]


def simulate_pair(
    reference: np.ndarray,
    ratio: int,
    *,
    srf: str | SpectralResponse | np.ndarray,
    wavelengths_nm: Sequence[float] | np.ndarray | None = None,
    fwhm_nm: Sequence[float] | np.ndarray | None = None,
    psf: PSFArg = "official",
    snr_db: float | tuple[float, float] | None = None,
    seed: int = 0,
    nyquist_gain: float = DEFAULT_NYQUIST_GAIN,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate an (LR-HSI, HR-MSI) pair from a reference HR-HSI (Wald protocol).

    Args:
        reference: (C, H, W) float array; cropped to multiples of ``ratio`` (top-left kept) first,
            so compare results with ``crop_to_ratio(reference, ratio)``.
        ratio: integer scale factor r.
        srf: an SRF name or :class:`~pifnet_infer.srf.SpectralResponse` (needs ``wavelengths_nm``),
            or a ready (c, C) response matrix.
        wavelengths_nm: HSI band centres (C,) in nm; required with an SRF name.
        fwhm_nm: HSI band widths (C,) in nm, or None.
        psf: spatial degradation (see :func:`degrade_spatial`).
        snr_db: None (no noise), one SNR for both images, or (hsi_snr_db, msi_snr_db).
        seed: seed of the noise generator.
        nyquist_gain: MTF gain at Nyquist for ``psf="mtf"``.

    Returns:
        ``(lr_hsi, hr_msi)``: float32 (C, H/r, W/r) and (c, H, W).
    """
    ref = np.asarray(reference, dtype=np.float32)
    if ref.ndim != 3:
        raise ShapeMismatchError(f"reference must be (bands, H, W), got shape {ref.shape}")
    ref = crop_to_ratio(ref, ratio)
    if isinstance(srf, np.ndarray):
        matrix = srf
    else:
        if wavelengths_nm is None:
            raise ValueError(
                f"srf={getattr(srf, 'name', srf)!r} needs wavelengths_nm (the reference's band centres)"
            )
        if len(wavelengths_nm) != ref.shape[0]:
            raise ShapeMismatchError(
                f"wavelengths_nm has {len(wavelengths_nm)} entries but the reference has {ref.shape[0]} bands"
            )
        matrix = srf_matrix(srf, wavelengths_nm, fwhm_nm)
    lr = degrade_spatial(ref, ratio, psf, nyquist_gain=nyquist_gain)
    msi = degrade_spectral(ref, matrix)
    if snr_db is not None:
        hsi_snr, msi_snr = snr_db if isinstance(snr_db, tuple) else (snr_db, snr_db)
        rng = np.random.default_rng(seed)
        lr, msi = add_noise(lr, float(hsi_snr), rng), add_noise(msi, float(msi_snr), rng)
    return lr, msi


def _check_ratio(ratio: int) -> int:
    if not isinstance(ratio, int | np.integer) or isinstance(ratio, bool) or ratio < 1:
        raise ValueError(f"ratio must be a positive int, got {ratio!r}")
    return int(ratio)


def _as_tensor3(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    if t.ndim != 3:
        raise ShapeMismatchError(f"{name} must be (bands, H, W), got shape {tuple(t.shape)}")
    return t.to(torch.float32)


def _blur_decimate(x: torch.Tensor, ratio: int, psf: PSF) -> torch.Tensor:
    """(N, H, W) -> (N, H//r, W//r): convolve with the PSF, sampled at r*i + centre (strided conv)."""
    size = psf.kernel.shape[0]
    first = round(psf.centre - (size - 1) / 2)
    spans = []
    for length in x.shape[-2:]:
        n_out = length // ratio
        if n_out == 0:
            raise ShapeMismatchError(f"image of size {tuple(x.shape[-2:])} is smaller than ratio {ratio}")
        last = ratio * (n_out - 1) + first + size - 1
        start, stop = max(0, first), min(length, last + 1)
        before, after = start - first, last + 1 - stop
        if max(before, after) >= stop - start:
            raise ShapeMismatchError(
                f"image of size {tuple(x.shape[-2:])} is too small for a {size}x{size} PSF at ratio {ratio} "
                "(reflect padding needs more pixels than the padding); use a larger image or a smaller kernel"
            )
        spans.append((start, stop, before, after))
    (y0, y1, top, bottom), (x0, x1, left, right) = spans
    weight = torch.from_numpy(np.ascontiguousarray(psf.kernel[::-1, ::-1])).to(x.device, torch.float32)[
        None, None
    ]
    step = max(1, _CHUNK_BYTES // (4 * (y1 - y0 + top + bottom) * (x1 - x0 + left + right)))
    out = []
    for c0 in range(0, x.shape[0], step):
        z = x[c0 : c0 + step, y0:y1, x0:x1].unsqueeze(1)
        if top or bottom or left or right:
            z = F.pad(z, (left, right, top, bottom), mode="reflect")
        out.append(F.conv2d(z, weight, stride=ratio)[:, 0])
    return torch.cat(out)

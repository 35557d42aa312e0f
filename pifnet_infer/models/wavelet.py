"""Orthonormal 2-D Haar wavelet transform (spec section 3).

``haar_dwt`` splits a feature map into the sub-bands LL, HL, LH, HH at half
resolution; ``haar_iwt`` puts them back together exactly. Odd heights or widths
are reflect-padded by one row/column before the transform and cropped after
the inverse, so any size works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def haar_dwt(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One level of the orthonormal Haar transform.

    Args:
        x: [B, C, H, W]; an odd H or W is reflect-padded to the next even size.

    Returns:
        (LL, HL, LH, HH), each [B, C, ceil(H/2), ceil(W/2)]. HL holds horizontal detail
        (odd minus even columns), LH vertical detail (odd minus even rows).
    """
    pad_bottom, pad_right = x.shape[-2] % 2, x.shape[-1] % 2
    if pad_bottom or pad_right:
        mode = "reflect" if min(x.shape[-2:]) > 1 else "replicate"
        x = F.pad(x, (0, pad_right, 0, pad_bottom), mode=mode)
    ee = x[..., 0::2, 0::2]  # even row, even column
    oe = x[..., 1::2, 0::2]  # odd row, even column
    eo = x[..., 0::2, 1::2]
    oo = x[..., 1::2, 1::2]
    ll = (ee + oe + eo + oo) / 2
    hl = (-ee - oe + eo + oo) / 2
    lh = (-ee + oe - eo + oo) / 2
    hh = (ee - oe - eo + oo) / 2
    return ll, hl, lh, hh


def haar_iwt(subbands: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Inverse of :func:`haar_dwt`.

    Args:
        subbands: [B, 4*C, h, w], the channel groups in the order LL, HL, LH, HH.
        size: (H, W) of the original map, to crop the padding ``haar_dwt`` added;
            ``None`` keeps (2h, 2w).

    Returns:
        [B, C, H, W].
    """
    ll, hl, lh, hh = subbands.chunk(4, dim=1)
    batch, channels, height, width = ll.shape
    out = subbands.new_empty(batch, channels, 2 * height, 2 * width)
    out[..., 0::2, 0::2] = (ll - hl - lh + hh) / 2
    out[..., 1::2, 0::2] = (ll - hl + lh - hh) / 2
    out[..., 0::2, 1::2] = (ll + hl - lh - hh) / 2
    out[..., 1::2, 1::2] = (ll + hl + lh + hh) / 2
    if size is not None:
        out = out[..., : size[0], : size[1]]
    return out

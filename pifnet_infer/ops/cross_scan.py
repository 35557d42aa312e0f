"""The four scan orders of a feature map and their merge (spec section 5.3, steps 3 and 7).

For a map of height H and width W (L = H*W) the four sequences are

- s0: raster order, position ``t = i*W + j``;
- s1: column-major order, ``t = j*H + i``;
- s2: s0 reversed, ``t = L-1 - (i*W + j)``;
- s3: s1 reversed, ``t = L-1 - (j*H + i)``.

:func:`cross_scan` stacks them along channels (block k holds direction k); :func:`cross_merge` maps each
block back to pixels and sums them, i.e. it is the adjoint of :func:`cross_scan`.

Memory layout: both work position-major (channels innermost), as the projections around the scan do.
:func:`cross_scan` returns a [B, 4*d, L] view of a [B, L, 4*d] buffer, built from a channels-last map without
transposing the map first; :func:`cross_merge` returns a channels-last [B, d, H, W] map. Inputs of either
layout are accepted; only the speed differs.
"""

from __future__ import annotations

import torch
from einops import rearrange

from pifnet_infer.errors import ShapeMismatchError


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """Unfold a feature map into its four scan sequences, concatenated along channels.

    Args:
        x: feature map [B, d, H, W], any dtype.

    Returns:
        [B, 4*d, H*W], channel blocks in the order s0, s1, s2, s3 (see module docstring).

    Raises:
        ShapeMismatchError: ``x`` is not 4-D.

    .. versionadded:: 0.1
    """
    if x.ndim != 4:
        raise ShapeMismatchError(
            f"cross_scan expects a feature map [B, d, H, W], got shape {tuple(x.shape)!r}"
        )
    pixels = rearrange(x, "b d h w -> b h w d")  # a view for a channels-last map
    rows = rearrange(pixels, "b h w d -> b (h w) d")
    columns = rearrange(pixels, "b h w d -> b (w h) d")
    return torch.cat([rows, columns, rows.flip(1), columns.flip(1)], dim=2).transpose(1, 2)


def cross_merge(y: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Sum the four scan sequences back onto the pixels they came from.

    Args:
        y: [B, 4*d, L] with L = height*width, channel blocks ordered as :func:`cross_scan` makes them.
        height: map height H.
        width: map width W.

    Returns:
        [B, d, H, W] where ``out[..., i, j] = y0[i*W+j] + y1[j*H+i] + y2[L-1-(i*W+j)] + y3[L-1-(j*H+i)]``.

    Raises:
        ShapeMismatchError: ``y`` is not [B, 4*d, height*width].

    .. versionadded:: 0.1
    """
    if y.ndim != 3 or y.shape[1] % 4 or y.shape[2] != height * width:
        raise ShapeMismatchError(
            f"cross_merge expects [B, 4*d, height*width] = [B, 4*d, {height * width}], got shape {tuple(y.shape)!r}"
        )
    y0, y1, y2, y3 = y.transpose(1, 2).chunk(4, dim=2)  # [B, L, d] each
    rows = y0 + y2.flip(1)
    columns = y1 + y3.flip(1)
    merged = rearrange(rows, "b (h w) d -> b h w d", h=height) + rearrange(
        columns, "b (w h) d -> b h w d", h=height
    )
    return rearrange(merged, "b h w d -> b d h w")

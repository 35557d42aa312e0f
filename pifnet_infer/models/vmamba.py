"""The VMamba module of PIF-Net's Invertible Mamba blocks (spec section 5, variant A).

A 2-D selective-state-space layer: the feature map is read in four orders
(rows, columns, and both reversed), the four sequences are scanned together
with one shared input-dependent projection, and the results are summed back
onto the pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from pifnet_infer.ops import cross_merge, cross_scan, selective_scan

#: number of scan orders (raster, column-major, and their reversals)
NUM_DIRECTIONS = 4


class VMamba(nn.Module):
    """Four-direction 2-D selective scan, NCHW in and out.

    Args:
        dim: D, channels in and out.
        d_state: N, state size per scan channel.
        d_conv: kernel of the depthwise convolution before the scan.
        expand: d_inner = expand * dim.
    """

    def __init__(self, dim: int, d_state: int = 16, d_conv: int = 3, expand: int = 2) -> None:
        super().__init__()
        d_inner = expand * dim
        scan_channels = NUM_DIRECTIONS * d_inner
        self.dt_rank = math.ceil(dim / 16)
        self.d_state = d_state
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner, bias=True)
        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=True)
        self.delta_proj = nn.Linear(self.dt_rank, scan_channels, bias=True)
        # one projection for all four directions: step size, B and C from the concatenated 4*d_inner vector
        self.x_proj = nn.Linear(scan_channels, self.dt_rank + 2 * d_state, bias=False)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(scan_channels, 1))
        self.D = nn.Parameter(torch.ones(scan_channels))
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, D, H, W] -> [B, D, H, W]."""
        height, width = x.shape[-2:]
        x, z = self.in_proj(rearrange(x, "b c h w -> b h w c")).chunk(2, dim=-1)
        # channels-last all the way: the scan sequences come out position-major without transposes
        x = rearrange(x, "b h w c -> b c h w").contiguous(memory_format=torch.channels_last)
        x = F.silu(self.conv2d(x))

        u = cross_scan(x)  # [B, 4*d_inner, L], direction-major channel blocks
        delta, B, C = self.x_proj(rearrange(u, "b k l -> b l k")).split(
            [self.dt_rank, self.d_state, self.d_state], dim=-1
        )
        delta = rearrange(F.softplus(self.delta_proj(delta)), "b l k -> b k l")
        A = -torch.exp(self.A_log.float())
        y = selective_scan(
            u, delta, A, rearrange(B, "b l n -> b n l"), rearrange(C, "b l n -> b n l"), self.D.float()
        )  # float32 whatever the autocast dtype
        y = cross_merge(y, height, width)

        y = self.out_norm(rearrange(y, "b c h w -> b h w c")) * F.silu(z)
        return rearrange(self.out_proj(y), "b h w c -> b c h w")

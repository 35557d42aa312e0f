"""Building blocks of PIF-Net (spec sections 2, 4, 6, 7).

Attribute names follow the official code so that its ``state_dict`` loads
without renaming; modules the official code builds but never calls are kept
(and marked) for the same reason.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pifnet_infer.models.vmamba import VMamba
from pifnet_infer.ops import deform_conv2d


class Head(nn.Module):
    """Conv3x3 -> ReLU -> Conv3x3, the encoders and the tail (stored as ``net``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in, H, W] -> [B, out, H, W]."""
        return self.net(x)


class InvertibleMambaBlock(nn.Module):
    """Affine coupling of the low- and high-frequency streams with three VMambas (spec section 4).

    ``blocks[0]`` is phi (additive update of the high band from the low band),
    ``blocks[1]`` rho (log-scale) and ``blocks[2]`` eta (shift) of the low band.
    """

    def __init__(self, dim: int, d_state: int = 16, d_conv: int = 3, expand: int = 2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(VMamba(dim, d_state, d_conv, expand) for _ in range(3))

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(X^L, X^H) -> (X^L', X^H'), shapes unchanged."""
        phi, rho, eta = self.blocks
        high = high + phi(low)
        low = low * torch.exp(rho(high).float()) + eta(high)
        return low, high


def dilated_depthwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a depthwise conv with dilation d and "same" padding, as one undilated conv.

    Output pixel (i, j) only reads inputs of its residue (i mod d, j mod d), so the map is split into d*d
    sub-maps of every d-th pixel (zero-padded to a multiple of d, as the conv's own padding would be),
    each sub-map is convolved with the undilated kernel, and the results are interleaved back. Same
    values, and on the CPU about 4x faster than the dilated depthwise kernel (the 7x7 dilation-3 conv of
    the chikusei preset on a 64x64 map, one thread).
    """
    d = conv.dilation[0]
    batch, channels, height, width = x.shape
    h, w = -(-height // d), -(-width // d)
    x = F.pad(x, (0, d * w - width, 0, d * h - height))
    x = x.view(batch, channels, h, d, w, d).permute(0, 1, 3, 5, 2, 4).reshape(batch, channels * d * d, h, w)
    bias = None if conv.bias is None else conv.bias.repeat_interleave(d * d)
    padding = conv.padding[0] // d
    y = F.conv2d(x, conv.weight.repeat_interleave(d * d, 0), bias, padding=padding, groups=channels * d * d)
    y = y.view(batch, channels, d, d, h, w).permute(0, 1, 4, 2, 5, 3).reshape(batch, channels, d * h, d * w)
    return y[..., :height, :width]


class LargeKernelAttention(nn.Module):
    """Depthwise 5x5 -> depthwise 7x7 dilated by 3 -> pointwise, used as a multiplicative gate.

    On the CPU the dilated conv runs as :func:`dilated_depthwise` (same values, faster there).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dw_conv1 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.dw_conv2 = nn.Conv2d(dim, dim, 7, padding=9, dilation=3, groups=dim)
        self.pw_conv = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x * attention(x), [B, D, H, W]."""
        attention = self.dw_conv1(x)
        if attention.device.type == "cpu":
            attention = dilated_depthwise(self.dw_conv2, attention)
        else:
            attention = self.dw_conv2(attention)
        return self.pw_conv(attention) * x


class SqueezeExcitation(nn.Module):
    """Channel gate from the global average (stored as ``fc``)."""

    def __init__(self, dim: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Conv2d(dim, dim // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim // reduction, dim, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x * sigmoid(MLP(mean over H, W)), [B, D, H, W]."""
        return x * self.fc(x.mean(dim=(-2, -1), keepdim=True))


class FusionAwareLoRA(nn.Module):
    """FAM-LoRA: spatial-spectral calibration of the fused feature, guided by the residual prior (spec section 6).

    As in the official code the "multi-head LoRA" is one full-rank pair of 1x1
    convolutions scaled by ``lora_alpha``, and LKA and SE are each applied twice.
    ``norm1..norm4`` and ``out_proj`` are built but unused, kept only so that
    official checkpoints load strictly.
    """

    def __init__(self, dim: int, lora_alpha: float = 0.1, se_reduction: int = 4) -> None:
        super().__init__()
        self.lora_alpha = lora_alpha
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.conv3 = nn.Conv2d(dim, dim, 1)
        self.conv4 = nn.Conv2d(dim, dim, 1)
        self.norm1 = nn.GroupNorm(1, dim)  # unused (official checkpoint layout)
        self.norm2 = nn.GroupNorm(1, dim)  # unused
        self.norm3 = nn.GroupNorm(1, dim)  # unused
        self.norm4 = nn.GroupNorm(1, dim)  # unused
        self.lka = LargeKernelAttention(dim)
        self.se = SqueezeExcitation(dim, se_reduction)
        self.out_proj = nn.Conv2d(dim, dim, 1, bias=False)  # unused, frozen in the official code
        self.out_proj.weight.requires_grad_(False)
        self.lora_A = nn.Conv2d(dim, dim, 1, bias=False)
        self.lora_B = nn.Conv2d(dim, dim, 1, bias=False)
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """Calibrate feature ``x`` with the ill-posed residual ``prior``; both [B, D, H, W]."""
        t = self.conv1(x)
        t = self.lka(t) + self.se(t)
        t = self.conv3(self.conv2(t))
        t = self.lka(t) + self.se(t + prior)
        t = t + self.lora_alpha * self.lora_B(self.lora_A(prior))
        return self.conv4(t) + x


class DeformConv2d(nn.Module):
    """3x3 deformable convolution (DCNv1, no mask) with torchvision's parameter names."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """x [B, Cin, H, W], offset [B, 2*k*k, H, W] as (dy, dx) per tap -> [B, Cout, H, W]."""
        return deform_conv2d(x, offset, self.weight, self.bias, padding=self.padding)


class SemanticAlignBlock(nn.Module):
    """Two deformable convolutions whose offsets are predicted from the feature (spec section 7)."""

    def __init__(self, dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        offsets = 2 * kernel_size * kernel_size
        self.deform_conv1 = DeformConv2d(dim, dim, kernel_size)
        self.deform_conv2 = DeformConv2d(dim, dim, kernel_size)
        self.conv_offset1 = nn.Conv2d(dim, offsets, kernel_size, padding=kernel_size // 2)
        self.conv_offset2 = nn.Conv2d(dim, offsets, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, D, H, W] -> [B, D, H, W] (no residual)."""
        x = F.relu(self.deform_conv1(x, self.conv_offset1(x)))
        return self.deform_conv2(x, self.conv_offset2(x))

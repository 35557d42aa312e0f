"""PIF-Net (Li, Wang, Xu, AAAI 2026), forward only, laid out like the paper's Figure 2.

    LR-HSI --bicubic xr--> HSI encoder --Fh--+--------------------------------------+
                                            | Haar DWT: LL | (HL, LH, HH) -> 1x1    |
                                            | 4 x Invertible Mamba block (coupling)|
                                            | 1x1 -> Haar IWT -> F                  |
    HR-MSI ------------> MSI encoder --Fm--+                                       |
                  prior P = ReLU(conv(Fh - Fm))  (ill-posed residual prior)        |
                  4 x [FAM-LoRA(F, P) -> semantic alignment(F)]                    |
                  tail(concat[F, Fm]) -> HR-HSI

Attribute names and shapes match the official implementation (spec section 9),
so its checkpoints load with ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pifnet_infer.config import PIFNetConfig
from pifnet_infer.errors import ShapeMismatchError
from pifnet_infer.models.blocks import FusionAwareLoRA, Head, InvertibleMambaBlock, SemanticAlignBlock
from pifnet_infer.models.wavelet import haar_dwt, haar_iwt


class PIFNet(nn.Module):
    """Fuse an LR-HSI with an HR-MSI.

    Args:
        config: band counts, ratio and widths (see :class:`~pifnet_infer.config.PIFNetConfig`
            and :data:`~pifnet_infer.config.PRESETS`).

    Example:
        >>> from pifnet_infer import PIFNet, get_preset
        >>> model = PIFNet(get_preset("cave")).eval()
        >>> out = model(torch.rand(1, 31, 16, 16), torch.rand(1, 3, 64, 64))  # [1, 31, 64, 64]

    .. versionadded:: 0.1
    """

    def __init__(self, config: PIFNetConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.dim
        scan = {"d_state": config.d_state, "d_conv": config.d_conv, "expand": config.expand}
        self.hsi_head = Head(config.hsi_bands, dim)
        self.msi_head = Head(config.msi_bands, dim)
        self.prior_conv = nn.Conv2d(dim, dim, 3, padding=1)
        self.tail = Head(2 * dim, config.hsi_bands)
        self.conv_proj = nn.Conv2d(3 * dim, dim, 1)
        self.conv_proj_trans = nn.Conv2d(dim, 3 * dim, 1)
        self.inblocks = nn.ModuleList(InvertibleMambaBlock(dim, **scan) for _ in range(config.num_stages))
        self.spatial_blocks = nn.ModuleList(
            FusionAwareLoRA(dim, config.lora_alpha, config.se_reduction) for _ in range(config.num_stages)
        )
        self.sem_blocks = nn.ModuleList(SemanticAlignBlock(dim) for _ in range(config.num_stages))

    def forward(self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor) -> torch.Tensor:
        """Fuse a batch.

        Args:
            lr_hsi: [B, C, h, w] float, the low-resolution hyperspectral image.
            hr_msi: [B, c, r*h, r*w] float, the high-resolution multispectral image.

        Returns:
            [B, C, r*h, r*w], the fused image (not clamped), in the input's value range.

        Raises:
            ShapeMismatchError: wrong ndim, band counts or sizes.
            ValueError: non-floating dtype or non-finite values.
        """
        self.check_inputs(lr_hsi, hr_msi)
        height, width = hr_msi.shape[-2:]

        upsampled = F.interpolate(lr_hsi, scale_factor=self.config.ratio, mode="bicubic", align_corners=False)
        hsi_feat = self.hsi_head(upsampled)
        msi_feat = self.msi_head(hr_msi)
        prior = F.relu(self.prior_conv(hsi_feat - msi_feat))  # ill-posed residual prior

        low, hl, lh, hh = haar_dwt(hsi_feat)
        high = self.conv_proj(torch.cat([hl, lh, hh], dim=1))
        for block in self.inblocks:
            low, high = block(low, high)
        feat = haar_iwt(torch.cat([low.to(high.dtype), self.conv_proj_trans(high)], dim=1), size=(height, width))

        for fam, align in zip(self.spatial_blocks, self.sem_blocks, strict=True):
            feat = align(fam(feat, prior))
        return self.tail(torch.cat([feat, msi_feat.to(feat.dtype)], dim=1))

    def check_inputs(self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor) -> None:
        """Raise a clear error unless the inputs fit this model (cheap, done before any layer runs)."""
        cfg = self.config
        for name, tensor in (("lr_hsi", lr_hsi), ("hr_msi", hr_msi)):
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
            if tensor.ndim != 4:
                raise ShapeMismatchError(f"{name} must be [B, bands, H, W] (4-D), got shape {tuple(tensor.shape)}")
            if not tensor.is_floating_point():
                raise ValueError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")
        if lr_hsi.shape[1] != cfg.hsi_bands:
            raise ShapeMismatchError(
                f"lr_hsi has {lr_hsi.shape[1]} bands, this model expects hsi_bands={cfg.hsi_bands}"
            )
        if hr_msi.shape[1] != cfg.msi_bands:
            raise ShapeMismatchError(
                f"hr_msi has {hr_msi.shape[1]} bands, this model expects msi_bands={cfg.msi_bands}"
            )
        if lr_hsi.shape[0] != hr_msi.shape[0]:
            raise ShapeMismatchError(f"batch sizes differ: lr_hsi {lr_hsi.shape[0]}, hr_msi {hr_msi.shape[0]}")
        (h, w), (big_h, big_w) = lr_hsi.shape[-2:], hr_msi.shape[-2:]
        if (big_h, big_w) != (cfg.ratio * h, cfg.ratio * w):
            implied = f"{big_h / h:g} x {big_w / w:g}" if h and w else "undefined"
            raise ShapeMismatchError(
                f"hr_msi must be ratio x lr_hsi = ({cfg.ratio * h}, {cfg.ratio * w}) for this model's "
                f"ratio {cfg.ratio}, got ({big_h}, {big_w}) (the shapes imply ratio {implied})"
            )
        if h < 1 or w < 1:
            raise ShapeMismatchError(f"lr_hsi must have at least 1x1 pixels, got {h}x{w}")
        for name, tensor in (("lr_hsi", lr_hsi), ("hr_msi", hr_msi)):
            if not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"{name} contains NaN or infinite values; fill or mask them before fusing")

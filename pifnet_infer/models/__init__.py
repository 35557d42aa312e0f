"""The PIF-Net model and its building blocks."""

from pifnet_infer.models.pifnet import PIFNet

__all__ = ["PIFNet"]

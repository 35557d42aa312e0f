"""pifnet-infer: HSI-MSI fusion with PIF-Net.

Fuse a low-resolution hyperspectral image (LR-HSI) with a high-resolution
multispectral image (HR-MSI) of the same place into a high-resolution
hyperspectral image.

Heavy or optional modules (rasterio, huggingface_hub, triton, mamba_ssm,
torchvision) are imported only when a function needs them.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from pifnet_infer._version import __version__

logging.getLogger(__name__).addHandler(logging.NullHandler())

#: public name -> module that defines it (imported on first access)
_PUBLIC: dict[str, str] = {
    "PIFNet": "pifnet_infer.models",
    "PIFNetConfig": "pifnet_infer.config",
    "PRESETS": "pifnet_infer.config",
    "get_preset": "pifnet_infer.config",
    "fuse": "pifnet_infer.api",
    "fuse_geotiff": "pifnet_infer.api",
    "load_model": "pifnet_infer.weights",
    "list_weights": "pifnet_infer.weights",
    "get_weight": "pifnet_infer.weights",
    "load_sample": "pifnet_infer.data",
    "list_samples": "pifnet_infer.data",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pifnet_infer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

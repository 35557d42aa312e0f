"""The public entry points in one place (each is defined in the module that owns it)."""

from __future__ import annotations

from pifnet_infer.fusion import fuse
from pifnet_infer.io.geotiff import fuse_geotiff
from pifnet_infer.weights import get_weight, list_weights, load_model

__all__ = ["fuse", "fuse_geotiff", "get_weight", "list_weights", "load_model"]

"""Compute ops with several implementations, each behind one function that picks the backend.

- :func:`selective_scan`: Mamba's S6 recurrence (backends ``mamba``, ``triton``, ``loop``, ``torch``).
- :func:`cross_scan` / :func:`cross_merge`: the four VMamba scan orders and their merge.
- :func:`deform_conv2d`: deformable convolution v1 (backends ``torchvision``, ``torch``).
- :func:`available_backends`: which backends can run in this process.

Optional dependencies (triton, mamba_ssm, torchvision) are imported only when a backend is probed or used.
"""

from __future__ import annotations

from pifnet_infer.ops.backend import available_backends
from pifnet_infer.ops.cross_scan import cross_merge, cross_scan
from pifnet_infer.ops.deform_conv import deform_conv2d
from pifnet_infer.ops.scan import selective_scan

__all__ = ["available_backends", "cross_merge", "cross_scan", "deform_conv2d", "selective_scan"]

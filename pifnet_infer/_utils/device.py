"""Resolve ``device="auto"`` and ``dtype="auto"``."""

from __future__ import annotations

from typing import Literal

import torch

DTypeArg = Literal["auto", "float32", "bfloat16", "float16"] | torch.dtype

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> the first CUDA device when available, else CPU; anything else checked to exist here.

    Raises:
        ValueError: not a device name torch knows, or a CUDA device this machine or torch build lacks.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = (
                f"a CPU-only build of torch {torch.__version__}"
                if torch.version.cuda is None
                else "no GPU visible"
            )
            raise ValueError(
                f"device {str(device)!r} asks for CUDA but this machine has {build}; use device='cpu'"
            )
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(
                f"device {str(device)!r} does not exist: this machine has {count} CUDA device(s)"
            )
    return resolved


def resolve_dtype(dtype: DTypeArg, device: torch.device) -> torch.dtype:
    """Compute dtype: ``"auto"`` is bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."""
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    elif dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        try:
            resolved = _DTYPES[dtype]
        except KeyError:
            raise ValueError(f"dtype must be 'auto' or one of {sorted(_DTYPES)}, got {dtype!r}") from None
    if resolved not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {resolved}")
    return resolved

"""``pifnet-infer env``: versions, devices and optional accelerators, to paste into bug reports."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from typing import Any

#: optional modules probed with try_import: (label, module)
OPTIONAL_MODULES: tuple[tuple[str, str], ...] = (
    ("triton", "triton"),
    ("mamba_ssm selective_scan_cuda", "selective_scan_cuda"),
    ("torchvision", "torchvision"),
)


def add_parser(subparsers: Any) -> None:
    """Register ``env``."""
    parser = subparsers.add_parser(
        "env",
        help="print versions, devices and optional accelerators (for bug reports)",
        description="Print the versions of Python and the libraries pifnet-infer uses, the CUDA devices, which "
        "optional accelerators import, and where weights are cached.",
    )
    parser.set_defaults(func=run_env)


def _version(module: str) -> str:
    from pifnet_infer._utils.optional import try_import

    mod = try_import(module)
    if mod is None:
        return "not available"
    return str(getattr(mod, "__version__", "installed"))


def environment() -> list[tuple[str, str]]:
    """(label, value) pairs describing this installation."""
    import torch

    from pifnet_infer._utils.optional import try_import
    from pifnet_infer._utils.threads import physical_cores
    from pifnet_infer._version import __version__

    rows = [
        ("pifnet-infer", __version__),
        ("python", f"{sys.version.split()[0]} ({sys.executable})"),
        ("platform", platform.platform()),
        ("torch", f"{torch.__version__} (CUDA build {torch.version.cuda or 'none'})"),
        ("torch threads", f"{torch.get_num_threads()} (physical cores usable here: {physical_cores()})"),
        ("numpy", _version("numpy")),
    ]
    rasterio = try_import("rasterio")
    gdal = f" (GDAL {rasterio.__gdal_version__})" if rasterio is not None else ""
    rows.append(("rasterio", _version("rasterio") + gdal))
    rows += [(name, _version(name)) for name in ("huggingface_hub", "safetensors", "einops", "tqdm")]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        rows.append(("CUDA devices", "; ".join(f"{i}: {n}" for i, n in enumerate(names))))
    else:
        rows.append(("CUDA devices", "none (CPU only)"))
    for label, module in OPTIONAL_MODULES:
        rows.append((label, "available" if try_import(module) is not None else "not available"))
    hub = try_import("huggingface_hub.constants")
    rows.append(
        ("weights cache", str(getattr(hub, "HF_HUB_CACHE", "unknown (huggingface_hub not available)")))
    )
    rows += [(key, value) for key, value in sorted(os.environ.items()) if key.startswith("PIFNET_")]
    return rows


def run_env(args: argparse.Namespace) -> int:
    """Print :func:`environment` as aligned ``label: value`` lines."""
    rows = environment()
    width = max(len(label) for label, _ in rows)
    print("\n".join(f"{label.ljust(width)}  {value}" for label, value in rows))
    return 0

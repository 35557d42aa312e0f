"""Bundled sample scenes: :func:`load_sample` and :func:`list_samples`.

.. versionadded:: 0.1
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

_SAMPLES = resources.files(__name__) / "samples"


@dataclass(frozen=True)
class Sample:
    """A bundled hyperspectral scene.

    Attributes:
        name: folder name of the sample.
        cube: reflectance, float32, shape (bands, height, width) (channel-first, like torch and rasterio).
        wavelengths_nm: band centres in nanometres (bands,), or None when unknown.
        fwhm_nm: band widths in nanometres, or None when unknown.
        mask: bool (height, width), True where the pixel is valid, or None when all are.
        meta: the sample's ``meta.json`` (sensor, source, licence, ...).
    """

    name: str
    cube: np.ndarray
    wavelengths_nm: np.ndarray | None
    fwhm_nm: np.ndarray | None
    mask: np.ndarray | None
    meta: dict[str, Any] = field(repr=False)


def list_samples() -> list[str]:
    """Names of the bundled samples."""
    return sorted(p.name for p in _SAMPLES.iterdir() if p.is_dir())


def load_sample(name: str) -> Sample:
    """Load a bundled sample scene (see ``pifnet_infer/data/samples/README.md`` for sources and licences).

    Raises:
        KeyError: ``name`` is not a bundled sample; the message lists them.
    """
    if name not in list_samples():
        raise KeyError(f"unknown sample {name!r}; bundled samples: {', '.join(list_samples())}")
    folder = _SAMPLES / name
    meta = json.loads((folder / "meta.json").read_text())
    with resources.as_file(folder / "cube.npy") as path:
        cube = np.load(path).astype(np.float32).transpose(2, 0, 1).copy()
    mask = None
    if (folder / "mask.npy").is_file():
        with resources.as_file(folder / "mask.npy") as path:
            mask = np.load(path).astype(bool)

    def _optional(key: str) -> np.ndarray | None:
        value = meta.get(key)
        return None if value is None else np.asarray(value, dtype=np.float64)

    return Sample(name, cube, _optional("wavelengths_nm"), _optional("fwhm_nm"), mask, meta)

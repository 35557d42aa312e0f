"""Numeric self-check of a weight: fuse a bundled sample tile and compare its PSNR with the manifest's record.

A checksum proves the file is the one published; it cannot prove that the loader, a converter or
the model code still compute what the weight was evaluated with. The self-check does: each entry
may record, under ``metrics.self_check``, a tile of a bundled sample (``pifnet_infer.data``) and the
PSNR its fusion reached when the weight was exported. The tile is rebuilt the same way every time:

1. the sample's all-zero bands dropped, the cube put on the weight's band grid
   (:func:`pifnet_infer.spectral.resample_bands`) and clipped to [0, 1];
2. the recorded rows and columns cropped (a held-out part of the scene);
3. the LR-HSI simulated with the MTF-matched Gaussian PSF (Nyquist gain 0.3) and decimation by the
   ratio; the HR-MSI through the weight's spectral responses (:func:`pifnet_infer.srf.srf_matrix`);
4. fused whole (one tile) in fp32 on the CPU, PSNR with the reference's maximum as peak.

``pifnet-infer weights check NAME`` and the test suite run it for every entry that has a record.

.. versionadded:: 0.1
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from pifnet_infer.errors import ManifestError

if TYPE_CHECKING:
    from pifnet_infer.weights.manifest import WeightEntry

#: MTF gain at Nyquist of the PSF that simulates the self-check's LR-HSI (the held-out protocol's)
NYQUIST_GAIN = 0.3
#: default allowed |PSNR - recorded| in dB: fp32 kernels of different builds move it by ~1e-5 dB (4e-5 dB
#: measured between a training process and the test suite); a reversed output band order moves it by dBs
TOLERANCE_DB = 0.002


@dataclass(frozen=True)
class SelfCheckResult:
    """Outcome of :func:`run_self_check`.

    Attributes:
        name: the entry.
        psnr_db: PSNR measured now.
        recorded_db: PSNR recorded in the manifest.
        tolerance_db: allowed difference.
    """

    name: str
    psnr_db: float
    recorded_db: float
    tolerance_db: float

    @property
    def ok(self) -> bool:
        """True when the measured PSNR is within the tolerance of the record."""
        return abs(self.psnr_db - self.recorded_db) <= self.tolerance_db


def self_check_record(entry: WeightEntry) -> dict[str, object] | None:
    """The entry's ``metrics.self_check`` record, or None when it has none."""
    record = entry.metrics.get("self_check")
    if record is None:
        return None
    keys = {"sample", "rows", "cols", "psnr"}
    if not isinstance(record, dict) or not keys <= record.keys():
        raise ManifestError(
            f"{entry.name}: metrics.self_check must be an object with {sorted(keys)}, got {record!r}"
        )
    return record


def self_check_tile(
    entry: WeightEntry, sample: str, rows: tuple[int, int], cols: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lr_hsi [C, h, w], hr_msi [c, H, W], reference [C, H, W]) float32 on the weight's grid (see the module doc)."""
    from pifnet_infer.data import load_sample
    from pifnet_infer.simulate import degrade_spatial
    from pifnet_infer.spectral import resample_bands
    from pifnet_infer.srf import srf_matrix

    if entry.hsi_wavelengths_nm is None:
        raise ManifestError(f"{entry.name}: a self-check needs the entry's hsi_wavelengths_nm")
    scene = load_sample(sample)
    if scene.wavelengths_nm is None:
        raise ManifestError(f"{entry.name}: the self-check sample {sample!r} has no wavelengths")
    good = scene.cube.reshape(scene.cube.shape[0], -1).max(axis=1) > 0
    fwhm = None if scene.fwhm_nm is None else np.asarray(scene.fwhm_nm)[good]
    cube = scene.cube[good][:, rows[0] : rows[1], cols[0] : cols[1]]
    reference = np.clip(
        resample_bands(
            cube, np.asarray(scene.wavelengths_nm)[good], fwhm, entry.hsi_wavelengths_nm, entry.hsi_fwhm_nm
        ),
        0.0,
        1.0,
    ).astype(np.float32)
    lr = degrade_spatial(reference, entry.config.ratio, "mtf", nyquist_gain=NYQUIST_GAIN)
    srf = srf_matrix(entry.msi_srf, entry.hsi_wavelengths_nm, entry.hsi_fwhm_nm).astype(np.float32)
    msi = np.einsum("kc,chw->khw", srf, reference).astype(np.float32)
    return lr.astype(np.float32), msi, reference


def measure_psnr(
    model: torch.nn.Module, entry: WeightEntry, sample: str, rows: tuple[int, int], cols: tuple[int, int]
) -> float:
    """PSNR (dB, peak = reference max) of ``model`` on the self-check tile, fp32, one tile."""
    from pifnet_infer.metrics import psnr

    lr, msi, reference = self_check_tile(entry, sample, rows, cols)
    a, b = float(entry.input_range["scale"]), float(entry.input_range["offset"])
    with torch.inference_mode():
        out = model(torch.from_numpy(lr * a + b)[None], torch.from_numpy(msi * a + b)[None])[0]
    return psnr(reference, (out.float().numpy() - b) / a)


def run_self_check(name: str) -> SelfCheckResult:
    """Load the weight ``name`` on the CPU, fuse its recorded tile and compare with the recorded PSNR.

    Raises:
        ManifestError: the entry has no ``metrics.self_check`` record, or a malformed one.
        WeightsNotFoundError: the file is not on this machine and cannot be fetched.
    """
    from pifnet_infer.weights import get_weight, load_model

    entry = get_weight(name)
    record = self_check_record(entry)
    if record is None:
        raise ManifestError(f"{name}: the manifest entry records no metrics.self_check")
    model = load_model(name, device="cpu", dtype="float32")
    rows, cols = tuple(record["rows"]), tuple(record["cols"])  # type: ignore[arg-type]
    measured = measure_psnr(model, entry, str(record["sample"]), rows, cols)  # type: ignore[arg-type]
    tolerance = float(record.get("tolerance_db", TOLERANCE_DB))  # type: ignore[arg-type]
    return SelfCheckResult(name, measured, float(record["psnr"]), tolerance)  # type: ignore[arg-type]

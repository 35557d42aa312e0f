"""Training data: scenes from ``../shared/data`` on a setup's band grid, splits, synthetic scenes, batches.

Scenes are cubes (bands, H, W) float32 on the setup's grid (:func:`pifnet_infer.spectral.resample_bands`).
Each scene is cut along its longer axis into three strips, train (first 55 %), validation (next 15 %)
and test (last 30 %), separated by :data:`GUARD_PX` unused pixels so that no PSF footprint or crop
straddles two splits. Sizes are multiples of the ratio.

Synthetic scenes mix library spectra (USGS 1995 at AVIRIS channels, earthlib optimized) with
abundance maps unmixed from the *training strips* of real scenes (also those without wavelengths,
e.g. Moffett, and those that do not cover the grid, e.g. Samson), so they carry real spatial
structure and spectra the real scenes lack, and never see a test pixel.

Batches are made on the fly: random crop, flip and rot90, brightness and smooth spectral tilt,
Wald simulation (:func:`pifnet_infer.simulate.simulate_pair`: PSF ``"mtf"`` with a random Nyquist
gain, optional noise) -> (lr_hsi, hr_msi, reference) tensors.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pifnet_infer.simulate import degrade_spatial
from pifnet_infer.spectral import covered_ranges, resample_bands
from training.setups import Setup

_logger = logging.getLogger(__name__)

#: default data folder, relative to the repository root
DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GUARD_PX = 4
SPLIT_FRACTIONS = (0.55, 0.15, 0.3)
#: scenes whose stated licence allows shipping weights trained on them (INDEX.md)
PERMISSIVE_SCENES = ("aviris_gatorsense_vi", "jasper_ridge", "muufl_gulfport_sub", "samson", "moffett_field")
#: never used for shipped weights: enmap_potsdam (GPL-3.0 repo, DLR terms), pavia_centre_crop (no licence)
RESTRICTED_SCENES = ("enmap_potsdam", "pavia_centre_crop")
N_ENDMEMBERS = 6
TEST_PSF_GAIN = 0.3


@dataclass
class Scene:
    """A reference scene on a setup's grid (``cube`` is None when the scene does not cover the grid).

    Attributes:
        name: data folder name.
        cube: float32 (C, H, W) on the setup's grid, or None.
        splits: ``{"train"|"val"|"test": (slice_rows, slice_cols)}``.
        abundances: float32 (p, h, w) abundance maps of the train strip (sum to 1 per pixel).
    """

    name: str
    cube: np.ndarray | None
    splits: dict[str, tuple[slice, slice]]
    abundances: np.ndarray

    def region(self, split: str) -> np.ndarray:
        """The (C, h, w) cube of one split (requires a cube)."""
        if self.cube is None:
            raise ValueError(f"scene {self.name!r} does not cover the setup's grid")
        rows, cols = self.splits[split]
        return self.cube[:, rows, cols]


def read_scene(
    name: str, data_dir: Path = DATA_DIR
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """A shared data folder's cube and band grid, bad bands dropped.

    Returns:
        ``(cube, wavelengths_nm, fwhm_nm)``: float32 (bands, H, W) with negative values clipped to 0
        and all-zero bands (bad bands zeroed by the provider, e.g. AVIRIS detector overlaps) removed;
        float64 centres and FWHM of the kept bands, or None when the scene does not state them.
    """
    folder = data_dir / name
    cube = np.maximum(np.load(folder / "cube.npy").astype(np.float32).transpose(2, 0, 1), 0.0)
    meta = json.loads((folder / "meta.json").read_text())
    good = cube.reshape(cube.shape[0], -1).max(axis=1) > 0
    grid = [
        None if meta.get(k) is None else np.asarray(meta[k], dtype=np.float64)[good]
        for k in ("wavelengths_nm", "fwhm_nm")
    ]
    if not good.all():
        _logger.info("%s: dropping %d all-zero bands", name, int((~good).sum()))
    return cube[good], grid[0], grid[1]


def split_slices(
    height: int, width: int, ratio: int, valid: np.ndarray | None = None
) -> dict[str, tuple[slice, slice]]:
    """Disjoint train/val/test strips along the longer axis, sizes multiples of ``ratio``, guards between.

    With a validity mask (H, W) bool, the validation and test strips are narrowed across the
    strip to the longest run of fully valid lines (MUUFL's masked corner), so no metric sees
    fill pixels; the train strip is kept whole.
    """
    along_rows = height >= width
    length = height if along_rows else width
    usable = length - 2 * GUARD_PX
    sizes = [int(f * usable) // ratio * ratio for f in SPLIT_FRACTIONS]
    starts = [0, sizes[0] + GUARD_PX, sizes[0] + sizes[1] + 2 * GUARD_PX]
    cross_len = (width if along_rows else height) // ratio * ratio
    out = {}
    for split, start, size in zip(("train", "val", "test"), starts, sizes, strict=True):
        along, cross = slice(start, start + size), slice(0, cross_len)
        if valid is not None and split != "train":
            strip = valid[along, :cross_len] if along_rows else valid[:cross_len, along].T
            lines = strip.all(axis=0)  # one flag per line across the strip
            best, run_start, run = (0, 0), 0, 0
            for i, ok in enumerate(lines):
                run = run + 1 if ok else 0
                run_start = i - run + 1 if ok else i + 1
                if run > best[1]:
                    best = (run_start, run)
            cross = slice(best[0], best[0] + best[1] // ratio * ratio)
        out[split] = (along, cross) if along_rows else (cross, along)
    return out


def endmember_abundances(cube: np.ndarray, n: int = N_ENDMEMBERS) -> np.ndarray:
    """Abundance maps (n, H, W) float32 of a (bands, H, W) cube: extreme-pixel endmembers, clipped least squares.

    Endmembers are picked greedily (largest norm, then largest residual off the span of those picked,
    as ATGP); abundances are the least-squares coefficients clipped at 0 and normalised to sum 1.
    """
    x = cube.reshape(cube.shape[0], -1).astype(np.float64)
    picked: list[int] = [int(np.argmax((x * x).sum(0)))]
    for _ in range(n - 1):
        basis, _ = np.linalg.qr(x[:, picked])
        residual = x - basis @ (basis.T @ x)
        picked.append(int(np.argmax((residual * residual).sum(0))))
    coef, *_ = np.linalg.lstsq(x[:, picked], x, rcond=None)
    coef = np.clip(coef, 0.0, None)
    coef /= np.maximum(coef.sum(0, keepdims=True), 1e-12)
    return coef.reshape(n, *cube.shape[1:]).astype(np.float32)


def load_scenes(
    setup: Setup, names: tuple[str, ...] = PERMISSIVE_SCENES, data_dir: Path = DATA_DIR
) -> list[Scene]:
    """Read scenes, resample those that cover the setup's grid onto it, split them, unmix their train strips."""
    scenes = []
    for name in names:
        cube, wl, fwhm = read_scene(name, data_dir)
        mask_file = data_dir / name / "mask.npy"
        valid = np.load(mask_file).astype(bool) if mask_file.is_file() else None
        on_grid = None
        if wl is not None:
            ranges = covered_ranges(wl, fwhm)
            centres = setup.wavelengths_nm
            covered = np.zeros(centres.shape, dtype=bool)
            for lo, hi in ranges:
                covered |= (centres >= lo) & (centres <= hi)
            if covered.all():
                on_grid = resample_bands(cube, wl, fwhm, setup.wavelengths_nm, setup.fwhm_nm).astype(
                    np.float32
                )
        splits = split_slices(cube.shape[1], cube.shape[2], setup.ratio, valid)
        rows, cols = splits["train"]
        abundances = endmember_abundances(cube[:, rows, cols])
        _logger.info(
            "scene %s: %s, train strip %s",
            name,
            "on grid" if on_grid is not None else "abundances only",
            abundances.shape[1:],
        )
        scenes.append(Scene(name, on_grid, splits, abundances))
    return scenes


def load_library(setup: Setup, data_dir: Path = DATA_DIR) -> np.ndarray:
    """Library spectra on the setup's grid, float32 (n, C): USGS 1995 (AVIRIS 224) and earthlib optimized."""
    usgs = np.load(data_dir / "spectra" / "usgs_1995_aviris224.npz")
    earth = np.load(data_dir / "spectra" / "earthlib_optimized.npz")
    parts = []
    for lib, fwhm in ((usgs, usgs["fwhm_nm"]), (earth, None)):
        spectra = lib["spectra"].astype(np.float64)
        on_grid = resample_bands(
            spectra.T[:, :, None], lib["wavelengths_nm"], fwhm, setup.wavelengths_nm, setup.fwhm_nm
        )
        parts.append(on_grid[:, :, 0].T)
    return np.clip(np.concatenate(parts), 0.0, None).astype(np.float32)


class BatchMaker:
    """Random (lr_hsi, hr_msi, reference) batches for one setup.

    Args:
        setup: the model setup.
        scenes: from :func:`load_scenes`.
        library: from :func:`load_library`.
        crop: HR crop size (multiple of the ratio).
        synthetic_fraction: probability that a sample is a synthetic scene.
        noise_probability: probability that a sample gets Gaussian noise (HSI 30-45 dB, MSI 35-50 dB SNR).
        augment: random rotations, flips, spectral tilt and brightness gain (off: crops only, for ablations).
        seed: random seed.
    """

    def __init__(
        self,
        setup: Setup,
        scenes: list[Scene],
        library: np.ndarray,
        *,
        crop: int,
        synthetic_fraction: float = 0.4,
        noise_probability: float = 0.3,
        augment: bool = True,
        seed: int = 0,
    ) -> None:
        if crop % setup.ratio:
            raise ValueError(f"crop must be a multiple of the ratio {setup.ratio}, got {crop}")
        self.setup = setup
        self.real = [s for s in scenes if s.cube is not None]
        self.abundances = [s.abundances for s in scenes if min(s.abundances.shape[1:]) >= crop]
        self.library = library
        self.crop = crop
        self.synthetic_fraction = synthetic_fraction if self.abundances else 0.0
        self.noise_probability = noise_probability
        self.augment = augment
        self.srf = setup.srf_matrix().astype(np.float32)
        self.rng = np.random.default_rng(seed)
        self._norm_wl = (setup.wavelengths_nm - setup.wavelengths_nm.mean()) / np.ptp(setup.wavelengths_nm)
        if not self.real and not self.abundances:
            raise ValueError(
                "no scene covers the setup's grid and no abundance map is large enough for the crop"
            )

    def _crop(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[-2:]
        if min(h, w) < self.crop:
            raise ValueError(f"region {h}x{w} is smaller than the crop {self.crop}")
        y, x = self.rng.integers(0, h - self.crop + 1), self.rng.integers(0, w - self.crop + 1)
        return image[..., y : y + self.crop, x : x + self.crop]

    def reference(self) -> np.ndarray:
        """One augmented reference crop (C, crop, crop) float32."""
        if self.rng.random() < self.synthetic_fraction or not self.real:
            maps = self._crop(self.abundances[self.rng.integers(len(self.abundances))])
            spectra = self.library[self.rng.choice(len(self.library), size=maps.shape[0], replace=False)]
            ref = np.einsum("pc,phw->chw", spectra, maps)
        else:
            ref = self._crop(self.real[self.rng.integers(len(self.real))].region("train"))
        if not self.augment:
            return np.ascontiguousarray(np.clip(ref, 0.0, None), dtype=np.float32)
        ref = np.rot90(ref, k=int(self.rng.integers(4)), axes=(1, 2))
        if self.rng.random() < 0.5:
            ref = ref[:, :, ::-1]
        tilt = (
            1.0
            + self.rng.uniform(-0.15, 0.15) * self._norm_wl
            + self.rng.uniform(-0.1, 0.1) * self._norm_wl**2
        )
        gain = self.rng.uniform(0.6, 1.4)
        return np.ascontiguousarray(np.clip(ref * (gain * tilt)[:, None, None], 0.0, None), dtype=np.float32)

    def simulate(self, ref: np.ndarray, *, nyquist_gain: float, noise: bool) -> tuple[np.ndarray, np.ndarray]:
        """(lr_hsi, hr_msi) of a reference crop, MTF-Gaussian PSF."""
        lr = degrade_spatial(ref, self.setup.ratio, "mtf", nyquist_gain=nyquist_gain)
        msi = np.einsum("kc,chw->khw", self.srf, ref)
        if noise:
            for arr, (lo, hi) in ((lr, (30.0, 45.0)), (msi, (35.0, 50.0))):
                power = np.mean(arr**2, axis=(1, 2), keepdims=True)
                sigma = np.sqrt(power / 10 ** (self.rng.uniform(lo, hi) / 10))
                arr += (self.rng.standard_normal(arr.shape) * sigma).astype(np.float32)
        return lr, msi.astype(np.float32)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(lr_hsi [B,C,h,w], hr_msi [B,c,H,W], reference [B,C,H,W])`` float32 tensors."""
        lrs, msis, refs = [], [], []
        for _ in range(size):
            ref = self.reference()
            lr, msi = self.simulate(
                ref,
                nyquist_gain=float(self.rng.uniform(0.2, 0.4)),
                noise=bool(self.rng.random() < self.noise_probability),
            )
            lrs.append(lr)
            msis.append(msi)
            refs.append(ref)
        return tuple(torch.from_numpy(np.stack(a)) for a in (lrs, msis, refs))  # type: ignore[return-value]


def test_pairs(
    setup: Setup, scenes: list[Scene], split: str = "test"
) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """``(scene, lr_hsi, hr_msi, reference)`` for one split of every scene on the grid, MTF PSF gain 0.3, no noise."""
    out = []
    srf = setup.srf_matrix().astype(np.float32)
    for scene in scenes:
        if scene.cube is None:
            continue
        ref = np.ascontiguousarray(scene.region(split))
        lr = degrade_spatial(ref, setup.ratio, "mtf", nyquist_gain=TEST_PSF_GAIN)
        msi = np.einsum("kc,chw->khw", srf, ref).astype(np.float32)
        out.append((scene.name, lr, msi, ref))
    return out

"""The model setups we train: (HSI band grid, MSI spectral response, ratio).

Band grids are 10 nm Gaussian bands (FWHM 10 nm). Why 10 nm: it is the sampling of every
training scene that has wavelengths (AVIRIS 9.4-10 nm, CASI-1500 ~9.5 nm), so the grid does not
pretend to a resolution the data cannot teach; it is the sampling of EnMAP's SWIR (10 nm) and
PRISMA (<= 12 nm) and close to EnMAP's VNIR (6.5 nm); narrower user bands are served through the
detail-only path of :mod:`pifnet_infer.spectral`.

- VNIR (400-1000 nm, 61 bands): drones and airborne VNIR imagers; covered by the AVIRIS,
  Jasper Ridge and MUUFL (CASI) scenes.
- VNIR-SWIR (400-2450 nm, 169 bands): 10 nm steps without 1270-1450 nm and 1800-1970 nm, around
  the water-vapour absorptions at 1380 and 1880 nm where sensors record almost no surface signal.
  The gaps are the union of the bad bands of the data we train on (AVIRIS GatorSense has zeroed
  or missing bands over 1268-1448 and 1816-1972 nm, Jasper Ridge removed 1359-1409 and 1817-1934 nm,
  earthlib 1355-1455 and 1795-1955 nm), so every training scene and library with a SWIR range
  covers every band. It ends at 2450 nm because Jasper Ridge ends at 2457 nm (EnMAP at 2445 nm).
  Users must drop their own bands inside the gaps (the library refuses bands outside the grid).

MSI responses: Sentinel-2A B2/B3/B4/B8 (ESA, via pyrsr, Apache-2.0 table in the package);
a flat 450-900 nm panchromatic band (synthetic, stand-in for ALI's pan whose table we do not
have; Landsat-8's pan, 503-676 nm, is a different band); the synthetic ``rgb_gaussian`` camera
(R 610, G 540, B 460 nm, FWHM 80 nm), redistributable, unlike measured camera curves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pifnet_infer.config import PIFNetConfig
from pifnet_infer.srf import SpectralResponse, load_srf, srf_matrix

BAND_FWHM_NM = 10.0
#: water-vapour windows removed from the VNIR-SWIR grid, inclusive band centres (nm)
WATER_VAPOUR_GAPS_NM = ((1270.0, 1450.0), (1800.0, 1970.0))


def vnir_grid() -> np.ndarray:
    """61 centres, 400-1000 nm every 10 nm, float64."""
    return np.arange(400.0, 1000.0 + 1, 10.0)


def vnirswir_grid() -> np.ndarray:
    """169 centres, 400-2450 nm every 10 nm without :data:`WATER_VAPOUR_GAPS_NM`, float64."""
    grid = np.arange(400.0, 2450.0 + 1, 10.0)
    keep = np.ones(grid.shape, dtype=bool)
    for lo, hi in WATER_VAPOUR_GAPS_NM:
        keep &= (grid < lo) | (grid > hi)
    return grid[keep]


@dataclass(frozen=True)
class Setup:
    """One trainable weight: its HSI band grid, MSI response and ratio.

    Attributes:
        name: weight name, ``pifnet-<grid>-<msi>-x<ratio>``.
        wavelengths_nm: float64 (C,) model band centres.
        msi_srf: spectral response name (:func:`pifnet_infer.srf.load_srf`).
        msi_bands_description: one label per MSI band.
        ratio: LR -> HR factor.
    """

    name: str
    wavelengths_nm: np.ndarray
    msi_srf: str
    msi_bands_description: tuple[str, ...]
    ratio: int

    @property
    def fwhm_nm(self) -> np.ndarray:
        """float64 (C,), :data:`BAND_FWHM_NM` everywhere."""
        return np.full(self.wavelengths_nm.shape, BAND_FWHM_NM)

    def response(self) -> SpectralResponse:
        """The MSI sensor's spectral response."""
        return load_srf(self.msi_srf)

    def srf_matrix(self) -> np.ndarray:
        """float64 (c, C): MSI bands from the model's HSI bands."""
        return srf_matrix(self.response(), self.wavelengths_nm, self.fwhm_nm)

    def config(self, dim: int = 64) -> PIFNetConfig:
        """The PIFNetConfig of this setup, official layout with feature width ``dim``."""
        return PIFNetConfig(
            hsi_bands=int(self.wavelengths_nm.size),
            msi_bands=len(self.msi_bands_description),
            ratio=self.ratio,
            dim=dim,
        )


SETUPS: dict[str, Setup] = {
    s.name: s
    for s in (
        Setup(
            "pifnet-vnirswir-s2-x3",
            vnirswir_grid(),
            "sentinel2a-10m",
            ("S2 B2 blue", "S2 B3 green", "S2 B4 red", "S2 B8 NIR"),
            3,
        ),
        Setup("pifnet-vnirswir-pan-x3", vnirswir_grid(), "pan_450_900", ("PAN 450-900 nm",), 3),
        Setup("pifnet-vnir-rgb-x4", vnir_grid(), "rgb_gaussian", ("R 610 nm", "G 540 nm", "B 460 nm"), 4),
    )
}


def get_setup(name: str) -> Setup:
    """The setup called ``name``.

    Raises:
        KeyError: unknown name; the message lists the setups.
    """
    try:
        return SETUPS[name]
    except KeyError:
        raise KeyError(f"unknown setup {name!r}; available: {', '.join(SETUPS)}") from None

"""Model configuration: :class:`PIFNetConfig` and the official presets.

A configuration fixes every shape of the network. The official code reads
only the HSI band count, the MSI band count and the ratio from its arguments
(spec section 1); the feature width ``dim`` is 64 in every official model.

.. versionadded:: 0.1
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PIFNetConfig:
    """Shape-defining hyper-parameters of PIF-Net.

    Args:
        hsi_bands: C, number of bands of the LR-HSI and of the output.
        msi_bands: c, number of bands of the HR-MSI.
        ratio: r, the LR -> HR scale factor (not stored in official checkpoints).
        dim: D, feature width (64 in the official code).
        d_state: N, state size of the selective scan.
        expand: d_inner = expand * dim.
        d_conv: kernel of the depthwise convolution inside VMamba.
        num_stages: number of Invertible Mamba blocks, FAM-LoRA blocks and
            alignment blocks (4 each in the official code).
        lora_alpha: multiplier of the FAM-LoRA low-rank branch.
        se_reduction: squeeze-excitation reduction factor.
    """

    hsi_bands: int
    msi_bands: int
    ratio: int = 4
    dim: int = 64
    d_state: int = 16
    expand: int = 2
    d_conv: int = 3
    num_stages: int = 4
    lora_alpha: float = 0.1
    se_reduction: int = 4

    def __post_init__(self) -> None:
        for name in ("hsi_bands", "msi_bands", "ratio", "dim", "d_state", "expand", "d_conv", "num_stages"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"PIFNetConfig.{name} must be a positive int, got {value!r}")
        if self.dim % self.se_reduction:
            raise ValueError(
                f"PIFNetConfig.dim ({self.dim}) must be divisible by se_reduction ({self.se_reduction})"
            )

    @property
    def d_inner(self) -> int:
        """Channel width inside VMamba (expand * dim)."""
        return self.expand * self.dim

    @property
    def dt_rank(self) -> int:
        """Rank of the step-size projection, ceil(dim / 16)."""
        return -(-self.dim // 16)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PIFNetConfig:
        """Build a config from :meth:`to_dict` output; unknown keys are refused."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown PIFNetConfig fields {unknown}; expected a subset of {sorted(known)}")
        return cls(**data)

    def replace(self, **changes: Any) -> PIFNetConfig:
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)


#: The official configurations (spec section 10.1). Chikusei appears twice because the
#: official training path builds it with 3 MSI bands and the test script with 4.
PRESETS: dict[str, PIFNetConfig] = {
    "chikusei": PIFNetConfig(hsi_bands=128, msi_bands=4),
    "chikusei-msi3": PIFNetConfig(hsi_bands=128, msi_bands=3),
    "paviau": PIFNetConfig(hsi_bands=103, msi_bands=4),
    "paviac": PIFNetConfig(hsi_bands=103, msi_bands=4),
    "houston": PIFNetConfig(hsi_bands=144, msi_bands=4),
    "cave": PIFNetConfig(hsi_bands=31, msi_bands=3),
    "bayarea": PIFNetConfig(hsi_bands=224, msi_bands=3),
    "santa": PIFNetConfig(hsi_bands=224, msi_bands=3),
}


def get_preset(name: str, **overrides: Any) -> PIFNetConfig:
    """Return the preset ``name`` (see :data:`PRESETS`), optionally with fields changed.

    Raises:
        KeyError: ``name`` is not a preset; the message lists the presets.
    """
    try:
        config = PRESETS[name.lower()]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; available presets: {', '.join(PRESETS)}") from None
    return config.replace(**overrides) if overrides else config

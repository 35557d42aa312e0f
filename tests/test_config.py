import pytest

from pifnet_infer.config import PRESETS, PIFNetConfig, get_preset


def test_round_trip_and_unknown_fields():
    cfg = get_preset("houston", ratio=8)
    assert cfg.ratio == 8 and cfg.hsi_bands == 144
    assert PIFNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown PIFNetConfig fields"):
        PIFNetConfig.from_dict({**cfg.to_dict(), "bands": 3})


def test_presets_are_the_official_configurations():
    assert {name: (c.hsi_bands, c.msi_bands) for name, c in PRESETS.items()} == {
        "chikusei": (128, 4), "chikusei-msi3": (128, 3), "paviau": (103, 4), "paviac": (103, 4),
        "houston": (144, 4), "cave": (31, 3), "bayarea": (224, 3), "santa": (224, 3),
    }  # fmt: skip
    assert all(c.dim == 64 and c.ratio == 4 for c in PRESETS.values())


@pytest.mark.parametrize("field", ["hsi_bands", "ratio", "dim"])
def test_invalid_values_are_refused(field):
    with pytest.raises(ValueError, match=field):
        PIFNetConfig(**{"hsi_bands": 4, "msi_bands": 3, field: 0})


def test_unknown_preset_lists_the_presets():
    with pytest.raises(KeyError, match="cave"):
        get_preset("indian-pines")

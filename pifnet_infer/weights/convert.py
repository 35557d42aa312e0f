"""Convert an official PIF-Net ``.pth`` checkpoint to a safetensors file this package loads.

This is the only place in the package that calls ``torch.load``, always with
``weights_only=True`` (no arbitrary pickled objects) and ``map_location="cpu"``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from pifnet_infer.config import PRESETS, PIFNetConfig, get_preset
from pifnet_infer.errors import CheckpointMismatchError
from pifnet_infer.io.atomic import check_output_path

_logger = logging.getLogger(__name__)

#: Keys whose shapes carry the band counts (spec section 9): C = hsi_head in-channels, c = msi_head in-channels.
_HSI_KEY = "hsi_head.net.0.weight"
_MSI_KEY = "msi_head.net.0.weight"
_VMAMBA_PREFIX = "inblocks.0.blocks.0."
_MZEROMIKO_KEYS = ("x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds")
_MAX_LISTED = 20


def convert_checkpoint(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    preset: str,
    ratio: int | None = None,
    overwrite: bool = False,
    band_grid: tuple[Sequence[float], Sequence[float] | None] | None = None,
) -> PIFNetConfig:
    """Check an official checkpoint against a preset and write it as safetensors.

    Accepts a bare ``state_dict`` (as the official trainer saves it) or one nested under ``"net"``
    (as its ``test.py`` expects) or ``"state_dict"``; ``module.`` prefixes are stripped. Keys and
    shapes must equal those of ``PIFNet(get_preset(preset))``; when they look like another Mamba
    variant of spec section 5.6 the error names it. Nothing is written unless every check passes
    (the output goes to a temporary file in the same folder, renamed on success).

    Args:
        in_path: the ``.pth`` file.
        out_path: the ``.safetensors`` file to write (config and ratio stored in its metadata).
        preset: name from :data:`pifnet_infer.config.PRESETS`.
        ratio: the LR -> HR ratio the checkpoint was trained for (not stored in official
            checkpoints); default the preset's (4).
        overwrite: replace an existing ``out_path``.
        band_grid: (HSI band centres, FWHM or None) in nm the checkpoint was trained on, stored in the
            file's metadata so that it is known when the file is loaded by path.

    Returns:
        The configuration written to the file.

    Raises:
        CheckpointMismatchError: unreadable checkpoint, other band counts than the preset (the
            message names the presets that fit), missing / unexpected / mis-shaped keys (listed), or
            NaN / infinite values (the tensors named).
        FileExistsError: ``out_path`` exists and ``overwrite`` is False.
        ValueError: ``out_path`` is ``in_path`` (refused even with ``overwrite``).
    """
    from pifnet_infer.weights import save_state_dict

    config = get_preset(preset) if ratio is None else get_preset(preset, ratio=ratio)
    source, target = Path(in_path), Path(out_path)
    if target.suffix != ".safetensors":
        raise ValueError(f"expected an output path ending in .safetensors, got {str(target)!r}")
    check_output_path(target, overwrite=overwrite, inputs={"checkpoint": source})
    state = read_official_checkpoint(source)
    check_band_counts(state, config, preset=preset)
    check_finite(state, source)
    expected = _expected_shapes(config)
    differences = state_dict_differences(expected, {k: tuple(v.shape) for k, v in state.items()})
    if differences:
        variant = detect_mamba_variant(state)
        note = (
            f"its VMamba keys are those of {variant} (spec section 5.6), not of the HSRMamba VMamba this package implements; "
            if variant
            else ""
        )
        raise CheckpointMismatchError(
            f"{str(source)!r} does not match preset {preset!r}: {note}{len(differences)} difference(s):\n  "
            + "\n  ".join(differences)
        )
    save_state_dict(
        {k: v.detach().clone().contiguous() for k, v in state.items()},
        target,
        config=config,
        metadata={"pifnet_infer.source": source.name, "pifnet_infer.preset": preset},
        band_grid=band_grid,
    )
    _logger.info("converted %s -> %s (preset %s, ratio %d)", source, target, preset, config.ratio)
    return config


def read_official_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a ``.pth`` state_dict safely: ``weights_only=True``, unwrap ``net``/``state_dict``, strip ``module.``.

    Raises:
        CheckpointMismatchError: the file holds pickled objects other than tensors and containers,
            or is not a mapping of names to tensors.
    """
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # torch's message advises weights_only=False: never relay that
        raise CheckpointMismatchError(
            f"{str(path)!r} holds pickled Python objects besides tensors, which a weights-only load refuses: "
            "only plain state_dicts are accepted, never arbitrary pickles; save model.state_dict() and convert that"
        ) from err
    except Exception as err:  # torch raises many kinds (RuntimeError, EOFError, SafetensorError, ...)
        raise CheckpointMismatchError(
            f"cannot read {str(path)!r} as a PyTorch checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'})"
        ) from err
    if isinstance(loaded, Mapping):
        for wrapper in ("net", "state_dict"):
            if isinstance(loaded.get(wrapper), Mapping):
                loaded = loaded[wrapper]
                break
    if not isinstance(loaded, Mapping) or not loaded:
        raise CheckpointMismatchError(
            f"expected a state_dict (a non-empty mapping of names to tensors, possibly under 'net' or "
            f"'state_dict') in {str(path)!r}, got {type(loaded).__name__}"
        )
    not_tensors = sorted(str(k) for k, v in loaded.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointMismatchError(
            f"expected only tensors in the state_dict of {str(path)!r}; these entries are not: {not_tensors[:_MAX_LISTED]}"
        )
    state: dict[str, torch.Tensor] = {}
    for key, value in loaded.items():
        name = str(key)
        while name.startswith("module."):
            name = name[len("module.") :]
        state[name] = value
    return state


def check_band_counts(state: Mapping[str, torch.Tensor], config: PIFNetConfig, *, preset: str) -> None:
    """Refuse a checkpoint whose HSI/MSI band counts (read from head shapes) differ from ``config``."""
    if (
        _HSI_KEY not in state
        or _MSI_KEY not in state
        or state[_HSI_KEY].ndim != 4
        or state[_MSI_KEY].ndim != 4
    ):
        return  # reported with the other key differences
    bands, msi_bands = int(state[_HSI_KEY].shape[1]), int(state[_MSI_KEY].shape[1])
    if (bands, msi_bands) == (config.hsi_bands, config.msi_bands):
        return
    fitting = [name for name, cfg in PRESETS.items() if (cfg.hsi_bands, cfg.msi_bands) == (bands, msi_bands)]
    hint = (
        f"presets that fit: {', '.join(fitting)}"
        if fitting
        else "no preset fits; build a PIFNetConfig by hand"
    )
    raise CheckpointMismatchError(
        f"the checkpoint has {bands} HSI bands and {msi_bands} MSI bands ({_HSI_KEY} {tuple(state[_HSI_KEY].shape)}, "
        f"{_MSI_KEY} {tuple(state[_MSI_KEY].shape)}) but preset {preset!r} expects {config.hsi_bands} and "
        f"{config.msi_bands}; {hint}"
    )


def detect_mamba_variant(state: Mapping[str, object]) -> str | None:
    """Name the VMamba variant of spec section 5.6 whose keys ``state`` has, when it is not variant A.

    Returns:
        ``"HSRMamba SpectralMamba"``, ``"MzeroMiko VMamba SS2D/VSSBlock"`` or ``None`` (variant A or
        unrecognised).
    """
    keys = [k[len(_VMAMBA_PREFIX) :] for k in state if k.startswith(_VMAMBA_PREFIX)]
    if any(k.split(".")[-1] in _MZEROMIKO_KEYS for k in keys):
        return "MzeroMiko VMamba SS2D/VSSBlock"
    if {f"conv{i}.weight" for i in range(1, 5)} <= set(keys):
        return "HSRMamba SpectralMamba"
    return None


def state_dict_differences(
    expected: Mapping[str, tuple[int, ...]], got: Mapping[str, tuple[int, ...]]
) -> list[str]:
    """Human-readable list of missing, unexpected and mis-shaped keys (at most 20 of each kind shown)."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shaped = [k for k in expected if k in got and tuple(expected[k]) != tuple(got[k])]
    lines: list[str] = []
    for label, keys, describe in (
        ("missing", missing, lambda k: f"{k} {tuple(expected[k])}"),
        ("unexpected", unexpected, lambda k: f"{k} {tuple(got[k])}"),
        ("mis-shaped", shaped, lambda k: f"{k}: expected {tuple(expected[k])}, got {tuple(got[k])}"),
    ):
        lines += [f"{label}: {describe(k)}" for k in keys[:_MAX_LISTED]]
        if len(keys) > _MAX_LISTED:
            lines.append(f"... and {len(keys) - _MAX_LISTED} more {label} keys")
    return lines


def check_finite(state: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> None:
    """Refuse a state_dict holding a NaN or infinite value, naming the first tensors that do.

    Raises:
        CheckpointMismatchError: some floating-point tensor is not finite everywhere.
    """
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise CheckpointMismatchError(
            f"{str(path)!r} holds NaN or infinite values in {len(bad)} tensor(s): {shown}; the weights are corrupt "
            "or come from a diverged training run: use another checkpoint"
        )


def _expected_shapes(config: PIFNetConfig) -> dict[str, tuple[int, ...]]:
    from pifnet_infer.models import PIFNet

    return {k: tuple(v.shape) for k, v in PIFNet(config).state_dict().items()}

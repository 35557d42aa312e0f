"""Named PIF-Net weights: the manifest, verified loading, and the safetensors file format.

A weight file is a safetensors file whose metadata holds the model configuration as JSON under
:data:`METADATA_CONFIG_KEY` (``"pifnet_infer.config"``), written by :func:`save_weights` or
:func:`~pifnet_infer.weights.convert.convert_checkpoint`. Files are only ever read as safetensors
(no pickle) and loaded with ``strict=True``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pifnet_infer._utils.device import DTypeArg, resolve_device, resolve_dtype
from pifnet_infer._version import __version__
from pifnet_infer.config import PIFNetConfig
from pifnet_infer.errors import CheckpointMismatchError, ManifestError, WeightsNotFoundError
from pifnet_infer.io.atomic import temp_file_beside
from pifnet_infer.weights.hub import resolve_weight_file, sha256_file
from pifnet_infer.weights.manifest import MANIFEST_ENV, WeightEntry, load_manifest

if TYPE_CHECKING:
    from pifnet_infer.models import PIFNet

__all__ = [
    "MANIFEST_ENV",
    "METADATA_CONFIG_KEY",
    "WeightEntry",
    "clear_model_cache",
    "get_weight",
    "list_weights",
    "load_model",
    "model_band_grid",
    "read_weights_config",
    "save_state_dict",
    "save_weights",
    "weights_for",
]

_logger = logging.getLogger(__name__)

#: safetensors metadata key holding ``PIFNetConfig.to_dict()`` as JSON.
METADATA_CONFIG_KEY = "pifnet_infer.config"
_METADATA_VERSION_KEY = "pifnet_infer.version"
#: safetensors metadata keys holding the HSI band grid (JSON lists of nm), so a file carries it without a manifest
METADATA_WAVELENGTHS_KEY = "pifnet_infer.hsi_wavelengths_nm"
METADATA_FWHM_KEY = "pifnet_infer.hsi_fwhm_nm"

_MODEL_CACHE: dict[tuple[object, ...], PIFNet] = {}
_CACHE_LOCK = threading.Lock()


def list_weights() -> list[str]:
    """Names of the weights in the manifest, in manifest order.

    .. versionadded:: 0.1
    """
    return list(load_manifest())


def get_weight(name: str) -> WeightEntry:
    """The manifest entry called ``name``.

    Raises:
        WeightsNotFoundError: no such name; the message lists the available names.

    .. versionadded:: 0.1
    """
    entries = load_manifest()
    if name not in entries:
        available = ", ".join(entries) or "none (the manifest is empty)"
        raise WeightsNotFoundError(
            f"unknown weights {name!r}; available weights: {available}. "
            f"See `pifnet-infer weights list`, or pass a path to a .safetensors file"
        )
    return entries[name]


def weights_for(
    *,
    hsi_bands: int | None = None,
    msi_bands: int | None = None,
    ratio: int | None = None,
    wavelengths_nm: Sequence[float] | None = None,
    wavelength_tolerance_nm: float = 2.0,
) -> list[WeightEntry]:
    """Manifest entries that fit the given inputs (``None`` = no constraint).

    Args:
        hsi_bands: C of the LR-HSI; must equal the entry's.
        msi_bands: c of the HR-MSI; must equal the entry's.
        ratio: LR -> HR factor; must equal the entry's.
        wavelengths_nm: HSI band centres; an entry with known wavelengths fits when it has as many
            bands and every centre is within ``wavelength_tolerance_nm``; an entry without
            wavelengths fits any.
        wavelength_tolerance_nm: see ``wavelengths_nm``.

    Returns:
        The fitting entries in manifest order (empty when none fits).

    .. versionadded:: 0.1
    """
    fitting = []
    for entry in load_manifest().values():
        cfg = entry.config
        if hsi_bands is not None and cfg.hsi_bands != hsi_bands:
            continue
        if msi_bands is not None and cfg.msi_bands != msi_bands:
            continue
        if ratio is not None and cfg.ratio != ratio:
            continue
        if wavelengths_nm is not None and entry.hsi_wavelengths_nm is not None:
            ours = entry.hsi_wavelengths_nm
            if len(wavelengths_nm) != len(ours) or any(
                not math.isclose(a, b, abs_tol=wavelength_tolerance_nm)
                for a, b in zip(ours, wavelengths_nm, strict=True)
            ):
                continue
        fitting.append(entry)
    return fitting


def save_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    *,
    config: PIFNetConfig,
    metadata: Mapping[str, str] | None = None,
    band_grid: BandGrid | None = None,
) -> Path:
    """Write tensors and ``config`` to a safetensors file atomically (temporary file, then rename).

    Args:
        state_dict: name -> tensor (moved to CPU, made contiguous).
        path: destination ``.safetensors`` file.
        config: stored as JSON under :data:`METADATA_CONFIG_KEY`.
        metadata: extra string metadata; keys starting with ``pifnet_infer.`` other than
            ``pifnet_infer.source`` / ``pifnet_infer.preset`` are reserved.
        band_grid: (HSI band centres in nm, FWHM in nm or None) the weights were trained on, stored under
            :data:`METADATA_WAVELENGTHS_KEY` / :data:`METADATA_FWHM_KEY` and read back by :func:`load_model`.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    from safetensors.torch import save_file

    extra = dict(metadata or {})
    bad = [k for k, v in extra.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise ValueError(f"metadata must map str to str; these keys do not: {bad!r}")
    reserved = sorted(
        {METADATA_CONFIG_KEY, _METADATA_VERSION_KEY, METADATA_WAVELENGTHS_KEY, METADATA_FWHM_KEY, "format"}
        & set(extra)
    )
    if reserved:
        raise ValueError(f"metadata keys {reserved} are written by pifnet-infer itself; use other names")
    header = {
        **extra,
        "format": "pt",
        METADATA_CONFIG_KEY: json.dumps(config.to_dict(), sort_keys=True),
        _METADATA_VERSION_KEY: __version__,
    }
    if band_grid is not None:
        wavelengths, fwhm = band_grid
        if len(wavelengths) != config.hsi_bands:
            raise ValueError(f"band_grid has {len(wavelengths)} wavelengths for {config.hsi_bands} HSI bands")
        header[METADATA_WAVELENGTHS_KEY] = json.dumps([float(w) for w in wavelengths])
        if fwhm is not None:
            header[METADATA_FWHM_KEY] = json.dumps([float(w) for w in fwhm])
    target = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    tmp = temp_file_beside(target)
    mode = stat.S_IMODE(tmp.stat().st_mode)  # the umask's; save_file replaces the file with a 0600 one
    try:
        save_file(tensors, tmp, metadata=header)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def save_weights(
    model: PIFNet, path: str | os.PathLike[str], *, metadata: Mapping[str, str] | None = None
) -> Path:
    """Save ``model``'s weights and ``model.config`` as a safetensors file :func:`load_model` reads.

    Args:
        model: a :class:`~pifnet_infer.models.PIFNet` (anything with ``.config`` and ``.state_dict()``).
        path: destination ``.safetensors`` file (written atomically).
        metadata: extra string metadata (e.g. training run id).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    .. versionadded:: 0.1
    """
    return save_state_dict(
        model.state_dict(), path, config=model.config, metadata=metadata, band_grid=model_band_grid(model)
    )


BandGrid = tuple[Sequence[float], Sequence[float] | None]


def model_band_grid(model: torch.nn.Module) -> BandGrid | None:
    """(HSI band centres, FWHM or None) in nm a model was trained on: its manifest entry's, else its file's.

    .. versionadded:: 0.1
    """
    entry = getattr(model, "weight_entry", None)
    if entry is not None and entry.hsi_wavelengths_nm is not None:
        return entry.hsi_wavelengths_nm, entry.hsi_fwhm_nm
    grid: BandGrid | None = getattr(model, "band_grid", None)
    return grid


def _band_grid_from_header(header: Mapping[str, str], path: str | os.PathLike[str]) -> BandGrid | None:
    if METADATA_WAVELENGTHS_KEY not in header:
        return None
    try:
        wavelengths = tuple(float(w) for w in json.loads(header[METADATA_WAVELENGTHS_KEY]))
        fwhm = header.get(METADATA_FWHM_KEY)
        return wavelengths, None if fwhm is None else tuple(float(w) for w in json.loads(fwhm))
    except (ValueError, TypeError) as err:
        raise CheckpointMismatchError(f"invalid band grid metadata in {str(path)!r}: {err}") from err


def read_weights_config(path: str | os.PathLike[str]) -> PIFNetConfig:
    """The configuration stored in a weight file's metadata (reads the header only).

    Raises:
        CheckpointMismatchError: not a safetensors file, or no valid config in its metadata.
    """
    return _config_from_header(_read_header(path), path)


def _read_header(path: str | os.PathLike[str]) -> dict[str, str]:
    """A safetensors file's string metadata (the header only)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise CheckpointMismatchError(f"cannot read {str(path)!r} as a safetensors file: {err}") from err


def _config_from_header(header: Mapping[str, str], path: str | os.PathLike[str]) -> PIFNetConfig:
    if METADATA_CONFIG_KEY not in header:
        raise CheckpointMismatchError(
            f"{str(path)!r} has no {METADATA_CONFIG_KEY!r} metadata (found keys {sorted(header)}); write weight "
            f"files with pifnet_infer.weights.save_weights or `pifnet-infer convert`"
        )
    try:
        return PIFNetConfig.from_dict(json.loads(header[METADATA_CONFIG_KEY]))
    except (ValueError, TypeError) as err:
        raise CheckpointMismatchError(
            f"invalid {METADATA_CONFIG_KEY!r} metadata in {str(path)!r}: {err}"
        ) from err


def load_model(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | torch.device = "auto",
    dtype: DTypeArg = "auto",
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
    token: str | bool | None = None,
) -> PIFNet:
    """A ready PIF-Net in ``eval()`` mode, from a manifest name or a ``.safetensors`` path.

    Names resolve as described in :mod:`pifnet_infer.weights.hub` (bundled file, checkout
    ``weights/``, huggingface_hub cache, Hub at the pinned revision); the sha256 is checked before
    the file is read, the file's config must equal the manifest's, and weights load with
    ``strict=True``. Models are cached in-process per (file or name, revision, device, dtype): the
    same object comes back on the next call, so treat it as read-only (``copy.deepcopy`` it before
    training or editing it) or call :func:`clear_model_cache`.

    Args:
        name_or_path: a name from :func:`list_weights`, or a path to a file written by
            :func:`save_weights` / ``pifnet-infer convert``.
        device: ``"auto"`` (CUDA when available, else CPU), or any torch device.
        dtype: parameter dtype. ``"auto"`` and ``"float32"`` keep fp32 parameters (mixed precision
            is applied by autocast at run time); ``"float16"`` / ``"bfloat16"`` cast them.
        revision: Hub revision instead of the manifest's pin (names only).
        cache_dir: huggingface_hub cache folder.
        local_files_only: never use the network.
        force_download: download again even if cached.
        token: Hub token for private repositories.

    Returns:
        The model, with ``model.weight_entry`` set to its :class:`WeightEntry` (for a path: the entry of
        the same file, a copy of a manifest weight, else ``None``) and ``model.band_grid`` to the band grid
        stored in the file (:func:`model_band_grid` gives either).

    Raises:
        WeightsNotFoundError: unknown name (available names listed), missing file, or not cached
            while offline (the message names ``pifnet-infer weights download NAME``).
        ChecksumMismatchError: the file's sha256 differs from the manifest.
        CheckpointMismatchError: the file's config differs from the manifest's, its keys/shapes
            differ from the model's, or a tensor holds NaN or infinite values (named).

    .. versionadded:: 0.1
    """
    torch_device = resolve_device(device)
    param_dtype = torch.float32 if dtype == "auto" else resolve_dtype(dtype, torch_device)
    text = str(name_or_path)
    by_path = (
        isinstance(name_or_path, os.PathLike)
        or text.endswith(".safetensors")
        or "/" in text
        or os.sep in text
    )
    if by_path:
        path = Path(name_or_path)
        if not path.is_file():
            names = ", ".join(load_manifest()) or "none (the manifest is empty)"
            raise WeightsNotFoundError(
                f"weight file {str(path)!r} does not exist; pass an existing .safetensors file or one of the "
                f"manifest's weights: {names}"
            )
        sha = sha256_file(path)
        key: tuple[object, ...] = ("file", sha, str(torch_device), param_dtype)
        entry = _entry_for_file(sha)
    else:
        entry = get_weight(str(name_or_path))
        _warn_below_target(entry)
        key = ("name", entry.name, entry.sha256, revision, str(torch_device), param_dtype)
    with _CACHE_LOCK:
        cached = _MODEL_CACHE.get(key)
    if cached is not None and not force_download:
        _logger.debug("load_model: cache hit for %s", key)
        return cached
    if not by_path:
        path = resolve_weight_file(
            entry,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            force_download=force_download,
            token=token,
        )
    model = build_model_from_file(path, entry)
    model.to(device=torch_device, dtype=param_dtype)
    model.eval()
    model.weight_entry = entry
    with _CACHE_LOCK:
        _MODEL_CACHE[key] = model
    _logger.info("loaded %s on %s (%s)", entry.name if entry else path, torch_device, param_dtype)
    return model


def _entry_for_file(sha256: str) -> WeightEntry | None:
    """The manifest entry of a file with this sha256 (a copy of a manifest weight), else None."""
    try:
        entries = load_manifest()
    except ManifestError as err:  # a file needs no manifest
        _logger.debug("no manifest to match %s against: %s", sha256, err)
        return None
    return next((e for e in entries.values() if e.sha256 == sha256), None)


def _warn_below_target(entry: WeightEntry) -> None:
    """Log once per process when the entry's held-out scores missed the classical baseline (manifest ``target``)."""
    target = entry.metrics.get("target")
    if not isinstance(target, dict) or target.get("met", True) or entry.name in _WARNED:
        return
    _WARNED.add(entry.name)
    _logger.warning(
        "%s scores %.1f dB PSNR and %+.1f deg SAM against %s on held-out data: a classical baseline "
        "(pifnet_infer.baselines.glp_hs) is the better choice for this sensor pair; see its model card",
        entry.name,
        target.get("psnr_gap_db", float("nan")),
        target.get("sam_gap_deg", float("nan")),
        target.get("best_classical_psnr", "the best classical baseline"),
    )


#: names :func:`_warn_below_target` has warned about in this process
_WARNED: set[str] = set()


def clear_model_cache() -> None:
    """Forget every model :func:`load_model` has cached in this process.

    .. versionadded:: 0.1
    """
    with _CACHE_LOCK:
        _MODEL_CACHE.clear()


def build_model_from_file(path: str | os.PathLike[str], entry: WeightEntry | None = None) -> PIFNet:
    """Build a CPU fp32 PIFNet from a weight file already verified by the caller (no cache, no sha check).

    Raises:
        CheckpointMismatchError: config differs from ``entry.config``, keys/shapes differ, or a tensor
            holds NaN or infinite values.
    """
    from safetensors.torch import load_file

    from pifnet_infer.weights.convert import check_finite, state_dict_differences

    header = _read_header(path)
    config = _config_from_header(header, path)
    if entry is not None and config != entry.config:
        ours, theirs = entry.config.to_dict(), config.to_dict()
        changed = {k: (ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]}
        raise CheckpointMismatchError(
            f"{str(path)!r} was saved with a config that differs from manifest entry {entry.name!r} "
            f"(field: (manifest, file)) {changed}; refusing to load it. Fix the manifest entry or the file"
        )
    state = load_file(str(path), device="cpu")
    model = _new_model(config, header)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    differences = state_dict_differences(expected, {k: tuple(v.shape) for k, v in state.items()})
    if differences:
        raise CheckpointMismatchError(
            f"{str(path)!r} does not fit PIFNet({config}): {len(differences)} difference(s):\n  "
            + "\n  ".join(differences)
        )
    check_finite(state, path)
    model.load_state_dict(state, strict=True)
    model.band_grid = _band_grid_from_header(header, path)
    return model


def _new_model(config: PIFNetConfig, header: Mapping[str, str]) -> PIFNet:
    """An untrained model of the kind a file's header describes: a PIFNet, or an adapted one (with its prior)."""
    from pifnet_infer.models import PIFNet

    if "pifnet_infer.adapt" not in header:
        return PIFNet(config)
    from pifnet_infer.adapt.network import AdaptedModel

    return AdaptedModel.from_metadata(config, header)

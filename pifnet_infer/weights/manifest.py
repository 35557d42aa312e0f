"""The weights manifest: where it lives, and its entries as :class:`WeightEntry`.

There is one manifest file, ``weights_manifest.json`` at the repository root. The wheel ships it as
``pifnet_infer/weights_manifest.json`` (hatch ``force-include``); an editable checkout reads the
repository file. Setting ``PIFNET_WEIGHTS_MANIFEST=/path/to/manifest.json`` (read at call time) makes
every function of :mod:`pifnet_infer.weights` use that file instead, e.g. for tests or a private zoo.
``weights_manifest.schema.json`` beside it is the JSON Schema of the format; this module applies the
same rules without depending on ``jsonschema``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import importlib.resources
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pifnet_infer.config import PIFNetConfig
from pifnet_infer.errors import ManifestError

#: Environment variable naming another manifest file (read at call time).
MANIFEST_ENV = "PIFNET_WEIGHTS_MANIFEST"
MANIFEST_FILENAME = "weights_manifest.json"
SCHEMA_VERSION = 1

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_FILENAME_RE = re.compile(r"^[A-Za-z0-9._-]+\.safetensors$")
_INPUT_RANGE_KEYS = ("scale", "offset", "min", "max")
_TRAINING_KEYS = ("data", "protocol", "command", "commit")
_ENTRY_KEYS = frozenset(
    {
        "name", "repo_id", "filename", "revision", "sha256", "size_bytes", "format", "config",
        "hsi_wavelengths_nm", "hsi_fwhm_nm", "msi_srf", "msi_bands_description", "input_range",
        "training", "metrics", "licence", "bundled", "description", "model_card",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class WeightEntry:
    """One entry of the weights manifest (a frozen mirror of the JSON object).

    Attributes:
        name: weight name, ``pifnet-<dataset>-x<ratio>``.
        repo_id: Hugging Face Hub model repository, ``owner/name``.
        filename: the ``.safetensors`` file inside the repository (and inside ``bundled/``).
        revision: 40-hex Hub commit pinning the file, or ``None`` while the file is not published
            yet (it is then read from ``weights/`` beside the manifest in a checkout).
        sha256: lowercase hex sha256 of the file, checked before the file is deserialised.
        size_bytes: file size in bytes.
        format: always ``"safetensors"``.
        config: the model configuration the file was trained with.
        hsi_wavelengths_nm: centre wavelength of every HSI band, or ``None`` when unknown.
        hsi_fwhm_nm: band widths (FWHM) in nm, or ``None``.
        msi_srf: name of the spectral response used to make the MSI, e.g. ``"sentinel2a-10m"``.
        msi_bands_description: one label per MSI band, or ``None``.
        input_range: ``{"scale", "offset", "min", "max", "units"}``: the model expects
            ``raw * scale + offset`` in ``[min, max]`` (units, e.g. ``"reflectance"``).
        training: how the weights were made (``data``, ``protocol``, ``command``, ``commit``, and
            optionally ``hardware``, ``duration``).
        metrics: held-out scores with the ``protocol`` used to compute them.
        licence: SPDX identifier of the weights' licence.
        bundled: True when the file ships inside the package (``pifnet_infer/weights/bundled/``).
        description: one line for ``pifnet-infer weights list``.
        model_card: path of the model card relative to the manifest, or ``None``.

    .. versionadded:: 0.1
    """

    name: str
    repo_id: str
    filename: str
    revision: str | None
    sha256: str
    size_bytes: int
    format: str
    config: PIFNetConfig
    hsi_wavelengths_nm: tuple[float, ...] | None
    hsi_fwhm_nm: tuple[float, ...] | None
    msi_srf: str
    msi_bands_description: tuple[str, ...] | None
    input_range: dict[str, Any] = field(hash=False)
    training: dict[str, Any] = field(hash=False)
    metrics: dict[str, Any] = field(hash=False)
    licence: str
    bundled: bool
    description: str
    model_card: str | None

    @property
    def published(self) -> bool:
        """True once the file has a pinned Hub revision."""
        return self.revision is not None


def manifest_path() -> Path:
    """Path of the manifest in use.

    Order: ``$PIFNET_WEIGHTS_MANIFEST``; the copy installed in the package; the repository-root
    file of an editable checkout.

    Raises:
        ManifestError: none of these files exists.
    """
    override = os.environ.get(MANIFEST_ENV)
    if override:
        return Path(override).expanduser()
    installed = _installed_manifest()
    if installed is not None:
        return installed
    checkout = checkout_root() / MANIFEST_FILENAME
    if checkout.is_file():
        return checkout
    raise ManifestError(
        f"no {MANIFEST_FILENAME} found in the installed package nor at {str(checkout)!r}; reinstall "
        f"pifnet-infer or set {MANIFEST_ENV} to a manifest file"
    )


def checkout_root() -> Path:
    """The folder above the ``pifnet_infer`` package (the repository root in a checkout)."""
    return Path(__file__).resolve().parents[2]


def local_weights_dir() -> Path | None:
    """Folder of unpublished weight files: ``weights/`` beside the manifest in use.

    ``None`` when the manifest in use is the copy installed inside the package (a wheel has no
    such folder).
    """
    if not os.environ.get(MANIFEST_ENV) and _installed_manifest() is not None:
        return None
    return manifest_path().parent / "weights"


def _installed_manifest() -> Path | None:
    installed = importlib.resources.files("pifnet_infer").joinpath(MANIFEST_FILENAME)
    return Path(str(installed)) if installed.is_file() else None


def load_manifest(path: str | os.PathLike[str] | None = None) -> dict[str, WeightEntry]:
    """Read and validate a manifest file.

    Args:
        path: manifest file; default :func:`manifest_path`.

    Returns:
        ``{name: WeightEntry}`` in file order.

    Raises:
        ManifestError: unreadable JSON or an entry that breaks the schema (the message names it).
    """
    file = Path(path) if path is not None else manifest_path()
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ManifestError(f"cannot read the weights manifest {str(file)!r}: {err}") from err
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        raise ManifestError(
            f"{str(file)!r}: expected an object with schema_version {SCHEMA_VERSION}, "
            f"got schema_version {data.get('schema_version') if isinstance(data, dict) else data!r}"
        )
    if not isinstance(data.get("weights"), list) or set(data) - {"schema_version", "weights", "$schema"}:
        raise ManifestError(
            f"{str(file)!r}: expected keys 'schema_version' and 'weights' (a list), got {sorted(data)}"
        )
    entries: dict[str, WeightEntry] = {}
    for index, raw in enumerate(data["weights"]):
        entry = parse_entry(raw, where=f"{file}: weights[{index}]")
        if entry.name in entries:
            raise ManifestError(f"{str(file)!r}: weight name {entry.name!r} appears twice")
        entries[entry.name] = entry
    return entries


def parse_entry(raw: Any, *, where: str = "manifest entry") -> WeightEntry:
    """Validate one JSON entry and build its :class:`WeightEntry`.

    Raises:
        ManifestError: the first rule the entry breaks, with the offending value.
    """
    if not isinstance(raw, Mapping):
        raise ManifestError(f"{where}: expected an object, got {raw!r}")
    where = f"{where} ({raw.get('name')!r})"
    missing, unknown = sorted(_ENTRY_KEYS - set(raw)), sorted(set(raw) - _ENTRY_KEYS)
    if missing or unknown:
        raise ManifestError(f"{where}: missing keys {missing}, unknown keys {unknown}")

    def check(ok: bool, key: str, expected: str) -> None:
        if not ok:
            raise ManifestError(f"{where}: {key!r} must be {expected}, got {raw[key]!r}")

    check(_matches(_NAME_RE, raw["name"]), "name", "lowercase letters, digits, '.', '_' or '-'")
    check(_matches(_REPO_ID_RE, raw["repo_id"]), "repo_id", "'owner/name'")
    check(_matches(_FILENAME_RE, raw["filename"]), "filename", "a plain file name ending in .safetensors")
    check(
        raw["revision"] is None or _matches(_COMMIT_RE, raw["revision"]),
        "revision",
        "a 40-hex commit or null",
    )
    check(_matches(_SHA256_RE, raw["sha256"]), "sha256", "64 lowercase hex digits")
    check(_is_int(raw["size_bytes"]) and raw["size_bytes"] > 0, "size_bytes", "a positive integer")
    check(raw["format"] == "safetensors", "format", "'safetensors'")
    check(isinstance(raw["config"], Mapping), "config", "an object of PIFNetConfig fields")
    check(
        all(k in raw["config"] for k in ("hsi_bands", "msi_bands", "ratio")),
        "config",
        "an object with at least hsi_bands, msi_bands and ratio",
    )
    try:
        config = PIFNetConfig.from_dict(dict(raw["config"]))
    except (TypeError, ValueError) as err:
        raise ManifestError(f"{where}: invalid 'config': {err}") from err
    for key in ("hsi_wavelengths_nm", "hsi_fwhm_nm"):
        value = raw[key]
        check(
            value is None
            or (
                isinstance(value, list)
                and len(value) == config.hsi_bands
                and all(_is_positive(v) for v in value)
            ),
            key,
            f"null or a list of {config.hsi_bands} positive numbers (one per HSI band)",
        )
    check(isinstance(raw["msi_srf"], str) and bool(raw["msi_srf"]), "msi_srf", "a non-empty string")
    desc = raw["msi_bands_description"]
    check(
        desc is None
        or (
            isinstance(desc, list) and len(desc) == config.msi_bands and all(isinstance(d, str) for d in desc)
        ),
        "msi_bands_description",
        f"null or a list of {config.msi_bands} strings (one per MSI band)",
    )
    rng = raw["input_range"]
    check(
        isinstance(rng, Mapping)
        and set(rng) == {*_INPUT_RANGE_KEYS, "units"}
        and all(_is_number(rng[k]) for k in _INPUT_RANGE_KEYS)
        and isinstance(rng["units"], str)
        and rng["scale"] != 0
        and rng["min"] < rng["max"],
        "input_range",
        "{'scale', 'offset', 'min' < 'max' (numbers), 'units' (string)} with scale != 0",
    )
    training = raw["training"]
    check(
        isinstance(training, Mapping) and all(isinstance(training.get(k), str) for k in _TRAINING_KEYS),
        "training",
        f"an object with string fields {list(_TRAINING_KEYS)}",
    )
    metrics = raw["metrics"]
    check(
        isinstance(metrics, Mapping) and isinstance(metrics.get("protocol"), str),
        "metrics",
        "an object with a string 'protocol'",
    )
    for key in ("licence", "description"):
        check(isinstance(raw[key], str) and bool(raw[key]), key, "a non-empty string")
    check(isinstance(raw["bundled"], bool), "bundled", "true or false")
    card = raw["model_card"]
    check(
        card is None
        or (
            isinstance(card, str)
            and bool(card)
            and not Path(card).is_absolute()
            and ".." not in Path(card).parts
        ),
        "model_card",
        "null or a relative path inside the repository",
    )
    return WeightEntry(
        name=raw["name"],
        repo_id=raw["repo_id"],
        filename=raw["filename"],
        revision=raw["revision"],
        sha256=raw["sha256"],
        size_bytes=raw["size_bytes"],
        format=raw["format"],
        config=config,
        hsi_wavelengths_nm=_tuple(raw["hsi_wavelengths_nm"], float),
        hsi_fwhm_nm=_tuple(raw["hsi_fwhm_nm"], float),
        msi_srf=raw["msi_srf"],
        msi_bands_description=_tuple(desc, str),
        input_range=dict(rng),
        training=dict(training),
        metrics=dict(metrics),
        licence=raw["licence"],
        bundled=raw["bundled"],
        description=raw["description"],
        model_card=card,
    )


def _matches(pattern: re.Pattern[str], value: Any) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_positive(value: Any) -> bool:
    return _is_number(value) and value > 0


def _tuple(values: list[Any] | None, kind: type) -> tuple[Any, ...] | None:
    return None if values is None else tuple(kind(v) for v in values)

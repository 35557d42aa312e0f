"""The manifest file, its JSON Schema, WeightEntry parsing and weights_for (no model, no network)."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import REPO_ROOT, entry_dict, write_manifest

from pifnet_infer.config import PIFNetConfig
from pifnet_infer.errors import WeightsNotFoundError
from pifnet_infer.weights import get_weight, list_weights, weights_for
from pifnet_infer.weights.manifest import (
    MANIFEST_ENV,
    ManifestError,
    WeightEntry,
    load_manifest,
    local_weights_dir,
    manifest_path,
    parse_entry,
)

SCHEMA = json.loads((REPO_ROOT / "weights_manifest.schema.json").read_text())
ENTRY_SCHEMA = {"$schema": SCHEMA["$schema"], "$defs": SCHEMA["$defs"], "$ref": "#/$defs/entry"}


@pytest.fixture
def fake_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(b"not read by these tests")
    return path


@pytest.fixture
def good_entry(fake_file: Path) -> dict:
    return entry_dict("pifnet-tiny-x2", fake_file, revision="a" * 40)


def test_repo_manifest_is_valid_against_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    document = json.loads((REPO_ROOT / "weights_manifest.json").read_text())
    jsonschema.Draft202012Validator(SCHEMA).validate(document)
    entries = load_manifest(REPO_ROOT / "weights_manifest.json")
    # no trained weights exist yet; any future entry must be published or present in the checkout
    for entry in entries.values():
        assert "random" not in entry.description.lower()


def test_manifest_path_is_the_repo_file_in_a_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MANIFEST_ENV, raising=False)
    installed = Path(__file__).resolve().parents[1] / "pifnet_infer" / "weights_manifest.json"
    assert not installed.exists(), "a second hand-kept copy of the manifest must not exist in the package"
    assert manifest_path() == REPO_ROOT / "weights_manifest.json"
    assert local_weights_dir() == REPO_ROOT / "weights"


def test_wheel_ships_the_one_manifest() -> None:
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()  # no tomllib on Python 3.10
    section = pyproject.split("[tool.hatch.build.targets.wheel.force-include]", 1)[1].split("\n[", 1)[0]
    assert '"weights_manifest.json" = "pifnet_infer/weights_manifest.json"' in section


def test_env_override_is_read_at_call_time(
    tmp_path: Path, good_entry: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = write_manifest(tmp_path / "m.json", [good_entry])
    monkeypatch.setenv(MANIFEST_ENV, str(manifest))
    assert list_weights() == ["pifnet-tiny-x2"]
    assert local_weights_dir() == tmp_path / "weights"
    monkeypatch.delenv(MANIFEST_ENV)
    assert "pifnet-tiny-x2" not in list_weights()


def test_entry_parses_into_frozen_dataclass(good_entry: dict) -> None:
    jsonschema.Draft202012Validator(ENTRY_SCHEMA).validate(good_entry)
    entry = parse_entry(good_entry)
    assert isinstance(entry, WeightEntry)
    assert entry.config == PIFNetConfig(hsi_bands=8, msi_bands=3, ratio=2, dim=16)
    assert entry.hsi_wavelengths_nm == tuple(400.0 + 50.0 * i for i in range(8))
    assert entry.input_range["units"] == "reflectance"
    assert entry.published
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.name = "other"  # type: ignore[misc]
    assert hash(entry) == hash(parse_entry(copy.deepcopy(good_entry)))


def _set(entry: dict, path: str, value: object) -> dict:
    out = copy.deepcopy(entry)
    *parents, last = path.split(".")
    target = out
    for p in parents:
        target = target[p]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return out


# (mutation, whether the JSON Schema alone can see it: length/ordering rules are checked in Python only)
BAD_ENTRIES = [
    ("revision", "abc123", True),
    ("revision", "A" * 40, True),
    ("sha256", "F" * 64, True),
    ("size_bytes", 0, True),
    ("format", "pt", True),
    ("filename", "../evil.safetensors", True),
    ("filename", "weights.pth", True),
    ("repo_id", "no-slash", True),
    ("name", "Has Space", True),
    ("config.hsi_bands", 0, True),
    ("config.unknown_field", 3, True),
    ("config.ratio", KeyError, True),
    ("bundled", "yes", True),
    ("licence", KeyError, True),
    ("training.commit", KeyError, True),
    ("metrics.protocol", KeyError, True),
    ("input_range.units", KeyError, True),
    ("input_range.scale", 0, True),
    ("extra_key", 1, True),
    ("hsi_wavelengths_nm", [500.0] * 7, False),
    ("msi_bands_description", ["B2"], False),
    ("input_range.min", 2.0, False),
]


@pytest.mark.parametrize(("path", "value", "schema_sees_it"), BAD_ENTRIES)
def test_bad_entries_are_refused(good_entry: dict, path: str, value: object, schema_sees_it: bool) -> None:
    bad = _set(good_entry, path, value)
    with pytest.raises(ManifestError, match=path.split(".")[0]):  # the message names the offending key
        parse_entry(bad)
    schema_errors = list(jsonschema.Draft202012Validator(ENTRY_SCHEMA).iter_errors(bad))
    assert bool(schema_errors) == schema_sees_it


def test_duplicate_names_and_bad_documents_refused(tmp_path: Path, good_entry: dict) -> None:
    with pytest.raises(ManifestError, match="appears twice"):
        load_manifest(write_manifest(tmp_path / "dup.json", [good_entry, good_entry]))
    (tmp_path / "v2.json").write_text(json.dumps({"schema_version": 2, "weights": []}))
    with pytest.raises(ManifestError, match="schema_version"):
        load_manifest(tmp_path / "v2.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ManifestError, match="cannot read"):
        load_manifest(tmp_path / "broken.json")


def test_unpublished_entry_allowed(good_entry: dict) -> None:
    entry = parse_entry(_set(good_entry, "revision", None))
    assert entry.revision is None and not entry.published


def test_get_weight_unknown_lists_names(
    tmp_path: Path, good_entry: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MANIFEST_ENV, str(write_manifest(tmp_path / "m.json", [good_entry])))
    assert get_weight("pifnet-tiny-x2").filename == "tiny.safetensors"
    with pytest.raises(WeightsNotFoundError, match=r"'nope'.*available weights: pifnet-tiny-x2"):
        get_weight("nope")


def test_weights_for_filters(tmp_path: Path, fake_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = entry_dict("a-x2", fake_file, revision="a" * 40)
    b = entry_dict("b-x4", fake_file, revision="b" * 40, config={"hsi_bands": 8, "msi_bands": 3, "ratio": 4})
    c = entry_dict("c-x2", fake_file, revision="c" * 40, config={"hsi_bands": 8, "msi_bands": 4, "ratio": 2})
    d = _set(entry_dict("d-x2", fake_file, revision="d" * 40), "hsi_wavelengths_nm", None)
    c["msi_bands_description"] = None
    monkeypatch.setenv(MANIFEST_ENV, str(write_manifest(tmp_path / "m.json", [a, b, c, d])))

    def names(**kw: object) -> list[str]:
        return [e.name for e in weights_for(**kw)]

    assert names() == ["a-x2", "b-x4", "c-x2", "d-x2"]
    assert names(ratio=4) == ["b-x4"]
    assert names(msi_bands=4) == ["c-x2"]
    assert names(hsi_bands=8, msi_bands=3, ratio=2) == ["a-x2", "d-x2"]
    assert names(hsi_bands=9) == []
    exact = [400.0 + 50.0 * i for i in range(8)]
    shifted = [w + 10.0 for w in exact]
    assert names(msi_bands=3, ratio=2, wavelengths_nm=exact) == ["a-x2", "d-x2"]
    assert names(msi_bands=3, ratio=2, wavelengths_nm=[w + 1.5 for w in exact]) == ["a-x2", "d-x2"]
    # entries without known wavelengths fit any; an entry with other wavelengths does not
    assert names(msi_bands=3, ratio=2, wavelengths_nm=shifted) == ["d-x2"]
    assert names(msi_bands=3, ratio=2, wavelengths_nm=exact[:7]) == ["d-x2"]


@pytest.mark.slow
def test_installed_wheel_reads_its_manifest_copy(tmp_path: Path) -> None:
    """Build the wheel (needs hatchling from the package index) and read the manifest it installs."""

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO_ROOT),
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path / "dist"),
        ],
        check=True,
    )
    wheel = next((tmp_path / "dist").glob("pifnet_infer-*.whl"))
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
    )
    code = (
        "from pifnet_infer.weights.manifest import manifest_path, local_weights_dir, load_manifest;"
        "print(manifest_path()); print(local_weights_dir()); print(len(load_manifest()))"
    )
    env = {k: v for k, v in os.environ.items() if k != MANIFEST_ENV}
    env["PYTHONPATH"] = str(target)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, check=True
    )
    path, local, count = out.stdout.split()
    assert Path(path) == target / "pifnet_infer" / "weights_manifest.json"
    assert local == "None"
    assert Path(path).read_text() == (REPO_ROOT / "weights_manifest.json").read_text()
    assert int(count) == len(load_manifest(REPO_ROOT / "weights_manifest.json"))

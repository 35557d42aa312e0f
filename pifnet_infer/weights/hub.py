"""Find a weight file, verify it, and (for maintainers) publish one.

Resolution order for a manifest entry (:func:`resolve_weight_file`):

1. the file bundled in the package, ``pifnet_infer/weights/bundled/<filename>`` (bundled entries);
2. an unpublished file in ``weights/`` beside the manifest of a checkout (or of
   ``$PIFNET_WEIGHTS_MANIFEST``);
3. the huggingface_hub cache, then the Hub, both through ``hf_hub_download`` at the entry's pinned
   40-hex revision: a cached pinned file costs no network call at all.

Every file is checked against the manifest's sha256 *before* it is deserialised; a mismatch raises
:class:`~pifnet_infer.errors.ChecksumMismatchError` and leaves the file where it is (the user's cache
is never modified here). ``HF_HUB_OFFLINE``, ``HF_HOME``, ``HF_ENDPOINT`` and tokens are handled by
huggingface_hub itself.

.. versionadded:: 0.1
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pifnet_infer._utils.optional import require
from pifnet_infer._version import __version__
from pifnet_infer.errors import ChecksumMismatchError, PifnetError, WeightsNotFoundError
from pifnet_infer.io.atomic import temp_file_beside
from pifnet_infer.weights.manifest import (
    ManifestError,
    WeightEntry,
    load_manifest,
    local_weights_dir,
    manifest_path,
    parse_entry,
)

_logger = logging.getLogger(__name__)

LIBRARY_NAME = "pifnet-infer"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Lowercase hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(
    path: str | os.PathLike[str],
    expected: str,
    *,
    name: str,
    origin: str = "the manifest",
    fix: str | None = None,
) -> None:
    """Raise :class:`ChecksumMismatchError` unless ``path`` hashes to ``expected``; never touches the file.

    Args:
        path: file to hash.
        expected: lowercase hex sha256.
        name: weight name, for the message.
        origin: where ``expected`` comes from, for the message.
        fix: what the user should do; default: download again.
    """
    actual = sha256_file(path)
    if actual != expected:
        fix = fix or (
            f"fetch it again with `pifnet-infer weights download {name} --force-download`, or delete it by hand"
        )
        raise ChecksumMismatchError(
            f"weight file {str(path)!r} of {name!r} has sha256 {actual!r}, expected {expected!r} from {origin}; "
            f"the file was left untouched and not loaded. It is corrupted or from another version: {fix}"
        )


_LOCAL_FIXES = {
    "bundled": "reinstall the package (`pip install --force-reinstall --no-deps pifnet-infer`)",
    "checkout": "restore the file (e.g. `git checkout -- weights/`) or correct the manifest entry",
}


def bundled_dir() -> Path:
    """Folder of the weight files shipped inside the package."""
    return Path(str(importlib.resources.files("pifnet_infer.weights").joinpath("bundled")))


def local_candidates(entry: WeightEntry) -> list[tuple[str, Path]]:
    """``(source, path)`` of the files on disk that may hold ``entry``, in resolution order (no Hub)."""
    candidates: list[tuple[str, Path]] = []
    if entry.bundled:
        candidates.append(("bundled", bundled_dir() / entry.filename))
    local = local_weights_dir()
    if local is not None:
        candidates.append(("checkout", local / entry.filename))
    return candidates


def find_local_file(
    entry: WeightEntry, *, cache_dir: str | os.PathLike[str] | None = None
) -> tuple[str, Path] | None:
    """The first copy of ``entry`` present on this machine (bundled, checkout or Hub cache), unverified.

    Makes no network call. Returns ``(source, path)`` or ``None``.
    """
    for source, path in local_candidates(entry):
        if path.is_file():
            return source, path
    if entry.revision is None:
        return None
    hf = require("huggingface_hub")
    cached = hf.try_to_load_from_cache(
        entry.repo_id, entry.filename, cache_dir=cache_dir, revision=entry.revision
    )
    return ("hub-cache", Path(cached)) if isinstance(cached, str) else None


def resolve_weight_file(
    entry: WeightEntry,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
    token: str | bool | None = None,
) -> Path:
    """Path of a verified copy of ``entry``'s file (see the module docstring for the order).

    Args:
        entry: manifest entry.
        revision: Hub revision to use instead of the manifest's pin. The manifest sha256 only
            describes the pinned file, so another revision is checked against the Hub's LFS hash
            (the name of the cached blob) instead, and bundled/checkout copies are skipped.
        cache_dir: huggingface_hub cache folder (default: ``$HF_HUB_CACHE`` / ``$HF_HOME/hub``).
        local_files_only: never use the network (as ``HF_HUB_OFFLINE=1``).
        force_download: skip bundled/checkout copies and download again from the Hub.
        token: Hub token for private repositories (default: the logged-in token / ``HF_TOKEN``).

    Raises:
        WeightsNotFoundError: no copy on disk and none obtainable (offline, or not on the Hub).
        ChecksumMismatchError: a copy was found whose sha256 is not the expected one.
    """
    pinned = revision is None or revision == entry.revision
    if pinned and not force_download:
        for source, path in local_candidates(entry):
            if path.is_file():
                verify_sha256(path, entry.sha256, name=entry.name, fix=_LOCAL_FIXES[source])
                _logger.info("weights %s: using the %s file %s", entry.name, source, path)
                return path
    hub_revision = revision if revision is not None else entry.revision
    if hub_revision is None:
        places = " or ".join(repr(str(path)) for _, path in local_candidates(entry)) or "this installation"
        raise WeightsNotFoundError(
            f"weights {entry.name!r} are not published on the Hub yet (revision null in the manifest) and "
            f"{entry.filename!r} is not at {places}; put the file there or publish it with "
            f"`pifnet-infer weights publish PATH --repo-id {entry.repo_id}`"
        )
    path = _hub_download(
        entry,
        revision=hub_revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        force_download=force_download,
        token=token,
    )
    if pinned:
        verify_sha256(path, entry.sha256, name=entry.name)
    else:
        _verify_against_blob_name(path, entry, hub_revision)
    _logger.info("weights %s: using %s (revision %s)", entry.name, path, hub_revision)
    return path


def _hub_download(
    entry: WeightEntry,
    *,
    revision: str,
    cache_dir: str | os.PathLike[str] | None,
    local_files_only: bool,
    force_download: bool,
    token: str | bool | None,
) -> Path:
    hf = require("huggingface_hub")
    from huggingface_hub.utils import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{entry.filename!r} of {entry.repo_id!r} at revision {revision!r}"
    try:
        return Path(
            hf.hf_hub_download(
                entry.repo_id,
                entry.filename,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
                force_download=force_download,
                token=token,
                library_name=LIBRARY_NAME,
                library_version=__version__,
            )
        )
    except LocalEntryNotFoundError as err:
        cache = cache_dir if cache_dir is not None else hf.constants.HF_HUB_CACHE
        if local_files_only or hf.constants.HF_HUB_OFFLINE:
            reason = "network access is off (HF_HUB_OFFLINE=1 or local_files_only=True)"
        else:
            reason = f"the Hub at {hf.constants.ENDPOINT} could not be reached"
        raise WeightsNotFoundError(
            f"weights {entry.name!r} ({where}) are not in the huggingface_hub cache {str(cache)!r} and {reason}; "
            f"run `pifnet-infer weights download {entry.name}` once while online (with HF_HUB_OFFLINE unset), "
            f"then they load offline"
        ) from err
    except RepositoryNotFoundError as err:  # also gated and private repositories without a valid token
        raise WeightsNotFoundError(
            f"the Hub at {hf.constants.ENDPOINT} refused repository {entry.repo_id!r} for weights {entry.name!r} "
            f"({type(err).__name__}); if it is private or gated, pass token= or log in with `hf auth login`"
        ) from err
    except (RevisionNotFoundError, EntryNotFoundError) as err:
        raise WeightsNotFoundError(
            f"the Hub at {hf.constants.ENDPOINT} has no {where} for weights {entry.name!r} "
            f"({type(err).__name__}); the manifest entry or HF_ENDPOINT is wrong"
        ) from err


def _verify_against_blob_name(path: Path, entry: WeightEntry, revision: str) -> None:
    blob = Path(os.path.realpath(path)).name
    if _SHA256_RE.fullmatch(blob) is None:
        _logger.warning(
            "weights %s at revision %s: not the manifest's pinned revision %s and the Hub gave no LFS sha256 "
            "to check %s against", entry.name, revision, entry.revision, path,
        )  # fmt: skip
        return
    verify_sha256(path, blob, name=entry.name, origin=f"the Hub's LFS metadata at revision {revision!r}")
    _logger.warning(
        "weights %s: revision %s is not the manifest's pinned %s; checked against the Hub's LFS sha256 only",
        entry.name, revision, entry.revision,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Verification:
    """Result of checking one weight file on disk (see :func:`verify_weights`).

    Attributes:
        name: manifest entry, or ``None`` for a file that matches none.
        source: ``"bundled"``, ``"checkout"``, ``"hub-cache"``, ``"file"`` or ``"-"`` (not on disk).
        path: the file checked, or ``None``.
        sha256: ``"ok"``, ``"mismatch"``, ``"no entry"`` (a file outside the manifest) or ``"-"``.
        load: ``"ok"`` (config and strict keys/shapes), the reason it failed, or ``"-"``.
    """

    name: str | None
    source: str
    path: Path | None
    sha256: str
    load: str

    @property
    def present(self) -> bool:
        """A file was found."""
        return self.path is not None

    @property
    def ok(self) -> bool:
        """The file was found, its hash is right (or it has no entry) and it loads."""
        return self.present and self.sha256 in ("ok", "no entry") and self.load == "ok"


def verify_weights(
    target: str | os.PathLike[str] | None = None, *, cache_dir: str | os.PathLike[str] | None = None
) -> list[Verification]:
    """Check weight files already on this machine, without any network call.

    Args:
        target: a manifest name, a path to a ``.safetensors`` file, or ``None`` for every entry.
        cache_dir: huggingface_hub cache folder.

    Returns:
        One :class:`Verification` per entry (or one for the file).

    Raises:
        WeightsNotFoundError: ``target`` is neither a file nor a manifest name (names listed).
    """
    entries = load_manifest()
    if target is not None and Path(target).is_file():
        path = Path(target)
        sha = sha256_file(path)
        by_sha = [e for e in entries.values() if e.sha256 == sha]
        by_name = [e for e in entries.values() if e.filename == path.name]
        if by_sha:
            return [Verification(by_sha[0].name, "file", path, "ok", _load_status(path, by_sha[0]))]
        if by_name:
            return [Verification(by_name[0].name, "file", path, "mismatch", "-")]
        return [Verification(None, "file", path, "no entry", _load_status(path, None))]
    if target is not None:
        from pifnet_infer.weights import get_weight

        selected = [get_weight(str(target))]
    else:
        selected = list(entries.values())
    results = []
    for entry in selected:
        found = find_local_file(entry, cache_dir=cache_dir)
        if found is None:
            results.append(Verification(entry.name, "-", None, "-", "-"))
            continue
        source, path = found
        if sha256_file(path) != entry.sha256:
            results.append(Verification(entry.name, source, path, "mismatch", "-"))
        else:
            results.append(Verification(entry.name, source, path, "ok", _load_status(path, entry)))
    return results


def _load_status(path: Path, entry: WeightEntry | None) -> str:
    from pifnet_infer.weights import build_model_from_file

    try:
        build_model_from_file(path, entry)
    except PifnetError as err:
        return f"{type(err).__name__}: {str(err).splitlines()[0]}"
    return "ok"


def publish_weight(
    path: str | os.PathLike[str],
    repo_id: str,
    *,
    name: str | None = None,
    token: str | None = None,
    private: bool = False,
    api: Any = None,
) -> WeightEntry:
    """Upload a weight file to the Hub and pin its new commit in the manifest (maintainers).

    The manifest entry (``name``, or the entry whose ``filename`` is the file's name) must exist
    already. The file and, if the entry has one, its model card (as ``README.md``) are uploaded in
    one commit; the commit id and the uploaded file's LFS sha256 are read back, then the entry's
    ``repo_id``, ``revision``, ``sha256`` and ``size_bytes`` are rewritten in the manifest file
    (JSON, indent 2).

    Args:
        path: the ``.safetensors`` file (config metadata must match the entry's config).
        repo_id: target Hub model repository, created if missing.
        name: manifest entry to update.
        token: Hub token with write access (default: the logged-in one).
        private: create the repository as private.
        api: an ``HfApi``-like object (default ``HfApi(token=token)``).

    Returns:
        The updated entry.
    """
    from pifnet_infer.errors import CheckpointMismatchError
    from pifnet_infer.weights import read_weights_config

    file = Path(path)
    if not file.is_file() or file.suffix != ".safetensors":
        raise WeightsNotFoundError(f"expected an existing .safetensors file to publish, got {str(file)!r}")
    mpath = manifest_path()
    document = json.loads(mpath.read_text(encoding="utf-8"))
    raws = document.get("weights", [])
    key = "name" if name is not None else "filename"
    wanted = name if name is not None else file.name
    matches = [i for i, raw in enumerate(raws) if raw.get(key) == wanted]
    if len(matches) != 1:
        names = [raw.get("name") for raw in raws]
        raise ManifestError(
            f"expected exactly one manifest entry with {key} {wanted!r} in {str(mpath)!r}, found {len(matches)} "
            f"(entries: {names}); add the entry (config, input_range, training, metrics, ...) first or pass --name"
        )
    entry = parse_entry(raws[matches[0]], where=str(mpath))
    file_config = read_weights_config(file)
    if file_config != entry.config:
        raise CheckpointMismatchError(
            f"{str(file)!r} holds config {file_config.to_dict()!r} but manifest entry {entry.name!r} says "
            f"{entry.config.to_dict()!r}; fix the entry or publish the right file"
        )
    sha, size = sha256_file(file), file.stat().st_size

    hf = require("huggingface_hub")
    api = api if api is not None else hf.HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    operations = [hf.CommitOperationAdd(path_in_repo=entry.filename, path_or_fileobj=str(file))]
    if entry.model_card is not None:
        card = mpath.parent / entry.model_card
        if not card.is_file():
            raise WeightsNotFoundError(f"model card {str(card)!r} of {entry.name!r} does not exist")
        operations.append(hf.CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(card)))
    info = api.create_commit(
        repo_id,
        operations=operations,
        repo_type="model",
        commit_message=f"Upload {entry.filename} ({entry.name})",
    )
    commit = getattr(info, "oid", None)
    if not isinstance(commit, str) or _COMMIT_RE.fullmatch(commit) is None:
        raise ChecksumMismatchError(
            f"the Hub returned commit id {commit!r} for {repo_id!r}, expected 40 hex digits"
        )
    remote = [
        p for p in api.get_paths_info(repo_id, [entry.filename], revision=commit) if p.path == entry.filename
    ]
    lfs = getattr(remote[0], "lfs", None) if remote else None
    remote_sha = getattr(lfs, "sha256", None)
    if remote_sha is None or remote_sha != sha:
        raise ChecksumMismatchError(
            f"after upload, {entry.filename!r} at {repo_id}@{commit} reports LFS sha256 {remote_sha!r}, "
            f"expected {sha!r}; the manifest was not changed"
        )
    raws[matches[0]].update(repo_id=repo_id, revision=commit, sha256=sha, size_bytes=size)
    _write_json_atomic(mpath, document)
    _logger.info("published %s to %s@%s and updated %s", entry.name, repo_id, commit, mpath)
    return load_manifest(mpath)[entry.name]


def _write_json_atomic(path: Path, document: Any) -> None:
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    tmp = temp_file_beside(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

"""``pifnet-infer weights list | info NAME | download NAME | verify [NAME|PATH] | check [NAME] | publish PATH``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pifnet_infer.errors import PifnetError, WeightsNotFoundError


def add_parser(subparsers: Any) -> None:
    """Register ``weights`` and its actions."""
    parser = subparsers.add_parser(
        "weights",
        help="list, inspect, download, verify and publish named weights",
        description="Named PIF-Net weights from the manifest (set PIFNET_WEIGHTS_MANIFEST to use another one).",
    )
    actions = parser.add_subparsers(dest="weights_action", metavar="ACTION", required=True)

    actions.add_parser("list", help="table of the weights in the manifest").set_defaults(func=_list)

    info = actions.add_parser("info", help="every field of one manifest entry")
    info.add_argument("name")
    info.set_defaults(func=_info)

    download = actions.add_parser(
        "download", help="fetch a weight file into the huggingface_hub cache and verify it"
    )
    download.add_argument("name")
    download.add_argument("--revision", help="Hub revision instead of the manifest's pinned commit")
    download.add_argument(
        "--cache-dir", help="huggingface_hub cache folder (default: HF_HUB_CACHE / HF_HOME)"
    )
    download.add_argument("--force-download", action="store_true", help="download again even if cached")
    download.add_argument("--token", help="Hub token for private repositories (default: the logged-in token)")
    download.set_defaults(func=_download)

    verify = actions.add_parser(
        "verify", help="check sha256, config and keys of weight files on this machine"
    )
    verify.add_argument(
        "target", nargs="?", metavar="NAME|PATH", help="one entry or file (default: every entry)"
    )
    verify.add_argument("--cache-dir", help="huggingface_hub cache folder")
    verify.set_defaults(func=_verify)

    check = actions.add_parser(
        "check", help="fuse each weight's recorded sample tile and compare its PSNR with the manifest"
    )
    check.add_argument("name", nargs="?", help="one entry (default: every entry with a record)")
    check.set_defaults(func=_check)

    publish = actions.add_parser(
        "publish", help="(maintainers) upload a file and pin its commit in the manifest"
    )
    publish.add_argument("path", help="the .safetensors file")
    publish.add_argument("--repo-id", required=True, help="Hub model repository, owner/name")
    publish.add_argument("--name", help="manifest entry to update (default: the entry with this filename)")
    publish.add_argument("--token", help="Hub token with write access (default: the logged-in token)")
    publish.add_argument("--private", action="store_true", help="create the repository as private")
    publish.set_defaults(func=_publish)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces, with a dashed rule under the headers."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e6:.1f} MB" if num_bytes >= 100_000 else f"{num_bytes / 1e3:.1f} kB"


def _list(args: argparse.Namespace) -> int:
    from pifnet_infer.weights.hub import find_local_file
    from pifnet_infer.weights.manifest import load_manifest, manifest_path

    entries = load_manifest()
    if not entries:
        print(f"no weights in the manifest {manifest_path()}")
        return 0
    rows = []
    for e in entries.values():
        found = find_local_file(e)
        where = found[0] if found else ("hub" if e.published else "unpublished")
        rows.append(
            [
                e.name,
                e.config.hsi_bands,
                e.config.msi_bands,
                f"x{e.config.ratio}",
                e.msi_srf,
                _size(e.size_bytes),
                where,
                e.licence,
            ]
        )
    print(format_table(["NAME", "HSI", "MSI", "RATIO", "MSI SRF", "SIZE", "LOCATION", "LICENCE"], rows))
    return 0


def _info(args: argparse.Namespace) -> int:
    from pifnet_infer.weights import get_weight
    from pifnet_infer.weights.hub import find_local_file

    e = get_weight(args.name)
    wl = e.hsi_wavelengths_nm
    rng = e.input_range
    found = find_local_file(e)
    fields = [
        ("name", e.name),
        ("description", e.description),
        ("repository", f"{e.repo_id} @ {e.revision or 'unpublished'}"),
        ("file", f"{e.filename}  {_size(e.size_bytes)}  sha256 {e.sha256}"),
        ("config", "  ".join(f"{k}={v}" for k, v in e.config.to_dict().items())),
        ("HSI wavelengths", f"{len(wl)} bands, {wl[0]:g}-{wl[-1]:g} nm" if wl else "unknown"),
        ("HSI FWHM", "given" if e.hsi_fwhm_nm else "unknown"),
        (
            "MSI response",
            e.msi_srf + (f"  ({', '.join(e.msi_bands_description)})" if e.msi_bands_description else ""),
        ),
        (
            "input range",
            f"raw * {rng['scale']:g} + {rng['offset']:g} in [{rng['min']:g}, {rng['max']:g}] {rng['units']}",
        ),
        *[(f"training.{k}", v) for k, v in e.training.items()],
        *[(f"metrics.{k}", v) for k, v in e.metrics.items()],
        ("licence", e.licence),
        ("bundled", "yes" if e.bundled else "no"),
        ("model card", e.model_card or "-"),
        (
            "on this machine",
            f"{found[0]}: {found[1]}" if found else f"no (run `pifnet-infer weights download {e.name}`)",
        ),
    ]
    width = max(len(k) for k, _ in fields)
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in fields))
    return 0


def _download(args: argparse.Namespace) -> int:
    from pifnet_infer.weights import get_weight
    from pifnet_infer.weights.hub import resolve_weight_file

    entry = get_weight(args.name)
    path = resolve_weight_file(
        entry,
        revision=args.revision,
        cache_dir=args.cache_dir,
        force_download=args.force_download,
        token=args.token,
    )
    print(f"{entry.name}: {path} (sha256 verified)")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from pifnet_infer.weights.hub import verify_weights
    from pifnet_infer.weights.manifest import manifest_path

    results = verify_weights(args.target, cache_dir=args.cache_dir)
    if not results:
        print(f"no weights in the manifest {manifest_path()}")
        return 0
    rows = [[r.name or "-", r.source, r.sha256, r.load, r.path or "not on this machine"] for r in results]
    print(format_table(["NAME", "SOURCE", "SHA256", "LOAD", "PATH"], rows))
    failed = [r for r in results if r.present and not r.ok]
    if args.target is not None and not results[0].present:
        raise WeightsNotFoundError(
            f"{args.target!r} is not on this machine; run `pifnet-infer weights download {args.target}` first"
        )
    return 1 if failed else 0


def _check(args: argparse.Namespace) -> int:
    from pifnet_infer.weights import get_weight, list_weights
    from pifnet_infer.weights.selfcheck import run_self_check, self_check_record

    if args.name and (args.name.endswith(".safetensors") or "/" in args.name or Path(args.name).exists()):
        raise PifnetError(
            f"weights check takes a manifest name (the recorded sample tile and score live in the manifest), got "
            f"the path {args.name!r}; check a file with `pifnet-infer weights verify {args.name}`"
        )
    names = [args.name] if args.name else [n for n in list_weights() if self_check_record(get_weight(n))]
    results = [run_self_check(name) for name in names]
    rows = [
        [
            r.name,
            f"{r.psnr_db:.4f}",
            f"{r.recorded_db:.4f}",
            f"{r.tolerance_db:g}",
            "ok" if r.ok else "MISMATCH",
        ]
        for r in results
    ]
    print(format_table(["NAME", "PSNR", "RECORDED", "TOLERANCE", "RESULT"], rows))
    return 0 if all(r.ok for r in results) else 1


def _publish(args: argparse.Namespace) -> int:
    from pifnet_infer.weights.hub import publish_weight
    from pifnet_infer.weights.manifest import manifest_path

    entry = publish_weight(args.path, args.repo_id, name=args.name, token=args.token, private=args.private)
    print(f"{entry.name}: uploaded to {entry.repo_id} @ {entry.revision}; updated {manifest_path()}")
    return 0

"""Test helpers: a local stand-in for the Hugging Face Hub file endpoints, tiny weight files, manifests.

``LocalHub`` serves, on 127.0.0.1 and a free port, what the real ``hf_hub_download`` asks for:

- ``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}``: for a known file, a 302 as the Hub
  answers for LFS files: ``X-Repo-Commit`` (the commit), ``X-Linked-Etag`` (the sha256, quoted),
  ``X-Linked-Size`` and ``Location`` pointing to a "CDN" URL on another origin
  (``http://localhost:PORT/cdn/...``), so huggingface_hub does not follow it during ``HEAD`` and
  downloads from it with ``GET``. ``revision`` may be a commit or a branch name.
- ``HEAD``/``GET /cdn/{sha256}``: the bytes, with ``Content-Length`` and ``ETag``.
- errors as the Hub sends them: 404 with ``X-Error-Code`` ``RepoNotFound``, ``RevisionNotFound`` or
  ``EntryNotFound`` (the last with ``X-Repo-Commit``).

Every request is recorded in ``LocalHub.requests`` as ``(method, path)``. Use it as a context
manager, or ``start()``/``stop()``. Scenarios that need ``HF_ENDPOINT``/``HF_HUB_OFFLINE``/``HF_HOME``
(read once by huggingface_hub at import) run in a fresh interpreter through :func:`run_child`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


class LocalHub:
    """Minimal Hub: repos -> commits -> {filename: bytes}, plus branch names -> commits."""

    def __init__(self) -> None:
        self.files: dict[str, dict[str, dict[str, bytes]]] = {}
        self.branches: dict[str, dict[str, str]] = {}
        self.blobs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.user_agents: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def add_file(
        self, repo_id: str, commit: str, filename: str, content: bytes, *, branch: str | None = None
    ) -> None:
        """Serve ``content`` as ``filename`` at ``commit`` of ``repo_id`` (and at ``branch`` if given)."""
        self.files.setdefault(repo_id, {}).setdefault(commit, {})[filename] = content
        self.blobs[hashlib.sha256(content).hexdigest()] = content
        if branch is not None:
            self.branches.setdefault(repo_id, {})[branch] = commit

    def file_requests(self) -> list[tuple[str, str]]:
        """The recorded requests for files (``/resolve/`` and ``/cdn/``), ignoring other API calls."""
        return [r for r in self.requests if "/resolve/" in r[1] or r[1].startswith("/cdn/")]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                hub._answer(self, body=False)

            def do_GET(self) -> None:
                hub._answer(self, body=True)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _answer(self, handler: BaseHTTPRequestHandler, *, body: bool) -> None:
        self.requests.append((handler.command, handler.path))
        self.user_agents.append(handler.headers.get("User-Agent", ""))
        parts = handler.path.split("?")[0].strip("/").split("/")
        if len(parts) == 2 and parts[0] == "cdn" and parts[1] in self.blobs:
            content = self.blobs[parts[1]]
            self._send(
                handler,
                200,
                {"ETag": f'"{parts[1]}"', "Content-Length": str(len(content))},
                content if body else b"",
            )
            return
        if len(parts) < 5 or parts[2] != "resolve":
            self._send(handler, 404, {"X-Error-Code": "RepoNotFound"})
            return
        repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        if repo_id not in self.files:
            self._send(handler, 404, {"X-Error-Code": "RepoNotFound"})
            return
        commit = self.branches.get(repo_id, {}).get(revision, revision)
        if commit not in self.files[repo_id]:
            self._send(handler, 404, {"X-Error-Code": "RevisionNotFound"})
            return
        content = self.files[repo_id][commit].get(filename)
        if content is None:
            self._send(handler, 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit})
            return
        sha = hashlib.sha256(content).hexdigest()
        headers = {
            "X-Repo-Commit": commit,
            "X-Linked-Etag": f'"{sha}"',
            "X-Linked-Size": str(len(content)),
            "ETag": f'"{hashlib.sha1(content).hexdigest()}"',
            "Location": f"http://localhost:{self.port}/cdn/{sha}",
        }
        self._send(handler, 302, headers)

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], content: bytes = b""
    ) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        if "Content-Length" not in headers:
            handler.send_header("Content-Length", "0")
        handler.end_headers()
        if content:
            handler.wfile.write(content)


# ----------------------------------------------------------------------------- weights and manifests

TINY_CONFIG: dict[str, int] = {"hsi_bands": 8, "msi_bands": 3, "ratio": 2, "dim": 16}


def make_tiny_weights(path: Path, *, seed: int, config: dict[str, int] | None = None) -> Path:
    """Save a randomly initialised PIFNet (never a pretrained model) as a weight file."""
    from pifnet_infer.config import PIFNetConfig
    from pifnet_infer.models import PIFNet
    from pifnet_infer.weights import save_weights

    torch.manual_seed(seed)
    model = PIFNet(PIFNetConfig(**(config or TINY_CONFIG)))
    return save_weights(model, path)


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over sorted keys and fp32 values: equal digests = equal weights."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """:func:`state_digest` of a safetensors file, read independently of pifnet_infer."""
    from safetensors.torch import load_file

    return state_digest(load_file(str(path)))


def entry_dict(
    name: str,
    file: Path,
    *,
    repo_id: str = "pifnet-test/tiny",
    revision: str | None = None,
    filename: str | None = None,
    bundled: bool = False,
    sha256: str | None = None,
    config: dict[str, int] | None = None,
) -> dict[str, Any]:
    """A valid manifest entry describing ``file`` (sha256/size computed unless overridden)."""
    content = file.read_bytes()
    cfg = dict(config or TINY_CONFIG)
    return {
        "name": name,
        "repo_id": repo_id,
        "filename": filename or file.name,
        "revision": revision,
        "sha256": sha256 or hashlib.sha256(content).hexdigest(),
        "size_bytes": len(content),
        "format": "safetensors",
        "config": cfg,
        "hsi_wavelengths_nm": [400.0 + 50.0 * i for i in range(cfg["hsi_bands"])],
        "hsi_fwhm_nm": None,
        "msi_srf": "sentinel2a-10m",
        "msi_bands_description": ["B2", "B3", "B4"][: cfg["msi_bands"]] if cfg["msi_bands"] <= 3 else None,
        "input_range": {"scale": 1.0, "offset": 0.0, "min": 0.0, "max": 1.0, "units": "reflectance"},
        "training": {
            "data": "random init (test only)",
            "protocol": "none",
            "command": "none",
            "commit": "none",
        },
        "metrics": {"protocol": "none"},
        "licence": "Apache-2.0",
        "bundled": bundled,
        "description": f"test weights {name} (random init, not pretrained)",
        "model_card": None,
    }


def write_manifest(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"schema_version": 1, "weights": entries}, indent=2) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- child interpreters

CHILD_PRELUDE = """
import json, sys
sys.path.insert(0, {tests_dir!r})
from hub_server import state_digest
from pifnet_infer import weights

def attempt(fn):
    try:
        model = fn()
        return {{"ok": state_digest(model.state_dict()), "entry": getattr(model.weight_entry, "name", None)}}
    except Exception as err:
        return {{"error": type(err).__name__, "message": str(err)}}
"""


def child_env(**overrides: str | None) -> dict[str, str]:
    """``os.environ`` without HF_* variables, plus ``overrides`` (``None`` values are dropped)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and k != "PIFNET_WEIGHTS_MANIFEST"}
    env.update(
        {"HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_XET": "1"}
    )
    env.update({k: v for k, v in overrides.items() if v is not None})
    return env


def run_child(body: str, env: dict[str, str], *, timeout: float = 120) -> Any:
    """Run ``body`` after :data:`CHILD_PRELUDE` in a new interpreter; it must print one JSON value last."""
    code = CHILD_PRELUDE.format(tests_dir=str(Path(__file__).parent)) + body
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])

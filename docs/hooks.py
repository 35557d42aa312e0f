"""MkDocs hooks: fill generated parts of pages at build time (``hooks:`` in mkdocs.yml).

- ``<!-- weights-table -->``: the weights table, from weights_manifest.json (``docs/gen_weights_table.py``);
- ``<!-- cli-help -->``: ``pifnet-infer COMMAND --help`` of every subcommand, from the parser itself;
- ``<!-- changelog -->``: the repository's CHANGELOG.md;
- ``<!-- benchmarks -->``: the repository's BENCHMARKS.md.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent


def _weights_table() -> str:
    spec = importlib.util.spec_from_file_location("gen_weights_table", DOCS / "gen_weights_table.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {DOCS / 'gen_weights_table.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.render(link_base=DOCS))


def _cli_help() -> str:
    from pifnet_infer.cli import build_parser

    with _columns(100):
        parser = build_parser()
        parts = ["## pifnet-infer", "", "```text", parser.format_help().rstrip(), "```"]
        commands = next(a for a in parser._actions if a.dest == "command")
        for name, sub in commands.choices.items():  # type: ignore[union-attr]
            parts += ["", f"## pifnet-infer {name}", "", "```text", sub.format_help().rstrip(), "```"]
    return "\n".join(parts)


@contextlib.contextmanager
def _columns(width: int) -> Any:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace the markers of generated content."""
    if "<!-- weights-table -->" in markdown:
        markdown = markdown.replace("<!-- weights-table -->", _weights_table())
    if "<!-- cli-help -->" in markdown:
        markdown = markdown.replace("<!-- cli-help -->", _cli_help())
    for marker, file in (("<!-- changelog -->", "CHANGELOG.md"), ("<!-- benchmarks -->", "BENCHMARKS.md")):
        if marker in markdown:
            markdown = markdown.replace(marker, (DOCS.parent / file).read_text())
    return markdown

"""The ``pifnet-infer`` command line.

Each subcommand lives in its own module exposing ``add_parser(subparsers)``,
which registers the subcommand and sets ``func`` (taking the parsed
``argparse.Namespace`` and returning an exit code). This module only wires
them together and turns known exceptions into one-line messages.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import NoReturn

from pifnet_infer._version import __version__
from pifnet_infer.errors import PifnetError

#: Subcommand modules, in the order ``--help`` lists them.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "demo",
    "fuse",
    "info",
    "weights",
    "convert",
    "evaluate",
    "simulate",
    "adapt",
    "env",
)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit code 2); subcommand parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE (see PROG --help)`` on one line and exit with 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every available subcommand."""
    parser = _Parser(
        prog="pifnet-infer",
        description="HSI-MSI fusion with PIF-Net: fuse a low-resolution hyperspectral image "
        "with a high-resolution multispectral image.",
    )
    parser.add_argument("--version", action="version", version=f"pifnet-infer {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"pifnet_infer.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"pifnet_infer.cli.{name}":
                raise
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv``, run the subcommand, map errors to exit codes (0 ok, 1 error, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            if not args.debug:  # one line each, as errors are, instead of file:line and source
                warnings.showwarning = _show_warning(args.command)
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("pifnet-infer: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            raise
        print(f"pifnet-infer {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 1


def _show_warning(command: str) -> Callable[..., None]:
    """A ``warnings.showwarning`` printing ``pifnet-infer COMMAND: warning: MESSAGE`` on one line."""

    def show(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
        text = "; ".join(line.strip() for line in str(message).splitlines() if line.strip())
        print(f"pifnet-infer {command}: warning: {text}", file=sys.stderr)

    return show


#: exceptions whose message is written for the user; any other kind is named, with a pointer to --debug
_EXPECTED = (PifnetError, ValueError, KeyError, FileNotFoundError, OSError, ImportError)


def one_line(err: BaseException) -> str:
    """An exception as one line: its message (lines joined with "; "), prefixed by its kind when unexpected."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    text = "; ".join(line.strip() for line in text.splitlines() if line.strip()) or "no detail"
    if isinstance(err, _EXPECTED):
        return text
    return f"{type(err).__name__}: {text} (run with --debug for the traceback)"


if __name__ == "__main__":
    sys.exit(main())

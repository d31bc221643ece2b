"""The ``loraml`` command: one entry point over theory, figures and the empirical experiment.

Each subcommand lives beside the code it drives, in a module that provides
``register(subparsers)``; that function adds its parser and sets ``func`` (a callable taking the
parsed namespace and returning an exit code). Heavy imports (torch, matplotlib, cvxpy solvers)
belong inside ``func``, so ``loraml --help`` stays fast and works without the optional extras.

Errors a user can fix (bad arguments, bad files) are raised as :class:`UsageError` and printed as
one line on stderr with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Subcommand name -> module providing ``register(subparsers)``.
SUBCOMMANDS: dict[str, str] = {
    "solve": "loraml.theory.cli",
    "figures": "loraml.figures.cli",
    "verify": "loraml.theory.verify_cli",
    "empirical": "loraml.empirical.cli",
}


class UsageError(Exception):
    """An error in the user's input: reported as one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the ``loraml`` parser with every registered subcommand."""
    parser = _Parser(
        prog="loraml",
        description="Meta-learning with low-rank adaptation: solvers, theorem checks, "
        "figures and the RoBERTa/ConvAI2 experiment.",
    )
    from loraml import __version__

    parser.add_argument("--version", action="version", version=f"loraml {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in SUBCOMMANDS.values():
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``loraml`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UsageError as err:
        print(f"loraml {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"loraml {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

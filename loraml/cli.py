"""The ``loraml`` command: one entry point over theory, figures and the empirical experiment.

Each subcommand lives beside the code it drives, in a module that provides
``register(subparsers)``; that function adds its parser and sets ``func`` (a callable taking the
parsed namespace and returning an exit code). Only the module of the subcommand being run is
imported (the others get a one-line placeholder parser), so ``loraml --help`` imports neither
numpy nor scipy, and works without the optional extras. Heavy imports (torch, matplotlib, cvxpy
solvers) belong inside ``func``.

Errors a user can fix (bad arguments, bad files) are raised as :class:`UsageError` and printed as
one line on stderr with exit code 2, never as a traceback; they are checked before any work
starts. A command that needs an optional extra raises :class:`UsageError` from
:func:`require_extra`, naming the extra and the ``pip install`` line.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

# Subcommand name -> (module providing ``register(subparsers)``, one-line help).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "solve": ("loraml.theory.cli", "run a retraining method on an instance file"),
    "figures": (
        "loraml.figures.cli",
        "regenerate the figures (paper reproductions and our own) with cached data",
    ),
    "verify": (
        "loraml.theory.verify_cli",
        "check every statement of the paper on random instances (or your own)",
    ),
    "empirical": (
        "loraml.empirical.cli",
        "the RoBERTa/ConvAI2 persona experiment (SR vs LoRA-ML retraining, then LoRA)",
    ),
}

#: Largest seed accepted by ``--seed`` (exclusive): seeds are stored as signed 64-bit integers
#: (numpy and torch generators both accept the range ``0 <= seed < 2**63``).
SEED_LIMIT = 2**63


class UsageError(Exception):
    """An error in the user's input: reported as one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        message = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def seed(text: str) -> int:
    """``argparse`` type of ``--seed``: an integer with ``0 <= seed < 2**63``.

    Parameters
    ----------
    text : str

    Returns
    -------
    int

    Examples
    --------
    >>> seed("7")
    7
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"{text[:30]} is outside 0 .. 2**63 - 1")
    return value


def positive_int(text: str) -> int:
    """``argparse`` type of counts and ranks: an integer ``>= 1`` (``2.7`` or ``True`` refused).

    Examples
    --------
    >>> positive_int("3")
    3
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:30]!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text[:30]} must be at least 1")
    return value


def importable(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it).

    Examples
    --------
    >>> importable("argparse"), importable("no_such_module_here")
    (True, False)
    """
    if module in sys.modules:
        return sys.modules[module] is not None  # None: the import is blocked
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install, or a parent package blocked
        return False


def require_extra(modules: Sequence[str], extra: str, command: str) -> None:
    """Raise :class:`UsageError` unless every module in ``modules`` can be imported.

    The message names the missing module, the extra that provides it and the install line a pip
    user types (``pip install 'loraml[figures]'``).

    Parameters
    ----------
    modules : sequence of str
    extra : str
        The optional-dependency group of ``pyproject.toml``.
    command : str
        What needs it (for the message).
    """
    for module in modules:
        if not importable(module):
            raise UsageError(
                f"{command} needs {module}, which is not installed; install the '{extra}' extra: "
                f"pip install 'loraml[{extra}]'"
            )


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (its first argument that is not an option)."""
    for token in argv:
        if not token.startswith("-"):
            return token
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Build the ``loraml`` parser.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments to be parsed: only the subcommand they name is imported and registered in
        full (the others get a placeholder with their one-line help). ``None`` registers every
        subcommand in full.
    """
    parser = _Parser(
        prog="loraml",
        description="Meta-learning with low-rank adaptation: solvers, theorem checks, "
        "figures and the RoBERTa/ConvAI2 experiment.",
    )
    from loraml import __version__

    parser.add_argument("--version", action="version", version=f"loraml {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    wanted = None if argv is None else _command(argv)
    for name, (module, summary) in SUBCOMMANDS.items():
        if argv is None or name == wanted:
            importlib.import_module(module).register(sub)
        else:
            sub.add_parser(name, help=summary)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``loraml`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    The exit code is 0 on success, 1 when a command's result says so (``verify``: a claim
    failed), 2 for bad input (one line on stderr, nothing done), 130 when interrupted. Argument
    errors found by the parser (and ``--help``) raise ``SystemExit`` with that code, as argparse
    does.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)  # --help or a usage error: SystemExit (0 or 2)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except UsageError as err:
        message = " ".join(str(err).split())
        print(f"loraml {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"loraml {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

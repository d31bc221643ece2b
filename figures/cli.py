"""``loraml figures``: regenerate the paper's synthetic figures and ours, with cached data."""

from __future__ import annotations

import argparse
import os
import sys

from loraml.cli import positive_int


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (macOS, Windows)
        return os.cpu_count() or 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``figures`` subcommand."""
    p = subparsers.add_parser(
        "figures",
        help="regenerate the figures (paper reproductions and our own) with cached data",
        description="Compute each figure's data (or load it from the cache beside the image when "
        "its settings, seed and code version are unchanged) and draw NAME.png and NAME.pdf. "
        "The full protocol is the default; --quick uses fewer runs and steps with the same code.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="figures to make (default: all)")
    p.add_argument("--quick", action="store_true", help="quick protocol (what make reproduce runs)")
    p.add_argument(
        "--out",
        default=None,
        help="output folder (default: figures/output/quick or figures/output/full)",
    )
    p.add_argument(
        "--jobs",
        type=positive_int,
        default=_cores(),
        help="worker processes over runs (default: the available cores, %(default)s here)",
    )
    p.add_argument("--force", action="store_true", help="recompute even when the cache is valid")
    p.add_argument("--list", action="store_true", help="list the figures and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``loraml figures``."""
    from loraml.cli import UsageError, importable, require_extra
    from loraml.figures.generate import DEFAULT_OUT
    from loraml.figures.registry import registry
    from loraml.theory.io import OutputPathError, check_output_path

    specs = registry()
    if args.list:  # needs no extra
        for spec in specs.values():
            print(f"{spec.name:15s} {spec.summary}")
        return 0
    unknown = [n for n in args.names if n not in specs]
    if unknown:
        raise UsageError(
            f"unknown figure name(s) {', '.join(unknown)}; choose from: {', '.join(specs)} "
            "(or give none for all)"
        )
    if args.jobs > 8 * _cores():  # each worker is a process: a typo must not fork thousands
        raise UsageError(
            f"--jobs {args.jobs} is more than 8 per available core ({_cores()} here); "
            "give at most the number of cores"
        )
    default = DEFAULT_OUT / ("quick" if args.quick else "full")
    try:  # before any work: a folder we can create or write
        check_output_path(default if args.out is None else args.out, folder=True)
    except OutputPathError as err:
        raise UsageError(str(err) if args.out is not None else f"default {err}") from None
    require_extra(["matplotlib", "tqdm"], "figures", "loraml figures")
    from loraml.figures.generate import generate

    names = list(dict.fromkeys(args.names)) or list(specs)
    missing = [n for n in names if not all(importable(mod) for mod in specs[n].needs)]
    if missing and args.names:
        raise UsageError(
            f"figure(s) {', '.join(missing)} need torch, which is not installed; install the "
            "'empirical' extra: pip install 'loraml[empirical]', or name the other figures"
        )
    if missing:  # all figures requested: make the others, say which were skipped
        print(
            f"loraml figures: skipping {', '.join(missing)} (torch is not installed; "
            "pip install 'loraml[empirical]' adds it)",
            file=sys.stderr,
        )
        names = [n for n in names if n not in missing]
    outcomes = generate(
        names,
        quick=args.quick,
        out=args.out,
        jobs=args.jobs,
        force=args.force,
        progress=not args.no_progress,
    )
    for o in outcomes:
        how = "cached data" if o.cached else f"computed ({o.seconds:.1f} s of compute over runs)"
        print(f"{o.name}: {how} -> {o.stem.with_suffix('.png')}")
    return 0

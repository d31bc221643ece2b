"""``loraml empirical``: run the language experiment, rebuild its report.

    loraml empirical run --preset {tiny,cpu,power,paper} [--seeds 0 1 2] [--out DIR] [overrides]
    loraml empirical run --preset power --batching per-task --dry-run   # tasks, sizes, cost
    loraml empirical report DIR
    loraml empirical analysis DIR [DIR ...] [--json FILE] [--out DIR]  # POWER.md's table, report
    loraml empirical analysis DIR [DIR ...] --remaining FILE  # parts still to run, one a line
    loraml empirical compare DIR_A DIR_B [--json FILE]  # same records? exit 0 yes, 1 no

torch, transformers and peft are imported inside the subcommand functions only, so
``loraml --help`` works without them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from loraml.cli import UsageError

PRESET_NAMES = ("tiny", "cpu", "power", "paper")

# Override flag -> (RunConfig field, type, help).
_OVERRIDES: dict[str, tuple[str, type, str]] = {
    "--model": ("model", str, "'tiny', 'minilm', a Hugging Face id or a local model directory"),
    "--data": ("data", str, "'convai2', 'chitchat', 'chitchat:speaker', 'tiny' or 'auto'"),
    "--data-path": ("data_path", str, "ConvAI2 fbdialog file (source convai2)"),
    "--persona-map": ("persona_map", str, "PAML persona map for --data-path"),
    "--test-data-path": (
        "test_data_path",
        str,
        "second ConvAI2 file for the unseen tasks (the paper: valid; --data-path: train)",
    ),
    "--test-persona-map": ("test_persona_map", str, "PAML persona map for --test-data-path"),
    "--n-retrain": ("n_retrain", int, "number of retraining tasks T"),
    "--n-test": ("n_test", int, "number of unseen test tasks"),
    "--candidates": ("n_candidates", int, "candidates K per example"),
    "--max-length": ("max_length", int, "tokens per (context, candidate) pair"),
    "--max-examples": ("max_examples_per_task", int, "cap on training examples per task"),
    "--eval-dialogues": (
        "eval_dialogues",
        int,
        "last dialogues of every task held out for hits@1 and the retraining epoch's selection "
        "(released scripts: 3)",
    ),
    "--epochs": ("epochs", int, "retraining epochs"),
    "--ft-epochs": ("ft_epochs", int, "fine-tuning epochs"),
    "--lr": ("lr", float, "retraining learning rate"),
    "--ft-lr": ("ft_lr", float, "fine-tuning learning rate"),
    "--batch-size": ("batch_size", int, "examples per training batch"),
    "--lora-rank": ("lora_rank", int, "LoRA-ML retraining adapter rank"),
    "--dropout": ("dropout", float, "dropout of the adapters and heads"),
    "--device": ("device", str, "'auto', 'cpu', 'cuda' or 'cuda:N'"),
    "--weight-decay": ("weight_decay", float, "AdamW weight decay (released scripts: 0.01)"),
    "--grad-clip": ("grad_clip", float, "gradient norm clip, 0: none (released scripts: 0)"),
    "--batching": (
        "batching",
        str,
        "retraining batches: 'interleaved' (tasks mixed in every batch) or 'per-task' (one task "
        "a batch, tasks in turn, absent tasks' adapters and heads untouched; released scripts)",
    ),
    "--ft-decay-horizon": (
        "ft_decay_horizon",
        float,
        "fine-tuning LR decays linearly to 0 at this multiple of the real steps "
        "(1: at the end; released scripts: 4)",
    ),
    "--retrain-selection": (
        "retrain_selection",
        str,
        "'last' retraining epoch, or 'best' by hits@1 on the retraining tasks' held-out "
        "dialogues (released scripts)",
    ),
}

#: The pip command that installs what ``loraml empirical`` needs.
INSTALL = "pip install 'loraml[empirical]'"


def _require(modules: tuple[str, ...], action: str) -> None:
    """Refuse with one line naming the extra when a module ``action`` needs is missing."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise UsageError(
                f"'loraml empirical {action}' needs {name} (the 'empirical' extra); install it "
                f"with: {INSTALL}"
            ) from None


def _flag_message(message: str) -> str:
    """A settings error with its first word (a RunConfig field) shown as the CLI flag."""
    field = message.split()[0] if message.split() else ""
    flags = [f for f, (name, _, _) in _OVERRIDES.items() if name == field]
    if flags:
        return f"{flags[0]}{message[len(field) :]}"
    named = {"seeds": "--seeds", "out": "--out", "exclude_tasks": "--exclude-tasks"}
    if field in named:
        return f"{named[field]}{message[len(field) :]}"
    return message


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``empirical`` with its ``run`` and ``report`` subcommands."""
    parser = subparsers.add_parser(
        "empirical",
        help="the RoBERTa/ConvAI2 persona experiment (SR vs LoRA-ML retraining, then LoRA)",
        description="Retrain a pretrained encoder on persona tasks by SR, LoRA-ML, last-layer-ML "
        "or Reptile, fine-tune on unseen tasks, report hits@1.",
    )
    sub = parser.add_subparsers(
        dest="empirical_command", metavar="ACTION", parser_class=type(parser)
    )
    run = sub.add_parser("run", help="run or resume an experiment")
    run.add_argument(
        "--preset",
        choices=PRESET_NAMES,
        required=True,
        help="tiny: seconds, for tests; cpu: MiniLM offline check (~30 min a seed "
        "on one core); power: the powered MiniLM protocol of empirical/results/POWER.md (40 "
        "unseen tasks, 5 seeds: days of CPU, see --dry-run); paper: roberta-base on ConvAI2 "
        "(GPU)",
    )
    run.add_argument("--seeds", type=int, nargs="+", help="training seeds (default per preset)")
    run.add_argument("--out", help="run directory (default runs/empirical-PRESET)")
    run.add_argument(
        "--methods", nargs="+", help="retraining methods: sr lora-ml last-layer-ml reptile"
    )
    run.add_argument("--ranks", type=int, nargs="*", help="fine-tuning LoRA ranks")
    run.add_argument(
        "--no-head-only", action="store_true", help="skip last-layer (fresh head only) fine-tuning"
    )
    run.add_argument(
        "--exclude-tasks",
        nargs="*",
        metavar="NAME",
        help="task names never chosen (paper preset: persona-0, PAML's cluster 0, which the "
        "released scripts delete); give none to keep every task",
    )
    run.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the tasks chosen, their training and held-out sizes and a cost estimate, "
        "then stop (creates nothing)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's choice; 1 is fastest on a busy machine)",
    )
    for flag, (_, kind, text) in _OVERRIDES.items():
        run.add_argument(flag, type=kind, help=text)
    run.set_defaults(func=_run)
    report = sub.add_parser("report", help="rebuild results.md and the plot from results.json")
    report.add_argument("dir", type=Path, help="run directory holding results.json")
    report.set_defaults(func=_report)
    analysis = sub.add_parser(
        "analysis",
        help="LoRA-ML against every other method over one or more run directories: mean "
        "difference with 95 %% CI, paired t and sign tests, Holm-adjusted secondary p-values",
    )
    analysis.add_argument(
        "dirs",
        type=Path,
        nargs="+",
        help="run directories holding results.json (e.g. both batching modes of --preset "
        "power); directories of one batching mode that split the run by --seeds or --methods "
        "are combined",
    )
    analysis.add_argument("--json", type=Path, help="also write the table's rows to this file")
    analysis.add_argument(
        "--out",
        type=Path,
        help="also write the powered protocol's report into this folder: analysis.json, "
        "results.md (parts, coverage, the answer, the table, a design check) and results.png "
        "(per-task differences); not a run directory",
    )
    analysis.add_argument(
        "--remaining",
        type=Path,
        metavar="FILE",
        help="also write the commands of the powered protocol's parts not among DIRS, one a "
        "line (run them two at a time with: xargs -P 2 -I CMD sh -c CMD < FILE)",
    )
    analysis.set_defaults(func=_analysis)
    compare = sub.add_parser(
        "compare",
        help="whether two run directories hold the same hits@1 records (every field but "
        "seconds, the retrained encoders' digests included) and which settings and library "
        "versions differ; exit 0 when identical, 1 when not",
    )
    compare.add_argument("dir_a", type=Path, help="run directory holding results.json")
    compare.add_argument("dir_b", type=Path, help="another run directory holding results.json")
    compare.add_argument("--json", type=Path, help="also write the comparison to this file")
    compare.set_defaults(func=_compare)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _config(args: argparse.Namespace):
    from loraml.empirical.run import PRESETS

    changes = {
        field: getattr(args, flag.lstrip("-").replace("-", "_"))
        for flag, (field, _, _) in _OVERRIDES.items()
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    if args.methods is not None:
        changes["methods"] = tuple(args.methods)
    if args.ranks is not None:
        changes["ranks"] = tuple(args.ranks)
    if args.exclude_tasks is not None:
        changes["exclude_tasks"] = tuple(args.exclude_tasks)
    if args.no_head_only:
        changes["head_only"] = False
    if args.bf16:
        changes["bf16"] = True
    cfg = dataclasses.replace(PRESETS[args.preset], **changes)
    if args.preset == "paper" and cfg.data == "convai2" and cfg.data_path is None:
        raise UsageError(
            "--preset paper needs --data-path (a ConvAI2 fbdialog file) and usually --persona-map"
        )
    if args.preset == "paper" and cfg.test_data_path is None:
        print(
            "note: without --test-data-path the unseen tasks come from --data-path too; the "
            "paper retrained on the train split and tested on the valid split",
            file=sys.stderr,
        )
    return cfg


def _run(args: argparse.Namespace) -> int:
    _require(("torch", "transformers", "peft"), "run")
    from loraml.empirical.run import (
        DEFAULT_SEEDS,
        CheckpointError,
        Diverged,
        preflight,
        run_experiment,
    )

    cfg = _config(args)
    seeds = args.seeds if args.seeds is not None else list(DEFAULT_SEEDS[args.preset])
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    if args.out == "":
        raise UsageError("--out is empty; give a run directory")
    out = Path(args.out) if args.out is not None else Path("runs") / f"empirical-{args.preset}"
    try:
        preflight(cfg, seeds, out)  # before anything is created
    except ValueError as err:
        raise UsageError(_flag_message(str(err).splitlines()[0])) from None
    if args.dry_run:
        return _dry_run(cfg, seeds)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    try:
        run_experiment(cfg, seeds, out, progress=not args.no_progress)
    except (Diverged, CheckpointError) as err:
        raise UsageError(str(err).splitlines()[0]) from None
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(_flag_message(str(err).splitlines()[0])) from None
    except OSError as err:  # e.g. the disk filled up mid-run: one line, the run resumes later
        raise UsageError(f"{err.filename or out}: {err.strerror or err}") from None
    from loraml.empirical.parallel import is_main_process

    if is_main_process():  # under accelerate launch, one report rather than one per process
        print(f"results: {out / 'results.md'}")
        print((out / "results.md").read_text())
    return 0


def _dry_run(cfg, seeds: list[int]) -> int:
    """Print what the run would do (:mod:`loraml.empirical.plan`) without creating anything."""
    from loraml.empirical.config import load_split, resolve_source
    from loraml.empirical.plan import plan, render_plan

    try:
        split = load_split(cfg)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(_flag_message(str(err).splitlines()[0])) from None
    print(render_plan(cfg, plan(cfg, split, seeds), seeds, resolve_source(cfg)))
    return 0


def _report(args: argparse.Namespace) -> int:
    _require(("matplotlib",), "report")
    from loraml.empirical.report import rebuild

    if not args.dir.is_dir():
        raise UsageError(
            f"{args.dir} is not a directory; give a run directory holding results.json"
        )
    try:
        md = rebuild(args.dir)
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(md.read_text())
    return 0


def _check_output_file(path: Path | None, dirs: list[Path], what: str = "--json") -> None:
    """Refuse an output file (``--json``, or ``what``) that would overwrite an input
    ``results.json`` (or is no file)."""
    if path is None:
        return
    from loraml.theory.io import check_output_path

    try:
        check_output_path(path, inputs=[d / "results.json" for d in dirs], what=what)
    except ValueError as err:
        raise UsageError(str(err).splitlines()[0]) from None


def _analysis(args: argparse.Namespace) -> int:
    _require(("scipy",), "analysis")
    import json

    from loraml.empirical.report import analysis, analysis_table, load_results, write_text

    _check_output_file(args.json, args.dirs)
    _check_output_file(args.remaining, args.dirs, what="--remaining")
    if args.out is not None:
        from loraml.theory.io import OutputPathError, check_output_path

        try:
            check_output_path(args.out, folder=True, what="--out")
        except OutputPathError as err:
            raise UsageError(str(err).splitlines()[0]) from None
        if args.out.is_dir() and any(
            (args.out / name).exists() for name in ("config.json", "results.json", "seed0")
        ):
            raise UsageError(
                f"--out {args.out} is a run directory: give a folder of its own for the report "
                "(e.g. empirical/results/power)"
            )
    try:
        runs = [load_results(d) for d in args.dirs]
        rows = analysis(runs)
        lines = analysis_table(rows, runs[0]["config"])
    except ValueError as err:
        raise UsageError(str(err).splitlines()[0]) from None
    except (KeyError, TypeError, AttributeError, IndexError) as err:
        raise UsageError(
            f"a results.json among {', '.join(map(str, args.dirs))} is malformed "
            f"({type(err).__name__}: {err})"
        ) from None
    if not rows:
        raise UsageError("no paired comparison: the run directories have no LoRA-ML and baseline")
    if args.json is not None:
        write_text(args.json, json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))
    if args.out is None and args.remaining is None:
        return 0
    from loraml.empirical.power import power_report, remaining_commands, write_power_report

    report = power_report(runs, [d.name for d in args.dirs])
    if args.remaining is not None:
        todo = remaining_commands(report["remaining"])
        write_text(args.remaining, "".join(f"{c}\n" for c in todo))
        print(f"\n{len(todo)} parts still to run: {args.remaining}")
    if args.out is not None:
        write_power_report(report, args.out)
        print(f"\n{report['answer'] or 'no primary comparison'}")
        if report["specific"]:
            print(f"Is the gain specific to LoRA adapters? {report['specific']}")
        print(f"report: {args.out}/results.md")
    return 0


def _compare(args: argparse.Namespace) -> int:
    import json

    from loraml.empirical.compare import compare_runs, comparison_lines
    from loraml.empirical.report import load_results, write_text

    _check_output_file(args.json, [args.dir_a, args.dir_b])
    try:
        runs = [load_results(d) for d in (args.dir_a, args.dir_b)]
        c = compare_runs(*runs)
    except ValueError as err:
        raise UsageError(str(err).splitlines()[0]) from None
    except (KeyError, TypeError, AttributeError) as err:
        raise UsageError(
            f"a results.json of {args.dir_a} or {args.dir_b} is malformed "
            f"({type(err).__name__}: {err})"
        ) from None
    if args.json is not None:
        named = {"a": str(args.dir_a), "b": str(args.dir_b), **c}
        write_text(args.json, json.dumps(named, indent=2) + "\n")
    print("\n".join(comparison_lines(c, str(args.dir_a), str(args.dir_b))))
    return 0 if c["identical"] else 1

"""``loraml verify``: check every statement of the paper on random instances, or on your own.

Runs the checks of :mod:`loraml.theory.checks` and prints a table (statement, instances, held, worst
margin in decades, seconds) followed by the measured numbers, or one JSON object (``--json``)
keyed ``theorem1``, ``corollary1``, ``theorem2``, ``theorem3``, ``theorem4``, ``rate``,
``convex``, ``spurious``, ``retraining``, ``beyond`` (``instance`` with ``--instance``).

Each statement the paper claims ends with a verdict
(:meth:`loraml.theory.checks.CheckResult.verdict`): *held*, *FAILED*, *undecided* (a claim
missed its threshold only within a decade of the instance's numerical floor, e.g. tasks whose
scales differ by 1e6) or *not applicable* (the statement's assumptions exclude the instance, with
the reason). The closing line counts only what was decided, and says so when nothing was.

Exit code: 0 when no claimed statement failed (measurements, undecided and not-applicable
statements do not count), 1 when one failed, 2 for bad input. Progress goes to stderr; stdout
holds only the results.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from loraml.cli import seed

if TYPE_CHECKING:
    from loraml.theory.checks import CheckResult
    from loraml.theory.io import Instance

#: Check key -> (function name in loraml.theory.checks, quick keyword arguments, full keyword
#: arguments).
#: ``--instances N`` overrides the count argument named in COUNT_ARG.
PROFILES: dict[str, tuple[str, dict, dict]] = {
    "theorem1": ("check_theorem1", {"instances": 20}, {"instances": 200}),
    "corollary1": ("check_corollary1", {"instances": 20}, {"instances": 200}),
    "theorem2": ("check_theorem2", {"instances": 6, "starts": 3}, {"instances": 40, "starts": 10}),
    "theorem3": ("check_theorem3", {"instances": 10, "starts": 3}, {"instances": 50, "starts": 10}),
    "theorem4": ("check_theorem4", {"instances": 3, "starts": 3}, {"instances": 10, "starts": 5}),
    "rate": ("check_rate", {"instances": 2, "reps": 30}, {"instances": 10, "reps": 200}),
    "spurious": (
        "check_spurious",
        {"instances": 6, "starts": 5, "gd_starts": 1},
        {"instances": 60, "starts": 10, "gd_starts": 1},
    ),
    "retraining": ("check_retraining", {"reps": 3}, {"reps": 20}),
    "convex": (
        "check_convex",
        {"reps": 2, "grid": [(8, T, k) for T in (2, 3, 6) for k in (1, 2) if k * (T + 1) <= 8]},
        {"reps": 10},
    ),
    "beyond": ("check_beyond", {"reps": 2}, {"reps": 20}),
    # Beyond the paper (issue 13): measurements in loraml.theory.questions.
    "rank_misspecified": (
        "check_rank_misspecified",
        {"instances": 3, "landscape_instances": 3, "starts": 2},
        {"instances": 20, "landscape_instances": 40, "starts": 5},
    ),
    "t2_selection": (
        "check_t2_selection",
        {"instances": 2, "starts": 2, "rounds": 300, "dims": [4, 10]},
        {"instances": 20, "starts": 5, "rounds": 1000},
    ),
    "landscape_map": (
        "check_landscape_map",
        {"instances": 2, "starts": 1},
        {"instances": 20, "starts": 3},
    ),
    "misspecified": ("check_misspecified", {"instances": 2}, {"instances": 20}),
    "end_to_end": ("check_end_to_end", {"reps": 2, "Ns": [300]}, {"reps": 20}),
    "covariance": (
        "check_covariance",
        {"instances": 2, "starts": 1, "draws": 2},
        {"instances": 20, "starts": 3},
    ),
    # Issue 13, question 5: in loraml.theory.convex_transition. Measured: quick 8 s wall; full
    # 800 s of CPU (41 min wall on the shared 2-core machine, about a third of a core).
    "convex_transition": (
        "check_convex_transition",
        {"instances": 3, "cells": [(8, 1, (2, 3, 4, 5, 6)), (8, 2, (2, 3, 4, 6, 8))]},
        {"instances": 20},
    ),
}
COUNT_ARG = {"retraining": "reps", "convex": "reps", "beyond": "reps", "end_to_end": "reps"}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``verify`` subcommand."""
    p = sub.add_parser(
        "verify",
        help="check every statement of the paper on random instances (or your own)",
        description="Check Theorems 1-4, Corollary 1 and the adaptation rate on random "
        "instances, and measure the landscape, finite-sample retraining, the convex relaxations "
        "and what happens beyond the assumptions. Exit code 0 when every claim of the paper held.",
    )
    p.add_argument("--quick", action="store_true", help="few instances per statement")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--instances", type=int, default=None, help="instances per statement (overrides profile)"
    )
    p.add_argument("--seed", type=seed, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--instance", default=None, help="run the applicable checks on this .npz")
    p.add_argument("--rank", type=int, default=None, help="adapter rank k for --instance")
    p.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(PROFILES)}")
    p.add_argument(
        "--save-dir",
        default=None,
        help="folder where spurious minima found are written as .npz (reproducible instances)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)


def _progress(total: int, enabled: bool) -> Any:
    """A progress bar over statements on stderr (tqdm when installed, else one line each)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm comes with the figures extra; plain lines without it

        class _Lines:
            def __init__(self) -> None:
                self.n = 0

            def set_description_str(self, text: str) -> None:
                if enabled:
                    print(f"loraml verify: [{self.n + 1}/{total}] {text}", file=sys.stderr)

            def update(self, n: int = 1) -> None:
                self.n += n

            def close(self) -> None:
                pass

        return _Lines()
    return tqdm(total=total, disable=not enabled, unit="statement", desc="verify", file=sys.stderr)


def _run_steps(steps: Sequence[tuple[str, Callable[..., CheckResult]]], progress: bool) -> list:
    """Run ``(key, thunk)`` steps in order with a progress bar; return their results."""
    bar = _progress(len(steps), progress)
    results = []
    try:
        for key, step in steps:
            bar.set_description_str(key)
            results.append(step())
            bar.update(1)
    finally:
        bar.close()
    return results


def _selected(only: str | None) -> list[str]:
    from loraml.cli import UsageError

    if only is None:
        return list(PROFILES)
    keys = [s.strip() for s in only.split(",") if s.strip()]
    bad = [key for key in keys if key not in PROFILES]
    if bad or not keys:
        raise UsageError(
            f"--only {only!r}: unknown statement(s) {bad}; choose from {list(PROFILES)}"
        )
    return keys


def run_random(
    keys: list[str], seed: int, quick: bool, instances: int | None, progress: bool = False
) -> list:
    """Run the selected checks on random instances; each check has its own seeded generator."""
    import numpy as np

    from loraml.theory import checks

    seeds = np.random.SeedSequence(seed).spawn(len(PROFILES))
    steps = []
    for key, ss in zip(PROFILES, seeds, strict=True):
        if key not in keys:
            continue
        name, quick_kw, full_kw = PROFILES[key]
        kwargs = dict(quick_kw if quick else full_kw)
        if instances is not None:
            kwargs[COUNT_ARG.get(key, "instances")] = instances
        steps.append((key, lambda n=name, ss=ss, kw=kwargs: getattr(checks, n)(
            np.random.default_rng(ss), **kw)))  # fmt: skip
    return _run_steps(steps, progress)


#: The claimed statements a population instance can be checked against, with one line each.
CLAIMS = {
    "theorem1": "Theorem 1: A_SR = A* + mean U_t*U_t*^T, rank(A_SR - A*) = kT",
    "corollary1": "Corollary 1: SR + rank-r fine-tuning leaves a floor for r < k(T+1)",
    "theorem2": "Theorem 2: zero-loss minimisers have rank(A_hat - A*) <= 2k",
    "theorem3": "Theorem 3: T>=3, generic: zero-loss minimisers have A_hat = A*",
    "theorem4": "Theorem 4: T=2 strict saddles; PGD reaches zero loss",
    "rate": "Adaptation rate: rank-k fine-tuning from LoRA-ML has excess risk ~ 1/n",
}


def not_applicable(key: str, reason: str) -> CheckResult:
    """A claimed statement that does not apply to an instance (verdict ``"not applicable"``)."""
    from loraml.theory.checks import CheckResult

    return CheckResult(key, f"{CLAIMS[key]} -- not applicable: {reason}", 0, None, None, 0.0, True)


def run_instance(
    inst: Instance, seed: int, quick: bool, progress: bool = False
) -> tuple[list, list[str]]:
    """Run the checks that apply to a user's instance; return results and notes.

    Every claimed statement appears in the results: checked (with scale-free thresholds, see
    :mod:`loraml.theory.checks`) or marked not applicable with the reason.
    """
    import numpy as np

    from loraml.theory import checks
    from loraml.theory.family import TaskFamily

    rng = np.random.default_rng(seed)
    starts = 3 if quick else 10
    steps: list[tuple[str, Callable[[], CheckResult]]] = []
    skipped: list = []
    notes: list[str] = []
    k = inst.k
    if inst.kind == "population" and inst.V_star is None:
        A, U = inst.A_star, inst.U_star
        assert A is not None and U is not None  # a population instance holds both
        T, d, kU = U.shape
        full = TaskFamily(A, U, U[:0])
        generic = kU * T <= d and full.genericity(include_test=False).holds
        why_not_generic = (
            f"genericity (Remark 1) needs kT <= d, here k={kU}, T={T}, d={d}"
            if kU * T > d
            else "genericity (Remark 1) fails: the stacked factors are linearly dependent"
        )
        loo = TaskFamily(A, U[:-1], U[-1:]) if T >= 2 else None
        loo_generic = loo is not None and kU * T <= d and loo.genericity().holds
        if generic:
            steps.append(
                ("theorem1", lambda: checks.check_theorem1(rng, families=[full], rank_rtol=None))
            )
        else:
            skipped.append(not_applicable("theorem1", why_not_generic))
        if loo_generic:
            steps.append(
                (
                    "corollary1",
                    lambda: checks.check_corollary1(
                        rng, families=[cast(TaskFamily, loo)], reps_for_T=0, zero_rtol=None
                    ),
                )
            )
            notes.append(
                "corollary1 (and rate): task T plays the unseen task, tasks 1..T-1 retrain"
            )
        else:
            reason = "needs T >= 2 (one task plays the unseen task)" if T < 2 else why_not_generic
            skipped.append(not_applicable("corollary1", reason))
        if 2 * kU >= d:
            skipped.append(
                not_applicable(
                    "theorem2", f"2k >= d ({2 * kU} >= {d}): every matrix has rank <= 2k"
                )
            )
        else:
            steps.append(
                ("theorem2", lambda: checks.check_theorem2(rng, families=[full], starts=starts))
            )
        if T >= 3 and generic:
            steps.append(
                ("theorem3", lambda: checks.check_theorem3(rng, families=[full], starts=starts))
            )
        else:
            reason = f"needs T >= 3 tasks, here T={T}" if T < 3 else why_not_generic
            skipped.append(not_applicable("theorem3", reason))
        if T == 2:
            steps.append(
                ("theorem4", lambda: checks.check_theorem4(rng, families=[full], starts=starts))
            )
        else:
            skipped.append(not_applicable("theorem4", f"a statement about T = 2, here T={T}"))
        if T - 1 >= 3 and loo_generic:  # the rate needs LoRA-ML = A* (Theorem 3)
            reps = 10 if quick else 50
            steps.append(
                (
                    "rate",
                    lambda: checks.check_rate(
                        rng, families=[cast(TaskFamily, loo)], reps=reps, ns=None, noise_std=None
                    ),
                )
            )
        else:
            reason = (
                f"needs T - 1 >= 3 retraining tasks besides the unseen one, here T={T}"
                if T - 1 < 3
                else why_not_generic
            )
            skipped.append(not_applicable("rate", reason))
        steps.append(("convex", lambda: checks.check_convex(rng, families=[full])))
    else:
        why = "data instance" if inst.kind == "data" else "U V^T perturbations (not PSD)"
        notes.append(f"theorems 1-4, corollary 1, rate: population PSD statements; {why}: skipped")
        for key in CLAIMS:
            skipped.append(not_applicable(key, f"a population PSD statement; this is a {why}"))
    if k is None:
        notes.append("instance: no adapter rank (store 'k' or pass --rank): skipped")
    else:
        steps.append(
            (
                "instance",
                lambda: checks.check_instance_recovery(
                    inst.q, k, rng, A_star=inst.A_star, starts=starts
                ),
            )
        )
    results = _run_steps(steps, progress)
    for r in results:  # a claimed statement with nothing to check: say why it is undecided
        if r.claimed and r.held is None and not r.undecided and r.instances:
            r.undecided.append("no point to check was found (e.g. no zero-loss point reached)")
    order = {key: i for i, key in enumerate([*CLAIMS, "convex", "instance"])}
    return sorted(results + skipped, key=lambda r: order.get(r.key, len(order))), notes


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "NO"
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def _summary(res) -> list[str]:
    """A few lines with the numbers of a check (measurements mainly)."""
    n = res.numbers
    key = res.key
    lines: list[str] = []
    if res.verdict() == "not applicable" or not n:
        return lines
    if key == "corollary1" and n.get("floor_rank_k_by_T"):
        vals = ", ".join(f"T={T}: {v['mean']:.3f}" for T, v in n["floor_rank_k_by_T"].items())
        lines.append(f"SR rank-k floor / ||U_test U_test^T||^2/2 by T ({vals})")
    elif key == "theorem2":
        frac = n["fraction_of_found_minima_with_rank_2k"]
        lines.append(f"fraction of found minima with rank(A_hat - A*) = 2k: {frac}")
    elif key == "theorem3":
        lines.append(f"end points of random starts: {n['end_points']}")
    elif key == "theorem4":
        lines.append(f"PGD steps median {n['pgd_steps_median']}, max {n['pgd_steps_max']}")
    elif key == "rate":
        lines.append(
            "slope "
            + ", ".join(f"{s:.3f}" for s in n["slope"])
            + "; measured/predicted constant "
            + ", ".join(f"{r:.3f}" for r in n["ratio_to_predicted_constant"])
        )
        if n.get("predicted_slope"):
            lines.append(
                "finite-n prediction: slope "
                + ", ".join(f"{s:.3f}" for s in n["predicted_slope"])
                + ", constant "
                + ", ".join(f"{r:.3f}" for r in n["predicted_ratio_to_asymptotic_constant"])
                + "; measured/predicted risk (mean over n) "
                + ", ".join(
                    f"{sum(r) / len(r):.3f}" for r in n["ratio_to_finite_n_prediction_by_n"]
                )
            )
        if n["predicted_variance_ratio_kT1_over_k_asymptotic"]:
            over_floor = ", ".join(f"{r:.3f}" for r in n["sr_rank_k_risk_over_floor_at_max_n"])
            var = n["sr_rank_kT1_risk_over_lora_ml_rank_k_risk_at_max_n"]
            finite = n["predicted_variance_ratio_kT1_over_k"][0]
            asymptotic = n["predicted_variance_ratio_kT1_over_k_asymptotic"][0]
            lines.append(
                f"SR rank k: risk/floor {over_floor}; SR rank k(T+1) risk / LoRA-ML rank k risk "
                + ", ".join(f"{r:.2f}" for r in var)
                + " (predicted "
                + ("-" if finite is None else f"{finite:.2f}")
                + f" at finite n, {asymptotic:.2f} asymptotic)"
            )
    elif key == "spurious":
        for label, row in n["end_points"].items():
            lines.append(f"{label}: end points {row}")
        for solver, row in n["classes"].items():
            lines.append(
                f"{solver}: "
                + ", ".join(
                    f"{kind} {c['count']}/{c['runs']} "
                    f"[{100 * c['wilson95'][0]:.2g}-{100 * c['wilson95'][1]:.2g} %]"
                    for kind, c in row.items()
                )
            )
        lines.append(
            f"spurious minima: {n['spurious_found']} runs on {n['instances_with_spurious']} "
            "instances (kept with --save-dir)"
        )
        for e in n["spurious_examples"][:3]:
            lines.append(
                f"  e.g. d={e['d']}, T={e['T']}, k={e['k']} ({e['setting']}): loss "
                f"{e['loss_over_F00']:.1e} F(0,0), ||A_hat - A*||/||A*|| "
                f"{e['A_relative_error']:.2f}, "
                f"lambda after symmetry/lambda_max {e['eigenvalue_after_symmetry']:.1e}, "
                f"perturbed re-solves return {e['resolve_min_over_loss']:.6f} x its loss"
            )
    elif key == "retraining":
        for T, row in n["by_T"].items():
            ratios = ", ".join(f"{r:.2f}" for r in row["ratio_to_s2d2_over_NT"])
            lines.append(
                f"{T}: ||A_hat - A*||^2 / (s^2 d^2/(N T)) at N={row['N']}: {ratios}; "
                f"slope in N {row['slope_in_N']:.2f}"
            )
            if "ratio_to_prediction" in row:
                pred = ", ".join(f"{r:.2f}" for r in row["predicted_ratio_to_s2d2_over_NT"])
                meas = ", ".join(f"{r:.2f}" for r in row["ratio_to_prediction"])
                lines.append(f"{T}: predicted ratio {pred}; measured / predicted {meas}")
        if "predicted_ratio_limit_T_to_infinity" in n:
            limit = n["predicted_ratio_limit_T_to_infinity"]
            lines.append(f"predicted ratio as T -> infinity: {limit:.3f} (not 1)")
    elif key == "convex":
        for name, row in n["by_setting"].items():
            lines.append(f"{name}: recovered {row['recovered']} of {row['instances']}")
    elif key == "beyond":
        for name, row in n.items():
            lines.append(
                f"{name}: recovered A* {row['fraction_recovered']:.0%}, zero loss "
                f"{row['fraction_zero_loss']:.0%}; median A error "
                f"{row['median_A_relative_error']:.2g}, rank-k fine-tuning loss "
                f"{row['median_rank_k_finetune_relative_loss']:.2g} (relative)"
                + (
                    f"; best of 5 random starts recovered "
                    f"{row['fraction_recovered_best_of_5_random_starts']:.0%}"
                    if "fraction_recovered_best_of_5_random_starts" in row
                    else ""
                )
            )
    elif key == "instance":
        lines.append(f"relative error of A: {n.get('relative_error_of_A', 'A_star unknown')}")
        lines.append(f"random-start end points: {n['random_start_end_points']}")
    return [f"  {key}: {line}" for line in lines if line]


def run(args: argparse.Namespace) -> int:
    """Execute ``loraml verify`` with one BLAS thread (see :func:`_one_blas_thread`)."""
    with _one_blas_thread():
        return _run(args)


def _one_blas_thread():
    """Limit BLAS to one thread: the checks use small matrices, where threads only contend.

    Measured on the 2-core machine: ``loraml verify --quick`` took 74 s with OpenBLAS's default
    threads under load and 16 s with one.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from loraml.cli import UsageError
    from loraml.theory.io import (
        InstanceError,
        OutputPathError,
        check_output_path,
        load_instance,
        write_npz,
    )

    if args.instances is not None and args.instances < 1:
        raise UsageError(f"--instances must be >= 1, got {args.instances}")
    if args.save_dir is not None:
        if args.save_dir != "" and not os.path.isdir(args.save_dir):
            raise UsageError(f"--save-dir: folder '{args.save_dir}' does not exist")
        try:
            check_output_path(args.save_dir, folder=True, what="--save-dir")
        except OutputPathError as err:
            raise UsageError(str(err)) from None
    if args.rank is not None and args.instance is None:
        raise UsageError("--rank applies only with --instance")
    if args.rank is not None and args.rank < 1:
        raise UsageError(f"--rank must be >= 1, got {args.rank}")
    progress = not args.no_progress
    notes: list[str] = []
    if args.instance is not None:
        if args.only is not None:
            raise UsageError("--only applies to random instances, not with --instance")
        try:
            inst = load_instance(args.instance, rank=args.rank)
        except InstanceError as err:
            raise UsageError(f"--instance: {err}") from None
        results, notes = run_instance(inst, args.seed, args.quick, progress)
    else:
        results = run_random(_selected(args.only), args.seed, args.quick, args.instances, progress)

    if args.save_dir is not None:
        inputs = [args.instance] if args.instance is not None else []
        for res in results:
            for name, arrays in res.artifacts.items():
                target = Path(args.save_dir) / f"{res.key}_{name}_seed{args.seed}.npz"
                try:
                    check_output_path(target, inputs=inputs, what="--save-dir")
                    write_npz(target, **arrays)
                except OutputPathError as err:
                    raise UsageError(str(err)) from None

    claimed = [r for r in results if r.claimed]
    verdicts = {r.key: r.verdict() for r in claimed}
    failed = [key for key, v in verdicts.items() if v == "FAILED"]
    held = [key for key, v in verdicts.items() if v == "held"]
    undecided = [key for key, v in verdicts.items() if v == "undecided"]
    na = [key for key, v in verdicts.items() if v == "not applicable"]
    ok = not failed
    if args.json:
        report = {r.key: r.to_json() for r in results}
        report["all_claims_held"] = bool(held) and ok
        report["seed"] = args.seed
        report["quick"] = bool(args.quick)
        if undecided or na:
            report["undecided"] = undecided
            report["not_applicable"] = na
        if notes:
            report["notes"] = notes
        print(json.dumps(report, allow_nan=False))
    else:
        header = f"{'statement':<12}{'instances':>10}{'held':>7}{'margin':>9}{'seconds':>9}  claim"
        print(header)
        print("-" * len(header))
        short = {"held": "yes", "FAILED": "NO", "undecided": "undec", "not applicable": "n/a"}
        for r in results:
            v = r.verdict()
            shown = short[v] if v in short else ("-" if r.held is None else f"({_fmt(r.held)})")
            margin = "-" if r.worst_margin is None else f"{r.worst_margin:.2f}"
            print(
                f"{r.key:<12}{r.instances:>10}{shown:>7}{margin:>9}{r.seconds:>9.2f}  {r.statement}"
            )
        print(
            "\nmargin: decades by which the worst instance clears the claim's threshold; "
            "(held) of a measurement: its solver sanity check\nundec: a claim missed its "
            "threshold only within a decade of the instance's numerical floor; n/a: the "
            "statement does not apply to the instance"
        )
        for r in results:
            for line in _summary(r):
                print(line)
            for failure in r.failures[:5]:
                print(f"  {r.key}: FAILED {failure}")
            for line in r.undecided[:5]:
                print(f"  {r.key}: undecided: {line}")
        for note in notes:
            print(f"  note: {note}")
        tail = "".join(
            f", {len(x)} {what} ({', '.join(x)})"
            for x, what in ((undecided, "undecided"), (na, "not applicable"))
            if x
        )
        if failed:
            verdict = f"a claim of the paper FAILED: {', '.join(failed)}"
        elif held and not tail:
            verdict = "every claim of the paper held"
        elif held:
            verdict = f"every decided claim of the paper held: {len(held)} held{tail}"
        else:
            verdict = f"no claim of the paper could be decided{tail}"
        print(f"\n{verdict} (seed {args.seed}{', quick' if args.quick else ''})")
    return 0 if ok else 1

"""``loraml verify``: check every statement of the paper on random instances, or on your own.

Runs the checks of :mod:`loraml.theory.checks` and prints a table (statement, instances, held, worst
margin in decades, seconds) followed by the measured numbers, or one JSON object (``--json``)
keyed ``theorem1``, ``corollary1``, ``theorem2``, ``theorem3``, ``theorem4``, ``rate``,
``convex``, ``spurious``, ``retraining``, ``beyond`` (``instance`` with ``--instance``).

Exit code: 0 when every statement the paper claims held (measurements and statements that do not
apply to an instance do not count), 1 when one failed, 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

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
        {"instances": 2, "starts": 1},
        {"instances": 20, "starts": 3},
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
    p.add_argument("--quick", action="store_true", help="few instances (6-21 s on 2 cores)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--instances", type=int, default=None, help="instances per statement (overrides profile)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument(
        "--instance", type=Path, default=None, help="run the applicable checks on this .npz"
    )
    p.add_argument("--rank", type=int, default=None, help="adapter rank k for --instance")
    p.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(PROFILES)}")
    p.add_argument(
        "--save-dir",
        type=Path,
        default=None,
        help="folder where spurious minima found are written as .npz (reproducible instances)",
    )
    p.set_defaults(func=run)


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


def run_random(keys: list[str], seed: int, quick: bool, instances: int | None) -> list:
    """Run the selected checks on random instances; each check has its own seeded generator."""
    import numpy as np

    from loraml.theory import checks

    seeds = np.random.SeedSequence(seed).spawn(len(PROFILES))
    results = []
    for key, ss in zip(PROFILES, seeds, strict=True):
        if key not in keys:
            continue
        name, quick_kw, full_kw = PROFILES[key]
        kwargs = dict(quick_kw if quick else full_kw)
        if instances is not None:
            kwargs[COUNT_ARG.get(key, "instances")] = instances
        results.append(getattr(checks, name)(np.random.default_rng(ss), **kwargs))
    return results


def run_instance(inst, seed: int, quick: bool) -> tuple[list, list[str]]:
    """Run the checks that apply to a user's instance; return results and notes on the others."""
    import numpy as np

    from loraml.theory import checks
    from loraml.theory.family import TaskFamily

    rng = np.random.default_rng(seed)
    starts = 3 if quick else 10
    results, notes = [], []
    k = inst.k
    if inst.kind == "population" and inst.V_star is None:
        A, U = inst.A_star, inst.U_star
        T = U.shape[0]
        full = TaskFamily(A, U, U[:0])
        generic = full.genericity(include_test=False).holds
        loo = TaskFamily(A, U[:-1], U[-1:]) if T >= 2 else None
        if not generic:
            notes.append("theorem1, corollary1, theorem3: genericity (Remark 1) fails: skipped")
        else:
            results.append(checks.check_theorem1(rng, families=[full]))
            if loo is not None:
                results.append(checks.check_corollary1(rng, families=[loo], reps_for_T=0))
                notes.append(
                    "corollary1 (and rate when T >= 4): task T plays the unseen task, "
                    "tasks 1..T-1 retrain"
                )
        results.append(checks.check_theorem2(rng, families=[full], starts=starts))
        if T >= 3 and generic:
            results.append(checks.check_theorem3(rng, families=[full], starts=starts))
        if T == 2:
            results.append(checks.check_theorem4(rng, families=[full], starts=starts))
        if T - 1 >= 3 and loo.genericity().holds:  # the rate needs LoRA-ML = A* (Theorem 3)
            results.append(checks.check_rate(rng, families=[loo], reps=10 if quick else 50))
        results.append(checks.check_convex(rng, families=[full]))
    else:
        why = "data instance" if inst.kind == "data" else "U V^T perturbations (not PSD)"
        notes.append(f"theorems 1-4, corollary 1, rate: population PSD statements; {why}: skipped")
    if k is None:
        notes.append("instance: no adapter rank (store 'k' or pass --rank): skipped")
    else:
        results.append(
            checks.check_instance_recovery(inst.q, k, rng, A_star=inst.A_star, starts=starts)
        )
    return results, notes


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
    lines = []
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
        if n["predicted_variance_ratio_kT1_over_k"]:
            over_floor = ", ".join(f"{r:.3f}" for r in n["sr_rank_k_risk_over_floor_at_max_n"])
            var = n["sr_rank_kT1_risk_over_lora_ml_rank_k_risk_at_max_n"]
            lines.append(
                f"SR rank k: risk/floor {over_floor}; SR rank k(T+1) risk / LoRA-ML rank k risk "
                + ", ".join(f"{r:.2f}" for r in var)
                + f" (predicted {n['predicted_variance_ratio_kT1_over_k'][0]:.2f})"
            )
    elif key == "spurious":
        for label, row in n["end_points"].items():
            lines.append(f"{label}: end points {row}")
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
    from loraml.cli import UsageError
    from loraml.theory.io import InstanceError, load_instance, write_npz

    if args.instances is not None and args.instances < 1:
        raise UsageError(f"--instances must be >= 1, got {args.instances}")
    if args.save_dir is not None and not args.save_dir.is_dir():
        raise UsageError(f"--save-dir: folder '{args.save_dir}' does not exist")
    if args.rank is not None and args.instance is None:
        raise UsageError("--rank applies only with --instance")
    notes: list[str] = []
    if args.instance is not None:
        if args.only is not None:
            raise UsageError("--only applies to random instances, not with --instance")
        try:
            inst = load_instance(args.instance, rank=args.rank)
        except InstanceError as err:
            raise UsageError(f"--instance: {err}") from None
        results, notes = run_instance(inst, args.seed, args.quick)
    else:
        results = run_random(_selected(args.only), args.seed, args.quick, args.instances)

    if args.save_dir is not None:
        for res in results:
            for name, arrays in res.artifacts.items():
                write_npz(args.save_dir / f"{res.key}_{name}_seed{args.seed}.npz", **arrays)

    claimed = [r for r in results if r.claimed and r.held is not None]
    ok = all(r.held for r in claimed)
    if args.json:
        report = {r.key: r.to_json() for r in results}
        report["all_claims_held"] = ok
        report["seed"] = args.seed
        report["quick"] = bool(args.quick)
        if notes:
            report["notes"] = notes
        print(json.dumps(report, allow_nan=False))
    else:
        header = f"{'statement':<12}{'instances':>10}{'held':>6}{'margin':>9}{'seconds':>9}  claim"
        print(header)
        print("-" * len(header))
        for r in results:
            held = _fmt(r.held) if r.claimed or r.held is None else f"({_fmt(r.held)})"
            margin = "-" if r.worst_margin is None else f"{r.worst_margin:.2f}"
            print(
                f"{r.key:<12}{r.instances:>10}{held:>6}{margin:>9}{r.seconds:>9.2f}  {r.statement}"
            )
        print(
            "\nmargin: decades by which the worst instance clears the claim's threshold; "
            "(held) of a measurement: its solver sanity check"
        )
        for r in results:
            for line in _summary(r):
                print(line)
            for failure in r.failures[:5]:
                print(f"  {r.key}: FAILED {failure}")
        for note in notes:
            print(f"  note: {note}")
        verdict = "every claim of the paper held" if ok else "a claim of the paper FAILED"
        print(f"\n{verdict} (seed {args.seed}{', quick' if args.quick else ''})")
    return 0 if ok else 1

"""README's numbers are read from committed data files, so prose cannot drift from the code.

Every number README quotes from ``loraml verify``, the figures or the benchmarks comes from a
committed file written by a stated command (:data:`SOURCES`). :data:`QUOTES` maps README phrases
to those files: each entry names its source and a phrase with ``{}`` placeholders, and a function
that computes the placeholder values from the loaded file. The test formats each phrase with the
values and requires it, whitespace-normalised, to appear in README. When a rerun of the command
changes a number, or README is edited, the phrase no longer matches and the test names it.

To register a new README number: write it into README, then add one ``Quote`` to :data:`QUOTES`
(``source`` is a key of :data:`SOURCES`; add the file and its command there if it is new).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: Committed data files and the command that writes each.
SOURCES: dict[str, tuple[str, str]] = {
    "verify": (
        "results/verify-seed0.json",
        "loraml verify --seed 0 --json --only theorem1,corollary1,theorem2,theorem3,theorem4,rate,"
        "spurious,retraining,convex,beyond > FILE",
    ),
    "verify-quick": ("results/verify-quick.json", "loraml verify --quick --json > FILE"),
    "verify-seed2": (
        "results/verify-seed2.json",
        "loraml verify --seed 2 --json --only theorem1,corollary1,theorem2,theorem3,theorem4,rate,"
        "spurious,retraining,convex,beyond > FILE",
    ),
    "rate": ("figures/output/full/rate.npz", "loraml figures rate"),
    "sr-floor-vs-T": (
        "figures/output/full/sr-floor-vs-T.npz",
        "loraml figures sr-floor-vs-T",
    ),
    "rate-numbers": ("figures/output/full/rate.json", "loraml figures rate"),
    "sr-floor-numbers": (
        "figures/output/full/sr-floor-vs-T.json",
        "loraml figures sr-floor-vs-T",
    ),
    "covariance": (
        "figures/output/verify/covariance.json",
        "loraml verify --only covariance --seed 0 --json > FILE",
    ),
    "vary-T-numbers": ("figures/output/full/vary-T.json", "loraml figures vary-T"),
    "vary-k-numbers": ("figures/output/full/vary-k.json", "loraml figures vary-k"),
    "vary-d": ("figures/output/full/vary-d.npz", "loraml figures vary-d"),
    "vary-N": ("figures/output/full/vary-N.npz", "loraml figures vary-N"),
    "vary-n": ("figures/output/full/vary-n.npz", "loraml figures vary-n"),
    "spectrum": ("figures/output/full/spectrum.npz", "loraml figures spectrum"),
    "phase": ("figures/output/full/phase.npz", "loraml figures phase"),
    "landscape-T2": ("figures/output/full/landscape-T2.npz", "loraml figures landscape-T2"),
    "bench-empirical": (
        "benchmarks/results/empirical_cpu.json",
        "python benchmarks/bench_empirical.py --candidates 8 --max-length 48 --steps 4 --rounds 3 "
        "--mem-rounds 1 --json FILE",
    ),
    "bench-empirical-k20": (
        "benchmarks/results/empirical_cpu_k20_per-task.json",
        "python benchmarks/bench_empirical.py --candidates 20 --max-length 48 --steps 4 "
        "--rounds 3 --mem-rounds 1 --batching per-task --json FILE",
    ),
    "bench-figures": (
        "benchmarks/results/figures_quick.json",
        "python benchmarks/bench_figures.py --json FILE",
    ),
    "full-figure-times": (
        "figures/output/full",
        "loraml figures NAME (compute_seconds of each NAME.json)",
    ),
    "bench-solvers": (
        "benchmarks/results/solvers_cpu.json",
        "OPENBLAS_NUM_THREADS=1 python benchmarks/bench_solvers.py --repeats 5 --json FILE",
    ),
    "shallow-vary-d": (
        "figures/output/full/shallow-vary-d.npz",
        "loraml figures shallow-vary-d",
    ),
    "shallow-vary-T": (
        "figures/output/full/shallow-vary-T.npz",
        "loraml figures shallow-vary-T",
    ),
    "transformers-check": (
        "empirical/results/transformers-5.24-5.25/compare.json",
        "loraml empirical compare empirical/results/transformers-5.24-5.25/transformers-5.24.0 "
        "empirical/results/transformers-5.24-5.25/transformers-5.25.0 --json FILE",
    ),
    "empirical-power": (
        "empirical/results/power/analysis.json",
        "loraml empirical analysis empirical/results/power/*-s*/ --out empirical/results/power",
    ),
    "empirical": (
        "empirical/results/cpu/results.json",
        "loraml empirical run --preset cpu --seeds 0 1 2 "
        "--methods sr lora-ml last-layer-ml reptile --threads 1 --out DIR",
    ),
}

Values = Callable[[Any], Sequence[Any]]


@dataclass(frozen=True)
class Quote:
    """A README phrase with ``{}`` placeholders filled from one data file."""

    source: str
    phrase: str
    values: Values


# -- formatting helpers: the README's own number styles ------------------------------------------


def f(x: float, digits: int = 2) -> str:
    """Fixed point: ``f(1.034) == "1.03"``."""
    return f"{x:.{digits}f}"


def e(x: float, digits: int = 1) -> str:
    """Scientific without exponent padding: ``e(9.12e-5) == "9.1e-5"``."""
    mantissa, exponent = f"{x:.{digits}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def e0(x: float) -> str:
    """Order of magnitude only: ``e0(4.6e-13) == "5e-13"``."""
    return e(x, 0)


def g(x: float, digits: int = 2) -> str:
    """Significant digits, plain: ``g(0.0696) == "0.07"``; ``g(0.37, 2) == "0.37"``."""
    return f"{x:.{digits}g}"


def span(xs: Sequence[float], fmt: Callable[[float], str] = f, sep: str = "-") -> str:
    """``min-max`` range: ``span([1.2, 1.4]) == "1.20-1.40"``."""
    return f"{fmt(min(xs))}{sep}{fmt(max(xs))}"


def final_medians(z: dict[str, Any], key: str) -> str:
    """Medians over runs of a sweep's final loss, one per swept value: ``"0.001 / 0.00227"``."""
    return " / ".join(g(x, 3) for x in np.median(z[key][:, :, -1], axis=1))


def phase_count(z: dict[str, Any], method: int, T: int, k: int) -> int:
    """Instances recovered in one cell of the phase figure (methods: LoRA-ML, SR, nuclear, SDP)."""
    i, j = list(z["Ts"]).index(T), list(z["ks"]).index(k)
    return int(round(z["fraction"][method, i, j] * z["error"].shape[-1]))


def last_third_change_pct(z: dict[str, Any]) -> str:
    """Largest relative change (%) of a shallow sweep's median curves, epoch 10000 to the end."""
    i = int(np.searchsorted(z["epochs"], 10000))
    worst = max(
        float(np.max(np.abs(m[:, -1] / m[:, i] - 1)))
        for m in (np.median(z[key], axis=1) for key in ("lora_curve", "sr_curve"))
    )
    return f"{100 * worst:.2f}"


def shallow_wins_and_convergence(z: dict[str, Any]) -> tuple[str, int, str]:
    """Trials where LoRA-ML ends below SR per swept value, trials, :func:`last_third_change_pct`."""
    wins = (z["lora_curve"][:, :, -1] < z["sr_curve"][:, :, -1]).sum(1)
    return " / ".join(str(n) for n in wins), z["lora_curve"].shape[1], last_third_change_pct(z)


def shallow_share(seconds: dict[str, float]) -> float:
    """Fraction of the summed compute seconds spent on the two shallow-network figures."""
    return (seconds["shallow-vary-d"] + seconds["shallow-vary-T"]) / sum(seconds.values())


def frac(rec: dict[str, Any], method: str) -> str:
    """Recovery count of a convex-table cell, ``"6/10"``."""
    return f"{rec['recovered'][method]}/{rec['instances']}"


# -- derived quantities read from the verify record ------------------------------------------------


def full_profile(key: str) -> dict[str, Any]:
    """The keyword arguments of the full profile of ``loraml verify`` for one statement."""
    from loraml.theory.verify_cli import PROFILES

    return PROFILES[key][2]


def convex_cells(v: dict[str, Any]) -> dict[tuple[int, int, int], dict[str, Any]]:
    cells = {}
    for key, rec in v["convex"]["numbers"]["by_setting"].items():
        d, T, k = (int(p.split("=")[1]) for p in key.split(","))
        cells[(d, T, k)] = rec
    return cells


def convex_total(v: dict[str, Any], method: str, T_min: int) -> tuple[int, int]:
    cells = [rec for (_, T, _), rec in convex_cells(v).items() if T >= T_min]
    return sum(r["recovered"][method] for r in cells), sum(r["instances"] for r in cells)


def primary_row(report: dict[str, Any]) -> dict[str, Any]:
    """The powered report's primary comparison (LoRA-ML against SR, rank 8, per-task)."""
    return next(r for r in report["rows"] if r["role"] == "primary")


def specific_row(report: dict[str, Any], baseline: str) -> dict[str, Any]:
    """The second question's row against ``baseline`` (``last-layer-ml`` or ``reptile``)."""
    from loraml.empirical.power import specific_rows

    rows = specific_rows(report["rows"])
    assert {r["b"] for r in rows} == {"last-layer-ml", "reptile"}, rows
    return next(r for r in rows if r["b"] == baseline)


def points_list(values: list[float]) -> str:
    """``+2.7, -0.3, +0.8 and -1.0``: fractions as signed points."""
    words = [f"{100 * v:+.1f}" for v in values]
    return ", ".join(words[:-1]) + " and " + words[-1]


def seeds_alike(report: dict[str, Any], baseline: str) -> tuple[str, ...]:
    """How many seeds the row against ``baseline`` has (in words), whether its interval with
    seeds random too coincides with the one over tasks, its seeds' means, and "no" (they
    scatter no more than the tasks' noise accounts for) where it does."""
    row = specific_row(report, baseline)
    c = row["crossed"]
    alike = c["sd_seed"] == 0
    words = ["zero", "one", "two", "three", "four", "five"][row["n_seeds"]]
    return (
        words,
        "coincides" if alike else "does not coincide",
        points_list(c["seed_means"]),
        "no" if alike else "rather",
    )


def software(report: dict[str, Any], methods: tuple[str, ...], seeds: tuple[int, ...]) -> str:
    """The transformers versions of the powered report's parts of ``methods`` and ``seeds``,
    joined by "/" where they differ (so a quote of one version fails if a part mixes)."""
    return "/".join(
        sorted(
            {
                p["software"]["transformers"]
                for p in report["parts"]
                if p["seeds"][0] in seeds and p["methods"][0] in methods
            }
        )
    )


def power_software(report: dict[str, Any]) -> str:
    """The powered report's "Software:" line, rebuilt from its parts."""
    from loraml.empirical.power import software_lines

    return software_lines(report["parts"])[0]


def seeds_phrase(seeds: list[int]) -> str:
    """``seed 0``, ``seeds 0 and 1``, ``seeds 0-2``."""
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if len(seeds) == 2:
        return f"seeds {seeds[0]} and {seeds[1]}"
    return f"seeds {seeds[0]}-{seeds[-1]}"


def method_seeds(report: dict[str, Any], method: str) -> str:
    """The seeds of ``method``'s committed powered parts, as :func:`seeds_phrase` writes them."""
    return seeds_phrase(
        sorted(s for p in report["parts"] if p["methods"] == [method] for s in p["seeds"])
    )


def _timed(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The powered report's parts whose whole wall time is known (not resumed in a directory
    whose earlier invocations predate ``wall.json``)."""
    return [p for p in parts if p["wall_seconds"] is not None]


def stage_seconds(r: dict[str, Any], methods: tuple[str, ...]) -> float:
    """A results file's training and scoring seconds (its ``throughput`` stages) of ``methods``."""
    return sum(t["seconds"] for t in r["throughput"] if t["method"] in methods)


def cpu_pair(r: dict[str, Any], against: str, scheme: str) -> tuple[str, ...]:
    """The committed cpu run's LoRA-ML minus ``against``, recomputed from its records (its
    ``paired`` field, recomputed after the tie fix, holds the same: the test below): mean, wins,
    losses, ties, paired t p."""
    from loraml.empirical.report import paired_comparison

    (p,) = (p for p in paired_comparison(r["records"], "lora-ml", against) if p["scheme"] == scheme)
    return (
        f"{100 * p['mean_diff']:+.1f}",
        *(str(p[k]) for k in ("wins", "losses", "ties")),
        f"{p['p_t']:.2g}",
    )


def convex_rows(v: dict[str, Any]) -> list[str]:
    """The README's convex table rows, one per grid cell."""
    rows = []
    for (d, T, k), rec in sorted(convex_cells(v).items()):
        med = rec["median_relative_error"]
        rows.append(
            f"| {d}, {T}, {k} | {frac(rec, 'nuclear')} | {frac(rec, 'sdp')} | "
            f"{frac(rec, 'lora_ml')} | {med['nuclear']:.1e} | {med['sdp']:.1e} |"
        )
    return rows


def floor_by_T(v: dict[str, Any]) -> dict[int, dict[str, float]]:
    return {int(T): x for T, x in v["corollary1"]["numbers"]["floor_rank_k_by_T"].items()}


def spurious_runs(v: dict[str, Any], kind: str, solver: str) -> int:
    ends = v["spurious"]["numbers"]["end_points"]
    return sum(by_solver[solver].get(kind, 0) for by_solver in ends.values())


def retraining(v: dict[str, Any], T: int) -> dict[str, Any]:
    return v["retraining"]["numbers"]["by_T"][f"T={T}"]


def beyond(v: dict[str, Any], setting: str) -> dict[str, Any]:
    return v["beyond"]["numbers"][setting]


def asym_psd(v: dict[str, Any]) -> dict[str, Any]:
    return beyond(v, "asymmetric_on_psd_d10_T3_k1/asymmetric_adapters")


def pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def of20(x: float, n: int = 20) -> str:
    return f"{round(x * n)}/{n}"


def unequal(c: dict[str, Any], d: int, part: str) -> dict[str, Any]:
    """The unequal-N_t record of the covariance key at (d, 3, 1): ``noiseless`` or ``noisy``."""
    return c["covariance"]["numbers"]["unequal_N"][f"d={d},T=3,k=1"][part]


def unequal_sum(c: dict[str, Any], field: str, count: str) -> int:
    return sum(unequal(c, d, "noiseless")[field][count] for d in (8, 4))


QUOTES: list[Quote] = [
    # ---- verify, full profile: the statement table
    Quote(
        "verify",
        "held on {} instances, worst margin {} decades",
        lambda v: (v["theorem1"]["instances"], f(v["theorem1"]["worst_margin"], 1)),
    ),
    Quote(
        "verify",
        "held on {}, margin {}; the value: see below",
        lambda v: (v["corollary1"]["instances"], f(v["corollary1"]["worst_margin"], 1)),
    ),
    Quote(
        "verify",
        "held on {} instances (T = 2, 3; {} starts each), margin {}",
        lambda v: (
            v["theorem2"]["instances"],
            full_profile("theorem2")["starts"],
            f(v["theorem2"]["worst_margin"], 1),
        ),
    ),
    Quote(
        "verify",
        "held: {} of {} random starts ({} instances) ended at `A_hat = A*`, margin {}",
        lambda v: (
            v["theorem3"]["numbers"]["end_points"].get("global", 0),
            sum(v["theorem3"]["numbers"]["end_points"].values()),
            v["theorem3"]["instances"],
            f(v["theorem3"]["worst_margin"], 1),
        ),
    ),
    Quote(
        "verify",
        "held on {} instances, margin {}; Lanczos curvature",
        lambda v: (v["theorem4"]["instances"], f(v["theorem4"]["worst_margin"], 1)),
    ),
    Quote(
        "verify",
        "slope {} to {}, constant {}x the prediction ({} families)",
        lambda v: (
            f(max(v["rate"]["numbers"]["slope"])),
            f(min(v["rate"]["numbers"]["slope"])),
            f(float(np.mean(v["rate"]["numbers"]["ratio_to_predicted_constant"]))),
            v["rate"]["instances"],
        ),
    ),
    Quote(
        "verify",
        "`||A_hat - A*||^2 ~ 1/N`, {}x `s^2 d^2/(NT)`",
        lambda v: (
            span(
                [r for T in (3, 5) for r in retraining(v, T)["ratio_to_s2d2_over_NT"]],
                lambda x: f(x, 1),
            ),
        ),
    ),
    # ---- verify: what was found
    Quote(
        "verify",
        "averages {} (T = 1), {} (2), {} (3), {} (5), {} (8), {} (11), with the smallest "
        "instance at {} for T = 11",
        lambda v: (
            *(f(floor_by_T(v)[T]["mean"]) for T in (1, 2, 3, 5, 8, 11)),
            g(floor_by_T(v)[11]["min"]),
        ),
    ),
    Quote(
        "verify",
        "At T = 2 all {} zero-loss minima found from random starts had `rank(A_hat - A*) = 2k` "
        "exactly (none was A*); at T = 3 all {} had rank 0",
        lambda v: (
            v["theorem2"]["numbers"]["found_minima"]["T=2"],
            v["theorem2"]["numbers"]["found_minima"]["T=3"],
        ),
    ),
    Quote(
        "verify",
        "from all {} starts (random and the saddle; median {} steps, at most {})",
        lambda v: (
            v["theorem4"]["instances"] * (full_profile("theorem4")["starts"] + 1),
            f"{v['theorem4']['numbers']['pgd_steps_median']:.0f}",
            v["theorem4"]["numbers"]["pgd_steps_max"],
        ),
    ),
    Quote(
        "verify",
        "slope is {} to {} and the constant is {} times `1/2 s^2 k(2d-k)` (mean {})",
        lambda v: (
            f(max(v["rate"]["numbers"]["slope"])),
            f(min(v["rate"]["numbers"]["slope"])),
            span(v["rate"]["numbers"]["ratio_to_predicted_constant"]),
            f(float(np.mean(v["rate"]["numbers"]["ratio_to_predicted_constant"]))),
        ),
    ),
    Quote(
        "verify",
        "(risk/floor {} at n = 1600); rank K = k(T+1) = 4 removes the floor but pays {}x "
        "LoRA-ML's rank-k risk, against the predicted ratio of the first-order finite-n risks "
        "`K [d/(n-d-1) + (d-K)/(n-K-1)] / (k [d/(n-d-1) + (d-k)/(n-k-1)]) = {}` at n = 1600 (its "
        "n -> infinity limit `K(2d-K) / (k(2d-k))` is {};",
        lambda v: (
            span(v["rate"]["numbers"]["sr_rank_k_risk_over_floor_at_max_n"], lambda x: f(x, 3)),
            span(v["rate"]["numbers"]["sr_rank_kT1_risk_over_lora_ml_rank_k_risk_at_max_n"]),
            f(v["rate"]["numbers"]["predicted_variance_ratio_kT1_over_k"][0], 3),
            f(v["rate"]["numbers"]["predicted_variance_ratio_kT1_over_k_asymptotic"][0], 3),
        ),
    ),
    Quote(
        "verify",
        "its smallest singular value is {}-{} times the noise scale `s sqrt(d/n)` at n = 1600",
        lambda v: tuple(
            f"{x:.0f}"
            for x in (
                min(v["rate"]["numbers"]["sr_residual_sigma_K_over_noise_scale"]),
                max(v["rate"]["numbers"]["sr_residual_sigma_K_over_noise_scale"]),
            )
        ),
    ),
    Quote(
        "verify",
        "falls as N^{} (T = 3) and N^{} (T = 5), at {}x (T = 3) and {}x (T = 5) the pooled",
        lambda v: (
            f(retraining(v, 3)["slope_in_N"]),
            f(retraining(v, 5)["slope_in_N"]),
            span(retraining(v, 3)["ratio_to_s2d2_over_NT"]),
            span(retraining(v, 5)["ratio_to_s2d2_over_NT"]),
        ),
    ),
    Quote(
        "verify",
        "SR's error stays at {} (its bias does not shrink with N)",
        lambda v: (
            span(
                [x for T in (3, 5) for x in retraining(v, T)["sr_sq_error"]],
                lambda x: f"{x:.0f}",
            ),
        ),
    ),
    Quote(
        "verify",
        "The **SDP** recovered A* on every T >= 4 instance ({}/{}, including k(T+1) = d = 20)",
        lambda v: convex_total(v, "sdp", 4),
    ),
    Quote(
        "verify",
        "**LoRA-ML recovered A* on all {} instances with T >= 3**",
        lambda v: (convex_total(v, "lora_ml", 3)[1],),
    ),
    Quote(
        "verify",
        "({} at k/d = 0.2 for d = 10, {} for d = 20, k = 4)",
        lambda v: (
            frac(convex_cells(v)[(10, 3, 2)], "sdp"),
            frac(convex_cells(v)[(20, 3, 4)], "sdp"),
        ),
    ),
    Quote(
        "verify",
        "(k = 1: {}-{}/10 at T = 3; k = 2: {} at T = 3, {} and {} at T = 4, {} at T = 6; k = 4: {} "
        "for T <= 4)",
        lambda v: (
            min(convex_cells(v)[(d, 3, 1)]["recovered"]["nuclear"] for d in (10, 20)),
            max(convex_cells(v)[(d, 3, 1)]["recovered"]["nuclear"] for d in (10, 20)),
            frac(convex_cells(v)[(10, 3, 2)], "nuclear"),
            frac(convex_cells(v)[(10, 4, 2)], "nuclear"),
            frac(convex_cells(v)[(20, 4, 2)], "nuclear"),
            frac(convex_cells(v)[(20, 6, 2)], "nuclear"),
            "0/10"
            if all(convex_cells(v)[(20, T, 4)]["recovered"]["nuclear"] == 0 for T in (3, 4))
            else "not 0/10",
        ),
    ),
    Quote(
        "verify",
        "still recovered A* ({}, {}) and rank-k fine-tuning of a fresh task was exact",
        lambda v: (
            e0(beyond(v, "crowded_d6_T4_k2/symmetric_adapters")["median_A_relative_error"]),
            e0(beyond(v, "crowded_d6_T5_k3/symmetric_adapters")["median_A_relative_error"]),
        ),
    ),
    Quote(
        "verify",
        "symmetric LoRA-ML fails (`||A_hat - A*|| / ||A*|| = {}`, rank-k fine-tuning leaves {} "
        "of the loss; {} recovered) while **asymmetric retraining adapters** recover A* ({}, {})",
        lambda v: (
            f(beyond(v, "general_UV_d12_T3_k1/symmetric_adapters")["median_A_relative_error"], 1),
            pct(
                beyond(v, "general_UV_d12_T3_k1/symmetric_adapters")[
                    "median_rank_k_finetune_relative_loss"
                ]
            ),
            of20(beyond(v, "general_UV_d12_T3_k1/symmetric_adapters")["fraction_recovered"]),
            of20(beyond(v, "general_UV_d12_T3_k1/asymmetric_adapters")["fraction_recovered"]),
            e0(beyond(v, "general_UV_d12_T3_k1/asymmetric_adapters")["median_A_relative_error"]),
        ),
    ),
    Quote(
        "verify",
        "the solver recovered A* on {} families, and so did the best of 5 random starts ({})",
        lambda v: (
            of20(asym_psd(v)["fraction_recovered"]),
            of20(asym_psd(v)["fraction_recovered_best_of_5_random_starts"]),
        ),
    ),
    Quote(
        "verify",
        "With d = {}, k = {} and {} families per T",
        lambda v: tuple(
            v["corollary1"]["numbers"]["floor_rank_k_by_T_setting"][key]
            for key in ("d", "k", "reps")
        ),
    ),
    Quote(
        "verify",
        "loraml verify --only spurious` for each seed ({} generic instances per seed",
        lambda v: (v["spurious"]["instances"],),
    ),
    Quote(
        "verify",
        "{} L-BFGS and {} gradient-descent run from random starts per instance",
        lambda v: (full_profile("spurious")["starts"], full_profile("spurious")["gd_starts"]),
    ),
    Quote(
        "verify",
        "d = 10, T = 3, k = 1, s = {}, n = {}..{}, {} repetitions: the fitted",
        lambda v: (
            v["rate"]["numbers"]["setting"]["noise_std"],
            v["rate"]["numbers"]["setting"]["ns"][0],
            v["rate"]["numbers"]["setting"]["ns"][-1],
            v["rate"]["numbers"]["setting"]["reps"],
        ),
    ),
    Quote(
        "verify",
        "d = {}, k = {}, s = {}, {} repetitions: LoRA-ML's",
        lambda v: tuple(v["retraining"]["numbers"][key] for key in ("d", "k", "noise_std", "reps")),
    ),
    Quote(
        "verify",
        "out of {} population families per cell",
        lambda v: (next(iter(convex_cells(v).values()))["instances"],),
    ),
    Quote(
        "verify",
        "*Beyond the assumptions (item 10)*, {} families per setting",
        lambda v: (v["beyond"]["instances"] // len(v["beyond"]["numbers"]),),
    ),
    # ---- figures (quick protocol, committed data beside the images)
    Quote(
        "rate",
        "From the LoRA-ML base at rank k the fitted slope is {}",
        lambda z: (f(z["slopes"][0]),),
    ),
    Quote(
        "rate",
        "SR at rank k is flat at its floor (slope {})",
        lambda z: (g(z["slopes"][1], 4),),
    ),
    Quote(
        "sr-floor-vs-T",
        "falls from {} (T = {}) to {} (T = {}) but does not vanish",
        lambda z: (
            g(z["floor"][0].mean(), 4),
            z["Ts"][0],
            g(z["floor"][-1].mean(), 4),
            z["Ts"][-1],
        ),
    ),
    Quote(
        "bench-empirical",
        "| {}x examples per CPU second ({}x wall), FLOP bound {}x, {}x peak memory",
        lambda j: (
            f(j["cpu_speed_ratio_lora_ml_over_sr"]),
            f(j["speed_ratio_lora_ml_over_sr"]),
            f(j["flop_bound_speed_ratio"]),
            f(j["memory_ratio_lora_ml_over_sr"]),
        ),
    ),
    Quote(
        "bench-empirical-k20",
        "| {}x examples per CPU second ({}x wall), {}x peak memory, with two protocol runs",
        lambda j: (
            f(j["cpu_speed_ratio_lora_ml_over_sr"]),
            f(j["speed_ratio_lora_ml_over_sr"]),
            f(j["memory_ratio_lora_ml_over_sr"]),
        ),
    ),
    Quote(
        "bench-solvers",
        "| {}x less CPU time ({}x wall), smaller",
        lambda j: (f"{j['paper']['speedup_cpu']:.0f}", f"{j['paper']['speedup']:.0f}"),
    ),
    Quote(
        "bench-solvers",
        "| relative error {} in {} s of CPU |",
        lambda j: (f"{j['large']['relative_error']:.1e}", f(j["large"]["cpu_seconds"])),
    ),
    Quote(
        "verify-quick",
        "`loraml verify --quick` (all {} keys) took {} s of wall time on the 2-core",
        lambda j: (
            sum(isinstance(v, dict) for v in j.values()),
            f"{sum(v['seconds'] for v in j.values() if isinstance(v, dict)):.0f}",
        ),
    ),
    Quote(
        "verify-quick",
        "the 10 keys of the paper's statements took {} s of it.",
        lambda j: (f"{sum(j[k]['seconds'] for k in list(j)[:10] if isinstance(j[k], dict)):.0f}",),
    ),
    Quote(
        "verify-seed2",
        "held every claim as well: {} of {} statements, worst margins {} to {} decades",
        lambda j: (
            *(
                (sum(bool(v["held"]) for v in held), len(held))
                if (held := [v for v in j.values() if isinstance(v, dict) and v["claimed"]])
                else (0, 0)
            ),
            f(min(v["worst_margin"] for v in held)),
            f(max(v["worst_margin"] for v in held), 1),
        ),
    ),
    Quote(
        "verify",
        "(seed 0: {} to {} decades)",
        lambda j: (
            f(min(v["worst_margin"] for v in j.values() if isinstance(v, dict) and v["claimed"])),
            f(
                max(v["worst_margin"] for v in j.values() if isinstance(v, dict) and v["claimed"]),
                1,
            ),
        ),
    ),
    Quote(
        "shallow-vary-d",
        "lower on {} of the {} trials), as in the paper's figure. The runs have converged: over "
        "the last third of fine-tuning (epoch 10000 to the end) the median curves change by at "
        "most {} %.",
        shallow_wins_and_convergence,
    ),
    Quote(
        "shallow-vary-T",
        "lower on {} of the {} trials), as the paper reports. The quick protocol's 10000 / 3000 "
        "epochs had shown the gap narrowing at T = 10; that was its short schedule. Over the last "
        "third of fine-tuning the median curves change by at most {} %",
        shallow_wins_and_convergence,
    ),
    Quote(
        "bench-figures",
        "`loraml figures --quick` from scratch (all {} figures, default `--jobs 2`) took **{} s "
        "of wall time** ({} s of CPU) on this project's 2-core x86_64 Linux machine at load "
        "average {}",
        lambda j: (
            len(j["figures"]),
            f"{j['wall_seconds']:.0f}",
            f"{j['cpu_seconds']:.0f}",
            f(j["load_average_1min_before"], 1),
        ),
    ),
    Quote(
        "bench-figures",
        "the shallow-network figures are {} % of the summed per-figure seconds.",
        lambda j: (f"{100 * shallow_share(j['figures']):.0f}",),
    ),
    Quote(
        "bench-figures",
        "| `loraml figures --quick` from scratch, all {} figures | `python "
        "benchmarks/bench_figures.py --json benchmarks/results/figures_quick.json` | {} s wall "
        "(target 600 s) at load average {} |",
        lambda j: (
            len(j["figures"]),
            f"{j['wall_seconds']:.0f}",
            f(j["load_average_1min_before"], 1),
        ),
    ),
    Quote(
        "full-figure-times",
        "The full protocol of all {} figures took {} s ({} h) of figure computation",
        lambda j: (len(j), f"{sum(j.values()):.0f}", f(sum(j.values()) / 3600, 1)),
    ),
    Quote(
        "full-figure-times",
        "10 trials) are {} h of that.",
        lambda j: (f((j["shallow-vary-d"] + j["shallow-vary-T"]) / 3600, 1),),
    ),
    # ---- the paper's linear sweeps and our figures, full protocol (medians of the final loss)
    Quote(
        "vary-d",
        "SR plateaus at its rank-k floor ({} for d = 5 / 10 / 20) while LoRA-ML falls to "
        "the noise level ({})",
        lambda z: (final_medians(z, "sr_curve"), final_medians(z, "lora_curve")),
    ),
    Quote(
        "vary-N",
        "LoRA-ML ends at {} for N = 100 / 1000 / 10000, SR at {}.",
        lambda z: (final_medians(z, "lora_curve"), final_medians(z, "sr_curve")),
    ),
    Quote(
        "vary-n",
        "LoRA-ML ends at {} for n = 100 / 1000 / 10000, SR at {}, {} to {} orders of magnitude",
        lambda z: (
            final_medians(z, "lora_curve"),
            final_medians(z, "sr_curve"),
            *(
                f(x, 1)
                for x in np.log10(
                    np.median(z["sr_curve"][:, :, -1], axis=1)
                    / np.median(z["lora_curve"][:, :, -1], axis=1)
                )[[0, -1]]
            ),
        ),
    ),
    Quote(
        "spectrum",
        "the kT-th is at least {}, the next at most {}); LoRA-ML has at most 2k for T = 2 "
        "(Theorem 2: the 2k-th is at least {}, the next at most {}) and for T >= 3 none above {}",
        lambda z: (
            g(min(z["sv"][i, 1][:, 2 * T - 1].min() for i, T in enumerate(z["Ts"])), 3),
            e(max(z["sv"][i, 1][:, 2 * T].max() for i, T in enumerate(z["Ts"]))),
            g(z["sv"][0, 0][:, 3].min(), 3),
            e(z["sv"][0, 0][:, 4].max()),
            e(z["sv"][1:, 0].max()),
        ),
    ),
    Quote(
        "landscape-T2",
        "for T = 2, {} of the {} ends are global minima (objective below {}) lying anywhere from "
        "{} to {} relative distance from A*",
        lambda z: (
            int((z["T2"][:, 1] < 1e-20).sum()),
            z["T2"][:, 1].size,
            e(z["T2"][:, 1][z["T2"][:, 1] < 1e-20].max()),
            g(z["T2"][:, 0][z["T2"][:, 1] < 1e-20].min(), 2),
            g(z["T2"][:, 0][z["T2"][:, 1] < 1e-20].max(), 3),
        ),
    ),
    Quote(
        "landscape-T2",
        "to relative distance {} and stopped at objective {}, not a minimum (the solver says so: "
        "`converged=False`, status `not converged`). For T = 3 all {} ends are A* "
        "(distance below {})",
        lambda z: (
            f"{z['T2'][:, 0].max():.1e}",
            g(z["T2"][:, 1].max(), 2),
            z["T3"][:, 0].size,
            e(z["T3"][:, 0].max()),
        ),
    ),
    Quote(
        "phase",
        "(20 per cell, d = 12) on which each method recovers A* (relative error < {}). LoRA-ML "
        "recovers A* on all {} instances with T >= 3 in this grid, even beyond the genericity line "
        "k(T+1) = d (orange), and on none with T = 2; SR never does.",
        lambda z: (
            (
                e0(float(z["rtol"])),
                int(round(z["fraction"][0, 1:].sum() * 20))
                if z["fraction"][0, 1:].min() == 1
                else -1,
            )
            if z["fraction"][0, 0].max() == 0 and z["fraction"][1].max() == 0
            else ("SR or T = 2 recovered",)
        ),
    ),
    Quote(
        "phase",
        "for k <= 3 and from T = 6 for k = 4 ({}/20 at T = 5); at T = 4 on {}/20, {}/20, {}/20 "
        "and {}/20 for k = 1, 2, 3, 4; at T = 3 on {}/20 for k = 1, {}/20 for k = 2 and never for "
        "k >= 3",
        lambda z: (
            (
                phase_count(z, 3, 5, 4),
                *(phase_count(z, 3, 4, k) for k in (1, 2, 3, 4)),
                phase_count(z, 3, 3, 1),
                phase_count(z, 3, 3, 2),
            )
            if all(phase_count(z, 3, T, k) == 20 for T in (5, 6, 8, 10) for k in (1, 2, 3))
            and all(phase_count(z, 3, T, 4) == 20 for T in (6, 8, 10))
            and phase_count(z, 3, 3, 3) == phase_count(z, 3, 3, 4) == 0
            else ("SDP pattern changed",)
        ),
    ),
    Quote(
        "phase",
        "for k = 1 it recovers {}/20 at T = 3 and 20/20 from T = 6, for k = 2 {}/20 at T = 3 and "
        "20/20 only at T = 10, for k = 3 at most {}/20 (T = 10), for k = 4 never.",
        lambda z: (
            (
                phase_count(z, 2, 3, 1),
                phase_count(z, 2, 3, 2),
                phase_count(z, 2, 10, 3),
            )
            if phase_count(z, 2, 6, 1) == 20
            and phase_count(z, 2, 5, 1) < 20
            and phase_count(z, 2, 10, 2) == 20
            and phase_count(z, 2, 8, 2) < 20
            and max(phase_count(z, 2, T, 3) for T in z["Ts"]) == phase_count(z, 2, 10, 3)
            and z["fraction"][2, :, 3].max() == 0
            else ("nuclear-norm pattern changed",)
        ),
    ),
    # ---- the derived predictions beside the measurements (the figures' "numbers" entries)
    Quote(
        "vary-k-numbers",
        "(SR's limits {}, {}, {}), but under the paper's 3000-round schedule its fine-tuning limit "
        "rises with k: {}, {} and {}. The fast solver (`th.solve_lora_ml`) on the same retraining "
        "losses reaches the noise level at every k ({}, {}, {}; base errors {}, {}, {}, the",
        lambda j: tuple(
            g(x, 4)
            for key in (
                "sr_limit_median",
                "lora_limit_median",
                "fast_limit_median",
                "fast_base_error_median",
            )
            for x in j["numbers"][key]
        ),
    ),
    Quote(
        "vary-T-numbers",
        "LoRA-ML reaches the noise level ({} and {}) while SR stays at {} and {}",
        lambda j: (
            *(g(x, 4) for x in j["numbers"]["lora_final_loss_median"][1:3]),
            *(g(x, 4) for x in j["numbers"]["sr_final_loss_median"][1:3]),
        ),
    ),
    Quote(
        "vary-T-numbers",
        "same closed-form limit (LoRA-ML {}, SR {})",
        lambda j: (
            g(j["numbers"]["lora_limit_median"][0], 4),
            g(j["numbers"]["sr_limit_median"][0], 4),
        ),
    ),
    Quote(
        "vary-T-numbers",
        "SR even gets there sooner ({} after the 10000 steps, LoRA-ML {}, still above its limit",
        lambda j: (
            g(j["numbers"]["sr_final_loss_median"][0], 4),
            g(j["numbers"]["lora_final_loss_median"][0], 4),
        ),
    ),
    Quote(
        "vary-T-numbers",
        "That biased SR plateaus at {} at T = 2, against {} for the correct SR",
        lambda j: (
            g(j["numbers"]["sr_released_limit_median"][0], 4),
            g(j["numbers"]["sr_limit_median"][0], 4),
        ),
    ),
    Quote(
        "vary-T-numbers",
        "at rank k {} against SR's {}, at rank 2k {} against {}",
        lambda j: (
            g(j["numbers"]["lora_limit_by_rank_k_2k_3k_median"][0][0], 4),
            g(j["numbers"]["sr_limit_by_rank_k_2k_3k_median"][0][0], 4),
            g(j["numbers"]["lora_limit_by_rank_k_2k_3k_median"][0][1], 4),
            g(j["numbers"]["sr_limit_by_rank_k_2k_3k_median"][0][1], 4),
        ),
    ),
    Quote(
        "sr-floor-numbers",
        "is {} times the measured mean for T >= 5",
        lambda j: (
            span(
                [
                    r
                    for T, r in zip(
                        j["numbers"]["Ts"], j["numbers"]["prediction_over_floor"], strict=True
                    )
                    if T >= 5
                ],
                fmt=lambda x: g(x, 4),
            ),
        ),
    ),
    Quote(
        "sr-floor-numbers",
        "it is {} times too high",
        lambda j: (g(j["numbers"]["prediction_over_floor"][0], 4),),
    ),
    Quote(
        "sr-floor-numbers",
        "is a bound, not a prediction: {} times the floor for T >= 5",
        lambda j: (
            span(
                [
                    r
                    for T, r in zip(
                        j["numbers"]["Ts"],
                        j["numbers"]["upper_bound_expected_over_floor"],
                        strict=True,
                    )
                    if T >= 5
                ],
                fmt=lambda x: g(x, 4),
            ),
        ),
    ),
    Quote(
        "sr-floor-numbers",
        "zero for T <= 2 and {} times the floor at T = {}",
        lambda j: (g(j["numbers"]["weyl_lower_over_floor"][-1], 4), j["numbers"]["Ts"][-1]),
    ),
    Quote(
        "rate-numbers",
        "has the same fitted slope, {}, and the measured mean is {} times it at every n from {} "
        "to {}",
        lambda j: (
            g(j["numbers"]["finite_n_prediction_slope"], 4),
            span(
                j["numbers"]["lora_ml_over_finite_n_prediction"],
                fmt=lambda x: g(x, 4),
            ),
            j["numbers"]["ns"][0],
            j["numbers"]["ns"][-1],
        ),
    ),
    Quote(
        "rate-numbers",
        "is {} times too low at n = {}",
        lambda j: (g(j["numbers"]["lora_ml_over_asymptote"][0], 4), j["numbers"]["ns"][0]),
    ),
    Quote(
        "rate-numbers",
        "also decays as 1/n (slope {})",
        lambda j: (g(j["numbers"]["slopes"]["SR, rank k(T+1)"], 4),),
    ),
    Quote(
        "shallow-vary-d",
        "(median {} against {} for d = {};",
        lambda z: (
            " / ".join(f"{x:.3f}" for x in np.median(z["lora_curve"][:, :, -1], axis=1)),
            " / ".join(f"{x:.3f}" for x in np.median(z["sr_curve"][:, :, -1], axis=1)),
            " / ".join(str(x) for x in z["values"]),
        ),
    ),
    Quote(
        "shallow-vary-T",
        "({} against {} for T = {};",
        lambda z: (
            " / ".join(f"{x:.3f}" for x in np.median(z["lora_curve"][:, :, -1], axis=1)),
            " / ".join(f"{x:.3f}" for x in np.median(z["sr_curve"][:, :, -1], axis=1)),
            " / ".join(str(x) for x in z["values"]),
        ),
    ),
    # ---- empirical: the powered protocol's committed parts
    Quote(
        "empirical-power",
        "and {} of last-layer-ML and\nReptile: they hold {} of the protocol's {} (method, seed, "
        "batching) parts",
        lambda r: (
            method_seeds(r, "last-layer-ml"),
            r["coverage"]["present"],
            r["coverage"]["of"],
        ),
    ),
    Quote("empirical-power", "{}", lambda r: (r["answer"],)),
    Quote(
        "empirical-power",
        "SR and LoRA-ML ran on\ntransformers {} for seeds 0-2 and, on a new VM, on {} for seeds "
        "3-4, so each of the\nprimary comparison's pairs shares a release; last-layer-ML and "
        "Reptile ran on {}, so the\nreport flags",
        lambda r: (
            *(software(r, ("sr", "lora-ml"), seeds) for seeds in ((0, 1, 2), (3, 4))),
            software(r, ("last-layer-ml", "reptile"), (0, 1, 2, 3, 4)),
        ),
    ),
    Quote(
        "empirical-power",
        "report flags the secondary pairs of {} as mixing releases.",
        lambda r: (
            # the report's own flag: the seeds whose parts ran on different releases
            re.search(r"The parts of (.+?) ran on different versions", power_software(r)).group(1),
        ),
    ),
    Quote(
        "transformers-check",
        "gave {} of {}\nrecords equal and {} of {} retrained encoders equal bit for bit",
        lambda c: (
            c["records"]["identical"],
            c["records"]["compared"],
            c["encoders"]["identical"],
            c["encoders"]["compared"],
        ),
    ),
    Quote(
        "transformers-check",
        "The two releases compute {}\nnumbers on these code paths",
        lambda c: (
            "the same" if c["identical"] and c["versions_differ"] == ["transformers"] else "other",
        ),
    ),
    Quote(
        "empirical-power",
        "Reptile) is answered in the\nsame setting, with {} of those two.",
        # one phrase where both methods have the same seeds; "A/B" (not in README) where not
        lambda r: ("/".join(sorted({method_seeds(r, m) for m in ("last-layer-ml", "reptile")})),),
    ),
    Quote("empirical-power", "and it\nsays:\n\n> {}\n", lambda r: (r["specific"],)),
    Quote(
        "empirical-power",
        "With {} seeds the one\nagainst last-layer-ML {}\nwith its interval over tasks: its "
        "seeds' means, {} points, scatter {}\nmore than the tasks' own noise",
        lambda r: seeds_alike(r, "last-layer-ml"),
    ),
    Quote(
        "empirical-power",
        "With {} seeds the one against Reptile {}\nwith its interval over tasks: its seeds' means, "
        "{} points, scatter {}\nmore than",
        lambda r: seeds_alike(r, "reptile"),
    ),
    Quote(
        "empirical-power",
        "2-core VM, {}-{} h each",
        lambda r: tuple(
            f"{p['wall_seconds'] / 3600:.1f}"
            for p in (
                min(_timed(r["parts"]), key=lambda p: p["wall_seconds"]),
                max(_timed(r["parts"]), key=lambda p: p["wall_seconds"]),
            )
        ),
    ),
    Quote(
        "empirical-power",
        "(per-seed means {} points)",
        lambda r: (points_list(primary_row(r)["crossed"]["seed_means"]),),
    ),
    Quote(
        "empirical-power",
        "seed-to-seed standard deviation is {} points\n(the seeds' mean square, {}, is below "
        "the residual's, {}:",
        lambda r: (
            f"{100 * primary_row(r)['crossed']['sd_seed']:.1f}",
            f"{primary_row(r)['crossed']['ms_seed']:.4f}",
            f"{primary_row(r)['crossed']['ms_error']:.4f}",
        ),
    ),
    Quote(
        "empirical-power",
        "the per-task differences\nhave a standard deviation of {} points, where POWER.md's "
        "variance model predicted {} for {}\nseeds; with the measured spread this design "
        "detects {} points with power 0.8",
        lambda r: (
            f"{100 * primary_row(r)['sd']:.1f}",
            f"{100 * primary_row(r)['sd_predicted']:.1f}",
            str(primary_row(r)["n_seeds"]),
            f"{100 * primary_row(r)['detectable']:.1f}",
        ),
    ),
    # ---- empirical (committed results of the cpu preset)
    Quote(
        "empirical",
        "its training and scoring stages took {} minutes a seed for SR and\nLoRA-ML together and "
        "{} minutes a seed for last-layer-ML and Reptile together",
        lambda r: tuple(
            str(round(stage_seconds(r, pair) / 60 / len(r["config"]["seeds"])))
            for pair in (("sr", "lora-ml"), ("last-layer-ml", "reptile"))
        ),
    ),
    *[
        Quote(
            "empirical",
            "| {} | {} % | {} % |",
            lambda r, m=method, name=label: (
                name,
                *(
                    "{:.1f} +- {:.1f}".format(100 * s["mean"], 100 * s["stderr"])
                    for scheme in ("lora", "head")
                    for s in r["summary"]
                    if s["method"] == m and s["scheme"] == scheme
                ),
            ),
        )
        for method, label in (
            ("sr", "SR"),
            ("lora-ml", "LoRA-ML-8"),
            ("last-layer-ml", "Last-layer-ML"),
            ("reptile", "Reptile"),
        )
    ],
    Quote(
        "empirical",
        "| SR | {} points ({} wins / {} losses / {} tie; paired t p = {}) | {} ({} / {} / {}; "
        "p = {}) |",
        lambda r: (*cpu_pair(r, "sr", "lora"), *cpu_pair(r, "sr", "head")),
    ),
    *[
        Quote(
            "empirical",
            f"| {label} | " + "{} ({} / {} / {}; p = {}) | " * 2,
            lambda r, m=method: (*cpu_pair(r, m, "lora"), *cpu_pair(r, m, "head")),
        )
        for method, label in (("last-layer-ml", "last-layer-ML"), ("reptile", "Reptile"))
    ],
    # Beyond the paper, covariance: unequal N_t
    Quote(
        "covariance",
        "A* recovered on {}/{} families and {} of {} random starts at zero loss, although the "
        "median of `max_t cond(S_t)` was {} (d = 8) and {} (d = 4)",
        lambda c: (
            unequal_sum(c, "recovered", "k"),
            unequal_sum(c, "recovered", "n"),
            unequal_sum(c, "random_starts_zero_loss", "k"),
            unequal_sum(c, "random_starts_zero_loss", "n"),
            *(f"{unequal(c, d, 'noiseless')['median_max_condition_S_t']:.0f}" for d in (8, 4)),
        ),
    ),
    Quote(
        "covariance",
        "SR's rank-k floor from the data-weighted SR solution is a median {}x (d = 8) and {}x",
        lambda c: tuple(
            f(unequal(c, d, "noiseless")["median_sr_floor_ratio_data_over_population"])
            for d in (8, 4)
        ),
    ),
    Quote(
        "covariance",
        "T = 3, k = 1, d = 8 and 4, {} families per size",
        lambda c: (unequal(c, 8, "noisy")["families"],),
    ),
    Quote(
        "covariance",
        "With noise s = {} and N_t = {} ({} data sets per family)",
        lambda c: (
            g(unequal(c, 8, "noisy")["noise_std"]),
            ", ".join(str(n) for n in unequal(c, 8, "noisy")["N_t"]),
            unequal(c, 8, "noisy")["draws"],
        ),
    ),
    Quote(
        "covariance",
        "measured over predicted (ratio of means) {} (d = 8) and {} (d = 4) for the toolkit's "
        "per-task means (w_t = 1), {} and {} for the pooled sum of squares",
        lambda c: tuple(
            f(unequal(c, d, "noisy")[w]["ratio_of_means"], 3)
            for w in ("task_weighted", "sample_weighted")
            for d in (8, 4)
        ),
    ),
    Quote(
        "covariance",
        "the equal-N formula at the mean N_t is {}x and {}x too low",
        lambda c: tuple(
            f(unequal(c, d, "noisy")["task_weighted_over_equal_N_formula_at_mean_N"])
            for d in (8, 4)
        ),
    ),
    Quote(
        "covariance",
        "lowers the error to {}x (predicted {}x) at d = 8 and {}x ({}x) at d = 4",
        lambda c: tuple(
            f(unequal(c, d, "noisy")["sample_over_task_error"][key])
            for d in (8, 4)
            for key in ("measured", "predicted")
        ),
    ),
]


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def load(source: str) -> Any:
    rel, _ = SOURCES[source]
    if source == "full-figure-times":  # compute_seconds of every committed full-protocol figure
        return {
            p.stem: json.loads(p.read_text())["compute_seconds"]
            for p in sorted((ROOT / "figures" / "output" / "full").glob("*.json"))
        }
    path = ROOT / rel
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    return json.loads(path.read_text())


def expected(quote: Quote) -> str:
    return quote.phrase.format(*quote.values(load(quote.source)))


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_source_is_committed_and_has_a_command(source: str):
    rel, command = SOURCES[source]
    path = ROOT / rel  # a file, or a folder of committed files (full-figure-times)
    present = path.is_file() or (path.is_dir() and any(path.glob("*.json")))
    assert present, f"{rel} is missing: write it with `{command}`"
    assert command


def test_readme_quotes_match_the_committed_data():
    readme = normalise(README.read_text())
    missing = []
    for q in QUOTES:
        where = f"[{q.source}: {SOURCES[q.source][0]}]"
        try:
            phrase = expected(q)
        except (KeyError, IndexError, ValueError) as err:  # the file lacks what the quote reads
            missing.append(f"{where} {q.phrase!r}: cannot read {err!r}")
            continue
        if normalise(phrase) not in readme:
            missing.append(f"{where} {phrase!r}")
    assert not missing, "README disagrees with the committed data:\n" + "\n".join(missing)


def test_readme_convex_table_is_the_committed_record():
    readme = normalise(README.read_text())
    rows = convex_rows(load("verify"))
    missing = [row for row in rows if normalise(row) not in readme]
    assert not missing, "convex table rows not in README:\n" + "\n".join(missing)


def test_readme_lists_every_verify_key_in_the_clis_order():
    """README's key list is PROFILES, the list ``loraml verify --help`` prints under ``--only``."""
    from loraml.theory.verify_cli import PROFILES

    text = README.read_text()
    start = text.index("The verify keys, in the order they run")
    listed = text[start : text.index("`--json` prints", start)]
    keys = re.findall(r"`([a-z0-9_]+)`", listed)
    assert keys == list(PROFILES)


def test_readme_names_the_command_of_every_source():
    readme = README.read_text()
    for source in {q.source for q in QUOTES}:
        rel, _ = SOURCES[source]
        folder = Path(rel).parent.as_posix() + "/"
        assert rel in readme or folder in readme, f"README quotes {source} but never names {rel}"


def test_a_drifted_number_is_caught():
    """The check can fail: a README with one count changed no longer holds the phrase."""
    quote = next(q for q in QUOTES if "LoRA-ML recovered A* on all" in q.phrase)
    phrase = expected(quote)
    readme = normalise(README.read_text())
    assert normalise(phrase) in readme
    n = convex_total(load("verify"), "lora_ml", 3)[1]
    assert normalise(phrase.replace(str(n), str(n - 10))) not in readme


@pytest.mark.parametrize("name", ["verify-seed0.json", "verify-seed2.json", "verify-quick.json"])
def test_every_committed_verify_record_holds_every_claim(name: str):
    record = json.loads((ROOT / "results" / name).read_text())
    claimed = {k: v for k, v in record.items() if isinstance(v, dict) and v["claimed"]}
    assert claimed and all(v["held"] is True for v in claimed.values())
    assert record["all_claims_held"] is True


def test_committed_cpu_paired_field_is_its_records_comparison():
    """``results/cpu``'s ``paired`` field, recomputed after the tie fix, is what its records
    give today (a user loading the file reads the README's tie counts)."""
    from loraml.empirical.report import lora_ml_comparisons

    r = json.loads((ROOT / "empirical/results/cpu/results.json").read_text())
    assert r["paired"] == lora_ml_comparisons(r["records"])

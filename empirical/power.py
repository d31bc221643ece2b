"""The powered offline protocol (``empirical/results/POWER.md``): its design arithmetic and the
report of its run directories, however much of the protocol they hold so far.

Design. The unit is an unseen task t; d_t is LoRA-ML's minus another method's hits@1 on t,
averaged over S seeds. POWER.md models Var(d_t) = s_b^2 + s_w^2 / S, s_b the spread of the true
per-task difference between tasks and s_w the seed-to-seed spread of one task's difference,
estimated from a tasks x seeds table of differences by :func:`variance_components`. The paired
t-test over n tasks has power 0.8 at alpha 0.05 (two-sided) against the true mean difference
:func:`detectable_effect` returns. That model leaves out one thing: a seed's retraining shifts
every task's difference alike, a variation the spread over tasks does not see. With two seeds
or more, :func:`crossed_interval` gives the interval with tasks and seeds both random
(POWER.md's amendment).

Report. :func:`power_report` combines the run directories (:func:`loraml.empirical.report.
analysis`), says which of the protocol's (method, seed, batching) parts they hold, states the
primary comparison's answer from its 95 % intervals, and checks the design against the run: the
measured standard deviation of the per-task differences beside the one POWER.md's variance
model predicted for the seeds compared (:data:`DESIGN_COMPONENTS`). ``loraml empirical analysis
DIR... --out OUT`` writes it as ``analysis.json``, ``results.md`` and ``results.png``.

Only numpy and scipy (and matplotlib for the plot) are needed: the report reads committed
``results.json`` files, no torch.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from loraml.empirical.report import (
    BATCHING_FREE,
    METHOD_NAMES,
    PRIMARY,
    _method_label,
    _scheme_label,
    analysis,
    analysis_table,
    difference_table,
    merge_runs,
    run_wall_seconds,
    save_figure,
    share_batching_free,
    version_history,
    write_text,
)

#: The protocol's methods, seeds and batching modes (``--preset power``; a test checks them
#: against :data:`loraml.empirical.config.PRESETS` and ``DEFAULT_SEEDS``).
POWER_METHODS = ("sr", "lora-ml", "last-layer-ml", "reptile")
POWER_SEEDS = (0, 1, 2, 3, 4)
POWER_MODES = ("per-task", "interleaved")
#: The settings that define the protocol (``config.json`` keys; a test checks them against the
#: ``power`` preset): a part whose config differs in one of them is not one of its parts.
POWER_SETTINGS: dict[str, Any] = {
    "model": "minilm",
    "data": "convai2",
    "n_retrain": 10,
    "n_test": 40,
    "n_candidates": 20,
    "max_length": 48,
    "max_examples_per_task": 32,
    "eval_dialogues": 3,
    "epochs": 2,
    "ft_epochs": 3,
    "lr": 1e-4,
    "ft_lr": 5e-4,
    "lora_rank": 8,
    "ranks": [8],
    "head_only": True,
}

#: POWER.md's variance components (s_b, s_w) in points of hits@1, per (baseline, scheme, rank):
#: :func:`variance_components` of the committed ``empirical/results/cpu/results.json`` (10 tasks,
#: 3 seeds, K = 8; a test recomputes them from that file).
DESIGN_COMPONENTS: dict[tuple[str, str, int], tuple[float, float]] = {
    ("sr", "lora", 8): (9.3, 12.8),
    ("sr", "head", 0): (13.1, 14.7),
    ("last-layer-ml", "lora", 8): (2.5, 10.7),
    ("last-layer-ml", "head", 0): (2.7, 11.4),
    ("reptile", "lora", 8): (7.6, 9.4),
    ("reptile", "head", 0): (1.5, 10.4),
}
#: The size of POWER.md's Holm family: every (baseline, fine-tuning) of
#: :data:`DESIGN_COMPONENTS` in each batching mode, less the primary comparison (11).
HOLM_FAMILY = len(DESIGN_COMPONENTS) * len(POWER_MODES) - 1


def detectable_effect(sd: float, n: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean difference a two-sided paired t-test over ``n`` units detects.

    With per-unit differences of standard deviation ``sd``, the t statistic is noncentral t with
    n - 1 degrees of freedom and noncentrality delta sqrt(n) / sd; the returned delta solves
    P(T > t_{1 - alpha/2, n-1}) = power (the far tail, below -t, is left out: it adds under
    1e-6 for the effects met here). This is POWER.md's "detectable" column.

    Parameters
    ----------
    sd : float
        Standard deviation of one unit's difference (sqrt(s_b^2 + s_w^2 / S) in POWER.md).
    n : int
        Number of units (unseen tasks), at least 2.
    alpha : float
        Two-sided level.
    power : float
        Probability of rejecting at the returned effect.

    Returns
    -------
    float
        The effect, in the units of ``sd``.

    Examples
    --------
    >>> round(detectable_effect(1.0, 40), 3)  # about (1.96 + 0.84) / sqrt(40), a bit more
    0.454
    """
    if n < 2 or not sd > 0:
        raise ValueError(f"need n >= 2 units and sd > 0, got n = {n}, sd = {sd}")
    return _detectable(sd / math.sqrt(n), n - 1, alpha, power)


def _detectable(se: float, df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The delta with P(T > t_{1 - alpha/2, df}) = power, T noncentral t (df, delta / se)."""
    from scipy import optimize, stats

    crit = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(delta: float) -> float:
        return float(stats.nct.sf(crit, df, delta / se)) - power

    return float(optimize.brentq(shortfall, 0.0, 20 * se * (crit + 5)))


def variance_components(
    records: list[dict[str, Any]], a: str, b: str, scheme: str, rank: int
) -> dict[str, float | int]:
    """POWER.md's s_b and s_w of ``a`` minus ``b`` from a tasks x seeds table of differences.

    d_{t,s} = hits@1 of ``a`` minus ``b`` on task t with seed s (both methods trained with that
    seed); s_w^2 = the mean over tasks of the sample variance of d_{t,.} over seeds; s_b^2 = the
    sample variance of the task means minus s_w^2 / S (clipped at 0), since a task mean of S
    seeds carries s_w^2 / S of seed noise. Needs at least 2 seeds and 2 tasks.

    Returns
    -------
    dict
        ``s_b``, ``s_w`` (hits@1 as a fraction), ``n_tasks``, ``n_seeds``.
    """
    tasks, seeds, d = difference_table(records, a, b, scheme, rank)
    if len(seeds) < 2 or len(tasks) < 2:
        raise ValueError(f"need 2 seeds and 2 tasks of both {a} and {b}")
    s_w2 = float(d.var(axis=1, ddof=1).mean())
    s_b2 = max(float(d.mean(axis=1).var(ddof=1)) - s_w2 / len(seeds), 0.0)
    return {
        "s_b": math.sqrt(s_b2),
        "s_w": math.sqrt(s_w2),
        "n_tasks": len(tasks),
        "n_seeds": len(seeds),
    }


def crossed_interval(d: np.ndarray, *, level: float = 0.95) -> dict[str, Any]:
    """Mean difference with tasks *and* seeds random: the interval that counts retraining luck.

    The paired t-test over tasks (POWER.md's primary test) treats the seed-averaged d_t as
    independent. But a seed's retraining shifts every task's difference alike, so that shift
    is absent from the spread over tasks and from the t interval. The two-way model with one
    observation per cell,

        d_{t,s} = mu + u_s + v_t + e_{t,s},  u ~ (0, s_u^2), v ~ (0, s_v^2), e ~ (0, s_e^2),

    has Var(mean d) = s_u^2 / S + s_v^2 / T + s_e^2 / (S T). With the mean squares of seeds,
    tasks and residual, E MS_S = s_e^2 + T s_u^2, E MS_T = s_e^2 + S s_v^2, E MS_E = s_e^2, so
    (MS_S + MS_T - MS_E) / (S T) estimates it without bias (Searle, Casella & McCulloch,
    *Variance Components*, 1992, ch. 4). A negative seed component estimate (MS_S < MS_E) is
    set to 0, which leaves MS_T / (S T): exactly the paired t-test's variance of the mean of
    the seed-averaged d_t, with T - 1 degrees of freedom. Otherwise the degrees of freedom are
    Satterthwaite's, (MS_S + MS_T - MS_E)^2 / (MS_S^2/(S-1) + MS_T^2/(T-1) +
    MS_E^2/((S-1)(T-1))): with few seeds and a large seed component they approach S - 1,
    and the interval widens accordingly. It is approximate with few seeds: in a simulation
    with 40 tasks and standard deviations 6 (seed), 10 (task) and 13 (residual) points, a
    nominal 95 % interval covered the true mean about 89 % of the time with 2 seeds and 94 %
    with 5, where the paired t interval over tasks covered 64 % and 74 % (the test
    ``test_crossed_interval_covers_where_the_interval_over_tasks_does_not`` repeats it).

    Parameters
    ----------
    d : ndarray of shape (T, S)
        Differences per task (rows) and seed (columns), T >= 2, S >= 2.
    level : float
        Confidence level of the two-sided interval.

    Returns
    -------
    dict
        ``mean``, ``se``, ``df``, ``ci95`` (the ``level`` interval), ``p`` (two-sided, mean
        0), ``detectable`` (the true mean this test finds with power 0.8 at alpha 0.05, were
        ``se`` and ``df`` exact; None when ``se`` is 0), ``sd_seed`` (the estimate of s_u, 0
        when clipped), ``seed_means`` (each seed's mean over tasks) and ``ms_seed``,
        ``ms_task``, ``ms_error``.

    Examples
    --------
    >>> d = np.array([[0.1, 0.3], [0.0, 0.2], [0.2, 0.4]])  # seed 1 is 0.2 above seed 0
    >>> r = crossed_interval(d)
    >>> round(r["sd_seed"], 3), round(r["df"], 2)  # the shift is all seed: under 2 df
    (0.141, 1.68)
    """
    from scipy import stats

    d = np.asarray(d, dtype=float)
    n_tasks, n_seeds = d.shape
    if n_tasks < 2 or n_seeds < 2:
        raise ValueError(f"need at least 2 tasks and 2 seeds, got a {n_tasks} x {n_seeds} table")
    mean = float(d.mean())
    task_m, seed_m = d.mean(axis=1), d.mean(axis=0)
    ms_t = n_seeds * float(((task_m - mean) ** 2).sum()) / (n_tasks - 1)
    ms_s = n_tasks * float(((seed_m - mean) ** 2).sum()) / (n_seeds - 1)
    resid = d - task_m[:, None] - seed_m[None, :] + mean
    ms_e = float((resid**2).sum()) / ((n_tasks - 1) * (n_seeds - 1))
    if ms_s > ms_e:
        combined = ms_s + ms_t - ms_e
        df = combined**2 / (
            ms_s**2 / (n_seeds - 1)
            + ms_t**2 / (n_tasks - 1)
            + ms_e**2 / ((n_tasks - 1) * (n_seeds - 1))
        )
    else:
        combined, df = ms_t, float(n_tasks - 1)
    se = math.sqrt(combined / (n_tasks * n_seeds))
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    p = float(2 * stats.t.sf(abs(mean) / se, df)) if se > 0 else None
    return {
        "mean": mean,
        "se": se,
        "df": float(df),
        "ci95": [mean - half, mean + half],
        "p": p,
        "detectable": _detectable(se, df) if se > 0 else None,
        "sd_seed": math.sqrt(max(ms_s - ms_e, 0.0) / n_tasks),
        "seed_means": [float(x) for x in seed_m],
        "ms_seed": ms_s,
        "ms_task": ms_t,
        "ms_error": ms_e,
    }


def power_report(runs: list[dict[str, Any]], names: list[str] | None = None) -> dict[str, Any]:
    """The powered protocol's result from the ``results.json`` of its run directories.

    Parameters
    ----------
    runs : list of dict
        ``results.json`` contents (parts split by seeds or methods, either batching mode).
    names : list of str, optional
        A name per run (its directory), for the report.

    Returns
    -------
    dict
        ``parts`` (each run's batching, methods, seeds, tasks), ``coverage`` (how many of the
        protocol's (method, seed, batching) parts are ``present``, of them ``shared`` between
        batching modes, :func:`~loraml.empirical.report.share_batching_free`, and how many
        parts lie ``outside_protocol``), ``rows`` (:func:`analysis`' rows,
        each with its ``tasks``, per-task ``diffs``, ``n_seeds``, the measured ``sd`` of the
        differences, the ``sd`` POWER.md's model predicted for that many seeds, and the effect
        detectable with the measured sd), ``answer`` (a sentence on the primary comparison,
        or None when it is absent) and ``specific`` (:func:`specific_answer`: whether the gain
        is specific to LoRA adapters, or None).
    """
    names = names or [f"run {i + 1}" for i in range(len(runs))]
    parts = []
    present: set[tuple[str, int, str]] = set()
    outside: set[tuple[str, int, str]] = set()
    for name, results in zip(names, runs, strict=True):
        cfg = results["config"]
        batching = cfg.get("batching", "interleaved")
        have = sorted({(r["method"], r["seed"]) for r in results["records"]})
        differ = sorted(k for k, v in POWER_SETTINGS.items() if cfg.get(k) != v)
        history = version_history(results, SOFTWARE) if "versions" in results else {}
        software = {k: " then ".join(history.get(k, [])) or None for k in SOFTWARE}
        (outside if differ else present).update((m, s, batching) for m, s in have)
        parts.append(
            {
                "name": name,
                "batching": batching,
                "methods": sorted({m for m, _ in have}, key=_method_order),
                "seeds": sorted({s for _, s in have}),
                "n_test_tasks": len({r["task"] for r in results["records"]}),
                "n_candidates": cfg.get("n_candidates"),
                "model": cfg.get("model"),
                "device": cfg.get("device_used"),
                "wall_seconds": run_wall_seconds(results),
                "software": software,
                "software_mixed": any(len(v) > 1 for v in history.values()),
                "differs_from_protocol": differ,
            }
        )
    protocol = {(m, s, b) for m in POWER_METHODS for s in POWER_SEEDS for b in POWER_MODES}
    rows = analysis(runs)
    records_of = {
        r["config"].get("batching", "interleaved"): r["records"]
        for r in share_batching_free(merge_runs(runs))
    }
    # a part lent to a batching mode (Reptile's, :func:`share_batching_free`) counts for it
    # when the part it stands for is one of the protocol's
    shared = {
        (r["method"], r["seed"], batching)
        for batching, records in records_of.items()
        for r in records
        if "shared_from" in r and (r["method"], r["seed"], r["shared_from"]) in present
    }
    for row in rows:
        records = records_of[row["batching"]]
        tasks, seeds, table = difference_table(
            records, row["a"], row["b"], row["scheme"], row["rank"]
        )
        diffs = table.mean(axis=1)  # the paired t's per-task differences (paired seeds only)
        sd = float(diffs.std(ddof=1)) if len(diffs) > 1 else None
        design = DESIGN_COMPONENTS.get((row["b"], row["scheme"], row["rank"]))
        row.update(
            tasks=tasks,
            diffs=[float(x) for x in diffs],
            n_seeds=len(seeds),
            sd=sd,
            sd_predicted=(
                None
                if design is None
                else math.sqrt(design[0] ** 2 + design[1] ** 2 / len(seeds)) / 100
            ),
            detectable=(detectable_effect(sd, len(diffs)) if sd is not None and sd > 0 else None),
            crossed=crossed_interval(table) if min(table.shape) >= 2 else None,
        )
    return {
        "parts": parts,
        "coverage": {
            "present": len((present | shared) & protocol),
            "shared": len(shared & protocol),
            "of": len(protocol),
            "outside_protocol": len(outside | (present - protocol)),
        },
        "remaining": [list(p) for p in remaining_parts((present | shared) & protocol)],
        "rows": rows,
        "answer": _answer(next((r for r in rows if r["role"] == "primary"), None)),
        "specific": specific_answer(rows),
    }


#: The libraries whose versions the report lists per part (they compute the numbers).
SOFTWARE = ("torch", "transformers", "peft")


def software_lines(parts: list[dict[str, Any]]) -> list[str]:
    """The libraries the parts ran on, and whether every comparison is within one set of them.

    Parts made on different machines may have run on different library versions (a fresh
    environment takes the newest allowed release). A paired difference compares two parts of
    one seed; where all parts of each seed ran on the same versions (both batching modes, since
    Reptile's part of one mode stands for the other's), a version change between seeds is one
    more seed-to-seed difference (inside the "Seeds random too" interval), and the sentence
    says so; where a seed's parts differ, or a part was resumed under other versions
    (``software_mixed``; its versions read "a then b"), it names them.

    Parameters
    ----------
    parts : list of dict
        :func:`power_report`'s ``parts`` (``name``, ``seeds``, ``batching``, ``software``,
        optionally ``software_mixed``).

    Returns
    -------
    list of str
        One paragraph (a single line); empty when no part records its versions.

    Examples
    --------
    >>> parts = [
    ...     {"name": "a-s0", "seeds": [0], "batching": "per-task",
    ...      "software": {"torch": "2.13.0", "transformers": "5.24.0", "peft": "0.21.2"}},
    ...     {"name": "b-s0", "seeds": [0], "batching": "per-task",
    ...      "software": {"torch": "2.13.0", "transformers": "5.24.0", "peft": "0.21.2"}},
    ...     {"name": "a-s1", "seeds": [1], "batching": "per-task",
    ...      "software": {"torch": "2.13.0", "transformers": "5.25.0", "peft": "0.21.2"}},
    ... ]
    >>> print(software_lines(parts)[0])  # doctest: +NORMALIZE_WHITESPACE
    Software: torch 2.13.0 and peft 0.21.2 in every part; transformers 5.24.0 (a-s0, b-s0) and
    5.25.0 (a-s1). Each seed's parts ran on the same versions, so every paired difference
    compares like with like; the change between seeds is one more seed-to-seed difference.
    """
    known = [p for p in parts if any(p.get("software", {}).values())]
    if not known:
        return []
    same, differ = [], []
    for lib in SOFTWARE:
        by_version: dict[str, list[str]] = {}
        for p in known:
            by_version.setdefault(str(p["software"].get(lib)), []).append(p["name"])
        if len(by_version) == 1:
            same.append(f"{lib} {next(iter(by_version))}")
        else:
            differ.append(
                f"{lib} "
                + " and ".join(f"{v} ({', '.join(names)})" for v, names in by_version.items())
            )
    text = "Software: " + _and(same) + (" in every part" if same else "")
    text += ("; " if same and differ else "") + "; ".join(differ) + "."
    resumed = [p["name"] for p in known if p.get("software_mixed")]
    if resumed:
        text += (
            f" {_and(resumed)} "
            + (
                "was resumed under other versions: its"
                if len(resumed) == 1
                else "were resumed under other versions: their"
            )
            + " own records mix them."
        )
    if not differ and not resumed:
        return [text]
    # a seed compares like with like where its parts share one set of versions, none mixed;
    # by seed across batching modes too: Reptile's part of one mode stands for the other's
    groups: dict[int, set[tuple[Any, ...]]] = {}
    for p in known:
        for seed in p["seeds"]:
            groups.setdefault(seed, set()).add(tuple(p["software"].get(k) for k in SOFTWARE))
    in_resumed = {s for p in known if p.get("software_mixed") for s in p["seeds"]}
    mixed = [f"seed {s}" for s, v in sorted(groups.items()) if len(v) > 1 or s in in_resumed]
    if mixed:
        text += (
            f" The parts of {_and(mixed)} ran on different versions: a paired difference "
            "between two of them mixes the versions. Whether the versions compute alike is "
            "a separate check: run a cut-down part on each and compare the records with "
            "`loraml empirical compare` (POWER.md, Progress)."
        )
    else:
        text += (
            " Each seed's parts ran on the same versions, so every paired difference compares "
            "like with like; the change between seeds is one more seed-to-seed difference."
        )
    return [text]


def _and(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(items) < 2:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def remaining_parts(covered: set[tuple[str, int, str]]) -> list[tuple[str, int, str]]:
    """The protocol's (method, seed, batching) parts not in ``covered``, in POWER.md's order.

    The order is POWER.md's ("Progress"): per-task SR and LoRA-ML seed by seed (the primary
    comparison), then per-task last-layer-ML and Reptile, then the interleaved mode. Reptile's
    interleaved parts are left out: its per-task part stands for them
    (:func:`loraml.empirical.report.share_batching_free`).

    Examples
    --------
    >>> done = {(m, s, "per-task") for m in ("sr", "lora-ml") for s in (0, 1)}
    >>> remaining_parts(done)[:3]
    [('sr', 2, 'per-task'), ('lora-ml', 2, 'per-task'), ('sr', 3, 'per-task')]
    >>> len(remaining_parts(done))
    31
    """

    against, _, _, first_mode = PRIMARY

    def stage(method: str, batching: str) -> int:
        if batching != first_mode:
            return 2
        return 0 if method in ("lora-ml", against) else 1

    missing = [
        (m, s, b)
        for m in POWER_METHODS
        for s in POWER_SEEDS
        for b in POWER_MODES
        if (m, s, b) not in covered and not (m in BATCHING_FREE and b != first_mode)
    ]
    return sorted(missing, key=lambda p: (stage(p[0], p[2]), p[1], _method_order(p[0])))


def remaining_commands(remaining: Sequence[Sequence[Any]]) -> list[str]:
    """The command of each (method, seed, batching) part in ``remaining``, one a part.

    Each runs one part on one thread into ``runs/power-<batching>-<method>-s<seed>`` and
    resumes there if stopped; the report's "Still to run" lists these commands, and
    ``loraml empirical analysis DIR... --remaining FILE`` writes them one a line, so that
    ``xargs -P 2 -I CMD sh -c CMD < FILE`` runs them two at a time.

    Parameters
    ----------
    remaining : sequence of (method, seed, batching)
        Parts as :func:`remaining_parts` (or ``analysis.json``'s ``remaining``) gives them.

    Returns
    -------
    list of str

    Examples
    --------
    >>> print(remaining_commands([("reptile", 3, "per-task")])[0])
    ... # doctest: +NORMALIZE_WHITESPACE
    loraml empirical run --preset power --batching per-task --methods reptile --seeds 3
    --threads 1 --out runs/power-per-task-reptile-s3
    """
    return [
        f"loraml empirical run --preset power --batching {batching} --methods {method} "
        f"--seeds {seed} --threads 1 --out runs/power-{batching}-{method}-s{seed}"
        for method, seed, batching in remaining
    ]


def _method_order(method: str) -> int:
    return POWER_METHODS.index(method) if method in POWER_METHODS else len(POWER_METHODS)


def _verdict(lo: float, hi: float) -> str:
    """What a 95 % interval (points, LoRA-ML minus SR) says."""
    if lo > 0:
        return f"LoRA-ML is better, by at least {lo:.1f} points at 95 % confidence."
    if hi < 0:
        return f"SR is better, by at least {-hi:.1f} points at 95 % confidence."
    return (
        "no difference is shown; the interval rules out a gain of LoRA-ML larger than "
        f"{hi:.1f} points and a loss larger than {-lo:.1f}."
    )


def _count(n: int, noun: str) -> str:
    """``1 seed``, ``5 seeds``: ``n`` and ``noun``, plural unless ``n`` is 1."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _answer(row: dict[str, Any] | None) -> str | None:
    """The primary comparison in plain sentences, read off its 95 % intervals.

    First the paired t interval over tasks (POWER.md's primary test), then, with two seeds or
    more, the interval with seeds random too (:func:`crossed_interval`), which is the one that
    speaks of the methods rather than of these retrainings; with one seed, the caveat that
    nothing yet measures the retraining's luck.
    """
    if row is None or row["ci95"] is None:
        return None
    lo, hi = (100 * x for x in row["ci95"])
    head = (
        f"LoRA-ML minus SR (rank-8 LoRA fine-tuning, per-task batching) is "
        f"{100 * row['mean_diff']:+.1f} points of hits@1 [95 % CI {lo:+.1f}, {hi:+.1f}] over "
        f"{row['n_tasks']} unseen tasks and {_count(row['n_seeds'], 'seed')} "
        f"(paired t p = {row['p_t']:.3g}): "
    )
    crossed = row.get("crossed")
    if crossed is None:
        tail = (
            " With one seed the interval is over tasks, given one retraining of each method: the "
            "seed-to-seed variation of the retrained encoder, common to all tasks, is not in it."
        )
    elif crossed["p"] is None:  # a table without spread: no interval to state
        tail = ""
    else:
        c_lo, c_hi = (100 * x for x in crossed["ci95"])
        tail = (
            " That interval is over tasks; the seed-to-seed variation of the retrained encoders "
            "shifts all tasks alike and is not in it. With tasks and the "
            f"{row['n_seeds']} seeds both random (two-way model, {crossed['df']:.1f} degrees "
            f"of freedom) the interval is [{c_lo:+.1f}, {c_hi:+.1f}] (p = {crossed['p']:.3g}): "
            + _verdict(c_lo, c_hi)
        )
    return head + _verdict(lo, hi) + tail


#: The baselines whose comparisons answer POWER.md's second question, "is the gain specific to
#: LoRA adapters?": the other meta-learning retrainings.
SPECIFIC_BASELINES = ("last-layer-ml", "reptile")


def specific_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows POWER.md's second question reads: LoRA-ML against each of
    :data:`SPECIFIC_BASELINES` in the primary comparison's setting
    (:data:`~loraml.empirical.report.PRIMARY`: rank-8 LoRA fine-tuning, per-task batching).

    Examples
    --------
    >>> rows = [dict(b=b, scheme=s, rank=k, batching="per-task")
    ...         for b in ("sr", "reptile") for s, k in (("lora", 8), ("head", 0))]
    >>> [(r["b"], r["scheme"]) for r in specific_rows(rows)]
    [('reptile', 'lora')]
    """
    _, scheme, rank, batching = PRIMARY
    return [
        r
        for r in rows
        if r["b"] in SPECIFIC_BASELINES
        and (r["scheme"], r["rank"], r["batching"]) == (scheme, rank, batching)
    ]


def design_detectable(row: dict[str, Any]) -> float | None:
    """The design's detectable effect for ``row``: :func:`detectable_effect` of POWER.md's
    predicted spread (``sd_predicted``) at the row's number of tasks; None without a prediction.
    It is the bound :func:`specific_answer`'s "No" states.

    Examples
    --------
    >>> design_detectable(dict(sd_predicted=0.08, n_tasks=40)) == detectable_effect(0.08, 40)
    True
    >>> design_detectable(dict(sd_predicted=None, n_tasks=40)) is None
    True
    """
    sd = row.get("sd_predicted")
    return detectable_effect(sd, row["n_tasks"]) if sd else None


def specific_answer(rows: list[dict[str, Any]]) -> str | None:
    """POWER.md's second question, read off the rows by the rule it fixed before the run.

    "Specific to LoRA" is answered by LoRA-ML against last-layer-ML and against Reptile, in
    the primary comparison's setting (:data:`~loraml.empirical.report.PRIMARY`: rank-8 LoRA
    fine-tuning, per-task batching): a significant gain over both (Holm-adjusted p < 0.05,
    mean above 0) says yes; both 95 % intervals inside +-(the detectable effect) say that any
    LoRA-specific gain is smaller than that. The detectable effect is the design's: POWER.md's
    variance model for the seeds compared (``sd_predicted``, :data:`DESIGN_COMPONENTS`) through
    :func:`detectable_effect`, so it is 2.5 and 3.9 points at 40 tasks and 5 seeds, as that
    file's table states. Where neither holds, the answer says it is not decided. Intervals and
    p-values are the paired t's over tasks (the designed test); the intervals with seeds random
    too (:func:`crossed_interval`) follow where there are two seeds or more (with the gain or
    loss beyond the detectable effect that they leave open, where a "No" rests on the
    intervals over tasks alone), and a caveat where fewer seeds than the protocol's are in or
    fewer secondary comparisons than its Holm family's :data:`HOLM_FAMILY`.

    Parameters
    ----------
    rows : list of dict
        :func:`power_report`'s rows (with ``sd_predicted``, ``n_seeds`` and ``crossed``).

    Returns
    -------
    str or None
        The answer in a few sentences; None where a row against one of
        :data:`SPECIFIC_BASELINES` in the primary setting is missing or has no interval.

    Examples
    --------
    >>> def row(b, mean, lo, hi, p):
    ...     return dict(b=b, scheme="lora", rank=8, batching="per-task", mean_diff=mean,
    ...                 ci95=[lo, hi], p_holm=p, n_tasks=40, n_seeds=5, sd_predicted=0.08,
    ...                 crossed=None)
    >>> text = specific_answer([row("last-layer-ml", 0.004, -0.01, 0.018, 1.0),
    ...                         row("reptile", 0.002, -0.012, 0.016, 1.0)])
    >>> text.split(": ")[0]
    'No'
    """
    _, _, rank, batching = PRIMARY
    found = {r["b"]: r for r in specific_rows(rows) if r.get("ci95") is not None}
    if len(found) < len(SPECIFIC_BASELINES):
        return None
    ordered = [found[b] for b in SPECIFIC_BASELINES]
    detect = [design_detectable(r) for r in ordered]
    pairs = list(zip(ordered, detect, strict=True))
    gain = all(
        r["p_holm"] is not None and r["p_holm"] < 0.05 and r["mean_diff"] > 0 for r in ordered
    )
    small = all(d is not None and -d < r["ci95"][0] and r["ci95"][1] < d for r, d in pairs)
    each = "; ".join(
        f"against {METHOD_NAMES[r['b']]} {100 * r['mean_diff']:+.1f} points "
        f"[95 % CI {100 * r['ci95'][0]:+.1f}, {100 * r['ci95'][1]:+.1f}], Holm p "
        + ("-" if r["p_holm"] is None else f"{r['p_holm']:.2g}")
        + ("" if d is None else f", detectable by design {100 * d:.1f}")
        for r, d in pairs
    )
    setting = f"rank-{rank} LoRA fine-tuning, {batching} batching"
    if gain:
        verdict = (
            "Yes: LoRA-ML beats both other meta-learning retrainings significantly, so its gain "
            "is specific to LoRA adapters in POWER.md's sense"
        )
    elif small:
        bounds = " and ".join(
            f"{100 * d:.1f} points over {METHOD_NAMES[r['b']]}" for r, d in pairs if d is not None
        )
        verdict = (
            "No: both intervals lie inside plus or minus the design's detectable effect, so "
            f"any gain specific to LoRA adapters is smaller than {bounds}"
        )
    else:
        verdict = (
            "Not decided: LoRA-ML neither beats both significantly nor has both intervals "
            "inside plus or minus the design's detectable effect (POWER.md's two outcomes)"
        )
    text = f"{verdict} ({setting}; {each})."
    worse = [
        METHOD_NAMES[r["b"]]
        for r in ordered
        if r["p_holm"] is not None and r["p_holm"] < 0.05 and r["mean_diff"] < 0
    ]
    if worse:  # the rule asks about a gain; a significant loss is said as well
        text += f" LoRA-ML is significantly worse than {' and '.join(worse)}."
    crossed = [r["crossed"] for r in ordered]
    if all(c is not None and c.get("p") is not None for c in crossed):
        text += " With seeds random too the intervals are " + " and ".join(
            f"[{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}]" for c in crossed
        )
        if gain and any(c["ci95"][0] <= 0 for c in crossed):
            text += ", which do not all exclude 0: the gain may be these retrainings' luck"
        elif small and any(
            d is None or not -d < c["ci95"][0] < c["ci95"][1] < d
            for c, d in zip(crossed, detect, strict=True)
        ):
            text += ", which do not all lie inside the detectable effect"
            beyond = []  # per baseline, the gain and the loss the wider interval admits
            for r, c, d in zip(ordered, crossed, detect, strict=True):
                assert d is not None  # "small" holds only where every bound is known
                lo, hi = c["ci95"]
                sides = [
                    f"a {w} of up to {100 * x:.1f}"
                    for w, x in (("gain", hi), ("loss", -lo))
                    if x >= d
                ]
                if sides:
                    beyond.append(f"{' or '.join(sides)} points against {METHOD_NAMES[r['b']]}")
            if beyond:
                text += (
                    ": with the retrainings counted as random, "
                    + " and ".join(beyond)
                    + " cannot be ruled out"
                )
        text += "."
    seeds = min(r["n_seeds"] for r in ordered)
    if seeds < len(POWER_SEEDS):
        text += f" Provisional: {seeds} of the protocol's {len(POWER_SEEDS)} seeds are in."
    family = sum(r.get("role") == "secondary" for r in rows)
    if family < HOLM_FAMILY:
        # Adding a p-value to a Holm family never lowers an adjusted one: each p keeps its
        # multiplier m - j + 1 or gains 1 (m grows by one; its rank j grows by one only where
        # the new p is smaller), and the running maximum gains a term.
        text += (
            f" Holm's correction spans the {_count(family, 'secondary comparison')} present, "
            f"of the protocol's {HOLM_FAMILY}; the "
            "others can only raise the adjusted p-values (the intervals do not depend on them)."
        )
    return text


def render_power_markdown(report: dict[str, Any]) -> str:
    """``results.md`` of the powered protocol: parts, coverage, answer, table, design check."""
    rows = report["rows"]
    cover = report["coverage"]
    lines = [
        "# The powered offline protocol: LoRA-ML against SR, last-layer-ML and Reptile",
        "",
        "Written by `loraml empirical analysis DIR [DIR ...] --out OUT` from the run "
        "directories' `results.json`; the protocol and its power are in "
        "`empirical/results/POWER.md`.",
        "",
        "| Part | batching | methods | seeds | unseen tasks | K | model | device | wall (h) "
        "| differs from the protocol in |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in report["parts"]:
        wall = "-" if p["wall_seconds"] is None else f"{p['wall_seconds'] / 3600:.2f}"
        lines.append(
            f"| {p['name']} | {p['batching']} | "
            f"{', '.join(METHOD_NAMES.get(m, m) for m in p['methods'])} | "
            f"{', '.join(map(str, p['seeds']))} | {p['n_test_tasks']} | {p['n_candidates']} | "
            f"{p['model']} | {p['device']} | {wall} | "
            f"{', '.join(p['differs_from_protocol']) or 'nothing'} |"
        )
    lines += [
        "",
        "Wall time: the whole part over every invocation (a run killed and resumed counts "
        "both, `wall.json`)"
        + (
            "; `-` where a part was resumed in a directory whose earlier invocations "
            "predate that record."
            if any(p["wall_seconds"] is None for p in report["parts"])
            else "."
        ),
        "",
        *[x for line in software_lines(report["parts"]) for x in (line, "")],
        f"These hold {cover['present']} of the protocol's {cover['of']} (method, seed, "
        f"batching) parts ({len(POWER_METHODS)} methods x {len(POWER_SEEDS)} seeds x "
        f"{len(POWER_MODES)} batching modes)"
        + (f", and {cover['outside_protocol']} outside it." if cover["outside_protocol"] else ".")
        + (
            f" {cover['shared']} of them are Reptile's parts of one batching mode standing for "
            "the other: its retraining ignores the batching (identical weights and hits, "
            "`tests/test_empirical_power.py`)."
            if cover.get("shared")
            else ""
        ),
        "",
        *_remaining_lines(report.get("remaining", [])),
        "## Answer",
        "",
        report["answer"] or "The primary comparison is not among these runs.",
        "",
        "Is the gain specific to LoRA adapters? "
        + (
            report.get("specific")
            or "Not yet answerable: LoRA-ML against last-layer-ML and against Reptile, in "
            "the primary comparison's setting, are not both among these runs."
        ),
        "",
        "## Every comparison",
        "",
        "A positive difference favours LoRA-ML; each task's difference is averaged over the "
        "seeds both methods have (a seed one of them lacks waits for its pair); last "
        "fine-tuning epoch.",
        "",
    ]
    if rows:
        cfg = {"lora_rank": POWER_SETTINGS["lora_rank"]}
        lines += analysis_table(rows, cfg)
        lines += ["", "## Seeds random too", ""] + _crossed_lines(rows, cfg)
        lines += [
            "",
            "## Design check",
            "",
            "The standard deviation of the per-task differences, measured, beside the one "
            "POWER.md's variance model sqrt(s_b^2 + s_w^2 / S) predicted for the S seeds "
            "compared (estimated from the 10-task, K = 8 run before the data fixes), and the "
            "effect this design detects with power 0.8 at the measured spread.",
            "",
            "| Batching | Against | Fine-tuning | tasks | seeds | sd measured | sd predicted "
            "| detectable (points) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['batching']} | {_method_label(r['b'], cfg)} | "
                f"{_scheme_label(r['scheme'], r['rank'])} | {r['n_tasks']} | {r['n_seeds']} | "
                f"{_points(r['sd'])} | {_points(r['sd_predicted'])} | "
                f"{_points(r['detectable'])} |"
            )
    lines += ["", "![per-task differences](results.png)", ""]
    return "\n".join(lines)


def _remaining_lines(remaining: list[list[Any]]) -> list[str]:
    """What is left to run, as commands, in POWER.md's order (two at a time on two cores)."""
    if not remaining:
        return []
    lines = [
        f"Still to run, {len(remaining)} parts in POWER.md's order (one part a command; "
        "commit each folder's `results.*` as `empirical/results/power/<batching>-<method>-"
        "s<seed>/` when it finishes):",
        "",
        "```bash",
    ]
    return lines + remaining_commands(remaining) + ["```", ""]


def _crossed_lines(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> list[str]:
    """The section on the seed-to-seed variation the paired t interval over tasks leaves out."""
    lines = [
        "A seed's retraining shifts every task's difference alike, so the paired t interval "
        "above, over tasks, leaves that variation out. Here each seed's mean difference over "
        "the tasks, the estimated seed-to-seed standard deviation of that shift, and the mean "
        "difference's 95 % interval with tasks and seeds both random (two-way model, "
        "Satterthwaite degrees of freedom; `loraml.empirical.power.crossed_interval`), with "
        "the effect that test detects with power 0.8 at the measured spreads. With "
        "few seeds it is approximate: in its docstring's simulation a nominal 95 % interval "
        "covered about 89 % of the time with 2 seeds and 94 % with 5, where the interval over "
        "tasks covered 64 % and 74 %.",
        "",
    ]
    crossed = [r for r in rows if r.get("crossed") is not None]
    if not crossed:
        return lines + ["It needs two seeds or more of both methods; these runs have one."]
    lines += [
        "| Batching | Against | Fine-tuning | tasks | seeds | each seed's mean (points) "
        "| seed sd | df | 95 % CI | p | detectable |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in crossed:
        c = r["crossed"]
        lo, hi = (100 * x for x in c["ci95"])
        lines.append(
            f"| {r['batching']} | {_method_label(r['b'], cfg)} | "
            f"{_scheme_label(r['scheme'], r['rank'])} | {r['n_tasks']} | {r['n_seeds']} | "
            f"{', '.join(f'{100 * m:+.1f}' for m in c['seed_means'])} | "
            f"{_points(c['sd_seed'])} | {c['df']:.1f} | [{lo:+.1f}, {hi:+.1f}] | "
            f"{'-' if c['p'] is None else format(c['p'], '.3g')} | {_points(c['detectable'])} |"
        )
    return lines


def _points(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def render_power_plot(report: dict[str, Any], path: Path) -> None:
    """Each comparison's per-task differences (dots) with their mean and 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    fig, ax = plt.subplots(figsize=(2.2 + 1.1 * max(len(rows), 1), 3.6))
    jitter = np.random.default_rng(0)
    for i, r in enumerate(rows):
        diffs = 100 * np.asarray(r["diffs"])
        x = i + jitter.uniform(-0.18, 0.18, diffs.size)
        ax.plot(x, diffs, "o", ms=3, alpha=0.45, color="C0" if r["role"] == "primary" else "C7")
        if r["ci95"] is not None:
            mean, (lo, hi) = 100 * r["mean_diff"], (100 * c for c in r["ci95"])
            ax.errorbar(
                i + 0.3, mean, yerr=[[mean - lo], [hi - mean]], fmt="s", color="k", capsize=4
            )
        if r.get("crossed") is not None:
            mean, (lo, hi) = 100 * r["crossed"]["mean"], (100 * c for c in r["crossed"]["ci95"])
            ax.errorbar(
                i + 0.42,
                mean,
                yerr=[[mean - lo], [hi - mean]],
                fmt="D",
                mfc="white",
                color="C3",
                capsize=4,
            )
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xticks(
        range(len(rows)),
        [
            f"vs {METHOD_NAMES.get(r['b'], r['b'])}\n{_scheme_label(r['scheme'], r['rank'])}"
            f"\n{r['batching']}"
            for r in rows
        ],
        fontsize=7,
    )
    ax.set_ylabel("LoRA-ML minus other, hits@1 (points)")
    n = max((r["n_tasks"] for r in rows), default=0)
    ax.set_title(
        f"{n} unseen tasks: per-task differences (dots), mean and 95 % CI over tasks\n"
        "(squares) and with seeds random too (open diamonds, two seeds or more)",
        fontsize=8,
    )
    fig.tight_layout()
    save_figure(fig, path)


def write_power_report(report: dict[str, Any], out: str | os.PathLike) -> None:
    """Write ``analysis.json``, ``results.md`` and ``results.png`` into the folder ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "analysis.json", json.dumps(report, indent=2) + "\n")
    write_text(out / "results.md", render_power_markdown(report))
    render_power_plot(report, out / "results.png")

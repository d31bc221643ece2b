"""Results of the language experiment: ``results.json``, the Table-1-like ``results.md``, a plot.

``results.json`` holds everything (config, versions, every hits@1 record, summaries, the paired
comparison, timings); ``results.md`` and ``results.png`` are pure functions of it, so
``loraml empirical report DIR`` rebuilds them identically.

Summaries. For a (method, scheme, rank) and a seed, the score is the mean hits@1 over the unseen
test tasks (the paper's "average hits@1 over 10 test tasks"); the table gives the mean and the
standard error (sample standard deviation / sqrt(n)) of that score over seeds.

Paired comparison of LoRA-ML against each other method, per fine-tuning scheme: the units are
the test tasks, each task's hits@1 averaged over seeds; we report the mean difference d-bar with
its 95 % confidence interval d-bar +- t_{0.975, n-1} s / sqrt(n) (s the sample standard
deviation of the n per-task differences: the interval the paired t-test inverts), a paired
t-test (``scipy.stats.ttest_rel``) and a two-sided sign test (``scipy.stats.binomtest`` on wins
among non-tied tasks).

The powered protocol (``empirical/results/POWER.md``) names one primary comparison,
:data:`PRIMARY` (LoRA-ML against SR, rank-8 LoRA fine-tuning, per-task batching), and treats
every other comparison of its run directories as secondary, with Holm-adjusted p-values
(:func:`holm`); :func:`analysis` builds that table from one or more ``results.json`` (last
fine-tuning epoch), ``loraml empirical analysis DIR [DIR ...]`` prints it, and ``results.md``
shows the same columns for its own run.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

METHOD_NAMES = {
    "sr": "SR",
    "lora-ml": "LoRA-ML",
    "last-layer-ml": "Last-layer-ML",
    "reptile": "Reptile",
}


def versions() -> dict[str, str]:
    """Versions of Python, the platform and the libraries the run used."""
    import importlib.metadata as md

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("loraml", "torch", "transformers", "peft", "numpy", "scipy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "absent"
    try:
        import torch

        out["cuda_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
        out["torch_threads"] = str(torch.get_num_threads())
    except ImportError:  # pragma: no cover
        pass
    return out


def _mean_se(values: list[float]) -> tuple[float, float | None]:
    arr = np.asarray(values, dtype=float)
    se = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else None
    return float(arr.mean()), se


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (method, scheme, rank): per-seed mean over tasks, then mean and standard error."""
    by_key: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        by_key[(r["method"], r["scheme"], r["rank"])][r["seed"]].append(r["hits_at_1"])
    rows = []
    for (method, scheme, rank), seeds in by_key.items():
        per_seed = {s: float(np.mean(v)) for s, v in sorted(seeds.items())}
        mean, se = _mean_se(list(per_seed.values()))
        rows.append(
            {
                "method": method,
                "scheme": scheme,
                "rank": rank,
                "mean": mean,
                "stderr": se,
                "n_seeds": len(per_seed),
                "n_tasks": len(next(iter(seeds.values()))),
                "per_seed": {str(s): v for s, v in per_seed.items()},
            }
        )
    return rows


def best_epoch_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each record's best fine-tuning epoch on its own test dialogues (an optimistic selection).

    The released results script reported, beside the last epoch, each task's best epoch as
    measured on the same held-out dialogues it is scored on: the choice uses the test data, so
    it overstates what a user would get. Records without ``hits_by_epoch`` (written before
    fine-tuning evaluated every epoch) are left out.
    """
    out = []
    for r in records:
        by_epoch = r.get("hits_by_epoch")
        if not by_epoch or not r.get("n_eval"):
            continue
        best = max(by_epoch)
        out.append(
            {
                **r,
                "hits": best,
                "hits_at_1": best / r["n_eval"],
                "best_epoch": by_epoch.index(best) + 1,
            }
        )
    return out


def difference_table(
    records: list[dict[str, Any]], a: str, b: str, scheme: str, rank: int
) -> tuple[list[str], list[int], np.ndarray]:
    """The tasks x seeds table d_{t,s} = hits@1 of ``a`` minus ``b`` on task t with seed s.

    Only the seeds both methods have, and the tasks that have all of those seeds, enter.

    Returns
    -------
    tasks : list of str
    seeds : list of int
    d : ndarray of shape (len(tasks), len(seeds))
        Hits@1 differences as fractions.

    Examples
    --------
    >>> rec = [dict(method=m, scheme="lora", rank=8, task="t", seed=0, hits_at_1=h)
    ...        for m, h in (("lora-ml", 0.5), ("sr", 0.25))]
    >>> difference_table(rec, "lora-ml", "sr", "lora", 8)[2].tolist()
    [[0.25]]
    """
    table: dict[str, dict[int, dict[str, float]]] = {}
    for r in records:
        if (r["scheme"], r["rank"]) == (scheme, rank) and r["method"] in (a, b):
            table.setdefault(r["task"], {}).setdefault(r["seed"], {})[r["method"]] = r["hits_at_1"]
    seeds = sorted({s for by in table.values() for s, m in by.items() if len(m) == 2})
    tasks = sorted(t for t, by in table.items() if all(len(by.get(s, {})) == 2 for s in seeds))
    d = np.array([[table[t][s][a] - table[t][s][b] for s in seeds] for t in tasks], dtype=float)
    return tasks, seeds, d.reshape(len(tasks), len(seeds))


#: Differences of hits@1 within this of 0 are ties (:func:`paired_comparison`).
_TIE = 1e-9


def paired_comparison(
    records: list[dict[str, Any]], a: str = "lora-ml", b: str = "sr"
) -> list[dict[str, Any]]:
    """Method ``a`` against ``b`` across test tasks, per fine-tuning (scheme, rank).

    Each task's difference is averaged over the seeds both methods have
    (:func:`difference_table`), so a seed one method lacks, a part still running, does not
    make the comparison unpaired; ``n_tasks`` counts the tasks with all those seeds.
    """
    from scipy import stats

    out = []
    for scheme, rank in dict.fromkeys((r["scheme"], r["rank"]) for r in records):
        tasks, _, table = difference_table(records, a, b, scheme, rank)
        if not table.size:
            continue
        diff = table.mean(axis=1)
        # A tie is a difference within rounding of 0: hits@1 is k / n on a task's n held-out
        # examples (the same for both methods and every seed), so a nonzero seed-mean
        # difference is at least 1 / (S n), far above _TIE for any realistic S and n, while
        # seeds that cancel (+1/n, -1/n) leave about 1e-17, which `diff < 0` counted as a loss.
        wins, losses = int((diff > _TIE).sum()), int((diff < -_TIE).sum())
        t_stat = p_t = None
        ci: list[float] | None = None
        if len(tasks) > 1 and np.ptp(diff) > _TIE:
            res = stats.ttest_1samp(diff, 0.0)  # = ttest_rel(a, b): the same d = a - b
            t_stat, p_t = _finite(res.statistic), _finite(res.pvalue)
            half = stats.t.ppf(0.975, len(tasks) - 1) * diff.std(ddof=1) / math.sqrt(len(tasks))
            ci = [float(diff.mean() - half), float(diff.mean() + half)]
        p_sign = float(stats.binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else None
        out.append(
            {
                "a": a,
                "b": b,
                "scheme": scheme,
                "rank": rank,
                "n_tasks": len(tasks),
                "mean_diff": float(diff.mean()) if len(tasks) else None,
                "ci95": ci,
                "t": t_stat,
                "p_t": p_t,
                "wins": wins,
                "losses": losses,
                "ties": len(tasks) - wins - losses,
                "p_sign": p_sign,
            }
        )
    return out


def throughput(timing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Seconds, examples and examples/s per (stage, method, rank), summed over seeds."""
    acc: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0])
    for t in timing:
        key = (t["stage"], t["method"], t.get("rank", 0))
        acc[key][0] += t["seconds"]
        acc[key][1] += t["examples"]
    return [
        {
            "stage": s,
            "method": m,
            "rank": r,
            "seconds": sec,
            "examples": n,
            "examples_per_s": n / sec if sec > 0 else None,
        }
        for (s, m, r), (sec, n) in acc.items()
    ]


#: The methods LoRA-ML is compared with, in this order, where a run has them.
_BASELINES = ("sr", "last-layer-ml", "reptile")


def lora_ml_comparisons(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """LoRA-ML against each baseline the records hold (in :data:`_BASELINES`' order), per
    fine-tuning: :func:`paired_comparison`'s rows, as ``results.json``'s ``paired`` keeps them.

    Parameters
    ----------
    records : list of dict
        hits@1 records (``method``, ``scheme``, ``rank``, ``task``, ``seed``, ``hits_at_1``).

    Returns
    -------
    list of dict
        One row per (baseline present, fine-tuning scheme and rank).

    Examples
    --------
    >>> recs = [dict(method=m, scheme="lora", rank=8, task=f"t{t}", seed=0, hits_at_1=h)
    ...         for t in range(3) for m, h in (("sr", 0.2), ("lora-ml", 0.3 + 0.1 * t))]
    >>> [(p["b"], p["wins"]) for p in lora_ml_comparisons(recs)]
    [('sr', 3)]
    """
    methods = {r["method"] for r in records}
    return [p for b in _BASELINES if b in methods for p in paired_comparison(records, "lora-ml", b)]


#: The primary comparison of the powered protocol (``empirical/results/POWER.md``): LoRA-ML
#: against this method, fine-tuning (scheme, rank), retraining batching.
PRIMARY = ("sr", "lora", 8, "per-task")


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None: not in the family).

    With the m p-values sorted, p_(1) <= ... <= p_(m), the adjusted value of p_(i) is
    max over j <= i of min(1, (m - j + 1) p_(j)) (Holm 1979): rejecting where it is <= alpha
    keeps the family-wise error rate at alpha under any dependence between the tests.

    Parameters
    ----------
    pvalues : list of float or None
        The family's p-values; None entries are left out of the family.

    Returns
    -------
    list of float or None
        The adjusted p-values, in the input's order (None where the input is None).

    Examples
    --------
    >>> holm([0.01, 0.04, 0.03, None])  # 3 x 0.01; max(3 x 0.01, 2 x 0.03); then max(.., 0.04)
    [0.03, 0.06, 0.06, None]
    """
    order = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(order)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for j, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - j) * p))
        out[i] = running
    return out


#: ``config`` keys in which run directories of one protocol may differ: the split itself (seeds,
#: methods) and where it ran (paths, device). Everything else must agree to be combined.
SPLIT_KEYS = frozenset(
    {"seeds", "methods", "device", "device_used", "data_path", "test_data_path"}
    | {"persona_map", "test_persona_map"}
)


def _config_differences(a: dict[str, Any], b: dict[str, Any], ignore: frozenset[str]) -> list[str]:
    """The ``config`` keys, outside ``ignore``, in which two runs differ (sorted)."""
    return sorted(k for k in (set(a) | set(b)) - ignore if a.get(k) != b.get(k))


def merge_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Combine the results of run directories that split one protocol by seeds or methods.

    A powered run is too long for one machine session (about 47 CPU hours per batching mode
    with ``--preset power``): it can be run as several directories, each with some ``--seeds``
    or ``--methods``, whose committed ``results.json`` are combined here. Runs of the same
    batching mode are merged when their configs agree outside :data:`SPLIT_KEYS`; their records
    are concatenated and the seeds and methods united.

    Parameters
    ----------
    runs : list of dict
        The content of ``results.json`` files.

    Returns
    -------
    list of dict
        One results object per batching mode, in first-seen order.

    Raises
    ------
    ValueError
        Two runs of one batching mode differ in another setting, or both hold the same
        (method, seed): combining them would count that pair twice.
    """
    merged: dict[str, dict[str, Any]] = {}
    for results in runs:
        cfg = results["config"]
        batching = cfg.get("batching", "interleaved")
        if batching not in merged:
            merged[batching] = {**results, "config": dict(cfg), "records": list(results["records"])}
            continue
        into = merged[batching]
        differ = _config_differences(cfg, into["config"], SPLIT_KEYS)
        if differ:
            raise ValueError(
                f"run directories of batching '{batching}' differ in {', '.join(differ)}: "
                "only runs that split one protocol by --seeds or --methods can be combined"
            )
        have = {(r["method"], r["seed"]) for r in into["records"]}
        twice = sorted(have & {(r["method"], r["seed"]) for r in results["records"]})
        if twice:
            method, seed = twice[0]
            raise ValueError(
                f"method {method} with seed {seed} is in two run directories of batching "
                f"'{batching}': give each (method, seed) once"
            )
        into["records"] = into["records"] + list(results["records"])
        for key in ("seeds", "methods"):
            if key in cfg or key in into["config"]:
                values = list(into["config"].get(key, [])) + list(cfg.get(key, []))
                into["config"][key] = list(dict.fromkeys(values))
    return list(merged.values())


#: Methods whose retraining does not read ``batching``: Reptile's rounds visit one task at a time
#: in both modes (``tests/test_empirical_power.py`` checks that its weights and hits are
#: identical), so its records of one batching mode stand for the other's.
BATCHING_FREE = ("reptile",)


def share_batching_free(merged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lend :data:`BATCHING_FREE` methods' records to the batching modes that lack them.

    POWER.md's saving: the second batching mode need not rerun Reptile (a quarter of its cost).
    A mode's results receive another mode's records of such a (method, seed) when it has none
    of its own and the two configs agree outside :data:`SPLIT_KEYS` and ``batching``; each lent
    record carries ``shared_from``, the batching mode it was run in.

    Parameters
    ----------
    merged : list of dict
        :func:`merge_runs`' output: one results object per batching mode.

    Returns
    -------
    list of dict
        The same results objects, copied, with the lent records appended.

    Examples
    --------
    >>> rec = dict(method="reptile", seed=0, scheme="head", rank=0, task="t", hits_at_1=0.5)
    >>> runs = [{"config": {"batching": "per-task"}, "records": [rec]},
    ...         {"config": {"batching": "interleaved"}, "records": []}]
    >>> share_batching_free(runs)[1]["records"][0]["shared_from"]
    'per-task'
    """
    ignore = SPLIT_KEYS | {"batching"}
    out = [{**m, "records": list(m["records"])} for m in merged]
    for i, into in enumerate(out):
        own = {(r["method"], r["seed"]) for r in merged[i]["records"]}
        for j, source in enumerate(merged):
            if i == j or _config_differences(into["config"], source["config"], ignore):
                continue
            lent = [
                {**r, "shared_from": source["config"].get("batching", "interleaved")}
                for r in source["records"]
                if r["method"] in BATCHING_FREE
                and (r["method"], r["seed"]) not in own
                and "shared_from" not in r
            ]
            into["records"] += lent
            own |= {(r["method"], r["seed"]) for r in lent}
    return out


def analysis(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The powered protocol's table: every paired comparison of LoRA-ML in ``runs``.

    Parameters
    ----------
    runs : list of dict
        The content of one or more ``results.json`` (e.g. both batching modes; runs of one mode
        that split the protocol by seeds or methods are combined first, :func:`merge_runs`,
        and Reptile's records stand for a mode that lacks them, :func:`share_batching_free`);
        each run's comparisons are recomputed from its records (last fine-tuning epoch), so
        results files written before the confidence interval existed are analysed alike.

    Returns
    -------
    list of dict
        :func:`paired_comparison`'s rows with ``batching`` (the run's), ``role``
        (``"primary"`` for :data:`PRIMARY`, else ``"secondary"``) and ``p_holm``: the paired
        t-test p-value Holm-adjusted over the secondary comparisons of all ``runs`` (the primary
        is tested alone at its own level and keeps ``p_holm = p_t``).
    """
    rows: list[dict[str, Any]] = []
    for results in share_batching_free(merge_runs(runs)):
        batching = results["config"].get("batching", "interleaved")
        for p in lora_ml_comparisons(results["records"]):
            key = (p["b"], p["scheme"], p["rank"], batching)
            role = "primary" if key == PRIMARY else "secondary"
            rows.append({**p, "batching": batching, "role": role})
    secondary = [r["p_t"] if r["role"] == "secondary" else None for r in rows]
    for r, adjusted in zip(rows, holm(secondary), strict=True):
        r["p_holm"] = r["p_t"] if r["role"] == "primary" else adjusted
    return rows


def build_results(
    config: dict[str, Any],
    records: list[dict[str, Any]],
    timing: list[dict[str, Any]],
    wall_seconds: float,
    *,
    wall_total: float | None = None,
    invocations: int = 1,
    invocation_versions: list[dict[str, str] | None] | None = None,
) -> dict[str, Any]:
    """Assemble the content of ``results.json``.

    Parameters
    ----------
    config : dict
        The run's settings (with seeds and task names).
    records : list of dict
        One per (method, scheme, rank, task, seed): ``hits_at_1``, ``hits``, ``n_eval``, ...
    timing : list of dict
        Per stage (``retrain``, ``finetune-lora``, ``finetune-head``), method and seed:
        ``seconds`` and ``examples`` (training examples processed).
    wall_seconds : float
        Wall time of the invocation that wrote the results (a resumed run: only its own part).
    wall_total : float or None
        Wall time over all the run's invocations (:class:`loraml.empirical.state.WallLedger`);
        None where earlier invocations were not recorded.
    invocations : int
        How many invocations ``wall_total`` sums.
    invocation_versions : list of (dict or None), optional
        Each invocation's library versions, in order, this one last (None for an invocation
        recorded without them); default: this invocation's only. :func:`version_history` reads
        them.
    """
    best = best_epoch_records(records)
    current = versions()
    return {
        "config": config,
        "versions": current,
        "invocation_versions": invocation_versions or [current],
        "records": records,
        "summary": summarize(records),
        # optimistic: each task's best fine-tuning epoch chosen on its test dialogues
        "summary_best_epoch": summarize(best) if len(best) == len(records) else [],
        "paired": lora_ml_comparisons(records),
        "throughput": throughput(timing),
        # retraining_selection="best": the epoch each (method, seed) kept, hits@1 per epoch
        "retraining_selection": [
            {k: t[k] for k in ("method", "seed", "selected_epoch", "epoch_hits")}
            for t in timing
            if t["stage"] == "retrain" and "selected_epoch" in t
        ],
        "wall_seconds": wall_seconds,
        "wall_seconds_total": wall_total,
        "invocations": invocations,
    }


def _scheme_label(scheme: str, rank: int) -> str:
    return f"LoRA r={rank}" if scheme == "lora" else "Last layer"


def _method_label(method: str, config: dict[str, Any]) -> str:
    name = METHOD_NAMES.get(method, method)
    return f"{name}-{config.get('lora_rank')}" if method == "lora-ml" else name


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _num(x: float | None, fmt: str = ".3g") -> str:
    return "-" if x is None else format(x, fmt)


def render_markdown(results: dict[str, Any]) -> str:
    """``results.md``: the Table-1-like table, the paired comparison and the throughput."""
    cfg = results["config"]
    summary = results["summary"]
    schemes = sorted(
        {(r["scheme"], r["rank"]) for r in summary}, key=lambda s: (s[0] == "head", s[1])
    )
    methods = [m for m in cfg["methods"] if any(r["method"] == m for r in summary)]
    cell = {(r["method"], r["scheme"], r["rank"]): r for r in summary}
    lines = [
        "# Language experiment: hits@1 on unseen tasks after fine-tuning",
        "",
        f"Model `{cfg['model']}`, data `{cfg.get('data_used', cfg['data'])}`, "
        f"{len(cfg['tasks']['retrain'])} retraining "
        f"tasks, {len(cfg['tasks']['test'])} unseen test tasks, K = {cfg['n_candidates']} "
        f"candidates (chance {100 / cfg['n_candidates']:.1f} %), max length "
        f"{cfg['max_length_used']} tokens, {cfg['epochs']} retraining epochs, {cfg['ft_epochs']} "
        f"fine-tuning epochs, seeds {cfg['seeds']}, device {cfg['device_used']}.",
        "",
        _protocol_line(cfg),
        "",
        "Hits@1 in % (mean over test tasks; mean +- standard error over seeds).",
        "",
        "| Retraining | " + " | ".join(_scheme_label(*s) for s in schemes) + " |",
        "|---|" + "---|" * len(schemes),
    ]
    lines += _table_rows(methods, schemes, cell, cfg)
    best = results.get("summary_best_epoch") or []
    if best:
        best_cell = {(r["method"], r["scheme"], r["rank"]): r for r in best}
        lines += [
            "",
            "Optimistic, for comparison with numbers selected this way: each task's *best* "
            "fine-tuning epoch, chosen on the same test dialogues it is scored on (the released "
            "results script reports this beside the last epoch); the table above (last epoch) "
            "is the result.",
            "",
            "| Retraining (best epoch) | " + " | ".join(_scheme_label(*s) for s in schemes) + " |",
            "|---|" + "---|" * len(schemes),
        ]
        lines += _table_rows(methods, schemes, best_cell, cfg)
    selected = results.get("retraining_selection") or []
    if selected:
        lines += [
            "",
            "Retraining epoch used (best hits@1 on the retraining tasks' held-out dialogues): "
            + ", ".join(
                f"{_method_label(t['method'], cfg)} seed {t['seed']}: {t['selected_epoch']}"
                for t in selected
            )
            + ".",
        ]
    rows = analysis([results]) if results["paired"] and results.get("records") else []
    if rows:
        lines += [
            "",
            "LoRA-ML against each other retraining method across test tasks (each task averaged "
            "over seeds; a positive difference favours LoRA-ML; last fine-tuning epoch):",
            "",
            *analysis_table(rows, cfg, with_batching=False),
        ]
    lines += [
        "",
        "Training throughput (summed over seeds):",
        "",
        "| Stage | Method | seconds | examples | examples/s |",
        "|---|---|---|---|---|",
    ]
    for t in results["throughput"]:
        stage = t["stage"] + (f" r={t['rank']}" if t["stage"] == "finetune-lora" else "")
        lines.append(
            f"| {stage} | {_method_label(t['method'], cfg)} | {t['seconds']:.1f} | "
            f"{t['examples']} | {_num(t['examples_per_s'], '.2f')} |"
        )
    history = version_history(results, ("torch", "transformers", "peft", "python"))
    used = {lib: " then ".join(vs) for lib, vs in history.items()}
    mixed = [lib for lib, vs in history.items() if len(vs) > 1]
    resumed = (
        f" The run was resumed under other versions of {', '.join(mixed)}: its records mix them."
        if mixed
        else ""
    )
    lines += [
        "",
        f"torch {used['torch']}, transformers {used['transformers']}, peft "
        f"{used['peft']}, Python {used['python']}; {_wall_sentence(results)}{resumed}",
        "",
    ]
    return "\n".join(lines)


def version_history(results: dict[str, Any], libs: Sequence[str]) -> dict[str, list[str]]:
    """The versions of each library a run's invocations used, in order of first use.

    A run killed and resumed on another machine may have computed its records on more than one
    version of a library; one version in each list means every recorded invocation used the
    same. Invocations recorded without versions (``wall.json`` entries that predate the field)
    are not known and not counted; the invocation that wrote the results always is.

    Parameters
    ----------
    results : dict
        The content of ``results.json``.
    libs : sequence of str
        The libraries to list (keys of :func:`versions`).

    Returns
    -------
    dict of str to list of str

    Examples
    --------
    >>> res = {"versions": {"torch": "2.13.0"},
    ...        "invocation_versions": [None, {"torch": "2.12.1"}, {"torch": "2.13.0"}]}
    >>> version_history(res, ["torch"])
    {'torch': ['2.12.1', '2.13.0']}
    """
    seen = [v for v in results.get("invocation_versions", []) if v] + [results["versions"]]
    out: dict[str, list[str]] = {}
    for lib in libs:
        out[lib] = list(dict.fromkeys(str(v[lib]) for v in seen if v.get(lib) is not None))
    return out


def run_wall_seconds(results: dict[str, Any]) -> float | None:
    """Wall seconds the whole run cost: ``wall_seconds_total`` (all invocations), None where
    earlier invocations were not recorded, and for results written before the ledger existed
    ``wall_seconds`` (the invocation that wrote them)."""
    if "wall_seconds_total" in results:
        total = results["wall_seconds_total"]
        return None if total is None else float(total)
    return float(results["wall_seconds"])


def _wall_sentence(results: dict[str, Any]) -> str:
    last = f"{results['wall_seconds']:.0f} s"
    if "wall_seconds_total" not in results:
        return f"wall time of the last invocation {last}."
    n = results.get("invocations", 1)
    total = results["wall_seconds_total"]
    if total is None:
        return (
            f"wall time of the last invocation {last}; earlier invocations' wall time was not "
            "recorded (the run directory predates `wall.json`)."
        )
    if n == 1:
        return f"wall time {total:.0f} s."
    return f"wall time {total:.0f} s over {n} invocations (the last {last})."


def analysis_table(
    rows: list[dict[str, Any]], cfg: dict[str, Any], *, with_batching: bool = True
) -> list[str]:
    """:func:`analysis`'s rows as a markdown table and a note on the Holm family.

    Parameters
    ----------
    rows : list of dict
        :func:`analysis`'s result.
    cfg : dict
        A run's ``config`` (for the LoRA-ML label's rank).
    with_batching : bool
        Show each row's batching mode (several run directories).

    Returns
    -------
    list of str
        The table's lines, a blank line and the note.
    """
    head = "| Batching " if with_batching else ""
    lines = [
        head + "| Against | Fine-tuning | tasks | mean difference (points) [95 % CI] | "
        "wins / losses / ties | paired t (p) | sign test p | Holm p |",
        ("|---" if with_batching else "") + "|---|---|---|---|---|---|---|---|",
    ]
    for p in rows:
        t = "-" if p["t"] is None else f"{p['t']:.2f} ({_num(p['p_t'])})"
        ci = p.get("ci95")
        interval = "" if ci is None else f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"
        holm_p = "primary" if p["role"] == "primary" else _num(p["p_holm"])
        lines.append(
            (f"| {p['batching']} " if with_batching else "")
            + f"| {_method_label(p['b'], cfg)} | {_scheme_label(p['scheme'], p['rank'])} | "
            f"{p['n_tasks']} | "
            f"{_num(None if p['mean_diff'] is None else 100 * p['mean_diff'], '+.1f')}"
            f"{interval} | {p['wins']} / {p['losses']} / {p['ties']} | {t} | "
            f"{_num(p['p_sign'])} | {holm_p} |"
        )
    n_secondary = sum(p["role"] == "secondary" and p["p_t"] is not None for p in rows)
    against, scheme, rank, batching = PRIMARY
    primary = (
        f"the primary comparison (LoRA-ML against {METHOD_NAMES[against]}, "
        f"{_scheme_label(scheme, rank)}, {batching} batching) "
        + (
            "is tested alone"
            if any(p["role"] == "primary" for p in rows)
            else f"is not {'among these runs' if with_batching else 'in this run'}"
        )
    )
    lines += [
        "",
        f"Holm p: the paired t p-value Holm-adjusted over the {n_secondary} secondary "
        f"comparisons {'here' if with_batching else 'of this run'}; {primary}"
        + (
            "."
            if with_batching
            else "; the powered protocol's family spans both batching "
            "modes: `loraml empirical analysis DIR DIR`."
        ),
    ]
    return lines


def _protocol_line(cfg: dict[str, Any]) -> str:
    """The protocol settings of a run (a results file written before a setting existed used
    the value given here as its default)."""
    clip = cfg.get("grad_clip", 1.0)
    excluded = cfg.get("exclude_tasks") or []
    return (
        f"Protocol: {cfg.get('batching', 'interleaved')} retraining batches, weight decay "
        f"{cfg.get('weight_decay', 0.0):g}, gradient clipping "
        f"{'none' if not clip else format(clip, 'g')}, fine-tuning decay horizon "
        f"{cfg.get('ft_decay_horizon', 1.0):g} x steps, retraining epoch kept: "
        f"{cfg.get('retrain_selection', 'last')}, excluded tasks: "
        f"{', '.join(excluded) if excluded else 'none'}."
    )


def _table_rows(
    methods: list[str],
    schemes: list[tuple[str, int]],
    cell: dict[tuple, dict[str, Any]],
    cfg: dict[str, Any],
) -> list[str]:
    lines = []
    for m in methods:
        cells = []
        for s in schemes:
            r = cell.get((m, *s))
            if r is None:
                cells.append("-")
            elif r["stderr"] is None:
                cells.append(_pct(r["mean"]))
            else:
                cells.append(f"{_pct(r['mean'])} +- {_pct(r['stderr'])}")
        lines.append(f"| {_method_label(m, cfg)} | " + " | ".join(cells) + " |")
    return lines


def render_plot(results: dict[str, Any], path: Path) -> None:
    """Grouped bars: hits@1 per fine-tuning scheme, one bar per retraining method (+- s.e.)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, summary = results["config"], results["summary"]
    schemes = sorted(
        {(r["scheme"], r["rank"]) for r in summary}, key=lambda s: (s[0] == "head", s[1])
    )
    methods = [m for m in cfg["methods"] if any(r["method"] == m for r in summary)]
    cell = {(r["method"], r["scheme"], r["rank"]): r for r in summary}
    fig, ax = plt.subplots(figsize=(2.8 + 1.4 * len(schemes), 3.2))
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(schemes))
    for j, m in enumerate(methods):
        rows = [cell.get((m, *s)) for s in schemes]
        means = [100 * r["mean"] if r else np.nan for r in rows]
        errs = [100 * r["stderr"] if r and r["stderr"] is not None else 0.0 for r in rows]
        ax.bar(
            x + (j - (len(methods) - 1) / 2) * width,
            means,
            width,
            yerr=errs,
            capsize=3,
            label=_method_label(m, cfg),
        )
    ax.axhline(100 / cfg["n_candidates"], color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xticks(x, [_scheme_label(*s) for s in schemes])
    ax.set_ylabel("hits@1 on unseen tasks (%)")
    ax.set_title(f"{cfg['model']} / {cfg.get('data_used', cfg['data'])}", fontsize=9)
    # outside the axes, to the right: bars and error bars stay uncovered however many methods
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig: Any, path: Path) -> None:
    """Save a matplotlib figure as PNG atomically (:func:`loraml.theory.io.atomic_write`), close
    it, and leave no PNG metadata that varies between runs."""
    import matplotlib.pyplot as plt

    from loraml.theory.io import atomic_write

    try:
        atomic_write(
            path, lambda fh: fig.savefig(fh, format="png", dpi=120, metadata={"Software": None})
        )
    finally:
        plt.close(fig)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`loraml.theory.io.atomic_write`)."""
    from loraml.theory.io import atomic_write

    atomic_write(path, lambda fh: fh.write(text.encode()))


def write_results(results: dict[str, Any], out: str | os.PathLike) -> None:
    """Write ``results.json``, ``results.md`` and ``results.png`` into ``out`` (atomically)."""
    out = Path(out)
    write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    rebuild(out)


def rebuild(out: str | os.PathLike) -> Path:
    """Rebuild ``results.md`` and ``results.png`` from ``out/results.json``; return the md path.

    Raises
    ------
    ValueError
        When ``out`` has no readable ``results.json``.
    """
    out = Path(out)
    path = out / "results.json"
    results = load_results(out)
    try:
        text = render_markdown(results)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        detail = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise ValueError(
            f"{path} is malformed ({detail[:200]}): not a results file of 'loraml empirical run'"
        ) from None
    from loraml.theory.io import OutputPathError

    md = out / "results.md"
    try:
        write_text(md, text)
        render_plot(results, out / "results.png")
    except OutputPathError as err:
        raise ValueError(f"{out}: cannot write the report ({err})") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise ValueError(f"{path}: cannot plot it ({type(err).__name__}: {err})") from None
    return md


def load_results(out: str | os.PathLike) -> dict[str, Any]:
    """The content of ``out/results.json``, checked to be a results object.

    Raises
    ------
    ValueError
        One line naming the file: absent, unreadable, not JSON, lacking a results key, or
        holding one (method, scheme, rank, task, seed) record twice
        (:func:`repeated_records`).
    """
    path = Path(out) / "results.json"
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ValueError(
            f"{path} does not exist: give a run directory of 'loraml empirical run'"
        ) from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    except OSError as err:
        raise ValueError(f"{path} cannot be read ({err.strerror or err})") from None
    if not isinstance(results, dict):
        raise ValueError(f"{path} holds a {type(results).__name__}, not a results object")
    for key in ("config", "summary", "paired", "throughput", "versions", "wall_seconds", "records"):
        if key not in results:
            raise ValueError(f"{path} lacks '{key}': not a results file of 'loraml empirical run'")
    twice = repeated_records(results["records"])
    if twice:
        raise ValueError(
            f"{path} holds {len(twice)} record(s) twice (e.g. {' '.join(map(str, twice[0]))}): "
            "'loraml empirical run' writes one record per (method, scheme, rank, task, seed); "
            "rerun the part"
        )
    return results


#: The fields that name a hits@1 record: one fine-tuning of one unseen task.
RECORD_KEY = ("method", "scheme", "rank", "task", "seed")


def record_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """A record's (method, scheme, rank, task, seed), :data:`RECORD_KEY`.

    Examples
    --------
    >>> record_key(dict(method="sr", scheme="lora", rank=8, task="t", seed=1, hits_at_1=0.3))
    ('sr', 'lora', 8, 't', 1)
    """
    return tuple(record.get(k) for k in RECORD_KEY)


def repeated_records(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The keys (:func:`record_key`) that more than one of ``records`` carries, in order.

    A run writes each key once; a file holding one twice was edited or concatenated, and
    every reader that matches records by key (the analysis, :mod:`loraml.empirical.compare`)
    would otherwise keep one of them silently.

    Examples
    --------
    >>> rec = dict(method="sr", scheme="head", rank=0, task="t", seed=0, hits_at_1=0.5)
    >>> repeated_records([rec, {**rec, "task": "u"}, {**rec, "hits_at_1": 0.4}])
    [('sr', 'head', 0, 't', 0)]
    """
    seen: set[tuple[Any, ...]] = set()
    twice: list[tuple[Any, ...]] = []
    for r in records:
        k = record_key(r)
        if k in seen and k not in twice:
            twice.append(k)
        seen.add(k)
    return twice

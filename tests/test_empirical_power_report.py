"""The powered protocol's design arithmetic and report (``loraml.empirical.power``): the detectable
effect against a simulation, POWER.md's table against the committed result it was estimated
from, the report's coverage and answer, and ``loraml empirical analysis --out``."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scipy")
pytest.importorskip("matplotlib")

from loraml.cli import main  # noqa: E402
from loraml.empirical import power as PW  # noqa: E402
from loraml.empirical.report import load_results  # noqa: E402
from tests.helpers import results_object  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "empirical" / "results"


def test_detectable_effect_has_the_stated_power_in_a_simulation():
    """At the returned effect a two-sided paired t-test over n units rejects 80 % of the time."""
    from scipy import stats

    rng = np.random.default_rng(0)
    n, sd, reps = 12, 2.0, 40_000
    delta = PW.detectable_effect(sd, n)
    crit = stats.t.ppf(0.975, n - 1)

    def rejection_rate(mean: float) -> float:
        d = rng.normal(mean, sd, size=(reps, n))
        t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(n))
        return float(np.mean(np.abs(t) > crit))

    assert rejection_rate(delta) == pytest.approx(0.8, abs=0.01)  # 5 binomial standard errors
    assert rejection_rate(0.0) == pytest.approx(0.05, abs=0.006)
    # more units detect less; the effect scales with sd
    assert PW.detectable_effect(sd, 4 * n) < delta / 1.8
    assert PW.detectable_effect(2 * sd, n) == pytest.approx(2 * delta, rel=1e-6)
    with pytest.raises(ValueError, match="n >= 2"):
        PW.detectable_effect(1.0, 1)


def _records(rng, s_b, s_w, tasks, seeds, a="lora-ml", b="sr", scheme="lora", rank=8):
    """hits@1 of b around 0.4 and of a = b + task effect (sd s_b) + seed noise (sd s_w)."""
    effect = rng.normal(0.05, s_b, tasks)
    out = []
    for t in range(tasks):
        for s in range(seeds):
            base = 0.4 + 0.05 * rng.normal()
            for method, h in ((b, base), (a, base + effect[t] + rng.normal(0, s_w))):
                out.append(
                    dict(method=method, scheme=scheme, rank=rank, task=f"t{t:02d}", seed=s)
                    | {"hits_at_1": h}
                )
    return out


def test_variance_components_recover_the_simulated_spreads():
    rng = np.random.default_rng(1)
    vc = PW.variance_components(_records(rng, 0.08, 0.12, 400, 5), "lora-ml", "sr", "lora", 8)
    assert (vc["n_tasks"], vc["n_seeds"]) == (400, 5)
    assert vc["s_w"] == pytest.approx(0.12, rel=0.05)
    assert vc["s_b"] == pytest.approx(0.08, rel=0.12)


def test_variance_components_by_hand():
    # two tasks, two seeds: d = [[0.1, 0.3], [0.0, 0.0]] -> s_w^2 = (0.02 + 0) / 2 = 0.01,
    # task means 0.2 and 0.0 -> sample variance 0.02, s_b^2 = 0.02 - 0.01 / 2 = 0.015
    records = []
    for t, ds in (("x", (0.1, 0.3)), ("y", (0.0, 0.0))):
        for s, d in enumerate(ds):
            records.append(dict(method="sr", scheme="lora", rank=8, task=t, seed=s, hits_at_1=0.5))
            records.append(
                dict(method="lora-ml", scheme="lora", rank=8, task=t, seed=s, hits_at_1=0.5 + d)
            )
    vc = PW.variance_components(records, "lora-ml", "sr", "lora", 8)
    assert vc["s_w"] == pytest.approx(0.1)
    assert vc["s_b"] == pytest.approx(math.sqrt(0.015))
    with pytest.raises(ValueError, match="need 2 seeds"):
        PW.variance_components([r for r in records if r["seed"] == 0], "lora-ml", "sr", "lora", 8)


def test_crossed_interval_by_hand():
    # d = [[.1, .3], [0, .2], [.2, .4]]: mean .2; task means .2, .1, .3 -> MS_T = 2 * .02 / 2
    # = .02; seed means .1, .3 -> MS_S = 3 * .02 / 1 = .06; residuals all 0 -> MS_E = 0.
    # Var(mean) = (.06 + .02 - 0) / 6, df = .08^2 / (.06^2 / 1 + .02^2 / 2), s_u^2 = .06 / 3
    c = PW.crossed_interval(np.array([[0.1, 0.3], [0.0, 0.2], [0.2, 0.4]]))
    assert (c["ms_seed"], c["ms_task"], c["ms_error"]) == pytest.approx((0.06, 0.02, 0.0))
    assert c["se"] == pytest.approx(math.sqrt(0.08 / 6))
    assert c["df"] == pytest.approx(0.0064 / (0.0036 + 0.0002))
    assert c["sd_seed"] == pytest.approx(math.sqrt(0.02))
    assert c["seed_means"] == pytest.approx([0.1, 0.3])
    with pytest.raises(ValueError, match="2 seeds"):
        PW.crossed_interval(np.zeros((5, 1)))


def test_crossed_interval_without_a_seed_component_is_the_paired_t_over_tasks():
    """MS_S <= MS_E clips s_u^2 to 0: the interval is the t interval of the task means."""
    from scipy import stats

    d = np.random.default_rng(6).normal(0.03, 0.1, size=(40, 3))
    d -= d.mean(axis=0) - d.mean()  # equal seed means: MS_S = 0
    c = PW.crossed_interval(d)
    t = stats.ttest_1samp(d.mean(axis=1), 0.0)
    assert c["sd_seed"] == 0.0 and c["df"] == 39
    assert c["p"] == pytest.approx(t.pvalue, rel=1e-10)
    assert c["ci95"] == pytest.approx(list(t.confidence_interval(0.95)), rel=1e-10)
    # and its detectable effect is the paired t-test's over the 40 seed-averaged task means
    sd = d.mean(axis=1).std(ddof=1)
    assert c["detectable"] == pytest.approx(PW.detectable_effect(sd, 40), rel=1e-8)


@pytest.mark.parametrize(
    ("n_seeds", "coverage", "coverage_over_tasks"), [(2, 0.89, 0.64), (5, 0.94, 0.74)]
)
def test_crossed_interval_covers_where_the_interval_over_tasks_does_not(
    n_seeds, coverage, coverage_over_tasks
):
    """With a seed shift common to all tasks (sd 6 points; tasks 10, residual 13, 40 tasks),
    the paired t interval over tasks covers the true mean far below 95 %; the crossed one
    nearly keeps it (the coverages its docstring states, to 2.5 binomial standard errors)."""
    from scipy import stats

    rng = np.random.default_rng(7)
    reps, n_tasks = 2000, 40
    crossed = over_tasks = 0
    for _ in range(reps):
        d = (
            rng.normal(0, 6, n_seeds)[None, :]
            + rng.normal(0, 10, n_tasks)[:, None]
            + rng.normal(0, 13, (n_tasks, n_seeds))
        )
        lo, hi = PW.crossed_interval(d)["ci95"]
        crossed += lo <= 0 <= hi
        lo, hi = stats.ttest_1samp(d.mean(axis=1), 0.0).confidence_interval(0.95)
        over_tasks += lo <= 0 <= hi
    assert crossed / reps == pytest.approx(coverage, abs=0.017)
    assert over_tasks / reps == pytest.approx(coverage_over_tasks, abs=0.025)


def test_power_md_seed_component_table_is_the_committed_result():
    """POWER.md's amendment table (s_u, MS_seed, MS_error) follows from ``results/cpu``."""
    rows = re.findall(
        r"^\| vs (SR|last-layer-ML|Reptile), (LoRA r=8|head only) \| (\S+) \| (\S+) \| (\S+) \|$",
        (RESULTS / "POWER.md").read_text(),
        flags=re.M,
    )
    assert len(rows) == 6
    records = load_results(RESULTS / "cpu")["records"]
    for name, tuning, s_u, ms_s, ms_e in rows:
        c = PW.crossed_interval(
            PW.difference_table(records, "lora-ml", *_power_md_key(name, tuning))[2]
        )
        assert (s_u, ms_s, ms_e) == (
            f"{100 * c['sd_seed']:.1f}",
            f"{1e4 * c['ms_seed']:.0f}",
            f"{1e4 * c['ms_error']:.0f}",
        )


def _power_md_key(against: str, tuning: str) -> tuple[str, str, int]:
    """(baseline, scheme, rank) of a POWER.md table row's labels, e.g. ("SR", "LoRA r=8")."""
    method = {"SR": "sr", "last-layer-ML": "last-layer-ml", "Reptile": "reptile"}[against]
    return (method, "lora", 8) if tuning == "LoRA r=8" else (method, "head", 0)


def _power_md_table() -> list[list[str]]:
    text = (RESULTS / "POWER.md").read_text()
    return [
        [c.strip().strip("*") for c in line.strip("|").split("|")]
        for line in text.splitlines()
        if re.match(r"\| (SR|last-layer-ML|Reptile) \| (LoRA r=8|head only) \|", line)
    ]


def test_power_md_table_is_the_committed_result_and_the_detectable_effect():
    """POWER.md's s_b, s_w and detectable effects follow from ``results/cpu`` by this module."""
    cpu = load_results(RESULTS / "cpu")
    table = _power_md_table()
    assert len(table) == 6
    for against, ft, s_b, s_w, now, n40, n60 in table:
        key = _power_md_key(against, ft)
        vc = PW.variance_components(cpu["records"], "lora-ml", *key)
        assert (vc["n_tasks"], vc["n_seeds"]) == (10, 3)
        assert 100 * vc["s_b"] == pytest.approx(float(s_b), abs=0.05)
        assert 100 * vc["s_w"] == pytest.approx(float(s_w), abs=0.05)
        assert PW.DESIGN_COMPONENTS[key] == (float(s_b), float(s_w))
        for n, seeds, quoted in ((10, 3, now), (40, 5, n40), (60, 5, n60)):
            sd = math.hypot(vc["s_b"], vc["s_w"] / math.sqrt(seeds))
            assert 100 * PW.detectable_effect(sd, n) == pytest.approx(float(quoted), abs=0.051)


def test_protocol_constants_are_the_power_preset():
    pytest.importorskip("torch")
    from loraml.empirical.config import DEFAULT_SEEDS, PRESETS

    cfg = PRESETS["power"].to_json()
    for key, value in PW.POWER_SETTINGS.items():
        assert cfg[key] == value, key
    assert tuple(cfg["methods"]) == PW.POWER_METHODS
    assert DEFAULT_SEEDS["power"] == PW.POWER_SEEDS


def _part(records, batching="per-task", **changes):
    config = {**PW.POWER_SETTINGS, "batching": batching, **changes}
    config["methods"] = sorted({r["method"] for r in records})
    config["seeds"] = sorted({r["seed"] for r in records})
    return results_object(config, records, wall_seconds=3600.0)


def test_report_coverage_rows_and_answer():
    rng = np.random.default_rng(2)
    records = _records(rng, 0.05, 0.1, 40, 2)
    sr = [r for r in records if r["method"] == "sr"]
    ml = [r for r in records if r["method"] == "lora-ml"]
    report = PW.power_report([_part(sr), _part(ml)], ["sr-part", "ml-part"])
    assert report["coverage"] == {"present": 4, "shared": 0, "of": 40, "outside_protocol": 0}
    (row,) = report["rows"]
    assert row["role"] == "primary" and row["n_tasks"] == 40 and row["n_seeds"] == 2
    # the per-task differences are the seed means' differences, and give the row's mean
    by = {}
    for r in records:
        by.setdefault((r["task"], r["method"]), []).append(r["hits_at_1"])
    want = [np.mean(by[(t, "lora-ml")]) - np.mean(by[(t, "sr")]) for t in row["tasks"]]
    assert row["diffs"] == pytest.approx(want, abs=1e-12)
    assert row["mean_diff"] == pytest.approx(np.mean(want), abs=1e-12)
    assert row["sd"] == pytest.approx(np.std(want, ddof=1), rel=1e-12)
    assert row["sd_predicted"] == pytest.approx(math.hypot(9.3, 12.8 / math.sqrt(2)) / 100)
    # with two seeds the answer also states the interval with seeds random
    d = np.array(
        [
            [np.subtract(*(by[(t, m)][s] for m in ("lora-ml", "sr"))) for s in (0, 1)]
            for t in row["tasks"]
        ]
    )
    assert row["crossed"] == PW.crossed_interval(d)
    lo, hi = (100 * x for x in row["crossed"]["ci95"])
    assert "seeds both random" in report["answer"] and f"[{lo:+.1f}, {hi:+.1f}]" in report["answer"]
    assert "With one seed" not in report["answer"]
    assert "## Seeds random too" in PW.render_power_markdown(report)
    # a part with other settings is reported, and not counted as the protocol's
    other = _part(_records(rng, 0.05, 0.1, 10, 1, a="reptile"), "interleaved", n_candidates=8)
    report = PW.power_report([_part(sr), _part(ml), other], ["a", "b", "c"])
    assert report["coverage"] == {"present": 4, "shared": 0, "of": 40, "outside_protocol": 2}
    assert report["parts"][2]["differs_from_protocol"] == ["n_candidates"]


def test_a_seed_one_method_lacks_waits_for_its_pair():
    """SR's seed 2 committed before LoRA-ML's: the comparison stays the paired one on seeds
    0 and 1 (before, each method was averaged over its own seeds and the seeds were counted
    as 3)."""
    rng = np.random.default_rng(5)
    records = _records(rng, 0.05, 0.1, 40, 3)
    both = [r for r in records if r["seed"] < 2]
    sr_only = [r for r in records if r["seed"] == 2 and r["method"] == "sr"]
    for r in sr_only:
        r["hits_at_1"] += 0.5  # would move the comparison by 1/6 if it entered
    paired = PW.power_report([_part(both)])["rows"][0]
    report = PW.power_report([_part(both), _part(sr_only)])
    (row,) = report["rows"]
    assert report["coverage"]["present"] == 5
    assert row["n_seeds"] == 2 and row["n_tasks"] == 40
    for key in ("mean_diff", "sd", "t"):
        assert row[key] == pytest.approx(paired[key], rel=1e-12)
    assert row["crossed"]["mean"] == pytest.approx(paired["crossed"]["mean"], rel=1e-12)
    assert "over 40 unseen tasks and 2 seeds (paired t" in report["answer"]


def test_part_wall_time_counts_every_invocation_and_never_guesses():
    """A part killed and resumed reports its whole wall time (``wall_seconds_total``), one
    resumed in a directory whose earlier invocations were not recorded reports none, and results
    written before the ledger existed keep their single invocation's wall time."""
    rng = np.random.default_rng(7)
    records = _records(rng, 0.05, 0.1, 40, 1)
    sr = _part([r for r in records if r["method"] == "sr"])
    ml = _part([r for r in records if r["method"] == "lora-ml"])
    ml.update(wall_seconds=148.0, wall_seconds_total=9000.0, invocations=2)
    report = PW.power_report([sr, ml], ["sr-part", "ml-part"])
    assert [p["wall_seconds"] for p in report["parts"]] == [3600.0, 9000.0]
    text = PW.render_power_markdown(report)
    assert "| 1.00 |" in text and "| 2.50 |" in text and "`-` where" not in text
    ml.update(wall_seconds_total=None)
    report = PW.power_report([sr, ml], ["sr-part", "ml-part"])
    assert [p["wall_seconds"] for p in report["parts"]] == [3600.0, None]
    text = PW.render_power_markdown(report)
    assert "| - |" in text and "`-` where a part was resumed" in text


def test_report_names_the_library_versions_and_whether_a_seed_mixes_them():
    """Parts of other machines may run on other releases: the report lists each library's
    versions by part, says a change between seeds is a seed-level difference, and names a seed
    whose two parts differ (their paired differences mix the versions) and a part resumed
    under other versions (its own records mix them)."""
    rng = np.random.default_rng(3)
    records = _records(rng, 0.05, 0.1, 40, 2)
    parts, names = [], []
    for method in ("sr", "lora-ml"):
        for seed in (0, 1):
            part = _part([r for r in records if r["method"] == method and r["seed"] == seed])
            part["versions"] = {
                "torch": "2.13.0",
                "transformers": f"5.2{4 + seed}.0",
                "peft": "0.21",
            }
            parts.append(part)
            names.append(f"{method}-s{seed}")
    text = PW.render_power_markdown(PW.power_report(parts, names))
    assert (
        "Software: torch 2.13.0 and peft 0.21 in every part; transformers 5.24.0 (sr-s0, "
        "lora-ml-s0) and 5.25.0 (sr-s1, lora-ml-s1). Each seed's parts ran on the same versions"
    ) in text
    parts[3]["versions"] = {**parts[3]["versions"], "transformers": "5.24.0"}  # lora-ml-s1
    text = PW.render_power_markdown(PW.power_report(parts, names))
    assert "transformers 5.24.0 (sr-s0, lora-ml-s0, lora-ml-s1) and 5.25.0 (sr-s1)" in text
    assert "The parts of seed 1 ran on different versions" in text
    assert "a separate check: run a cut-down part on each" in text  # how to check the mix
    # seed 1's parts both resumed from the same older transformers: alike, yet each part's
    # own records mix two versions, which the line says of the parts and of the seed
    for part in (parts[1], parts[3]):  # sr-s1, lora-ml-s1
        part["versions"] = {**part["versions"], "transformers": "5.25.0"}
        part["invocation_versions"] = [None, {**part["versions"], "transformers": "5.24.0"}]
    text = PW.render_power_markdown(PW.power_report(parts, names))
    assert (
        "transformers 5.24.0 (sr-s0, lora-ml-s0) and 5.24.0 then 5.25.0 (sr-s1, lora-ml-s1)" in text
    )
    assert "sr-s1 and lora-ml-s1 were resumed under other versions: their own records mix" in text
    assert "The parts of seed 1 ran on different versions" in text
    del parts[1]["invocation_versions"]  # sr-s1 on 5.25.0 only: lora-ml-s1 alone mixes
    text = PW.render_power_markdown(PW.power_report(parts, names))
    assert "lora-ml-s1 was resumed under other versions: its own records mix them" in text
    for part in parts:  # results written without versions: no line rather than a guess
        part["versions"] = {}
        part.pop("invocation_versions", None)
    assert "Software:" not in PW.render_power_markdown(PW.power_report(parts, names))


def test_seeds_that_cancel_are_a_tie_not_a_loss():
    """hits 1 and 7 of 23 for one method, 2 and 6 for the other: the seed means are equal,
    but ((1/23 - 2/23) + (7/23 - 6/23)) / 2 is 1.4e-17 in floating point, a win to `d > 0`."""
    from loraml.empirical.report import paired_comparison

    records = [
        dict(method=m, scheme="lora", rank=8, task=t, seed=s, hits_at_1=h / 23)
        for t, hits in (("tie", ((1, 7), (2, 6))), ("win", ((9, 8), (9, 7))))
        for m, by_seed in zip(("lora-ml", "sr"), hits, strict=True)
        for s, h in enumerate(by_seed)
    ]
    d = PW.difference_table(records, "lora-ml", "sr", "lora", 8)[2].mean(axis=1)
    assert d[0] != 0  # the rounding the tolerance is for
    (row,) = paired_comparison(records, "lora-ml", "sr")
    assert (row["wins"], row["losses"], row["ties"]) == (1, 0, 1)


def test_remaining_parts_follow_power_md_and_skip_what_reptile_lends():
    everything = {
        (m, s, b) for m in PW.POWER_METHODS for s in PW.POWER_SEEDS for b in PW.POWER_MODES
    }
    todo = PW.remaining_parts(set())
    assert len(todo) == len(set(todo)) == 35  # POWER.md: 35 runs for the protocol's 40 parts
    assert set(todo) == everything - {("reptile", s, "interleaved") for s in PW.POWER_SEEDS}
    # POWER.md's order: the primary comparison seed by seed, the per-task baselines, interleaved
    assert todo[:4] == [
        ("sr", 0, "per-task"),
        ("lora-ml", 0, "per-task"),
        ("sr", 1, "per-task"),
    ] + [("lora-ml", 1, "per-task")]
    stages = [
        0 if b == "per-task" and m in ("sr", "lora-ml") else 1 + (b != "per-task")
        for m, _, b in todo
    ]
    assert stages == sorted(stages) and stages.count(0) == 10 and stages.count(2) == 15
    assert PW.remaining_parts(everything) == []
    # a run of per-task Reptile leaves nothing of Reptile to run in either mode
    reptile = {("reptile", s, "per-task") for s in PW.POWER_SEEDS}
    assert not any(m == "reptile" for m, _, _ in PW.remaining_parts(reptile))
    # the report lists the commands of what is left
    rng = np.random.default_rng(4)
    report = PW.power_report([_part(_records(rng, 0.05, 0.1, 10, 2))])
    assert len(report["remaining"]) == 31
    text = PW.render_power_markdown(report)
    assert "Still to run, 31 parts" in text
    assert (
        "loraml empirical run --preset power --batching per-task --methods sr --seeds 2 "
        "--threads 1 --out runs/power-per-task-sr-s2" in text
    )


def test_reptile_of_one_batching_mode_stands_for_the_other():
    """POWER.md's saving: the interleaved mode need not rerun Reptile."""
    rng = np.random.default_rng(8)
    per_task = _records(rng, 0.05, 0.1, 12, 2) + [
        r for r in _records(rng, 0.05, 0.1, 12, 2, a="reptile") if r["method"] == "reptile"
    ]
    interleaved = [dict(r) for r in per_task if r["method"] != "reptile"]
    report = PW.power_report([_part(per_task), _part(interleaved, "interleaved")])
    # 3 methods x 2 seeds per-task, 2 x 2 interleaved, and Reptile's 2 seeds lent
    assert report["coverage"] == {"present": 12, "shared": 2, "of": 40, "outside_protocol": 0}
    rows = {(r["b"], r["scheme"], r["batching"]): r for r in report["rows"]}
    lent, own = rows[("reptile", "lora", "interleaved")], rows[("reptile", "lora", "per-task")]
    assert lent["diffs"] == own["diffs"] and lent["tasks"] == own["tasks"]
    assert "standing for the other" in PW.render_power_markdown(report)
    # a mode with its own Reptile keeps it; a mode with other settings borrows nothing
    own_reptile = [dict(r, hits_at_1=0.0) for r in per_task if r["method"] == "reptile"]
    report = PW.power_report([_part(per_task), _part(interleaved + own_reptile, "interleaved")])
    rows = {(r["b"], r["scheme"], r["batching"]): r for r in report["rows"]}
    assert rows[("reptile", "lora", "interleaved")]["diffs"] != own["diffs"]
    assert report["coverage"]["shared"] == 0
    report = PW.power_report([_part(per_task), _part(interleaved, "interleaved", n_candidates=8)])
    assert not any(r["b"] == "reptile" and r["batching"] == "interleaved" for r in report["rows"])


@pytest.mark.parametrize(
    ("shift", "says"),
    [
        (0.15, "LoRA-ML is better, by at least"),
        (-0.15, "SR is better, by at least"),
        (0.0, "no difference is shown"),
    ],
)
def test_answer_reads_the_interval(shift, says):
    rng = np.random.default_rng(3)
    records = _records(rng, 0.02, 0.02, 30, 1)
    for r in records:
        if r["method"] == "lora-ml":
            r["hits_at_1"] += shift - 0.05
    report = PW.power_report([_part(records)])
    row = report["rows"][0]
    lo, hi = (100 * x for x in row["ci95"])
    assert says in report["answer"]
    assert "With one seed" in report["answer"] and row["crossed"] is None
    assert f"[95 % CI {lo:+.1f}, {hi:+.1f}]" in report["answer"]
    assert (lo > 0) == (shift > 0) and (hi < 0) == (shift < 0)


def test_analysis_out_writes_the_report_and_refuses_a_run_directory(tmp_path, capsys):
    rng = np.random.default_rng(4)
    records = _records(rng, 0.05, 0.1, 40, 1)
    dirs = []
    for method in ("sr", "lora-ml"):
        d = tmp_path / f"per-task-{method}-s0"
        d.mkdir()
        (d / "results.json").write_text(
            json.dumps(_part([r for r in records if r["method"] == method]))
        )
        (d / "config.json").write_text("{}")
        dirs.append(str(d))
    out = tmp_path / "report"
    assert main(["empirical", "analysis", *dirs, "--out", str(out)]) == 0
    assert "LoRA-ML minus SR" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["analysis.json", "results.md", "results.png"]
    saved = json.loads((out / "analysis.json").read_text())
    assert saved["coverage"]["present"] == 2 and saved["answer"] in (out / "results.md").read_text()
    # a run directory is never written into
    before = {p.name: p.read_bytes() for p in Path(dirs[0]).iterdir()}
    assert main(["empirical", "analysis", *dirs, "--out", dirs[0]]) == 2
    err = capsys.readouterr().err.strip()
    assert "--out" in err and "run directory" in err and "\n" not in err
    assert {p.name: p.read_bytes() for p in Path(dirs[0]).iterdir()} == before
    (tmp_path / "file").write_text("x")
    assert main(["empirical", "analysis", *dirs, "--out", str(tmp_path / "file")]) == 2
    assert "--out" in capsys.readouterr().err


def _rounded(obj):
    """``obj`` with every float rounded to 12 significant digits."""
    if isinstance(obj, float):
        return float(f"{obj:.12g}")
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v) for v in obj]
    return obj


def test_committed_power_report_is_what_its_parts_give():
    """``empirical/results/power/analysis.json`` is the report of the committed parts."""
    folder = RESULTS / "power"
    if not (folder / "analysis.json").exists():
        pytest.skip("no powered result committed yet")
    saved = json.loads((folder / "analysis.json").read_text())
    names = [p["name"] for p in saved["parts"]]
    runs = [load_results(folder / name) for name in names]
    fresh = json.loads(json.dumps(PW.power_report(runs, names)))
    # equal, floats to 1e-12 (a root-finder's or BLAS's last bit may differ between machines)
    assert _rounded(fresh) == _rounded(saved)
    assert (folder / "results.md").read_text() == PW.render_power_markdown(saved)


def _against_both(rng, shift, s_w, seeds, seed_shift=(0.0,) * 5, tasks=40):
    """LoRA-ML's records and last-layer-ML's and Reptile's: LoRA-ML minus each is ``shift``
    plus seed ``s``'s ``seed_shift[s]`` plus noise of sd ``s_w``, rank-8 LoRA fine-tuning."""
    out = []
    for t in range(tasks):
        for s in range(seeds):
            ml = 0.4 + 0.05 * rng.normal()
            key = dict(scheme="lora", rank=8, task=f"t{t:02d}", seed=s)
            out.append({**key, "method": "lora-ml", "hits_at_1": ml})
            for b in PW.SPECIFIC_BASELINES:
                h = ml - shift - seed_shift[s] - rng.normal(0, s_w)
                out.append({**key, "method": b, "hits_at_1": h})
    return out


@pytest.mark.parametrize(
    ("shift", "s_w", "seed_shift", "says"),
    [
        (0.08, 0.05, (0.0,) * 5, "Yes: LoRA-ML beats both"),
        # POWER.md's table: 2.5 and 3.9 points detectable at 40 tasks and 5 seeds
        (0.0, 0.02, (0.0,) * 5, "smaller than 2.5 points over Last-layer-ML and 3.9 points"),
        (0.0, 0.3, (0.0,) * 5, "Not decided"),
        # significant over tasks, but the seeds' shifts swamp it: the caveat says so
        (0.05, 0.02, (0.3, -0.25, 0.2, -0.3, 0.1), "which do not all exclude 0"),
        # inside the detectable effect over tasks, but the seeds' shifts reach beyond it
        (0.0, 0.02, (0.05, -0.04, 0.03, -0.05, 0.01), "a gain of up to"),
        # a significant loss inside the detectable effect: smaller gain, and the loss said
        (-0.015, 0.02, (0.0,) * 5, "LoRA-ML is significantly worse than Last-layer-ML and"),
    ],
)
def test_specific_answer_follows_power_md_rule(shift, s_w, seed_shift, says):
    rng = np.random.default_rng(11)
    report = PW.power_report([_part(_against_both(rng, shift, s_w, 5, seed_shift))])
    text = report["specific"]
    assert says in text and "Provisional" not in text
    rows = {r["b"]: r for r in report["rows"] if r["scheme"] == "lora"}
    for b, r in rows.items():  # each comparison's own numbers are stated
        lo, hi = (100 * x for x in r["ci95"])
        assert f"against {PW.METHOD_NAMES[b]} {100 * r['mean_diff']:+.1f} points" in text
        assert f"[95 % CI {lo:+.1f}, {hi:+.1f}], Holm p {r['p_holm']:.2g}" in text
    significant = all(r["p_holm"] < 0.05 and r["mean_diff"] > 0 for r in rows.values())
    assert significant == text.startswith("Yes")
    # only the two rows against last-layer-ML and Reptile are here, of POWER.md's 11
    assert "Holm's correction spans the 2 secondary comparisons present, of the protocol's 11" in (
        text
    )
    assert f"Is the gain specific to LoRA adapters? {text}" in PW.render_power_markdown(report)


def test_specific_answer_is_provisional_or_absent_until_its_parts_are_in():
    rng = np.random.default_rng(12)
    records = _against_both(rng, 0.0, 0.02, 2)
    text = PW.power_report([_part(records)])["specific"]
    assert "Provisional: 2 of the protocol's 5 seeds are in" in text
    assert "With seeds random too the intervals are" in text
    # without Reptile there is no answer, and the report says why
    report = PW.power_report([_part([r for r in records if r["method"] != "reptile"])])
    assert report["specific"] is None
    assert "Is the gain specific to LoRA adapters? Not yet answerable" in (
        PW.render_power_markdown(report)
    )


def test_holm_family_is_power_md_s():
    """POWER.md: the primary comparison is tested alone, the others are "Holm-corrected over
    the 11 others"; the report counts the same family."""
    said = re.search(r"Holm-corrected over the (\d+) others", (RESULTS / "POWER.md").read_text())
    assert said and PW.HOLM_FAMILY == int(said.group(1))


def test_adding_p_values_never_lowers_holm_adjusted_ones():
    """What the caveat on a partial Holm family says (specific_answer's comment derives it)."""
    from loraml.empirical.report import holm

    rng = np.random.default_rng(21)
    for _ in range(2000):
        n = int(rng.integers(1, 12))
        ps = list(rng.uniform(0, 0.2, n) ** rng.uniform(0.5, 3))
        more = ps + list(rng.uniform(0, 0.2, int(rng.integers(1, 4))))
        before, after = holm(ps), holm(more)[:n]
        assert all(b <= a + 1e-15 for b, a in zip(before, after, strict=True))


def _whole_family(rng, methods, tasks=40, seeds=5):
    """Records of ``methods`` with rank-8 LoRA and head-only fine-tuning (no effect)."""
    out = []
    for t in range(tasks):
        for s in range(seeds):
            for scheme, rank in (("lora", 8), ("head", 0)):
                key = dict(scheme=scheme, rank=rank, task=f"t{t:02d}", seed=s)
                for m in methods:
                    out.append({**key, "method": m, "hits_at_1": 0.4 + 0.02 * rng.normal()})
    return out


def test_specific_answer_names_a_partial_holm_family_until_it_is_whole():
    rng = np.random.default_rng(14)
    per_task = _part(_whole_family(rng, PW.POWER_METHODS))
    inter = _whole_family(rng, ("sr", "lora-ml", "last-layer-ml"))
    whole = PW.power_report([per_task, _part(inter, "interleaved")])  # Reptile's is shared
    assert sum(r["role"] == "secondary" for r in whole["rows"]) == 11
    assert whole["specific"].startswith("No") and "Holm" not in whole["specific"].split(").")[-1]
    assert "Provisional" not in whole["specific"]
    no_ml = [r for r in inter if r["method"] != "last-layer-ml"]  # its two rows go
    report = PW.power_report([per_task, _part(no_ml, "interleaved")])
    partial = report["specific"]
    assert "Holm's correction spans the 9 secondary comparisons present, of the protocol's 11" in (
        partial
    )
    assert partial.split(" (rank-8")[0] == whole["specific"].split(" (rank-8")[0]
    # the two rows the whole family adds raise the per-task rows' adjusted p-values
    holm_p = {(r["b"], r["scheme"], r["batching"]): r["p_holm"] for r in report["rows"]}
    raised = [
        (holm_p[key], r["p_holm"])
        for r in whole["rows"]
        if (key := (r["b"], r["scheme"], r["batching"])) in holm_p and r["role"] == "secondary"
    ]
    assert len(raised) == 9 and all(a <= b for a, b in raised) and any(a < b for a, b in raised)


def test_analysis_out_prints_the_second_answer(tmp_path, capsys):
    d = tmp_path / "per-task-all-s01"
    d.mkdir()
    part = _part(_against_both(np.random.default_rng(13), 0.0, 0.02, 2))
    (d / "results.json").write_text(json.dumps(part))
    report = PW.power_report([part])
    assert main(["empirical", "analysis", str(d), "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert f"Is the gain specific to LoRA adapters? {report['specific']}\n" in out


def test_analysis_remaining_writes_the_commands_left_one_a_line(tmp_path, capsys):
    """``--remaining FILE``: the report's "Still to run" commands, one a line, in its order;
    each parses as a ``loraml`` command; an input results.json is never the output."""
    import shlex

    from loraml.cli import build_parser

    d = tmp_path / "per-task-all-s01"
    d.mkdir()
    part = _part(_against_both(np.random.default_rng(13), 0.0, 0.02, 2))
    (d / "results.json").write_text(json.dumps(part))
    todo = tmp_path / "todo.txt"
    args = ["empirical", "analysis", str(d), "--out", str(tmp_path / "report")]
    assert main([*args, "--remaining", str(todo)]) == 0
    lines = todo.read_text().splitlines()
    report = json.loads((tmp_path / "report" / "analysis.json").read_text())
    # 40 parts less 6 present (3 methods x 2 seeds) and Reptile's 5 interleaved ones, which
    # its per-task parts stand for
    assert len(lines) == len(report["remaining"]) == 40 - 6 - 5
    assert f"{len(lines)} parts still to run: {todo}" in capsys.readouterr().out
    block = (tmp_path / "report" / "results.md").read_text().split("```bash\n")[1]
    assert block.split("```")[0].splitlines() == lines  # the same commands as the report's
    for line, (method, seed, batching) in zip(lines, report["remaining"], strict=True):
        argv = shlex.split(line)
        assert argv[0] == "loraml"
        parsed = build_parser(argv[1:]).parse_args(argv[1:])
        assert (parsed.methods, parsed.seeds, parsed.batching) == ([method], [seed], batching)
        assert parsed.out == f"runs/power-{batching}-{method}-s{seed}"
    before = (d / "results.json").read_bytes()
    assert main([*args, "--remaining", str(d / "results.json")]) == 2
    assert "--remaining" in capsys.readouterr().err
    assert (d / "results.json").read_bytes() == before

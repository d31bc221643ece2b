"""benchmarks/README.md quotes the committed benchmark JSON (no number typed by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "empirical_cpu.json"


def test_readme_quotes_the_committed_empirical_benchmark():
    if not RESULT.is_file():
        pytest.skip("no committed benchmark JSON")
    readme = (ROOT / "benchmarks" / "README.md").read_text()
    r = json.loads(RESULT.read_text())
    assert r["command"] in readme
    quoted = [
        f"{r['cpu_speed_ratio_lora_ml_over_sr']:.2f}x",
        f"{r['speed_ratio_lora_ml_over_sr']:.2f}x",
        f"{r['flop_bound_speed_ratio']:.3f}",
        f"{r['memory_ratio_lora_ml_over_sr']:.2f}x",
        *(f"{x:.2f}" for x in r["cpu_speed_ratios_per_round"]),
        *(f"{r['median_examples_per_cpu_s'][m]:.2f}" for m in ("sr", "lora-ml")),
        *(f"{r['median_examples_per_s'][m]:.2f}" for m in ("sr", "lora-ml")),
        *(f"{r['peak_mib'][m]:.0f} MiB" for m in ("sr", "lora-ml")),
    ]
    missing = [q for q in quoted if q not in readme]
    assert not missing, f"benchmarks/README.md does not quote {missing} from {RESULT.name}"


SOLVERS = ROOT / "benchmarks" / "results" / "solvers_cpu.json"


def test_readme_quotes_the_committed_solver_benchmark():
    if not SOLVERS.is_file():
        pytest.skip("no committed benchmark JSON")
    readme = " ".join((ROOT / "benchmarks" / "README.md").read_text().split())
    r = json.loads(SOLVERS.read_text())
    p, g, m = r["paper"], r["large"], r["machine"]
    assert r["command"] in readme
    quoted = [
        f"{p['speedup_cpu']:.0f}x in CPU time",
        f"({p['speedup']:.0f}x wall",
        f"| {p['paper_cpu_seconds']:.3f} s | {p['paper_seconds']:.2f} s "
        f"| {p['paper_error_fro']:.3e} |",
        f"| {p['fast_cpu_seconds']:.4f} s | {p['fast_seconds']:.4f} s "
        f"| {p['fast_error_fro']:.3e} |",
        f"{g['cpu_seconds']:.2f} s of CPU ({g['seconds']:.2f} s wall",
        f"relative error {g['relative_error']:.1e}",
        f"{m['load_average_1min_at_start']:.1f} at the start and "
        f"{m['load_average_1min_at_end']:.1f} at the end",
        *(
            f"| {row['solve_cpu_seconds']:.4f} | {row['solve_seconds']:.4f} "
            f"| {row['relative_error']:.2e} | {row['iterations']} |"
            for row in r["scaling"]
        ),
    ]
    missing = [q for q in quoted if q not in readme]
    assert not missing, f"benchmarks/README.md does not quote {missing} from {SOLVERS.name}"


def test_benchmarks_readme_holds_the_committed_figure_times():
    """benchmarks/README.md's figure-time table is what ``bench_figures.py --committed`` prints."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_figures", ROOT / "benchmarks" / "bench_figures.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    table = module.committed_table()
    assert "| all |" in table
    assert table in (ROOT / "benchmarks" / "README.md").read_text()


def test_benchmarks_readme_quotes_the_quick_figures_timing():
    path = ROOT / "benchmarks" / "results" / "figures_quick.json"
    if not path.is_file():
        pytest.skip("no committed benchmark JSON")
    r = json.loads(path.read_text())
    readme = " ".join((ROOT / "benchmarks" / "README.md").read_text().split())
    shallow = r["figures"]["shallow-vary-d"] + r["figures"]["shallow-vary-T"]
    quoted = [
        f"`{r['command']}`",
        f"**{r['wall_seconds']:.0f} s wall** ({r['wall_seconds'] / 60:.1f} min;",
        f"{r['cpu_seconds']:.0f} s of CPU",
        f"load average {r['load_average_1min_before']:.1f} before and "
        f"{r['load_average_1min_after']:.1f} after",
        f"{100 * shallow / sum(r['figures'].values()):.0f} % of the summed compute seconds",
        f"{len(r['figures'])} figures, 2 worker",
    ]
    missing = [q for q in quoted if q not in readme]
    assert not missing, f"benchmarks/README.md does not quote {missing} from {path.name}"


def test_benchmarks_readme_quotes_the_k20_measurements_and_the_experiments_own_rates():
    """The K = 20 section: both layouts' JSON, the profiles' totals, and LoRA-ML / SR retraining
    rates recomputed from the committed powered parts."""
    readme = " ".join((ROOT / "benchmarks" / "README.md").read_text().split())
    results = ROOT / "benchmarks" / "results"
    for batching in ("per-task", "interleaved"):
        r = json.loads((results / f"empirical_cpu_k20_{batching}.json").read_text())
        assert f"{r['command']} --json benchmarks/results/empirical_cpu_k20_{batching}.json" in (
            readme
        )
        rounds = ", ".join(f"{x:.2f}" for x in r["cpu_speed_ratios_per_round"])
        row = (
            f"| {r['median_examples_per_cpu_s']['sr']:.2f} "
            f"| {r['median_examples_per_cpu_s']['lora-ml']:.2f} "
            f"| **{r['cpu_speed_ratio_lora_ml_over_sr']:.2f}x** ({rounds}) "
            f"| {r['speed_ratio_lora_ml_over_sr']:.2f}x "
            f"| {r['peak_mib']['sr']:.0f} / {r['peak_mib']['lora-ml']:.0f} MiB "
            f"| {r['memory_ratio_lora_ml_over_sr']:.2f}x |"
        )
        assert row in readme, row
        assert f"The FLOP bound is {r['flop_bound_speed_ratio']:.3f} in both" in readme
    totals = []
    for method in ("lora-ml", "sr"):
        text = (results / f"profile-k20-per-task-{method}.txt").read_text()
        totals.append(float(text.split("Self CPU time total: ")[1].split("s")[0]))
    assert f"Self CPU time was {totals[0]:.1f} s against {totals[1]:.1f} s" in readme
    assert f"Of the {totals[0] - totals[1]:.1f} s difference" in readme
    power = ROOT / "empirical" / "results" / "power"
    ratios = []
    for seed in range(5):
        rate = {}
        for method in ("sr", "lora-ml"):
            r = json.loads((power / f"per-task-{method}-s{seed}" / "results.json").read_text())
            (row,) = [t for t in r["throughput"] if t["stage"] == "retrain"]
            rate[method] = row["examples"] / row["seconds"]
        ratios.append(f"{rate['lora-ml'] / rate['sr']:.2f}")
    assert f"LoRA-ML / SR = {', '.join(ratios)} for seeds 0 to 4" in readme


@pytest.mark.empirical
@pytest.mark.parametrize("batching", ["interleaved", "per-task"])
def test_empirical_benchmark_worker_measures_the_batching_it_is_given(batching):
    """The benchmark's worker runs a retraining step as a run does (it broke once when the step's
    signature changed): per-task batches hold one task, interleaved ones several; LoRA-ML's step
    costs more matrix-product FLOPs than SR's, by less than its adapters' share bounds."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import argparse
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_empirical", ROOT / "benchmarks" / "bench_empirical.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    common = dict(
        model="tiny", data="tiny", tasks=3, candidates=4, max_length=16, batch_size=4, rank=2,
        steps=2, dropout=0.1, threads=1, profile=None, batching=batching,
    )  # fmt: skip
    sr, ml = (bench.worker(argparse.Namespace(**common, worker=m)) for m in ("sr", "lora-ml"))
    assert sr["tasks_per_batch"] == ml["tasks_per_batch"]
    assert (sr["tasks_per_batch"] == 1) == (batching == "per-task")
    assert sr["pairs_per_step"] == ml["pairs_per_step"] == 4 * 4
    assert sr["flops_per_step"] < ml["flops_per_step"] < 1.5 * sr["flops_per_step"]
    assert ml["trainable_params"] > sr["trainable_params"]

"""The powered protocol: held-out dialogues of the paper preset, the data record of a run
directory, the ``power`` preset and its dry run (tasks, sizes, cost)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from loraml.cli import main  # noqa: E402
from loraml.empirical import plan as P  # noqa: E402
from loraml.empirical.config import DEFAULT_SEEDS, PRESETS, RunConfig, load_split  # noqa: E402
from loraml.empirical.data import (  # noqa: E402
    DATA_FORMAT,
    Example,
    Task,
    TaskSplit,
    data_fingerprint,
    default_convai2_paths,
)
from loraml.empirical.run import run_experiment  # noqa: E402
from tests.helpers import results_object  # noqa: E402

pytestmark = [pytest.mark.empirical, pytest.mark.usefixtures("one_torch_thread")]

ROOT = Path(__file__).resolve().parents[1]


def _small(**changes):
    base = dict(methods=("sr",), ranks=(), epochs=1, ft_epochs=1)
    return dataclasses.replace(PRESETS["tiny"], **{**base, **changes})


def _tree(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# 1. held-out dialogues


def test_paper_preset_holds_out_three_dialogues():
    # the released scripts select the retraining epoch on the last 3 dialogues of each task
    assert PRESETS["paper"].eval_dialogues == 3
    assert PRESETS["paper"].retrain_selection == "best"


def test_eval_dialogues_is_a_cli_option_recorded_in_config_json(tmp_path):
    out = tmp_path / "run"
    argv = ["empirical", "run", "--preset", "tiny", "--methods", "sr", "--ranks"]
    argv += ["--epochs", "1", "--ft-epochs", "1", "--eval-dialogues", "3", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    assert json.loads((out / "config.json").read_text())["eval_dialogues"] == 3
    # tiny tasks have 6 dialogues of 4 turns, an example a turn: 3 held out = 12 examples
    # (the default 2: 8), the other 3 dialogues train (cap 8 examples)
    tasks = json.loads((out / "tasks.json").read_text())
    assert {(a, b) for _, a, b in tasks["retrain"] + tasks["test"]} == {(8, 12)}


def test_eval_dialogues_below_one_is_refused_before_out_exists(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["empirical", "run", "--preset", "tiny", "--eval-dialogues", "0", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "error: --eval-dialogues must be >= 1" in err and "\n" not in err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# 2. the data record


def _swap_one_distractor(split: TaskSplit) -> TaskSplit:
    """The same tasks, names and counts, one distractor of one held-out example changed."""
    task = split.test[0]
    ex = task.eval[0]
    wrong = (ex.label + 1) % len(ex.candidates)
    cands = list(ex.candidates)
    cands[wrong] = cands[wrong] + " indeed"
    changed = Task(
        task.name, task.train, (Example(ex.context, tuple(cands), ex.label),) + task.eval[1:]
    )
    return dataclasses.replace(split, test=(changed, *split.test[1:]))


def test_run_dir_records_the_data_and_refuses_other_data(tmp_path):
    cfg = _small()
    out = tmp_path / "run"
    split = load_split(cfg)
    run_experiment(cfg, [0], out, progress=False, split=split)
    record = json.loads((out / "data.json").read_text())
    assert record["data_format"] == DATA_FORMAT
    assert record["examples"] == sum(len(t.train) + len(t.eval) for t in split.retrain + split.test)
    other = _swap_one_distractor(split)
    assert data_fingerprint(other, record["separator"])["sha256"] != record["sha256"]
    before = _tree(out)
    # names and example counts are the same: the task check alone would resume this run
    with pytest.raises(ValueError, match="other prepared data") as err:
        run_experiment(cfg, [0], out, progress=False, split=other)
    assert str(out) in str(err.value) and "new --out" in str(err.value)
    assert _tree(out) == before  # nothing deleted or overwritten
    run_experiment(cfg, [0], out, progress=False, split=split)  # the same data resumes


def test_run_dir_without_a_data_record_is_refused_in_one_line(tmp_path, capsys):
    # a directory made before data.json existed (possibly before the data fixes) is refused
    cfg = _small()
    out = tmp_path / "run"
    run_experiment(cfg, [0], out, progress=False)
    (out / "data.json").unlink()
    before = _tree(out)
    argv = ["empirical", "run", "--preset", "tiny", "--methods", "sr", "--ranks", "--epochs", "1"]
    rc = main([*argv, "--ft-epochs", "1", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "Traceback" not in err
    assert f"--out {out} holds a run made before data.json" in err and "new --out" in err
    assert _tree(out) == before


def test_fingerprint_covers_labels_separator_and_format(monkeypatch):
    split = load_split(_small())
    base = data_fingerprint(split, "[SEP]")
    task = split.retrain[0]
    ex = task.train[0]
    moved = Example(ex.context, ex.candidates[::-1], len(ex.candidates) - 1 - ex.label)
    relabelled = dataclasses.replace(
        split, retrain=(Task(task.name, (moved, *task.train[1:]), task.eval), *split.retrain[1:])
    )
    assert data_fingerprint(relabelled, "[SEP]")["sha256"] != base["sha256"]
    assert data_fingerprint(split, " [SEP] ")["sha256"] != base["sha256"]
    import loraml.empirical.data as D

    monkeypatch.setattr(D, "DATA_FORMAT", DATA_FORMAT + 1)
    assert D.data_fingerprint(split, "[SEP]")["sha256"] != base["sha256"]


# ---------------------------------------------------------------------------------------------
# 3. the power preset and its dry run


def test_power_preset_is_the_cpu_schedule_with_the_powered_protocol():
    power, cpu = PRESETS["power"], PRESETS["cpu"]
    protocol = {
        "data": "convai2",
        "n_retrain": 10,
        "n_test": 40,
        "eval_dialogues": 3,
        "n_candidates": 20,
        "model": "minilm",
        "methods": ("sr", "lora-ml", "last-layer-ml", "reptile"),
        "ranks": (8,),
        "head_only": True,
    }
    for field in dataclasses.fields(RunConfig):
        value = getattr(power, field.name)
        if field.name in protocol:
            assert value == protocol[field.name], field.name
        else:  # everything else, the schedule included, is the cpu preset's
            assert value == getattr(cpu, field.name), field.name
    assert DEFAULT_SEEDS["power"] == (0, 1, 2, 3, 4)


def test_plan_counts_by_hand():
    def task(name, n_train, n_eval):
        ex = Example(("hi",), ("a", "b"), 0)
        return Task(name, (ex,) * n_train, (ex,) * n_eval)

    split = TaskSplit(retrain=(task("r0", 4, 2), task("r1", 6, 3)), test=(task("u0", 5, 2),))
    cfg = RunConfig(
        methods=("sr", "reptile"),
        ranks=(2, 4),
        epochs=3,
        ft_epochs=2,
        batch_size=2,
        reptile_inner_steps=2,
        retrain_selection="best",
    )
    p = P.plan(cfg, split, [0, 1, 2])
    s = p["per_seed"]
    # SR: 3 epochs x 10 examples; Reptile: ceil(10 / (2 x 2)) = 3 rounds x 2 steps x 2 examples
    assert s["retrain_trained"] == 3 * 10 + 3 * 12
    assert s["retrain_scored"] == 2 * 3 * 5  # selection: both methods, every epoch, 2 + 3
    assert s["finetune_trained"] == 2 * 2 * 2 * 5  # methods x ranks x epochs x 5
    # LoRA: methods x ranks x epochs x 2 held-out; head: 5 features + epochs x 2 held-out
    assert s["finetune_scored"] == 2 * (2 * 2 * 2 + 5 + 2 * 2)
    assert s["equivalents"] == pytest.approx(66 + 40 + (30 + 34) / 3)
    assert p["equivalents"] == pytest.approx(3 * s["equivalents"])
    assert p["cpu_hours"] is None
    minilm = dataclasses.replace(cfg, model="minilm", n_candidates=16, max_length=96)
    q = P.plan(minilm, split, [0])
    assert q["rate"] == pytest.approx(2.02 / 4)  # 2 x the candidates, 2 x the tokens
    assert q["cpu_hours"] == pytest.approx(q["equivalents"] / q["rate"] / 3600)


def test_plan_rate_is_the_committed_benchmark_median():
    bench = json.loads((ROOT / "benchmarks/results/empirical_cpu.json").read_text())
    measured = bench["median_examples_per_cpu_s"]["sr"]
    assert round(measured, 2) == P.MINILM_CPU_RATE
    assert f"--candidates {P.RATE_K} --max-length {P.RATE_TOKENS}" in bench["command"]


def test_dry_run_creates_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["empirical", "run", "--preset", "tiny", "--dry-run", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and not out.exists()
    assert "3 retraining tasks, 2 unseen tasks" in text and "no measured rate" in text


@pytest.mark.skipif(default_convai2_paths() is None, reason="shared ConvAI2 files absent")
def test_power_dry_run_on_the_shared_convai2_file(tmp_path, capsys):
    out = tmp_path / "power-per-task"
    argv = ["empirical", "run", "--preset", "power", "--batching", "per-task", "--out", str(out)]
    assert main([*argv, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    assert "10 retraining tasks, 40 unseen tasks, K = 20, 3 held-out dialogues" in text
    assert "seeds [0, 1, 2, 3, 4]" in text and "batching per-task" in text
    # empirical/results/POWER.md, computed from the file beforehand: 21-25 held-out examples
    # per unseen task, 936 in all
    assert "held-out examples: 21-25 (median 23.5, 936 in all)" in text
    cfg = PRESETS["power"]
    split = load_split(cfg)
    # 50 distinct clusters: 10 retraining, 40 unseen
    assert len(split.test) == 40 and len({t.name for t in split.retrain + split.test}) == 50
    p = P.plan(cfg, split, DEFAULT_SEEDS["power"])
    assert math.isfinite(p["cpu_hours"]) and p["cpu_hours"] > 0


def test_reptile_does_not_depend_on_the_batching_mode(tmp_path):
    # POWER.md: Reptile's numbers are the same in both batching modes (its rounds visit one
    # task at a time whatever --batching says); SR's retrained weights differ (the control)
    from loraml.empirical.state import load_checkpoint

    def retrained(method, batching):
        out = tmp_path / f"{method}-{batching}"
        res = run_experiment(_small(methods=(method,), batching=batching), [0], out, progress=False)
        encoder = load_checkpoint(out / "seed0" / f"base-{method}.pt")["encoder"]
        return encoder, [r["hits_by_epoch"] for r in res["records"]]

    (w_int, h_int), (w_per, h_per) = (
        retrained("reptile", "interleaved"),
        retrained("reptile", "per-task"),
    )
    assert h_int == h_per and all(torch.equal(w_int[k], w_per[k]) for k in w_int)
    sr_int, sr_per = retrained("sr", "interleaved")[0], retrained("sr", "per-task")[0]
    assert not all(torch.equal(sr_int[k], sr_per[k]) for k in sr_int)


# ---------------------------------------------------------------------------------------------
# 4. the powered analysis


def test_holm_by_hand():
    from loraml.empirical.report import holm

    # sorted 0.01, 0.03, 0.04 times 3, 2, 1: 0.03, 0.06, 0.04 -> running maximum 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])
    assert holm([0.5, 0.9]) == [1.0, 1.0]
    assert holm([]) == []


def _synthetic_run(batching: str, rng) -> dict:
    records = []
    for method, shift in (("sr", 0.0), ("lora-ml", 0.05), ("reptile", 0.03)):
        for scheme, rank in (("lora", 8), ("head", 0)):
            for t in range(7):
                for seed in range(3):
                    h = float(np.clip(0.3 + shift + 0.02 * t + rng.normal(0, 0.08), 0, 1))
                    records.append(
                        dict(method=method, scheme=scheme, rank=rank, task=f"t{t}", seed=seed)
                        | {"hits_at_1": h}
                    )
    config = {"batching": batching, "methods": ["sr", "lora-ml", "reptile"], "lora_rank": 8}
    return results_object(config, records)


def test_analysis_of_a_synthetic_table_against_scipy():
    from scipy import stats

    from loraml.empirical.report import analysis, holm

    rng = np.random.default_rng(5)
    runs = [_synthetic_run("per-task", rng), _synthetic_run("interleaved", rng)]
    rows = analysis(runs)
    assert len(rows) == 2 * 2 * 2  # modes x baselines x fine-tunings
    roles = [(r["batching"], r["b"], r["scheme"], r["role"]) for r in rows]
    assert roles.count(("per-task", "sr", "lora", "primary")) == 1
    assert sum(r["role"] == "primary" for r in rows) == 1
    for r in rows:
        run = runs[0] if r["batching"] == "per-task" else runs[1]

        def task_means(method, run=run, r=r):
            by_task = {}
            for x in run["records"]:
                if (x["method"], x["scheme"]) == (method, r["scheme"]):
                    by_task.setdefault(x["task"], []).append(x["hits_at_1"])
            return np.array([np.mean(by_task[f"t{t}"]) for t in range(7)])

        xa, xb = task_means("lora-ml"), task_means(r["b"])
        ref = stats.ttest_rel(xa, xb)
        ci = ref.confidence_interval(0.95)
        assert r["mean_diff"] == pytest.approx(np.mean(xa - xb), abs=1e-12)
        assert r["t"] == pytest.approx(ref.statistic, rel=1e-10)
        assert r["p_t"] == pytest.approx(ref.pvalue, rel=1e-10)
        assert r["ci95"] == pytest.approx([ci.low, ci.high], rel=1e-10)
        wins, losses = int(np.sum(xa > xb)), int(np.sum(xa < xb))
        assert r["p_sign"] == pytest.approx(stats.binomtest(wins, wins + losses).pvalue)
    secondary = [r for r in rows if r["role"] == "secondary"]
    assert [r["p_holm"] for r in secondary] == pytest.approx(holm([r["p_t"] for r in secondary]))
    primary = next(r for r in rows if r["role"] == "primary")
    assert primary["p_holm"] == primary["p_t"]
    # Holm never lowers a p-value, and the smallest secondary one is multiplied by 7
    assert all(r["p_holm"] >= r["p_t"] for r in secondary)
    smallest = min(secondary, key=lambda r: r["p_t"])
    assert smallest["p_holm"] == pytest.approx(min(1.0, 7 * smallest["p_t"]))


def test_analysis_cli_over_two_run_directories(tmp_path, capsys):
    rng = np.random.default_rng(6)
    dirs = []
    for mode in ("per-task", "interleaved"):
        d = tmp_path / mode
        d.mkdir()
        (d / "results.json").write_text(json.dumps(_synthetic_run(mode, rng)))
        dirs.append(str(d))
    rows_file = tmp_path / "rows.json"
    assert main(["empirical", "analysis", *dirs, "--json", str(rows_file)]) == 0
    text = capsys.readouterr().out
    assert "| per-task | SR | LoRA r=8 | 7 |" in text and "over the 7 secondary" in text
    assert len(json.loads(rows_file.read_text())) == 8
    assert main(["empirical", "analysis", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert "results.json does not exist" in err and "\n" not in err


def _split_by_seed(run: dict, seeds: set[int]) -> dict:
    part = {**run, "config": {**run["config"], "seeds": sorted(seeds)}}
    part["records"] = [r for r in run["records"] if r["seed"] in seeds]
    return part


def test_runs_split_by_seed_are_combined_into_the_whole_run():
    """Three seeds run as two directories give the same table as one directory with all three."""
    from loraml.empirical.report import analysis

    whole = _synthetic_run("per-task", np.random.default_rng(7))
    whole["config"]["seeds"] = [0, 1, 2]
    parts = [_split_by_seed(whole, {0, 2}), _split_by_seed(whole, {1})]
    parts[1]["config"]["device_used"] = "cuda"  # where a part ran may differ
    split_rows, whole_rows = analysis(parts), analysis([whole])
    assert len(split_rows) == len(whole_rows) == 4
    for a, b in zip(split_rows, whole_rows, strict=True):
        assert a["mean_diff"] == pytest.approx(b["mean_diff"], abs=1e-12)
        assert a["p_t"] == pytest.approx(b["p_t"], rel=1e-12)
        assert a["p_holm"] == pytest.approx(b["p_holm"], rel=1e-12)


def test_runs_that_cannot_be_combined_are_refused(tmp_path, capsys):
    from loraml.empirical.report import analysis

    whole = _synthetic_run("per-task", np.random.default_rng(8))
    # The same (method, seed) twice would count it twice: refused, not averaged in.
    with pytest.raises(ValueError, match="method lora-ml with seed 0 is in two run directories"):
        analysis([whole, whole])
    other = {**whole, "config": {**whole["config"], "lora_rank": 4}}
    with pytest.raises(ValueError, match="differ in lora_rank"):
        analysis([_split_by_seed(whole, {0}), _split_by_seed(other, {1})])
    dirs = []
    for i in range(2):
        d = tmp_path / f"part{i}"
        d.mkdir()
        (d / "results.json").write_text(json.dumps(whole))
        dirs.append(str(d))
    assert main(["empirical", "analysis", *dirs]) == 2
    err = capsys.readouterr().err.strip()
    assert "in two run directories" in err and "\n" not in err
    # one record twice within a file (edited or concatenated) would be averaged in or dropped
    first = whole["records"][0]
    twice = {**whole, "records": [*whole["records"], {**first, "hits_at_1": 0.0}]}
    (tmp_path / "part0" / "results.json").write_text(json.dumps(twice))
    assert main(["empirical", "analysis", dirs[0]]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds 1 record(s) twice" in err and first["task"] in err and "\n" not in err


def test_a_run_split_by_seeds_and_methods_reproduces_the_whole_run(tmp_path):
    """A seed's and a method's records do not depend on what else the run held, so parts of a
    powered run made on different machines combine into the whole (tiny preset, 1 epoch)."""
    from loraml.empirical.report import load_results

    base = ["empirical", "run", "--preset", "tiny", "--methods", "sr", "lora-ml", "--ranks", "2"]
    base += ["--epochs", "1", "--ft-epochs", "1", "--no-progress"]
    assert main([*base, "--seeds", "0", "1", "--out", str(tmp_path / "whole")]) == 0
    assert main([*base, "--seeds", "1", "--out", str(tmp_path / "seed1")]) == 0
    methods = ["--methods", "lora-ml", "--seeds", "0"]
    assert main([*base, *methods, "--out", str(tmp_path / "lora0")]) == 0

    def hits(name):
        records = load_results(tmp_path / name)["records"]
        return {(r["method"], r["scheme"], r["rank"], r["task"], r["seed"]): r for r in records}

    whole = hits("whole")
    for part in ("seed1", "lora0"):
        for key, r in hits(part).items():
            assert (r["hits"], r["n_eval"]) == (whole[key]["hits"], whole[key]["n_eval"]), key
    assert len(hits("seed1")) + len(hits("lora0")) < len(whole)  # sr seed 0 is in neither

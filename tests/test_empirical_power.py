"""The powered protocol: held-out dialogues of the paper preset, the data record of a run
directory, the ``power`` preset and its dry run (tasks, sizes, cost)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

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

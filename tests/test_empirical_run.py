"""Runs: interleaved batches, exact resume after a kill, the tiny preset end to end, the report,
the CLI's errors, and the summary statistics."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from loraml.cli import main  # noqa: E402
from loraml.empirical import methods as M  # noqa: E402
from loraml.empirical import report  # noqa: E402
from loraml.empirical import run as R  # noqa: E402
from loraml.empirical.run import PRESETS, RunInterrupted, StepBudget, run_experiment  # noqa: E402
from tests.helpers import write_persona_file  # noqa: E402

pytestmark = [pytest.mark.empirical, pytest.mark.usefixtures("one_torch_thread")]


def test_interleaved_batches_cover_each_example_once_and_mix_tasks():
    sizes = [5, 3, 7]
    batches = M.interleaved_batches(sizes, 4, np.random.default_rng(0))
    flat = [item for b in batches for item in b]
    assert sorted(flat) == sorted((t, i) for t, n in enumerate(sizes) for i in range(n))
    assert [len(b) for b in batches] == [4, 4, 4, 3]
    assert len({t for t, _ in batches[0]}) == 3  # the first batch holds all three tasks
    assert [t for t, _ in flat[:6]] == [0, 1, 2, 0, 1, 2]
    again = M.interleaved_batches(sizes, 4, np.random.default_rng(0))
    assert again == batches


def test_reptile_rounds_use_one_task_each_and_match_the_epoch_budget():
    rounds = M.reptile_rounds([10, 4], 3, 2, np.random.default_rng(0))
    assert len(rounds) == 3  # ceil(14 / (3 * 2))
    for task, batches in rounds:
        assert len(batches) == 2
        assert all(0 <= i < [10, 4][task] for b in batches for i in b)
        assert all(len(set(b)) == len(b) for b in batches)
    assert {task for task, _ in rounds[:2]} == {0, 1}


def _small(cfg_name="tiny", **changes):
    return dataclasses.replace(PRESETS[cfg_name], **changes)


def _hits(results):
    return sorted(
        (r["method"], r["scheme"], r["rank"], r["task"], r["seed"], r["hits"])
        for r in results["records"]
    )


@pytest.mark.parametrize(("stop_at", "method"), [(4, "sr"), (15, "lora-ml")])
def test_killed_run_resumes_to_identical_results(tmp_path, stop_at, method):
    # tiny: 3 batches per retraining epoch, 2 epochs (steps 1-6), then 2 test tasks x 2 epochs
    # x 1 batch of LoRA fine-tuning (steps 7-10); LoRA-ML retrains in steps 11-16. Steps 4 and
    # 15 fall in the second retraining epoch of SR and LoRA-ML, after a checkpoint.
    cfg = _small(methods=("sr", "lora-ml"), head_only=False)
    full = run_experiment(cfg, [0], tmp_path / "full", progress=False)
    with pytest.raises(RunInterrupted):
        run_experiment(cfg, [0], tmp_path / "cut", progress=False, budget=StepBudget(stop_at))
    assert not (tmp_path / "cut" / "results.json").exists()
    ckpt = torch.load(tmp_path / "cut/seed0" / f"retrain-{method}.ckpt.pt", weights_only=True)
    assert ckpt["epoch"] == 1  # the resumed run starts from this checkpoint
    resumed = run_experiment(cfg, [0], tmp_path / "cut", progress=False)
    assert _hits(resumed) == _hits(full)
    for method in cfg.methods:
        a = torch.load(tmp_path / "full/seed0" / f"base-{method}.pt", weights_only=True)
        b = torch.load(tmp_path / "cut/seed0" / f"base-{method}.pt", weights_only=True)
        assert a["steps"] == b["steps"] == 6
        for key, value in a["encoder"].items():
            assert torch.equal(value, b["encoder"][key]), key
    # retraining changed the encoder (the resume comparison is not between untouched weights)
    from loraml.empirical.model import load_encoder

    start = load_encoder("tiny")[0].state_dict()
    assert any(not torch.equal(start[k], v) for k, v in a["encoder"].items())


def test_resumed_run_reports_the_wall_time_of_all_its_invocations(tmp_path):
    cfg = _small(methods=("sr",), head_only=False)
    out = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        run_experiment(cfg, [0], out, progress=False, budget=StepBudget(4))
    first = json.loads((out / "wall.json").read_text())["invocations"]
    assert len(first) == 1 and first[0]["seconds"] > 0  # written by the interrupted run too
    # as if the first invocation had run on another machine's transformers
    tf = report.versions()["transformers"]
    stored = json.loads((out / "wall.json").read_text())
    assert stored["invocations"][0]["versions"]["transformers"] == tf
    stored["invocations"][0]["versions"]["transformers"] = "0.0.1"
    (out / "wall.json").write_text(json.dumps(stored))
    results = run_experiment(cfg, [0], out, progress=False)
    ledger = json.loads((out / "wall.json").read_text())
    assert ledger["earlier_unrecorded"] is False
    assert [e["seconds"] for e in ledger["invocations"][:1]] == [first[0]["seconds"]]
    assert results["invocations"] == 2
    assert [v["transformers"] for v in results["invocation_versions"]] == ["0.0.1", tf]
    assert results["wall_seconds_total"] == pytest.approx(
        first[0]["seconds"] + results["wall_seconds"], abs=0.01
    )
    md = (out / "results.md").read_text()
    assert f"over 2 invocations (the last {results['wall_seconds']:.0f} s)" in md
    assert f"transformers 0.0.1 then {tf}, peft" in md
    assert "resumed under other versions of transformers: its records mix them" in md
    # a directory resumed without its ledger (made by older code): the total is unknown
    (out / "wall.json").unlink()
    again = run_experiment(cfg, [0], out, progress=False)
    assert again["wall_seconds_total"] is None and again["wall_seconds"] > 0
    # rerunning a finished run redoes nothing: the same records, read back (POWER.md says so)
    assert again["records"] == results["records"]
    assert "earlier invocations' wall time was not recorded" in (out / "results.md").read_text()


def test_resume_refuses_records_fine_tuned_from_another_encoder(tmp_path):
    # tiny: retraining is steps 1-6, then 2 test tasks x 2 epochs x 1 batch; a budget of 9
    # stops in the second task, after the first task's record is written
    from loraml.empirical.state import encoder_digest, load_checkpoint, save_checkpoint

    cfg = _small(methods=("sr",), head_only=False)
    out = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        run_experiment(cfg, [0], out, progress=False, budget=StepBudget(9))
    done_path = out / "seed0" / "finetune-sr.json"
    base_path = out / "seed0" / "base-sr.pt"
    records = json.loads(done_path.read_text())
    base = load_checkpoint(base_path)
    assert len(records) == 1
    assert records[0]["base_sha256"] == encoder_digest(base["encoder"])

    # the records beside another retrained encoder (copied to a machine that retrained anew):
    # refused before any work, the records untouched
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("config.json", "tasks.json", "data.json"):
        (moved / name).write_bytes((out / name).read_bytes())
    (moved / "seed0").mkdir()
    (moved / "seed0" / done_path.name).write_bytes(done_path.read_bytes())
    other = {k: v.clone() for k, v in base["encoder"].items()}
    name = next(iter(other))
    other[name].view(-1)[0] += 1e-3
    save_checkpoint({**base, "encoder": other}, moved / "seed0" / base_path.name)
    before = done_path.read_bytes()
    with pytest.raises(ValueError, match="fine-tuned from another retrained encoder") as err:
        run_experiment(cfg, [0], moved, progress=False)
    assert "delete finetune-sr.json" in str(err.value) and "\n" not in str(err.value)
    assert (moved / "seed0" / done_path.name).read_bytes() == before
    assert not (moved / "wall.json").exists()  # refused before the run started counting

    # a base not retrained yet is checked once retraining has made it
    (moved / "seed0" / base_path.name).unlink()
    (moved / "seed0" / (base_path.name + ".sha256")).unlink()
    forged = [{**r, "base_sha256": "0" * 64} for r in records]
    (moved / "seed0" / done_path.name).write_text(json.dumps(forged))
    with pytest.raises(ValueError, match="sha256 000000000000"):
        run_experiment(cfg, [0], moved, progress=False)
    assert json.loads((moved / "seed0" / done_path.name).read_text()) == forged

    # records from before the field existed cannot be checked and are taken as before; the
    # resumed run matches an uninterrupted one
    legacy = [{k: v for k, v in r.items() if k != "base_sha256"} for r in records]
    done_path.write_text(json.dumps(legacy))
    resumed = run_experiment(cfg, [0], out, progress=False)
    full = run_experiment(cfg, [0], tmp_path / "full", progress=False)
    assert _hits(resumed) == _hits(full)
    assert [r.get("base_sha256") for r in resumed["records"]] == [None, records[0]["base_sha256"]]


def test_wall_ledger_keeps_its_count_current_while_running(tmp_path):
    import time

    (tmp_path / "seed0").mkdir()  # an empty seed directory holds no earlier work
    ledger = R.WallLedger(tmp_path, interval=0.02).start()
    time.sleep(0.3)
    on_disk = json.loads((tmp_path / "wall.json").read_text())  # what a SIGKILL would leave
    assert on_disk["invocations"][0]["seconds"] >= 0.1
    ledger.close()
    final = json.loads((tmp_path / "wall.json").read_text())["invocations"][0]["seconds"]
    time.sleep(0.05)
    assert ledger.total() == ledger.seconds == pytest.approx(final, abs=1e-3)  # stopped at close
    # an unreadable ledger: the earlier time is unknown, the file is rewritten, the run goes on
    (tmp_path / "wall.json").write_text("{not json")
    with R.WallLedger(tmp_path) as again:
        pass
    assert again.total() is None and again.invocations == 1
    assert json.loads((tmp_path / "wall.json").read_text())["earlier_unrecorded"] is True
    # a process other than the main one of a multi-process run writes nothing
    (tmp_path / "wall.json").unlink()
    with R.WallLedger(tmp_path, write=False) as quiet:
        pass
    assert not (tmp_path / "wall.json").exists() and quiet.total() is not None


def test_tiny_preset_end_to_end_and_report_rebuilds_identically(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["empirical", "run", "--preset", "tiny", "--out", str(out), "--no-progress"])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    cfg = results["config"]
    n_test = len(cfg["tasks"]["test"])
    assert n_test == PRESETS["tiny"].n_test and len(cfg["tasks"]["retrain"]) == 3
    keys = {(r["method"], r["scheme"], r["rank"]) for r in results["records"]}
    assert keys == {(m, s, r) for m in M.RETRAIN_METHODS for s, r in (("lora", 2), ("head", 0))}
    assert len(results["records"]) == len(keys) * n_test
    for r in results["records"]:
        assert 0 <= r["hits"] <= r["n_eval"] and r["hits_at_1"] == r["hits"] / r["n_eval"]
    for row in results["summary"]:
        mine = [
            r["hits_at_1"]
            for r in results["records"]
            if (r["method"], r["scheme"], r["rank"]) == (row["method"], row["scheme"], row["rank"])
        ]
        assert row["mean"] == pytest.approx(np.mean(mine)) and row["stderr"] is None
    # LoRA-ML against every other method, for every fine-tuning scheme
    assert sorted((p["a"], p["b"], p["scheme"], p["rank"]) for p in results["paired"]) == sorted(
        ("lora-ml", b, s, r)
        for b in ("sr", "last-layer-ml", "reptile")
        for s, r in (("lora", 2), ("head", 0))
    )
    assert all(t["examples_per_s"] > 0 for t in results["throughput"])
    assert results["versions"]["torch"] == torch.__version__
    md = (out / "results.md").read_text()
    assert "| LoRA-ML-2 |" in md and "| SR |" in md and (out / "results.png").stat().st_size > 0
    assert "| Reptile | LoRA r=2 | 2 |" in md and "| Last-layer-ML | Last layer | 2 |" in md
    (out / "results.md").unlink()
    (out / "results.png").unlink()
    capsys.readouterr()
    assert main(["empirical", "report", str(out)]) == 0
    assert (out / "results.md").read_text() == md
    assert (out / "results.png").exists()
    assert "Hits@1" in capsys.readouterr().out
    # a rerun with the same command resumes from the finished files: same numbers
    assert main(["empirical", "run", "--preset", "tiny", "--out", str(out), "--no-progress"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert _hits(again) == _hits(results)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--preset", "tiny", "--candidates", "1"], "--candidates"),
        (["run", "--preset", "tiny", "--methods", "maml"], "methods"),
        (["run", "--preset", "tiny", "--model", "/no/such/model"], "--model"),
        (["run", "--preset", "paper"], "--data-path"),
        (["run", "--preset", "huge"], "invalid choice"),
        (["report", "/no/such/dir"], "not a directory"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(argv, message, capsys, tmp_path):
    if argv[0] == "run" and "--out" not in argv:
        argv = [*argv, "--out", str(tmp_path / "x"), "--no-progress"]
    with pytest.raises(SystemExit) if "huge" in argv else _nothing():
        rc = main(["empirical", *argv])
        assert rc == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_cli_refuses_other_settings_in_an_existing_run_dir(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = _small(methods=("sr",), ranks=(), epochs=1, ft_epochs=1)
    run_experiment(cfg, [0], out, progress=False)
    rc = main(["empirical", "run", "--preset", "tiny", "--out", str(out), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "other settings (epochs, ft_epochs, ranks)" in err and "\n" not in err
    (out / "results.json").write_text("{}")
    assert main(["empirical", "report", str(out)]) == 2
    assert "lacks 'config'" in capsys.readouterr().err


def test_run_dir_takes_more_methods_and_old_config_files(tmp_path):
    # A run directory may be resumed with more retraining methods: the earlier methods' files
    # are reused (not recomputed) and the new method's numbers equal those of a run of it alone.
    cfg = _small(ranks=(), epochs=1, ft_epochs=1)
    out = tmp_path / "run"
    first = run_experiment(dataclasses.replace(cfg, methods=("sr",)), [0], out, progress=False)
    sr_file = out / "seed0" / "finetune-sr.json"
    before = sr_file.stat().st_mtime_ns
    # a config.json written before test_data_path / test_persona_map existed still resumes
    stored = json.loads((out / "config.json").read_text())
    del stored["test_data_path"], stored["test_persona_map"]
    (out / "config.json").write_text(json.dumps(stored))
    both = run_experiment(
        dataclasses.replace(cfg, methods=("sr", "last-layer-ml")), [0], out, progress=False
    )
    assert sr_file.stat().st_mtime_ns == before
    assert json.loads((out / "config.json").read_text())["methods"] == ["sr", "last-layer-ml"]
    alone = run_experiment(
        dataclasses.replace(cfg, methods=("last-layer-ml",)),
        [0],
        tmp_path / "alone",
        progress=False,
    )
    assert _hits(both) == sorted(_hits(first) + _hits(alone))
    # a setting that changes numbers is still refused, naming it
    with pytest.raises(ValueError, match=r"other settings \(lr\)"):
        run_experiment(dataclasses.replace(cfg, lr=0.5), [0], out, progress=False)


def test_run_dir_refuses_other_tasks_under_the_same_settings(tmp_path):
    # data="auto" resolves by what the machine has, so equal settings can mean other tasks
    cfg = _small(methods=("sr",), ranks=(), epochs=1, ft_epochs=1)
    out = tmp_path / "run"
    run_experiment(cfg, [0], out, progress=False)
    split = R.load_split(cfg)
    other = dataclasses.replace(split, test=split.test[::-1])
    with pytest.raises(ValueError, match="holds a run on other tasks"):
        run_experiment(cfg, [0], out, progress=False, split=other)
    # a directory from before tasks.json: checked against results.json
    (out / "tasks.json").unlink()
    results = json.loads((out / "results.json").read_text())
    results["config"]["data_used"] = "chitchat"
    (out / "results.json").write_text(json.dumps(results))
    with pytest.raises(ValueError, match="data 'chitchat'; here 'tiny'"):
        run_experiment(cfg, [0], out, progress=False)
    results["config"]["data_used"] = "tiny"
    (out / "results.json").write_text(json.dumps(results))
    run_experiment(cfg, [0], out, progress=False)  # the same tasks: resumes
    assert (out / "tasks.json").exists()


def test_cli_retrains_on_one_file_and_tests_on_another(tmp_path, capsys):
    train = str(write_persona_file(tmp_path / "train.txt", {"a": 6, "b": 5, "c": 4, "d": 3}))
    valid = str(write_persona_file(tmp_path / "valid.txt", {"x": 3, "y": 5, "z": 4, "w": 3}))
    out = tmp_path / "run"
    argv = ["empirical", "run", "--preset", "tiny", "--data", "convai2", "--out", str(out)]
    argv += ["--data-path", train, "--test-data-path", valid, "--methods", "sr", "--ranks"]
    assert main([*argv, "--no-progress"]) == 0
    tasks = json.loads((out / "tasks.json").read_text())
    split = R.load_split(R.RunConfig(data="convai2", data_path=train, n_retrain=3, n_test=0))
    assert [t[0] for t in tasks["retrain"]] == [t.name for t in split.retrain]
    test = R.load_split(R.RunConfig(data="convai2", data_path=valid, n_retrain=0, n_test=2))
    assert [t[0] for t in tasks["test"]] == [t.name for t in test.test]
    assert [t[1] for t in tasks["retrain"]] == [8, 6, 4] and [t[1] for t in tasks["test"]] == [6, 4]
    results = json.loads((out / "results.json").read_text())
    assert {r["task"] for r in results["records"]} == {t.name for t in test.test}


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_summary_and_paired_comparison_by_hand():
    def rec(method, task, seed, h):
        return {
            "method": method,
            "scheme": "lora",
            "rank": 8,
            "task": task,
            "seed": seed,
            "hits_at_1": h,
        }

    records = [
        rec("sr", "a", 0, 0.2),
        rec("sr", "b", 0, 0.4),
        rec("sr", "c", 0, 0.3),
        rec("sr", "a", 1, 0.4),
        rec("sr", "b", 1, 0.6),
        rec("sr", "c", 1, 0.5),
        rec("lora-ml", "a", 0, 0.5),
        rec("lora-ml", "b", 0, 0.5),
        rec("lora-ml", "c", 0, 0.6),
        rec("lora-ml", "a", 1, 0.5),
        rec("lora-ml", "b", 1, 0.7),
        rec("lora-ml", "c", 1, 0.6),
    ]
    summary = {r["method"]: r for r in report.summarize(records)}
    # SR per-seed means 0.3 and 0.5: mean 0.4, standard error 0.1
    assert summary["sr"]["mean"] == pytest.approx(0.4)
    assert summary["sr"]["stderr"] == pytest.approx(0.1)
    assert summary["sr"]["per_seed"] == pytest.approx({"0": 0.3, "1": 0.5})
    (paired,) = report.paired_comparison(records)
    # per-task means: SR (0.3, 0.5, 0.4), LoRA-ML (0.5, 0.6, 0.6): differences 0.2, 0.1, 0.2
    assert paired["mean_diff"] == pytest.approx(0.5 / 3)
    assert (paired["wins"], paired["losses"], paired["ties"]) == (3, 0, 0)
    assert paired["p_sign"] == pytest.approx(0.25)
    d = np.array([0.2, 0.1, 0.2])
    t = d.mean() / (d.std(ddof=1) / math.sqrt(3))
    assert paired["t"] == pytest.approx(t)

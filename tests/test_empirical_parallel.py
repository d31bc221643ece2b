"""Several processes: data-parallel retraining gives the whole batch's gradient, fine-tuning
jobs dealt to processes give the numbers a single process gives, and the run's files are written
once. The multi-process checks launch two CPU processes (gloo) with torchrun."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loraml.empirical.parallel import Workers

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

pytestmark = [pytest.mark.empirical, pytest.mark.usefixtures("one_torch_thread")]

TESTS = Path(__file__).parent


@given(
    n=st.integers(1, 20),
    world=st.integers(1, 5),
    values=st.lists(st.floats(-10, 10), min_size=20, max_size=20),
)
def test_shard_weighted_means_average_to_the_batch_mean(n, world, values):
    items = list(range(n))
    shares = [Workers(rank, world).shard(items) for rank in range(world)]
    got = np.mean([w * np.mean([values[i] for i in share]) for share, w in shares])
    assert got == pytest.approx(np.mean(values[:n]), abs=1e-9)
    dealt = sorted(i for share, w in shares if w > 0 for i in share)
    assert dealt == items  # every item on exactly one process that counts


def test_several_processes_refuse_one_named_device(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="--device cuda:1 names one device"):
        Workers.from_env("cuda:1")


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *args]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_data_parallel_backward_gives_the_whole_batch_gradient(tmp_path):
    _torchrun([str(TESTS / "ddp_worker.py"), "gradient", str(tmp_path)], TESTS.parent)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rep in reports:
        assert rep["world"] == 2
        for name in ("batch5", "batch1"):  # shares of 3 and 2 examples; of 1 and none
            err, scale = rep[name]
            assert scale > 1e-3 and err <= 1e-5 * scale, (name, err, scale)
        err, scale = rep["unweighted"]  # the control: an average of per-process means
        assert err > 1e-2 * scale


def test_cli_under_torchrun_deals_fine_tuning_and_writes_once(tmp_path):
    from loraml.empirical import run as R
    from loraml.empirical.model import PairTokenizer, load_encoder

    out = tmp_path / "run"
    done = _torchrun(
        [
            "-m",
            "loraml",
            "empirical",
            "run",
            "--preset",
            "tiny",
            "--device",
            "cpu",
            "--methods",
            "lora-ml",
            "reptile",
            "--out",
            str(out),
            "--no-progress",
        ],
        tmp_path,
    )
    assert done.stdout.count("results:") == 1  # one report, from process 0
    results = json.loads((out / "results.json").read_text())
    cfg = results["config"]
    assert cfg["processes"] == 2 and cfg["device_used"].startswith("cpu")
    schemes = R.PRESETS["tiny"].schemes()
    keys = sorted((r["method"], r["scheme"], r["rank"], r["task"]) for r in results["records"])
    assert keys == sorted(
        (m, s, k, t)
        for m in ("lora-ml", "reptile")
        for s, k in schemes
        for t in cfg["tasks"]["test"]
    )
    assert sorted(p.name for p in (out / "seed0").iterdir()) == [
        "base-lora-ml.pt",
        "base-lora-ml.pt.sha256",
        "base-reptile.pt",
        "base-reptile.pt.sha256",
        "finetune-lora-ml.json",
        "finetune-reptile.json",
    ]
    # Jobs 0, 2, ... ran on process 0 and 1, 3, ... on process 1; a single process fine-tuning
    # the same retrained encoder gets the same numbers (a job is seeded by its key, not its rank).
    tiny = R.PRESETS["tiny"]
    split = R.load_split(tiny)
    _, tokenizer = load_encoder("tiny")
    ctx = R._Context(
        tiny, split, PairTokenizer(tokenizer, tiny.max_length), torch.device("cpu"),
        R.StepBudget(), False,
    )  # fmt: skip
    base = torch.load(out / "seed0" / "base-reptile.pt", weights_only=True)
    stored = json.loads((out / "seed0" / "finetune-reptile.json").read_text())
    jobs = [(s, k, i, t) for s, k in schemes for i, t in enumerate(split.test)]
    for job in (1, 2):  # one from each process
        scheme, rank, index, task = jobs[job]
        rec = R.finetune(
            base["encoder"], scheme, rank, task, (0, "reptile", scheme, rank, index), ctx
        )
        assert stored[job]["task"] == task.name and stored[job]["scheme"] == scheme
        assert rec["hits"] == stored[job]["hits"]


def test_two_process_run_killed_and_resumed_ends_with_the_same_numbers(tmp_path):
    # tiny LoRA-ML: 3 steps per retraining epoch; a kill at step 4 falls in the second epoch,
    # after the first checkpoint, which holds both processes' RNG states (dropout is on)
    worker = str(TESTS / "ddp_worker.py")
    _torchrun([worker, "run", str(tmp_path / "full")], TESTS.parent)
    _torchrun([worker, "run", str(tmp_path / "cut"), "4"], TESTS.parent)
    ckpt = torch.load(tmp_path / "cut/seed0/retrain-lora-ml.ckpt.pt", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["world"] == 2 and len(ckpt["rng_ranks"]) == 2
    assert not torch.equal(ckpt["rng_ranks"][0]["torch"], ckpt["rng_ranks"][1]["torch"])
    assert not (tmp_path / "cut/results.json").exists()
    _torchrun([worker, "run", str(tmp_path / "cut")], TESTS.parent)
    a = torch.load(tmp_path / "full/seed0/base-lora-ml.pt", weights_only=True)
    b = torch.load(tmp_path / "cut/seed0/base-lora-ml.pt", weights_only=True)
    assert a["steps"] == b["steps"] == 6
    for key, value in a["encoder"].items():
        assert torch.equal(value, b["encoder"][key]), key
    full, cut = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("full", "cut"))
    assert [r["hits"] for r in full["records"]] == [r["hits"] for r in cut["records"]]


def test_resume_needs_the_same_number_of_processes(tmp_path):
    from loraml.empirical.run import PRESETS, run_experiment

    seed_dir = tmp_path / "run" / "seed0"
    seed_dir.mkdir(parents=True)
    torch.save({"world": 2}, seed_dir / "retrain-sr.ckpt.pt")
    cfg = PRESETS["tiny"]
    with pytest.raises(ValueError, match="written by 2 processes; resume it with as many"):
        run_experiment(
            dataclasses.replace(cfg, methods=("sr",)),
            [0],
            tmp_path / "run",
            progress=False,
        )

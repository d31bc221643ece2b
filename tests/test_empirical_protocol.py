"""Protocol settings (issue 12): per-task batching with untouched absent tasks, the released
fine-tuning schedule, clipping and weight decay, best-epoch retraining selection, every-epoch
fine-tuning evaluation reported as last (primary) and best (optimistic)."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from loraml.empirical import methods as M  # noqa: E402
from loraml.empirical import run as R  # noqa: E402
from loraml.empirical.model import PairTokenizer, load_encoder  # noqa: E402
from loraml.empirical.optim import TaskRowAdamW  # noqa: E402
from loraml.empirical.run import PRESETS, RunInterrupted, StepBudget, run_experiment  # noqa: E402

pytestmark = [pytest.mark.empirical, pytest.mark.usefixtures("one_torch_thread")]


def test_per_task_batches_hold_one_task_each_in_turn_and_cover_every_example():
    sizes = [5, 3, 7]
    batches = M.per_task_batches(sizes, 2, np.random.default_rng(0))
    assert all(len({t for t, _ in b}) == 1 for b in batches)
    flat = [item for b in batches for item in b]
    assert sorted(flat) == sorted((t, i) for t, n in enumerate(sizes) for i in range(n))
    assert [b[0][0] for b in batches] == [0, 1, 2, 0, 1, 2, 0, 2, 2]
    # the same per-task permutations as the interleaved layout (same generator draws)
    inter = M.interleaved_batches(sizes, 2, np.random.default_rng(0))
    order = {t: [i for b in inter for u, i in b if u == t] for t in range(3)}
    assert {t: [i for b in batches for u, i in b if u == t] for t in range(3)} == order


def test_torch_adamw_skips_a_parameter_whose_grad_is_none():
    # the released scripts relied on this: momentum and weight decay leave it alone
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([a, b], lr=0.1, weight_decay=0.1)
    a.grad, b.grad = torch.ones(3), torch.ones(3)
    opt.step()
    before = b.detach().clone()
    a.grad, b.grad = torch.ones(3), None
    opt.step()
    assert torch.equal(b, before) and not torch.equal(a, before)


def test_task_row_adamw_equals_one_adamw_per_task_stepped_only_when_present():
    gen = torch.Generator().manual_seed(0)
    init = torch.randn(3, 4, 2, generator=gen)
    stacked = torch.nn.Parameter(init.clone())
    rows = [torch.nn.Parameter(init[t].clone()) for t in range(3)]
    ours = TaskRowAdamW([{"params": [stacked], "task_rows": True}], lr=0.05, weight_decay=0.01)
    ref = torch.optim.AdamW(rows, lr=0.05, weight_decay=0.01)
    schedule = [[0], [1], [0, 2], [2], [0], [1]]
    for present in schedule:
        grad = torch.randn(3, 4, 2, generator=gen)
        before = stacked.detach().clone()
        stacked.grad = grad.clone()
        ours.present = present
        ours.step()
        for t in range(3):
            rows[t].grad = grad[t].clone() if t in present else None
        ref.step()
        for t in range(3):
            if t not in present:  # absent: bit for bit untouched
                assert torch.equal(stacked[t], before[t])
            torch.testing.assert_close(stacked[t], rows[t], rtol=1e-6, atol=1e-7)
    # every task has moved, and its step count is how often it was present
    assert ours.state[stacked]["step"].tolist() == [3.0, 2.0, 2.0]


def _ctx(cfg):
    split = R.load_split(cfg)
    _, tokenizer = load_encoder("tiny")
    return R._Context(
        cfg, split, PairTokenizer(tokenizer, 32), torch.device("cpu"), StepBudget(), False
    )


@pytest.mark.parametrize("method", ["lora-ml", "last-layer-ml"])
def test_per_task_step_leaves_absent_tasks_adapters_and_heads_bit_identical(method):
    cfg = dataclasses.replace(PRESETS["tiny"], batching="per-task", weight_decay=0.01)
    ctx = _ctx(cfg)
    tasks = ctx.split.retrain

    def model_and_optimizer(per_task):
        model = M.build_retrain_model(
            method,
            load_encoder("tiny")[0],
            len(tasks),
            rank=2,
            alpha=16.0,
            dropout=0.0,
            generator=torch.Generator().manual_seed(0),
        )
        params = [p for p in model.parameters() if p.requires_grad]
        task_params = M.task_parameters(model) if per_task else []
        opt, sched = R._optimizer(params, 1e-2, ctx, 10, task_params=task_params)
        return model, opt, sched, task_params or M.task_parameters(model)

    for per_task in (True, False):
        model, opt, sched, task_params = model_and_optimizer(per_task)
        assert task_params
        # step 1 on task 0 gives its rows momentum; step 2 on task 1 only
        for t, where in ((0, "one"), (1, "two")):
            before = [p.detach().clone() for p in task_params]
            examples = list(tasks[t].train[:4])
            R._step(model, examples, [t] * len(examples), opt, sched, ctx, where)
        moved0 = any(not torch.equal(p[0], b[0]) for p, b in zip(task_params, before, strict=True))
        moved1 = any(not torch.equal(p[1], b[1]) for p, b in zip(task_params, before, strict=True))
        assert moved1  # the present task learns
        if per_task:  # absent tasks 0 (with momentum) and 2: bit-identical
            assert not moved0
            assert all(torch.equal(p[2], b[2]) for p, b in zip(task_params, before, strict=True))
        else:
            assert moved0  # plain AdamW moves an absent task by its momentum and decay


def test_released_schedule_ends_at_77_percent_of_peak():
    # warm-up 10 % of S steps, decay reaching 0 at 4 S: at step S the rate is
    # (4S - S) / (4S - 0.1 S) = 3 / 3.9 = 0.769 of the peak
    cfg = dataclasses.replace(PRESETS["tiny"], warmup_ratio=0.1)
    ctx = SimpleNamespace(cfg=cfg)
    for horizon, end in ((4.0, 3 / 3.9), (1.0, 0.0)):
        param = torch.nn.Parameter(torch.zeros(1))
        opt, sched = R._optimizer([param], 1.0, ctx, 100, horizon=horizon)
        rates = []
        for _ in range(100):
            rates.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        assert max(rates) == pytest.approx(1.0) and rates.index(max(rates)) == 10
        assert sched.get_last_lr()[0] == pytest.approx(end)


def test_no_clipping_lets_a_large_gradient_through():
    for clip, expect_norm in ((1.0, 1.0), (0.0, 200.0)):
        cfg = dataclasses.replace(PRESETS["tiny"], grad_clip=clip)
        param = torch.nn.Parameter(torch.zeros(4))
        param.grad = torch.full((4,), 100.0)
        R._clip([param], SimpleNamespace(cfg=cfg), "here")
        assert float(param.grad.norm()) == pytest.approx(expect_norm)


_PAPERLIKE = dataclasses.replace(
    PRESETS["tiny"],
    methods=("sr", "lora-ml"),
    ranks=(),
    batching="per-task",
    weight_decay=0.01,
    grad_clip=0.0,
    ft_decay_horizon=4.0,
    retrain_selection="best",
    ft_epochs=3,
)


def _hits(results):
    return sorted(
        (r["method"], r["scheme"], r["task"], r["seed"], tuple(r["hits_by_epoch"]))
        for r in results["records"]
    )


def test_paper_protocol_on_tiny_resumes_exactly_and_reports_last_and_best(tmp_path):
    full = run_experiment(_PAPERLIKE, [0], tmp_path / "full", progress=False)
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    assert config["batching"] == "per-task" and config["retrain_selection"] == "best"
    # retraining: best epoch by the retraining tasks' held-out hits, recorded per epoch
    sel = {s["method"]: s for s in full["retraining_selection"]}
    assert set(sel) == {"sr", "lora-ml"}
    for s in sel.values():
        assert len(s["epoch_hits"]) == 2
        assert s["selected_epoch"] == 1 + int(np.argmax(s["epoch_hits"]))
    # fine-tuning: every epoch evaluated; the last is the record's result
    for r in full["records"]:
        assert len(r["hits_by_epoch"]) == 3 and r["hits"] == r["hits_by_epoch"][-1]
    best = {(b["method"], b["scheme"], b["rank"]): b for b in full["summary_best_epoch"]}
    for row in full["summary"]:
        mine = [
            max(r["hits_by_epoch"]) / r["n_eval"]
            for r in full["records"]
            if (r["method"], r["scheme"], r["rank"]) == (row["method"], row["scheme"], row["rank"])
        ]
        b = best[(row["method"], row["scheme"], row["rank"])]
        assert b["mean"] == pytest.approx(np.mean(mine)) and b["mean"] >= row["mean"]
    md = (tmp_path / "full" / "results.md").read_text()
    assert "| Retraining (best epoch) |" in md and "optimistic" in md.lower()
    assert "Retraining epoch used" in md
    assert (
        "Protocol: per-task retraining batches, weight decay 0.01, gradient clipping none, "
        "fine-tuning decay horizon 4 x steps, retraining epoch kept: best" in md
    )
    # killed in LoRA-ML's second retraining epoch (SR: 2 x 3 steps, 2 tasks x 3 head epochs
    # = steps 1-12; LoRA-ML's epoch 2 = steps 16-18): resumes to the same numbers
    with pytest.raises(RunInterrupted):
        run_experiment(_PAPERLIKE, [0], tmp_path / "cut", progress=False, budget=StepBudget(17))
    ckpt = R.load_checkpoint(tmp_path / "cut" / "seed0" / "retrain-lora-ml.ckpt.pt")
    assert ckpt["epoch"] == 1 and ckpt["best"]["epoch"] == 1
    resumed = run_experiment(_PAPERLIKE, [0], tmp_path / "cut", progress=False)
    assert _hits(resumed) == _hits(full)
    assert resumed["retraining_selection"] == full["retraining_selection"]


def test_old_run_directory_without_the_settings_resumes_with_the_old_behaviour(tmp_path):
    cfg = dataclasses.replace(PRESETS["tiny"], methods=("sr",), ranks=(), epochs=1, ft_epochs=1)
    out = tmp_path / "run"
    run_experiment(cfg, [0], out, progress=False)
    stored = json.loads((out / "config.json").read_text())
    for key in ("batching", "grad_clip", "ft_decay_horizon", "retrain_selection", "exclude_tasks"):
        del stored[key]
    (out / "config.json").write_text(json.dumps(stored))
    run_experiment(cfg, [0], out, progress=False)  # the missing keys read as the old defaults
    with pytest.raises(ValueError, match=r"other settings \(batching\)"):
        run_experiment(dataclasses.replace(cfg, batching="per-task"), [0], out, progress=False)


def test_paper_preset_carries_the_released_protocol_and_cpu_ours():
    paper, cpu = PRESETS["paper"], PRESETS["cpu"]
    assert (paper.batching, paper.weight_decay, paper.grad_clip) == ("per-task", 0.01, 0.0)
    assert (paper.ft_decay_horizon, paper.retrain_selection) == (4.0, "best")
    assert (cpu.batching, cpu.weight_decay, cpu.grad_clip) == ("interleaved", 0.0, 1.0)
    assert (cpu.ft_decay_horizon, cpu.retrain_selection) == (1.0, "last")


def test_excluded_task_is_never_chosen_and_the_next_largest_take_its_place(tmp_path):
    from tests.helpers import write_persona_file

    train = write_persona_file(tmp_path / "train.txt", {"a": 7, "b": 6, "c": 5, "d": 4, "e": 3})
    valid = write_persona_file(tmp_path / "valid.txt", {"x": 6, "y": 5, "z": 4})
    base = dataclasses.replace(PRESETS["tiny"], data="convai2", data_path=str(train))
    # one file: groups by size a > b > c > d > e, named persona-exact-0..4 in that order
    names = lambda split: ([t.name for t in split.retrain], [t.name for t in split.test])  # noqa: E731
    plain = R.load_split(dataclasses.replace(base, n_retrain=2, n_test=2))
    assert names(plain) == (
        ["persona-exact-0", "persona-exact-1"],
        ["persona-exact-2", "persona-exact-3"],
    )
    cut = R.load_split(
        dataclasses.replace(base, n_retrain=2, n_test=2, exclude_tasks=("persona-exact-0",))
    )
    assert names(cut) == (
        ["persona-exact-1", "persona-exact-2"],
        ["persona-exact-3", "persona-exact-4"],
    )
    # two files: each file's list skips the name
    two = dataclasses.replace(
        base, test_data_path=str(valid), n_retrain=2, n_test=2, exclude_tasks=("persona-exact-0",)
    )
    assert names(R.load_split(two)) == (
        ["persona-exact-1", "persona-exact-2"],
        ["persona-exact-1", "persona-exact-2"],
    )
    assert PRESETS["paper"].exclude_tasks == ("persona-0",) and PRESETS["cpu"].exclude_tasks == ()


def test_head_only_epochs_score_held_out_features_bit_for_bit_as_evaluate(monkeypatch):
    """Head-only fine-tuning scores the held-out examples from features computed once; each
    epoch's scores equal, bit for bit, what a fresh forward pass (:func:`evaluate`'s) gives."""
    from loraml.empirical.model import PairScorer

    ctx = _ctx(PRESETS["tiny"])
    task = ctx.split.test[0]
    original = PairScorer.score_pooled
    checks: list[bool] = []
    inside = []

    def spy(self, pooled, batch):
        scores = original(self, pooled, batch)
        if not self.training and not inside:
            inside.append(True)
            try:
                fresh = self(batch).float()  # the encoder run again on the batch
            finally:
                inside.pop()
            checks.append(torch.equal(scores.float(), fresh))
        return scores

    monkeypatch.setattr(PairScorer, "score_pooled", spy)
    state = load_encoder("tiny")[0].state_dict()
    rec = R.finetune(state, "head", 0, task, (0, "sr", "head", 0, 0), ctx)
    n_batches = -(-len(task.eval) // ctx.cfg.eval_batch_size)
    assert checks == [True] * (ctx.cfg.ft_epochs * n_batches)
    assert len(rec["hits_by_epoch"]) == ctx.cfg.ft_epochs

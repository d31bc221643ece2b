"""Run by ``tests/test_empirical_parallel.py`` under ``torchrun --nproc_per_node 2`` on CPU.

``ddp_worker.py gradient OUT``: checks that a data-parallel backward pass
(:func:`loraml.empirical.run._backward` through :class:`loraml.empirical.parallel.Workers`) gives
every process the gradient of the whole batch's mean loss, and writes what it measured to
``OUT/rank<r>.json``
for the test to judge.

``ddp_worker.py run OUT [STOP]``: runs the tiny preset's LoRA-ML (dropout on) into ``OUT``,
stopped after ``STOP`` optimizer steps if given (a kill), for the resume test.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
from torch import nn

from loraml.empirical import methods as M
from loraml.empirical.data import load_tasks
from loraml.empirical.lora import MultiTaskLoRALinear
from loraml.empirical.model import PairTokenizer, candidate_cross_entropy, load_encoder
from loraml.empirical.parallel import Workers
from loraml.empirical.run import PRESETS, StepBudget, _backward, _Context


def _errors(model: nn.Module, reference: nn.Module) -> tuple[float, float]:
    """(max |grad - reference grad|, max |reference grad|) over all parameters."""
    err = scale = 0.0
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        h = q.grad if q.grad is not None else torch.zeros_like(q)
        err, scale = max(err, float((g - h).abs().max())), max(scale, float(h.abs().max()))
    return err, scale


def _whole_batch(reference: nn.Module, ctx: _Context, examples, task_ids) -> nn.Module:
    """``reference`` with the gradient of the mean loss over the whole batch, in one process."""
    reference.zero_grad(set_to_none=True)
    batch = ctx.pairs.encode(examples, task_ids)
    candidate_cross_entropy(reference(batch), batch.labels).backward()
    return reference


def gradient(out: Path) -> None:
    torch.set_num_threads(1)
    workers = Workers.from_env("cpu")
    split = load_tasks("tiny", n_retrain=3, n_test=1, n_candidates=4, seed=0)
    encoder, tokenizer = load_encoder("tiny")
    gen = torch.Generator().manual_seed(0)
    model = M.build_retrain_model(
        "lora-ml", encoder, 3, rank=2, alpha=4.0, dropout=0.0, generator=gen
    )
    with torch.no_grad():  # adapters that matter, and no dropout anywhere: a deterministic loss
        for module in model.modules():
            if isinstance(module, MultiTaskLoRALinear):
                module.lora_B.normal_(generator=gen)
            if isinstance(module, nn.Dropout):
                module.p = 0.0
    reference = copy.deepcopy(model)
    net = workers.wrap(model)
    ctx = _Context(
        PRESETS["tiny"],
        split,
        PairTokenizer(tokenizer, 32),
        torch.device("cpu"),
        StepBudget(),
        False,
        workers,
    )
    report = {"rank": workers.rank, "world": workers.world}
    five = [split.retrain[i % 3].train[i] for i in range(5)], [i % 3 for i in range(5)]
    one = five[0][:1], five[1][:1]
    for name, (examples, task_ids) in (("batch5", five), ("batch1", one)):
        # batch5: shares of 3 and 2 examples; batch1 leaves rank 1 with nothing
        model.zero_grad(set_to_none=True)
        _backward(net, examples, task_ids, ctx)
        report[name] = _errors(model, _whole_batch(reference, ctx, examples, task_ids))
    # a control: each process's share of the batch of 5 unweighted (an average of means)
    model.zero_grad(set_to_none=True)
    share, _ = workers.shard(list(zip(*five, strict=True)))
    batch = ctx.pairs.encode([e for e, _ in share], [t for _, t in share])
    candidate_cross_entropy(net(batch), batch.labels).backward()
    report["unweighted"] = _errors(model, _whole_batch(reference, ctx, *five))
    (out / f"rank{workers.rank}.json").write_text(json.dumps(report))
    workers.close()


def run(out: Path, stop: int | None) -> None:
    import dataclasses

    from loraml.empirical.run import RunInterrupted, run_experiment

    torch.set_num_threads(1)
    cfg = dataclasses.replace(PRESETS["tiny"], methods=("lora-ml",), ranks=(), device="cpu")
    try:
        run_experiment(cfg, [0], out, progress=False, budget=StepBudget(stop))
    except RunInterrupted:
        pass


if __name__ == "__main__":
    if sys.argv[1] == "gradient":
        gradient(Path(sys.argv[2]))
    else:
        run(Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None)

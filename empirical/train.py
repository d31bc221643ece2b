"""Training of the language experiment: the retraining and fine-tuning loops and their steps.

One optimizer step (:func:`_step`: loss, clipping, divergence checks), the optimizer and schedule
(:func:`_optimizer`), hits@1 evaluation (:func:`evaluate`), retraining by one method with
per-epoch checkpoints (:func:`retrain`, Reptile's epoch), and fine-tuning of a retrained encoder
on one unseen task (:func:`finetune`, head-only fine-tuning). :class:`_Context` is what the loops
share; :class:`Diverged` and :class:`RunInterrupted` (raised by :class:`StepBudget`) stop a run.
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from loraml.empirical import methods as M
from loraml.empirical.config import RunConfig
from loraml.empirical.model import (
    PairScorer,
    PairTokenizer,
    candidate_cross_entropy,
    hits_at_1,
    load_encoder,
)
from loraml.empirical.parallel import Workers
from loraml.empirical.state import (
    CheckpointError,
    _checksum_path,
    _rng_state,
    _set_rng_state,
    load_checkpoint,
    save_checkpoint,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from loraml.empirical.data import Example, Task, TaskSplit
    from loraml.empirical.model import PairBatch


class RunInterrupted(RuntimeError):
    """Raised by :class:`StepBudget` to stop a run after a given number of optimizer steps."""


class Diverged(RuntimeError):
    """A loss, gradient, parameter or score became NaN or infinite: the run stops, one line.

    The message names the method, seed, epoch and step; the last checkpoint written (at the end
    of the last finite epoch) is kept, and no result is written.
    """


@dataclass
class StepBudget:
    """Counts optimizer steps and raises :class:`RunInterrupted` after ``limit`` (None: never).

    Used by tests to kill a run at a chosen step and check that resuming reproduces it.
    """

    limit: int | None = None
    steps: int = 0

    def tick(self) -> None:
        """Count one step; raise when the limit is reached."""
        self.steps += 1
        if self.limit is not None and self.steps >= self.limit:
            raise RunInterrupted(f"stopped after {self.steps} steps")


@dataclass
class _Context:
    """What the loops share: config, data, tokenizer, device, run options."""

    cfg: RunConfig
    split: TaskSplit
    pairs: PairTokenizer
    device: torch.device
    budget: StepBudget
    progress: bool
    workers: Workers = field(default_factory=Workers)


def _derive(*parts: object) -> int:
    """A 63-bit seed derived from ``parts`` (stable across processes, unlike ``hash``)."""
    return zlib.crc32(repr(parts).encode()) * 2**31 + zlib.crc32(repr(parts[::-1]).encode())


# --------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------
def _autocast(ctx: _Context) -> Any:
    return torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=ctx.cfg.bf16)


def _batch(ctx: _Context, examples: Sequence[Example], task_ids: Sequence[int]) -> Any:
    return ctx.pairs.encode(examples, task_ids).to(ctx.device)


def _stop_unless_finite(value: float, where: str, what: str) -> None:
    """Raise :class:`Diverged` naming ``where`` (method, seed, epoch, step) unless finite."""
    if not math.isfinite(value):
        raise Diverged(
            f"{where}: {what} is {value}; the run stopped (no result written, the last "
            "finite epoch's checkpoint kept); lower the learning rate"
        )


def _check_parameters(params: Sequence[torch.nn.Parameter], where: str) -> None:
    """Raise :class:`Diverged` if any parameter holds a NaN or an infinity."""
    with torch.no_grad():
        if not all(bool(torch.isfinite(p).all()) for p in params):
            _stop_unless_finite(float("nan"), where, "a model parameter")


def _optimizer(
    params: Sequence[torch.nn.Parameter],
    lr: float,
    ctx: _Context,
    steps: int,
    horizon: float = 1.0,
    task_params: Sequence[torch.nn.Parameter] = (),
):
    """AdamW and its schedule: warm-up over ``warmup_ratio * steps``, then linear decay
    reaching 0 at ``horizon * steps``. With ``task_params`` (per-task batching) those
    parameters' rows are updated only for the tasks present in a batch
    (:class:`loraml.empirical.optim.TaskRowAdamW`)."""
    from transformers import get_linear_schedule_with_warmup

    if task_params:
        from loraml.empirical.optim import TaskRowAdamW

        mine = {id(p) for p in task_params}
        groups = [
            {"params": [p for p in params if id(p) not in mine]},
            {"params": [p for p in params if id(p) in mine], "task_rows": True},
        ]
        optimizer: torch.optim.Optimizer = TaskRowAdamW(
            groups, lr=lr, weight_decay=ctx.cfg.weight_decay
        )
    else:
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=ctx.cfg.weight_decay)
    warmup = int(round(ctx.cfg.warmup_ratio * steps))
    total = steps if horizon == 1 else int(math.ceil(horizon * steps))
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, total)


def _clip(params: Sequence[torch.nn.Parameter], ctx: _Context, where: str) -> None:
    """Clip the gradient norm at ``grad_clip`` (0: off); stop if the gradient is not finite."""
    if ctx.cfg.grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, ctx.cfg.grad_clip)
        _stop_unless_finite(float(norm), where, "the gradient norm")


def _backward(
    model: torch.nn.Module,
    examples: Sequence[Example],
    task_ids: Sequence[int],
    ctx: _Context,
    data_parallel: bool = True,
) -> float:
    """Backpropagate the mean loss of a batch; returns the mean loss.

    With ``data_parallel`` (retraining) the batch is a global one: this process takes its share
    and weights its loss (:meth:`loraml.empirical.parallel.Workers.shard`); without (fine-tuning,
    where each process runs its own jobs) the whole batch.
    """
    pairs = list(zip(examples, task_ids, strict=True))
    share, weight = ctx.workers.shard(pairs) if data_parallel else (pairs, 1.0)
    batch = _batch(ctx, [ex for ex, _ in share], [t for _, t in share])
    model.train()
    with _autocast(ctx):
        loss = candidate_cross_entropy(model(batch), batch.labels)
    (loss * weight).backward()
    return float(loss.detach())


def _step(
    model: torch.nn.Module,
    examples: Sequence[Example],
    task_ids: Sequence[int],
    optimizer: Any,
    scheduler: Any,
    ctx: _Context,
    where: str,
    data_parallel: bool = True,
) -> float:
    """One optimizer step on a batch (see :func:`_backward`); returns the loss.

    Stops with :class:`Diverged` (naming ``where``) when the loss or the gradient is not finite.
    """
    optimizer.zero_grad(set_to_none=True)
    loss = _backward(model, examples, task_ids, ctx, data_parallel)
    _stop_unless_finite(loss, where, "the training loss")
    _clip([p for g in optimizer.param_groups for p in g["params"]], ctx, where)
    if hasattr(optimizer, "present"):  # per-task batching: which tasks' rows may move
        optimizer.present = sorted(set(task_ids))
    optimizer.step()
    scheduler.step()
    ctx.budget.tick()
    return loss


@torch.no_grad()
def evaluate(
    model: PairScorer,
    examples: Sequence[Example],
    ctx: _Context,
    where: str = "evaluation",
    task_id: int = 0,
) -> tuple[int, int]:
    """(hits, total): hits@1 counts of ``model`` on ``examples`` (eval mode, no dropout).

    An example whose scores are not all finite never counts as a hit (``argmax`` over NaN
    returns 0); any such score stops the run with :class:`Diverged` naming ``where``.
    ``task_id`` selects the head and adapter of a retraining task (0 for fine-tuned models).
    """
    model.eval()
    hits = 0
    for i in range(0, len(examples), ctx.cfg.eval_batch_size):
        chunk = examples[i : i + ctx.cfg.eval_batch_size]
        batch = _batch(ctx, chunk, [task_id] * len(chunk))
        with _autocast(ctx):
            scores = model(batch).float()
        hits += _finite_hits(scores, batch.labels, where)
    return hits, len(examples)


def _finite_hits(scores: torch.Tensor, labels: torch.Tensor, where: str) -> int:
    """Hits@1 of (B, K) ``scores``; a score that is not finite stops the run (Diverged)."""
    finite = torch.isfinite(scores).all(dim=-1)
    hits = int(hits_at_1(scores[finite], labels[finite]))
    if not bool(finite.all()):
        _stop_unless_finite(float("nan"), where, "a held-out score")
    return hits


def _progress(ctx: _Context, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not ctx.progress, leave=False, dynamic_ncols=True)


# --------------------------------------------------------------------------------------------
# Retraining
# --------------------------------------------------------------------------------------------
def _base_encoder(ctx: _Context) -> torch.nn.Module:
    """The pretrained encoder (for ``tiny``: the same seeded random weights for every seed)."""
    encoder, _ = load_encoder(ctx.cfg.model, seed=0)
    return encoder


def retrain(method: str, seed: int, seed_dir: Path, ctx: _Context) -> dict[str, Any]:
    """Retrain with ``method`` (resuming from its checkpoint); return the final base file's content.

    Returns
    -------
    dict
        ``encoder`` (state dict of the retrained encoder, adapters discarded; with
        ``retrain_selection="best"`` the best epoch's), ``seconds``, ``examples`` (retraining
        examples processed), ``steps``, and ``selected_epoch`` and ``epoch_hits`` (hits@1 on the
        retraining tasks' held-out dialogues per epoch; ``retrain_selection="best"`` only).
    """
    final = seed_dir / f"base-{method}.pt"
    if final.exists():
        return load_checkpoint(final)
    cfg, tasks = ctx.cfg, ctx.split.retrain
    sizes = [len(t.train) for t in tasks]
    workers = ctx.workers
    # Dropout masks: one stream per process (the single-process stream as before).
    torch.manual_seed(
        _derive(seed, method, "torch", *([workers.rank] if workers.world > 1 else []))
    )
    generator = torch.Generator().manual_seed(_derive(seed, method, "init"))
    model = M.build_retrain_model(
        method,
        _base_encoder(ctx),
        len(tasks),
        rank=cfg.lora_rank,
        alpha=cfg.lora_alpha,
        dropout=cfg.dropout,
        generator=generator,
    ).to(ctx.device)
    net = workers.wrap(model)  # what the training steps call; ``model`` holds the same weights
    params = [p for p in model.parameters() if p.requires_grad]
    reptile = method == "reptile"
    per_task = cfg.batching == "per-task"
    if reptile:
        per_epoch = len(
            M.reptile_rounds(
                sizes, cfg.batch_size, cfg.reptile_inner_steps, np.random.default_rng(0)
            )
        )
        optimizer, scheduler = _optimizer(params, cfg.reptile_outer_lr, ctx, cfg.epochs * per_epoch)
    else:
        per_epoch = len(_retrain_batches(sizes, ctx, np.random.default_rng(0)))
        task_params = M.task_parameters(model) if per_task else []
        optimizer, scheduler = _optimizer(
            params, cfg.lr, ctx, cfg.epochs * per_epoch, task_params=task_params
        )

    ckpt_path = seed_dir / f"retrain-{method}.ckpt.pt"
    start, seconds, examples = 0, 0.0, 0
    best: dict[str, Any] | None = None
    epoch_hits: list[float] = []
    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        if ckpt.get("world", 1) != workers.world:
            raise ValueError(
                f"{ckpt_path} was written by {ckpt.get('world', 1)} processes; resume it with "
                f"as many (this run has {workers.world})"
            )
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            _set_rng_state(ckpt["rng"] if workers.world == 1 else ckpt["rng_ranks"][workers.rank])
            start, seconds, examples = ckpt["epoch"], ckpt["seconds"], ckpt["examples"]
            best, epoch_hits = ckpt.get("best"), list(ckpt.get("epoch_hits", []))
        except (KeyError, IndexError, RuntimeError, TypeError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(
                f"{ckpt_path} does not fit this run ({first[:200]}); delete it to retrain"
            ) from None

    for epoch in range(start, cfg.epochs):
        # The same batch order for every method of this seed and epoch: an equal comparison.
        rng = np.random.default_rng([seed, epoch, 7919])
        t0 = time.perf_counter()
        where = f"{method}, seed {seed}, retraining epoch {epoch + 1}"
        if reptile:
            examples += _reptile_epoch(net, optimizer, scheduler, rng, sizes, seed, epoch, ctx)
        else:
            batches = _retrain_batches(sizes, ctx, rng)
            bar = _progress(
                ctx, len(batches), f"seed {seed} {method} epoch {epoch + 1}/{cfg.epochs}"
            )
            for step, items in enumerate(batches, 1):
                chunk = [tasks[t].train[i] for t, i in items]
                loss = _step(
                    net,
                    chunk,
                    [t for t, _ in items],
                    optimizer,
                    scheduler,
                    ctx,
                    f"{where}, step {step}",
                )
                examples += len(items)
                bar.set_postfix(loss=f"{loss:.3f}")
                bar.update()
            bar.close()
        _check_parameters(params, f"{where}, end of epoch")
        seconds += time.perf_counter() - t0
        if cfg.retrain_selection == "best":
            hits, total = 0, 0
            for t, task in enumerate(tasks):
                h, n = evaluate(
                    model, task.eval, ctx, f"{where}, selection", t if model.per_task_heads else 0
                )
                hits, total = hits + h, total + n
            epoch_hits.append(hits / total if total else 0.0)
            if best is None or epoch_hits[-1] > best["hits"]:
                best = {
                    "epoch": epoch + 1,
                    "hits": epoch_hits[-1],
                    "encoder": {
                        k: v.detach().cpu().clone()
                        for k, v in M.retrained_encoder(model).state_dict().items()
                    },
                }
        rng_ranks = workers.gather(_rng_state())
        if workers.main:
            state = {
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng_ranks[0],
                "seconds": seconds,
                "examples": examples,
            }
            if best is not None:
                state.update(best=best, epoch_hits=epoch_hits)
            if workers.world > 1:
                state.update(world=workers.world, rng_ranks=rng_ranks)
            save_checkpoint(state, ckpt_path)
        workers.barrier()
    if best is not None:
        encoder = best["encoder"]
    else:
        encoder = {k: v.cpu() for k, v in M.retrained_encoder(model).state_dict().items()}
    result = {
        "encoder": encoder,
        "seconds": seconds,
        "examples": examples,
        "steps": scheduler.last_epoch,
    }
    if best is not None:
        result.update(selected_epoch=best["epoch"], epoch_hits=epoch_hits)
    if workers.main:
        save_checkpoint(result, final)
        ckpt_path.unlink(missing_ok=True)
        _checksum_path(ckpt_path).unlink(missing_ok=True)
    workers.barrier()
    return result


def _retrain_batches(
    sizes: Sequence[int], ctx: _Context, rng: np.random.Generator
) -> list[list[tuple[int, int]]]:
    """One retraining epoch's batches of (task, example) in the configured layout."""
    if ctx.cfg.batching == "per-task":
        return M.per_task_batches(sizes, ctx.cfg.batch_size, rng)
    return M.interleaved_batches(sizes, ctx.cfg.batch_size, rng)


def _reptile_epoch(
    model: torch.nn.Module,
    outer_opt: Any,
    outer_sched: Any,
    rng: np.random.Generator,
    sizes: Sequence[int],
    seed: int,
    epoch: int,
    ctx: _Context,
) -> int:
    """One Reptile epoch (see :mod:`loraml.empirical.methods`); returns the examples processed."""
    cfg, tasks = ctx.cfg, ctx.split.retrain
    params = [p for g in outer_opt.param_groups for p in g["params"]]
    rounds = M.reptile_rounds(sizes, cfg.batch_size, cfg.reptile_inner_steps, rng)
    bar = _progress(ctx, len(rounds), f"seed {seed} reptile epoch {epoch + 1}/{cfg.epochs}")
    examples = 0
    for outer, (task, batches) in enumerate(rounds, 1):
        start = [p.detach().clone() for p in params]
        inner_opt = torch.optim.AdamW(
            params, lr=cfg.reptile_inner_lr, weight_decay=cfg.weight_decay
        )
        for inner, indices in enumerate(batches, 1):
            where = (
                f"reptile, seed {seed}, retraining epoch {epoch + 1}, outer step {outer}, "
                f"inner step {inner}"
            )
            inner_opt.zero_grad(set_to_none=True)
            loss = _backward(
                model, [tasks[task].train[i] for i in indices], [0] * len(indices), ctx
            )
            _stop_unless_finite(loss, where, "the training loss")
            _clip(params, ctx, where)
            inner_opt.step()
            examples += len(indices)
        with torch.no_grad():  # outer "gradient" theta - theta_inner, taken at theta
            for p, p0 in zip(params, start, strict=True):
                p.grad = p0 - p
                p.copy_(p0)
        outer_opt.step()
        outer_sched.step()
        outer_opt.zero_grad(set_to_none=True)
        ctx.budget.tick()
        bar.update()
    bar.close()
    return examples


# --------------------------------------------------------------------------------------------
# Fine-tuning
# --------------------------------------------------------------------------------------------
def finetune(
    encoder_state: dict[str, torch.Tensor],
    scheme: str,
    rank: int,
    task: Task,
    key: tuple,
    ctx: _Context,
) -> dict[str, Any]:
    """Fine-tune a copy of the retrained encoder on ``task``; return its hits@1 record.

    Everything random is seeded from ``key`` = (seed, method, scheme, rank, task index), so a
    task's result does not depend on what ran before it.
    """
    cfg = ctx.cfg
    torch.manual_seed(_derive(*key, "torch"))
    rng = np.random.default_rng(_derive(*key, "order") % 2**63)
    encoder = _base_encoder(ctx)
    encoder.load_state_dict(encoder_state)
    model = M.build_finetune_model(
        encoder,
        scheme,
        rank=rank,
        alpha=cfg.lora_alpha,
        dropout=cfg.dropout,
        generator=torch.Generator().manual_seed(_derive(*key, "head")),
    ).to(ctx.device)
    train = task.train
    n_batches = -(-len(train) // cfg.batch_size)
    optimizer, scheduler = _optimizer(
        [p for p in model.parameters() if p.requires_grad],
        cfg.ft_lr,
        ctx,
        cfg.ft_epochs * n_batches,
        horizon=cfg.ft_decay_horizon,
    )
    seed, method = key[0], key[1]
    where = f"fine-tuning {method} (seed {seed}) by {scheme} r={rank} on {task.name}"
    by_epoch: list[int] = []
    seconds = 0.0
    if scheme == "head":
        seconds = _train_head(model, train, optimizer, scheduler, rng, ctx, where, by_epoch, task)
    else:
        for epoch in range(cfg.ft_epochs):
            t0 = time.perf_counter()
            order = rng.permutation(len(train))
            for step, i in enumerate(range(0, len(train), cfg.batch_size), 1):
                chunk = [train[j] for j in order[i : i + cfg.batch_size]]
                here = f"{where}, epoch {epoch + 1}, step {step}"
                _step(model, chunk, [0] * len(chunk), optimizer, scheduler, ctx, here, False)
            seconds += time.perf_counter() - t0
            # every epoch (eval mode draws no random numbers: training is unchanged)
            by_epoch.append(evaluate(model, task.eval, ctx, f"{where}, epoch {epoch + 1}")[0])
    hits, total = by_epoch[-1], len(task.eval)
    return {
        "hits": hits,
        "n_eval": total,
        "hits_at_1": hits / total if total else float("nan"),
        "hits_by_epoch": by_epoch,
        "seconds": seconds,
        "examples": cfg.ft_epochs * len(train),
    }


@torch.no_grad()
def _frozen_features(
    model: PairScorer, examples: Sequence[Example], ctx: _Context
) -> list[tuple[torch.Tensor, PairBatch]]:
    """(first-token states, batch) of ``examples``, batch by batch as :func:`evaluate` cuts
    them, from the model in its current mode (head-only fine-tuning: eval, frozen encoder)."""
    out = []
    for i in range(0, len(examples), ctx.cfg.eval_batch_size):
        chunk = examples[i : i + ctx.cfg.eval_batch_size]
        batch = _batch(ctx, chunk, [0] * len(chunk))
        with _autocast(ctx):
            out.append((model.pooled(batch), batch))
    return out


def _train_head(
    model: PairScorer,
    train: Sequence[Example],
    optimizer: Any,
    scheduler: Any,
    rng: np.random.Generator,
    ctx: _Context,
    where: str,
    by_epoch: list[int],
    task: Task,
) -> float:
    """Head-only fine-tuning: the frozen encoder's features are computed once (eval mode, no
    dropout in the body), then the fresh head trains on them (head dropout active). Appends
    each epoch's held-out hits to ``by_epoch``; returns the training seconds.

    The held-out examples' features are computed once too, batch by batch as
    :func:`evaluate` computes them, and each epoch's scores come from the head on them: the
    same numbers as :func:`evaluate`'s (the encoder neither trains nor draws dropout here), for a
    third of its encoder passes over three epochs.
    """
    cfg = ctx.cfg
    t0 = time.perf_counter()
    model.eval()
    encoded = _frozen_features(model, train, ctx)
    features = torch.cat(
        [pooled.float().view(batch.size, batch.n_candidates, -1) for pooled, batch in encoded]
    )
    targets = torch.cat([batch.labels for _, batch in encoded])
    k = features.shape[1]
    seconds = time.perf_counter() - t0
    held_out = _frozen_features(model, task.eval, ctx)  # outside the training seconds
    for epoch in range(cfg.ft_epochs):
        t0 = time.perf_counter()
        model.heads.train()
        order = torch.as_tensor(rng.permutation(len(train)), device=features.device)
        for step, i in enumerate(range(0, len(train), cfg.batch_size), 1):
            here = f"{where}, epoch {epoch + 1}, step {step}"
            idx = order[i : i + cfg.batch_size]
            rows = features[idx].reshape(-1, features.shape[-1])
            scores = model.heads(rows).view(len(idx), k)
            loss = candidate_cross_entropy(scores, targets[idx])
            _stop_unless_finite(float(loss.detach()), here, "the training loss")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            _clip(list(model.heads.parameters()), ctx, here)
            optimizer.step()
            scheduler.step()
            ctx.budget.tick()
        seconds += time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            by_epoch.append(
                sum(
                    _finite_hits(
                        model.score_pooled(pooled, batch).float(),
                        batch.labels,
                        f"{where}, epoch {epoch + 1}",
                    )
                    for pooled, batch in held_out
                )
            )
    return seconds

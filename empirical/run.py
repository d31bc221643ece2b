"""Running the language experiment: presets, retraining and fine-tuning loops, resumable runs.

One run = for each seed, each retraining method retrains the pretrained encoder on the T
retraining tasks; then each retrained encoder is fine-tuned on each unseen task by each
fine-tuning scheme (LoRA of rank r, or a fresh head only) and scored by hits@1 on the task's
held-out dialogues. Training: AdamW, linear warm-up then linear decay, batches of 8 examples
(8 K pairs), loss :func:`loraml.empirical.model.candidate_cross_entropy`, gradient norm clipped at
1.

Resumability. The run directory holds ``config.json`` (a rerun must use the same settings),
and per seed: ``retrain-<method>.ckpt.pt`` after every retraining epoch (model, optimizer,
scheduler, torch RNG states, epoch), ``base-<method>.pt`` once retraining is done (the retrained
encoder, adapters and heads discarded), and ``finetune-<method>.json`` after every fine-tuned task.
Every random draw is seeded from (seed, method, epoch) or (seed, method, scheme, rank, task), and
the torch RNG state is restored from the checkpoint, so a run killed at any point and restarted
with the same command ends with the same numbers as an uninterrupted one (on the same machine
and device; timings differ). ``tasks.json`` records the tasks the data resolved to, and a rerun on
other tasks is refused.

Several processes (``accelerate launch`` or ``torchrun``): see :mod:`loraml.empirical.parallel`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from loraml.empirical import methods as M
from loraml.empirical.model import (
    PairScorer,
    PairTokenizer,
    candidate_cross_entropy,
    hits_at_1,
    load_encoder,
    model_limit,
)
from loraml.empirical.parallel import Workers

if TYPE_CHECKING:
    from collections.abc import Sequence

    from loraml.empirical.data import Example, Task, TaskSplit


@dataclass(frozen=True)
class RunConfig:
    """Settings of one experiment (everything except the seeds and the output directory).

    Attributes
    ----------
    model : str
        ``tiny``, ``minilm``, a Hugging Face id or a local directory.
    data : str
        Source for :func:`loraml.empirical.data.load_tasks` (``convai2``, ``chitchat``, ``tiny``),
        or ``auto``: ConvAI2's shared valid file where present, else chitchat.
    data_path, persona_map : str or None
        ConvAI2 fbdialog file and PAML persona map (None: the shared ones).
    test_data_path, test_persona_map : str or None
        A second ConvAI2 file (and its map) for the unseen tasks, as the paper took them from the
        valid split and the retraining tasks from the train split (None: both from
        ``data_path``, see :func:`loraml.empirical.data.load_tasks`).
    n_retrain, n_test, n_candidates : int
        T retraining tasks, unseen test tasks, K candidates per example.
    max_length : int or None
        Tokens per (context, candidate) pair; None: the model's limit.
    max_examples_per_task : int or None
        Cap on each task's training examples.
    eval_dialogues : int
        Last dialogues of each task held out for hits@1.
    methods : tuple of str
        Retraining methods (:data:`loraml.empirical.methods.RETRAIN_METHODS`).
    ranks : tuple of int
        Fine-tuning LoRA ranks.
    head_only : bool
        Also fine-tune a fresh head only (last-layer fine-tuning).
    epochs, ft_epochs : int
        Retraining and fine-tuning epochs.
    lr, ft_lr, weight_decay, warmup_ratio : float
        AdamW learning rates (retraining, fine-tuning), weight decay, warm-up fraction of steps.
    batch_size, eval_batch_size : int
        Examples per training / evaluation batch.
    lora_rank, lora_alpha, dropout : int, float, float
        LoRA-ML's retraining adapter rank; LoRA scaling numerator (all adapters); dropout.
    reptile_inner_steps, reptile_inner_lr, reptile_outer_lr : int, float, float
        Reptile's inner loop and outer learning rate.
    data_seed : int
        Seed of the task split's candidates (fixed across training seeds).
    device : str
        ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:N``.
    bf16 : bool
        bfloat16 autocast for the encoder.
    """

    model: str = "tiny"
    data: str = "tiny"
    data_path: str | None = None
    persona_map: str | None = None
    test_data_path: str | None = None
    test_persona_map: str | None = None
    n_retrain: int = 10
    n_test: int = 10
    n_candidates: int = 20
    max_length: int | None = None
    max_examples_per_task: int | None = None
    eval_dialogues: int = 2
    methods: tuple[str, ...] = M.RETRAIN_METHODS
    ranks: tuple[int, ...] = (1, 4, 8, 12, 16)
    head_only: bool = True
    epochs: int = 10
    ft_epochs: int = 10
    lr: float = 5e-5
    ft_lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    batch_size: int = 8
    eval_batch_size: int = 32
    lora_rank: int = 8
    lora_alpha: float = 16.0
    dropout: float = 0.1
    reptile_inner_steps: int = 20
    reptile_inner_lr: float = 5e-5
    reptile_outer_lr: float = 1e-4
    data_seed: int = 0
    device: str = "auto"
    bf16: bool = False

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        for name in (
            "n_retrain",
            "n_test",
            "epochs",
            "ft_epochs",
            "batch_size",
            "eval_batch_size",
            "lora_rank",
            "reptile_inner_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_candidates < 2:
            raise ValueError(f"n_candidates must be >= 2, got {self.n_candidates}")
        bad = [m for m in self.methods if m not in M.RETRAIN_METHODS]
        if bad or not self.methods:
            raise ValueError(f"methods {bad or '[]'}: choose from {', '.join(M.RETRAIN_METHODS)}")
        if any(r < 1 for r in self.ranks):
            raise ValueError(f"ranks must be >= 1, got {self.ranks}")
        if not self.ranks and not self.head_only:
            raise ValueError("no fine-tuning scheme: give ranks or keep head-only fine-tuning")
        for name in ("lr", "ft_lr", "reptile_inner_lr", "reptile_outer_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1 or not 0 <= self.warmup_ratio < 1:
            raise ValueError("dropout and warmup_ratio must lie in [0, 1)")
        if self.max_length is not None and self.max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {self.max_length}")

    def schemes(self) -> list[tuple[str, int]]:
        """Fine-tuning schemes as (scheme, rank): LoRA ranks first, then (``head``, 0)."""
        return [("lora", r) for r in self.ranks] + ([("head", 0)] if self.head_only else [])

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


#: Named settings. ``paper``: the paper's protocol (GPU); ``cpu``: the offline check, sized for
#: about 30 minutes per seed on 2 CPU cores; ``tiny``: end-to-end plumbing in seconds.
PRESETS: dict[str, RunConfig] = {
    "paper": RunConfig(
        model="roberta-base",
        data="convai2",
        n_candidates=20,
        methods=M.RETRAIN_METHODS,
        ranks=(1, 4, 8, 12, 16),
        epochs=10,
        ft_epochs=10,
        bf16=False,
    ),
    # Sized on the 2-core VM: K = 8 instead of 20, 48 tokens per pair, 32 training examples
    # per task, 2 retraining and 3 fine-tuning epochs; with so few steps the learning rates are
    # raised (1e-4 retraining, 5e-4 fine-tuning) from the paper's 5e-5 / 1e-4.
    "cpu": RunConfig(
        model="minilm",
        data="auto",
        n_candidates=8,
        max_length=48,
        max_examples_per_task=32,
        methods=("sr", "lora-ml"),
        ranks=(8,),
        epochs=2,
        ft_epochs=3,
        lr=1e-4,
        ft_lr=5e-4,
        eval_batch_size=16,
    ),
    "tiny": RunConfig(
        model="tiny",
        data="tiny",
        n_retrain=3,
        n_test=2,
        n_candidates=4,
        max_length=32,
        max_examples_per_task=8,
        methods=M.RETRAIN_METHODS,
        ranks=(2,),
        epochs=2,
        ft_epochs=2,
        lr=1e-3,
        ft_lr=1e-3,
        lora_rank=2,
        reptile_inner_steps=2,
        reptile_inner_lr=1e-3,
        reptile_outer_lr=1e-3,
    ),
}

#: Default seeds per preset.
DEFAULT_SEEDS: dict[str, tuple[int, ...]] = {"paper": (0, 1, 2, 3, 4), "cpu": (0,), "tiny": (0,)}


class RunInterrupted(RuntimeError):
    """Raised by :class:`StepBudget` to stop a run after a given number of optimizer steps."""


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


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available here; use --device cpu")
    return device


def resolve_source(cfg: RunConfig) -> str:
    """``cfg.data`` with ``auto`` resolved: ``convai2`` where the shared file is, else chitchat."""
    from loraml.empirical.data import default_convai2_paths

    if cfg.data != "auto":
        return cfg.data
    return "convai2" if default_convai2_paths() is not None else "chitchat"


def load_split(cfg: RunConfig) -> TaskSplit:
    """The retraining and unseen tasks of ``cfg`` (``data="auto"`` resolved)."""
    from loraml.empirical.data import load_tasks

    return load_tasks(
        resolve_source(cfg),
        n_retrain=cfg.n_retrain,
        n_test=cfg.n_test,
        n_candidates=cfg.n_candidates,
        seed=cfg.data_seed,
        path=cfg.data_path,
        persona_map=cfg.persona_map,
        test_path=cfg.test_data_path,
        test_persona_map=cfg.test_persona_map,
        eval_dialogues=cfg.eval_dialogues,
        max_examples_per_task=cfg.max_examples_per_task,
    )


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------
def _atomic_torch_save(obj: object, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_json(obj: object, path: Path) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (temporary file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------
def _autocast(ctx: _Context) -> Any:
    return torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=ctx.cfg.bf16)


def _batch(ctx: _Context, examples: Sequence[Example], task_ids: Sequence[int]) -> Any:
    return ctx.pairs.encode(examples, task_ids).to(ctx.device)


def _optimizer(params: Sequence[torch.nn.Parameter], lr: float, ctx: _Context, steps: int):
    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=ctx.cfg.weight_decay)
    warmup = int(round(ctx.cfg.warmup_ratio * steps))
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, steps)


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
    data_parallel: bool = True,
) -> float:
    """One optimizer step on a batch (see :func:`_backward`); returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = _backward(model, examples, task_ids, ctx, data_parallel)
    torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
    optimizer.step()
    scheduler.step()
    ctx.budget.tick()
    return loss


@torch.no_grad()
def evaluate(model: PairScorer, examples: Sequence[Example], ctx: _Context) -> tuple[int, int]:
    """(hits, total): hits@1 counts of ``model`` on ``examples`` (eval mode, no dropout)."""
    model.eval()
    hits = 0
    for i in range(0, len(examples), ctx.cfg.eval_batch_size):
        chunk = examples[i : i + ctx.cfg.eval_batch_size]
        batch = _batch(ctx, chunk, [0] * len(chunk))
        with _autocast(ctx):
            hits += int(hits_at_1(model(batch), batch.labels))
    return hits, len(examples)


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
        ``encoder`` (state dict of the retrained encoder, adapters discarded), ``seconds``,
        ``examples`` (retraining examples processed), ``steps``.
    """
    final = seed_dir / f"base-{method}.pt"
    if final.exists():
        return torch.load(final, map_location="cpu", weights_only=True)
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
    if reptile:
        per_epoch = len(
            M.reptile_rounds(
                sizes, cfg.batch_size, cfg.reptile_inner_steps, np.random.default_rng(0)
            )
        )
        optimizer, scheduler = _optimizer(params, cfg.reptile_outer_lr, ctx, cfg.epochs * per_epoch)
    else:
        per_epoch = len(M.interleaved_batches(sizes, cfg.batch_size, np.random.default_rng(0)))
        optimizer, scheduler = _optimizer(params, cfg.lr, ctx, cfg.epochs * per_epoch)

    ckpt_path = seed_dir / f"retrain-{method}.ckpt.pt"
    start, seconds, examples = 0, 0.0, 0
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt.get("world", 1) != workers.world:
            raise ValueError(
                f"{ckpt_path} was written by {ckpt.get('world', 1)} processes; resume it with "
                f"as many (this run has {workers.world})"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"] if workers.world == 1 else ckpt["rng_ranks"][workers.rank])
        start, seconds, examples = ckpt["epoch"], ckpt["seconds"], ckpt["examples"]

    for epoch in range(start, cfg.epochs):
        # The same batch order for every method of this seed and epoch: an equal comparison.
        rng = np.random.default_rng([seed, epoch, 7919])
        t0 = time.perf_counter()
        if reptile:
            examples += _reptile_epoch(net, optimizer, scheduler, rng, sizes, seed, epoch, ctx)
        else:
            batches = M.interleaved_batches(sizes, cfg.batch_size, rng)
            bar = _progress(
                ctx, len(batches), f"seed {seed} {method} epoch {epoch + 1}/{cfg.epochs}"
            )
            for items in batches:
                chunk = [tasks[t].train[i] for t, i in items]
                loss = _step(net, chunk, [t for t, _ in items], optimizer, scheduler, ctx)
                examples += len(items)
                bar.set_postfix(loss=f"{loss:.3f}")
                bar.update()
            bar.close()
        seconds += time.perf_counter() - t0
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
            if workers.world > 1:
                state.update(world=workers.world, rng_ranks=rng_ranks)
            _atomic_torch_save(state, ckpt_path)
        workers.barrier()
    result = {
        "encoder": {k: v.cpu() for k, v in M.retrained_encoder(model).state_dict().items()},
        "seconds": seconds,
        "examples": examples,
        "steps": scheduler.last_epoch,
    }
    if workers.main:
        _atomic_torch_save(result, final)
        ckpt_path.unlink(missing_ok=True)
    workers.barrier()
    return result


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
    for task, batches in rounds:
        start = [p.detach().clone() for p in params]
        inner_opt = torch.optim.AdamW(
            params, lr=cfg.reptile_inner_lr, weight_decay=cfg.weight_decay
        )
        for indices in batches:
            inner_opt.zero_grad(set_to_none=True)
            _backward(model, [tasks[task].train[i] for i in indices], [0] * len(indices), ctx)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
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
    )
    t0 = time.perf_counter()
    if scheme == "head":
        _train_head(model, train, optimizer, scheduler, rng, ctx)
    else:
        for _ in range(cfg.ft_epochs):
            order = rng.permutation(len(train))
            for i in range(0, len(train), cfg.batch_size):
                chunk = [train[j] for j in order[i : i + cfg.batch_size]]
                _step(model, chunk, [0] * len(chunk), optimizer, scheduler, ctx, False)
    seconds = time.perf_counter() - t0
    hits, total = evaluate(model, task.eval, ctx)
    return {
        "hits": hits,
        "n_eval": total,
        "hits_at_1": hits / total if total else float("nan"),
        "seconds": seconds,
        "examples": cfg.ft_epochs * len(train),
    }


def _train_head(
    model: PairScorer,
    train: Sequence[Example],
    optimizer: Any,
    scheduler: Any,
    rng: np.random.Generator,
    ctx: _Context,
) -> None:
    """Head-only fine-tuning: the frozen encoder's features are computed once (eval mode, no
    dropout in the body), then the fresh head trains on them (head dropout active)."""
    cfg = ctx.cfg
    feats, labels = [], []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(train), cfg.eval_batch_size):
            chunk = train[i : i + cfg.eval_batch_size]
            batch = _batch(ctx, chunk, [0] * len(chunk))
            with _autocast(ctx):
                pooled = model.pooled(batch).float()
            feats.append(pooled.view(batch.size, batch.n_candidates, -1))
            labels.append(batch.labels)
    features, targets = torch.cat(feats), torch.cat(labels)
    k = features.shape[1]
    model.heads.train()
    for _ in range(cfg.ft_epochs):
        order = torch.as_tensor(rng.permutation(len(train)), device=features.device)
        for i in range(0, len(train), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            rows = features[idx].reshape(-1, features.shape[-1])
            scores = model.heads(rows).view(len(idx), k)
            loss = candidate_cross_entropy(scores, targets[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(model.heads.parameters()), 1.0)
            optimizer.step()
            scheduler.step()
            ctx.budget.tick()


# --------------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------------
#: Settings that say what to run rather than how: a run directory may be resumed with other
#: retraining methods (each method's retraining and fine-tuning are seeded on their own, so
#: adding one leaves the others' numbers unchanged).
_WHAT_TO_RUN = ("methods",)


def _check_config(out: Path, cfg: RunConfig, write: bool) -> None:
    """Refuse a run directory holding other settings; with ``write``, record ours.

    A setting the stored file lacks (written before the setting existed) counts as its default,
    so older run directories still resume; :data:`_WHAT_TO_RUN` settings may differ.
    """
    path = out / "config.json"
    current = cfg.to_json()
    stored = json.loads(path.read_text()) if path.exists() else None
    if stored is not None:
        defaults = RunConfig().to_json()
        diff = sorted(
            k for k in current if k not in _WHAT_TO_RUN and stored.get(k, defaults[k]) != current[k]
        )
        if diff:
            raise ValueError(
                f"--out {out} holds a run with other settings ({', '.join(diff)}); "
                "use another --out or the same settings to resume"
            )
    if write and stored != current:
        write_json(current, path)


def _check_tasks(out: Path, split: TaskSplit, source: str, write: bool) -> None:
    """Refuse a run directory made on other tasks; with ``write``, record ours.

    The settings alone cannot tell: ``data="auto"`` resolves to ConvAI2 where the shared file is
    found and to chitchat where it is not, so the tasks themselves are recorded in
    ``tasks.json`` (source, and each task's name and example counts). A directory written before
    ``tasks.json`` existed is checked against its ``results.json`` (source and names).
    """

    def counts(tasks: Sequence[Task]) -> list[list[Any]]:
        return [[t.name, len(t.train), len(t.eval)] for t in tasks]

    current = {"data_used": source, "retrain": counts(split.retrain), "test": counts(split.test)}
    path, old = out / "tasks.json", out / "results.json"
    stored, ours = None, current
    if path.exists():
        stored = json.loads(path.read_text())
    elif old.exists():
        config = json.loads(old.read_text()).get("config", {})
        if "tasks" in config:
            stored = {"data_used": config.get("data_used"), **config["tasks"]}
            ours = {
                "data_used": source,
                "retrain": [t.name for t in split.retrain],
                "test": [t.name for t in split.test],
            }
    if stored is not None and stored != ours:
        raise ValueError(
            f"--out {out} holds a run on other tasks (data {stored['data_used']!r}; here "
            f"{source!r}, or other tasks of it); give the same data (is the ConvAI2 file "
            "found here? see LORAML_CONVAI2_DIR) or another --out"
        )
    if write and not path.exists():
        write_json(current, path)


def run_experiment(
    cfg: RunConfig,
    seeds: Sequence[int],
    out: str | os.PathLike,
    *,
    progress: bool = True,
    budget: StepBudget | None = None,
    split: TaskSplit | None = None,
) -> dict[str, Any]:
    """Run (or resume) the experiment and write ``results.json``, ``results.md`` and the plot.

    Parameters
    ----------
    cfg : RunConfig
    seeds : sequence of int
        Training seeds (the task split is fixed by ``cfg.data_seed``).
    out : path-like
        Run directory (created; holds checkpoints and results).
    progress : bool
        Show tqdm progress bars.
    budget : StepBudget, optional
        Stops the run with :class:`RunInterrupted` after a number of optimizer steps (tests).
    split : TaskSplit, optional
        Use these tasks instead of loading ``cfg``'s data.

    Returns
    -------
    dict
        The content of ``results.json`` (see :func:`loraml.empirical.report.build_results`).
    """
    from loraml.empirical import report

    cfg.validate()
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and non-empty, got {list(seeds)}")
    wall0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_config(out, cfg, write=False)
    workers = Workers.from_env(cfg.device)
    try:
        device = workers.device or resolve_device(cfg.device)
        split = split if split is not None else load_split(cfg)
        encoder, tokenizer = load_encoder(cfg.model, seed=0)
        source = resolve_source(cfg)
        # only once data and model load; process 0 writes
        _check_tasks(out, split, source, write=workers.main)
        if workers.main:
            _check_config(out, cfg, write=True)
        limit = model_limit(tokenizer, encoder)
        max_length = min(cfg.max_length or limit, limit)
        del encoder
        ctx = _Context(
            cfg,
            split,
            PairTokenizer(tokenizer, max_length),
            device,
            budget or StepBudget(),
            progress and workers.main,
            workers,
        )
        records: list[dict[str, Any]] = []
        timing: list[dict[str, Any]] = []
        for seed in seeds:
            seed_dir = out / f"seed{seed}"
            seed_dir.mkdir(exist_ok=True)
            for method in cfg.methods:
                base = retrain(method, seed, seed_dir, ctx)
                timing.append(
                    {
                        "stage": "retrain",
                        "method": method,
                        "seed": seed,
                        "seconds": base["seconds"],
                        "examples": base["examples"],
                    }
                )
                done = _finetune_all(base["encoder"], method, seed, seed_dir, ctx)
                records.extend(done)
                for scheme, rank in cfg.schemes():
                    rows = [r for r in done if r["scheme"] == scheme and r["rank"] == rank]
                    timing.append(
                        {
                            "stage": f"finetune-{scheme}",
                            "method": method,
                            "seed": seed,
                            "rank": rank,
                            "seconds": sum(r["seconds"] for r in rows),
                            "examples": sum(r["examples"] for r in rows),
                        }
                    )
        config = {
            **cfg.to_json(),
            "seeds": list(seeds),
            "max_length_used": max_length,
            "data_used": source,
            "device_used": str(device),
            "tasks": {
                "retrain": [t.name for t in split.retrain],
                "test": [t.name for t in split.test],
            },
        }
        if workers.world > 1:
            config["processes"] = workers.world
        results = report.build_results(config, records, timing, time.perf_counter() - wall0)
        if workers.main:
            report.write_results(results, out)
        workers.barrier()
        return results
    finally:
        workers.close()


def _finetune_all(
    encoder_state: dict[str, torch.Tensor], method: str, seed: int, seed_dir: Path, ctx: _Context
) -> list[dict[str, Any]]:
    """Fine-tune ``method``'s retrained encoder on every unseen task by every scheme, resuming
    from ``finetune-<method>.json``; returns all its records.

    With several processes the missing jobs are dealt out in rounds (one job per process per
    round); each round's records are gathered and written by process 0.
    """
    workers = ctx.workers
    done_path = seed_dir / f"finetune-{method}.json"
    done = json.loads(done_path.read_text()) if done_path.exists() else []
    have = {(r["scheme"], r["rank"], r["task"]) for r in done}
    jobs = [
        (scheme, rank, index, task)
        for scheme, rank in ctx.cfg.schemes()
        for index, task in enumerate(ctx.split.test)
        if (scheme, rank, task.name) not in have
    ]
    bar = _progress(ctx, len(have) + len(jobs), f"seed {seed} {method} fine-tuning")
    bar.update(len(have))
    for start in range(0, len(jobs), workers.world):
        mine = jobs[start + workers.rank] if start + workers.rank < len(jobs) else None
        record = None
        if mine is not None:
            scheme, rank, index, task = mine
            key = (seed, method, scheme, rank, index)
            rec = finetune(encoder_state, scheme, rank, task, key, ctx)
            record = {
                "method": method,
                "scheme": scheme,
                "rank": rank,
                "task": task.name,
                "seed": seed,
                **rec,
            }
        new = [r for r in workers.gather(record) if r is not None]
        done.extend(new)
        if workers.main:
            write_json(done, done_path)
        bar.update(len(new))
    bar.close()
    return done

"""Running the language experiment: presets, retraining and fine-tuning loops, resumable runs.

One run = for each seed, each retraining method retrains the pretrained encoder on the T
retraining tasks; then each retrained encoder is fine-tuned on each unseen task by each
fine-tuning scheme (LoRA of rank r, or a fresh head only) and scored by hits@1 on the task's
held-out dialogues after every fine-tuning epoch (the last epoch is the result). Training: AdamW,
linear warm-up then linear decay, batches of 8 examples (8 K pairs), loss
:func:`loraml.empirical.model.candidate_cross_entropy`, gradient norm clipped at ``grad_clip``;
where the released scripts differ (batching, weight decay, clipping, fine-tuning schedule,
retraining epoch kept, excluded clusters) :class:`RunConfig` has a setting, and the ``paper``
preset takes the released value.

Resumability. The run directory holds ``config.json`` (a rerun must use the same settings),
and per seed: ``retrain-<method>.ckpt.pt`` after every retraining epoch (model, optimizer,
scheduler, torch RNG states, epoch), ``base-<method>.pt`` once retraining is done (the retrained
encoder, adapters and heads discarded), and ``finetune-<method>.json`` after every fine-tuned task.
Checkpoints hold tensors and plain data only, load with ``torch.load(weights_only=True)`` and
carry a SHA-256 checksum file beside them (:func:`save_checkpoint`, :func:`load_checkpoint`).
A NaN or infinite loss, gradient, parameter or held-out score stops the run with
:class:`Diverged` before the epoch's checkpoint is written.
Every random draw is seeded from (seed, method, epoch) or (seed, method, scheme, rank, task), and
the torch RNG state is restored from the checkpoint, so a run killed at any point and restarted
with the same command ends with the same numbers as an uninterrupted one (on the same machine
and device; timings differ). ``tasks.json`` records the tasks the data resolved to, and a rerun on
other tasks is refused.

Several processes (``accelerate launch`` or ``torchrun``): see :mod:`loraml.empirical.parallel`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import sys
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
from loraml.empirical.parallel import Workers, launched_world_size

if TYPE_CHECKING:
    from collections.abc import Sequence

    from loraml.empirical.data import Example, Task, TaskSplit


#: Device names a run accepts (checked before anything is created).
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")

#: Retraining batch layouts (see :attr:`RunConfig.batching`).
BATCHING = ("interleaved", "per-task")
#: Retraining epoch selection (see :attr:`RunConfig.retrain_selection`).
SELECTION = ("last", "best")

#: Training seeds: non-negative and small enough for a directory name and every seeding API.
MAX_SEED = 2**32 - 1


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
    batching : {"interleaved", "per-task"}
        Retraining batches of SR, LoRA-ML and last-layer-ML (:data:`BATCHING`):
        ``interleaved`` mixes the tasks within every batch
        (:func:`loraml.empirical.methods.interleaved_batches`); ``per-task`` gives each batch
        one task, tasks in turn (:func:`loraml.empirical.methods.per_task_batches`), and the
        per-task adapters and heads of the tasks absent from a batch receive no update at all
        (:class:`loraml.empirical.optim.TaskRowAdamW`), as in the released scripts.
    grad_clip : float
        Gradient norm clipped at this value at every step; 0: no clipping (released scripts).
    ft_decay_horizon : float
        Fine-tuning schedule: warm-up over ``warmup_ratio`` of the real steps S, then linear
        decay that would reach 0 at ``ft_decay_horizon * S`` steps. 1: decays to 0 at the end;
        4 (released scripts): the rate ends at ``(4 - 1) / (4 - warmup_ratio)`` of its peak
        (0.77 for warm-up 0.1).
    retrain_selection : {"last", "best"}
        Which retraining epoch's encoder is fine-tuned: the last, or (released scripts) the one
        with the best hits@1 on the retraining tasks' held-out dialogues (each task's own head
        and adapter; ties: the earlier epoch).
    exclude_tasks : tuple of str
        Task (group) names never chosen, e.g. ``("persona-0",)``: PAML's cluster 0, which the
        released scripts delete from the persona map (:func:`load_split`).
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
    batching: str = "interleaved"
    grad_clip: float = 1.0
    ft_decay_horizon: float = 1.0
    retrain_selection: str = "last"
    exclude_tasks: tuple[str, ...] = ()

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
        for name in ("lr", "ft_lr", "reptile_inner_lr", "reptile_outer_lr", "lora_alpha"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be finite and >= 0, got {self.weight_decay}")
        if self.batching not in BATCHING:
            raise ValueError(f"batching must be one of {BATCHING}, got {self.batching!r}")
        if self.retrain_selection not in SELECTION:
            raise ValueError(
                f"retrain_selection must be one of {SELECTION}, got {self.retrain_selection!r}"
            )
        if not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise ValueError(f"grad_clip must be finite and >= 0 (0: off), got {self.grad_clip}")
        if not (math.isfinite(self.ft_decay_horizon) and self.ft_decay_horizon >= 1):
            raise ValueError(
                f"ft_decay_horizon must be finite and >= 1, got {self.ft_decay_horizon}"
            )
        if not all(isinstance(n, str) and n for n in self.exclude_tasks):
            raise ValueError(f"exclude_tasks must be task names, got {self.exclude_tasks!r}")
        if not _DEVICE.fullmatch(self.device):
            raise ValueError(
                f"device {self.device!r} is not a device: use 'auto', 'cpu', 'cuda', 'cuda:N' "
                "or 'mps'"
            )

    def schemes(self) -> list[tuple[str, int]]:
        """Fine-tuning schemes as (scheme, rank): LoRA ranks first, then (``head``, 0)."""
        return [("lora", r) for r in self.ranks] + ([("head", 0)] if self.head_only else [])

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


#: Named settings. ``paper``: the paper's protocol as the released scripts ran it (GPU);
#: ``cpu``: the offline check, sized for about 30 minutes per seed on 2 CPU cores, with our
#: defaults (interleaved batches, weight decay 0, clipping at 1, schedule decaying to 0, last
#: epoch); ``tiny``: end-to-end plumbing in seconds.
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
        # the released scripts' protocol (README, "paper / released scripts / our default")
        batching="per-task",
        weight_decay=0.01,
        grad_clip=0.0,
        ft_decay_horizon=4.0,
        retrain_selection="best",
        exclude_tasks=("persona-0",),
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


class Diverged(RuntimeError):
    """A loss, gradient, parameter or score became NaN or infinite: the run stops, one line.

    The message names the method, seed, epoch and step; the last checkpoint written (at the end
    of the last finite epoch) is kept, and no result is written.
    """


class CheckpointError(ValueError):
    """A checkpoint that fails its checksum, is truncated, or holds anything but tensors and
    plain data (a pickle that would run code is refused, never executed)."""


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
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not a device; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name}: CUDA is not available here; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(
            f"device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name}: MPS is not available here; use --device cpu")
    return device


def resolve_source(cfg: RunConfig) -> str:
    """``cfg.data`` with ``auto`` resolved: ``convai2`` where the shared file is, else chitchat."""
    from loraml.empirical.data import default_convai2_paths

    if cfg.data != "auto":
        return cfg.data
    return "convai2" if default_convai2_paths() is not None else "chitchat"


def load_split(cfg: RunConfig) -> TaskSplit:
    """The retraining and unseen tasks of ``cfg`` (``data="auto"`` resolved).

    With ``exclude_tasks`` the groups so named are never chosen: ``k`` more groups are loaded
    (the largest ``n_retrain + n_test + k`` of one file; ``n_retrain + k`` and ``n_test + k``
    of two files), the excluded ones dropped, and the rest taken in the same size order.
    """
    from loraml.empirical.data import TaskSplit

    k = len(cfg.exclude_tasks)
    if not k:
        return _load_tasks(cfg, cfg.n_retrain, cfg.n_test)
    drop = set(cfg.exclude_tasks)
    if cfg.test_data_path is not None:
        more = _load_tasks(cfg, cfg.n_retrain + k, cfg.n_test + k)
        retrain = [t for t in more.retrain if t.name not in drop][: cfg.n_retrain]
        test = [t for t in more.test if t.name not in drop][: cfg.n_test]
    else:
        more = _load_tasks(cfg, cfg.n_retrain, cfg.n_test + k)
        kept = [t for t in (*more.retrain, *more.test) if t.name not in drop]
        retrain, test = kept[: cfg.n_retrain], kept[cfg.n_retrain : cfg.n_retrain + cfg.n_test]
    info = {**more.info, "excluded_tasks": sorted(drop)}
    return TaskSplit(retrain=tuple(retrain), test=tuple(test), info=info)


def _load_tasks(cfg: RunConfig, n_retrain: int, n_test: int) -> TaskSplit:
    from loraml.empirical.data import load_tasks

    return load_tasks(
        resolve_source(cfg),
        n_retrain=n_retrain,
        n_test=n_test,
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
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_digests(path: Path) -> list[str]:
    """The digests a checksum file allows (one; two while a checkpoint is being replaced)."""
    try:
        stored = json.loads(path.read_text())
        digests = stored["sha256"]
        if not isinstance(digests, list) or not all(isinstance(d, str) for d in digests):
            raise TypeError("sha256 is not a list of strings")
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"{path}: unreadable checksum file ({err}); delete it") from None
    return digests


def save_checkpoint(obj: dict[str, Any], path: Path) -> None:
    """Save tensors and plain data to ``path`` with a SHA-256 checksum beside it (``.sha256``).

    Crash-safe: the new file is written aside, the checksum file then lists the new and the old
    digest, the new file replaces the old, and the checksum file is rewritten with the new digest
    only; a kill at any moment leaves a checkpoint that matches its checksum file.
    """
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    digest = _sha256(tmp)
    side = _checksum_path(path)
    old = _read_digests(side)[:1] if side.exists() and path.exists() else []
    write_json({"sha256": [digest, *old]}, side)
    os.replace(tmp, path)
    write_json({"sha256": [digest]}, side)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, verifying it first.

    Only tensors and plain containers load (``torch.load(weights_only=True)``): a crafted file
    cannot run code. A checkpoint without a checksum file (written before checksums existed)
    loads with a note on stderr.

    Raises
    ------
    CheckpointError
        One line naming the file: checksum mismatch, truncated/corrupt, or refused content.
    """
    side = _checksum_path(path)
    if side.exists():
        if _sha256(path) not in _read_digests(side):
            raise CheckpointError(
                f"{path} does not match its checksum ({side.name}): corrupt or truncated; "
                "delete both files to recompute that part of the run"
            )
    else:
        print(f"note: {path} has no checksum file (an older run); loading it", file=sys.stderr)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure is the file's: report it in one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path} is not a loadable checkpoint (only tensors and plain data are accepted: "
            f"{first[:200]}); delete it to recompute that part of the run"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a checkpoint dict; delete it")
    return obj


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
        finite = torch.isfinite(scores).all(dim=-1)
        hits += int(hits_at_1(scores[finite], batch.labels[finite]))
        if not bool(finite.all()):
            _stop_unless_finite(float("nan"), where, "a held-out score")
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
    each epoch's held-out hits to ``by_epoch``; returns the training seconds."""
    cfg = ctx.cfg
    t0 = time.perf_counter()
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
    seconds = time.perf_counter() - t0
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
        by_epoch.append(evaluate(model, task.eval, ctx, f"{where}, epoch {epoch + 1}")[0])
    return seconds


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

    out = Path(out)
    preflight(cfg, seeds, out)
    wall0 = time.perf_counter()
    _check_config(out, cfg, write=False)
    workers = Workers.from_env(cfg.device)
    try:
        device = workers.device or resolve_device(cfg.device)
        split = split if split is not None else load_split(cfg)
        encoder, tokenizer = load_encoder(cfg.model, seed=0)
        source = resolve_source(cfg)
        # created only once the settings, data and model are known to be good
        if workers.main:
            out.mkdir(parents=True, exist_ok=True)
        workers.barrier()
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
                        **{k: base[k] for k in ("selected_epoch", "epoch_hits") if k in base},
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


def _same_content(a: str, b: str) -> bool:
    """Whether two existing files hold the same bytes (size first, then SHA-256)."""
    pa, pb = Path(a), Path(b)
    if not (pa.is_file() and pb.is_file()):
        return False
    if pa.stat().st_size != pb.stat().st_size:
        return False
    return pa.samefile(pb) or _sha256(pa) == _sha256(pb)


def _check_out(out: Path) -> None:
    """Refuse a run directory that cannot be one: not a directory, a name too long, under a
    regular file, or not writable (checked on the nearest existing ancestor)."""
    if str(out) == "":
        raise ValueError("out is empty; give a run directory")
    if any(len(part.encode()) > 255 for part in out.parts):
        raise ValueError(f"out {str(out)[:80]}...: a path component is longer than 255 bytes")
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise ValueError(f"out {out} exists and is not a directory; give a directory")
        if not os.access(out, os.W_OK | os.X_OK):
            raise ValueError(f"out {out} is not writable; give another directory")
        return
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"out {out}: {parent} is a file, so no directory can be made under it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"out {out}: cannot create it under {parent} (not writable)")


def preflight(cfg: RunConfig, seeds: Sequence[int], out: Path) -> None:
    """Check everything that can be checked before a run creates or reads anything heavy.

    Raises
    ------
    ValueError
        One line naming the setting: bad settings (:meth:`RunConfig.validate`), seeds not
        distinct integers in [0, :data:`MAX_SEED`], ``out`` not a possible directory (a file,
        under a file, a name over 255 bytes, not writable), a
        ``test_data_path`` with the same content as ``data_path`` (the unseen tasks would be
        retraining tasks), or a CUDA device where there is none.
    """
    cfg.validate()
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and non-empty, got {list(seeds)}")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s <= MAX_SEED:
            raise ValueError(f"seeds must be integers in [0, {MAX_SEED}], got {s!r}")
    _check_out(out)
    for name in ("data_path", "persona_map", "test_data_path", "test_persona_map"):
        value = getattr(cfg, name)
        if value is not None and not Path(value).is_file():
            raise ValueError(f"{name} {value} is not a readable file")
    if (
        cfg.data_path is not None
        and cfg.test_data_path is not None
        and _same_content(cfg.data_path, cfg.test_data_path)
    ):
        raise ValueError(
            f"test_data_path {cfg.test_data_path} holds the same content as data_path "
            f"{cfg.data_path}: the unseen tasks would be retraining tasks; give the other split "
            "(the paper: train for data_path, valid for test_data_path)"
        )
    if launched_world_size() == 1:
        resolve_device(cfg.device)


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

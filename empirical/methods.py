"""Retraining methods and fine-tuning schemes of the language experiment (arXiv 2410.22264).

Retraining (on T persona tasks), all starting from the same pretrained encoder:

- ``sr`` (standard retraining): the whole model with one shared head on the pooled tasks.
- ``lora-ml``: the shared encoder jointly with one LoRA adapter per task on every
  transformer-block Linear (:mod:`loraml.empirical.lora`) and one head per task.
- ``last-layer-ml``: the shared encoder jointly with one head per task, no adapters. The paper
  calls this baseline "per-task heads only"; we read it as the meta-learning method whose
  task-specific part is the last layer (the analogue of LoRA-ML with the adapters replaced by
  heads), so the body is trained, as in LoRA-ML; training only heads on a frozen body would leave
  the base unchanged and make the baseline identical to no retraining.
- ``reptile``: first-order meta-learning with one shared head: per outer step, 20 inner AdamW
  steps (lr 5e-5) on batches of one task from the current weights, then the outer update treats
  ``theta - theta_inner`` as a gradient for an outer AdamW (lr 1e-4).

SR, LoRA-ML and last-layer-ML see the *same* batches in the same order, so the only difference
between them is the model (an equal comparison; the released scripts gave SR the tasks one after
another): by default tasks interleaved round-robin within every batch
(:func:`interleaved_batches`), or, with per-task batching, one task per batch, tasks in turn
(:func:`per_task_batches`, the released LoRA-ML's layout, which SR then shares).

Fine-tuning on each unseen task starts from the retrained encoder with retraining adapters and
heads discarded: ``lora`` adds one fresh peft LoRA adapter of rank r to every transformer-block
Linear (base frozen) plus a fresh head; ``head`` trains a fresh head only.
"""

from __future__ import annotations

import copy
import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from loraml.empirical.lora import add_multitask_lora, encoder_linear_names, strip_multitask_lora
from loraml.empirical.model import PairScorer

if TYPE_CHECKING:
    from collections.abc import Sequence

RETRAIN_METHODS = ("sr", "lora-ml", "last-layer-ml", "reptile")
FINETUNE_SCHEMES = ("lora", "head")


def build_retrain_model(
    method: str,
    encoder: nn.Module,
    n_tasks: int,
    *,
    rank: int,
    alpha: float,
    dropout: float,
    generator: torch.Generator,
) -> PairScorer:
    """The model retrained by ``method`` around ``encoder`` (modified in place for LoRA-ML).

    Parameters
    ----------
    method : {"sr", "lora-ml", "last-layer-ml", "reptile"}
    encoder : nn.Module
        The pretrained encoder (all its parameters train).
    n_tasks : int
        T, the number of retraining tasks.
    rank, alpha, dropout : int, float, float
        LoRA-ML's adapter rank, scaling numerator and dropout (dropout also of the heads).
    generator : torch.Generator
        Seeded generator for adapters and heads.
    """
    if method not in RETRAIN_METHODS:
        raise ValueError(f"unknown retraining method {method!r}; choose from {RETRAIN_METHODS}")
    router = None
    if method == "lora-ml":
        router = add_multitask_lora(encoder, n_tasks, rank, alpha, dropout, generator)
    per_task = method in ("lora-ml", "last-layer-ml")
    return PairScorer(
        encoder,
        n_heads=n_tasks if per_task else 1,
        dropout=dropout,
        generator=generator,
        router=router,
        per_task_heads=per_task,
    )


def retrained_encoder(model: PairScorer) -> nn.Module:
    """A copy of the retrained encoder with the retraining adapters discarded (heads dropped)."""
    return strip_multitask_lora(copy.deepcopy(model.encoder))


def build_finetune_model(
    encoder: nn.Module,
    scheme: str,
    *,
    rank: int,
    alpha: float,
    dropout: float,
    generator: torch.Generator,
) -> PairScorer:
    """A fine-tuning model: a copy of ``encoder``, frozen, plus a fresh head (and LoRA adapter).

    Parameters
    ----------
    encoder : nn.Module
        The retrained encoder (not modified).
    scheme : {"lora", "head"}
        ``lora``: a fresh peft LoRA adapter of rank ``rank`` on every transformer-block Linear,
        B zero-initialised, A from torch's global generator (seed it before the call);
        ``head``: no adapter.
    rank, alpha, dropout : int, float, float
        Adapter rank, scaling numerator (update ``alpha / r * B A``) and dropout.
    generator : torch.Generator
        Seeded generator for the head.
    """
    encoder = copy.deepcopy(encoder)
    if scheme == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=rank,
            lora_alpha=alpha,  # type: ignore[arg-type]  # peft annotates int; alpha / r as a float
            lora_dropout=dropout,
            target_modules=encoder_linear_names(encoder),
            bias="none",
        )
        with warnings.catch_warnings():  # transformers 5 deprecation notes raised inside peft
            warnings.simplefilter("ignore", FutureWarning)
            encoder = get_peft_model(encoder, config)
    elif scheme != "head":
        raise ValueError(f"unknown fine-tuning scheme {scheme!r}; choose from {FINETUNE_SCHEMES}")
    for name, param in encoder.named_parameters():
        param.requires_grad_(scheme == "lora" and "lora_" in name)
    return PairScorer(encoder, n_heads=1, dropout=dropout, generator=generator)


def interleaved_batches(
    sizes: Sequence[int], batch_size: int, rng: np.random.Generator
) -> list[list[tuple[int, int]]]:
    """One epoch of (task, example) pairs: each task shuffled, tasks interleaved round-robin.

    The stream takes one example of task 0, one of task 1, ..., one of task T-1, then again, a
    task dropping out when its examples are used up; it is then cut into batches of
    ``batch_size`` (the last may be smaller). Every batch thus mixes tasks. The task order of each
    round is the fixed order 0..T-1, the examples within a task are a fresh permutation per epoch.

    Parameters
    ----------
    sizes : sequence of int
        Number of training examples of each task.
    batch_size : int
    rng : numpy.random.Generator

    Returns
    -------
    list of list of (task, index)
    """
    orders = [rng.permutation(n).tolist() for n in sizes]
    stream = [
        (t, orders[t][i])
        for i in range(max(sizes, default=0))
        for t in range(len(sizes))
        if i < sizes[t]
    ]
    return [stream[i : i + batch_size] for i in range(0, len(stream), batch_size)]


def per_task_batches(
    sizes: Sequence[int], batch_size: int, rng: np.random.Generator
) -> list[list[tuple[int, int]]]:
    """One epoch of single-task batches, tasks in turn (the released scripts' batching).

    Each task's examples are shuffled (a fresh permutation per epoch, drawn in task order as in
    :func:`interleaved_batches`, so both layouts use the same permutations) and cut into
    batches of ``batch_size`` (a task's last batch may be smaller); the batches are then taken
    round-robin: task 0's first, task 1's first, ..., task 0's second, ..., a task dropping out
    when its batches are used up. Each batch is one optimizer step on one task.

    Parameters
    ----------
    sizes : sequence of int
        Number of training examples of each task.
    batch_size : int
    rng : numpy.random.Generator

    Returns
    -------
    list of list of (task, index)

    Examples
    --------
    >>> import numpy as np
    >>> batches = per_task_batches([3, 2], 2, np.random.default_rng(0))
    >>> [sorted({t for t, _ in b}) for b in batches]
    [[0], [1], [0]]
    >>> [len(b) for b in batches]
    [2, 2, 1]
    """
    orders = [rng.permutation(n).tolist() for n in sizes]
    cut = [
        [[(t, i) for i in order[j : j + batch_size]] for j in range(0, len(order), batch_size)]
        for t, order in enumerate(orders)
    ]
    return [
        cut[t][j]
        for j in range(max((len(c) for c in cut), default=0))
        for t in range(len(sizes))
        if j < len(cut[t])
    ]


def task_parameters(model: PairScorer) -> list[nn.Parameter]:
    """The per-task parameters of a retraining model, each stacked over tasks along dim 0.

    LoRA-ML: every :class:`loraml.empirical.lora.MultiTaskLoRALinear`'s ``lora_A`` (T, r, in)
    and ``lora_B`` (T, out, r), and the heads; last-layer-ML: the heads; SR and Reptile (one
    shared head): none. Row t of each belongs to task t alone.
    """
    from loraml.empirical.lora import MultiTaskLoRALinear

    params: list[nn.Parameter] = []
    for module in model.modules():
        if isinstance(module, MultiTaskLoRALinear):
            params += [module.lora_A, module.lora_B]
    if model.per_task_heads:
        params += list(model.heads.parameters())
    return params


def reptile_rounds(
    sizes: Sequence[int], batch_size: int, inner_steps: int, rng: np.random.Generator
) -> list[tuple[int, list[list[int]]]]:
    """One epoch of Reptile outer steps: (task, ``inner_steps`` batches of that task's indices).

    The number of outer steps is chosen so an epoch sees as many examples as one epoch of
    :func:`interleaved_batches` (rounded up to whole outer steps); tasks are visited in turn in a
    fresh random order per cycle, each task's examples cycling through fresh permutations.
    """
    total = int(sum(sizes))
    n_outer = max(1, -(-total // (batch_size * inner_steps)))
    queues: list[list[int]] = [[] for _ in sizes]
    rounds: list[tuple[int, list[list[int]]]] = []
    task_order: list[int] = []
    for _ in range(n_outer):
        if not task_order:
            task_order = rng.permutation(len(sizes)).tolist()
        task = task_order.pop(0)
        batches = []
        for _ in range(inner_steps):
            batch: list[int] = []
            while len(batch) < min(batch_size, sizes[task]):
                if not queues[task]:  # a fresh permutation, this batch's examples last
                    perm = rng.permutation(sizes[task]).tolist()
                    queues[task] = [i for i in perm if i not in batch] + [
                        i for i in perm if i in batch
                    ]
                batch.append(queues[task].pop(0))
            batches.append(batch)
        rounds.append((task, batches))
    return rounds

"""Multi-task LoRA: T low-rank adapters per encoder Linear, each row routed to its task's adapter.

LoRA-ML retraining trains the shared encoder weights jointly with one adapter per retraining task.
peft holds several adapters per layer but activates one set at a time, so a batch mixing tasks
would need a loop over tasks (or toggling ``requires_grad``). This module wraps each Linear as

    y_i = W x_i + b + (alpha / r) * B_{t_i} A_{t_i} dropout(x_i),

where ``t_i`` is row i's task, read from a shared :class:`TaskRouter`; A (T, r, in) and B (T, out,
r) are gathered per row and applied with two batched matrix products. B starts at zero, so the
adapted model equals the base model at initialisation; A starts like peft's default (uniform in
``+-1/sqrt(in)``, i.e. Kaiming-uniform with a = sqrt(5)). The gradient of a row reaches only its
own task's A and B (and the shared W, b), because the gather's backward scatters into that
task's slice alone.

Fine-tuning uses peft itself (one fresh adapter, base frozen): see :mod:`loraml.empirical.methods`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import torch
from torch import nn


class TaskRouter:
    """Holds the task index of the current batch that every :class:`MultiTaskLoRALinear` reads.

    ``task_ids[j]`` is the task of the j-th group of ``rows_per_id`` consecutive input rows (for
    the pair scorer: one example's K candidate pairs), so the adapters are gathered once per
    example rather than once per pair.
    """

    def __init__(self) -> None:
        self.task_ids: torch.Tensor | None = None
        self.rows_per_id = 1

    @contextmanager
    def route(self, task_ids: torch.Tensor, rows_per_id: int = 1) -> Iterator[None]:
        """Within the block, input rows ``j*rows_per_id ... (j+1)*rows_per_id - 1`` of every
        wrapped layer use adapter ``task_ids[j]``."""
        self.task_ids, self.rows_per_id = task_ids, int(rows_per_id)
        try:
            yield
        finally:
            self.task_ids, self.rows_per_id = None, 1


class MultiTaskLoRALinear(nn.Module):
    """A Linear layer plus T LoRA adapters, one applied per input row.

    Parameters
    ----------
    base : nn.Linear
        The shared layer (trained jointly unless frozen by the caller).
    n_tasks : int
        T.
    rank : int
        r >= 1.
    alpha : float
        Scaling numerator: the update is ``(alpha / r) B A``.
    dropout : float
        Dropout on the adapter's input (as peft's ``lora_dropout``).
    router : TaskRouter
        Supplies the (N,) task index of the current batch's rows.
    generator : torch.Generator
        Seeded generator for A's initialisation.
    """

    def __init__(
        self,
        base: nn.Linear,
        n_tasks: int,
        rank: int,
        alpha: float,
        dropout: float,
        router: TaskRouter,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        if rank < 1 or n_tasks < 1:
            raise ValueError(f"rank and n_tasks must be >= 1, got rank={rank}, n_tasks={n_tasks}")
        self.base = base
        self.router = router
        self.scaling = float(alpha) / rank
        bound = 1.0 / math.sqrt(base.in_features)
        a = (torch.rand(n_tasks, rank, base.in_features, generator=generator) * 2 - 1) * bound
        self.lora_A = nn.Parameter(a.to(base.weight.dtype).to(base.weight.device))
        self.lora_B = nn.Parameter(
            torch.zeros(
                n_tasks, base.out_features, rank, dtype=base.weight.dtype, device=base.weight.device
            )
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``base(x)`` plus each row's own adapter; x is (N, ..., in), rows routed by the router."""
        task_ids = self.router.task_ids
        if task_ids is None:
            raise RuntimeError("MultiTaskLoRALinear called outside TaskRouter.route(task_ids)")
        n = task_ids.shape[0]
        if n * self.router.rows_per_id != x.shape[0]:
            raise RuntimeError(
                f"{n} task ids x {self.router.rows_per_id} rows each, but {x.shape[0]} rows"
            )
        y = self.base(x)
        # Rows of one task id form one matrix: (n, rows_per_id * L, in).
        rows = x.reshape(n, -1, x.shape[-1])
        p = self.dropout.p
        mask = None
        if self.training and p > 0:
            mask = torch.empty(rows.shape, dtype=torch.bool, device=rows.device).bernoulli_(1 - p)
        a = self.lora_A[task_ids]  # (n, r, in)
        b = self.lora_B[task_ids]  # (n, out, r)
        delta = lora_delta(rows, mask, a, b, self.scaling, 1 - p)
        return (y.reshape(delta.shape) + delta.to(y.dtype)).reshape(y.shape)


def lora_delta(
    rows: torch.Tensor,
    mask: torch.Tensor | None,
    a: torch.Tensor,
    b: torch.Tensor,
    scaling: float,
    keep: float,
) -> torch.Tensor:
    """``scaling * B_j A_j (mask * rows / keep)`` per group j, memory-lean in the backward pass.

    Parameters
    ----------
    rows : torch.Tensor
        (n, M, in): the layer's input (the same storage the base Linear saves for its backward).
    mask : torch.Tensor or None
        (n, M, in) bool dropout mask (kept entries True), or None for no dropout.
    a, b : torch.Tensor
        (n, r, in) and (n, out, r): each group's adapter.
    scaling : float
        alpha / r.
    keep : float
        1 - dropout probability.

    Returns
    -------
    torch.Tensor
        (n, M, out), in ``rows``' dtype.

    Notes
    -----
    Plain autograd would save the dropped-out input as a new float tensor for every wrapped
    layer; this saves only the mask, packed 8 entries to a byte where ``in`` is a multiple of 8
    (the input is saved by the base layer anyway), and recomputes the dropped-out input in the
    backward pass. The result equals
    ``torch.bmm(torch.bmm(dropout(rows), a^T), b^T) * scaling`` with that mask.
    """
    return _LoRADelta.apply(rows, mask, a, b, float(scaling), float(keep))


class _LoRADelta(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows, mask, a, b, scaling, keep):
        with torch.autocast(rows.device.type, enabled=False):
            a, b = a.to(rows.dtype), b.to(rows.dtype)
            # 1/keep is applied to the small (n, M, r) product, not the (n, M, in) input
            dropped = rows if mask is None else rows * mask
            h = torch.bmm(dropped, a.transpose(1, 2)) * (1.0 / keep)  # (n, M, r)
            packed = mask is not None and mask.shape[-1] % 8 == 0
            saved = pack_mask(mask) if packed else mask
            ctx.save_for_backward(rows, saved, a, b, h)
            ctx.scaling, ctx.keep, ctx.packed = scaling, keep, packed
            return torch.bmm(h, b.transpose(1, 2)) * scaling

    @staticmethod
    def backward(ctx, grad):
        rows, mask, a, b, h = ctx.saved_tensors
        if ctx.packed:
            mask = unpack_mask(mask)
        grad = grad.to(rows.dtype)
        grad_b = torch.bmm(grad.transpose(1, 2), h) * ctx.scaling  # (n, out, r)
        grad_h = torch.bmm(grad, b) * (ctx.scaling / ctx.keep)  # (n, M, r), with 1/keep
        dropped = rows if mask is None else rows * mask
        grad_a = torch.bmm(grad_h.transpose(1, 2), dropped)  # (n, r, in)
        del dropped  # an input-sized temporary: free it before the next one
        grad_rows = None
        if ctx.needs_input_grad[0]:
            grad_rows = torch.bmm(grad_h, a)
            if mask is not None:
                grad_rows.mul_(mask)  # in place: no second input-sized temporary
        return grad_rows, None, grad_a, grad_b, None, None


_BITS = (1, 2, 4, 8, 16, 32, 64, 128)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor (..., m), m a multiple of 8, as uint8 (..., m // 8): entry 8j+i is bit i of
    byte j. The inverse is :func:`unpack_mask`."""
    if mask.shape[-1] % 8:
        raise ValueError(f"the last dimension must be a multiple of 8, got {mask.shape[-1]}")
    v = mask.reshape(*mask.shape[:-1], -1, 8).to(torch.uint8)
    out = v[..., 0].clone()
    for i in range(1, 8):
        out |= v[..., i] << i
    return out


def unpack_mask(packed: torch.Tensor) -> torch.Tensor:
    """The bool tensor (..., 8 m) that :func:`pack_mask` packed into uint8 (..., m)."""
    bits = torch.tensor(_BITS, dtype=torch.uint8, device=packed.device)
    return (packed.unsqueeze(-1) & bits).bool().reshape(*packed.shape[:-1], -1)


def encoder_linear_names(encoder: nn.Module) -> list[str]:
    """Qualified names of the encoder's transformer-block Linears (q, k, v, attention output,
    FFN in, FFN out), excluding embeddings and pooler; in module order.

    Raises
    ------
    ValueError
        When the encoder has no such layer.
    """
    names = [
        name
        for name, module in encoder.named_modules()
        if isinstance(module, nn.Linear)
        and not name.startswith(("pooler", "embeddings"))
        and ".layer" in f".{name}"
    ]
    if not names:
        raise ValueError(f"no transformer-block Linear layers found in {type(encoder).__name__}")
    return names


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def add_multitask_lora(
    encoder: nn.Module,
    n_tasks: int,
    rank: int,
    alpha: float,
    dropout: float,
    generator: torch.Generator,
) -> TaskRouter:
    """Wrap every transformer-block Linear of ``encoder`` (in place) with T adapters.

    Returns
    -------
    TaskRouter
        The router the wrapped layers read; the caller routes each batch through it.
    """
    router = TaskRouter()
    for name in encoder_linear_names(encoder):
        base = cast(nn.Linear, encoder.get_submodule(name))  # a Linear, by encoder_linear_names
        _set_submodule(
            encoder,
            name,
            MultiTaskLoRALinear(base, n_tasks, rank, alpha, dropout, router, generator),
        )
    return router


def strip_multitask_lora(encoder: nn.Module) -> nn.Module:
    """Replace every :class:`MultiTaskLoRALinear` of ``encoder`` by its base Linear (in place).

    This is how retraining adapters are discarded before fine-tuning; returns ``encoder``.
    """
    wrapped = [n for n, m in encoder.named_modules() if isinstance(m, MultiTaskLoRALinear)]
    for name in wrapped:
        _set_submodule(encoder, name, cast(MultiTaskLoRALinear, encoder.get_submodule(name)).base)
    return encoder

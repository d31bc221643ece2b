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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import cast

import numpy as np
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
            mask = keep_mask(rows.shape, 1 - p, rows.device)
        a = self.lora_A[task_ids]  # (n, r, in)
        b = self.lora_B[task_ids]  # (n, out, r)
        base = y.reshape(n, -1, y.shape[-1])
        return lora_delta(rows, mask, a, b, self.scaling, 1 - p, base=base).reshape(y.shape)


def keep_mask(
    shape: Sequence[int],
    keep: float,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A dropout keep-mask: independent Bernoulli(``keep``) entries, as a bool tensor.

    On CUDA (and other accelerators): ``torch.rand(shape) < keep``. On the CPU, where torch's
    serial Mersenne twister is the cost (a float per entry), one 64-bit draw of ``generator``
    (default: torch's global generator, so a seed and a saved RNG state fix every mask) seeds a
    numpy SFC64 generator whose raw output gives one byte ``u`` per entry, uniform on
    0..255. With ``keep * 256 = l + f`` (l integer, 0 <= f < 1) an entry is kept when ``u < l``,
    dropped when ``u > l``, and, when ``u == l`` (probability 1/256), kept with probability f
    from a further uniform double. So ``P(keep) = l / 256 + f / 256 = keep`` (exact up to the
    double's 2^-53 resolution), entries are independent (disjoint bytes, independent doubles),
    and the cost is about one random byte per entry instead of 4.

    Parameters
    ----------
    shape : sequence of int
    keep : float
        1 - dropout probability, in (0, 1].
    device : torch.device or str
    generator : torch.Generator, optional
        Seeded torch generator the draw comes from (default: the global one).

    Returns
    -------
    torch.Tensor
        bool, ``shape``, on ``device``.

    Examples
    --------
    >>> m = keep_mask((1000, 100), 0.9, generator=torch.Generator().manual_seed(0))
    >>> m.dtype, m.shape, abs(m.float().mean().item() - 0.9) < 0.005
    (torch.bool, torch.Size([1000, 100]), True)
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    device = torch.device(device)
    if device.type != "cpu":
        return torch.rand(tuple(shape), device=device, generator=generator) < keep
    n = math.prod(shape)
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator))
    bits = np.random.SFC64(seed)
    raw = np.asarray(bits.random_raw((n + 7) // 8), dtype="<u8").view(np.uint8)[:n]
    level = keep * 256
    lo = min(int(level), 256)
    mask = raw < lo
    frac = level - lo
    if frac > 0:
        ties = np.flatnonzero(raw == lo)
        if ties.size:
            mask[ties] = np.random.Generator(bits).random(ties.size) < frac
    return torch.from_numpy(mask).view(tuple(shape))


def lora_delta(
    rows: torch.Tensor,
    mask: torch.Tensor | None,
    a: torch.Tensor,
    b: torch.Tensor,
    scaling: float,
    keep: float,
    base: torch.Tensor | None = None,
) -> torch.Tensor:
    """``base + scaling * B_j A_j (mask * rows / keep)`` per group j, lean in the backward pass.

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
    base : torch.Tensor, optional
        (n, M, out): the base layer's output, added in the same batched product (``baddbmm``)
        rather than by a separate output-sized sum; zero if None.

    Returns
    -------
    torch.Tensor
        (n, M, out), in ``base``'s dtype (``rows``' without ``base``).

    Notes
    -----
    Plain autograd would save the dropped-out input as a new float tensor for every wrapped
    layer; this saves only the mask, packed 8 entries to a byte (numpy's ``packbits`` on the
    CPU; on other devices where ``in`` is a multiple of 8), and recomputes the dropped-out input
    in the backward pass (the input is saved by the base layer anyway). On the CPU the packed
    mask becomes the 0/1 float multiplier through a 256 x 8 lookup table (one pass; a bool
    operand would send torch's product down its slow type-converting path). The factors
    ``scaling / keep`` are applied to the (n, M, r) product, never to an input- or output-sized
    tensor. The result equals ``base + torch.bmm(torch.bmm(dropout(rows), a^T), b^T) *
    scaling`` with that mask.
    """
    return _LoRADelta.apply(base, rows, mask, a, b, float(scaling), float(keep))


#: Byte -> its 8 bits as float32 0/1, least significant first (numpy ``bitorder="little"``).
_BYTE_BITS = np.unpackbits(
    np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little"
).astype(np.float32)


def _pack(mask: torch.Tensor) -> tuple[torch.Tensor, str]:
    """The mask as saved for the backward pass, and how it was packed."""
    if mask.device.type == "cpu":
        flat = np.packbits(mask.numpy().reshape(-1), bitorder="little")
        return torch.from_numpy(flat), "numpy"
    if mask.shape[-1] % 8 == 0:
        return pack_mask(mask), "torch"
    return mask, "none"


def _float_mask(
    saved: torch.Tensor, how: str, shape: torch.Size, dtype: torch.dtype
) -> torch.Tensor:
    """The saved mask as 0/1 of ``dtype`` and ``shape`` (a new tensor)."""
    if how == "numpy":
        n = math.prod(shape)
        bits = torch.from_numpy(np.take(_BYTE_BITS, saved.numpy(), axis=0))
        return bits.view(-1)[:n].view(shape).to(dtype)
    mask = unpack_mask(saved) if how == "torch" else saved
    return mask.to(dtype)


class _LoRADelta(torch.autograd.Function):
    @staticmethod
    def forward(ctx, base, rows, mask, a, b, scaling, keep):
        with torch.autocast(rows.device.type, enabled=False):
            a, b = a.to(rows.dtype), b.to(rows.dtype)
            if mask is None:
                saved, ctx.how, dropped = None, "", rows
            else:
                saved, ctx.how = _pack(mask)
                dropped = _float_mask(saved, ctx.how, rows.shape, rows.dtype).mul_(rows)
            h = torch.bmm(dropped, a.transpose(1, 2)).mul_(scaling / keep)  # (n, M, r)
            del dropped
            ctx.save_for_backward(rows, saved, a, b, h)
            ctx.scale, ctx.base_dtype = scaling / keep, None
            if base is None:
                return torch.bmm(h, b.transpose(1, 2))
            ctx.base_dtype = base.dtype
            if base.dtype == rows.dtype:
                return torch.baddbmm(base, h, b.transpose(1, 2))
            return base + torch.bmm(h, b.transpose(1, 2)).to(base.dtype)

    @staticmethod
    def backward(ctx, grad):
        rows, saved, a, b, h = ctx.saved_tensors
        grad_base = grad if ctx.base_dtype is not None else None
        grad = grad.to(rows.dtype)
        grad_b = torch.bmm(grad.transpose(1, 2), h)  # (n, out, r); h carries scaling / keep
        grad_h = torch.bmm(grad, b).mul_(ctx.scale)  # (n, M, r)
        mask = None if saved is None else _float_mask(saved, ctx.how, rows.shape, rows.dtype)
        dropped = rows if mask is None else rows * mask
        grad_a = torch.bmm(grad_h.transpose(1, 2), dropped)  # (n, r, in)
        grad_rows = None
        if ctx.needs_input_grad[1]:
            if mask is None:
                grad_rows = torch.bmm(grad_h, a)
            else:  # reuse the dropped input's buffer: no second input-sized temporary
                grad_rows = torch.bmm(grad_h, a, out=dropped).mul_(mask)
        return grad_base, grad_rows, None, grad_a, grad_b, None, None


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

"""AdamW for parameters stacked over tasks: the rows of absent tasks do not move at all.

LoRA-ML keeps its T retraining adapters and heads stacked, ``(T, ...)`` per layer
(:mod:`loraml.empirical.lora`, :class:`loraml.empirical.model.TaskHeads`). A plain AdamW step on
such a tensor moves every row, also the rows of tasks absent from the batch (their gradient is 0,
but momentum and weight decay still act). The released scripts kept one tensor per task and gave
the absent ones no gradient (``grad is None``), which AdamW skips entirely: no moment update, no
decay, no step count. :class:`TaskRowAdamW` does the same row by row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

__all__ = ["TaskRowAdamW"]


class TaskRowAdamW(torch.optim.AdamW):
    r"""AdamW whose ``task_rows`` parameter groups update only the rows of the present tasks.

    For a parameter stacked over tasks along dim 0 and each present task t (its gradient row
    :math:`g_t`, its own step count :math:`s_t`), AdamW (Loshchilov and Hutter 2019, as
    ``torch.optim.AdamW`` computes it) applied to row t alone:

    .. math::

        s_t \leftarrow s_t + 1,\quad \theta_t \leftarrow \theta_t (1 - \eta\lambda),\quad
        m_t \leftarrow \beta_1 m_t + (1 - \beta_1) g_t,\quad
        v_t \leftarrow \beta_2 v_t + (1 - \beta_2) g_t^2,

        \theta_t \leftarrow \theta_t - \frac{\eta}{1 - \beta_1^{s_t}}
        \frac{m_t}{\sqrt{v_t} / \sqrt{1 - \beta_2^{s_t}} + \epsilon}.

    The rows of absent tasks keep their value, moments and step count bit for bit, which is
    what ``torch.optim.AdamW`` does for a separate per-task tensor whose ``grad`` is None. Groups
    without ``task_rows`` are plain AdamW.

    Set :attr:`present` (the task indices of the batch) before each :meth:`step`; None means
    every task.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups; a group with ``"task_rows": True`` holds stacked
        parameters.
    lr, weight_decay : float
        Learning rate :math:`\eta` and decoupled weight decay :math:`\lambda`.
    betas : tuple of float
    eps : float

    Examples
    --------
    >>> import torch
    >>> w = torch.nn.Parameter(torch.ones(3, 2))
    >>> opt = TaskRowAdamW([{"params": [w], "task_rows": True}], lr=0.1, weight_decay=0.01)
    >>> w.grad = torch.ones(3, 2)
    >>> opt.present = [1]
    >>> opt.step()
    >>> w[0].tolist(), w[2].tolist()  # tasks 0 and 2 were absent
    ([1.0, 1.0], [1.0, 1.0])
    >>> round(w[1, 0].item(), 4)  # 1 * (1 - 0.1 * 0.01) - 0.1
    0.899
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        self.present: Sequence[int] | None = None

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One step: row-wise for ``task_rows`` groups, plain AdamW for the others."""
        hidden: list[tuple[torch.Tensor, torch.Tensor]] = []
        try:
            for group in self.param_groups:
                if not group.get("task_rows"):
                    continue
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    self._row_step(p, group)
                    hidden.append((p, p.grad))
                    p.grad = None  # the plain AdamW step below skips it
            return super().step(closure)
        finally:
            for p, grad in hidden:
                p.grad = grad

    def _row_step(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        n_rows = p.shape[0]
        rows = list(range(n_rows)) if self.present is None else sorted(set(self.present))
        if not rows:
            return
        if min(rows) < 0 or max(rows) >= n_rows:
            raise IndexError(f"present tasks {rows} out of range for {n_rows} rows")
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros(n_rows, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        cpu_idx = torch.as_tensor(rows, dtype=torch.long)
        idx = cpu_idx.to(p.device)
        state["step"][cpu_idx] += 1
        steps = state["step"][cpu_idx].to(device=p.device, dtype=torch.float64)
        shape = (-1,) + (1,) * (p.dim() - 1)
        bias1 = (1 - beta1**steps).to(p.dtype).view(shape)
        bias2_sqrt = (1 - beta2**steps).sqrt().to(p.dtype).view(shape)
        assert p.grad is not None  # step() calls this only for parameters with a gradient
        grad = p.grad[idx]
        value = p[idx].mul(1 - lr * wd)
        exp_avg = state["exp_avg"][idx].lerp(grad, 1 - beta1)
        exp_avg_sq = state["exp_avg_sq"][idx].mul(beta2).addcmul(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / bias2_sqrt).add(eps)
        value = value - (lr / bias1) * exp_avg / denom
        p[idx] = value
        state["exp_avg"][idx] = exp_avg
        state["exp_avg_sq"][idx] = exp_avg_sq

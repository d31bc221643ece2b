"""Retraining on T tasks: standard retraining (SR) and the meta-learning objective (LoRA-ML).

Each solver takes a :class:`~loraml.theory.objectives.Quadratics` (population or finite-sample
losses) so that the same code serves the infinite-sample theory and the finite-sample experiments.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.optimize as sopt

from loraml.theory.divergence import check_descent
from loraml.theory.linalg import low_rank_factors, psd_factor, sym, union_range
from loraml.theory.objectives import (
    Quadratics,
    adapted,
    lora_ml_grad,
    lora_ml_loss,
)
from loraml.theory.reprs import compact_repr
from loraml.theory.rng import RNGLike, as_generator

_TINY = 1e-300


def _t(M: np.ndarray) -> np.ndarray:
    return np.swapaxes(M, -1, -2)


# ---------------------------------------------------------------------------------------------
# Standard retraining
# ---------------------------------------------------------------------------------------------
def sr_closed_form(q: Quadratics) -> np.ndarray:
    r"""Standard retraining in closed form: ``argmin_A sum_t f_t(A)``.

    Solves ``sum_t (A S_t - C_t) = 0``, i.e. ``A = (sum_t C_t)(sum_t S_t)^{-1}`` (pooled least
    squares). Population, ``x ~ N(0, I)``: ``A_SR = mean_t A_t* = A* + (1/T) sum_t U_t* U_t*^T``
    (Theorem 1).

    Parameters
    ----------
    q : Quadratics
        Task losses, T tasks of dimension d.

    Returns
    -------
    A : ndarray, shape (d, d)

    Examples
    --------
    Theorem 1: SR's population solution is ``A* + mean_t U_t* U_t*^T``:

    >>> import numpy as np
    >>> import loraml.theory as th
    >>> fam = th.draw_family(6, 3, 1, np.random.default_rng(0))
    >>> A_sr = th.sr_closed_form(fam.population())
    >>> bool(np.allclose(A_sr, fam.A_star + fam.perturbations().mean(axis=0)))
    True
    """
    if q.S is None:
        return q.C.mean(0)
    return np.linalg.lstsq(q.S.sum(0), q.C.sum(0).T, rcond=None)[0].T


@dataclass
class GDResult:
    """Outcome of a fixed-schedule gradient-descent run.

    Attributes
    ----------
    A : ndarray, shape (d, d)
        Final base.
    U, V : ndarray, shape (T, d, k), or None
        Final retraining adapters (LoRA-ML only; V for asymmetric adapters).
    losses : ndarray
        Objective recorded before the first step and after every round.
    seconds : float
        Wall time.
    """

    A: np.ndarray
    U: np.ndarray | None = None
    V: np.ndarray | None = None
    losses: np.ndarray = field(default_factory=lambda: np.empty(0))
    seconds: float = 0.0

    def __repr__(self) -> str:
        return compact_repr(self)


def sr_gd(
    q: Quadratics, *, steps: int = 3000, lr: float = 0.03, A0: np.ndarray | None = None
) -> GDResult:
    """Standard retraining by gradient descent: ``A <- A - lr (1/T) sum_t G_t(A)``.

    The step uses the task-averaged gradient (the paper divides by N T). Converges to
    :func:`sr_closed_form` for ``lr < 2 / lambda_max(mean_t S_t)``.

    Parameters
    ----------
    q : Quadratics
    steps : int
    lr : float
    A0 : ndarray, shape (d, d), optional
        Start (zero by default, as in the paper).

    Returns
    -------
    GDResult
        ``losses[i]`` is ``sum_t f_t(A)`` after i steps.

    Raises
    ------
    loraml.theory.divergence.DivergenceError
        When the loss becomes non-finite or exceeds 1000 times its start (``lr`` too large).

    Examples
    --------
    >>> import numpy as np
    >>> import loraml.theory as th
    >>> fam = th.draw_family(4, 3, 1, np.random.default_rng(0))
    >>> q = fam.population()
    >>> gd = th.sr_gd(q, steps=500, lr=0.1)
    >>> bool(np.allclose(gd.A, th.sr_closed_form(q), atol=1e-6))
    True
    """
    start = time.perf_counter()
    A = np.zeros((q.C.shape[1], q.d)) if A0 is None else A0.astype(float).copy()
    A, losses = _base_gd(q, A, 0.0, steps, lr, "sr_gd")
    return GDResult(A, losses=losses, seconds=time.perf_counter() - start)


def _base_gd(
    q: Quadratics, A: np.ndarray, offset: np.ndarray | float, steps: int, lr: float, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """``steps`` of ``A <- A - lr (1/T) sum_t G_t(A + offset_t)``; ``losses[i]`` before step i.

    ``offset`` is 0 for SR or the frozen adapters ``U_t0 U_t0^T`` of the released script's SR.
    A loss that turns non-finite or grows past 1000 times its start raises
    :class:`~loraml.theory.divergence.DivergenceError` naming the step.
    """
    losses = np.empty(steps + 1)
    for i in range(steps + 1):
        losses[i] = q.losses(A + offset).sum()
        check_descent(losses[i], losses[0], i, method=method, lr=f"lr={lr:g}")
        if i < steps:
            A = A - lr * q.grads(A + offset).mean(0)
    return A, losses


def sr_released(
    q: Quadratics,
    k: int,
    rng: RNGLike,
    *,
    steps: int = 3000,
    lr: float = 0.03,
    init_std: float = 0.1,
) -> GDResult:
    r"""SR as the paper's released linear script trains it: frozen random adapters left in.

    The released script (github.com/jacob-block/peft-ml, behind the linear figures of
    arXiv 2410.22264 v1) trains its SR baseline in the LoRA-ML model with the ``T`` adapters
    drawn, ``U_t0`` entries ``N(0, init_std^2)``, and never updated, so every step is
    ``A <- A - lr (1/T) sum_t G_t(A + U_t0 U_t0^T)``. Its fixed point solves
    ``sum_t ((A + P_t0) S_t - C_t) = 0``, ``P_t0 = U_t0 U_t0^T``::

        A_released = (sum_t C_t - P_t0 S_t) (sum_t S_t)^{-1}
                   = A_SR - mean_t P_t0                       (population, S_t = I)

    i.e. SR's solution (:func:`sr_closed_form`) biased by the mean of the frozen adapters; GD
    converges to it for ``lr < 2 / lambda_max(mean_t S_t)``. The adapters are drawn exactly as
    :func:`lora_ml_paper_gd` draws its initial ``U_t`` (first draw from ``rng``), so the same seed
    gives both methods the same start. This reproduces a defect of the released code; the correct
    SR is :func:`sr_gd` / :func:`sr_closed_form`.

    Parameters
    ----------
    q : Quadratics
        T task losses of dimension d.
    k : int
        Rank of the frozen adapters.
    rng : int, numpy.random.Generator or None
        Seed or generator that draws the frozen adapters.
    steps : int
        Gradient steps on ``A`` (the released script: 3000).
    lr : float
        Step size (0.03).
    init_std : float
        Standard deviation of the adapter entries (0.1).

    Returns
    -------
    GDResult
        ``A`` the trained base, ``U`` the frozen adapters ``U_t0``; ``losses[i]`` is
        ``sum_t f_t(A + U_t0 U_t0^T)`` (the objective the script descends) after i steps.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import Quadratics, draw_family, sr_closed_form
    >>> fam = draw_family(6, 2, 1, np.random.default_rng(0))
    >>> q = Quadratics.population(fam.targets())
    >>> res = sr_released(q, 1, np.random.default_rng(1))
    >>> P0 = res.U @ np.swapaxes(res.U, 1, 2)
    >>> bool(np.allclose(res.A, sr_closed_form(q) - P0.mean(0), atol=1e-10))
    True
    """
    rng = as_generator(rng)
    start = time.perf_counter()
    T, d = q.T, q.d
    U0 = init_std * rng.standard_normal((T, d, k))
    P0 = U0 @ np.swapaxes(U0, 1, 2)
    A, losses = _base_gd(q, np.zeros((q.C.shape[1], d)), P0, steps, lr, "sr_released")
    return GDResult(A, U0, losses=losses, seconds=time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# LoRA-ML: the paper's gradient-descent schedule
# ---------------------------------------------------------------------------------------------
def lora_ml_paper_gd(
    q: Quadratics,
    k: int,
    rng: RNGLike,
    *,
    rounds: int = 3000,
    inner: int = 10,
    lr_u: float = 0.003,
    lr_a: float = 0.03,
    init_std: float = 0.1,
    asymmetric: bool = False,
) -> GDResult:
    r"""LoRA-ML retraining with the paper's alternating gradient-descent schedule.

    Minimises ``F(A, U) = sum_t f_t(A + U_t U_t^T)`` (arXiv 2410.22264, LoRA-ML) by ``rounds``
    rounds of: ``inner`` simultaneous gradient steps on every ``U_t`` with step ``lr_u``, then one
    step on ``A`` along the task-averaged gradient ``(1/T) sum_t G_t`` with step ``lr_a``. Start:
    ``A = 0``, ``U_t`` entries ``N(0, init_std^2)`` (released script). Finite-sample losses are
    per-sample means, which equals the paper's division of gradients by N (A: by N T).

    Parameters
    ----------
    q : Quadratics
        T task losses of dimension d.
    k : int
        Adapter rank.
    rng : int, numpy.random.Generator or None
        Draws the initial adapters (the paper's scripts were unseeded).
    rounds, inner : int
        The paper uses 3000 rounds of 10 inner steps.
    lr_u, lr_a : float
        Step sizes (paper: 0.003 and 0.03).
    init_std : float
        Standard deviation of the initial adapter entries.
    asymmetric : bool
        Train ``U_t V_t^T`` instead of ``U_t U_t^T``.

    Returns
    -------
    GDResult
        ``losses[i]`` is ``F`` after i rounds (``rounds + 1`` values).

    Raises
    ------
    loraml.theory.divergence.DivergenceError
        When ``F`` becomes non-finite or exceeds 1000 times its start (``lr_u`` or ``lr_a`` too
        large for the instance's scale).

    Examples
    --------
    >>> import numpy as np
    >>> import loraml.theory as th
    >>> rng = np.random.default_rng(0)
    >>> fam = th.draw_family(4, 3, 1, rng)
    >>> gd = th.lora_ml_paper_gd(fam.population(), 1, rng, rounds=50)
    >>> gd.A.shape, gd.U.shape, bool(gd.losses[-1] < gd.losses[0])
    ((4, 4), (3, 4, 1), True)
    """
    rng = as_generator(rng)
    start = time.perf_counter()
    T, d = q.T, q.d
    A = np.zeros((q.C.shape[1], d))
    U = init_std * rng.standard_normal((T, d, k))
    V = init_std * rng.standard_normal((T, d, k)) if asymmetric else None
    losses = np.empty(rounds + 1)
    lrs = f"lr_u={lr_u:g}, lr_a={lr_a:g}"
    # overflow inside a diverging round is reported once, by check_descent, not as warnings
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(rounds):
            losses[i] = lora_ml_loss(q, A, U, V)
            check_descent(losses[i], losses[0], i, method="lora_ml_paper_gd", lr=lrs, unit="round")
            for _ in range(inner):
                g = lora_ml_grad(q, A, U, V)
                U = U - lr_u * g[1]
                if V is not None:
                    V = V - lr_u * g[2]
            A = A - lr_a * q.grads(adapted(A, U, V)).mean(0)
    losses[rounds] = lora_ml_loss(q, A, U, V)
    check_descent(
        losses[rounds], losses[0], rounds, method="lora_ml_paper_gd", lr=lrs, unit="round"
    )
    return GDResult(A, U, V, losses, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# LoRA-ML: fast solver
# ---------------------------------------------------------------------------------------------
@dataclass
class LoraMLResult:
    """Outcome of :func:`solve_lora_ml`.

    Attributes
    ----------
    A : ndarray, shape (d, d)
        Retrained base ``A_hat``.
    U : ndarray, shape (T, d, k)
        Retraining adapters (``U_t U_t^T``, or left factors of ``U_t V_t^T``).
    V : ndarray, shape (T, d, k), or None
        Right factors for asymmetric adapters.
    objective : float
        ``F(A_hat, U_hat)``, summed from per-task residuals (no cancellation, see
        :meth:`~loraml.theory.objectives.Quadratics.losses`).
    grad_norm : float
        Frobenius norm of the full gradient ``(grad_A, grad_U[, grad_V])`` at the result.
    iterations : int
        Alternating-minimisation sweeps plus quasi-Newton iterations, over every start.
    seconds : float
        Wall time.
    converged : bool
        Every per-task relative gradient (:func:`task_stationarity`) is at most its threshold
        (:func:`stationarity_thresholds`: ``tol``, or the rounding floor of a task much smaller
        than the largest). Says nothing about whether the point is a global minimum; see
        ``status``.
    message : str
        How the solver stopped.
    history : ndarray
        Objective after each iteration (of the start that was kept).
    stationarity : float
        ``max_t`` of the per-task relative gradients (:func:`task_stationarity`).
    task_residuals : ndarray, shape (T,)
        Per-task relative excess residuals (:func:`task_residuals`); all zero at a zero-excess
        point, which is a global minimum of F.
    status : str
        ``"global minimum"`` (every task residual ``<= zero_tol``: F equals its lower bound
        ``sum_t min f_t``), ``"stationary point"`` (converged, positive residual: global or not
        cannot be told from first-order information; finite-sample losses always end here) or
        ``"not converged"``.
    identifiable : bool or None
        Whether ``A_hat`` is the only base of a zero-excess point (:func:`identifiability`):
        True when proved, False when provably not, None when undecided.
    identifiability : str
        The reason, one line.
    starts : int
        Number of starts tried (restarts happen only when the first start did not reach zero
        excess residual).
    """

    A: np.ndarray
    U: np.ndarray
    V: np.ndarray | None
    objective: float
    grad_norm: float
    iterations: int
    seconds: float
    converged: bool
    message: str = field(repr=False)  # printed by loraml solve; too long for a repr
    history: np.ndarray
    stationarity: float = float("nan")
    task_residuals: np.ndarray = field(default_factory=lambda: np.empty(0))
    status: str = "not converged"
    identifiable: bool | None = None
    identifiability: str = field(default="", repr=False)
    starts: int = 1

    def __repr__(self) -> str:
        return compact_repr(self)


def _task_scales(q: Quadratics) -> np.ndarray:
    """``||B_t||_{S_t} = sqrt(tr(B_t S_t B_t^T))`` per task (population: ``||A_t*||_F``)."""

    def compute() -> np.ndarray:
        B = q.least_squares()
        sq = np.einsum("tij,tij->t", q.times_S(B), B)
        return np.sqrt(np.maximum(sq, 0.0))

    # cached: the stopping rule needs it at every L-BFGS iteration (5-15 % of a small solve)
    return q.memo("_task_scales", compute)


def _C_norms(q: Quadratics) -> np.ndarray:
    """``s_t = ||C_t||_F`` per task (floored at a tiny positive number), the gradients' units."""
    return q.memo("_C_norms", lambda: np.maximum(np.linalg.norm(q.C, axis=(1, 2)), _TINY))


def task_residuals(
    q: Quadratics, A: np.ndarray, U: np.ndarray, V: np.ndarray | None = None
) -> np.ndarray:
    r"""Per-task relative excess residuals ``||M_t - B_t||_{S_t} / ||B_t||_{S_t}``.

    ``M_t = A + U_t U_t^T`` (or ``U_t V_t^T``), ``B_t`` task t's own minimiser and
    ``||X||_S = sqrt(tr(X S X^T))``. Since ``f_t(M) = f_t(B_t) + 1/2 ||M - B_t||_{S_t}^2``
    (:class:`~loraml.theory.objectives.Quadratics`), a zero residual on every task means
    ``F = sum_t min f_t``, the lower bound of F: a global minimum. Scale-free (each task is
    measured against its own size), so a small task's unfitted signal is never hidden by a large
    task's loss.

    Parameters
    ----------
    q : Quadratics
    A : ndarray, shape (d, d)
    U : ndarray, shape (T, d, k)
    V : ndarray, shape (T, d, k), optional

    Returns
    -------
    ndarray, shape (T,)

    Examples
    --------
    >>> import numpy as np, loraml.theory as th
    >>> fam = th.draw_family(8, 3, 1, np.random.default_rng(0))
    >>> res = th.solve_lora_ml(fam.population(), 1)
    >>> bool(th.task_residuals(fam.population(), res.A, res.U).max() < 1e-10)
    True
    """
    D = adapted(A, U, V) - q.least_squares()
    return _residuals_from(q, D, q.times_S(D))


def _residuals_from(q: Quadratics, D: np.ndarray, DS: np.ndarray) -> np.ndarray:
    """:func:`task_residuals` from ``D_t = M_t - B_t`` and ``D_t S_t`` already computed."""
    num = np.sqrt(np.maximum(np.einsum("tij,tij->t", DS, D), 0.0))
    return num / np.maximum(_task_scales(q), _TINY)


def zero_thresholds(q: Quadratics, zero_tol: float = 1e-8) -> np.ndarray:
    """Per-task residual below which a task counts as fitted: ``zero_tol`` or the rounding floor.

    The floor ``100 eps max_s s_s / s_t`` (``s_t = ||C_t||_F``) is that of
    :func:`stationarity_thresholds` with more room: the shared base carries the largest task's
    rounding error into every task (measured ``2e-8`` at perturbation scales ``1e6 : 1 : 1e-6``).

    Parameters
    ----------
    q : Quadratics
        Task losses.
    zero_tol : float
        Requested relative residual.

    Returns
    -------
    ndarray, shape (T,)
        Per-task thresholds on :func:`task_residuals`.

    Examples
    --------
    >>> import numpy as np
    >>> import loraml.theory as th
    >>> from loraml.theory.retraining import zero_thresholds
    >>> fam = th.draw_family(6, 3, 1, np.random.default_rng(0))
    >>> q = fam.population()
    >>> zero_thresholds(q).tolist()
    [1e-08, 1e-08, 1e-08]
    """
    s = _C_norms(q)
    return np.maximum(zero_tol, 100 * np.finfo(float).eps * s.max() / s)


def task_stationarity(
    q: Quadratics, A: np.ndarray, U: np.ndarray, V: np.ndarray | None = None
) -> np.ndarray:
    r"""Per-task relative gradients of ``F(A, U) = sum_t f_t(A + U_t U_t^T)``.

    With ``G_t = M_t S_t - C_t`` and ``s_t = ||C_t||_F`` (task t's scale, units of ``G_t``),
    entry t is ``||grad_{U_t} F||_F / (2 s_t ||U_t||_F)`` (symmetric;
    ``grad_{U_t} = (G_t + G_t^T) U_t`` is at most ``2 ||G_t|| ||U_t||``) or
    ``||(G_t V_t, G_t^T U_t)||_F / (s_t ||(U_t, V_t)||_F)`` (asymmetric), and a last entry
    ``||grad_A F|| / sum_t s_t`` (``grad_A = sum_t G_t``). Each entry is invariant under scaling
    the instance (``C -> c C``, ``U -> sqrt(c) U``) and under scaling one task alone, so a
    stopping rule ``max <= tol`` means the same on every instance; a zero adapter counts as
    stationary (its gradient vanishes exactly).

    Parameters
    ----------
    q : Quadratics
        Task losses.
    A : ndarray, shape (d, d)
    U : ndarray, shape (T, d, k)
    V : ndarray, shape (T, d, k), optional
        Right factors of asymmetric adapters ``U_t V_t^T``.

    Returns
    -------
    ndarray, shape (T + 1,)
        Relative gradients of the T adapters, then of the base.

    Examples
    --------
    >>> import numpy as np
    >>> import loraml.theory as th
    >>> from loraml.theory.retraining import task_stationarity
    >>> fam = th.draw_family(6, 3, 1, np.random.default_rng(0))
    >>> q = fam.population()
    >>> bool(np.all(task_stationarity(q, fam.A_star, fam.U_star) < 1e-12))  # a global minimum
    True
    """
    return _stationarity_from(q, q.grads(adapted(A, U, V)), U, V)


def _stationarity_from(
    q: Quadratics, G: np.ndarray, U: np.ndarray, V: np.ndarray | None
) -> np.ndarray:
    """:func:`task_stationarity` from the task gradients ``G_t`` already computed."""
    s = _C_norms(q)
    if V is None:
        gU = (G + _t(G)) @ U
        num = np.linalg.norm(gU, axis=(1, 2))
        den = 2 * s * np.linalg.norm(U, axis=(1, 2))
    else:
        num = np.sqrt(np.sum((G @ V) ** 2, axis=(1, 2)) + np.sum((_t(G) @ U) ** 2, axis=(1, 2)))
        den = s * np.sqrt(np.sum(U * U, axis=(1, 2)) + np.sum(V * V, axis=(1, 2)))
    per_task = np.where(num > 0, num / np.maximum(den, _TINY), 0.0)
    return np.append(per_task, np.linalg.norm(G.sum(0)) / s.sum())


def stationarity_thresholds(
    q: Quadratics, tol: float, residuals: np.ndarray | None = None
) -> np.ndarray:
    r"""Per-task thresholds for :func:`task_stationarity`, the precision double arithmetic allows.

    ``max(tol, 16 eps max_s s_s / s_t, 10 sqrt(eps) r_t)`` with ``s_t = ||C_t||_F``, ``eps``
    the machine epsilon and ``r_t`` task t's relative residual (:func:`task_residuals`).

    - Every ``M_t = A + U_t U_t^T`` shares the base ``A``, computed from all tasks, so ``G_t``
      carries a rounding error of about ``eps max_s s_s``: relative to a task ``1e6`` times
      smaller than the largest nothing gets below ``~1e-10`` (measured ``2e-10`` for
      perturbation scales ``1e6 : 1 : 1e-6``).
    - At a point with positive residual (finite samples, misspecified ranks), a line search
      tells two values apart only above their rounding, ``eps phi`` with
      ``phi ~ 1/2 s_t^2 r_t^2``; a gradient ``g`` changes ``phi`` by ``~ g^2 / (2 L)``
      (``L ~ s_t ||U_t||^2`` the curvature), so relative gradients below ``~sqrt(eps) r_t`` are
      out of reach of any method that compares values. At a zero-residual minimum this term
      vanishes and ``tol`` governs.

    Every term is invariant under scaling the instance.

    Parameters
    ----------
    q : Quadratics
    tol : float
        Requested relative tolerance.
    residuals : ndarray, shape (T,), optional
        Per-task relative residuals at the point (zero when omitted).

    Returns
    -------
    ndarray, shape (T + 1,)
        Thresholds for the T tasks and for the base gradient.

    Examples
    --------
    >>> import numpy as np
    >>> import loraml.theory as th
    >>> from loraml.theory.retraining import stationarity_thresholds
    >>> fam = th.draw_family(6, 3, 1, np.random.default_rng(0))
    >>> q = fam.population()
    >>> thr = stationarity_thresholds(q, 1e-12)
    >>> thr.shape, bool(np.all(thr >= 1e-12))
    ((4,), True)
    """
    s = _C_norms(q)
    eps = np.finfo(float).eps
    r = np.zeros(q.T) if residuals is None else np.asarray(residuals, dtype=float)
    floor = np.append(np.maximum(16 * eps * s.max() / s, 10 * np.sqrt(eps) * r), 16 * eps)
    return np.maximum(tol, floor)


def identifiability(
    q: Quadratics,
    A: np.ndarray,
    U: np.ndarray,
    V: np.ndarray | None = None,
    *,
    zero_tol: float = 1e-8,
    rtol: float = 1e-6,
    residuals: np.ndarray | None = None,
) -> tuple[bool | None, str]:
    r"""Is ``A_hat`` the only base of a zero-excess LoRA-ML point (Theorem 3, arXiv 2410.22264)?

    Criterion (derived here; Theorem 3 of the paper is the case of independent columns of
    ``[U_1*, ..., U_T*]``, T >= 3). Let ``(A, P_t = U_t U_t^T)`` fit every task exactly and let
    ``(A', Q_t)`` be another exact fit with ``rank Q_t <= k``. Then ``Q_t - Q_s = P_t - P_s``. If
    for task t two other tasks s, r make ``[U_t, U_s, U_r]`` of full column rank 3k, then
    ``rank(P_t - P_s) = 2k`` forces ``col(Q_t) + col(Q_s) = span(U_t, U_s)``, so
    ``col(Q_t) ⊂ span(U_t, U_s) ∩ span(U_t, U_r) = col(U_t)``. If every task has such a pair,
    ``D = A - A' = Q_t - P_t`` has its columns in ``col(U_t) ∩ col(U_s) = {0}``: ``A' = A``. The
    same holds row-wise with ``V_t`` for asymmetric adapters. Not identifiable: a singular
    ``S_t`` (task t's matrix is not determined by its data); one distinct task (``A - u u^T``
    for any ``u`` in ``col(U_1)``... fits too); two distinct tasks with ``[U_1, U_2]`` of full
    column rank (the continuous family of Theorem 4 /
    :func:`~loraml.theory.landscape.t2_global_minimum`). Everything else, including points that
    do not fit every task exactly (finite-sample losses), is undecided: Theorem 3 is a statement
    about zero-loss minimisers.

    Parameters
    ----------
    q : Quadratics
    A, U, V : ndarray
        The point (``V`` for asymmetric adapters).
    zero_tol : float
        A task is fitted exactly when its relative residual (:func:`task_residuals`) is below.
    rtol : float
        Columns are independent when ``sigma_min / sigma_max > rtol`` (each factor normalised).
    residuals : ndarray, shape (T,), optional
        :func:`task_residuals` at the point, when already computed.

    Returns
    -------
    (identifiable, reason) : (bool or None, str)

    Examples
    --------
    >>> import numpy as np, loraml.theory as th
    >>> fam = th.draw_family(8, 3, 1, np.random.default_rng(0))
    >>> th.solve_lora_ml(fam.population(), 1).identifiable
    True
    >>> th.solve_lora_ml(th.Quadratics.population(fam.targets()[:2]), 1).identifiable
    False
    """
    T, k = U.shape[0], U.shape[2]
    if q.S is not None:
        for t, S in enumerate(q.S):
            w = np.linalg.eigvalsh(S)
            if w[0] <= 1e-12 * max(w[-1], _TINY):
                return False, (
                    f"not identifiable: task {t}'s input second moment is singular (rank-deficient "
                    "X), so its matrix is not determined by its data"
                )
    B = q.least_squares()
    scale = np.maximum(_task_scales(q), _TINY)
    # Duplicates: a seeded random projection first (cheap), the full comparison only when close.
    z = np.random.default_rng(0).standard_normal(B.shape[2])
    Bz = B @ z
    zs = np.maximum(np.linalg.norm(Bz, axis=1), _TINY)
    distinct: list[int] = []
    for t in range(T):
        if not any(
            np.linalg.norm(Bz[t] - Bz[s]) <= 1e-6 * max(zs[t], zs[s])
            and np.linalg.norm(B[t] - B[s]) <= zero_tol * max(scale[t], scale[s])
            for s in distinct
        ):
            distinct.append(t)
    resid = task_residuals(q, A, U, V) if residuals is None else residuals
    if np.any(resid > zero_thresholds(q, zero_tol)):
        return (
            None,
            "undecided: the point does not fit every task exactly (Theorem 3 is about zero loss)",
        )

    def independent(cols: list[np.ndarray]) -> bool:
        M = np.concatenate([c / max(np.linalg.norm(c), _TINY) for c in cols], axis=1)
        if M.shape[1] > M.shape[0]:
            return False
        s = np.linalg.svd(M, compute_uv=False)
        return bool(s[0] > 0 and s[-1] > rtol * s[0])

    factors = [U] if V is None else [U, V]
    if len(distinct) == 1:
        return False, f"not identifiable: only one distinct task (T={T}); a shifted base fits too"
    if len(distinct) == 2:
        a, b = distinct
        if all(independent([F[a], F[b]]) for F in factors):
            return False, (
                "not identifiable: two distinct tasks (T=2 or duplicated tasks) admit a continuous "
                "family of zero-loss bases (Theorems 2 and 4)"
            )
        return None, "undecided: two distinct tasks with dependent adapter columns"
    for t in distinct:
        others = [s for s in distinct if s != t]
        if not any(
            all(independent([F[t], F[s], F[r]]) for F in factors)
            for i, s in enumerate(others)
            for r in others[i + 1 :]
        ):
            return None, (
                f"undecided: no two other tasks make task {t}'s adapter columns part of an "
                f"independent set of {3 * k} (genericity of Theorem 3 fails or 3k > d)"
            )
    return True, (
        f"identifiable: {len(distinct)} distinct tasks fitted exactly with independent adapter "
        "columns (Theorem 3)"
    )

    def __repr__(self) -> str:
        return compact_repr(self)


class _Problem:
    """LoRA-ML with the base eliminated: ``phi(U) = min_A F(A, U)`` (variable projection)."""

    def __init__(self, q: Quadratics, k: int, asymmetric: bool):
        self.q, self.k, self.asym = q, k, asymmetric
        self.shape = (q.T, q.d, k)
        self._last: tuple[np.ndarray, float] | None = None  # (x, phi(x)) of the last fun call
        self._stats: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if q.S is not None:
            self.S_sum_pinv = np.linalg.pinv(q.S.sum(0), hermitian=True)

    def best_A(self, U: np.ndarray, V: np.ndarray | None) -> np.ndarray:
        """``argmin_A F``: ``A = (sum_t C_t - P_t S_t)(sum_t S_t)^{-1}``, ``P_t = U_t V_t^T``."""
        P = U @ np.swapaxes(U if V is None else V, -1, -2)
        if self.q.S is None:
            return (self.q.C - P).mean(0)
        return (self.q.C - P @ self.q.S).sum(0) @ self.S_sum_pinv

    def split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        n = int(np.prod(self.shape))
        U = x[:n].reshape(self.shape)
        return U, (x[n:].reshape(self.shape) if self.asym else None)

    def fun(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """``phi(x) - sum_t min f_t`` (the excess, from residuals) and its gradient.

        The constant ``sum_t min f_t`` is left out: line searches compare values, and a
        finite-sample F carries that constant's rounding error (``eps sum_t min f_t``).
        """
        U, V = self.split(x)
        A = self.best_A(U, V)
        D = adapted(A, U, V) - self.q.least_squares()
        G = self.q.times_S(D)  # G_t = M_t S_t - C_t; grad_A = sum_t G_t vanishes at best_A
        value = 0.5 * float(np.einsum("tij,tij->", G, D))
        if V is None:
            grad = ((G + _t(G)) @ U).ravel()
        else:
            grad = np.concatenate([(G @ V).ravel(), (_t(G) @ U).ravel()])
        self._last = (x.copy(), value)
        self._stats = (x, G, D)  # for stationary_at, without recomputing
        return value, grad

    def stationary_at(self, x: np.ndarray, tol: float) -> bool:
        """The stopping rule at ``x`` (reusing the last evaluation when ``x`` is that point)."""
        if self._stats is None or not np.array_equal(self._stats[0], x):
            self.fun(x)
        assert self._stats is not None  # set by fun
        _, G, D = self._stats
        U, V = self.split(x)
        resid = _residuals_from(self.q, D, G)
        bound = stationarity_thresholds(self.q, tol, resid)
        return bool(np.all(_stationarity_from(self.q, G, U, V) <= bound))

    def value(self, x: np.ndarray) -> float:
        """``phi(x)``, reusing the last evaluation when ``x`` is the point just evaluated."""
        if self._last is not None and np.array_equal(self._last[0], x):
            return self._last[1]
        return self.fun(x)[0]


def _am_step(
    B: np.ndarray, A: np.ndarray, k: int, asymmetric: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Adapters from truncations of ``B_t - A``: the exact block minimiser only when ``S_t = I``.

    For ``S_t = I`` the U-step ``min_{U_t} 1/2 ||A + U_t U_t^T - B_t||_F^2`` is solved by the
    rank-k PSD truncation of ``sym(B_t - A)`` (Eckart-Young on the PSD cone). For general
    ``S_t`` the block objective is ``1/2 ||A + U_t U_t^T - B_t||_{S_t}^2``, a weighted
    low-rank problem with no closed form; the truncation is then only a heuristic step (kept by
    the solver only while it decreases F).
    """
    if asymmetric:
        pairs = [low_rank_factors(b - A, k) for b in B]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    return psd_factor(B - A, k), None


def _local_solve(
    q: Quadratics,
    k: int,
    prob: _Problem,
    U: np.ndarray,
    V: np.ndarray | None,
    *,
    tol: float,
    max_iter: int,
    am_iter: int,
    use_am: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int, str, list[float]]:
    """Alternating minimisation and L-BFGS from ``(U, V)`` until the per-task stopping rule.

    Cycles (at most 4): alternating-minimisation sweeps while each lowers F (exact sweeps when
    ``S_t = I``; ``use_am`` False skips them), then L-BFGS on the variable-projected objective
    until :func:`task_stationarity` is at most ``tol`` or L-BFGS stops. A cycle that lowers F by
    less than a relative ``1e-15`` ends the loop.
    """
    B = q.least_squares()
    asym = V is not None
    A = prob.best_A(U, V)
    history = [lora_ml_loss(q, A, U, V)]
    iterations, message = 0, "start"

    offset = float(np.sum(q.minima()))

    def evaluate(A: np.ndarray, U: np.ndarray, V: np.ndarray | None) -> tuple[float, bool]:
        """F and the stopping rule from one residual ``D_t = M_t - B_t``."""
        D = adapted(A, U, V) - B
        G = q.times_S(D)
        f = 0.5 * float(np.einsum("tij,tij->", G, D)) + offset
        bound = stationarity_thresholds(q, tol, _residuals_from(q, D, G))
        return f, bool(np.all(_stationarity_from(q, G, U, V) <= bound))

    stat = evaluate(A, U, V)[1]
    for cycle in range(4):
        f_cycle = history[-1]
        # Alternating minimisation: fast while it contracts; stops at the first ascent.
        sweeps = 0
        while use_am and sweeps < am_iter and not stat:
            U_new, V_new = _am_step(B, A, k, asym)
            A_new = prob.best_A(U_new, V_new)
            f_new, stat_new = evaluate(A_new, U_new, V_new)
            if not f_new < history[-1]:
                break
            A, U, V, stat = A_new, U_new, V_new, stat_new
            history.append(f_new)
            sweeps += 1
            message = "alternating minimisation"
            if cycle == 0 and f_new > 0.5 * history[-2]:  # slow contraction: hand over to L-BFGS
                break
        iterations += sweeps
        if stat:
            message = f"{message}: every task's relative gradient below its threshold"
            break

        def stop(intermediate_result: sopt.OptimizeResult) -> None:
            history.append(float(intermediate_result.fun) + offset)
            if prob.stationary_at(intermediate_result.x, tol):
                raise StopIteration

        x0 = np.concatenate([U.ravel()] + ([V.ravel()] if V is not None else []))
        res = sopt.minimize(
            prob.fun,
            x0,
            jac=True,
            method="L-BFGS-B",
            callback=stop,
            options={"maxiter": max_iter, "gtol": 0.0, "ftol": 1e-300, "maxcor": 30, "maxls": 50},
        )
        U, V = prob.split(res.x)
        A = prob.best_A(U, V)
        iterations += int(res.nit)
        message = "L-BFGS" if "StopIteration" in str(res.message) else f"L-BFGS: {res.message}"
        stat = evaluate(A, U, V)[1]
        if stat:
            message = f"{message}: every task's relative gradient below its threshold"
            break
        if not history[-1] < f_cycle * (1 - 1e-15):
            break
    return A, U, V, iterations, message, history


def solve_lora_ml(
    q: Quadratics,
    k: int,
    *,
    asymmetric: bool = False,
    tol: float = 1e-12,
    max_iter: int = 5000,
    am_iter: int = 200,
    init: tuple[np.ndarray | None, ...] | None = None,
    compress: bool = True,
    restarts: int | None = None,
    seed: int | np.random.Generator = 0,
    zero_tol: float = 1e-8,
) -> LoraMLResult:
    r"""LoRA-ML retraining, fast: alternating minimisation, L-BFGS, restarts.

    Solves (arXiv 2410.22264 v1, the LoRA-ML objective; Theorems 2-4)::

        min_{A, U_1..U_T}  F(A, U) = sum_t f_t(A + U_t U_t^T)      (or U_t V_t^T if asymmetric)

    for population or finite-sample task losses ``f_t``
    (see :class:`~loraml.theory.objectives.Quadratics`).

    Notes
    -----
    Method:

    1. Spectral start: ``A_0`` = SR solution, ``U_t`` = rank-k truncation (PSD eigen-truncation
       of ``sym(B_t - A_0)``, or SVD for asymmetric adapters), ``B_t`` task t's least-squares
       solution.
    2. Alternating minimisation: the A-step (``grad_A F = 0``, a mean or a linear solve) is always
       the exact block minimiser. The U-step (truncation of ``B_t - A``) is the exact block
       minimiser **only when every** ``S_t = I`` (population, isotropic inputs); for general
       ``S_t`` it minimises the unweighted ``||A + U_t U_t^T - B_t||_F`` instead of
       ``||.||_{S_t}`` and is a heuristic, kept only while it lowers F. (An exact weighted
       U-step has no closed form; L-BFGS below does that work instead.)
    3. L-BFGS on ``phi(U) = min_A F(A, U)`` (variable projection; ``grad phi = grad_U F`` at the
       best A), alternated with further sweeps, until the scale-free stopping rule holds:
       ``converged`` means ``max_t`` of the per-task relative gradients
       (:func:`task_stationarity`) is at most ``tol``.
    4. Restarts (``init`` not given): when the end point does not fit every task exactly
       (:func:`task_residuals` above ``zero_tol``), up to ``restarts`` further starts are tried
       and the lowest objective kept; asymmetric adapters first start from the symmetric
       solution, then from seeded random starts at the problem's scale. Asymmetric adapters
       need them: ``A + U_t V_t^T`` has runaway valleys (``A -> A + lambda W`` absorbed by
       every adapter) where L-BFGS from the spectral start can end with a positive loss.
    5. ``status``: ``"global minimum"`` when every task residual is at most ``zero_tol``,
       otherwise ``"stationary point"`` or ``"not converged"``; ``identifiable`` from
       :func:`identifiability`.

    Population, isotropic and large d: all ``A_t* - mean_s A_s*`` lie in a subspace of dimension
    at most ``kT`` (the union of the ``U_t*`` ranges). The solver finds it with a seeded
    randomized range finder, solves the problem in that ``m``-dimensional subspace (exact:
    projecting adapters onto it never increases the loss), and lifts back.

    Symmetry: ``U_t`` is identified only up to ``U_t Q_t`` with ``Q_t`` orthogonal; compare
    ``U_t U_t^T`` or use :func:`loraml.theory.metrics.procrustes_distance`.

    Parameters
    ----------
    q : Quadratics
        T task losses, dimension d.
    k : int
        Adapter rank, ``1 <= k <= d``.
    asymmetric : bool
        Adapters ``U_t V_t^T`` (beyond the theory).
    tol : float
        Per-task relative stationarity tolerance (:func:`task_stationarity`).
    max_iter : int
        Cap on quasi-Newton iterations per L-BFGS run.
    am_iter : int
        Cap on alternating-minimisation sweeps per cycle.
    init : tuple (A, U) or (A, U, V), optional
        Start instead of the spectral one (for landscape studies; no restarts). ``A`` is not
        used (the base is eliminated) and may be None.
    compress : bool
        Allow the subspace reduction described above.
    restarts : int, optional
        Further starts when the first does not reach zero residual. Default: 5 for population
        losses, 0 for finite-sample ones (which never fit every task exactly).
    seed : int or numpy.random.Generator
        Seeds the random restarts (deterministic by default).
    zero_tol : float
        Relative residual below which a task counts as fitted exactly.

    Returns
    -------
    LoraMLResult

    Examples
    --------
    Theorem 3: with three generic tasks LoRA-ML recovers ``A*``:

    >>> import numpy as np
    >>> import loraml.theory as th
    >>> fam = th.draw_family(d=10, T=3, k=1, rng=np.random.default_rng(0))
    >>> res = th.solve_lora_ml(fam.population(), k=1)
    >>> res.converged, bool(th.base_error(res.A, fam.A_star).relative < 1e-8)
    (True, True)

    Asymmetric adapters (a restart from the symmetric solution when needed):

    >>> import numpy as np, loraml.theory as th
    >>> fam = th.draw_family(20, 3, 2, np.random.default_rng(0))
    >>> res = th.solve_lora_ml(fam.population(), 2, asymmetric=True)
    >>> res.status, bool(th.base_error(res.A, fam.A_star).relative < 1e-8)
    ('global minimum', True)
    """
    start = time.perf_counter()
    if not 1 <= k <= q.d:
        raise ValueError(f"rank k={k} must satisfy 1 <= k <= d={q.d}")
    if restarts is None:
        restarts = 5 if q.N is None else 0
    if compress and init is None and q.isotropic and q.d >= 64:
        reduced = _solve_compressed(q, k, asymmetric, tol, max_iter, am_iter, restarts, seed)
        if reduced is not None:
            reduced.seconds = time.perf_counter() - start
            return reduced

    prob = _Problem(q, k, asymmetric)
    kw: dict[str, Any] = dict(tol=tol, max_iter=max_iter, am_iter=am_iter)
    if init is not None:
        U = np.asarray(init[1], dtype=float)
        V = np.asarray(init[2], dtype=float) if asymmetric else None
        runs = [_local_solve(q, k, prob, U, V, use_am=False, **kw)]
    else:
        U, V = _am_step(q.least_squares(), sr_closed_form(q), k, asymmetric)
        runs = [_local_solve(q, k, prob, U, V, use_am=True, **kw)]
        rng = np.random.default_rng(seed)
        zero_bound = zero_thresholds(q, zero_tol)
        B = q.least_squares()
        m = float(np.sqrt(np.mean(B * B))) or 1.0
        for i in range(restarts):
            if np.all(task_residuals(q, *_point(runs)) <= zero_bound):
                break
            if asymmetric and i == 0:
                sym_res = solve_lora_ml(q, k, tol=tol, max_iter=max_iter, restarts=0)
                U0, V0 = sym_res.U, sym_res.U.copy()
            else:
                U0 = np.sqrt(m / k) * rng.standard_normal(U.shape)
                V0 = np.sqrt(m / k) * rng.standard_normal(U.shape) if asymmetric else None
            runs.append(_local_solve(q, k, prob, U0, V0, use_am=True, **kw))
    best = min(runs, key=lambda r: r[5][-1] if r[5] else np.inf)
    A, U, V, _, message, history = best
    iterations = sum(r[3] for r in runs)
    if len(runs) > 1:
        message = f"{message} (best of {len(runs)} starts)"
    return _result(q, A, U, V, iterations, start, message, history, tol, zero_tol, len(runs))


def _point(runs: list) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The lowest-objective point of the runs so far."""
    best = min(runs, key=lambda r: r[5][-1])
    return best[0], best[1], best[2]


def _result(
    q: Quadratics,
    A: np.ndarray,
    U: np.ndarray,
    V: np.ndarray | None,
    iterations: int,
    start: float,
    message: str,
    history: list[float] | np.ndarray,
    tol: float,
    zero_tol: float,
    starts: int,
) -> LoraMLResult:
    D = adapted(A, U, V) - q.least_squares()  # one residual serves every number below
    G = q.times_S(D)
    rel = _stationarity_from(q, G, U, V)
    stat = float(rel.max())
    resid = _residuals_from(q, D, G)
    converged = bool(np.all(rel <= stationarity_thresholds(q, tol, resid)))
    if np.all(resid <= zero_thresholds(q, zero_tol)):
        status = "global minimum"
    else:
        status = "stationary point" if converged else "not converged"
    ident, reason = identifiability(q, A, U, V, zero_tol=zero_tol, residuals=resid)
    if V is None:
        g2 = np.sum(((G + _t(G)) @ U) ** 2)
    else:
        g2 = np.sum((G @ V) ** 2) + np.sum((_t(G) @ U) ** 2)
    return LoraMLResult(
        A=A,
        U=U,
        V=V,
        objective=float(0.5 * np.einsum("tij,tij->", G, D) + np.sum(q.minima())),
        grad_norm=float(np.sqrt(np.sum(G.sum(0) ** 2) + g2)),
        iterations=iterations,
        seconds=time.perf_counter() - start,
        converged=converged,
        message=message,
        history=np.asarray(history, dtype=float),
        stationarity=stat,
        task_residuals=resid,
        status=status,
        identifiable=ident,
        identifiability=reason,
        starts=starts,
    )


def _solve_compressed(
    q: Quadratics,
    k: int,
    asymmetric: bool,
    tol: float,
    max_iter: int,
    am_iter: int,
    restarts: int,
    seed: int | np.random.Generator,
) -> LoraMLResult | None:
    """Population, isotropic: solve in the span of the centred targets, then lift (exact)."""
    D = q.C - q.C.mean(0)
    # Symmetric adapters only see sym(D_t); asymmetric ones need row and column spaces (one basis).
    parts = D if asymmetric else sym(D)
    mats = np.concatenate([parts, np.swapaxes(parts, -1, -2)]) if asymmetric else parts
    Q = union_range(mats)
    if Q is None or Q.shape[1] < k or Q.shape[1] > q.d // 2:
        return None
    small = Quadratics.population(Q.T @ parts @ Q)
    res = solve_lora_ml(
        small,
        k,
        asymmetric=asymmetric,
        tol=tol,
        max_iter=max_iter,
        am_iter=am_iter,
        compress=False,
        restarts=restarts,
        seed=seed,
    )
    U = Q @ res.U
    V = None if res.V is None else Q @ res.V
    A = (q.C - U @ np.swapaxes(U if V is None else V, -1, -2)).mean(0)
    message = f"{res.message} (solved in a {Q.shape[1]}-dimensional subspace)"
    return _result(
        q, A, U, V, res.iterations, time.perf_counter(), message, res.history, tol, 1e-8, res.starts
    )

"""Retraining on T tasks: standard retraining (SR) and the meta-learning objective (LoRA-ML).

Each solver takes a :class:`~loraml.theory.objectives.Quadratics` (population or finite-sample
losses) so that the same code serves the infinite-sample theory and the finite-sample experiments.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.optimize as sopt

from loraml.theory.linalg import low_rank_factors, psd_factor, sym, union_range
from loraml.theory.objectives import (
    Quadratics,
    adapted,
    lora_ml_grad,
    lora_ml_grad_norm,
    lora_ml_loss,
)
from loraml.theory.reprs import compact_repr
from loraml.theory.rng import RNGLike, as_generator


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
    losses = np.empty(steps + 1)
    for i in range(steps):
        losses[i] = q.losses(A).sum()
        A -= lr * q.grads(A).mean(0)
    losses[steps] = q.losses(A).sum()
    return GDResult(A, losses=losses, seconds=time.perf_counter() - start)


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
    A = np.zeros((q.C.shape[1], d))
    losses = np.empty(steps + 1)
    for i in range(steps):
        losses[i] = q.losses(A + P0).sum()
        A = A - lr * q.grads(A + P0).mean(0)
    losses[steps] = q.losses(A + P0).sum()
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
    for i in range(rounds):
        losses[i] = lora_ml_loss(q, A, U, V)
        for _ in range(inner):
            g = lora_ml_grad(q, A, U, V)
            U = U - lr_u * g[1]
            if V is not None:
                V = V - lr_u * g[2]
        A = A - lr_a * q.grads(adapted(A, U, V)).mean(0)
    losses[rounds] = lora_ml_loss(q, A, U, V)
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
        ``F(A_hat, U_hat)``.
    grad_norm : float
        Frobenius norm of the full gradient ``(grad_A, grad_U[, grad_V])`` at the result.
    iterations : int
        Alternating-minimisation sweeps plus quasi-Newton iterations.
    seconds : float
        Wall time.
    converged : bool
        The stopping rule was met: ``grad_norm <= tol * scale``, or L-BFGS converged at machine
        precision.
    message : str
        How the solver stopped.
    history : ndarray
        Objective after each iteration.
    """

    A: np.ndarray
    U: np.ndarray
    V: np.ndarray | None
    objective: float
    grad_norm: float
    iterations: int
    seconds: float
    converged: bool
    message: str
    history: np.ndarray

    def __repr__(self) -> str:
        return compact_repr(self)


class _Problem:
    """LoRA-ML with the base eliminated: ``phi(U) = min_A F(A, U)`` (variable projection)."""

    def __init__(self, q: Quadratics, k: int, asymmetric: bool):
        self.q, self.k, self.asym = q, k, asymmetric
        self.shape = (q.T, q.d, k)
        self._last: tuple[np.ndarray, float] | None = None  # (x, phi(x)) of the last fun call
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
        U, V = self.split(x)
        A = self.best_A(U, V)
        g = lora_ml_grad(self.q, A, U, V)  # grad_A vanishes at best_A (envelope theorem)
        value = lora_ml_loss(self.q, A, U, V)
        self._last = (x.copy(), value)
        return value, np.concatenate([gi.ravel() for gi in g[1:]])

    def value(self, x: np.ndarray) -> float:
        """``phi(x)``, reusing the last evaluation when ``x`` is the point just evaluated."""
        if self._last is not None and np.array_equal(self._last[0], x):
            return self._last[1]
        return self.fun(x)[0]


def _am_step(
    B: np.ndarray, A: np.ndarray, k: int, asymmetric: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Best adapters for fixed A when ``S_t = I``: truncations of ``B_t - A`` (exact there)."""
    if asymmetric:
        pairs = [low_rank_factors(b - A, k) for b in B]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    return psd_factor(B - A, k), None


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
) -> LoraMLResult:
    r"""LoRA-ML retraining, fast: alternating minimisation, then quasi-Newton polish.

    Solves (arXiv 2410.22264 v1, the LoRA-ML objective; Theorems 2-4)::

        min_{A, U_1..U_T}  F(A, U) = sum_t f_t(A + U_t U_t^T)      (or U_t V_t^T if asymmetric)

    for population or finite-sample task losses ``f_t``
    (see :class:`~loraml.theory.objectives.Quadratics`).

    Notes
    -----
    Method:

    1. Spectral start: ``A_0`` = SR solution, ``U_t`` = rank-k PSD truncation of
       ``sym(B_t - A_0)`` where ``B_t`` is task t's least-squares solution.
    2. Alternating minimisation while each sweep at least halves F: the U-step is the rank-k PSD
       eigen-truncation of ``sym(B_t - A)`` (exact when ``S_t = I``; a heuristic otherwise, kept
       only while it decreases F); the A-step is the linear solve ``grad_A F = 0``.
    3. L-BFGS on ``phi(U) = min_A F(A, U)`` (variable projection; ``grad phi = grad_U F`` at the
       best A) until ``||grad F||_F <= tol * scale``, ``scale = max(1, sqrt(sum_t ||C_t||_F^2))``,
       or until F stops decreasing at machine precision (a nonzero-residual F, such as a
       finite-sample loss, cannot reach an absolute gradient of ``tol * scale``).

    Population, isotropic and large d: all ``A_t* - mean_s A_s*`` lie in a subspace of dimension
    at most ``kT`` (the union of the ``U_t*`` ranges). The solver finds it with a seeded
    randomized range finder, solves the problem in that ``m``-dimensional subspace (exact:
    projecting adapters onto it never increases the loss), and lifts back; only ``k`` eigenpairs
    per task of ``m x m`` matrices are ever computed.

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
        Relative stationarity tolerance.
    max_iter : int
        Cap on quasi-Newton iterations.
    am_iter : int
        Cap on alternating-minimisation sweeps.
    init : tuple (A, U) or (A, U, V), optional
        Start instead of the spectral one (for landscape studies). ``A`` is not used (the start's
        A is the best one for its adapters) and may be None.
    compress : bool
        Allow the subspace reduction described above.

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
    """
    start = time.perf_counter()
    if not 1 <= k <= q.d:
        raise ValueError(f"rank k={k} must satisfy 1 <= k <= d={q.d}")
    if compress and init is None and q.isotropic and q.d >= 64:
        reduced = _solve_compressed(q, k, asymmetric, tol, max_iter, am_iter)
        if reduced is not None:
            reduced.seconds = time.perf_counter() - start
            return reduced

    prob = _Problem(q, k, asymmetric)
    scale = max(1.0, float(np.linalg.norm(q.C)))
    B = q.least_squares()
    if init is None:
        U, V = _am_step(B, sr_closed_form(q), k, asymmetric)
    else:
        U = np.asarray(init[1], dtype=float)
        V = np.asarray(init[2], dtype=float) if asymmetric else None
    A = prob.best_A(U, V)
    history = [lora_ml_loss(q, A, U, V)]

    # Phase 2: alternating minimisation (exact sweeps when S_t = I).
    sweeps = 0
    message = "alternating minimisation"
    while sweeps < am_iter and init is None:
        if lora_ml_grad_norm(q, A, U, V) <= tol * scale:
            break
        U_new, V_new = _am_step(B, A, k, asymmetric)
        A_new = prob.best_A(U_new, V_new)
        f_new = lora_ml_loss(q, A_new, U_new, V_new)
        if not f_new <= 0.5 * history[-1]:  # slow contraction (or ascent): hand over to L-BFGS
            if f_new < history[-1]:
                A, U, V = A_new, U_new, V_new
                history.append(f_new)
                sweeps += 1
            break
        A, U, V = A_new, U_new, V_new
        history.append(f_new)
        sweeps += 1

    # Phase 3: L-BFGS on the variable-projected objective.
    qn_iters = 0
    gn = lora_ml_grad_norm(q, A, U, V)
    if gn > tol * scale:
        x0 = np.concatenate([U.ravel()] + ([V.ravel()] if V is not None else []))
        res = sopt.minimize(
            prob.fun,
            x0,
            jac=True,
            method="L-BFGS-B",
            callback=lambda x: history.append(prob.value(x)),
            options={
                "maxiter": max_iter,
                "gtol": tol * scale / np.sqrt(x0.size),
                "ftol": 1e-300,
                "maxcor": 30,
                "maxls": 50,
            },
        )
        U, V = prob.split(res.x)
        A = prob.best_A(U, V)
        qn_iters = int(res.nit)
        message = f"L-BFGS: {res.message}"
        gn = lora_ml_grad_norm(q, A, U, V)
        lbfgs_converged = bool(res.success)
    else:
        lbfgs_converged = False
        message = "alternating minimisation reached the tolerance"
    return LoraMLResult(
        A=A,
        U=U,
        V=V,
        objective=lora_ml_loss(q, A, U, V),
        grad_norm=gn,
        iterations=sweeps + qn_iters,
        seconds=time.perf_counter() - start,
        converged=gn <= tol * scale or lbfgs_converged,
        message=message,
        history=np.array(history),
    )


def _solve_compressed(
    q: Quadratics, k: int, asymmetric: bool, tol: float, max_iter: int, am_iter: int
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
        small, k, asymmetric=asymmetric, tol=tol, max_iter=max_iter, am_iter=am_iter, compress=False
    )
    U = Q @ res.U
    V = None if res.V is None else Q @ res.V
    A = (q.C - U @ np.swapaxes(U if V is None else V, -1, -2)).mean(0)
    gn = lora_ml_grad_norm(q, A, U, V)
    return LoraMLResult(
        A=A,
        U=U,
        V=V,
        objective=lora_ml_loss(q, A, U, V),
        grad_norm=gn,
        iterations=res.iterations,
        seconds=res.seconds,
        converged=res.converged,
        message=f"{res.message} (solved in a {Q.shape[1]}-dimensional subspace)",
        history=res.history,
    )

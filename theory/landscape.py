"""The LoRA-ML landscape: global minima, saddles, curvature, descent from random starts.

``F(A, U) = sum_t f_t(A + U_t U_t^T)`` (arXiv 2410.22264, LoRA-ML). This module provides

- the explicit continuous family of global minima for T = 2 (Theorems 2 and 4),
  :func:`t2_global_minimum`;
- the smallest eigenvalue of the Hessian from Hessian-vector products
  (:func:`loraml.theory.lora_ml_hvp`) with Lanczos (``scipy.sparse.linalg.eigsh``),
  :func:`hessian_extreme_eigenvalues`;
- the stationary point with zero adapters (a strict saddle for T = 2), :func:`zero_adapter_point`;
- perturbed gradient descent (Jin et al. 2017 style) from random starts, :func:`perturbed_gd`;
- a search for stationary points from random starts with a second-order classification
  (global minimum, saddle, spurious local minimum), :func:`search_stationary_points`, and an
  L-BFGS finish for slow first-order runs, :func:`polish`.

Symmetry: ``U_t -> U_t Q_t`` (Q_t orthogonal) leaves F unchanged. Differentiating
``grad F(U Q) = grad F(U) Q`` along ``Q = exp(s Omega)`` (Omega antisymmetric) gives
``Hess F [U_t Omega] = grad_{U_t} F Omega``: the ``T k(k-1)/2`` orbit directions ``U_t Omega`` are
zero-curvature (null) directions of the Hessian at *stationary* points with full-rank adapters,
not at a general point, where they carry curvature of the size of the gradient. So at a stationary
point "no negative curvature" means ``lambda_min >= -tol``, never ``> 0``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse.linalg as spla

from loraml.theory.linalg import psd_factor
from loraml.theory.objectives import (
    Quadratics,
    lora_ml_grad,
    lora_ml_grad_norm,
    lora_ml_hvp,
    lora_ml_loss,
)
from loraml.theory.reprs import compact_repr
from loraml.theory.retraining import (
    solve_lora_ml,
    sr_closed_form,
    stationarity_thresholds,
    task_residuals,
    task_stationarity,
    zero_thresholds,
)
from loraml.theory.rng import RNGLike, as_generator


# ---------------------------------------------------------------------------------------------
# T = 2: the continuous family of global minima
# ---------------------------------------------------------------------------------------------
def t2_global_minimum(
    A_star: np.ndarray, U_star: np.ndarray, C: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    r"""A member of the continuous family of zero-loss LoRA-ML minima for T = 2 (Theorems 2, 4).

    With ``W = [U_1*, U_2*]`` (d x 2k, full column rank) and any k x k matrix C with
    ``||C||_2 < 1``, let ``H = [[I, C], [C^T, I]]^{-1}`` and ``G = W H W^T``. Then::

        Q_1 = G - U_2* U_2*^T,   Q_2 = G - U_1* U_1*^T,   A_hat = A* + U_1* U_1*^T + U_2* U_2*^T - G

    are a zero-loss point: ``A_hat + Q_t = A_t*``, and each ``Q_t`` is PSD of rank k because
    ``E_s^T H^{-1} E_s = I`` makes ``H - E_s E_s^T`` a Schur complement of rank k.

    Rank: ``A_hat - A* = W (I - H) W^T`` and ``I - H = H (H^{-1} - I)`` with
    ``H^{-1} - I = [[0, C], [C^T, 0]]``, whose rank is ``2 rank(C)``; W has full column rank, so
    ``rank(A_hat - A*) = 2 rank(C)``: 0 for ``C = 0`` (``A_hat = A*``), 2k for invertible C (the
    bound of Theorem 2 is attained). The family is continuous in C (k^2 parameters) and unbounded:
    ``H^{-1}`` has eigenvalues ``1 +- sigma_i(C)``, so ``||A_hat - A*||`` grows like
    ``1 / (1 - ||C||_2)`` and the condition number of ``H^{-1}``,
    ``(1 + ||C||_2) / (1 - ||C||_2)``, degrades as ``||C||_2 -> 1``.

    Parameters
    ----------
    A_star : ndarray, shape (d, d)
    U_star : ndarray, shape (2, d, k)
        Factors of the two retraining tasks (columns of ``[U_1*, U_2*]`` independent).
    C : ndarray, shape (k, k)
        Family parameter, spectral norm < 1.

    Returns
    -------
    A_hat : ndarray, shape (d, d)
    U_hat : ndarray, shape (2, d, k)
        ``U_hat_t U_hat_t^T = Q_t``.

    Examples
    --------
    Every member has zero loss; ``C = 0`` is the truth, other members are not:

    >>> import numpy as np
    >>> import loraml.theory as th
    >>> from loraml.theory.landscape import t2_global_minimum
    >>> fam = th.draw_family(6, 2, 1, np.random.default_rng(0))
    >>> q = fam.population()
    >>> A0, U0 = t2_global_minimum(fam.A_star, fam.U_star, np.zeros((1, 1)))
    >>> A5, U5 = t2_global_minimum(fam.A_star, fam.U_star, np.full((1, 1), 0.5))
    >>> bool(th.lora_ml_loss(q, A5, U5) < 1e-20), bool(np.allclose(A0, fam.A_star))
    (True, True)
    >>> int(np.linalg.matrix_rank(A5 - fam.A_star, tol=1e-8))  # 2k
    2
    """
    U_star = np.asarray(U_star, dtype=float)
    if U_star.ndim != 3 or U_star.shape[0] != 2:
        raise ValueError(f"U_star must have shape (2, d, k) for T = 2, got {U_star.shape}")
    _, d, k = U_star.shape
    C = np.atleast_2d(np.asarray(C, dtype=float))
    if C.shape != (k, k):
        raise ValueError(f"C must be {k} x {k}, got shape {C.shape}")
    if np.linalg.norm(C, 2) >= 1:
        raise ValueError(f"C must have spectral norm < 1, got {np.linalg.norm(C, 2):.3g}")
    if 2 * k > d:
        raise ValueError(f"need 2k <= d for independent columns of [U_1*, U_2*], got k={k}, d={d}")
    W = np.concatenate([U_star[0], U_star[1]], axis=1)
    eye = np.eye(k)
    H = np.linalg.inv(np.block([[eye, C], [C.T, eye]]))
    G = W @ H @ W.T
    P = U_star @ np.swapaxes(U_star, 1, 2)
    Q = np.stack([G - P[1], G - P[0]])
    A_hat = A_star + P[0] + P[1] - G
    return A_hat, psd_factor(Q, k)


# ---------------------------------------------------------------------------------------------
# Curvature from Hessian-vector products
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Curvature:
    """Extreme eigenvalues of the LoRA-ML Hessian at a point.

    Attributes
    ----------
    min_eigenvalue, max_eigenvalue : float
    direction_A : ndarray, shape (d, d)
    direction_U : ndarray, shape (T, d, k)
        Unit eigenvector of the smallest eigenvalue, split into blocks.
    method : str
        ``"dense"`` or ``"eigsh"``.
    """

    min_eigenvalue: float
    max_eigenvalue: float
    direction_A: np.ndarray
    direction_U: np.ndarray
    method: str

    def __repr__(self) -> str:
        return compact_repr(self)


def hessian_operator(q: Quadratics, A: np.ndarray, U: np.ndarray) -> spla.LinearOperator:
    """The Hessian of ``F(A, U)`` at ``(A, U)`` as a symmetric ``LinearOperator``.

    Acts on the flattened vector ``[vec(dA), vec(dU)]`` of length ``d_out d + T d k`` through
    :func:`loraml.theory.lora_ml_hvp`.

    Parameters
    ----------
    q : Quadratics
        Task losses.
    A : ndarray, shape (d, d)
    U : ndarray, shape (T, d, k)
        The point.

    Returns
    -------
    scipy.sparse.linalg.LinearOperator
        Symmetric, of size ``d_out d + T d k``.

    Examples
    --------
    >>> import numpy as np
    >>> import loraml.theory as th
    >>> from loraml.theory.landscape import hessian_operator
    >>> fam = th.draw_family(4, 2, 1, np.random.default_rng(0))
    >>> H = hessian_operator(fam.population(), fam.A_star, fam.U_star)
    >>> H.shape  # d^2 + T d k
    (24, 24)
    >>> v = np.ones(24)
    >>> bool(np.isclose(v @ H.matvec(v), (H.matvec(v) @ v)))
    True
    """
    nA, shapeA = A.size, A.shape

    def matvec(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float).ravel()
        hA, hU = lora_ml_hvp(q, A, U, x[:nA].reshape(shapeA), x[nA:].reshape(U.shape))
        return np.concatenate([hA.ravel(), hU.ravel()])

    n = nA + U.size
    return spla.LinearOperator((n, n), matvec=matvec, rmatvec=matvec, dtype=float)


def hessian_extreme_eigenvalues(
    q: Quadratics, A: np.ndarray, U: np.ndarray, *, method: str = "auto", tol: float = 1e-10
) -> Curvature:
    r"""Smallest and largest eigenvalues of the Hessian of ``F(A, U) = sum_t f_t(A + U_t U_t^T)``.

    A point is a strict saddle when ``lambda_min < 0`` (Theorem 4's dichotomy for T = 2: every
    stationary point is a global minimum or has such a direction). The Hessian is never formed
    from formulas: it is applied through :func:`loraml.theory.lora_ml_hvp`.

    Parameters
    ----------
    q : Quadratics
    A : ndarray, shape (d, d)
    U : ndarray, shape (T, d, k)
    method : {"auto", "dense", "eigsh"}
        ``"dense"``: apply the operator to every basis vector and use ``numpy.linalg.eigh``
        (exact; size ``n = d^2 + T d k``). ``"eigsh"``: Lanczos on the ``LinearOperator``:
        ``lambda_max`` first, then the largest eigenvalue of ``lambda_max I - H`` (the smallest
        end of a spectrum with many zero eigenvalues converges badly with ``which="SA"``); dense
        fallback when ARPACK does not converge and ``n <= 5000``. ``"auto"``: dense for
        ``n <= 1500``.
    tol : float
        Lanczos tolerance.

    Returns
    -------
    Curvature

    Examples
    --------
    The zero-adapter point of two tasks is a strict saddle (Theorem 4):

    >>> import numpy as np
    >>> import loraml.theory as th
    >>> from loraml.theory import landscape
    >>> fam = th.draw_family(4, 2, 1, np.random.default_rng(0))
    >>> q = fam.population()
    >>> curv = landscape.hessian_extreme_eigenvalues(q, *landscape.zero_adapter_point(q, 1))
    >>> bool(curv.min_eigenvalue < 0 < curv.max_eigenvalue)
    True
    """
    op = hessian_operator(q, A, U)
    n = op.shape[0]
    if method == "auto":
        method = "dense" if n <= 1500 else "eigsh"
    if method == "dense":
        lo, hi, vec = _dense_extremes(op)
    elif method == "eigsh":
        try:
            lo, hi, vec = _lanczos_extremes(op, tol)
        except spla.ArpackNoConvergence:
            if n > 5000:
                raise
            lo, hi, vec = _dense_extremes(op)
            method = "dense (Lanczos did not converge)"
    else:
        raise ValueError(f"method must be 'auto', 'dense' or 'eigsh', got {method!r}")
    return Curvature(lo, hi, vec[: A.size].reshape(A.shape), vec[A.size :].reshape(U.shape), method)


def _dense_extremes(op: spla.LinearOperator) -> tuple[float, float, np.ndarray]:
    H = op.matmat(np.eye(op.shape[0]))
    w, V = np.linalg.eigh(0.5 * (H + H.T))
    return float(w[0]), float(w[-1]), V[:, 0]


def _lanczos_extremes(op: spla.LinearOperator, tol: float) -> tuple[float, float, np.ndarray]:
    """Largest eigenvalue, then the largest of ``lambda_max I - H`` (well separated, fast)."""
    n = op.shape[0]
    ncv = min(n, 40)
    hi = float(spla.eigsh(op, k=1, which="LA", tol=tol, ncv=ncv, maxiter=50 * n)[0][0])
    shifted = spla.LinearOperator((n, n), matvec=lambda x: hi * x - op.matvec(x), dtype=float)
    w, V = spla.eigsh(shifted, k=1, which="LA", tol=tol, ncv=ncv, maxiter=50 * n)
    return hi - float(w[0]), hi, V[:, 0]


def zero_adapter_point(q: Quadratics, k: int) -> tuple[np.ndarray, np.ndarray]:
    r"""The stationary point ``U_t = 0``, ``A = A_SR`` (for T = 2 population: ``mean(A_t*)``).

    At ``U = 0``: ``grad_U = (G_t + G_t^T) U_t = 0`` and ``grad_A = sum_t G_t(A_SR) = 0``. The
    Hessian is block diagonal there (``dM_t = dA``): ``sum_t S_t`` on A and
    ``(G_t + G_t^T) (x) I_k`` on ``U_t``, so ``lambda_min = min_t lambda_min(G_t + G_t^T)``
    (when below ``lambda_min(sum_t S_t)``). For T = 2 population this is
    ``-max(lambda_max(P_1 - P_2), lambda_max(P_2 - P_1)) < 0``, ``P_t = U_t* U_t*^T``
    (derived: the Hessian of the point ``U_t = 0``, ``A = mean_t A_t*``; compare Theorem 4).

    Parameters
    ----------
    q : Quadratics
        Task losses.
    k : int
        Adapter rank (the number of columns of the zero adapters).

    Returns
    -------
    A : ndarray, shape (d, d)
    U : ndarray, shape (T, d, k), zeros

    Examples
    --------
    >>> import numpy as np
    >>> import loraml.theory as th
    >>> from loraml.theory.landscape import zero_adapter_point
    >>> fam = th.draw_family(4, 2, 1, np.random.default_rng(0))
    >>> q = fam.population()
    >>> A, U = zero_adapter_point(q, 1)
    >>> bool(np.allclose(A, fam.targets().mean(axis=0)))
    True
    >>> from loraml.theory.objectives import lora_ml_grad_norm
    >>> bool(lora_ml_grad_norm(q, A, U) < 1e-10)
    True
    """
    return sr_closed_form(q), np.zeros((q.T, q.d, k))


# ---------------------------------------------------------------------------------------------
# Descent from random starts
# ---------------------------------------------------------------------------------------------
def random_start(
    q: Quadratics, k: int, rng: RNGLike, *, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """A random point at the problem's scale: ``A ~ N(0, (scale m)^2)``, ``U ~ N(0, scale m / k)``.

    ``m`` is the root-mean-square entry of the per-task minimisers, so ``U_t U_t^T`` and ``A`` start
    with entries of the size of the targets'.

    Parameters
    ----------
    q : Quadratics
        Task losses (they set the scale).
    k : int
        Adapter rank.
    rng : numpy.random.Generator
    scale : float
        Multiplier of the standard deviations.

    Returns
    -------
    A0 : ndarray, shape (d, d)
    U0 : ndarray, shape (T, d, k)

    Examples
    --------
    >>> import numpy as np
    >>> import loraml.theory as th
    >>> from loraml.theory.landscape import random_start
    >>> rng = np.random.default_rng(0)
    >>> fam = th.draw_family(5, 3, 2, rng)
    >>> A0, U0 = random_start(fam.population(), 2, rng)
    >>> A0.shape, U0.shape
    ((5, 5), (3, 5, 2))
    """
    rng = as_generator(rng)
    B = q.least_squares()
    m = float(np.sqrt(np.mean(B * B))) or 1.0
    A0 = scale * m * rng.standard_normal((B.shape[1], q.d))
    U0 = np.sqrt(scale * m / k) * rng.standard_normal((q.T, q.d, k))
    return A0, U0


@dataclass
class PGDResult:
    """Outcome of :func:`perturbed_gd`.

    Attributes
    ----------
    A : ndarray, shape (d, d)
    U : ndarray, shape (T, d, k)
    loss : float
    grad_norm : float
    steps : int
    perturbations : int
        Number of random kicks taken.
    losses : ndarray
        Loss before each step and at the end.
    seconds : float
    reached_target : bool
        ``loss <= target_loss``.
    """

    A: np.ndarray
    U: np.ndarray
    loss: float
    grad_norm: float
    steps: int
    perturbations: int
    losses: np.ndarray
    seconds: float
    reached_target: bool

    def __repr__(self) -> str:
        return compact_repr(self)


def perturbed_gd(
    q: Quadratics,
    k: int,
    rng: RNGLike,
    *,
    init: tuple[np.ndarray, np.ndarray] | None = None,
    max_steps: int = 20_000,
    target_loss: float | None = None,
    kick_ratio: float = 1e-6,
    radius: float = 1e-3,
    wait: int = 50,
) -> PGDResult:
    r"""Perturbed gradient descent on ``F(A, U) = sum_t f_t(A + U_t U_t^T)`` (Theorem 4).

    Gradient steps on all blocks jointly with an Armijo backtracking step size (the objective's
    smoothness grows with ``||U||``, so no fixed step is safe). When the gradient is small
    *relative to the loss*, ``||grad F||^2 <= kick_ratio * T * F``, and no kick happened in the
    last ``wait`` steps, the point is kicked by a uniform draw from the ball of radius
    ``radius * sqrt(F)`` (Jin et al., 2017, with thresholds relative to F). Near a global minimum
    the objective satisfies a Polyak-Lojasiewicz inequality ``||grad F||^2 >= mu F`` and is never
    kicked; at a strict saddle ``F`` stays positive while the gradient vanishes, and the kick
    escapes. By Theorem 4 (T = 2) every second-order stationary point is a global minimum.

    Parameters
    ----------
    q : Quadratics
    k : int
        Adapter rank.
    rng : int, numpy.random.Generator or None
        Draws the start (when ``init`` is None) and the kicks.
    init : (A0, U0), optional
        Start; :func:`random_start` by default.
    max_steps : int
    target_loss : float, optional
        Stop when ``F <= target_loss``; default ``1e-14 * F(0, 0)`` (a relative residual of
        1e-7; near degenerate minima gradient descent converges slowly below that).
    kick_ratio : float
        Kick when ``||grad F||^2 <= kick_ratio * T * F`` (T is the curvature of F along A).
    radius : float
        Kick radius relative to ``sqrt(F)``.
    wait : int
        Steps between kicks.

    Returns
    -------
    PGDResult

    Examples
    --------
    >>> import numpy as np
    >>> import loraml.theory as th
    >>> from loraml.theory.landscape import perturbed_gd
    >>> rng = np.random.default_rng(0)
    >>> fam = th.draw_family(3, 2, 1, rng)
    >>> res = perturbed_gd(fam.population(), 1, rng, max_steps=3000)
    >>> bool(res.losses[-1] < 1e-3 * res.losses[0])
    True
    """
    rng = as_generator(rng)
    start = time.perf_counter()
    A, U = random_start(q, k, rng) if init is None else (init[0].copy(), init[1].copy())
    f0 = float(lora_ml_loss(q, np.zeros_like(A), np.zeros_like(U))) or 1.0
    target = 1e-14 * f0 if target_loss is None else target_loss
    step = 1.0 / q.T
    last_kick, kicks = -wait, 0
    f = lora_ml_loss(q, A, U)
    losses = [f]
    i = 0
    for i in range(1, max_steps + 1):
        gA, gU = lora_ml_grad(q, A, U)
        gn2 = float(np.sum(gA * gA) + np.sum(gU * gU))
        if f <= target:
            break
        if gn2 <= kick_ratio * q.T * f and i - last_kick >= wait:
            xi = rng.standard_normal(A.size + U.size)
            xi *= radius * np.sqrt(f) * rng.uniform() ** (1.0 / xi.size) / np.linalg.norm(xi)
            A = A + xi[: A.size].reshape(A.shape)
            U = U + xi[A.size :].reshape(U.shape)
            f, last_kick, kicks = lora_ml_loss(q, A, U), i, kicks + 1
            losses.append(f)
            continue
        step *= 2.0
        while True:
            A_new, U_new = A - step * gA, U - step * gU
            f_new = lora_ml_loss(q, A_new, U_new)
            if f_new <= f - 0.5 * step * gn2 or step < 1e-300:
                break
            step *= 0.5
        A, U, f = A_new, U_new, f_new
        losses.append(f)
    gn = lora_ml_grad_norm(q, A, U)
    return PGDResult(
        A, U, f, gn, i, kicks, np.array(losses), time.perf_counter() - start, bool(f <= target)
    )


def polish(
    q: Quadratics, k: int, A: np.ndarray, U: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    r"""Finish a slow first-order run with L-BFGS and say how far the end point moved.

    Gradient descent converges sublinearly near degenerate minima (T = 2 has a continuous family
    of them), so a run that stopped at ``F = 1e-8 F(0, 0)`` may still be heading to a global
    minimum. This runs :func:`loraml.theory.solve_lora_ml` from ``(A, U)`` and returns the polished
    point and the relative distance
    ``sqrt(||dA||^2 + sum_t ||d(U_t U_t^T)||^2) / sqrt(||A||^2 + sum_t ||U_t U_t^T||^2)``
    (invariant under ``U_t -> U_t Q_t``).

    Parameters
    ----------
    q : Quadratics
        Task losses.
    k : int
        Adapter rank.
    A : ndarray, shape (d, d)
    U : ndarray, shape (T, d, k)
        Where the first-order run stopped.

    Returns
    -------
    A, U : ndarray
        The polished point.
    distance : float

    Examples
    --------
    >>> import numpy as np
    >>> import loraml.theory as th
    >>> from loraml.theory.landscape import polish
    >>> fam = th.draw_family(5, 3, 1, np.random.default_rng(0))
    >>> q = fam.population()
    >>> A, U, distance = polish(q, 1, fam.A_star + 1e-3, fam.U_star)
    >>> bool(th.lora_ml_loss(q, A, U) < 1e-20), bool(distance < 1e-2)
    (True, True)
    """
    res = solve_lora_ml(q, k, init=(A, U))
    P, P_new = U @ np.swapaxes(U, 1, 2), res.U @ np.swapaxes(res.U, 1, 2)
    num = np.sqrt(np.sum((res.A - A) ** 2) + np.sum((P_new - P) ** 2))
    den = np.sqrt(np.sum(A**2) + np.sum(P**2))
    return res.A, res.U, float(num / max(den, 1e-300))


@dataclass
class StationaryPoint:
    """A point where a local solver stopped, with its second-order classification.

    Attributes
    ----------
    A : ndarray, shape (d, d)
    U : ndarray, shape (T, d, k)
    loss : float
    grad_norm : float
    min_eigenvalue, max_eigenvalue : float
        Extreme Hessian eigenvalues (:func:`hessian_extreme_eigenvalues`).
    kind : str
        One of :data:`KINDS`, decided in this order (:func:`classify_point`): ``"global"``
        (every task's relative residual at its rounding threshold, or the loss within
        ``loss_rtol`` of a positive best known value), ``"runaway"`` (``||A_hat||_F`` more than
        ``runaway_ratio`` times the largest task, ``max_t ||B_t||_F``: the base and the adapters
        cancel ever larger parts while some task keeps signal unfitted, the end of a run along a
        valley to infinity), ``"unconverged"`` (a per-task relative gradient above
        ``grad_rtol``), ``"saddle"`` (``lambda_min < -curvature_rtol * lambda_max``) or
        ``"spurious"`` (stationary, no negative curvature, some task unfitted: a spurious local
        minimum).
    start : tuple (A0, U0)
        The random start, so the run can be reproduced.
    task_residuals : ndarray, shape (T,)
        Per-task relative residuals (:func:`loraml.theory.retraining.task_residuals`).
    """

    A: np.ndarray
    U: np.ndarray
    loss: float
    grad_norm: float
    min_eigenvalue: float
    max_eigenvalue: float
    kind: str
    start: tuple[np.ndarray, np.ndarray]
    task_residuals: np.ndarray = field(default_factory=lambda: np.empty(0))

    def __repr__(self) -> str:
        return compact_repr(self)


#: The classes of :func:`classify_point`.
KINDS = ("global", "runaway", "unconverged", "saddle", "spurious")


def classify_point(
    q: Quadratics,
    A: np.ndarray,
    U: np.ndarray,
    global_value: float,
    *,
    loss_rtol: float = 1e-10,
    zero_tol: float = 1e-8,
    grad_rtol: float = 1e-10,
    curvature_rtol: float = 1e-6,
    runaway_ratio: float = 10.0,
    start: tuple[np.ndarray, np.ndarray] | None = None,
) -> StationaryPoint:
    """Classify ``(A, U)`` as global, runaway, unconverged, saddle or spurious local minimum.

    Every test is per task and scale-free: a task is fitted when its relative residual
    ``||M_t - B_t||_{S_t} / ||B_t||_{S_t}`` is at most ``zero_tol`` (or the rounding floor of a
    task much smaller than the largest; :func:`loraml.theory.retraining.task_residuals`), a
    point is stationary when every per-task relative gradient
    (:func:`loraml.theory.retraining.task_stationarity`) is at most ``grad_rtol`` or the
    precision floor of :func:`loraml.theory.retraining.stationarity_thresholds` (far below
    ``zero_tol``: near a zero-loss minimum the relative gradient is about the relative
    residual, so a slow run at residual ``1e-6`` must not pass as stationary), and the
    curvature is relative to ``lambda_max`` of the Hessian. Thresholds relative to ``F(0, 0)``
    would call a point global while a task ``1e3`` times smaller than the others keeps all of
    its signal. ``global_value > 0`` (finite-sample or misspecified instances, where no point
    fits every task) also accepts a loss within ``loss_rtol`` of it. See
    :class:`StationaryPoint` for the classes.

    Parameters
    ----------
    q : Quadratics
        Task losses.
    A : ndarray, shape (d, d)
    U : ndarray, shape (T, d, k)
        The point to classify.
    global_value : float
        The global minimum value of F (0 for a population instance with rank-k PSD perturbations).
    loss_rtol : float
        With ``global_value > 0``, a point with ``F - global_value <= loss_rtol global_value`` is
        global.
    zero_tol : float
        Largest relative residual of a fitted task.
    grad_rtol : float
        Largest per-task relative gradient of a stationary point.
    curvature_rtol : float
        ``lambda_min < -curvature_rtol lambda_max`` makes a stationary point a saddle.
    runaway_ratio : float
        ``||A||_F`` above this many times the largest task's ``||B_t||_F`` is a runaway.
    start : tuple (A0, U0), optional
        The run's start, kept in the result.

    Returns
    -------
    StationaryPoint
        The point, its loss, gradient norm, extreme Hessian eigenvalues and ``kind``.

    Examples
    --------
    >>> import numpy as np
    >>> import loraml.theory as th
    >>> from loraml.theory.landscape import classify_point
    >>> fam = th.draw_family(5, 3, 1, np.random.default_rng(0))
    >>> classify_point(fam.population(), fam.A_star, fam.U_star, global_value=0.0).kind
    'global'
    """
    loss = lora_ml_loss(q, A, U)
    gn = lora_ml_grad_norm(q, A, U)
    resid = task_residuals(q, A, U)
    fitted = bool(np.all(resid <= zero_thresholds(q, zero_tol)))
    near_best = global_value > 0 and loss - global_value <= loss_rtol * global_value
    largest = float(np.max(np.linalg.norm(q.least_squares(), axis=(1, 2))))
    curv = None
    if fitted or near_best:
        kind = "global"
    elif np.linalg.norm(A) > runaway_ratio * largest:
        kind = "runaway"
    elif np.any(task_stationarity(q, A, U) > stationarity_thresholds(q, grad_rtol, resid)):
        kind = "unconverged"
    else:
        curv = hessian_extreme_eigenvalues(q, A, U)
        kind = (
            "saddle" if curv.min_eigenvalue < -curvature_rtol * curv.max_eigenvalue else "spurious"
        )
    if curv is None:
        curv = hessian_extreme_eigenvalues(q, A, U)
    return StationaryPoint(
        A,
        U,
        loss,
        gn,
        curv.min_eigenvalue,
        curv.max_eigenvalue,
        kind,
        start if start is not None else (A, U),
        resid,
    )


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    r"""Wilson score interval for a binomial proportion (95 % by default).

    ``(p + z^2/(2n) -+ z sqrt(p(1-p)/n + z^2/(4n^2))) / (1 + z^2/n)`` with ``p = successes / n``
    (Wilson 1927). Unlike the normal interval it stays inside ``[0, 1]`` and is not empty at
    ``successes = 0``: 0 of 600 gives ``[0, 0.0064]``.

    Parameters
    ----------
    successes, trials : int
    z : float
        Normal quantile (1.96 for 95 %).

    Returns
    -------
    (low, high) : tuple of float

    Examples
    --------
    >>> lo, hi = wilson_interval(0, 600)
    >>> lo, round(hi, 4)
    (0.0, 0.0064)
    """
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    den = 1 + z * z / trials
    mid = (p + z * z / (2 * trials)) / den
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / den
    low = 0.0 if successes == 0 else max(0.0, mid - half)
    high = 1.0 if successes == trials else min(1.0, mid + half)
    return float(low), float(high)


def search_stationary_points(
    q: Quadratics,
    k: int,
    rng: RNGLike,
    *,
    starts: int = 10,
    global_value: float | None = None,
    scale: float = 1.0,
    max_iter: int = 5000,
) -> list[StationaryPoint]:
    r"""Search for spurious minima: run the solver from random starts, classify where it stops.

    Each start (:func:`random_start`) is handed to :func:`loraml.theory.solve_lora_ml` with ``init``
    (L-BFGS on the variable-projected objective, no spectral start), and the end point is
    classified by :func:`classify_point` against ``global_value``: 0 for a population instance
    whose perturbations are rank-k PSD (Theorem 3 setting); by default the smallest value found by
    the spectral-start solver and the random starts, so finite-sample and misspecified instances
    work too.

    Parameters
    ----------
    q : Quadratics
    k : int
    rng : int, numpy.random.Generator or None
    starts : int
    global_value : float, optional
    scale : float
        Start scale (see :func:`random_start`).
    max_iter : int
        Cap on L-BFGS iterations per start.

    Returns
    -------
    list of StationaryPoint

    Examples
    --------
    For three generic tasks every random start ends at the global minimum (Theorem 3):

    >>> import numpy as np
    >>> import loraml.theory as th
    >>> from loraml.theory.landscape import search_stationary_points
    >>> rng = np.random.default_rng(0)
    >>> fam = th.draw_family(5, 3, 1, rng)
    >>> points = search_stationary_points(fam.population(), 1, rng, starts=2, global_value=0.0)
    >>> [p.kind for p in points]
    ['global', 'global']
    """
    rng = as_generator(rng)
    runs = []
    for _ in range(starts):
        A0, U0 = random_start(q, k, rng, scale=scale)
        runs.append(((A0, U0), solve_lora_ml(q, k, init=(A0, U0), max_iter=max_iter)))
    if global_value is None:
        found = [res.objective for _, res in runs]
        global_value = min([solve_lora_ml(q, k).objective, *found])
    return [classify_point(q, res.A, res.U, global_value, start=s) for s, res in runs]

"""Fine-tuning a frozen base on an unseen task with a rank-r asymmetric LoRA adapter ``U V^T``."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from loraml.theory.divergence import check_descent
from loraml.theory.linalg import low_rank_factors, psd_sqrt
from loraml.theory.objectives import Quadratics
from loraml.theory.reprs import compact_repr
from loraml.theory.rng import RNGLike, as_generator


def _single(q: Quadratics) -> Quadratics:
    if q.T != 1:
        raise ValueError(f"fine-tuning takes one task's losses, got T={q.T}; use q.task(t)")
    return q


@dataclass
class FineTuneResult:
    """Outcome of fine-tuning.

    Attributes
    ----------
    U, V : ndarray, shape (d, r)
        Adapter factors; the fine-tuned matrix is ``A + U V^T``.
    loss : float
        Final task loss ``f(A + U V^T)``.
    losses : ndarray
        Loss before the first step and after every step (gradient descent only).
    test_losses : ndarray
        The paper's plotted quantity ``sum_i ||(A_test* - A - U V^T) x_i||^2`` over the n
        fine-tuning inputs (noise-free, summed), when ``target`` was given (gradient descent only).
    seconds : float
    """

    U: np.ndarray
    V: np.ndarray
    loss: float
    losses: np.ndarray
    test_losses: np.ndarray
    seconds: float

    def __repr__(self) -> str:
        return compact_repr(self)


def finetune_closed_form(q: Quadratics, A: np.ndarray, r: int) -> FineTuneResult:
    r"""Exact rank-r LoRA fine-tuning: ``min_{U, V in R^{d x r}} f(A + U V^T)``.

    With ``f(M) = 1/2 tr(M S M^T) - tr(M^T C) + const = 1/2 ||(M - B) S^{1/2}||_F^2 + const``,
    ``B = C S^+``, the optimum is ``U V^T = [(B - A) S^{1/2}]_r (S^{1/2})^+`` where ``[.]_r`` is the
    best rank-r approximation (Eckart-Young).

    - Population (``S = I``): Eckart-Young on the residual ``A_test* - A``; the loss left is
      ``1/2 sum_{i>r} sigma_i^2(A_test* - A)`` (Corollary 1).
    - Finite sample (``S = X X^T / n``): reduced-rank regression, i.e. project the least-squares
      fit onto the top-r left singular subspace of its fitted values. With ``n < d`` it returns
      the minimiser of smallest norm.

    Parameters
    ----------
    q : Quadratics
        One task's loss (T = 1).
    A : ndarray, shape (d, d)
        Frozen base.
    r : int
        Adapter rank, ``0 <= r <= d``.

    Returns
    -------
    FineTuneResult
        ``losses`` and ``test_losses`` are empty.

    Examples
    --------
    From the true base, rank-k fine-tuning removes a task's rank-k perturbation exactly:

    >>> import numpy as np
    >>> import loraml.theory as th
    >>> fam = th.draw_family(6, 3, 1, np.random.default_rng(0))
    >>> q_test = th.Quadratics.population(fam.test_targets())
    >>> ft = th.finetune_closed_form(q_test, fam.A_star, r=1)
    >>> ft.U.shape, bool(ft.loss < 1e-20)
    ((6, 1), True)
    """
    start = time.perf_counter()
    q = _single(q)
    if not 0 <= r <= q.d:
        raise ValueError(f"adapter rank r={r} must satisfy 0 <= r <= d={q.d}")
    R = q.least_squares()[0] - A
    if q.S is None:
        U, V = low_rank_factors(R, r)
    else:
        root, inv_root = psd_sqrt(q.S[0])
        U, V = low_rank_factors(R @ root, r)
        V = inv_root @ V
    loss = float(q.losses(A + U @ V.T)[0])
    return FineTuneResult(U, V, loss, np.empty(0), np.empty(0), time.perf_counter() - start)


def finetune_gd(
    q: Quadratics,
    A: np.ndarray,
    r: int,
    rng: RNGLike,
    *,
    steps: int = 1000,
    lr: float = 0.005,
    init_std: float = 0.1,
    init: tuple[np.ndarray, np.ndarray] | None = None,
    target: np.ndarray | None = None,
) -> FineTuneResult:
    r"""Rank-r LoRA fine-tuning by gradient descent, as in the paper's experiments.

    Minimises ``f(A + U V^T)`` over ``U, V in R^{d x r}`` with the base ``A`` frozen:
    ``U <- U - lr G V``, ``V <- V - lr G^T U``, ``G = (A + U V^T) S - C``. Start: entries
    ``N(0, init_std^2)`` (paper: 0.1), or ``init``; the paper uses the same start for both bases.
    Step size: ``lr`` on the per-sample mean loss (paper: 0.005 per sample).

    Parameters
    ----------
    q : Quadratics
        One task's loss (T = 1), usually from the n fine-tuning samples.
    A : ndarray, shape (d, d)
        Frozen base.
    r : int
        Adapter rank.
    rng : int, numpy.random.Generator or None
        Draws the start when ``init`` is None.
    steps : int
    lr : float
    init_std : float
    init : (U0, V0), optional
    target : ndarray, shape (d, d), optional
        Ground truth of the task; enables ``test_losses`` (the paper's plotted loss
        ``n tr(D S D^T)``, ``D = target - A - U V^T``; for population losses ``||D||_F^2``).

    Returns
    -------
    FineTuneResult

    Raises
    ------
    loraml.theory.divergence.DivergenceError
        When the loss becomes non-finite or exceeds 1000 times its start (``lr`` too large).

    Examples
    --------
    >>> import numpy as np
    >>> import loraml.theory as th
    >>> rng = np.random.default_rng(0)
    >>> fam = th.draw_family(6, 3, 1, rng)
    >>> q_test = th.Quadratics.population(fam.test_targets())
    >>> ft = th.finetune_gd(q_test, fam.A_star, 1, rng, steps=200)
    >>> ft.U.shape, bool(ft.losses[-1] < ft.losses[0])
    ((6, 1), True)
    """
    rng = as_generator(rng)
    start = time.perf_counter()
    q = _single(q)
    d = q.d
    if init is None:
        U = init_std * rng.standard_normal((q.C.shape[1], r))
        V = init_std * rng.standard_normal((d, r))
    else:
        U, V = init[0].astype(float).copy(), init[1].astype(float).copy()
    S = np.eye(d) if q.S is None else q.S[0]
    n = 1.0 if q.N is None else float(q.N[0])
    losses = np.empty(steps + 1)
    tests = np.empty(steps + 1 if target is not None else 0)
    for i in range(steps + 1):
        M = A + U @ V.T
        losses[i] = q.losses(M)[0]
        check_descent(losses[i], losses[0], i, method="finetune_gd", lr=f"lr={lr:g}")
        if target is not None:
            D = target - M
            tests[i] = n * float(np.sum((D @ S) * D))
        if i == steps:
            break
        G = M @ S - q.C[0]
        U, V = U - lr * G @ V, V - lr * G.T @ U
    return FineTuneResult(U, V, float(losses[-1]), losses, tests, time.perf_counter() - start)

r"""Beyond the paper: measurements answering questions its reviewers left open (issue 13).

Each ``check_*`` function here returns a :class:`~loraml.theory.checks.CheckResult` measurement
(``held`` is None: the paper claims nothing) and is a ``loraml verify`` key of the same name
(without ``check_``). The per-cell functions (``*_cell``) are what the figures of
:mod:`loraml.figures.questions` call, so the figure and the verify key measure the same thing.

Classifications use **per-task relative residuals** ``r_t = ||A + U_t U_t^T - A_t*||_F / ||P_t||_F``
(``P_t = A_t* - A*``), never the solver's own stopping rule: a point has *zero loss* when
``max_t r_t <= ZERO_RTOL``. Fractions come with a 95 % Wilson score interval (:func:`wilson`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from loraml.theory.checks import CheckResult, _measurement, draw_generic_family
from loraml.theory.family import TaskFamily
from loraml.theory.landscape import random_start, wilson_interval
from loraml.theory.objectives import Quadratics
from loraml.theory.retraining import solve_lora_ml

#: ``max_t r_t`` at or below this is a zero-loss point.
ZERO_RTOL = 1e-6
#: ``||A_hat - A*||_F / ||A*||_F`` at or below this recovers ``A*``.
RECOVER_RTOL = 1e-4
#: A run that is not at zero loss and whose base has ``||A_hat - A*||_F`` above this multiple of
#: ``||A*||_F + max_t ||P_t||_F`` has run away along a valley.
RUNAWAY_FACTOR = 10.0


def wilson(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    r"""Wilson score interval of a binomial proportion (95 % by default), with z = 1.96.

    :func:`loraml.theory.landscape.wilson_interval` with this module's z (the committed records
    were computed with 1.96).

    ``(p + z^2/(2n) -+ z sqrt(p(1-p)/n + z^2/(4n^2))) / (1 + z^2/n)`` with ``p = successes / n``
    (Wilson 1927); unlike ``p -+ z sqrt(p(1-p)/n)`` it stays inside [0, 1] and is not empty at
    0 or n.

    Parameters
    ----------
    successes, trials : int
    z : float
        Normal quantile (1.96: 95 %).

    Returns
    -------
    (low, high) : tuple of float

    Examples
    --------
    >>> lo, hi = wilson(0, 20)
    >>> round(lo, 3), round(hi, 3)
    (0.0, 0.161)
    """
    return wilson_interval(successes, trials, z)


def fraction(successes: int, trials: int) -> dict:
    """``{"k": successes, "n": trials, "p": successes / trials, "wilson95": [low, high]}``.

    Parameters
    ----------
    successes : int
        Number of successes k.
    trials : int
        Number of trials n (0: ``p`` is None and the interval is [0, 1]).

    Returns
    -------
    dict
        ``"k"`` and ``"n"`` (int), ``"p"`` (float, None when ``trials`` is 0) and ``"wilson95"``,
        the 95 % Wilson score interval (:func:`wilson`) as a list ``[low, high]``.

    Examples
    --------
    >>> f = fraction(3, 10)
    >>> f["k"], f["n"], f["p"]
    (3, 10, 0.3)
    >>> low, high = f["wilson95"]
    >>> bool(0 < low < 0.3 < high < 1)
    True
    >>> fraction(0, 0)["p"] is None
    True
    """
    return {
        "k": int(successes),
        "n": int(trials),
        "p": float(successes / trials) if trials else None,
        "wilson95": list(wilson(successes, trials)),
    }


def task_residuals(fam: TaskFamily, A: np.ndarray, U: np.ndarray) -> np.ndarray:
    """Per-task relative residuals ``||A + U_t U_t^T - A_t*||_F / ||A_t* - A*||_F``, shape (T,).

    Parameters
    ----------
    fam : TaskFamily
        The family: base ``A*`` and factors ``U_t*`` of the targets ``A_t* = A* + U_t* U_t*^T``.
    A : ndarray, shape (d, d)
        Retrained base.
    U : ndarray, shape (T, d, k')
        Retrained adapters, one per task (any rank k').

    Returns
    -------
    ndarray, shape (T,)
        ``r_t`` per task; a point has zero loss when ``max_t r_t <= ZERO_RTOL``.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory.checks import draw_generic_family
    >>> fam = draw_generic_family(np.random.default_rng(0), 5, 3, 1)
    >>> r = task_residuals(fam, fam.A_star, fam.U_star)
    >>> r.shape, bool(r.max() <= ZERO_RTOL)
    ((3,), True)
    >>> np.allclose(task_residuals(fam, fam.A_star, np.zeros_like(fam.U_star)), 1.0)
    True
    """
    R = A[None] + U @ np.swapaxes(U, -1, -2) - fam.targets()
    P = fam.perturbations()
    return np.linalg.norm(R, axis=(1, 2)) / np.maximum(np.linalg.norm(P, axis=(1, 2)), 1e-300)


def finetune_floor(residual: np.ndarray, r: int) -> float:
    r"""Population rank-r fine-tuning loss left: ``1/2 sum_{i>r} sigma_i^2(residual)``.

    Parameters
    ----------
    residual : ndarray, shape (d, d)
        Target minus base, ``A_test* - A`` (what the adapter has to fit).
    r : int
        Adapter rank.

    Returns
    -------
    float
        The loss of the best rank-r adapter (Eckart-Young): 0 when ``r >= rank(residual)``.

    Examples
    --------
    >>> import numpy as np
    >>> finetune_floor(np.diag([3.0, 2.0, 1.0]), 1)
    2.5
    >>> finetune_floor(np.diag([3.0, 2.0, 0.0]), 2)
    0.0
    """
    s = np.linalg.svd(residual, compute_uv=False)
    return 0.5 * float(np.sum(s[r:] ** 2))


def _end_class(fam: TaskFamily, A: np.ndarray, U: np.ndarray) -> str:
    """``"zero"`` (zero loss), ``"runaway"`` (nonzero loss, far away) or ``"stuck"`` (otherwise)."""
    if task_residuals(fam, A, U).max() <= ZERO_RTOL:
        return "zero"
    scale = np.linalg.norm(fam.A_star) + np.linalg.norm(fam.perturbations(), axis=(1, 2)).max()
    return "runaway" if np.linalg.norm(A - fam.A_star) > RUNAWAY_FACTOR * scale else "stuck"


def _start_classes(
    fam: TaskFamily, q: Quadratics, k: int, starts: int, rng: np.random.Generator
) -> np.ndarray:
    """Ends of ``starts`` random starts of LoRA-ML on ``q``: 0 zero loss, 1 stuck, 2 runaway."""
    code = {"zero": 0, "stuck": 1, "runaway": 2}
    out = np.empty(starts, dtype=int)
    for s in range(starts):
        end = solve_lora_ml(q, k, init=random_start(q, k, rng))
        out[s] = code[_end_class(fam, end.A, end.U)]
    return out


def _scaled(fam: TaskFamily, rng: np.random.Generator, spread: float) -> TaskFamily:
    """``U_t*`` multiplied by ``exp(spread * N(0, 1))`` (0: the paper's equal scales)."""
    if spread == 0:
        return fam
    factor = np.exp(spread * rng.standard_normal(fam.T))[:, None, None]
    return TaskFamily(fam.A_star, fam.U_star * factor, fam.U_test)


# ---------------------------------------------------------------------------------------------
# 1. rank_misspecified
# ---------------------------------------------------------------------------------------------
RANK_CELLS = ((3, 1, 6), (4, 1, 7), (5, 1, 8), (3, 2, 10))  # (T, k, d): d = k(T+1) + 2
RANK_LANDSCAPE = (3, 1, 4, 1.0)  # (T, k, d, spread): tight d = k(T+1), spread task scales


def rank_misspecified_cell(
    rng: np.random.Generator, *, d: int, T: int, k: int, ranks: Sequence[int], instances: int
) -> dict[str, np.ndarray]:
    r"""LoRA-ML retrained with adapter rank k' instead of the true k (spectral start).

    For ``instances`` generic population families (d, T, k) and each ``k'`` in ``ranks``, the fast
    solver (:func:`loraml.theory.solve_lora_ml`, spectral start) with rank ``k'``. Recorded per
    (instance, k'), in this order along the last axis of ``"record"``:

    0. ``||A_hat - A*||_F / ||A*||_F``;
    1. ``max_t r_t`` (per-task relative residual; zero loss when <= ``ZERO_RTOL``);
    2. ``lambda_max(sym(A_hat - A*)) / ||A_hat - A*||_F`` (<= 0: the error is negative
       semidefinite, the branch ``A_hat = A* - D``, ``D >= 0`` derived in
       :func:`check_rank_misspecified`);
    3. ``rank(A_hat - A*)`` (singular values above ``1e-6 ||A*||_2``);
    4. rank-k fine-tuning loss on the test task over ``1/2 ||P_test||_F^2`` (no adaptation from A*);
    5. rank-k' fine-tuning loss, same normalisation;
    6. rank-(2k + k') fine-tuning loss, same normalisation (predicted 0 at every zero-loss point).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every draw.
    d, T, k : int
        Dimension, number of retraining tasks and true perturbation rank; ``k (T + 1) <= d``.
    ranks : sequence of int
        Adapter ranks k' to retrain with (R of them).
    instances : int
        Families drawn.

    Returns
    -------
    dict
        ``"ranks"`` (len R) and ``"record"`` of shape (instances, R, 7).

    Examples
    --------
    >>> import numpy as np
    >>> out = rank_misspecified_cell(np.random.default_rng(0), d=5, T=3, k=1, ranks=[1, 2],
    ...     instances=1)
    >>> out["ranks"].tolist(), out["record"].shape
    ([1, 2], (1, 2, 7))
    >>> bool(out["record"][0, 0, 0] <= RECOVER_RTOL)  # k' = k recovers A*
    True
    """
    ranks = [int(r) for r in ranks]
    rec = np.empty((instances, len(ranks), 7))
    for i in range(instances):
        fam = draw_generic_family(rng, d, T, k)
        q = fam.population()
        test = fam.test_targets()[0]
        P_test = test - fam.A_star
        L0 = 0.5 * float(np.sum(P_test**2))
        norm_star = float(np.linalg.norm(fam.A_star))
        for j, kp in enumerate(ranks):
            res = solve_lora_ml(q, kp)
            E = res.A - fam.A_star
            e = float(np.linalg.norm(E))
            s = np.linalg.svd(E, compute_uv=False)
            top = float(np.linalg.eigvalsh(0.5 * (E + E.T))[-1])
            rec[i, j] = (
                e / norm_star,
                task_residuals(fam, res.A, res.U).max(),
                top / max(e, 1e-300),
                np.sum(s > 1e-6 * np.linalg.norm(fam.A_star, 2)),
                finetune_floor(test - res.A, k) / L0,
                finetune_floor(test - res.A, kp) / L0,
                finetune_floor(test - res.A, min(2 * k + kp, d)) / L0,
            )
    return {"ranks": np.array(ranks), "record": rec}


def rank_misspecified_landscape(
    rng: np.random.Generator,
    *,
    d: int,
    T: int,
    k: int,
    spread: float,
    ranks: Sequence[int],
    instances: int,
    starts: int,
) -> dict[str, np.ndarray]:
    r"""Random starts at a tight dimension, retrained with rank k' = k, k+1, ...: where they end.

    Per family (generic, ``U_t*`` scaled by ``exp(spread N(0, 1))``, the setting where rank-k
    random starts meet spurious minima and runaway valleys) and start
    (:func:`loraml.theory.landscape.random_start` at rank k), the same ``(A0, U0)`` is used for
    every ``k'``: extra adapter columns are drawn at the scale of ``U0``. Each end point is
    classified ``zero`` / ``stuck`` / ``runaway`` (module docstring; :data:`RUNAWAY_FACTOR`).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every draw.
    d, T, k : int
        Dimension, number of retraining tasks and true perturbation rank; ``k (T + 1) <= d``.
    spread : float
        Standard deviation of the log task scales (0: the paper's equal scales).
    ranks : sequence of int
        Adapter ranks k' to retrain with (R of them, the largest at least k).
    instances : int
        Families drawn.
    starts : int
        Random starts per family, shared by every k'.

    Returns
    -------
    dict
        ``"ranks"`` and ``"classes"`` of shape (instances, starts, R): 0 zero, 1 stuck, 2 runaway.

    Examples
    --------
    >>> import numpy as np
    >>> out = rank_misspecified_landscape(np.random.default_rng(0), d=4, T=3, k=1, spread=0.0,
    ...     ranks=[1, 2], instances=1, starts=1)
    >>> out["ranks"].tolist(), out["classes"].shape
    ([1, 2], (1, 1, 2))
    >>> bool(np.isin(out["classes"], [0, 1, 2]).all())
    True
    """
    ranks = [int(r) for r in ranks]
    code = {"zero": 0, "stuck": 1, "runaway": 2}
    out = np.empty((instances, starts, len(ranks)), dtype=int)
    for i in range(instances):
        fam = _scaled(draw_generic_family(rng, d, T, k), rng, spread)
        q = fam.population()
        for s in range(starts):
            A0, U0 = random_start(q, k, rng)
            extra = float(np.sqrt(np.mean(U0**2))) * rng.standard_normal((T, d, max(ranks) - k))
            for j, kp in enumerate(ranks):
                U_init = np.concatenate([U0, extra[..., : kp - k]], axis=2) if kp > k else U0
                res = solve_lora_ml(q, kp, init=(A0, U_init[..., :kp]))
                out[i, s, j] = code[_end_class(fam, res.A, res.U)]
    return {"ranks": np.array(ranks), "classes": out}


def check_rank_misspecified(
    rng: np.random.Generator,
    *,
    instances: int = 20,
    landscape_instances: int = 40,
    starts: int = 5,
    cells: Sequence[tuple[int, int, int]] = RANK_CELLS,
    landscape: tuple[int, int, int, float] = RANK_LANDSCAPE,
) -> CheckResult:
    r"""Measurement: LoRA-ML when the adapter rank k' is not the true k (issue 13, question 1).

    Derivation (population, isotropic; ``P_t = U_t* U_t*^T``). A point has zero loss iff
    ``A_hat + Q_t = A_t*`` with ``Q_t = U_t U_t^T`` PSD of rank <= k'. Write ``A_hat = A* - D``;
    then ``Q_t = P_t + D`` for every t. Hence:

    - ``k' > k``: every ``D >= 0`` of rank <= ``k' - k`` gives a zero-loss point (``P_t + D`` is PSD
      of rank <= k + rank D). The zero-loss set contains the unbounded cone ``A* - D``:
      over-parameterised LoRA-ML **cannot identify A*** for any T, and which member a solver
      returns is its implicit bias. On that branch ``A_hat - A* = -D <= 0`` (negative
      semidefinite, rank <= k' - k) and the test residual ``A_test* - A_hat = P_test + D`` is PSD of
      rank <= k': **rank-k' fine-tuning is exact**, rank-k fine-tuning leaves
      ``1/2 sum_{i>k} sigma_i^2(P_test + D) > 0``. At any zero-loss point ``D = Q_t - P_t`` has
      rank <= k + k', so rank ``2k + k'`` fine-tuning is exact (Theorem 2's argument).
    - ``k' < k``: ``P_t - P_s = Q_t - Q_s`` has rank 2k generically but the right side has rank
      <= 2k' < 2k: **no zero-loss point exists**, A* is not a minimiser, and the loss left is
      measured.

    Measured: (a) per cell ``(T, k, d)`` of ``cells`` and ``k' = 1..3k``, ``instances`` families
    with the spectral start (:func:`rank_misspecified_cell`): fraction at zero loss, fraction
    recovering A*, fraction on the negative-semidefinite branch, the median error and the median
    rank-k and rank-k' fine-tuning losses; (b) at the tight dimension of ``landscape``
    ``(T, k, d, spread)``, ``landscape_instances x starts`` random starts for ``k' = k, k+1, 3k``
    (:func:`rank_misspecified_landscape`): fractions ending at zero loss, stuck (nonzero loss:
    a spurious minimum or a saddle the solver stopped at) and runaway, with Wilson intervals.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every draw.
    instances : int
        Families per cell of ``cells`` (spectral start).
    landscape_instances : int
        Families at the tight dimension of ``landscape``.
    starts : int
        Random starts per family of ``landscape``.
    cells : sequence of (T, k, d)
        Settings of part (a); each needs ``k (T + 1) <= d``.
    landscape : (T, k, d, spread)
        Setting of part (b): ``spread`` is the standard deviation of the log task scales.

    Returns
    -------
    CheckResult
        A measurement: ``key`` ``"rank_misspecified"``, ``held`` None, no margin, the instances,
        the seconds and the measured ``numbers`` described above.

    Examples
    --------
    >>> import numpy as np
    >>> res = check_rank_misspecified(np.random.default_rng(0), instances=2,
    ...     landscape_instances=1, starts=1, cells=[(3, 1, 5)])
    >>> res.numbers["cells"]["T=3,k=1,d=5"]["k'=1"]["recovered"]["p"]
    1.0
    """
    start = time.perf_counter()
    out: dict = {"zero_rtol": ZERO_RTOL, "recover_rtol": RECOVER_RTOL, "cells": {}}
    total = 0
    for T, k, d in cells:
        data = rank_misspecified_cell(
            rng, d=d, T=T, k=k, ranks=range(1, 3 * k + 1), instances=instances
        )
        total += instances
        rows = {}
        for j, kp in enumerate(data["ranks"]):
            r = data["record"][:, j]
            zero = r[:, 1] <= ZERO_RTOL
            nsd = zero & (r[:, 2] <= 1e-6) & (r[:, 0] > RECOVER_RTOL)
            rows[f"k'={int(kp)}"] = {
                "zero_loss": fraction(int(zero.sum()), instances),
                "recovered": fraction(int(np.sum(r[:, 0] <= RECOVER_RTOL)), instances),
                "negative_semidefinite_error": fraction(int(nsd.sum()), instances),
                "median_A_relative_error": float(np.median(r[:, 0])),
                "max_error_rank": int(r[:, 3].max()),
                "median_rank_k_finetune_loss": float(np.median(r[:, 4])),
                "median_rank_kprime_finetune_loss": float(np.median(r[:, 5])),
                "max_rank_kprime_finetune_loss": float(np.max(r[:, 5])),
                "max_rank_2k_plus_kprime_finetune_loss_at_zero_loss": (
                    float(np.max(r[zero, 6])) if zero.any() else None
                ),
            }
        out["cells"][f"T={T},k={k},d={d}"] = rows
    T, k, d, spread = landscape
    ranks = sorted({k, k + 1, 3 * k})
    land = rank_misspecified_landscape(
        rng,
        d=d,
        T=T,
        k=k,
        spread=spread,
        ranks=ranks,
        instances=landscape_instances,
        starts=starts,
    )
    n = landscape_instances * starts
    total += landscape_instances
    out["landscape"] = {
        "setting": {"T": T, "k": k, "d": d, "spread": spread, "starts": starts},
        **{
            f"k'={kp}": {
                name: fraction(int(np.sum(land["classes"][:, :, j] == c)), n)
                for c, name in enumerate(("zero_loss", "stuck", "runaway"))
            }
            for j, kp in enumerate(ranks)
        },
    }
    return _measurement(
        "rank_misspecified",
        "Adapter rank k' != k: recovery of A*, fine-tuning loss, random-start ends (measurement)",
        total,
        start,
        out,
    )


# ---------------------------------------------------------------------------------------------
# 2. t2_selection
# ---------------------------------------------------------------------------------------------
T2_METHODS = ("paper_gd", "fast", "sdp", "random_starts", "family_uniform")
T2_DIMS = (4, 10, 20)


def t2_family_parameter(fam: TaskFamily, A: np.ndarray) -> float:
    r"""The parameter c of a T = 2, k = 1 zero-loss base in the family of Theorem 4.

    :func:`loraml.theory.landscape.t2_global_minimum` writes the family as
    ``A(c) - A* = W (I - H(c)) W^T`` with ``W = [U_1*, U_2*]`` and
    ``H(c) = [[1, c], [c, 1]]^{-1}``; so ``H = I - W^+ (A - A*) W^+T`` and ``c = (H^{-1})_{12}``
    (exact for a zero-loss point, a least-squares reading otherwise).

    Parameters
    ----------
    fam : TaskFamily
        A family with T = 2 and k = 1 (``U_star`` of shape (2, d, 1)).
    A : ndarray, shape (d, d)
        A base, typically a zero-loss point of LoRA-ML on ``fam``.

    Returns
    -------
    float
        The parameter c (0 for ``A = A*``; in (-1, 1) on the family).

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory.checks import draw_generic_family
    >>> from loraml.theory.landscape import t2_global_minimum
    >>> fam = draw_generic_family(np.random.default_rng(0), 4, 2, 1)
    >>> A, U = t2_global_minimum(fam.A_star, fam.U_star, np.array([[0.5]]))
    >>> round(t2_family_parameter(fam, A), 6), round(t2_family_parameter(fam, fam.A_star), 6)
    (0.5, 0.0)
    """
    W = np.concatenate([fam.U_star[0], fam.U_star[1]], axis=1)
    Wp = np.linalg.pinv(W)
    H = np.eye(2) - Wp @ (A - fam.A_star) @ Wp.T
    return float(np.linalg.inv(0.5 * (H + H.T))[0, 1])


def t2_max_trace_parameter(fam: TaskFamily) -> float:
    r"""The member of the T = 2, k = 1 family with the largest trace (first-order prediction).

    With ``G = W^T W`` (``W = [U_1*, U_2*]``), ``s = G_11 + G_22`` and ``g = G_12``,
    ``tr A(c) - tr A* = tr((I - H(c)) G) = (2 c g - c^2 s) / (1 - c^2)``. Its derivative vanishes
    where ``g c^2 - s c + g = 0``; the root in (-1, 1) (``2|g| <= s``: Cauchy-Schwarz, AM-GM) is

        ``c* = (s - sqrt(s^2 - 4 g^2)) / (2 g)``   (``c* = 0`` when ``g = 0``),

    and ``c* ~ g / s``, of order ``1 / sqrt(d)`` for Gaussian factors. The SDP
    ``max tr(A) s.t. A <= A_t*`` contains the family, so if its optimum has zero LoRA-ML loss it is
    ``A(c*)``; the fast solver's spectral start is predicted to land there too (measured).

    Parameters
    ----------
    fam : TaskFamily
        A family with T = 2 and k = 1 (``U_star`` of shape (2, d, 1)).

    Returns
    -------
    float
        ``c*`` in (-1, 1): the family member ``A(c*)`` of largest trace.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory.checks import draw_generic_family
    >>> from loraml.theory.landscape import t2_global_minimum
    >>> fam = draw_generic_family(np.random.default_rng(0), 4, 2, 1)
    >>> c = t2_max_trace_parameter(fam)
    >>> def trace(x):
    ...     return np.trace(t2_global_minimum(fam.A_star, fam.U_star, np.array([[x]]))[0])
    >>> bool(-1 < c < 1 and trace(c) > max(trace(c - 0.1), trace(c + 0.1), trace(0.0)))
    True
    """
    W = np.concatenate([fam.U_star[0], fam.U_star[1]], axis=1)
    G = W.T @ W
    s, g = float(G[0, 0] + G[1, 1]), float(G[0, 1])
    if g == 0.0:
        return 0.0
    return (s - np.sqrt(max(s * s - 4 * g * g, 0.0))) / (2 * g)


def _t2_fields(fam: TaskFamily, A: np.ndarray, U: np.ndarray | None) -> tuple[float, ...]:
    """c, relative error of A, rank-k and rank-2k fine-tuning loss (relative), max_t r_t."""
    test = fam.test_targets()[0]
    L0 = 0.5 * float(np.sum((test - fam.A_star) ** 2))
    return (
        t2_family_parameter(fam, A),
        float(np.linalg.norm(A - fam.A_star) / np.linalg.norm(fam.A_star)),
        finetune_floor(test - A, 1) / L0,
        finetune_floor(test - A, 2) / L0,
        float(task_residuals(fam, A, U).max()) if U is not None else np.nan,
    )


def t2_selection_cell(
    rng: np.random.Generator, *, d: int, instances: int, starts: int, rounds: int
) -> dict[str, np.ndarray]:
    r"""T = 2, k = 1: which global minimum each algorithm picks, and what it costs to fine-tune.

    Per generic population family (d, T = 2, k = 1) the base of

    - ``paper_gd``: the paper's schedule (:func:`loraml.theory.lora_ml_paper_gd`, A = 0 and
      ``U_t ~ N(0, 0.1^2)``, ``rounds`` rounds of 10 adapter steps and one base step), finished by
      L-BFGS (:func:`loraml.theory.landscape.polish`; it moves the point by ``polish_distance``);
    - ``fast``: :func:`loraml.theory.solve_lora_ml` from its spectral start;
    - ``sdp``: :func:`loraml.theory.convex.sdp_relaxation` (max-trace point);
    - ``random_starts``: the fast solver from ``starts`` random starts
      (:func:`loraml.theory.landscape.random_start`);
    - ``family_uniform``: ``starts`` members of the explicit family with ``c ~ U(-1, 1)``
      (:func:`loraml.theory.landscape.t2_global_minimum`): a "random global minimum".

    Fields (last axis of ``"record"`` and ``"random"``): family parameter c
    (:func:`t2_family_parameter`), ``||A_hat - A*|| / ||A*||``, rank-k and rank-2k fine-tuning
    loss on the unseen task over ``1/2 ||P_test||_F^2``, and ``max_t r_t``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every draw.
    d : int
        Dimension (at least 3 = k(T+1)).
    instances : int
        Families drawn.
    starts : int
        Random starts and uniform family members per family.
    rounds : int
        Rounds of the paper's schedule before the L-BFGS polish.

    Returns
    -------
    dict
        ``"record"`` (instances, 3, 5) for paper_gd, fast, sdp; ``"random"`` (instances, 2, starts,
        5) for random_starts and family_uniform; ``"c_star"`` (instances,) the predicted max-trace
        parameter; ``"polish_distance"`` (instances,).

    Examples
    --------
    >>> import numpy as np
    >>> out = t2_selection_cell(np.random.default_rng(0), d=4, instances=1, starts=1, rounds=50)
    >>> out["record"].shape, out["random"].shape, out["c_star"].shape
    ((1, 3, 5), (1, 2, 1, 5), (1,))
    >>> bool(out["random"][0, 1, 0, 4] <= ZERO_RTOL)  # a family member has zero loss
    True
    """
    from loraml.theory.convex import sdp_relaxation
    from loraml.theory.landscape import polish, t2_global_minimum
    from loraml.theory.retraining import lora_ml_paper_gd

    rec = np.empty((instances, 3, 5))
    rand = np.empty((instances, 2, starts, 5))
    c_star = np.empty(instances)
    moved = np.empty(instances)
    for i in range(instances):
        fam = draw_generic_family(rng, d, 2, 1)
        q = fam.population()
        gd = lora_ml_paper_gd(q, 1, rng, rounds=rounds)
        assert gd.U is not None  # the paper's schedule trains adapters
        A_gd, U_gd, moved[i] = polish(q, 1, gd.A, gd.U)
        rec[i, 0] = _t2_fields(fam, A_gd, U_gd)
        fast = solve_lora_ml(q, 1)
        rec[i, 1] = _t2_fields(fam, fast.A, fast.U)
        rec[i, 2] = _t2_fields(fam, sdp_relaxation(q).A, None)
        for s in range(starts):
            res = solve_lora_ml(q, 1, init=random_start(q, 1, rng))
            rand[i, 0, s] = _t2_fields(fam, res.A, res.U)
            A_c, U_c = t2_global_minimum(fam.A_star, fam.U_star, rng.uniform(-1, 1, (1, 1)))
            rand[i, 1, s] = _t2_fields(fam, A_c, U_c)
        c_star[i] = t2_max_trace_parameter(fam)
    return {"record": rec, "random": rand, "c_star": c_star, "polish_distance": moved}


def check_t2_selection(
    rng: np.random.Generator,
    *,
    instances: int = 20,
    starts: int = 5,
    rounds: int = 1000,
    dims: Sequence[int] = T2_DIMS,
) -> CheckResult:
    r"""Measurement: which T = 2 global minimum each algorithm selects (issue 13, question 2).

    For T = 2 the zero-loss set is a continuous family ``A(C)``, ``||C||_2 < 1`` (Theorems 2 and
    4; :func:`loraml.theory.landscape.t2_global_minimum`); for k = 1 it is one parameter
    ``c in (-1, 1)``, ``c = 0`` being A*. Per dimension in ``dims``, ``instances`` families and
    the algorithms of :func:`t2_selection_cell`. Reported per method: the median ``|c|``, median
    ``||A_hat - A*|| / ||A*||``, median rank-k and rank-2k fine-tuning loss relative to not
    adapting (``1/2 ||P_test||^2``); for the fast solver and the SDP the largest distance from the
    predicted max-trace parameter ``c*`` (:func:`t2_max_trace_parameter`); and the fraction of
    instances where the paper's gradient descent leaves a smaller rank-k fine-tuning loss than the
    median random start and than the median uniform family member on the same instance (Wilson
    intervals). ``rounds`` rounds of the paper's schedule (it uses 3000) are finished by L-BFGS;
    the polish distance is reported.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every draw.
    instances : int
        Families per dimension.
    starts : int
        Random starts and uniform family members per family.
    rounds : int
        Rounds of the paper's schedule (before the L-BFGS polish).
    dims : sequence of int
        Dimensions d (each at least 3).

    Returns
    -------
    CheckResult
        A measurement: ``key`` ``"t2_selection"``, ``held`` None, no margin, the instances,
        the seconds and the measured ``numbers`` described above.

    Examples
    --------
    >>> import numpy as np
    >>> res = check_t2_selection(np.random.default_rng(0), instances=1, starts=1, rounds=50,
    ...     dims=[4])
    >>> res.numbers["by_d"]["d=4"]["fast"]["max_abs_c_minus_c_star"] < 1e-6
    True
    """
    start = time.perf_counter()
    out: dict = {"k": 1, "T": 2, "rounds": rounds, "starts": starts, "by_d": {}}
    for d in dims:
        data = t2_selection_cell(rng, d=d, instances=instances, starts=starts, rounds=rounds)
        rec, rand, c_star = data["record"], data["random"], data["c_star"]
        row: dict = {}
        per_method = {
            "paper_gd": rec[:, 0],
            "fast": rec[:, 1],
            "sdp": rec[:, 2],
            "random_starts": rand[:, 0].reshape(-1, 5),
            "family_uniform": rand[:, 1].reshape(-1, 5),
        }
        for name, r in per_method.items():
            row[name] = {
                "median_abs_c": float(np.median(np.abs(r[:, 0]))),
                "median_A_relative_error": float(np.median(r[:, 1])),
                "median_rank_k_finetune_loss": float(np.median(r[:, 2])),
                "median_rank_2k_finetune_loss": float(np.median(r[:, 3])),
            }
        for j, name in ((1, "fast"), (2, "sdp")):
            row[name]["max_abs_c_minus_c_star"] = float(np.max(np.abs(rec[:, j, 0] - c_star)))
        row["paper_gd"]["max_task_residual"] = float(np.max(rec[:, 0, 4]))
        row["paper_gd"]["max_polish_distance"] = float(np.max(data["polish_distance"]))
        row["random_starts"]["max_task_residual"] = float(np.max(rand[:, 0, :, 4]))
        row["median_abs_c_star"] = float(np.median(np.abs(c_star)))
        gd_k = rec[:, 0, 2]
        row["paper_gd_below_median_random_start"] = fraction(
            int(np.sum(gd_k < np.median(rand[:, 0, :, 2], axis=1))), instances
        )
        row["paper_gd_below_median_family_member"] = fraction(
            int(np.sum(gd_k < np.median(rand[:, 1, :, 2], axis=1))), instances
        )
        row["paper_gd_below_fast"] = fraction(int(np.sum(gd_k < rec[:, 1, 2])), instances)
        out["by_d"][f"d={d}"] = row
    return _measurement(
        "t2_selection",
        "T = 2: which global minimum each algorithm picks and its fine-tuning loss (measurement)",
        instances * len(dims),
        start,
        out,
    )


# ---------------------------------------------------------------------------------------------
# 4. landscape_map
# ---------------------------------------------------------------------------------------------
MAP_GAPS = (0, 1, 3)
MAP_SPREADS = (0.0, 1.0, 2.0)
MAP_TS = (3, 4, 6)  # at k = 1, gap 0, spread 2
MAP_KS = (1, 2)  # at T = 3, gap 0, spread 2
MAP_SWEEP_SPREAD = 2.0


def landscape_map_cell(
    rng: np.random.Generator,
    *,
    T: int,
    k: int,
    gap: int,
    spread: float,
    instances: int,
    starts: int,
) -> dict[str, np.ndarray]:
    r"""End points of the fast solver from random starts on one (T, k, gap, spread) cell.

    ``instances`` generic population families with ``d = k(T+1) + gap`` and ``U_t*`` scaled by
    ``exp(spread N(0, 1))``; from each of ``starts`` random starts
    (:func:`loraml.theory.landscape.random_start`) :func:`loraml.theory.solve_lora_ml` runs with
    ``init`` and the end is classified by per-task relative residuals: 0 zero loss, 1 stuck
    (nonzero loss, not far: a spurious minimum or a saddle), 2 runaway (nonzero loss,
    ``||A_hat - A*||`` above :data:`RUNAWAY_FACTOR` times the scale), 3 slow (an end that is not
    at zero loss but reaches it when the solver is restarted from it with ``tol=1e-16``: the
    first run stopped by its own rule, typically on a task whose perturbation is 1e-8 of the
    largest one's, where per-task residuals sit at the edge of double precision; these are not
    landscape features). Classes 1 and 2 are counted after that restart.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every draw.
    T, k : int
        Number of retraining tasks and perturbation rank.
    gap : int
        ``d - k(T+1)`` (0: the tight dimension).
    spread : float
        Standard deviation of the log task scales (0: the paper's equal scales).
    instances : int
        Families drawn.
    starts : int
        Random starts per family.

    Returns
    -------
    dict
        ``"classes"`` of shape (instances, starts).

    Examples
    --------
    >>> import numpy as np
    >>> out = landscape_map_cell(np.random.default_rng(0), T=3, k=1, gap=2, spread=0.0,
    ...     instances=1, starts=2)
    >>> out["classes"].shape, bool(np.isin(out["classes"], [0, 1, 2, 3]).all())
    ((1, 2), True)
    """
    d = k * (T + 1) + gap
    code = {"zero": 0, "stuck": 1, "runaway": 2, "slow": 3}
    out = np.empty((instances, starts), dtype=int)
    for i in range(instances):
        fam = _scaled(draw_generic_family(rng, d, T, k), rng, spread)
        q = fam.population()
        for s in range(starts):
            res = solve_lora_ml(q, k, init=random_start(q, k, rng))
            kind = _end_class(fam, res.A, res.U)
            if kind != "zero":
                again = solve_lora_ml(q, k, init=(res.A, res.U), tol=1e-16)
                kind = "slow" if _end_class(fam, again.A, again.U) == "zero" else kind
            out[i, s] = code[kind]
    return {"classes": out}


def landscape_map_cells(
    gaps: Sequence[int] = MAP_GAPS,
    spreads: Sequence[float] = MAP_SPREADS,
    Ts: Sequence[int] = MAP_TS,
    ks: Sequence[int] = MAP_KS,
) -> list[tuple[int, int, int, float]]:
    """The cells ``(T, k, gap, spread)``: the gap x spread map at T = 3, k = 1, then T and k at
    gap 0 and spread :data:`MAP_SWEEP_SPREAD` (added when it is not one of ``spreads``).

    Parameters
    ----------
    gaps : sequence of int
        Gaps ``d - k(T+1)`` of the map at T = 3, k = 1.
    spreads : sequence of float
        Spreads of the log task scales of the map at T = 3, k = 1.
    Ts : sequence of int
        Numbers of tasks of the sweep at k = 1 (3 is already in the map).
    ks : sequence of int
        Ranks of the sweep at T = 3 (1 is already in the map).

    Returns
    -------
    list of (T, k, gap, spread)
        The map first, then the T sweep, then the k sweep.

    Examples
    --------
    >>> landscape_map_cells(gaps=[0], spreads=[0.0], Ts=[3, 4], ks=[1, 2])
    [(3, 1, 0, 0.0), (3, 1, 0, 2.0), (4, 1, 0, 2.0), (3, 2, 0, 2.0)]
    >>> len(landscape_map_cells())
    12
    """
    cells = [(3, 1, int(g), float(s)) for g in gaps for s in spreads]
    sweep = float(MAP_SWEEP_SPREAD)
    if (3, 1, 0, sweep) not in cells:
        cells.append((3, 1, 0, sweep))
    cells += [(int(T), 1, 0, sweep) for T in Ts if T != 3]
    cells += [(3, int(k), 0, sweep) for k in ks if k != 1]
    return cells


def _summarise_classes(classes: np.ndarray) -> dict:
    n_inst, starts = classes.shape
    n = n_inst * starts
    bad = (classes == 1) | (classes == 2)
    return {
        "runs": n,
        "zero_loss": fraction(int(np.sum(classes == 0)), n),
        "stuck": fraction(int(np.sum(classes == 1)), n),
        "runaway": fraction(int(np.sum(classes == 2)), n),
        "slow": fraction(int(np.sum(classes == 3)), n),
        "stuck_or_runaway": fraction(int(bad.sum()), n),
        "instances_with_a_bad_end": fraction(int(bad.any(axis=1).sum()), n_inst),
    }


def check_landscape_map(
    rng: np.random.Generator,
    *,
    instances: int = 20,
    starts: int = 3,
    cells: Sequence[tuple[int, int, int, float]] | None = None,
) -> CheckResult:
    r"""Measurement: where random starts end on the LoRA-ML landscape (issue 13, question 4).

    Over the cells of :func:`landscape_map_cells` (the gap ``d - k(T+1)`` against the spread of
    task scales at T = 3, k = 1; then T = 4, 6 and k = 2 at the tight dimension with spread 2),
    ``instances x starts`` runs each (:func:`landscape_map_cell`). Reported per cell: the fraction
    of runs ending at zero loss, stuck, runaway or slow, and the fraction of instances with at
    least one stuck or runaway end, each with a Wilson interval. Runs of one instance share its
    landscape, so the per-run interval understates the uncertainty when bad ends cluster on a few
    instances; the per-instance fraction is the independent one.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every draw.
    instances : int
        Families per cell.
    starts : int
        Random starts per family.
    cells : sequence of (T, k, gap, spread), optional
        The cells to run (default :func:`landscape_map_cells`).

    Returns
    -------
    CheckResult
        A measurement: ``key`` ``"landscape_map"``, ``held`` None, no margin, the instances,
        the seconds and the measured ``numbers`` described above.

    Examples
    --------
    >>> import numpy as np
    >>> res = check_landscape_map(np.random.default_rng(0), instances=2, starts=2,
    ...     cells=[(3, 1, 4, 0.0)])
    >>> res.numbers["cells"]["T=3,k=1,gap=4,spread=0.0"]["zero_loss"]["n"]
    4
    """
    start = time.perf_counter()
    cells = landscape_map_cells() if cells is None else list(cells)
    out: dict = {"instances": instances, "starts": starts, "cells": {}}
    for T, k, gap, spread in cells:
        data = landscape_map_cell(
            rng, T=T, k=k, gap=gap, spread=spread, instances=instances, starts=starts
        )
        out["cells"][f"T={T},k={k},gap={gap},spread={float(spread)}"] = _summarise_classes(
            data["classes"]
        )
    return _measurement(
        "landscape_map",
        "LoRA-ML landscape: random-start ends by gap d-k(T+1), task-scale spread, T, k (measured)",
        instances * len(cells),
        start,
        out,
    )


# ---------------------------------------------------------------------------------------------
# 7. misspecified
# ---------------------------------------------------------------------------------------------
MIS_KINDS = ("full_rank_noise", "rank_above_k", "indefinite")
MIS_EPS = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def misspecified_perturbation(
    U: np.ndarray, kind: str, eps: float, rng: np.random.Generator
) -> np.ndarray:
    r"""A perturbation that is ``U U^T`` plus a misspecification of relative Frobenius size eps.

    ``P = U U^T + eps ||U U^T||_F E`` with ``||E||_F = 1`` and

    - ``"full_rank_noise"``: E symmetric Gaussian (``(G + G^T)/2``, normalised): full rank,
      indefinite;
    - ``"rank_above_k"``: ``E = w w^T / ||w||^2``, w Gaussian: rank k + 1, still PSD;
    - ``"indefinite"``: ``E = -w w^T / ||w||^2``: a negative direction, rank k + 1.

    Parameters
    ----------
    U : ndarray, shape (d, k)
        Factor of the well-specified part ``U U^T``.
    kind : {"full_rank_noise", "rank_above_k", "indefinite"}
        Shape of the misspecification E.
    eps : float
        Its Frobenius norm relative to ``||U U^T||_F`` (0: exactly ``U U^T``).
    rng : numpy.random.Generator
        Source of the direction E.

    Returns
    -------
    ndarray, shape (d, d)
        The symmetric perturbation P.

    Raises
    ------
    ValueError
        If ``kind`` is not one of :data:`MIS_KINDS`.

    Examples
    --------
    >>> import numpy as np
    >>> U = np.random.default_rng(0).standard_normal((4, 1))
    >>> P = misspecified_perturbation(U, "rank_above_k", 0.1, np.random.default_rng(1))
    >>> P.shape, int(np.linalg.matrix_rank(P))
    ((4, 4), 2)
    >>> bool(np.isclose(np.linalg.norm(P - U @ U.T), 0.1 * np.linalg.norm(U @ U.T)))
    True
    >>> N = misspecified_perturbation(U, "indefinite", 0.1, np.random.default_rng(1))
    >>> bool(np.linalg.eigvalsh(N).min() < 0)
    True
    """
    P = U @ U.T
    d = P.shape[0]
    if kind == "full_rank_noise":
        G = rng.standard_normal((d, d))
        E = G + G.T
    elif kind in ("rank_above_k", "indefinite"):
        w = rng.standard_normal((d, 1))
        E = (w @ w.T) * (1.0 if kind == "rank_above_k" else -1.0)
    else:
        raise ValueError(f"kind must be one of {MIS_KINDS}, got {kind!r}")
    return P + eps * float(np.linalg.norm(P)) * E / float(np.linalg.norm(E))


def misspecified_cell(
    rng: np.random.Generator,
    *,
    d: int,
    T: int,
    k: int,
    kind: str,
    eps_values: Sequence[float],
    instances: int,
) -> dict[str, np.ndarray]:
    r"""LoRA-ML (rank-k PSD adapters) on perturbations that are not exactly rank-k PSD.

    Per instance a generic family (d, T, k) and one direction E per task are drawn once; for each
    eps the retraining and test perturbations are :func:`misspecified_perturbation` of the same
    factors and directions (a path in eps, so the first-order slopes are visible per instance).
    Fields along the last axis of ``"record"`` (instances, len(eps), 4):

    0. ``||A_hat - A*||_F / ||A*||_F`` for LoRA-ML (:func:`loraml.theory.solve_lora_ml`);
    1. rank-k fine-tuning loss on the test task from ``A_hat`` over ``1/2 ||P_test||_F^2``;
    2. the same from ``A*`` itself (the oracle: what rank k cannot fit of the test perturbation);
    3. the same from SR (:func:`loraml.theory.sr_closed_form`).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every draw.
    d, T, k : int
        Dimension, number of retraining tasks and perturbation rank; ``k (T + 1) <= d``.
    kind : {"full_rank_noise", "rank_above_k", "indefinite"}
        Shape of the misspecification (:func:`misspecified_perturbation`).
    eps_values : sequence of float
        Relative sizes eps of the misspecification, the same path for every instance.
    instances : int
        Families drawn.

    Returns
    -------
    dict
        ``"eps"`` (len(eps_values),) and ``"record"`` of shape (instances, len(eps_values), 4).

    Examples
    --------
    >>> import numpy as np
    >>> out = misspecified_cell(np.random.default_rng(0), d=6, T=3, k=1, kind="rank_above_k",
    ...     eps_values=[0.0, 0.1], instances=1)
    >>> out["eps"].tolist(), out["record"].shape
    ([0.0, 0.1], (1, 2, 4))
    >>> bool(out["record"][0, 0, 0] < 1e-8)  # eps = 0: LoRA-ML recovers A* (Theorem 3)
    True
    """
    eps_values = [float(e) for e in eps_values]
    rec = np.empty((instances, len(eps_values), 4))
    for i in range(instances):
        fam = draw_generic_family(rng, d, T, k)
        path_seed = int(rng.integers(2**63))
        for j, eps in enumerate(eps_values):
            same = np.random.default_rng(path_seed)  # the same directions E for every eps
            P = np.stack([misspecified_perturbation(u, kind, eps, same) for u in fam.U_star])
            P_test = misspecified_perturbation(fam.U_test[0], kind, eps, same)
            targets = fam.A_star[None] + P
            test = fam.A_star + P_test
            q = Quadratics.population(targets)
            A_hat = solve_lora_ml(q, k).A
            A_sr = targets.mean(0)
            L0 = 0.5 * float(np.sum(P_test**2))
            rec[i, j] = (
                float(np.linalg.norm(A_hat - fam.A_star) / np.linalg.norm(fam.A_star)),
                finetune_floor(test - A_hat, k) / L0,
                finetune_floor(P_test, k) / L0,
                finetune_floor(test - A_sr, k) / L0,
            )
    return {"eps": np.array(eps_values), "record": rec}


def _loglog_slope(x: np.ndarray, y: np.ndarray) -> float | None:
    keep = (x > 0) & (y > 0)
    if keep.sum() < 2:
        return None
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


def check_misspecified(
    rng: np.random.Generator,
    *,
    instances: int = 20,
    d: int = 10,
    T: int = 4,
    k: int = 1,
    kinds: Sequence[str] = MIS_KINDS,
    eps_values: Sequence[float] = MIS_EPS,
) -> CheckResult:
    r"""Measurement: LoRA-ML when the perturbations are not exactly rank-k PSD (issue 13, q. 7).

    First-order prediction. For T >= 3 and generic factors the population LoRA-ML minimiser is
    unique up to the adapters' rotations (Theorem 3) and, generically, nondegenerate modulo that
    symmetry, so by the implicit function theorem a perturbation of the targets of size eps moves
    it by O(eps): ``||A_hat - A*|| ~ c_1 eps`` (log-log slope 1). Rank-k fine-tuning from a base
    ``A`` leaves ``l(A) = 1/2 sum_{i>k} sigma_i^2(A_test* - A)``; from ``A*`` (oracle) the tail
    ``sigma_{k+1..}(P_test)`` is O(eps), and from ``A_hat = A* + O(eps)`` it is still O(eps)
    (Weyl), so both ``l(A*)`` and ``l(A_hat)`` are O(eps^2) (slope 2) with a ratio of order one:
    LoRA-ML loses a constant factor, not an order, to the oracle. SR's loss stays at its
    Corollary 1 floor, O(1) in eps. So LoRA-ML's advantage shrinks as eps^2 and ends where
    ``c_2 eps^2`` reaches SR's floor.

    Measured per kind (:func:`misspecified_perturbation`) and eps, ``instances`` families
    (:func:`misspecified_cell`): medians of the four fields, the fitted log-log slopes of the base
    error and of LoRA-ML's fine-tuning loss over eps in (0, 0.1], the median ratio of LoRA-ML's
    fine-tuning loss to the oracle's, and the fraction of instances where LoRA-ML + rank k leaves
    less than SR + rank k (Wilson interval).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every draw.
    instances : int
        Families per kind.
    d, T, k : int
        Dimension, number of retraining tasks and perturbation rank; ``k (T + 1) <= d``.
    kinds : sequence of str
        Kinds of misspecification (:data:`MIS_KINDS`).
    eps_values : sequence of float
        Relative sizes eps of the misspecification.

    Returns
    -------
    CheckResult
        A measurement: ``key`` ``"misspecified"``, ``held`` None, no margin, the instances,
        the seconds and the measured ``numbers`` described above.

    Examples
    --------
    >>> import numpy as np
    >>> res = check_misspecified(np.random.default_rng(0), instances=1, d=6, T=3,
    ...     kinds=["rank_above_k"], eps_values=[0.0, 0.1])
    >>> res.numbers["rank_above_k"]["eps=0.0"]["median_A_relative_error"] < 1e-8
    True
    """
    start = time.perf_counter()
    out: dict = {"d": d, "T": T, "k": k}
    for kind in kinds:
        data = misspecified_cell(
            rng, d=d, T=T, k=k, kind=kind, eps_values=eps_values, instances=instances
        )
        eps, rec = data["eps"], data["record"]
        row: dict = {}
        for j, e in enumerate(eps):
            r = rec[:, j]
            row[f"eps={float(e)}"] = {
                "median_A_relative_error": float(np.median(r[:, 0])),
                "median_lora_ml_finetune_loss": float(np.median(r[:, 1])),
                "median_oracle_finetune_loss": float(np.median(r[:, 2])),
                "median_sr_finetune_loss": float(np.median(r[:, 3])),
                "median_lora_ml_over_oracle": (
                    float(np.median(r[:, 1] / r[:, 2])) if np.all(r[:, 2] > 1e-20) else None
                ),
                "lora_ml_below_sr": fraction(int(np.sum(r[:, 1] < r[:, 3])), instances),
            }
        small = (eps > 0) & (eps <= 0.1)
        med = np.median(rec, axis=0)
        row["slope_A_error"] = _loglog_slope(eps[small], med[small, 0])
        row["slope_lora_ml_finetune_loss"] = _loglog_slope(eps[small], med[small, 1])
        row["slope_oracle_finetune_loss"] = _loglog_slope(eps[small], med[small, 2])
        out[kind] = row
    return _measurement(
        "misspecified",
        "Perturbations not rank-k PSD: LoRA-ML base error, rank-k fine-tuning vs SR (measured)",
        instances * len(kinds),
        start,
        out,
    )


# ---------------------------------------------------------------------------------------------
# 6. covariance
# ---------------------------------------------------------------------------------------------
COV_CONDITIONS = (1.0, 10.0, 100.0)
COV_SETTINGS = ("shared", "per_task")


def random_covariance(d: int, condition: float, rng: np.random.Generator) -> np.ndarray:
    """``Q diag(lambda) Q^T``: Haar-random Q, log-eigenvalues evenly spread over a ``condition``
    ratio and centred at 0 (so ``det = 1``); the identity when ``condition == 1``.

    Parameters
    ----------
    d : int
        Dimension.
    condition : float
        Condition number ``lambda_max / lambda_min`` (at least 1).
    rng : numpy.random.Generator
        Source of Q (unused when ``condition == 1``).

    Returns
    -------
    ndarray, shape (d, d)
        A symmetric positive definite covariance with determinant 1.

    Examples
    --------
    >>> import numpy as np
    >>> S = random_covariance(4, 10.0, np.random.default_rng(0))
    >>> bool(np.allclose(S, S.T) and np.isclose(np.linalg.cond(S), 10.0))
    True
    >>> bool(np.isclose(np.linalg.det(S), 1.0))
    True
    >>> np.array_equal(random_covariance(3, 1.0, np.random.default_rng(0)), np.eye(3))
    True
    """
    if condition == 1.0:
        return np.eye(d)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = np.exp(np.linspace(-0.5, 0.5, d) * np.log(condition))
    return (Q * lam) @ Q.T


def _cov_quadratics(targets: np.ndarray, covs: np.ndarray) -> Quadratics:
    """Population losses ``1/2 tr((M - A_t*) Sigma_t (M - A_t*)^T)`` with per-task Sigma_t."""
    C = targets @ covs
    c = np.einsum("tij,tij->t", C, targets)
    return Quadratics(covs.copy(), C, c)


def covariance_cell(
    rng: np.random.Generator,
    *,
    d: int,
    T: int,
    k: int,
    setting: str,
    condition: float,
    instances: int,
    starts: int,
) -> dict[str, np.ndarray]:
    r"""LoRA-ML and SR with inputs ``x ~ N(0, Sigma_t)`` instead of ``N(0, I)`` (population).

    ``setting="shared"``: one Sigma for every task and the test task; ``"per_task"``: each task
    (test included) its own, all of condition number ``condition`` (:func:`random_covariance`).
    Per family (generic, d, T, k): ``"record"`` fields

    0. ``||A_hat - A*|| / ||A*||`` from the spectral start;
    1. ``max_t r_t`` there (per-task relative residual in the Frobenius norm);
    2. SR's rank-k fine-tuning loss on the test task (in the test task's Sigma-metric,
       reduced-rank regression, :func:`loraml.theory.finetune_closed_form`) over the loss of not
       adapting from A*; 3. the same with ``Sigma = I`` (the paper's floor) on the same family;

    and ``"classes"`` (instances, starts): random starts classified as in
    :func:`landscape_map_cell` (0 zero loss, 1 stuck, 2 runaway).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every draw.
    d, T, k : int
        Dimension, number of retraining tasks and perturbation rank; ``k (T + 1) <= d``.
    setting : {"shared", "per_task"}
        One Sigma for every task, or one per task.
    condition : float
        Condition number of every Sigma (1: the identity).
    instances : int
        Families drawn.
    starts : int
        Random starts per family.

    Returns
    -------
    dict
        ``"record"`` of shape (instances, 4) and ``"classes"`` of shape (instances, starts).

    Raises
    ------
    ValueError
        If ``setting`` is not one of :data:`COV_SETTINGS`.

    Examples
    --------
    >>> import numpy as np
    >>> out = covariance_cell(np.random.default_rng(0), d=8, T=3, k=1, setting="shared",
    ...     condition=10.0, instances=1, starts=1)
    >>> out["record"].shape, out["classes"].shape
    ((1, 4), (1, 1))
    >>> bool(out["record"][0, 1] <= ZERO_RTOL)  # the zero-loss set does not depend on Sigma
    True
    """
    from loraml.theory.finetune import finetune_closed_form
    from loraml.theory.retraining import sr_closed_form

    rec = np.empty((instances, 4))
    classes = np.empty((instances, starts), dtype=int)
    for i in range(instances):
        fam = draw_generic_family(rng, d, T, k)
        if setting == "shared":
            covs = np.repeat(random_covariance(d, condition, rng)[None], T + 1, axis=0)
        elif setting == "per_task":
            covs = np.stack([random_covariance(d, condition, rng) for _ in range(T + 1)])
        else:
            raise ValueError(f"setting must be one of {COV_SETTINGS}, got {setting!r}")
        q = _cov_quadratics(fam.targets(), covs[:T])
        test = fam.test_targets()[:1]
        q_test = _cov_quadratics(test, covs[T:])
        q_test_iso = Quadratics.population(test)
        res = solve_lora_ml(q, k)
        L0 = float(q_test.losses(fam.A_star)[0])
        L0_iso = float(q_test_iso.losses(fam.A_star)[0])
        rec[i] = (
            float(np.linalg.norm(res.A - fam.A_star) / np.linalg.norm(fam.A_star)),
            float(task_residuals(fam, res.A, res.U).max()),
            finetune_closed_form(q_test, sr_closed_form(q), k).loss / L0,
            finetune_closed_form(q_test_iso, fam.targets().mean(0), k).loss / L0_iso,
        )
        classes[i] = _start_classes(fam, q, k, starts, rng)
    return {"record": rec, "classes": classes}


COV_N_SPREAD = 10.0  # largest N_t over smallest
COV_NOISY_N_MIN = 100
COV_NOISE_STD = 0.1


def unequal_sizes(T: int, n_min: int, spread: float) -> np.ndarray:
    """Sample sizes ``N_t = round(n_min spread^(t / (T - 1)))``: geometric, ``n_min`` to
    ``spread * n_min``.

    Parameters
    ----------
    T : int
        Number of tasks.
    n_min : int
        Smallest size.
    spread : float
        Largest size over smallest (at least 1).

    Returns
    -------
    ndarray of int, shape (T,)

    Examples
    --------
    >>> unequal_sizes(3, 8, 10.0).tolist()
    [8, 25, 80]
    """
    t = np.arange(T) / max(T - 1, 1)
    return np.round(n_min * spread**t).astype(int)


def _unequal_data(
    fam: TaskFamily, Ns: np.ndarray, noise_std: float, rng: np.random.Generator
) -> Quadratics:
    """Task t's ``N_t`` samples ``x ~ N(0, I)``, ``y = A_t* x + eps`` as per-task mean losses."""
    from loraml.theory.family import sample_task_data

    data = [
        sample_task_data(A, int(n), noise_std, rng) for A, n in zip(fam.targets(), Ns, strict=True)
    ]
    return Quadratics.from_data([x for x, _ in data], [y for _, y in data])


def unequal_n_cell(
    rng: np.random.Generator,
    *,
    d: int,
    T: int,
    k: int,
    n_min: int,
    spread: float,
    instances: int,
    starts: int,
) -> dict[str, np.ndarray]:
    r"""LoRA-ML and SR on noiseless finite samples with unequal sizes ``N_t`` (N_t >= d).

    Task t gets ``N_t`` samples (:func:`unequal_sizes`), ``y = A_t* x`` exactly, and the loss
    ``f_t(M) = 1/(2N_t) ||Y_t - M X_t||_F^2 = 1/2 tr((M - A_t*) S_t (M - A_t*)^T)`` with
    ``S_t = X_t X_t^T / N_t``: the per-task covariance case with ``Sigma_t = S_t``, positive
    definite (almost surely) when ``N_t >= d``, but badly conditioned near ``N_t = d``. Per family
    (generic, d, T, k), ``"record"`` fields

    0. ``||A_hat - A*|| / ||A*||`` from the spectral start;
    1. ``max_t r_t`` there;
    2. SR's rank-k fine-tuning loss on the test task (population, ``x ~ N(0, I)``) from the SR
       solution on these data, over the loss of not adapting from A*;
    3. the same from the population SR solution ``mean_t A_t*`` (the paper's floor);
    4. ``max_t cond(S_t)``;

    and ``"classes"`` (instances, starts): random starts classified as in
    :func:`covariance_cell` (0 zero loss, 1 stuck, 2 runaway).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every draw.
    d, T, k : int
        Dimension, number of retraining tasks and perturbation rank; ``k (T + 1) <= d``.
    n_min : int
        Smallest ``N_t`` (at least d for a positive definite ``S_t``).
    spread : float
        Largest ``N_t`` over smallest.
    instances : int
        Families drawn.
    starts : int
        Random starts per family.

    Returns
    -------
    dict
        ``"record"`` of shape (instances, 5), ``"classes"`` of shape (instances, starts) and
        ``"Ns"`` (the sizes).

    Examples
    --------
    >>> import numpy as np
    >>> out = unequal_n_cell(np.random.default_rng(0), d=8, T=3, k=1, n_min=8, spread=10.0,
    ...     instances=1, starts=1)
    >>> out["Ns"].tolist(), out["record"].shape
    ([8, 25, 80], (1, 5))
    >>> bool(out["record"][0, 1] <= ZERO_RTOL)  # N_t >= d: the zero-loss set is unchanged
    True
    """
    from loraml.theory.finetune import finetune_closed_form
    from loraml.theory.retraining import sr_closed_form

    Ns = unequal_sizes(T, n_min, spread)
    rec = np.empty((instances, 5))
    classes = np.empty((instances, starts), dtype=int)
    for i in range(instances):
        fam = draw_generic_family(rng, d, T, k)
        q = _unequal_data(fam, Ns, 0.0, rng)
        q_test = Quadratics.population(fam.test_targets()[:1])
        res = solve_lora_ml(q, k)
        L0 = float(q_test.losses(fam.A_star)[0])
        assert q.S is not None  # finite-sample losses carry their second moments
        rec[i] = (
            float(np.linalg.norm(res.A - fam.A_star) / np.linalg.norm(fam.A_star)),
            float(task_residuals(fam, res.A, res.U).max()),
            finetune_closed_form(q_test, sr_closed_form(q), k).loss / L0,
            finetune_closed_form(q_test, fam.targets().mean(0), k).loss / L0,
            float(np.linalg.cond(q.S).max()),
        )
        classes[i] = _start_classes(fam, q, k, starts, rng)
    return {"record": rec, "classes": classes, "Ns": Ns}


def unequal_n_noisy_cell(
    rng: np.random.Generator,
    *,
    d: int,
    T: int,
    k: int,
    n_min: int,
    spread: float,
    noise_std: float,
    instances: int,
    draws: int,
) -> dict[str, np.ndarray]:
    r"""LoRA-ML's retraining error with unequal ``N_t`` and noise, against its prediction.

    Per family (generic, d, T, k) and each of ``draws`` noisy data sets (task t: ``N_t``
    samples, :func:`unequal_sizes`), LoRA-ML's ``||A_hat - A*||_F^2`` on the toolkit's objective
    (per-task means, every task weighted 1) and on the pooled sum of squared errors (task t
    weighted by ``N_t``). ``"error"`` (instances, draws, 2): the two errors; ``"predicted"``
    (instances, 3): the first-order predictions of the two
    (:func:`loraml.theory.retraining_error.predicted_retraining_error_unequal`, ``"task"`` and
    ``"sample"``) and, for contrast, the equal-N formula
    (:func:`loraml.theory.retraining_error.predicted_retraining_error`) at the mean ``N_t``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every draw.
    d, T, k : int
        Dimension, number of retraining tasks and perturbation rank; ``k (T + 1) <= d``.
    n_min : int
        Smallest ``N_t`` (the prediction is first order: ``n_min >> d``).
    spread : float
        Largest ``N_t`` over smallest.
    noise_std : float
        Noise standard deviation ``s``.
    instances : int
        Families drawn.
    draws : int
        Noisy data sets per family.

    Returns
    -------
    dict
        ``"error"`` (instances, draws, 2), ``"predicted"`` (instances, 3) and ``"Ns"``.

    Examples
    --------
    >>> import numpy as np
    >>> out = unequal_n_noisy_cell(np.random.default_rng(0), d=6, T=3, k=1, n_min=100,
    ...     spread=10.0, noise_std=0.1, instances=1, draws=2)
    >>> out["error"].shape, out["predicted"].shape
    ((1, 2, 2), (1, 3))
    >>> bool(out["predicted"][0, 1] < out["predicted"][0, 0])  # weighting by N_t is better
    True
    """
    from loraml.theory.retraining_error import (
        predicted_retraining_error,
        predicted_retraining_error_unequal,
    )

    Ns = unequal_sizes(T, n_min, spread)
    w = Ns / Ns.mean()
    err = np.empty((instances, draws, 2))
    pred = np.empty((instances, 3))
    for i in range(instances):
        fam = draw_generic_family(rng, d, T, k)
        pred[i] = (
            predicted_retraining_error_unequal(fam.U_star, noise_std, Ns),
            predicted_retraining_error_unequal(fam.U_star, noise_std, Ns, weighting="sample"),
            predicted_retraining_error(fam.U_star, noise_std, int(round(Ns.mean()))),
        )
        for j in range(draws):
            q = _unequal_data(fam, Ns, noise_std, rng)
            assert q.S is not None and q.m is not None  # finite-sample losses
            qw = Quadratics(q.S * w[:, None, None], q.C * w[:, None, None], q.c * w, q.N, q.m * w)
            err[i, j] = [float(np.sum((solve_lora_ml(p, k).A - fam.A_star) ** 2)) for p in (q, qw)]
    return {"error": err, "predicted": pred, "Ns": Ns}


def _recovery_numbers(rec: np.ndarray, classes: np.ndarray) -> dict:
    """Recovery and zero loss (record fields 0 and 1) and random-start classes, as fractions."""
    n, runs = rec.shape[0], classes.size
    return {
        "recovered": fraction(int(np.sum(rec[:, 0] <= RECOVER_RTOL)), n),
        "zero_loss": fraction(int(np.sum(rec[:, 1] <= ZERO_RTOL)), n),
        "random_starts_zero_loss": fraction(int(np.sum(classes == 0)), runs),
        "random_starts_stuck": fraction(int(np.sum(classes == 1)), runs),
        "random_starts_runaway": fraction(int(np.sum(classes == 2)), runs),
    }


def _unequal_noiseless_numbers(data: dict[str, np.ndarray]) -> dict:
    """The record of :func:`unequal_n_cell` as fractions and medians."""
    rec, cl = data["record"], data["classes"]
    n = rec.shape[0]
    return {
        "N_t": data["Ns"].tolist(),
        **_recovery_numbers(rec, cl),
        "median_sr_floor_ratio_data_over_population": float(np.median(rec[:, 2] / rec[:, 3])),
        "sr_floor_above_population": fraction(int(np.sum(rec[:, 2] > (1 + 1e-6) * rec[:, 3])), n),
        "median_max_condition_S_t": float(np.median(rec[:, 4])),
    }


def _unequal_noisy_numbers(data: dict[str, np.ndarray], noise_std: float) -> dict:
    """The errors of :func:`unequal_n_noisy_cell` against their predictions."""
    err, pred = data["error"], data["predicted"]
    mean_err = err.mean(axis=(0, 1))  # (task, sample)
    per_family = err.mean(axis=1) / pred[:, :2]  # (instances, 2)
    out: dict = {"N_t": data["Ns"].tolist(), "noise_std": noise_std}
    out["families"], out["draws"] = int(err.shape[0]), int(err.shape[1])
    for j, name in enumerate(("task_weighted", "sample_weighted")):
        out[name] = {
            "mean_error": float(mean_err[j]),
            "mean_predicted": float(pred[:, j].mean()),
            "ratio_of_means": float(mean_err[j] / pred[:, j].mean()),
            "per_family_ratio_min_median_max": [
                float(np.min(per_family[:, j])),
                float(np.median(per_family[:, j])),
                float(np.max(per_family[:, j])),
            ],
        }
    out["task_weighted_over_equal_N_formula_at_mean_N"] = float(mean_err[0] / pred[:, 2].mean())
    out["sample_over_task_error"] = {
        "measured": float(mean_err[1] / mean_err[0]),
        "predicted": float(pred[:, 1].mean() / pred[:, 0].mean()),
    }
    return out


def check_covariance(
    rng: np.random.Generator,
    *,
    instances: int = 20,
    starts: int = 3,
    conditions: Sequence[float] = COV_CONDITIONS,
    settings: Sequence[str] = COV_SETTINGS,
    sizes: Sequence[tuple[int, int, int]] = ((8, 3, 1), (4, 3, 1)),
    spread: float = COV_N_SPREAD,
    noisy_n_min: int = COV_NOISY_N_MIN,
    noise_std: float = COV_NOISE_STD,
    draws: int = 5,
) -> CheckResult:
    r"""Measurement: inputs with covariance Sigma != I and unequal N_t (issue 13, question 6).

    Derivation (why the zero-loss set is unchanged). With ``x ~ N(0, Sigma_t)`` the population
    loss of task t is ``f_t(M) = 1/2 tr((M - A_t*) Sigma_t (M - A_t*)^T)``; for ``Sigma_t`` positive
    definite, ``f_t(M) = 0`` iff ``M = A_t*``. So the zero-loss points of LoRA-ML,
    ``A + U_t U_t^T = A_t*`` for every t, are the same set for every positive definite Sigma_t,
    shared or not, and with any sample sizes N_t in the population limit: Theorems 2 and 3 carry
    over unchanged. What can change is the landscape (the metric reweights directions) and SR,
    whose solution ``(sum_t A_t* Sigma_t)(sum_t Sigma_t)^{-1}`` is a Sigma-weighted average.

    Measured per size ``(d, T, k)`` in ``sizes`` (the first with room, the second tight), setting
    (shared or per-task Sigma) and condition number (:func:`covariance_cell`): the fraction of
    families where the spectral-start solver recovers A* and reaches zero loss, the fraction of
    random starts ending at zero loss / stuck / runaway, and the median SR rank-k fine-tuning
    loss relative to not adapting, against the isotropic one on the same families.

    Unequal sample sizes (``numbers["unequal_N"]``, per size): ``N_t`` spread geometrically over a
    factor ``spread`` (:func:`unequal_sizes`). Noiseless, from ``N_t = d`` up
    (:func:`unequal_n_cell`): ``f_t(M) = 1/2 tr((M - A_t*) S_t (M - A_t*)^T)`` with
    ``S_t = X_t X_t^T / N_t`` positive definite almost surely when ``N_t >= d``, so by the argument
    above the zero-loss set is again exactly the population one (A* recovered, Theorems 2-3) for
    any ``N_t >= d``; measured as for Sigma (recovery, zero loss, random starts, SR's floor from
    the data-weighted SR solution against the population one). With ``N_t < d`` the data fit
    every ``M`` with ``(M - A_t*) X_t = 0`` and the set grows (not measured). Noisy (noise
    ``noise_std``, ``N_t`` from ``noisy_n_min``; :func:`unequal_n_noisy_cell`, ``draws`` data
    sets per family): LoRA-ML's ``||A_hat - A*||_F^2`` against the first-order prediction of
    :func:`loraml.theory.retraining_error.predicted_retraining_error_unequal` (ratio of means over
    all families and draws, and the per-family ratios of mean error to prediction), for the
    toolkit's per-task-mean objective and for the pooled sum of squares (tasks weighted by
    ``N_t``), and the equal-N formula at the mean ``N_t`` for contrast.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every draw.
    instances : int
        Families per (size, setting, condition).
    starts : int
        Random starts per family.
    conditions : sequence of float
        Condition numbers of Sigma (``per_task`` skips 1, identical to ``shared``).
    settings : sequence of str
        ``"shared"`` and/or ``"per_task"`` (:data:`COV_SETTINGS`).
    sizes : sequence of (d, T, k)
        Sizes, each with ``k (T + 1) <= d``.
    spread : float
        Largest ``N_t`` over smallest, in the unequal-N cells.
    noisy_n_min : int
        Smallest ``N_t`` of the noisy unequal-N cells (the noiseless ones start at ``N_t = d``).
    noise_std : float
        Noise standard deviation of the noisy unequal-N cells.
    draws : int
        Noisy data sets per family.

    Returns
    -------
    CheckResult
        A measurement: ``key`` ``"covariance"``, ``held`` None, no margin, the instances,
        the seconds and the measured ``numbers`` described above.

    Examples
    --------
    >>> import numpy as np
    >>> res = check_covariance(np.random.default_rng(0), instances=1, starts=1,
    ...     conditions=[10.0], settings=["shared"], sizes=[(8, 3, 1)], draws=1)
    >>> res.numbers["d=8,T=3,k=1"]["shared,cond=10.0"]["recovered"]["k"]
    1
    >>> res.numbers["unequal_N"]["d=8,T=3,k=1"]["noiseless"]["recovered"]["k"]
    1
    """
    start = time.perf_counter()
    out: dict = {}
    total = 0
    for d, T, k in sizes:
        block: dict = {}
        for setting in settings:
            for cond in conditions:
                if setting == "per_task" and cond == 1.0:
                    continue  # identical to shared with Sigma = I
                data = covariance_cell(
                    rng, d=d, T=T, k=k, setting=setting, condition=float(cond),
                    instances=instances, starts=starts,
                )  # fmt: skip
                rec, cl = data["record"], data["classes"]
                total += instances
                block[f"{setting},cond={float(cond)}"] = {
                    **_recovery_numbers(rec, cl),
                    "median_sr_finetune_loss": float(np.median(rec[:, 2])),
                    "median_sr_finetune_loss_isotropic": float(np.median(rec[:, 3])),
                    "median_sr_floor_ratio_sigma_over_identity": float(
                        np.median(rec[:, 2] / rec[:, 3])
                    ),
                    "sr_floor_above_identity": fraction(
                        int(np.sum(rec[:, 2] > (1 + 1e-6) * rec[:, 3])), instances
                    ),
                }
        out[f"d={d},T={T},k={k}"] = block
    out["unequal_N"] = {}
    for d, T, k in sizes:
        clean = unequal_n_cell(
            rng, d=d, T=T, k=k, n_min=d, spread=spread, instances=instances, starts=starts
        )
        noisy = unequal_n_noisy_cell(
            rng, d=d, T=T, k=k, n_min=noisy_n_min, spread=spread, noise_std=noise_std,
            instances=instances, draws=draws,
        )  # fmt: skip
        total += 2 * instances
        out["unequal_N"][f"d={d},T={T},k={k}"] = {
            "noiseless": _unequal_noiseless_numbers(clean),
            "noisy": _unequal_noisy_numbers(noisy, noise_std),
        }
    return _measurement(
        "covariance",
        "Inputs with covariance Sigma != I and unequal N_t: zero-loss set, landscape, SR's floor, "
        "retraining error (measured)",
        total,
        start,
        out,
    )


# ---------------------------------------------------------------------------------------------
# 3. end_to_end
# ---------------------------------------------------------------------------------------------
E2E_NS = (30, 100, 300, 1000, 3000, 10000)


def end_to_end_cell(
    rng: np.random.Generator,
    *,
    d: int,
    T: int,
    k: int,
    N: int,
    ns: Sequence[int],
    noise_std: float,
    reps: int,
) -> dict[str, np.ndarray]:
    r"""Finite data at both stages: retrain on T tasks of N samples, fine-tune on n samples.

    Per repetition: a generic family, N samples per retraining task
    (:func:`loraml.theory.sample_family_data`), LoRA-ML (:func:`loraml.theory.solve_lora_ml` on
    the data) and SR (:func:`loraml.theory.sr_closed_form`); then for each n, fresh test-task
    samples and exact rank-r fine-tuning (:func:`loraml.theory.adaptation.finetune_excess_risk`).
    ``"risk"`` (reps, len(ns), 3): test excess risk ``1/2 ||A + U V^T - A_test*||_F^2`` of
    LoRA-ML + rank k, SR + rank k, SR + rank k(T+1). ``"base_sq"`` (reps, 2): ``||A_hat - A*||^2``
    of LoRA-ML and ``||A_SR_hat - mean_t A_t*||^2`` (SR's estimation error; it is dominated by the
    random design, ``sum_t P_t (S_t - I)`` weights, and lies mostly where a rank-k(T+1) adapter
    reaches, so :func:`end_to_end_prediction`'s "no preferred direction" does not apply to it).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every draw.
    d, T, k : int
        Dimension, number of retraining tasks and perturbation rank; ``k (T + 1) <= d``.
    N : int
        Samples per retraining task.
    ns : sequence of int
        Fine-tuning sample sizes n.
    noise_std : float
        Standard deviation s of the label noise at both stages.
    reps : int
        Repetitions (families drawn).

    Returns
    -------
    dict
        ``"ns"`` (len(ns),), ``"risk"`` (reps, len(ns), 3) and ``"base_sq"`` (reps, 2).

    Examples
    --------
    >>> import numpy as np
    >>> out = end_to_end_cell(np.random.default_rng(0), d=6, T=3, k=1, N=50, ns=[100],
    ...     noise_std=0.1, reps=1)
    >>> out["ns"].tolist(), out["risk"].shape, out["base_sq"].shape
    ([100], (1, 1, 3), (1, 2))
    >>> bool((out["risk"] >= 0).all() and (out["base_sq"] >= 0).all())
    True
    """
    from loraml.theory.adaptation import finetune_excess_risk
    from loraml.theory.family import sample_family_data
    from loraml.theory.retraining import sr_closed_form

    K = min(k * (T + 1), d)
    risk = np.empty((reps, len(ns), 3))
    base_sq = np.empty((reps, 2))
    for i in range(reps):
        fam = draw_generic_family(rng, d, T, k)
        X, Y = sample_family_data(fam.targets(), N, noise_std, rng)
        q = Quadratics.from_data(X, Y)
        A_ml = solve_lora_ml(q, k).A
        A_sr = sr_closed_form(q)
        base_sq[i] = (
            float(np.sum((A_ml - fam.A_star) ** 2)),
            float(np.sum((A_sr - fam.targets().mean(0)) ** 2)),
        )
        test = fam.test_targets()[0]
        for j, n in enumerate(ns):
            risk[i, j] = (
                finetune_excess_risk(A_ml, test, k, int(n), noise_std, rng)[0],
                finetune_excess_risk(A_sr, test, k, int(n), noise_std, rng)[0],
                finetune_excess_risk(A_sr, test, K, int(n), noise_std, rng)[0],
            )
    return {"ns": np.array(ns), "risk": risk, "base_sq": base_sq}


def end_to_end_prediction(
    d: int, r: int, n: np.ndarray | float, noise_std: float, base_sq: float
) -> np.ndarray:
    r"""First-order total risk of rank-r fine-tuning on n samples from a base with error E.

    ``R(n) ~ 1/2 s^2 r(2d - r) / n + 1/2 ||E||_F^2 (1 - r(2d - r) / d^2)``. The first term is the
    finite-n fine-tuning term (least squares over the r(2d-r)-dimensional set of rank-r matrices,
    :func:`loraml.theory.adaptation.predicted_excess_risk`); the second is the part of the
    retraining error the adapter cannot absorb: to first order the fitted adapter moves in the
    tangent space of the rank-r set at the target residual, of dimension r(2d-r) out of d^2, and
    an error E with no preferred direction keeps the fraction ``1 - r(2d-r)/d^2`` of its energy.
    The two terms cross at ``n* = s^2 r(2d-r) / (||E||^2 (1 - r(2d-r)/d^2))``; with
    ``||E||^2 ~ c s^2 d^2 / (N T)`` (pooled least squares, c >= 1) this is
    ``n* ~ r(2d-r) N T / (c (d-r)^2)``, about ``2 r N T / (c d)`` for r << d.

    Parameters
    ----------
    d : int
        Dimension.
    r : int
        Adapter rank.
    n : array_like of int
        Fine-tuning sample sizes.
    noise_std : float
        Standard deviation s of the label noise.
    base_sq : float
        ``||E||_F^2``, the squared error of the retrained base.

    Returns
    -------
    ndarray
        The predicted risk ``R(n)``, of the shape of ``n``.

    Examples
    --------
    >>> import numpy as np
    >>> R = end_to_end_prediction(10, 1, np.array([100, 1000]), 0.1, 0.0)  # exact base
    >>> np.allclose(R, [9.5e-4, 9.5e-5])  # 1/2 s^2 r(2d - r) / n
    True
    >>> bool(np.isclose(end_to_end_prediction(10, 1, np.array([1e15]), 0.1, 2.0)[0], 0.81))
    True
    """
    dim = r * (2 * d - r)
    return 0.5 * noise_std**2 * dim / np.asarray(n, float) + 0.5 * base_sq * (1 - dim / d**2)


def check_end_to_end(
    rng: np.random.Generator,
    *,
    reps: int = 20,
    d: int = 10,
    k: int = 1,
    Ts: Sequence[int] = (3, 6),
    Ns: Sequence[int] = (30, 300),
    ns: Sequence[int] = E2E_NS,
    noise_std: float = 0.1,
) -> CheckResult:
    r"""Measurement: the whole pipeline with finite data at both stages (issue 13, question 3).

    Per (T, N) cell, ``reps`` families (:func:`end_to_end_cell`): the mean test excess risk of
    LoRA-ML + rank k, SR + rank k and SR + rank k(T+1) at each n, the first-order prediction
    for LoRA-ML (:func:`end_to_end_prediction`, with each run's measured base error) and the ratio
    measured / predicted, the predicted crossover n* (median over runs), and the fraction of runs
    where SR + rank k(T+1) beats LoRA-ML + rank k (Wilson interval).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every draw.
    reps : int
        Families per (T, N) cell.
    d, k : int
        Dimension and perturbation rank; ``k (T + 1) <= d`` for every T.
    Ts : sequence of int
        Numbers of retraining tasks T.
    Ns : sequence of int
        Samples per retraining task N.
    ns : sequence of int
        Fine-tuning sample sizes n.
    noise_std : float
        Standard deviation of the label noise at both stages.

    Returns
    -------
    CheckResult
        A measurement: ``key`` ``"end_to_end"``, ``held`` None, no margin, the instances,
        the seconds and the measured ``numbers`` described above.

    Examples
    --------
    >>> import numpy as np
    >>> res = check_end_to_end(np.random.default_rng(0), reps=1, d=6, Ts=[3], Ns=[50], ns=[100])
    >>> res.numbers["T=3,N=50"]["n=100"]["lora_ml_mean_risk"] > 0
    True
    """
    start = time.perf_counter()
    out: dict = {"d": d, "k": k, "noise_std": noise_std}
    for T in Ts:
        for N in Ns:
            data = end_to_end_cell(rng, d=d, T=T, k=k, N=N, ns=ns, noise_std=noise_std, reps=reps)
            risk, base_sq = data["risk"], data["base_sq"]
            dim = k * (2 * d - k)
            n_star = noise_std**2 * dim / (base_sq[:, 0] * (1 - dim / d**2))
            row: dict = {
                "mean_base_sq_lora_ml": float(base_sq[:, 0].mean()),
                "mean_base_sq_over_s2d2_NT": float(
                    base_sq[:, 0].mean() / (noise_std**2 * d * d / (N * T))
                ),
                "median_predicted_crossover_n": float(np.median(n_star)),
            }
            for j, n in enumerate(ns):
                pred_ml = float(
                    np.mean([end_to_end_prediction(d, k, n, noise_std, b) for b in base_sq[:, 0]])
                )
                r = risk[:, j]
                row[f"n={int(n)}"] = {
                    "lora_ml_mean_risk": float(r[:, 0].mean()),
                    "sr_rank_k_mean_risk": float(r[:, 1].mean()),
                    "sr_rank_kT1_mean_risk": float(r[:, 2].mean()),
                    "lora_ml_predicted": pred_ml,
                    "lora_ml_measured_over_predicted": float(r[:, 0].mean() / pred_ml),
                    "sr_rank_kT1_beats_lora_ml": fraction(int(np.sum(r[:, 2] < r[:, 0])), reps),
                }
            out[f"T={T},N={N}"] = row
    return _measurement(
        "end_to_end",
        "Finite data at both stages: test excess risk of LoRA-ML and SR over (N, T, n) (measured)",
        reps * len(Ts) * len(Ns),
        start,
        out,
    )

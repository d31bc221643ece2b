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
from loraml.theory.landscape import random_start
from loraml.theory.retraining import solve_lora_ml

#: ``max_t r_t`` at or below this is a zero-loss point.
ZERO_RTOL = 1e-6
#: ``||A_hat - A*||_F / ||A*||_F`` at or below this recovers ``A*``.
RECOVER_RTOL = 1e-4
#: A run that is not at zero loss and whose base has ``||A_hat - A*||_F`` above this multiple of
#: ``||A*||_F + max_t ||P_t||_F`` has run away along a valley.
RUNAWAY_FACTOR = 10.0


def wilson(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    r"""Wilson score interval of a binomial proportion (95 % by default).

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
    if trials <= 0:
        return (0.0, 1.0)
    p = successes / trials
    den = 1 + z * z / trials
    mid = (p + z * z / (2 * trials)) / den
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / den
    return (float(max(0.0, mid - half)), float(min(1.0, mid + half)))


def fraction(successes: int, trials: int) -> dict:
    """``{"k": successes, "n": trials, "p": successes / trials, "wilson95": [low, high]}``."""
    return {
        "k": int(successes),
        "n": int(trials),
        "p": float(successes / trials) if trials else None,
        "wilson95": list(wilson(successes, trials)),
    }


def task_residuals(fam: TaskFamily, A: np.ndarray, U: np.ndarray) -> np.ndarray:
    """Per-task relative residuals ``||A + U_t U_t^T - A_t*||_F / ||A_t* - A*||_F``, shape (T,)."""
    R = A[None] + U @ np.swapaxes(U, -1, -2) - fam.targets()
    P = fam.perturbations()
    return np.linalg.norm(R, axis=(1, 2)) / np.maximum(np.linalg.norm(P, axis=(1, 2)), 1e-300)


def finetune_floor(residual: np.ndarray, r: int) -> float:
    r"""Population rank-r fine-tuning loss left: ``1/2 sum_{i>r} sigma_i^2(residual)``."""
    s = np.linalg.svd(residual, compute_uv=False)
    return 0.5 * float(np.sum(s[r:] ** 2))


def _end_class(fam: TaskFamily, A: np.ndarray, U: np.ndarray) -> str:
    """``"zero"`` (zero loss), ``"runaway"`` (nonzero loss, far away) or ``"stuck"`` (otherwise)."""
    if task_residuals(fam, A, U).max() <= ZERO_RTOL:
        return "zero"
    scale = np.linalg.norm(fam.A_star) + np.linalg.norm(fam.perturbations(), axis=(1, 2)).max()
    return "runaway" if np.linalg.norm(A - fam.A_star) > RUNAWAY_FACTOR * scale else "stuck"


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

    Returns
    -------
    dict
        ``"ranks"`` (len R) and ``"record"`` of shape (instances, R, 7).
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

    Returns
    -------
    dict
        ``"ranks"`` and ``"classes"`` of shape (instances, starts, R): 0 zero, 1 stuck, 2 runaway.
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

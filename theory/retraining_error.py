r"""Predicted estimation error of finite-sample LoRA-ML retraining (derived here, not in the paper).

LoRA-ML on data minimises ``sum_t 1/(2N) ||Y_t - (A + U_t U_t^T) X_t||_F^2`` over a general base
``A`` (d x d) and symmetric adapters. To first order in the noise (N large, ``S_t = X_t X_t^T / N``
close to I, identifiable tasks) its error is a linear function of the per-task least-squares
errors ``Delta_t = B_t - A_t*``:

- linearise at the truth: ``A = A* + a``, ``U_t U_t^T = P_t* + p_t`` with ``p_t`` in the tangent
  space ``T_t`` of the rank-k PSD matrices at ``P_t* = U_t* U_t*^T``
  (``T_t = {U_t* B^T + B U_t*^T}`` = symmetric ``Z`` with ``Q_t' Z Q_t' = 0``, ``Q_t'`` the
  projector onto ``range(U_t*)^perp``; dimension ``dk - k(k-1)/2``);
- minimise ``sum_t ||a + p_t - Delta_t||_F^2``: for fixed ``a`` the best ``p_t`` is
  ``Pi_t (Delta_t - a)`` (``Pi_t`` the orthogonal projector of ``R^{d x d}`` onto ``T_t``), and the
  stationarity condition in ``a`` is ``(T I - sum_t Pi_t) a = sum_t (I - Pi_t) Delta_t``;
- the ``Delta_t`` are independent with ``E vec(Delta_t) vec(Delta_t)^T = (s^2 / N) I_{d^2}`` to
  first order (``E (X_t X_t^T)^{-1} = I / (N - d - 1)``), so with ``H = T I - sum_t Pi_t``::

      E ||A_hat - A*||_F^2 = (s^2 / N) tr(H^{-1} (sum_t (I - Pi_t)) H^{-1}) = (s^2 / N) tr(H^{-1}).

``H`` acts on all of ``R^{d x d}`` (the base is a general matrix): on its antisymmetric part
(dimension ``d(d-1)/2``) every ``Pi_t`` is zero and ``H = T I``. ``H`` is invertible exactly when
the tangent spaces share no nonzero direction (identifiability; fails for T <= 2, Theorem 2 of
arXiv 2410.22264 v1). Since ``H <= T I``, ``tr(H^{-1}) >= d^2 / T``: LoRA-ML never beats the
pooled least-squares order ``s^2 d^2 / (N T)``, and its ratio to it has a limit above 1 as T grows
(:func:`retraining_error_ratio_limit`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def tangent_projector(U: np.ndarray) -> np.ndarray:
    r"""Projector of ``R^{d x d}`` onto the tangent space of rank-k PSD matrices at ``U U^T``.

    ``Pi(Z) = sym(Z) - Q' sym(Z) Q'``, ``Q'`` the projector onto ``range(U)^perp``, as a
    ``d^2 x d^2`` matrix acting on row-major ``Z.ravel()``: in ``vec`` form
    ``Pi = (I - Q' (x) Q') (I + K) / 2`` with ``K`` the commutation matrix.

    Parameters
    ----------
    U : ndarray, shape (d, k)
        Full column rank.

    Returns
    -------
    ndarray, shape (d*d, d*d)
        Symmetric, idempotent, of trace ``dk - k(k-1)/2``.

    Examples
    --------
    >>> import numpy as np
    >>> Pi = tangent_projector(np.random.default_rng(0).standard_normal((5, 2)))
    >>> round(float(np.trace(Pi)), 9), bool(np.allclose(Pi @ Pi, Pi))
    (9.0, True)
    """
    d = U.shape[0]
    Q, _ = np.linalg.qr(U)
    Qp = np.eye(d) - Q @ Q.T
    K = np.eye(d * d).reshape(d, d, d, d).transpose(0, 1, 3, 2).reshape(d * d, d * d)
    sym = 0.5 * (np.eye(d * d) + K)
    return (np.eye(d * d) - np.kron(Qp, Qp)) @ sym


def predicted_retraining_error(U_star: np.ndarray, noise_std: float, N: int) -> float:
    r"""First-order ``E ||A_hat - A*||_F^2`` of LoRA-ML on data: ``(s^2/N) tr(H^{-1})``.

    Derivation and assumptions in the module docstring: symmetric PSD rank-k perturbations
    ``U_t* U_t*^T`` (full column rank), isotropic Gaussian inputs, N samples per task with
    ``N >> d`` (first order in the noise, ``X_t X_t^T / N ~ I``), and retraining that reaches the
    global minimum near the truth. Measured against LoRA-ML on data by ``check_retraining``
    (:mod:`loraml.theory.checks`) and ``tests/test_retraining_error.py``.

    Parameters
    ----------
    U_star : ndarray, shape (T, d, k)
        The retraining tasks' factors.
    noise_std : float
        Noise standard deviation ``s``.
    N : int
        Samples per task.

    Returns
    -------
    float
        The prediction; ``inf`` when ``T I - sum_t Pi_t`` is singular (``A*`` not identifiable).

    Examples
    --------
    >>> import numpy as np
    >>> U = np.random.default_rng(0).standard_normal((3, 4, 1))
    >>> pred = predicted_retraining_error(U, 0.1, 1000)
    >>> bool(pred > 0.1**2 * 4**2 / (1000 * 3))  # above the pooled order s^2 d^2 / (N T)
    True
    >>> predicted_retraining_error(U[:2], 0.1, 1000)  # T = 2: not identifiable
    inf
    """
    T, d, _ = U_star.shape
    H = T * np.eye(d * d) - sum(tangent_projector(U) for U in U_star)
    w = np.linalg.eigvalsh(0.5 * (H + H.T))
    if w.min() <= 1e-10 * T:
        return float("inf")
    return float(noise_std**2 / N * np.sum(1.0 / w))


def retraining_error_ratio_limit(d: int, k: int) -> float:
    r"""T -> infinity limit of ``E ||A_hat - A*||_F^2 / (s^2 d^2 / (N T))`` for Gaussian ``U_t*``.

    By the law of large numbers ``H / T -> I - E[Pi]``. For Gaussian ``U_t*`` the range is uniformly
    distributed, so ``E[Pi]`` commutes with every conjugation ``Z -> O Z O^T``: it is 0 on the
    antisymmetric matrices (dimension ``d(d-1)/2``), ``beta = ||Pi(I)||^2 / d = k / d`` on the
    identity (``Pi(I)`` is the projector onto ``range(U)``), and ``alpha`` on the traceless
    symmetric matrices (dimension ``m = d(d+1)/2 - 1``), with ``alpha m + beta = dk - k(k-1)/2``
    (the trace of ``Pi``). Hence ``T tr(H^{-1}) -> d(d-1)/2 + 1/(1 - beta) + m/(1 - alpha)``,
    divided by ``d^2``.

    Parameters
    ----------
    d, k : int
        Dimension and rank, ``1 <= k < d``.

    Returns
    -------
    float

    Examples
    --------
    >>> round(retraining_error_ratio_limit(8, 1), 3)
    1.161
    """
    if not 1 <= k < d:
        raise ValueError(f"need 1 <= k < d, got d={d}, k={k}")
    m = d * (d + 1) / 2 - 1
    beta = k / d
    alpha = (d * k - k * (k - 1) / 2 - beta) / m
    return (d * (d - 1) / 2 + 1 / (1 - beta) + m / (1 - alpha)) / d**2


def predicted_retraining_error_unequal(
    U_star: np.ndarray, noise_std: float, Ns: Sequence[int] | np.ndarray, *, weighting: str = "task"
) -> float:
    r"""First-order ``E ||A_hat - A*||_F^2`` of LoRA-ML on data with unequal sample sizes N_t.

    Setting: as :func:`predicted_retraining_error` (symmetric rank-k PSD perturbations of full
    column rank, ``x ~ N(0, I)``, first order in the noise, ``N_t >> d``, retraining at the
    global minimum near the truth), but task t has its own ``N_t`` samples and the objective is
    ``sum_t w_t f_t`` with ``f_t = 1/(2N_t) ||Y_t - (A + U_t U_t^T) X_t||_F^2``:
    ``weighting="task"`` (``w_t = 1``, the toolkit's :class:`~loraml.theory.objectives.Quadratics`
    objective: per-task means, every task counts the same) or ``"sample"`` (``w_t`` proportional to
    ``N_t``: the pooled sum of squared errors, i.e. Gaussian maximum likelihood).

    Derivation (the module docstring's, weighted). With ``S_t ~ I`` the linearised problem is
    ``min sum_t w_t ||a + p_t - Delta_t||_F^2`` over ``a`` and ``p_t`` in the tangent space
    ``T_t``; the best ``p_t`` is ``Pi_t (Delta_t - a)`` and stationarity in ``a`` gives
    ``H_w a = sum_t w_t (I - Pi_t) Delta_t`` with ``H_w = sum_t w_t (I - Pi_t)``. The ``Delta_t``
    are independent with covariance ``(s^2 / N_t) I_{d^2}`` (first order), so::

        E ||A_hat - A*||_F^2 = s^2 sum_t (w_t^2 / N_t) tr(H_w^{-1} (I - Pi_t) H_w^{-1}).

    Equal ``N_t = N``, ``w_t = 1``: ``(s^2 / N) tr(H^{-1})`` (:func:`predicted_retraining_error`).
    ``w_t = N_t``: ``(I - Pi_t)`` is a projector, the sum collapses to
    ``s^2 tr((sum_t N_t (I - Pi_t))^{-1})``; these are the inverse-variance weights, so by
    Gauss-Markov (``Delta_t = a + p_t + noise``, nuisance ``p_t in T_t``) it is the smallest
    first-order error of any weighting: ``"sample" <= "task"``, equal when all ``N_t`` are.

    Parameters
    ----------
    U_star : ndarray, shape (T, d, k)
        The retraining tasks' factors.
    noise_std : float
        Noise standard deviation ``s``.
    Ns : sequence of int, length T
        Samples of each task.
    weighting : {"task", "sample"}
        The objective's task weights ``w_t``: 1, or proportional to ``N_t``.

    Returns
    -------
    float
        The prediction; ``inf`` when ``H_w`` is singular (``A*`` not identifiable, e.g. T <= 2).

    Raises
    ------
    ValueError
        If ``Ns`` does not hold T positive sizes or ``weighting`` is not "task" or "sample".

    Examples
    --------
    >>> import numpy as np
    >>> U = np.random.default_rng(0).standard_normal((3, 4, 1))
    >>> equal = predicted_retraining_error_unequal(U, 0.1, [500, 500, 500])
    >>> bool(np.isclose(equal, predicted_retraining_error(U, 0.1, 500)))
    True
    >>> task = predicted_retraining_error_unequal(U, 0.1, [100, 300, 1000])
    >>> sample = predicted_retraining_error_unequal(U, 0.1, [100, 300, 1000], weighting="sample")
    >>> bool(sample < task)
    True
    """
    T, d, _ = U_star.shape
    N = np.asarray(Ns, dtype=float)
    if N.shape != (T,) or np.any(N <= 0):
        raise ValueError(f"Ns must hold {T} positive sample sizes (one per task), got {Ns!r}")
    if weighting not in ("task", "sample"):
        raise ValueError(f"weighting must be 'task' or 'sample', got {weighting!r}")
    w = np.ones(T) if weighting == "task" else N / N.mean()
    comps = np.stack([np.eye(d * d) - tangent_projector(U) for U in U_star])
    H = np.tensordot(w, comps, axes=1)
    lam, Q = np.linalg.eigh(0.5 * (H + H.T))
    if lam.min() <= 1e-10 * w.sum():
        return float("inf")
    Hinv = (Q / lam) @ Q.T
    return float(
        noise_std**2
        * sum(wt**2 / n * np.sum((Hinv @ C) * Hinv) for wt, n, C in zip(w, N, comps, strict=True))
    )

"""Fine-tuning after retraining: excess risk from n samples, its predicted rate, and SR's floor.

After retraining gives a base ``A``, the unseen task ``A_{T+1}*`` is fitted with a rank-r LoRA
adapter from n noisy samples (reduced-rank regression, :func:`loraml.theory.finetune_closed_form`).
Two quantities describe how well that works:

- the **variance** of the fit: from the LoRA-ML base (``A_hat = A*``, residual of rank k) the excess
  risk ``1/2 ||A + U V^T - A_{T+1}*||_F^2`` is about ``1/2 s^2 k (2d - k) / n`` (v2's adaptation
  rate O(kd/n), arXiv 2410.22264 v2; the constant is derived below, checked by ``loraml verify``);
- the **bias** SR leaves: ``1/2 sum_{i>r} sigma_i^2(A_{T+1}* - A_SR)`` (Corollary 1), which no
  amount of fine-tuning data removes for ``r < k(T+1)``.
  :func:`sr_floor_prediction` is our derived (not the paper's) prediction of its size against T,
  :func:`sr_floor_upper_bound` the expectation of an upper bound on it.

Convention: ``noise_std`` is a standard deviation; risks are population excess risks (the noise
constant ``d s^2 / 2`` is dropped, as in the paper).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from loraml.theory.family import sample_task_data
from loraml.theory.finetune import finetune_closed_form
from loraml.theory.objectives import Quadratics, excess_loss
from loraml.theory.reprs import compact_repr
from loraml.theory.retraining import sr_closed_form
from loraml.theory.rng import RNGLike, as_generator


def finetune_excess_risk(
    A_base: np.ndarray,
    target: np.ndarray,
    r: int,
    n: int,
    noise_std: float,
    rng: RNGLike,
    *,
    reps: int = 1,
) -> np.ndarray:
    r"""Excess population risk of finite-sample rank-r fine-tuning, one value per repetition.

    For each repetition: draw n fresh samples of the task (``x ~ N(0, I)``,
    ``y = target x + eps``, ``eps ~ N(0, noise_std^2 I)``), fit the exact rank-r adapter
    ``U V^T = argmin 1/(2n) ||Y - (A_base + U V^T) X||_F^2`` (reduced-rank regression,
    :func:`loraml.theory.finetune_closed_form`), and return ``1/2 ||A_base + U V^T - target||_F^2``.

    Parameters
    ----------
    A_base : ndarray, shape (d, d)
        Frozen retrained base.
    target : ndarray, shape (d, d)
        The task's ground truth ``A_{T+1}*``.
    r : int
        Adapter rank, ``0 <= r <= d``.
    n : int
        Fine-tuning samples per repetition.
    noise_std : float
        Noise standard deviation ``s``.
    rng : int, numpy.random.Generator or None
    reps : int
        Independent repetitions (fresh samples each).

    Returns
    -------
    ndarray, shape (reps,)

    Examples
    --------
    From the true base the only error is the fit's variance, about ``1/2 s^2 k(2d - k)/n``:

    >>> import numpy as np
    >>> import loraml.theory as th
    >>> from loraml.theory import adaptation
    >>> rng = np.random.default_rng(0)
    >>> fam = th.draw_family(8, 3, 1, rng)
    >>> risk = adaptation.finetune_excess_risk(fam.A_star, fam.test_targets()[0], 1, 400, 0.1, rng,
    ...                                        reps=20)
    >>> risk.shape
    (20,)
    >>> bool(0.5 < risk.mean() / adaptation.predicted_excess_risk(8, 1, 400, 0.1) < 2)
    True
    """
    rng = as_generator(rng)
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    out = np.empty(reps)
    for i in range(reps):
        X, Y = sample_task_data(target, n, noise_std, rng)
        ft = finetune_closed_form(Quadratics.from_data(X, Y), A_base, r)
        out[i] = excess_loss(A_base + ft.U @ ft.V.T, target)
    return out


def predicted_excess_risk(
    d: int, k: int, n: int, noise_std: float, *, finite_n: bool = False
) -> float:
    r"""Excess risk of rank-k least squares: ``1/2 s^2 k (2d - k) / n``, or its finite-n value.

    Setting: the fine-tuning residual ``B* = A_{T+1}* - A`` has rank exactly k (an exact base, e.g.
    LoRA-ML's ``A_hat = A*`` for T >= 3, Theorem 3 of arXiv 2410.22264 v1), it is fitted by
    rank-k reduced-rank regression from n samples ``x ~ N(0, I_d)``, ``eps ~ N(0, s^2 I_d)``, and
    the signal is strong (high SNR: ``sigma_k(B*) >> s sqrt(d / n)``), so the estimate moves to
    first order in the noise. v2 of the paper proves the rate O(kd/n); the constants are derived
    here.

    Derivation (first order in the noise). Write ``B* = U S V^T`` (U, V: d x k, orthonormal),
    ``W = X X^T`` and ``Delta = E X^T W^{-1}`` (least-squares error). Reduced-rank regression
    minimises ``||(B_ls - B) X||_F^2``, so its first-order error is the projection of ``Delta``
    onto the tangent space ``{U a^T + b V^T}`` of the rank-k matrices in the metric
    ``<Z, Z'> = tr(Z W Z'^T)``. That metric acts on rows only, so the parts ``P_U Delta`` (fully in
    the tangent space) and ``P_U^perp Delta`` are orthogonal, and the second projects to
    ``P_U^perp Delta W V (V^T W V)^{-1} V^T = P_U^perp E X^T V (V^T W V)^{-1} V^T``. With
    ``E[W^{-1}] = I / (n - d - 1)`` and ``E[(V^T W V)^{-1}] = I_k / (n - k - 1)`` (inverse
    Wishart)::

        E ||B_hat - B*||_F^2 = s^2 k [d / (n - d - 1) + (d - k) / (n - k - 1)]        (n > d + 1)

    and the excess risk (``x ~ N(0, I)``) is half of it. For n >> d both fractions become
    ``1/n`` and the value ``1/2 s^2 k (2d - k) / n``, ``k(2d - k)`` being the dimension of the
    manifold of rank-k d x d matrices (``finite_n=False``, the default).

    Parameters
    ----------
    d, k, n : int
        Dimension, rank of the residual to fit (and of the adapter), fine-tuning samples.
    noise_std : float
        Noise standard deviation ``s``.
    finite_n : bool
        Return the finite-n value (needs ``n > d + 1``) instead of the asymptotic constant.

    Returns
    -------
    float
        The predicted ``E[1/2 ||A + U V^T - A_{T+1}*||_F^2]``.

    Examples
    --------
    >>> round(predicted_excess_risk(10, 1, 100, 0.1), 7)
    0.00095
    >>> round(predicted_excess_risk(10, 1, 100, 0.1, finite_n=True), 6)
    0.001021
    """
    if not 0 <= k <= d or n < 1:
        raise ValueError(f"need 0 <= k <= d and n >= 1, got d={d}, k={k}, n={n}")
    if not finite_n:
        return 0.5 * noise_std**2 * k * (2 * d - k) / n
    if n <= d + 1:
        raise ValueError(f"finite_n=True needs n > d + 1, got d={d}, n={n}")
    return 0.5 * noise_std**2 * k * (d / (n - d - 1) + (d - k) / (n - k - 1))


def sr_floor(targets: np.ndarray, test_target: np.ndarray, r: int) -> float:
    r"""Corollary 1's irreducible loss of SR: ``1/2 sum_{i>r} sigma_i^2(A_{T+1}* - A_SR)``.

    ``A_SR = mean_t A_t*`` is population standard retraining (Theorem 1); the value is the loss of
    the best rank-r fine-tuning from it with infinite data (Eckart-Young), computed by
    :func:`loraml.theory.finetune_closed_form` on the test task's population loss.

    Parameters
    ----------
    targets : ndarray, shape (T, d, d)
        Retraining ground truths ``A_t*`` (``TaskFamily.targets()``).
    test_target : ndarray, shape (d, d)
        The unseen task ``A_{T+1}*`` (``TaskFamily.test_targets()[0]``).
    r : int
        Fine-tuning rank, ``0 <= r <= d``.

    Returns
    -------
    float

    Examples
    --------
    SR's rank-k floor is positive below rank ``k(T+1)`` and vanishes there (Corollary 1):

    >>> import numpy as np
    >>> import loraml.theory as th
    >>> from loraml.theory.adaptation import sr_floor
    >>> fam = th.draw_family(8, 3, 1, np.random.default_rng(0))
    >>> bool(sr_floor(fam.targets(), fam.test_targets()[0], r=1) > 1)
    True
    >>> bool(sr_floor(fam.targets(), fam.test_targets()[0], r=4) < 1e-20)
    True
    """
    A_sr = sr_closed_form(Quadratics.population(targets))
    return finetune_closed_form(Quadratics.population(test_target), A_sr, r).loss


def sr_floor_upper_bound(d: int, k: int, T: int | np.ndarray) -> np.ndarray:
    r"""Expected upper bound on SR's rank-k floor: ``E[1/2 ||A_SR - A*||_F^2]``.

    Derived here, not a result of arXiv 2410.22264 (its Corollary 1 only says the floor is positive
    for ``r < k(T+1)``). Rank-k fine-tuning can at least remove the test task's own perturbation
    ``P_0 = U_{T+1}* U_{T+1}*^T`` (rank k), so
    ``floor <= 1/2 ||A_{T+1}* - A_SR - P_0||_F^2 = 1/2 ||M||_F^2``, ``M = (1/T) sum_t P_t``,
    ``P_t = U_t* U_t*^T``. For Gaussian ``U_t*`` (Wishart moments
    ``E ||P_t||_F^2 = d k (d + k + 1)``, ``E tr(P_s P_t) = d k^2`` for s != t)::

        E[1/2 ||A_SR - A*||_F^2] = (d k / 2) ((d + k + 1) / T + k (1 - 1/T))

    It is an upper bound, not a prediction of the floor: it tends to ``d k^2 / 2`` as T grows, the
    floor to ``(d - k) k^2 / 2`` (:func:`sr_floor_prediction`).

    Parameters
    ----------
    d, k : int
        Dimension and rank of the perturbations ``U_t* U_t*^T``.
    T : int or ndarray of int
        Number of retraining tasks.

    Returns
    -------
    ndarray, shape of ``T``

    Examples
    --------
    >>> float(sr_floor_upper_bound(20, 1, 1))
    220.0
    """
    T = np.asarray(T, dtype=float)
    return 0.5 * d * k * ((d + k + 1) / T + k * (1 - 1 / T))


def sr_floor_prediction(d: int, k: int, T: int | np.ndarray) -> np.ndarray:
    r"""Predicted SR rank-k floor against T: ``((d - k) k / 2) ((d + 1) / T + k (1 - 1/T))``.

    Derived here, not a result of arXiv 2410.22264 (its Corollary 1 only says the floor is positive
    for ``r < k(T+1)``); measured against :func:`sr_floor` on random Gaussian families
    (:func:`loraml.theory.draw_family`) by ``tests/test_adaptation.py`` and the ``sr-floor-vs-T``
    figure (:mod:`loraml.figures.ours`).

    Derivation. The test residual is ``R = A_{T+1}* - A_SR = P_0 - M`` with ``P_0 = U_0 U_0^T``
    (test task, rank k), ``M = (1/T) sum_t P_t`` and the floor is ``1/2 sum_{i>k} sigma_i^2(R)``
    (Eckart-Young). Let Q project onto range(U_0), ``Q' = I - Q``. In the basis (Q, Q') ``R`` has
    blocks ``L = Q P_0 Q - Q M Q`` (k x k, eigenvalues of order d), ``-Q' M Q`` and
    ``D = -Q' M Q'``. When ``L`` dominates, R's k largest singular values belong to ``L`` and the
    other ``d - k`` eigenvalues are those of the Schur complement
    ``D - (Q' M Q) L^{-1} (Q M Q')``; to leading order (dropping the coupling term, quadratic in
    ``Q' M Q`` and divided by ``L``)::

        floor ~ 1/2 ||Q' M Q'||_F^2.

    ``Q'`` is independent of ``M`` and ``Q' U_t*`` is a Gaussian (d - k) x k matrix, so
    ``Q' P_t Q'`` is Wishart in dimension d - k: ``E ||Q' P_t Q'||_F^2 = (d - k) k (d + 1)`` and
    ``E tr(Q' P_s Q' P_t) = (d - k) k^2`` for s != t, which gives the formula. Assumptions:
    Gaussian ``U_t*`` with independent entries (as :func:`loraml.theory.draw_family`); T large
    enough that ``||M||`` is small against ``P_0``'s eigenvalues: the dropped term is of order
    ``k^3 / T`` against a floor of order ``(d - k) k^2 / 2``. At T = 1, 2 ``M`` is as large as
    ``P_0``, the best rank-k adapter may fit ``M`` instead, and the prediction is too high
    (``sr-floor-vs-T`` quick data, d = 20, k = 1: 1.41 times the measured mean at T = 1,
    0.97-1.00 for T >= 5).
    As T grows it tends to ``(d - k) k^2 / 2`` (the mean perturbation ``k I`` is full-rank, so
    SR's floor does not vanish).

    Parameters
    ----------
    d, k : int
        Dimension and rank of the perturbations ``U_t* U_t*^T``.
    T : int or ndarray of int
        Number of retraining tasks.

    Returns
    -------
    ndarray, shape of ``T``
        The predicted expected rank-k floor.

    Examples
    --------
    >>> float(sr_floor_prediction(20, 1, 1))
    199.5
    >>> round(float(sr_floor_prediction(20, 1, 10**9)), 6)  # (d - k) k^2 / 2 as T grows
    9.5
    """
    T = np.asarray(T, dtype=float)
    return 0.5 * (d - k) * k * ((d + 1) / T + k * (1 - 1 / T))


@dataclass(frozen=True)
class PowerLaw:
    """Least-squares fit ``value ~ constant * n^slope`` in log-log coordinates.

    Attributes
    ----------
    slope : float
        Exponent (``-1`` for a ``1/n`` rate).
    constant : float
        Prefactor.
    constant_at_minus_one : float
        Prefactor with the exponent fixed at ``-1``: ``exp(mean(log(value * n)))``.
    """

    slope: float
    constant: float
    constant_at_minus_one: float

    def __repr__(self) -> str:
        return compact_repr(self)


def fit_power_law(ns: ArrayLike, values: ArrayLike) -> PowerLaw:
    """Fit ``values ~ constant * ns^slope`` by least squares on ``log values``.

    Parameters
    ----------
    ns, values : array_like, shape (m,)
        Positive sample sizes (at least two distinct) and positive measured values.

    Returns
    -------
    PowerLaw
        The fitted exponent, prefactor, and prefactor with the exponent fixed at -1.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory.adaptation import fit_power_law
    >>> ns = np.array([100, 200, 400, 800])
    >>> fit = fit_power_law(ns, 3.0 / ns)
    >>> round(fit.slope, 6), round(fit.constant, 6), round(fit.constant_at_minus_one, 6)
    (-1.0, 3.0, 3.0)
    """
    ns, values = np.asarray(ns, dtype=float), np.asarray(values, dtype=float)
    if ns.shape != values.shape or ns.size < 2 or np.unique(ns).size < 2:
        raise ValueError("need at least two distinct sample sizes with one value each")
    if np.any(ns <= 0) or np.any(values <= 0):
        raise ValueError("sample sizes and values must be positive for a log-log fit")
    slope, intercept = np.polyfit(np.log(ns), np.log(values), 1)
    c1 = float(np.exp(np.mean(np.log(values * ns))))
    return PowerLaw(float(slope), float(np.exp(intercept)), c1)

"""Fine-tuning after retraining: excess risk from n samples, its predicted rate, and SR's floor.

After retraining gives a base ``A``, the unseen task ``A_{T+1}*`` is fitted with a rank-r LoRA
adapter from n noisy samples (reduced-rank regression, :func:`loraml.theory.finetune_closed_form`).
Two quantities describe how well that works:

- the **variance** of the fit: from the LoRA-ML base (``A_hat = A*``, residual of rank k) the excess
  risk ``1/2 ||A + U V^T - A_{T+1}*||_F^2`` is about ``1/2 s^2 k (2d - k) / n`` (v2's adaptation
  rate O(kd/n); the constant is derived, PAPER.md section 2, and checked by ``loraml verify``);
- the **bias** SR leaves: ``1/2 sum_{i>r} sigma_i^2(A_{T+1}* - A_SR)`` (Corollary 1), which no
  amount of fine-tuning data removes for ``r < k(T+1)``.
  :func:`sr_floor_prediction` is our derived (not the paper's) prediction of its size against T.

Convention: ``noise_std`` is a standard deviation; risks are population excess risks (the noise
constant ``d s^2 / 2`` is dropped, as in the paper).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loraml.theory.family import sample_task_data
from loraml.theory.finetune import finetune_closed_form
from loraml.theory.objectives import Quadratics, excess_loss
from loraml.theory.retraining import sr_closed_form


def finetune_excess_risk(
    A_base: np.ndarray,
    target: np.ndarray,
    r: int,
    n: int,
    noise_std: float,
    rng: np.random.Generator,
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
    rng : numpy.random.Generator
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
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    out = np.empty(reps)
    for i in range(reps):
        X, Y = sample_task_data(target, n, noise_std, rng)
        ft = finetune_closed_form(Quadratics.from_data(X, Y), A_base, r)
        out[i] = excess_loss(A_base + ft.U @ ft.V.T, target)
    return out


def predicted_excess_risk(d: int, k: int, n: int, noise_std: float) -> float:
    r"""Asymptotic excess risk of rank-k least squares: ``1/2 s^2 k (2d - k) / n``.

    ``k(2d - k)`` is the dimension of the manifold of d x d matrices of rank k; for n >> d the
    estimation error of reduced-rank regression with isotropic inputs concentrates on its tangent
    space (PAPER.md section 2, v2 adaptation rate, derived constant).

    Parameters
    ----------
    d, k, n : int
        Dimension, rank of the residual to fit, fine-tuning samples.
    noise_std : float
        Noise standard deviation ``s``.

    Returns
    -------
    float
        The predicted excess risk ``1/2 s^2 k (2d - k) / n``.

    Examples
    --------
    >>> from loraml.theory.adaptation import predicted_excess_risk
    >>> round(predicted_excess_risk(d=10, k=1, n=100, noise_std=0.1), 10)  # 1/2 0.01 19 / 100
    0.00095
    """
    if not 0 <= k <= d or n < 1:
        raise ValueError(f"need 0 <= k <= d and n >= 1, got d={d}, k={k}, n={n}")
    return 0.5 * noise_std**2 * k * (2 * d - k) / n


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


def sr_floor_prediction(d: int, k: int, T: int | np.ndarray) -> np.ndarray:
    r"""Predicted SR floor against T: the expected upper bound ``1/2 ||A_SR - A*||_F^2``.

    Derived here, not a result of the paper (Corollary 1 only says the floor is positive for
    ``r < k(T+1)``); the ``sr-floor-vs-T`` figure (:mod:`loraml.figures.ours`) checks it against
    :func:`sr_floor` on random Gaussian families (:func:`loraml.theory.draw_family`).

    Rank-k fine-tuning can at least remove the test task's own perturbation
    ``U_{T+1}* U_{T+1}*^T`` (rank k), so
    ``floor <= 1/2 ||A_{T+1}* - A_SR - U_{T+1}* U_{T+1}*^T||_F^2 = 1/2 ||(1/T) sum_t P_t||_F^2``
    with ``P_t = U_t* U_t*^T``. For Gaussian ``U_t*`` (Wishart moments
    ``E ||P_t||_F^2 = d k (d + k + 1)``, ``E tr(P_s P_t) = d k^2`` for s != t)::

        E[1/2 ||A_SR - A*||_F^2] = (d k / 2) ((d + k + 1) / T + k (1 - 1/T))

    It decreases like 1/T towards ``d k^2 / 2`` (the mean perturbation ``k I`` is full-rank, so
    SR's floor does not vanish as T grows). Weyl's inequality gives the matching lower bound
    ``floor >= 1/2 sum_{i>2k} sigma_i^2(A_SR - A*)``.

    Parameters
    ----------
    d, k : int
        Dimension and rank of the perturbations ``U_t* U_t*^T``.
    T : int or ndarray of int
        Number of retraining tasks.

    Returns
    -------
    ndarray, shape of ``T``
        The expected value of ``1/2 ||A_SR - A*||_F^2``, an upper bound on the rank-k floor.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory.adaptation import sr_floor_prediction
    >>> pred = sr_floor_prediction(20, 1, np.array([1, 2, 5, 100]))
    >>> pred.shape, bool(np.all(np.diff(pred) < 0))  # falls with T
    ((4,), True)
    """
    T = np.asarray(T, dtype=float)
    return 0.5 * d * k * ((d + k + 1) / T + k * (1 - 1 / T))


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


def fit_power_law(ns: np.ndarray, values: np.ndarray) -> PowerLaw:
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

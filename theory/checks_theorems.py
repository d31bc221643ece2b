"""The paper's theorems as checks: Theorem 1, Corollary 1 and Theorems 2, 3 and 4.

arXiv 2410.22264 v1. Each ``check_*`` function draws (or takes) task families, checks the
statement on each and returns a :class:`~loraml.theory.check_record.CheckResult` with its worst
margin in decades (see :mod:`loraml.theory.check_record`). The thresholds, relative to each
problem's scale, are stated in each check's docstring. Reached through :mod:`loraml.theory.checks`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from loraml.theory.adaptation import (
    sr_floor,
)
from loraml.theory.check_record import (
    _SQRT_U,
    _TINY,
    _U,
    CheckResult,
    _desc,
    _families,
    _largest_target,
    _perturbations,
    _rounding,
    _Tally,
    above,
    below,
    draw_generic_family,
)
from loraml.theory.family import TaskFamily
from loraml.theory.finetune import finetune_closed_form
from loraml.theory.landscape import (
    hessian_extreme_eigenvalues,
    perturbed_gd,
    polish,
    random_start,
    search_stationary_points,
    t2_global_minimum,
    zero_adapter_point,
)
from loraml.theory.metrics import adapter_errors, base_error
from loraml.theory.objectives import Quadratics, lora_ml_grad_norm, lora_ml_loss
from loraml.theory.retraining import sr_closed_form
from loraml.theory.rng import RNGLike, as_generator


# ---------------------------------------------------------------------------------------------
# 1. Theorem 1
# ---------------------------------------------------------------------------------------------
def check_theorem1(
    rng: RNGLike,
    *,
    instances: int = 20,
    families: Sequence[TaskFamily] | None = None,
    rank_rtol: float | None = 1e-8,
) -> CheckResult:
    r"""Theorem 1: population SR is ``A* + mean_t U_t* U_t*^T``, and ``rank(A_SR - A*) = kT``.

    Under genericity also ``rank(A_{T+1}* - A_SR) = k(T+1)`` (the test residual; when the family
    has a test task). Claims checked per instance: ``||A_SR - A* - mean_t P_t||_F <= 1e-10
    ||A_SR||_F``; ``sigma_{kT} >= rank_rtol sigma_1`` and ``sigma_{kT+1} <= rank_rtol sigma_1``
    for ``A_SR - A*`` and likewise with ``k(T+1)`` for the test residual. ``rank_rtol=None`` (a
    user's instance) sets the rank threshold from the rounding floor instead (scale-free; see
    :meth:`_Tally.rank`).
    Random instances: T in 1..5, k in 1..3, ``d = k(T+1) + 0..6``.

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
        Seed, or the source of every random draw.
    instances : int
        Random families drawn when ``families`` is None.
    families : sequence of TaskFamily, optional
        Check these families instead of random ones.
    rank_rtol : float
        Relative threshold of the numerical ranks.

    Returns
    -------
    CheckResult
        The statement, instances, ``held`` (``None`` for a measurement), worst margin in decades,
        seconds and the measured ``numbers``.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import checks
    >>> rec = checks.check_theorem1(np.random.default_rng(0), instances=2)
    >>> rec.key, rec.held, rec.instances, rec.worst_margin > 1
    ('theorem1', True, 2, True)
    """
    rng = as_generator(rng)
    start = time.perf_counter()
    tally = _Tally()
    for i, fam in enumerate(_families(rng, families, instances, (1, 5), (1, 3), 6)):
        tally.instances += 1
        A_sr = sr_closed_form(fam.population())
        expected = fam.A_star + _perturbations(fam.U_star).mean(0)
        err = np.linalg.norm(A_sr - expected) / max(np.linalg.norm(A_sr), _TINY)
        floor = (err, _rounding(fam, float(np.linalg.norm(A_sr))))
        tally.claim(below(err, 1e-10), f"{_desc(fam, i)}: SR formula error {err:.2e}", floor)
        pairs = [(A_sr - fam.A_star, fam.k * fam.T, "A_SR - A*")]
        if fam.U_test.shape[0] > 0:
            pairs.append((fam.test_targets()[0] - A_sr, fam.k * (fam.T + 1), "A_test* - A_SR"))
        for M, rank, name in pairs:
            s = np.linalg.svd(M, compute_uv=False)
            noise = _rounding(fam, s[0])
            tally.rank(s, rank, noise, f"{_desc(fam, i)}: rank({name})", rank_rtol)
    return tally.result(
        "theorem1", "Theorem 1: A_SR = A* + mean U_t*U_t*^T, rank(A_SR - A*) = kT", start
    )


# ---------------------------------------------------------------------------------------------
# 2. Corollary 1
# ---------------------------------------------------------------------------------------------
def check_corollary1(
    rng: RNGLike,
    *,
    instances: int = 20,
    families: Sequence[TaskFamily] | None = None,
    T_values: Sequence[int] = (1, 2, 3, 5, 8, 11),
    d_for_T: int = 24,
    k_for_T: int = 2,
    reps_for_T: int | None = None,
    zero_rtol: float | None = 1e-24,
) -> CheckResult:
    r"""Corollary 1: rank-r fine-tuning from SR leaves ``1/2 sum_{i>r} sigma_i^2(A_{T+1}* - A_SR)``.

    Claims per instance (relative to ``L0 = 1/2 ||A_{T+1}* - A_SR||_F^2``): the closed-form
    fine-tuning loss (:func:`loraml.theory.adaptation.sr_floor`) equals the Eckart-Young tail within
    ``1e-10 L0`` for every r; it is ``>= 1e-18 L0`` at ``r = k(T+1) - 1`` (hence for every
    ``r < k(T+1)``, the tail being monotone), and ``<= 1e-24 L0`` at ``r = k(T+1)`` (double
    precision leaves ~1e-30 there; near-degenerate instances have ~1e-14 at ``k(T+1) - 1``).
    ``zero_rtol=None`` (a user's instance) replaces both fixed thresholds by ``(100 n)^2`` with
    ``n`` the rounding floor of ``sigma_i / sigma_1`` of the residual (:meth:`_Tally.rank`), the
    floors being squared singular values (scale-free; large d raises the floor).

    Measurement (the value, not only the rank): the rank-k floor against T for d=``d_for_T``,
    k=``k_for_T``, divided by the loss of not adapting from the truth, ``1/2 ||U_{T+1}*
    U_{T+1}*^T||_F^2``; reported as ``numbers["floor_rank_k_by_T"]`` (mean, min, max over
    ``reps_for_T`` families; 0 skips the measurement).

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
        Seed, or the source of every random draw.
    instances : int
        Random families drawn when ``families`` is None.
    families : sequence of TaskFamily, optional
        Check these families (each with a test task) instead of random ones.
    T_values : sequence of int
        Numbers of tasks of the floor-against-T measurement.
    d_for_T, k_for_T : int
        Dimension and rank of that measurement.
    reps_for_T : int, optional
        Families per T (default: ``max(3, instances // 2)``); 0 skips the measurement.

    Returns
    -------
    CheckResult
        The statement, instances, ``held`` (``None`` for a measurement), worst margin in decades,
        seconds and the measured ``numbers``.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import checks
    >>> rec = checks.check_corollary1(np.random.default_rng(0), instances=2, reps_for_T=0)
    >>> rec.key, rec.held
    ('corollary1', True)
    """
    rng = as_generator(rng)
    start = time.perf_counter()
    tally = _Tally()
    for i, fam in enumerate(_families(rng, families, instances, (1, 5), (1, 3), 6)):
        if fam.U_test.shape[0] == 0:
            continue
        tally.instances += 1
        test = fam.test_targets()[0]
        R = test - sr_closed_form(fam.population())
        s2 = np.linalg.svd(R, compute_uv=False) ** 2
        L0 = 0.5 * float(s2.sum())
        K = fam.k * (fam.T + 1)
        r_max = min(K, len(s2))
        floors = np.array([sr_floor(fam.targets(), test, r) for r in range(r_max + 1)])
        tails = np.array([0.5 * s2[r:].sum() for r in range(r_max + 1)])
        err = float(np.max(np.abs(floors - tails))) / L0
        noise = _rounding(fam, float(np.sqrt(s2[0])))
        floor = (err, noise * s2[0] / L0)
        tally.claim(
            below(err, 1e-10), f"{_desc(fam, i)}: floor != Eckart-Young tail ({err:.1e})", floor
        )
        if K > len(s2):  # k(T+1) > d: no rank-k(T+1) residual to speak of
            continue
        if zero_rtol is None:  # floors / L0 ~ (sigma_i / sigma_1)^2 up to L0 / sigma_1^2
            tally.rank(np.sqrt(s2), K, noise, f"{_desc(fam, i)}: rank of the residual", None)
            continue
        tally.claim(above(floors[K - 1] / L0, 1e-18), f"{_desc(fam, i)}: floor 0 at r=k(T+1)-1")
        tally.claim(below(floors[K] / L0, zero_rtol), f"{_desc(fam, i)}: floor > 0 at r=k(T+1)")

    reps = reps_for_T if reps_for_T is not None else max(3, instances // 2)
    by_T = {}
    for T in T_values if reps > 0 else ():
        if k_for_T * (T + 1) > d_for_T:
            continue
        vals = []
        for _ in range(reps):
            fam = draw_generic_family(rng, d_for_T, T, k_for_T)
            P_test = _perturbations(fam.U_test)[0]
            floor_value = sr_floor(fam.targets(), fam.test_targets()[0], k_for_T)
            vals.append(floor_value / (0.5 * float(np.sum(P_test**2))))
        by_T[T] = {"mean": float(np.mean(vals)), "min": min(vals), "max": max(vals)}
    numbers = {
        "floor_rank_k_by_T": by_T,
        "floor_rank_k_by_T_setting": {"d": d_for_T, "k": k_for_T, "reps": reps},
        "floor_rank_k_by_T_unit": "SR's rank-k floor / (1/2 ||U_test U_test^T||_F^2)",
    }
    return tally.result(
        "corollary1",
        "Corollary 1: SR + rank-r fine-tuning leaves 1/2 sum_{i>r} sigma_i^2 > 0 for r < k(T+1)",
        start,
        numbers,
    )


# ---------------------------------------------------------------------------------------------
# 3. Theorem 2
# ---------------------------------------------------------------------------------------------
def _spectral_ball(rng: np.random.Generator, k: int, radius: float) -> np.ndarray:
    C = rng.standard_normal((k, k))
    return radius * C / max(float(np.linalg.norm(C, 2)), _TINY)


def check_theorem2(
    rng: RNGLike,
    *,
    instances: int = 10,
    starts: int = 5,
    families: Sequence[TaskFamily] | None = None,
    rank_rtol: float = 1e-6,
) -> CheckResult:
    r"""Theorem 2: every zero-loss LoRA-ML minimiser has ``rank(A_hat - A*) <= 2k``.

    Per instance (T in 2..3): zero-loss points found by :func:`loraml.theory.solve_lora_ml` from
    ``starts`` random starts satisfy ``sigma_{2k+1}(A_hat - A*) <= rank_rtol sigma_1(A*)``, and
    rank-3k fine-tuning from them reaches ``<= 1e-16 L0`` on the test task.
    For T = 2 the explicit continuous family (:func:`loraml.theory.landscape.t2_global_minimum`) is
    built at three random ``C`` with ``||C||_2 in {0.3, 0.6, 0.9}``: each has loss
    ``<= 1e-20 F(0, 0)`` and ``rank(A_hat - A*) = 2k`` exactly (``sigma_{2k} >= 1e-6
    sigma_1(A*)``, ``sigma_{2k+1} <= 1e-10 sigma_1(A*)``); the members are distinct
    (pairwise ``||A(C) - A(C')||_F >= 1e-3 ||A*||_F``) and the map is continuous
    (``||A(C + hE) - A(C)|| / h`` agrees at ``h = 1e-5`` and ``1e-6`` within 1 %).

    With ``2k >= d`` the rank bound holds for every matrix and is not claimed. A claim about a
    solver's minimiser that misses its threshold where the solver's floor (``sqrt(u) S``,
    relative to the claim's scale, ``S`` the largest target) lies within a decade of it is
    undecided (tasks of very different scales).

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
        Seed, or the source of every random draw.
    instances : int
        Random families drawn when ``families`` is None.
    starts : int
        Random starts of the solver per instance.
    families : sequence of TaskFamily, optional
        Check these families instead of random ones.
    rank_rtol : float
        Threshold of ``sigma_{2k+1}(A_hat - A*)`` relative to ``sigma_1(A*)``.

    Returns
    -------
    CheckResult
        The statement, instances, ``held`` (``None`` for a measurement), worst margin in decades,
        seconds and the measured ``numbers``.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import checks
    >>> rec = checks.check_theorem2(np.random.default_rng(0), instances=1, starts=2)
    >>> rec.key, rec.held
    ('theorem2', True)
    """
    rng = as_generator(rng)
    start = time.perf_counter()
    tally = _Tally()
    rank2k: dict[str, list[bool]] = {"T=2": [], "T=3": []}
    for i, fam in enumerate(_families(rng, families, instances, (2, 3), (1, 2), 4)):
        tally.instances += 1
        q, k, d = fam.population(), fam.k, fam.d
        f0 = lora_ml_loss(q, np.zeros((d, d)), np.zeros_like(fam.U_star))
        scale = max(float(np.linalg.norm(fam.A_star, 2)), _TINY)
        desc = _desc(fam, i)
        solver_floor = _SQRT_U * _largest_target(fam)  # a minimiser's accuracy (absolute)
        points = search_stationary_points(q, k, rng, starts=starts, global_value=0.0)
        if 2 * k < d and not any(p.kind == "global" for p in points):
            tally.undecided.append(
                f"{desc}: no start reached zero loss at every task's own scale ({starts} starts)"
            )
        for p in points:
            if p.kind != "global" or 2 * k >= d:
                continue
            s = np.linalg.svd(p.A - fam.A_star, compute_uv=False)
            floor = (s[2 * k] / scale, solver_floor / scale)
            tally.claim(below(s[2 * k] / scale, rank_rtol), f"{desc}: rank(A_hat - A*) > 2k", floor)
            rank2k.setdefault(f"T={min(fam.T, 3)}", []).append(
                bool(s[2 * k - 1] / scale > rank_rtol)
            )
            if fam.U_test.shape[0] and 3 * k < d:
                test = fam.test_targets()[0]
                L0 = 0.5 * float(np.sum((test - p.A) ** 2))
                ft = finetune_closed_form(Quadratics.population(test), p.A, min(3 * k, d))
                floor = (ft.loss / L0, 0.5 * d * solver_floor**2 / L0)
                tally.claim(
                    below(ft.loss / L0, 1e-16), f"{desc}: rank-3k fine-tuning not exact", floor
                )
        if fam.T != 2 or 2 * k > d:
            continue
        members = []
        for radius in (0.3, 0.6, 0.9):
            C = _spectral_ball(rng, k, radius)
            A_hat, U_hat = t2_global_minimum(fam.A_star, fam.U_star, C)
            loss = lora_ml_loss(q, A_hat, U_hat)
            floor = (loss / f0, (d * _U * _largest_target(fam)) ** 2 / f0)
            tally.claim(
                below(loss / f0, 1e-20), f"{desc}: family member has loss {loss:.1e}", floor
            )
            s = np.linalg.svd(A_hat - fam.A_star, compute_uv=False)
            tally.claim(above(s[2 * k - 1] / scale, 1e-6), f"{desc}: family rank < 2k")
            if 2 * k < d:
                floor = (s[2 * k] / scale, _rounding(fam, scale))
                tally.claim(below(s[2 * k] / scale, 1e-10), f"{desc}: family rank > 2k", floor)
            members.append(A_hat)
            E = _spectral_ball(rng, k, 1.0)
            slopes = [
                np.linalg.norm(t2_global_minimum(fam.A_star, fam.U_star, C + h * E)[0] - A_hat) / h
                for h in (1e-5, 1e-6)
            ]
            rel = abs(slopes[0] - slopes[1]) / max(slopes[0], _TINY)
            tally.claim(below(rel, 1e-2), f"{desc}: family not continuous in C")
        gaps = [
            np.linalg.norm(members[a] - members[b]) / np.linalg.norm(fam.A_star)
            for a in range(len(members))
            for b in range(a)
        ]
        tally.claim(above(min(gaps), 1e-3), f"{desc}: family members coincide")
    numbers = {
        "fraction_of_found_minima_with_rank_2k": {
            key: (float(np.mean(v)) if v else None) for key, v in rank2k.items()
        },
        "found_minima": {key: len(v) for key, v in rank2k.items()},
    }
    return tally.result(
        "theorem2",
        "Theorem 2: zero-loss minimisers have rank(A_hat - A*) <= 2k; T=2 continuous family",
        start,
        numbers,
    )


# ---------------------------------------------------------------------------------------------
# 4 and 6. Theorem 3 and the T >= 3 landscape
# ---------------------------------------------------------------------------------------------
def check_theorem3(
    rng: RNGLike,
    *,
    instances: int = 10,
    starts: int = 5,
    families: Sequence[TaskFamily] | None = None,
    tol: float = 1e-6,
) -> CheckResult:
    r"""Theorem 3: for T >= 3 and generic factors every zero-loss minimiser is the truth.

    Per instance (T in 3..5, k in 1..2, ``d = k(T+1) + 0..4``), every zero-loss point found from
    ``starts`` random starts has ``||A_hat - A*||_F <= tol ||A*||_F``,
    ``||U_hat_t U_hat_t^T - U_t* U_t*^T||_F <= tol ||U_t* U_t*^T||_F``, and rank-k fine-tuning
    from ``A_hat`` reaches ``<= 1e-12 L0`` on the test task. Starts that end elsewhere are

    counted in ``numbers`` (see :func:`check_spurious` for the landscape). A miss within a
    decade of the solver's floor (``sqrt(u) S`` relative to ``||A*||``, to ``||U_t* U_t*^T||`` per
    task; ``S`` the largest target) is undecided: with tasks of very different scales double
    precision cannot resolve the small ones. Likewise a point the search calls global (loss
    small against ``F(0, 0)``, which the largest task dominates) is only judged when it fits every
    task to ``tol`` relative to that task's own perturbation,
    ``||A_hat + U_t U_t^T - A_t*||_F <= tol ||U_t* U_t*^T||_F``; otherwise zero loss is not
    established at the smaller tasks' scale and the point leaves the claim undecided.
    counted in ``numbers`` (see :func:`check_spurious` for the landscape).

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
        Seed, or the source of every random draw.
    instances : int
        Random families drawn when ``families`` is None.
    starts : int
        Random starts of the solver per instance.
    families : sequence of TaskFamily, optional
        Check these families (T >= 3, generic, with a test task) instead of random ones.
    tol : float
        Relative distance to ``A*`` (and of the adapters) that counts as recovered.

    Returns
    -------
    CheckResult
        The statement, instances, ``held`` (``None`` for a measurement), worst margin in decades,
        seconds and the measured ``numbers``.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import checks
    >>> rec = checks.check_theorem3(np.random.default_rng(0), instances=1, starts=2)
    >>> rec.key, rec.held
    ('theorem3', True)
    """
    rng = as_generator(rng)
    start = time.perf_counter()
    tally = _Tally()
    kinds: dict[str, int] = {}
    for i, fam in enumerate(_families(rng, families, instances, (3, 5), (1, 2), 4)):
        tally.instances += 1
        q, k = fam.population(), fam.k
        desc = _desc(fam, i)
        P_norm = np.linalg.norm(_perturbations(fam.U_star), axis=(1, 2))
        solver_floor = _SQRT_U * _largest_target(fam)  # a minimiser's accuracy (absolute)
        A_norm = max(float(np.linalg.norm(fam.A_star)), _TINY)
        points = search_stationary_points(q, k, rng, starts=starts, global_value=0.0)
        if not any(p.kind == "global" for p in points):
            tally.undecided.append(
                f"{desc}: no start reached zero loss at every task's own scale ({starts} starts)"
            )
        for p in points:
            kinds[p.kind] = kinds.get(p.kind, 0) + 1
            if p.kind != "global":
                continue
            fit = np.linalg.norm(p.A + _perturbations(p.U) - fam.targets(), axis=(1, 2))
            worst = float(np.max(fit / np.maximum(P_norm, _TINY)))
            if worst > tol:
                tally.undecided.append(
                    f"{desc}: a point of loss {p.loss:.1e} leaves a residual of {worst:.1e} "
                    "x ||U_t* U_t*^T|| on one task: zero loss not reached at that task's scale"
                )
                continue
            err = base_error(p.A, fam.A_star).relative
            floor = (err, solver_floor / A_norm)
            tally.claim(below(err, tol), f"{desc}: A_hat != A*", floor)
            ads = adapter_errors(p.U, fam.U_star) / np.maximum(P_norm, _TINY)
            for t, ad in enumerate(ads):
                floor = (float(ad), solver_floor / max(P_norm[t], _TINY))
                tally.claim(below(float(ad), tol), f"{desc}: U_hat U_hat^T != U* U*^T", floor)
            if fam.U_test.shape[0] and k < fam.d:
                test = fam.test_targets()[0]
                L0 = 0.5 * float(np.sum((test - p.A) ** 2))
                ft = finetune_closed_form(Quadratics.population(test), p.A, k)
                floor = (ft.loss / L0, 0.5 * fam.d * solver_floor**2 / L0)
                tally.claim(
                    below(ft.loss / L0, 1e-12), f"{desc}: rank-k fine-tuning not exact", floor
                )
    return tally.result(
        "theorem3",
        "Theorem 3: T>=3, generic: zero-loss minimisers have A_hat = A*, U_hat U_hat^T = U* U*^T",
        start,
        {"end_points": kinds, "starts_per_instance": starts},
    )


# ---------------------------------------------------------------------------------------------
# 5. Theorem 4
# ---------------------------------------------------------------------------------------------
def check_theorem4(
    rng: RNGLike,
    *,
    instances: int = 5,
    starts: int = 5,
    families: Sequence[TaskFamily] | None = None,
) -> CheckResult:
    r"""Theorem 4 (T = 2): strict saddles only; perturbed gradient descent reaches zero loss.

    Per instance (T = 2, k in 1..3, ``d = 3k + 0..4``):

    - the zero-adapter point ``U = 0, A = mean A_t*`` is stationary
      (``||grad F|| <= 1e-12 sqrt(F(0, 0))``) and its smallest Hessian eigenvalue (Lanczos on
      Hessian-vector products) is ``< -1e-6 lambda_max`` and equals the closed form
      ``-max(lambda_max(P_1 - P_2), lambda_max(P_2 - P_1))`` within ``1e-6`` relative;
    - every end point of ``starts`` L-BFGS runs from random starts is global
      (``F <= 1e-10 F(0, 0)``) or has negative curvature (``lambda_min < -1e-6 lambda_max``);
      none is a spurious local minimum (unconverged runs are counted, not judged);
    - perturbed gradient descent (run to ``1e-16 F(0, 0)``, at most 20000 steps) from ``starts``
      random starts and from the saddle itself reaches ``F <= 1e-12 F(0, 0)``; near degenerate
      T = 2 minima it converges sublinearly, so a run that stops above that must show no
      substantial negative curvature where it stopped (``lambda_min >= -1e-3 lambda_max``; the
      saddles met have ratios near -1) and be finished by L-BFGS
      (:func:`loraml.theory.landscape.polish`) to ``F <= 1e-12 F(0, 0)``: it ended in the basin of a
      global minimum (counted as
      ``pgd_slow_runs_polished``; the relative distance L-BFGS moved, which can be large along the
      flat family of T = 2 minima, is reported).

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
        Seed, or the source of every random draw.
    instances : int
        Random families drawn when ``families`` is None.
    starts : int
        L-BFGS and perturbed-gradient-descent runs from random starts per instance.
    families : sequence of TaskFamily, optional
        Check these two-task families instead of random ones.

    Returns
    -------
    CheckResult
        The statement, instances, ``held`` (``None`` for a measurement), worst margin in decades,
        seconds and the measured ``numbers``.

    Examples
    --------
    >>> import numpy as np
    >>> import loraml.theory as th
    >>> from loraml.theory import checks
    >>> rng = np.random.default_rng(0)
    >>> rec = checks.check_theorem4(rng, starts=1, families=[th.draw_family(3, 2, 1, rng)])
    >>> rec.key, rec.held
    ('theorem4', True)
    """
    rng = as_generator(rng)
    start = time.perf_counter()
    tally = _Tally()
    steps, kicks, unconverged, slow, distances = [], [], 0, 0, []
    for i, fam in enumerate(_families(rng, families, instances, (2, 2), (1, 3), 4)):
        tally.instances += 1
        q, k, d = fam.population(), fam.k, fam.d
        desc = _desc(fam, i)
        f0 = lora_ml_loss(q, np.zeros((d, d)), np.zeros_like(fam.U_star))
        A0, U0 = zero_adapter_point(q, k)
        gn = lora_ml_grad_norm(q, A0, U0)
        tally.claim(below(gn / np.sqrt(f0), 1e-12), f"{desc}: zero-adapter point not stationary")
        curv = hessian_extreme_eigenvalues(q, A0, U0, method="eigsh")
        P = _perturbations(fam.U_star)
        diff = np.linalg.eigvalsh(P[0] - P[1])
        expected = -max(diff[-1], -diff[0])
        tally.claim(
            above(-curv.min_eigenvalue / curv.max_eigenvalue, 1e-6), f"{desc}: saddle not strict"
        )
        rel = abs(curv.min_eigenvalue - expected) / abs(expected)
        tally.claim(below(rel, 1e-6), f"{desc}: saddle curvature != closed form ({rel:.1e})")
        for p in search_stationary_points(q, k, rng, starts=starts, global_value=0.0):
            unconverged += p.kind == "unconverged"
            if p.kind == "global":
                tally.claim(below(p.loss / f0, 1e-10), f"{desc}: global point, loss {p.loss:.1e}")
            elif p.kind == "saddle":
                tally.claim(above(-p.min_eigenvalue / p.max_eigenvalue, 1e-6), f"{desc}: saddle")
            elif p.kind == "spurious":
                tally.claim(-np.inf, f"{desc}: spurious local minimum, loss {p.loss:.2e}")
        inits = [random_start(q, k, rng) for _ in range(starts)] + [(A0, U0)]
        for init in inits:
            res = perturbed_gd(q, k, rng, init=init, target_loss=1e-16 * f0)
            if res.loss <= 1e-12 * f0:
                tally.claim(below(res.loss / f0, 1e-12), f"{desc}: PGD loss {res.loss:.1e}")
            else:  # slow (sublinear) convergence near a degenerate minimum: where was it going?
                slow += 1
                A_p, U_p, dist = polish(q, k, res.A, res.U)
                loss_p = lora_ml_loss(q, A_p, U_p)
                tally.claim(below(loss_p / f0, 1e-12), f"{desc}: polished to {loss_p:.1e}")
                end = hessian_extreme_eigenvalues(q, res.A, res.U)
                bend = max(-end.min_eigenvalue / end.max_eigenvalue, 0.0)
                tally.claim(below(bend, 1e-3), f"{desc}: PGD stopped near a saddle ({bend:.1e})")
                distances.append(dist)
            steps.append(res.steps)
            kicks.append(res.perturbations)
    numbers = {
        "pgd_steps_median": float(np.median(steps)) if steps else None,
        "pgd_steps_max": int(max(steps)) if steps else None,
        "pgd_kicks_max": int(max(kicks)) if kicks else None,
        "lbfgs_unconverged": unconverged,
        "pgd_slow_runs_polished": slow,
        "pgd_slow_runs_max_distance_to_polished": max(distances) if distances else None,
    }
    return tally.result(
        "theorem4",
        "Theorem 4: T=2 strict saddles (U=0 saddle has negative curvature); PGD reaches zero loss",
        start,
        numbers,
    )

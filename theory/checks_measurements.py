"""The adaptation-rate claim and the measurements of ``loraml verify``.

``check_rate`` checks the paper's (v2) adaptation rate; ``check_spurious`` (the T >= 3 landscape),
``check_retraining`` (finite-sample retraining), ``check_convex`` (convex relaxations),
``check_beyond`` (beyond the assumptions) and ``check_instance_recovery`` (a user's instance) are
measurements: the paper claims nothing about them, so their records carry numbers, not a verdict
(``convex.held`` only says that both relaxations were solved to at least the objective value of
``A*``, which is feasible for both). Reached through :mod:`loraml.theory.checks`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from loraml.theory.adaptation import (
    finetune_excess_risk,
    fit_power_law,
    predicted_excess_risk,
    sr_floor,
)
from loraml.theory.check_record import (
    _TINY,
    CheckResult,
    _desc,
    _measurement,
    _Tally,
    below,
    draw_generic_family,
    random_sizes,
)
from loraml.theory.family import TaskFamily, draw_family, sample_family_data
from loraml.theory.finetune import finetune_closed_form
from loraml.theory.landscape import (
    KINDS,
    classify_point,
    hessian_operator,
    perturbed_gd,
    polish,
    random_start,
    search_stationary_points,
    wilson_interval,
)
from loraml.theory.metrics import base_error
from loraml.theory.objectives import Quadratics
from loraml.theory.retraining import solve_lora_ml, sr_closed_form
from loraml.theory.retraining_error import predicted_retraining_error, retraining_error_ratio_limit
from loraml.theory.rng import RNGLike, as_generator


# ---------------------------------------------------------------------------------------------
# 6. The T >= 3 landscape: spurious minima
# ---------------------------------------------------------------------------------------------
def _local_minimum_evidence(q: Quadratics, k: int, p, rng: np.random.Generator) -> dict:
    """Is a spurious point a local minimum? Hessian beyond the symmetry, and perturb + re-solve.

    ``U_t -> U_t Q_t`` gives ``T k(k-1)/2`` zero Hessian eigenvalues at a stationary point (see
    :mod:`loraml.theory.landscape`); the next one, relative to
    ``lambda_max``, is ``eigenvalue_after_symmetry`` (> 0: strict local minimum modulo the
    symmetry). Three re-solves from ``U + 1e-3 ||U|| xi`` return ``resolve_min_over_loss``
    (1.0: every one came back to the same value, none went lower).
    """
    n_sym = q.T * k * (k - 1) // 2
    op = hessian_operator(q, p.A, p.U)
    H = op.matmat(np.eye(op.shape[0]))
    w = np.linalg.eigvalsh(0.5 * (H + H.T))
    scale = 1e-3 * np.linalg.norm(p.U)
    again = [
        solve_lora_ml(q, k, init=(p.A, p.U + scale * rng.standard_normal(p.U.shape))).objective
        for _ in range(3)
    ]
    return {
        "eigenvalue_after_symmetry": float(w[n_sym] / w[-1]),
        "resolve_min_over_loss": float(min(again) / p.loss),
    }


def check_spurious(
    rng: RNGLike,
    *,
    instances: int = 10,
    starts: int = 10,
    families: Sequence[TaskFamily] | None = None,
    gd_starts: int = 2,
    spreads: Sequence[float] = (0.0, 1.0),
) -> CheckResult:
    r"""Measurement: how often local search on the T >= 3 landscape ends at a spurious minimum.

    Per instance (T in 3..4, k in 1..2, ``d = k(T+1)``, tight): ``starts`` L-BFGS runs
    (:func:`loraml.theory.landscape.search_stationary_points`) and ``gd_starts`` plain
    gradient-descent runs (:func:`loraml.theory.landscape.perturbed_gd` without kicks, 5000 steps; a
    run still
    moving is finished by L-BFGS, :func:`loraml.theory.landscape.polish`, and counted as
    ``polished``), each
    end point classified by per-task relative residuals, per-task relative gradients and the
    Hessian (:func:`loraml.theory.landscape.classify_point`: global, runaway, unconverged,
    saddle, spurious local minimum). ``numbers["classes"]`` pools the counts per class and
    solver over the instances with a 95 % Wilson interval
    (:func:`loraml.theory.landscape.wilson_interval`); ``numbers["runaway_examples"]`` lists
    runs whose base grew past 10 times the largest task (their error and per-task residuals).
    Instances alternate
    between the task-scale spreads in ``spreads``: ``U_t*`` is multiplied by
    ``exp(spread * N(0, 1))`` (0 is the paper's setting, equal scales in distribution).
    Spurious minima are kept in ``artifacts`` (family, start and end point) so they can be
    reproduced, and summarised in ``numbers["spurious_examples"]`` (loss relative to ``F(0, 0)``,
    ``||A_hat - A*|| / ||A*||``, ``lambda_min / lambda_max``, and the evidence that it is a local
    minimum: the first Hessian eigenvalue beyond the rotation symmetry and the value that three
    re-solves from small perturbations return, see :func:`_local_minimum_evidence`).

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
        Seed, or the source of every random draw.
    instances : int
        Random families drawn when ``families`` is None.
    starts : int
        L-BFGS runs from random starts per instance.
    families : sequence of TaskFamily, optional
        Measure these families instead of random ones.
    gd_starts : int
        Plain gradient-descent runs per instance.
    spreads : sequence of float
        Task-scale spreads the instances alternate between.

    Returns
    -------
    CheckResult
        The statement, instances, ``held`` (``None`` for a measurement), worst margin in decades,
        seconds and the measured ``numbers``.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import checks
    >>> rec = checks.check_spurious(np.random.default_rng(0), instances=1, starts=2, gd_starts=0)
    >>> rec.key, rec.held  # a measurement: held is None
    ('spurious', None)
    >>> rec.instances
    1
    """
    rng = as_generator(rng)
    start = time.perf_counter()
    counts: dict[str, dict[str, dict[str, int]]] = {}
    artifacts: dict = {}
    examples: list[dict] = []
    runaways: list[dict] = []
    if families is not None:
        plan = [(fam, "given") for fam in families]
    else:
        plan = []
        for i in range(instances):
            spread = float(spreads[i % len(spreads)])
            d, T, k = random_sizes(rng, (3, 4), (1, 2), 0)
            fam = draw_generic_family(rng, d, T, k)
            factor = np.exp(spread * rng.standard_normal(T))[:, None, None]
            scaled = TaskFamily(fam.A_star, fam.U_star * factor, fam.U_test)
            plan.append((scaled, f"spread={spread}"))
    for i, (fam, label) in enumerate(plan):
        q, k = fam.population(), fam.k
        f0 = 0.5 * float(np.sum(q.c))
        tally = counts.setdefault(label, {"lbfgs": {}, "gd": {}})
        points = search_stationary_points(q, k, rng, starts=starts, global_value=0.0)
        for p in points:
            tally["lbfgs"][p.kind] = tally["lbfgs"].get(p.kind, 0) + 1
        for _ in range(gd_starts):
            init = random_start(q, k, rng)
            res = perturbed_gd(q, k, rng, init=init, kick_ratio=0.0, max_steps=5000)
            p = classify_point(q, res.A, res.U, 0.0, start=init)
            if p.kind == "unconverged":  # slow: classify where L-BFGS takes it from there
                A_p, U_p, _ = polish(q, k, res.A, res.U)
                p = classify_point(q, A_p, U_p, 0.0, start=init)
                tally["gd"]["polished"] = tally["gd"].get("polished", 0) + 1
            points.append(p)
            tally["gd"][p.kind] = tally["gd"].get(p.kind, 0) + 1
        for j, p in enumerate(points):
            if p.kind == "runaway":
                runaways.append(
                    {
                        "instance": i,
                        "d": fam.d,
                        "T": fam.T,
                        "k": k,
                        "setting": label,
                        "A_relative_error": base_error(p.A, fam.A_star).relative,
                        "task_residuals": [float(r) for r in p.task_residuals],
                    }
                )
            if p.kind not in ("spurious", "runaway"):
                continue
            artifacts[f"{p.kind}_{i}_{j}"] = {
                "A_star": fam.A_star,
                "U_star": fam.U_star,
                "A0": p.start[0],
                "U0": p.start[1],
                "A_hat": p.A,
                "U_hat": p.U,
            }
            if p.kind == "runaway":
                continue
            examples.append(
                {
                    **_local_minimum_evidence(q, k, p, rng),
                    "instance": i,
                    "d": fam.d,
                    "T": fam.T,
                    "k": k,
                    "setting": label,
                    "loss_over_F00": p.loss / f0,
                    "A_relative_error": base_error(p.A, fam.A_star).relative,
                    "min_over_max_eigenvalue": p.min_eigenvalue / p.max_eigenvalue,
                }
            )
    classes: dict[str, dict[str, dict]] = {}
    for solver in ("lbfgs", "gd"):
        total = sum(row[solver].get(kind, 0) for row in counts.values() for kind in KINDS)
        classes[solver] = {}
        for kind in KINDS:
            n = sum(row[solver].get(kind, 0) for row in counts.values())
            lo, hi = wilson_interval(n, total)
            classes[solver][kind] = {"count": n, "runs": total, "wilson95": [lo, hi]}
    numbers = {
        "end_points": counts,
        "classes": classes,
        "runaway_examples": runaways[:20],
        "spurious_found": len(examples),
        "instances_with_spurious": len({e["instance"] for e in examples}),
        "spurious_examples": examples[:20],
    }
    return _measurement(
        "spurious",
        "T>=3 landscape: how often local search meets a spurious local minimum (measurement)",
        len(plan),
        start,
        numbers,
        artifacts,
    )


# ---------------------------------------------------------------------------------------------
# 7. Adaptation rate
# ---------------------------------------------------------------------------------------------
def check_rate(
    rng: RNGLike,
    *,
    instances: int = 3,
    d: int = 10,
    T: int = 3,
    k: int = 1,
    noise_std: float | None = 0.1,
    ns: Sequence[int] | None = (100, 200, 400, 800, 1600),
    reps: int = 40,
    families: Sequence[TaskFamily] | None = None,
) -> CheckResult:
    r"""Adaptation rate (v2): rank-k fine-tuning from LoRA-ML has excess risk O(kd/n).

    The statement presumes that retraining recovered ``A*`` (Theorem 3: T >= 3, generic); with
    T <= 2 the LoRA-ML base carries a bias and the risk does not vanish.

    Per instance: LoRA-ML population retraining (:func:`loraml.theory.solve_lora_ml`), then rank-k
    finite-sample fine-tuning on n fresh samples of the test task, averaged over ``reps``
    draws, for each n in ``ns``. Claim: the fitted exponent of ``risk ~ c n^slope`` is in
    ``[-1.25, -0.75]`` (margin: ``log10(0.25 / |slope + 1|)``). Measured: the ratio of the
    constant (exponent fixed at -1) to the derived ``1/2 s^2 k(2d-k)``; the risk against the
    first-order finite-n prediction ``1/2 s^2 k [d/(n-d-1) + (d-k)/(n-k-1)]``
    (:func:`loraml.theory.adaptation.predicted_excess_risk` with ``finite_n=True``, which explains
    why the fitted slope is a little below -1 and the constant a little above the asymptotic one:
    the same fit applied to the prediction gives ``predicted_slope`` and
    ``predicted_ratio_to_asymptotic_constant``); SR's rank-k risk at the
    largest n against its floor (Corollary 1); SR's rank-K risk, ``K = min(k(T+1), d)``, against
    LoRA-ML's rank-k risk at the largest n and against the predicted variance ratio.

    The predicted variance ratio is the ratio of the first-order finite-n risks at ranks K and k,
    ``K [d/(n-d-1) + (d-K)/(n-K-1)] / (k [d/(n-d-1) + (d-k)/(n-k-1)])`` (``n > d + 1``; ``None``
    otherwise), with its n -> infinity limit ``K(2d-K) / (k(2d-k))`` kept for comparison
    (``..._asymptotic``); at n = 20, d = 10, k = 1, T = 3 they are 3.75 and 3.37. Why the finite-n
    formula of :func:`loraml.theory.adaptation.predicted_excess_risk` applies to SR at rank K: its
    derivation only needs a frozen base whose residual ``B* = A_{T+1}* - A_base`` has rank exactly
    the adapter's rank, and high SNR. SR's base is ``A_SR = A* + (1/T) sum_t U_t* U_t*^T``
    (Theorem 1), so ``B* = U_{T+1}* U_{T+1}*^T - (1/T) sum_t U_t* U_t*^T = W D W^T`` with
    ``W = [U_1*, ..., U_{T+1}*]`` and ``D = diag(-I/T, ..., -I/T, I)`` invertible: rank exactly
    ``k(T+1)`` when W has full column rank (generic, ``k(T+1) <= d``, Remark 1), and rank-K
    fine-tuning is rank-K reduced-rank regression onto it; the noise, the inputs ``x ~ N(0, I)``
    and the inverse Wishart moments are the same with k replaced by K. The high-SNR condition
    ``sigma_K(B*) >> s sqrt(d / n)`` is recorded as ``sr_residual_sigma_K_over_noise_scale`` (at
    the largest n). When ``K = d`` the rank-d fit is unconstrained least squares and the formula,
    ``s^2 d^2 / (n - d - 1)``, is exact without that condition. The two risks of the ratio are
    measured on the same n with independent draws.

    For a user's instance (scale-free): ``ns=None`` takes ``n = p (2, 4, 8, 16, 32)`` with
    ``p = k(2d - k)`` the adapter's parameter count (the rate is asymptotic in ``n >> p``), and
    ``noise_std=None`` takes ``0.1 ||A_test*||_F / sqrt(d)`` (a tenth of the signal per output).
    When LoRA-ML's base is off ``A*`` by more than a tenth of the predicted risk at the largest n
    (``1/2 ||A_hat - A*||_F^2 > 0.1 * 1/2 s^2 k(2d-k)/n``), the bias hides the rate and a slope
    outside the band is undecided, not failed.

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
        Seed, or the source of every random draw.
    instances : int
        Random families drawn when ``families`` is None.
    d, T, k : int
        Sizes of the random families.
    noise_std : float
        Noise standard deviation ``s`` of the fine-tuning samples.
    ns : sequence of int
        Fine-tuning sample sizes.
    reps : int
        Repetitions (fresh samples) per n.
    families : sequence of TaskFamily, optional
        Measure these families (each with a test task) instead of random ones.

    Returns
    -------
    CheckResult
        The statement, instances, ``held`` (``None`` for a measurement), worst margin in decades,
        seconds and the measured ``numbers``.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import checks
    >>> rec = checks.check_rate(np.random.default_rng(0), instances=1, ns=(100, 400), reps=5)
    >>> rec.key, rec.held
    ('rate', True)
    """
    rng = as_generator(rng)
    start = time.perf_counter()
    tally = _Tally()
    ratios, slopes, sr_floor_ratio, sr_var_ratio = [], [], [], []
    sr_var_pred: list[float | None] = []
    sr_var_asym: list[float] = []
    sr_snr: list[float] = []
    finite_ratio, pred_slope, pred_ratio = [], [], []
    if families is None:
        families = [draw_generic_family(rng, d, T, k) for _ in range(instances)]
    for i, fam in enumerate(families):
        if fam.U_test.shape[0] == 0:
            continue
        tally.instances += 1
        dd, kk, TT = fam.d, fam.k, fam.T
        test = fam.test_targets()[0]
        s_noise = 0.1 * np.linalg.norm(test) / np.sqrt(dd) if noise_std is None else noise_std
        n_list = np.asarray(
            [kk * (2 * dd - kk) * m for m in (2, 4, 8, 16, 32)] if ns is None else ns
        )
        A_ml = solve_lora_ml(fam.population(), kk).A
        risks = np.array(
            [
                finetune_excess_risk(A_ml, test, kk, int(n), s_noise, rng, reps=reps).mean()
                for n in n_list
            ]
        )
        fit = fit_power_law(n_list, risks)
        slopes.append(fit.slope)
        asymptotic = 0.5 * s_noise**2 * kk * (2 * dd - kk)
        ratios.append(fit.constant_at_minus_one / asymptotic)
        if n_list.min() > dd + 1:
            pred = np.array(
                [predicted_excess_risk(dd, kk, int(n), s_noise, finite_n=True) for n in n_list]
            )
            finite_ratio.append((risks / pred).tolist())
            pred_fit = fit_power_law(n_list, pred)
            pred_slope.append(pred_fit.slope)
            pred_ratio.append(pred_fit.constant_at_minus_one / asymptotic)
        margin = below(abs(fit.slope + 1), 0.25)
        bias = 0.5 * float(np.sum((A_ml - fam.A_star) ** 2))
        predicted = predicted_excess_risk(dd, kk, int(n_list[-1]), s_noise)
        if not margin > 0 and bias > 0.1 * predicted:
            tally.undecided.append(
                f"{_desc(fam, i)}: slope {fit.slope:.2f}, but LoRA-ML's base is off A* by "
                f"{bias:.1e} (half squared error) against a predicted risk of {predicted:.1e}"
            )
        else:
            tally.claim(margin, f"{_desc(fam, i)}: slope {fit.slope:.2f}")
        A_sr = sr_closed_form(fam.population())
        n_max = int(n_list[-1])
        K = min(kk * (TT + 1), dd)
        sigma_K = np.linalg.svd(test - A_sr, compute_uv=False)[K - 1]
        sr_snr.append(float(sigma_K / (s_noise * np.sqrt(dd / n_max))))
        floor = sr_floor(fam.targets(), test, kk)
        sr_k = finetune_excess_risk(A_sr, test, kk, n_max, s_noise, rng, reps=reps).mean()
        sr_floor_ratio.append(sr_k / floor)
        sr_K = finetune_excess_risk(A_sr, test, K, n_max, s_noise, rng, reps=reps).mean()
        sr_var_ratio.append(sr_K / risks[-1])
        sr_var_pred.append(
            predicted_excess_risk(dd, K, n_max, 1.0, finite_n=True)
            / predicted_excess_risk(dd, kk, n_max, 1.0, finite_n=True)
            if n_max > dd + 1
            else None
        )
        sr_var_asym.append(
            predicted_excess_risk(dd, K, n_max, 1.0) / predicted_excess_risk(dd, kk, n_max, 1.0)
        )
    numbers = {
        "slope": slopes,
        "ratio_to_predicted_constant": ratios,
        "ratio_to_finite_n_prediction_by_n": finite_ratio,
        "predicted_slope": pred_slope,
        "predicted_ratio_to_asymptotic_constant": pred_ratio,
        "setting": {"ns": ns, "reps": reps, "noise_std": noise_std},  # None: per instance
        "sr_rank_k_risk_over_floor_at_max_n": sr_floor_ratio,
        "sr_rank_kT1_risk_over_lora_ml_rank_k_risk_at_max_n": sr_var_ratio,
        "predicted_variance_ratio_kT1_over_k": sr_var_pred,  # finite n, at the largest n
        "predicted_variance_ratio_kT1_over_k_asymptotic": sr_var_asym,
        "sr_residual_sigma_K_over_noise_scale": sr_snr,
    }
    return tally.result(
        "rate",
        "Adaptation rate: rank-k fine-tuning from LoRA-ML has excess risk ~ 1/n (v2: O(kd/n))",
        start,
        numbers,
    )


# ---------------------------------------------------------------------------------------------
# 8. Finite-sample retraining
# ---------------------------------------------------------------------------------------------
def check_retraining(
    rng: RNGLike,
    *,
    reps: int = 5,
    d: int = 8,
    k: int = 1,
    noise_std: float = 0.1,
    Ns: Sequence[int] = (100, 400, 1600),
    Ts: Sequence[int] = (3, 5),
) -> CheckResult:
    r"""Measurement: finite-sample LoRA-ML's ``||A_hat - A*||_F^2`` against N and T.

    For each T in ``Ts`` and N in ``Ns``, ``reps`` families with N noisy samples per task; mean
    squared error of LoRA-ML's base, its fitted exponent in N, and its ratio to the pooled
    least-squares order ``s^2 d^2 / (N T)``, and its ratio to the first-order prediction
    ``(s^2 / N) tr((T I - sum_t Pi_t)^{-1})`` of the same family
    (:func:`loraml.theory.retraining_error.predicted_retraining_error`; derivation there). The
    prediction is above the pooled order and its ratio to it tends to
    :func:`loraml.theory.retraining_error.retraining_error_ratio_limit` (1.16 for d = 8, k = 1)
    as T grows, not to 1. SR's base error is reported for contrast (biased: it does not shrink
    with N).

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
        Seed, or the source of every random draw.
    reps : int
        Families per (T, N).
    d, k : int
        Dimension and perturbation rank.
    noise_std : float
        Noise standard deviation of the retraining samples.
    Ns : sequence of int
        Samples per task.
    Ts : sequence of int
        Numbers of retraining tasks.

    Returns
    -------
    CheckResult
        The statement, instances, ``held`` (``None`` for a measurement), worst margin in decades,
        seconds and the measured ``numbers``.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import checks
    >>> rec = checks.check_retraining(np.random.default_rng(0), reps=1, Ns=(100, 400), Ts=(3,))
    >>> rec.key, rec.held  # a measurement
    ('retraining', None)
    """
    rng = as_generator(rng)
    start = time.perf_counter()
    table = {}
    for T in Ts:
        errs, sr_errs, preds = [], [], []
        for N in Ns:
            e, e_sr, pr = [], [], []
            for _ in range(reps):
                fam = draw_generic_family(rng, max(d, k * (T + 1)), T, k)
                X, Y = sample_family_data(fam.targets(), N, noise_std, rng)
                q = Quadratics.from_data(X, Y)
                e.append(base_error(solve_lora_ml(q, k).A, fam.A_star).fro ** 2)
                e_sr.append(base_error(sr_closed_form(q), fam.A_star).fro ** 2)
                pr.append(predicted_retraining_error(fam.U_star, noise_std, N))
            errs.append(float(np.mean(e)))
            preds.append(float(np.mean(pr)))
            sr_errs.append(float(np.mean(e_sr)))
        dd = max(d, k * (T + 1))
        order = [noise_std**2 * dd**2 / (N * T) for N in Ns]
        table[f"T={T}"] = {
            "N": list(Ns),
            "lora_ml_sq_error": errs,
            "ratio_to_s2d2_over_NT": [e / o for e, o in zip(errs, order, strict=True)],
            "predicted_sq_error": preds,
            "ratio_to_prediction": [e / p for e, p in zip(errs, preds, strict=True)],
            "predicted_ratio_to_s2d2_over_NT": [p / o for p, o in zip(preds, order, strict=True)],
            "slope_in_N": fit_power_law(Ns, errs).slope,
            "sr_sq_error": sr_errs,
        }
    return _measurement(
        "retraining",
        "Finite-sample LoRA-ML: ||A_hat - A*||^2 against N and T (measurement)",
        len(Ts) * len(Ns) * reps,
        start,
        {
            "d": d,
            "k": k,
            "noise_std": noise_std,
            "reps": reps,
            "by_T": table,
            "predicted_ratio_limit_T_to_infinity": retraining_error_ratio_limit(d, k),
        },
    )


# ---------------------------------------------------------------------------------------------
# 9. Convex relaxations
# ---------------------------------------------------------------------------------------------
def check_convex(
    rng: RNGLike,
    *,
    reps: int = 3,
    grid: Sequence[tuple[int, int, int]] | None = None,
    families: Sequence[TaskFamily] | None = None,
    recover_tol: float = 1e-4,
) -> CheckResult:
    r"""Measurement: where the convex relaxations recover ``A*``, against LoRA-ML.

    For each ``(d, T, k)`` in ``grid`` (default: d = 10 with T in {2, 3, 4, 6, 9}, k in {1, 2, 3},
    and d = 20 with T in {3, 4, 6}, k in {1, 2, 4}, wherever ``k(T+1) <= d``) ``reps`` population
    families; a method "recovers" when
    ``||A_hat - A*||_F <= recover_tol ||A*||_F``. Reported per grid cell: recovery counts of
    the nuclear-norm median, the SDP and LoRA-ML, and the median relative errors.

    ``held`` says only that both relaxations were solved correctly as optimisation problems:
    ``A*`` is feasible for both, so the nuclear objective must be ``<= sum_t ||P_t||_*`` and the
    SDP's trace ``>= tr(A*)`` (each within ``1e-6`` relative). It is not a claim of the paper.

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
        Seed, or the source of every random draw.
    reps : int
        Population families per grid cell.
    grid : sequence of (d, T, k), optional
        Cells to measure (default: see above).
    families : sequence of TaskFamily, optional
        Measure these families instead of a grid.
    recover_tol : float
        Relative distance to ``A*`` that counts as recovered.

    Returns
    -------
    CheckResult
        The statement, instances, ``held`` (``None`` for a measurement), worst margin in decades,
        seconds and the measured ``numbers``.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import checks
    >>> rec = checks.check_convex(np.random.default_rng(0), reps=1, grid=[(4, 3, 1)])
    >>> rec.key, rec.held  # both relaxations were solved correctly
    ('convex', True)
    """
    rng = as_generator(rng)
    from loraml.theory.convex import nuclear_relaxation, sdp_relaxation

    start = time.perf_counter()
    tally = _Tally()
    if families is not None:
        cells = {"instance": list(families)}
    else:
        if grid is None:
            grid = [(10, T, k) for T in (2, 3, 4, 6, 9) for k in (1, 2, 3) if k * (T + 1) <= 10]
            grid += [(20, T, k) for T in (3, 4, 6) for k in (1, 2, 4) if k * (T + 1) <= 20]
        cells = {
            f"d={d},T={T},k={k}": [draw_generic_family(rng, d, T, k) for _ in range(reps)]
            for d, T, k in grid
        }
    table = {}
    for name, fams in cells.items():
        rec = {"nuclear": 0, "sdp": 0, "lora_ml": 0}
        errs: dict[str, list[float]] = {"nuclear": [], "sdp": [], "lora_ml": []}
        for fam in fams:
            tally.instances += 1
            q = fam.population()
            P = fam.perturbations()
            nuc = nuclear_relaxation(q)
            sdp = sdp_relaxation(q)
            ml = solve_lora_ml(q, fam.k)
            for key, A in (("nuclear", nuc.A), ("sdp", sdp.A), ("lora_ml", ml.A)):
                e = base_error(A, fam.A_star).relative if np.all(np.isfinite(A)) else np.inf
                errs[key].append(e)
                rec[key] += bool(e <= recover_tol)
            nuc_star = float(sum(np.linalg.norm(p, "nuc") for p in P))
            tally.claim(
                below(max(nuc.objective - nuc_star, 0.0) / nuc_star, 1e-6),
                f"{name}: nuclear objective above A*'s",
            )
            tr_star = float(np.trace(fam.A_star))
            gap = max(tr_star - np.trace(sdp.A), 0.0) / max(np.linalg.norm(fam.A_star), _TINY)
            tally.claim(below(gap, 1e-6), f"{name}: SDP trace below tr(A*)")
        table[name] = {
            "instances": len(fams),
            "recovered": rec,
            "median_relative_error": {key: float(np.median(v)) for key, v in errs.items()},
        }
    res = tally.result(
        "convex",
        "Convex relaxations (nuclear-norm median, SDP) vs LoRA-ML: recovery of A* (measurement)",
        start,
        {"recover_tol": recover_tol, "by_setting": table},
    )
    res.claimed = False
    return res


# ---------------------------------------------------------------------------------------------
# 10. Beyond the assumptions
# ---------------------------------------------------------------------------------------------
def check_beyond(rng: RNGLike, *, reps: int = 3) -> CheckResult:
    r"""Measurement: LoRA-ML outside the theory's assumptions.

    Three settings, ``reps`` families each, population losses:

    - ``crowded``: ``k(T+1) > d`` (d = 6 with T = 4, k = 2 and T = 5, k = 3: genericity is
      impossible);
    - ``general``: perturbations ``U_t* V_t*^T`` (not PSD; d = 12, T = 3, k = 1), retrained with
      symmetric and with asymmetric adapters;
    - ``asymmetric_on_psd``: PSD perturbations retrained with asymmetric adapters
      (d = 10, T = 3, k = 1).

    Reported: median relative error of ``A_hat``, the fraction of families where
    ``||A_hat - A*|| <= 1e-6 ||A*||`` (recovered) and where the solver reached zero loss
    (``F <= 1e-20 F(0, 0)``: a zero-loss point that is not A* means the minimiser is not unique),
    and the median loss of rank-k fine-tuning on a fresh test task from the same family, relative
    to ``1/2 ||A_test* - A_hat||_F^2``. Asymmetric adapters are also solved from 5 random starts
    (:func:`loraml.theory.landscape.random_start` scale) and the best run's recovery is reported.

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
        Seed, or the source of every random draw.
    reps : int
        Families per setting.

    Returns
    -------
    CheckResult
        The statement, instances, ``held`` (``None`` for a measurement), worst margin in decades,
        seconds and the measured ``numbers``.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import checks
    >>> rec = checks.check_beyond(np.random.default_rng(0), reps=1)
    >>> rec.key, rec.held  # a measurement
    ('beyond', None)
    """
    rng = as_generator(rng)
    start = time.perf_counter()
    settings: dict[str, dict[str, Any]] = {
        "crowded_d6_T4_k2": dict(d=6, T=4, k=2, perturbation="psd", asym=[False]),
        "crowded_d6_T5_k3": dict(d=6, T=5, k=3, perturbation="psd", asym=[False]),
        "general_UV_d12_T3_k1": dict(d=12, T=3, k=1, perturbation="general", asym=[False, True]),
        "asymmetric_on_psd_d10_T3_k1": dict(d=10, T=3, k=1, perturbation="psd", asym=[True]),
    }
    out = {}
    for name, s in settings.items():
        for asym in s["asym"]:
            a_err, ft, zero, restarts = [], [], [], []
            for _ in range(reps):
                fam = draw_family(s["d"], s["T"], s["k"], rng, perturbation=s["perturbation"])
                q = fam.population()
                res = solve_lora_ml(q, s["k"], asymmetric=asym)
                f0 = 0.5 * float(np.sum(q.c))
                a_err.append(base_error(res.A, fam.A_star).relative)
                zero.append(res.objective <= 1e-20 * f0)
                if asym:  # the best of 5 random starts (U, V at the problem's scale)
                    runs = [
                        solve_lora_ml(q, s["k"], asymmetric=True, init=(None, U0, U1))
                        for U0, U1 in (
                            (random_start(q, s["k"], rng)[1], random_start(q, s["k"], rng)[1])
                            for _ in range(5)
                        )
                    ]
                    best = min(runs, key=lambda r: r.objective)
                    restarts.append(base_error(best.A, fam.A_star).relative <= 1e-6)
                test = fam.test_targets()[0]
                L0 = 0.5 * float(np.sum((test - res.A) ** 2))
                loss = finetune_closed_form(Quadratics.population(test), res.A, s["k"]).loss
                ft.append(loss / max(L0, _TINY))
            out[f"{name}/{'asymmetric' if asym else 'symmetric'}_adapters"] = {
                "median_A_relative_error": float(np.median(a_err)),
                "fraction_recovered": float(np.mean(np.array(a_err) <= 1e-6)),
                "fraction_zero_loss": float(np.mean(zero)),
                "median_rank_k_finetune_relative_loss": float(np.median(ft)),
            }
            if restarts:
                out[f"{name}/asymmetric_adapters"]["fraction_recovered_best_of_5_random_starts"] = (
                    float(np.mean(restarts))
                )
    return _measurement(
        "beyond",
        "Beyond the assumptions: k(T+1) > d, U V^T perturbations, asymmetric adapters (measured)",
        reps * sum(len(s["asym"]) for s in settings.values()),
        start,
        out,
    )


# ---------------------------------------------------------------------------------------------
# A user's instance
# ---------------------------------------------------------------------------------------------
def check_instance_recovery(
    q: Quadratics,
    k: int,
    rng: RNGLike,
    *,
    A_star: np.ndarray | None = None,
    starts: int = 5,
    convex: bool = True,
) -> CheckResult:
    r"""Measurement on one instance: every retraining method, and the landscape from random starts.

    Runs SR, LoRA-ML (symmetric and asymmetric adapters), the nuclear-norm and SDP relaxations
    (penalised analogues on finite-sample losses, :mod:`loraml.theory.convex`) and ``starts``
    random-start LoRA-ML runs classified by
    :func:`loraml.theory.landscape.search_stationary_points`. Reports
    each method's objective and, when ``A_star`` is known, ``||A_hat - A*||_F / ||A*||_F``.

    Parameters
    ----------
    q : Quadratics
        The instance's task losses (population or finite-sample).
    k : int
        Adapter rank.
    rng : numpy.random.Generator
        Draws the random starts.
    A_star : ndarray, shape (d, d), optional
        The true base, when known.
    starts : int
        Random-start LoRA-ML runs.
    convex : bool
        Also solve the two convex relaxations.

    Returns
    -------
    CheckResult
        A measurement (``held`` is None) keyed ``"instance"``.

    Examples
    --------
    >>> import numpy as np
    >>> import loraml.theory as th
    >>> from loraml.theory import checks
    >>> rng = np.random.default_rng(0)
    >>> fam = th.draw_family(8, 3, 1, rng)
    >>> rec = checks.check_instance_recovery(fam.population(), 1, rng, A_star=fam.A_star, starts=1,
    ...                                      convex=False)
    >>> bool(rec.numbers["relative_error_of_A"]["lora_ml"] < 1e-8)
    True
    """
    rng = as_generator(rng)
    start = time.perf_counter()
    bases = {
        "sr": sr_closed_form(q),
        "lora_ml": solve_lora_ml(q, k).A,
        "lora_ml_asymmetric": solve_lora_ml(q, k, asymmetric=True).A,
    }
    status = {}
    if convex:
        from loraml.theory.convex import nuclear_relaxation, sdp_relaxation

        for name, fn in (("nuclear", nuclear_relaxation), ("sdp", sdp_relaxation)):
            try:
                res = fn(q)
            except ValueError as err:  # e.g. no noise estimate with N <= d
                status[name] = f"not run: {err}"
                continue
            bases[name], status[name] = res.A, res.status
    numbers: dict = {"d": q.d, "T": q.T, "k": k, "kind": "population" if q.N is None else "data"}
    numbers["convex_status"] = status
    if A_star is not None:
        numbers["relative_error_of_A"] = {
            name: base_error(A, A_star).relative if np.all(np.isfinite(A)) else None
            for name, A in bases.items()
        }
    points = search_stationary_points(q, k, rng, starts=starts)
    kinds: dict[str, int] = {}
    for p in points:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    numbers["random_start_end_points"] = kinds
    numbers["best_lora_ml_objective"] = min(p.loss for p in points)
    artifacts = {
        f"spurious_{j}": {"A0": p.start[0], "U0": p.start[1], "A_hat": p.A, "U_hat": p.U}
        for j, p in enumerate(points)
        if p.kind == "spurious"
    }
    return _measurement(
        "instance",
        "Your instance: every method's base error and the landscape from random starts (measured)",
        1,
        start,
        numbers,
        artifacts,
    )

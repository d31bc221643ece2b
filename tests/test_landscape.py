"""The LoRA-ML landscape: the T=2 family of global minima, Hessian eigenvalues from HVPs, the
zero-adapter saddle, perturbed gradient descent and the classification of stationary points."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import loraml.theory as th
from loraml.theory.landscape import (
    classify_point,
    hessian_extreme_eigenvalues,
    hessian_operator,
    perturbed_gd,
    polish,
    random_start,
    search_stationary_points,
    t2_global_minimum,
    zero_adapter_point,
)
from loraml.theory.linalg import psd_factor
from loraml.theory.objectives import lora_ml_grad_norm


def _C(rng, k, radius):
    C = rng.standard_normal((k, k))
    return radius * C / np.linalg.norm(C, 2)


# ---------------------------------------------------------------------------------------------
# T = 2: the continuous family of global minima (Theorems 2 and 4)
# ---------------------------------------------------------------------------------------------
def _check_t2_family(k, extra, radius, seed):
    rng = np.random.default_rng(seed)
    d = 2 * k + extra
    fam = th.draw_family(d, 2, k, rng)
    q = fam.population()
    f0 = th.lora_ml_loss(q, np.zeros((d, d)), np.zeros_like(fam.U_star))
    A_hat, U_hat = t2_global_minimum(fam.A_star, fam.U_star, _C(rng, k, radius))
    assert th.lora_ml_loss(q, A_hat, U_hat) <= 1e-20 * f0
    assert lora_ml_grad_norm(q, A_hat, U_hat) <= 1e-9 * np.sqrt(f0)
    s = np.linalg.svd(A_hat - fam.A_star, compute_uv=False)
    scale = np.linalg.norm(fam.A_star, 2)
    assert s[2 * k - 1] > 1e-6 * scale  # the bound of Theorem 2 is attained ...
    if 2 * k < d:
        assert s[2 * k] <= 1e-10 * scale  # ... and never exceeded


@given(
    k=st.integers(1, 3),
    extra=st.integers(0, 4),
    radius=st.floats(0.05, 0.95),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=15)
def test_t2_family_members_are_zero_loss_minima_with_rank_2k(k, extra, radius, seed):
    _check_t2_family(k, extra, radius, seed)


@pytest.mark.slow
@given(
    k=st.integers(1, 5),
    extra=st.integers(0, 8),
    radius=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=300)
def test_t2_family_members_are_zero_loss_minima_with_rank_2k_thorough(k, extra, radius, seed):
    _check_t2_family(k, extra, radius, seed)


def test_t2_family_passes_through_the_truth_and_is_continuous(rng):
    fam = th.draw_family(7, 2, 2, rng)
    A0, U0 = t2_global_minimum(fam.A_star, fam.U_star, np.zeros((2, 2)))
    np.testing.assert_allclose(A0, fam.A_star, atol=1e-10)
    np.testing.assert_allclose(th.adapter_errors(U0, fam.U_star), 0.0, atol=1e-10)
    C, E = _C(rng, 2, 0.5), _C(rng, 2, 1.0)
    A_c = t2_global_minimum(fam.A_star, fam.U_star, C)[0]
    steps = [
        np.linalg.norm(t2_global_minimum(fam.A_star, fam.U_star, C + h * E)[0] - A_c)
        for h in (1e-4, 1e-5)
    ]
    assert steps[1] == pytest.approx(steps[0] / 10, rel=1e-3)  # Lipschitz, and not constant
    A_other = t2_global_minimum(fam.A_star, fam.U_star, -C)[0]
    assert np.linalg.norm(A_other - A_c) > 1e-3 * np.linalg.norm(fam.A_star)  # distinct minima


def test_t2_family_rank_is_twice_the_rank_of_C_and_the_family_is_unbounded(rng):
    k, d = 3, 9
    fam = th.draw_family(d, 2, k, rng)
    scale = np.linalg.norm(fam.A_star, 2)
    for rank_C in range(k + 1):  # rank(A_hat - A*) = 2 rank(C), not 2k for every C != 0
        C = 0.5 * np.linalg.qr(rng.standard_normal((k, k)))[0][:, :rank_C] @ np.eye(rank_C, k)
        A_hat, _ = t2_global_minimum(fam.A_star, fam.U_star, C)
        s = np.linalg.svd(A_hat - fam.A_star, compute_uv=False)
        assert int(np.sum(s > 1e-9 * scale)) == 2 * rank_C
    # ||C||_2 -> 1: the error grows like 1 / (1 - ||C||_2), without bound.
    C = _C(rng, k, 1.0)
    err = [
        np.linalg.norm(t2_global_minimum(fam.A_star, fam.U_star, (1 - eps) * C)[0] - fam.A_star)
        for eps in (1e-2, 1e-4)
    ]
    assert err[1] > 50 * err[0]


def test_t2_family_rejects_bad_parameters(rng):
    fam = th.draw_family(6, 2, 1, rng)
    with pytest.raises(ValueError, match="spectral norm < 1"):
        t2_global_minimum(fam.A_star, fam.U_star, np.array([[1.0]]))
    with pytest.raises(ValueError, match="shape \\(2, d, k\\)"):
        t2_global_minimum(fam.A_star, th.draw_family(6, 3, 1, rng).U_star, np.zeros((1, 1)))
    with pytest.raises(ValueError, match="1 x 1"):
        t2_global_minimum(fam.A_star, fam.U_star, np.zeros((2, 2)))


# ---------------------------------------------------------------------------------------------
# Hessian eigenvalues from Hessian-vector products
# ---------------------------------------------------------------------------------------------
def test_rotation_symmetry_gives_zero_hessian_eigenvalues_only_at_stationary_points(rng):
    # U_t -> U_t Q_t: Hess F [U_t Omega] = grad_{U_t} F Omega, zero only where the gradient is.
    d, T, k = 8, 3, 2
    fam = th.draw_family(d, T, k, rng)
    q = fam.population()

    def n_zero(A, U):
        op = hessian_operator(q, A, U)
        H = op.matmat(np.eye(op.shape[0]))
        w = np.abs(np.linalg.eigvalsh(0.5 * (H + H.T)))
        return int(np.sum(w < 1e-8 * w.max()))

    res = th.solve_lora_ml(q, k)  # the global minimum, stationary (T = 3, identifiable)
    assert n_zero(res.A, res.U) == T * k * (k - 1) // 2
    A_off = res.A + 0.1 * rng.standard_normal((d, d))  # same full-rank adapters, not stationary
    assert lora_ml_grad_norm(q, A_off, res.U) > 0.1
    assert n_zero(A_off, res.U) == 0


def test_hessian_operator_is_symmetric_and_lanczos_agrees_with_dense(rng):
    fam = th.draw_family(6, 3, 2, rng)
    q = fam.population()
    A, U = random_start(q, 2, rng)
    op = hessian_operator(q, A, U)
    x, y = rng.standard_normal(op.shape[0]), rng.standard_normal(op.shape[0])
    assert x @ op.matvec(y) == pytest.approx(y @ op.matvec(x), rel=1e-10)
    dense = hessian_extreme_eigenvalues(q, A, U, method="dense")
    lanczos = hessian_extreme_eigenvalues(q, A, U, method="eigsh")
    assert lanczos.method == "eigsh"
    assert lanczos.min_eigenvalue == pytest.approx(dense.min_eigenvalue, rel=1e-7)
    assert lanczos.max_eigenvalue == pytest.approx(dense.max_eigenvalue, rel=1e-7)
    v = np.concatenate([dense.direction_A.ravel(), dense.direction_U.ravel()])
    np.testing.assert_allclose(
        op.matvec(v), dense.min_eigenvalue * v, atol=1e-8 * dense.max_eigenvalue
    )


def _saddle_closed_form(q, A):
    """Block-diagonal Hessian at U = 0: lambda_min = min(T, min_t lambda_min(G_t + G_t^T))."""
    G = q.grads(A)
    return min(float(q.T), min(np.linalg.eigvalsh(g + g.T)[0] for g in G))


@given(T=st.integers(2, 4), k=st.integers(1, 2), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=10)
def test_zero_adapter_point_is_a_stationary_point_with_the_predicted_curvature(T, k, seed):
    rng = np.random.default_rng(seed)
    fam = th.draw_family(k * (T + 1) + 2, T, k, rng)
    q = fam.population()
    A, U = zero_adapter_point(q, k)
    assert np.all(U == 0)
    assert lora_ml_grad_norm(q, A, U) <= 1e-10 * np.linalg.norm(q.C)
    curv = hessian_extreme_eigenvalues(q, A, U, method="eigsh")
    assert curv.min_eigenvalue == pytest.approx(_saddle_closed_form(q, A), rel=1e-7)
    if T == 2:  # derived: -max(lambda_max(P_1 - P_2), lambda_max(P_2 - P_1)) < 0
        P = fam.perturbations()
        w = np.linalg.eigvalsh(P[0] - P[1])
        assert curv.min_eigenvalue == pytest.approx(-max(w[-1], -w[0]), rel=1e-7)
        assert curv.min_eigenvalue < 0


# ---------------------------------------------------------------------------------------------
# Perturbed gradient descent (Theorem 4)
# ---------------------------------------------------------------------------------------------
def test_gradient_descent_stays_at_the_saddle_and_perturbed_descent_escapes(rng):
    fam = th.draw_family(6, 2, 1, rng)
    q = fam.population()
    f0 = th.lora_ml_loss(q, np.zeros((6, 6)), np.zeros((2, 6, 1)))
    saddle = zero_adapter_point(q, 1)
    plain = perturbed_gd(q, 1, rng, init=saddle, kick_ratio=0.0, max_steps=300)
    assert plain.perturbations == 0
    assert plain.loss == pytest.approx(th.lora_ml_loss(q, *saddle), rel=1e-12)
    kicked = perturbed_gd(q, 1, rng, init=saddle)
    assert kicked.perturbations >= 1 and kicked.reached_target
    assert kicked.loss <= 1e-14 * f0


def _check_pgd_reaches_zero(k, extra, seed):
    rng = np.random.default_rng(seed)
    fam = th.draw_family(3 * k + extra, 2, k, rng)
    q = fam.population()
    res = perturbed_gd(q, k, rng)
    f0 = th.lora_ml_loss(q, np.zeros_like(res.A), np.zeros_like(res.U))
    assert res.loss <= 1e-6 * f0  # far below any saddle value met
    assert np.all(np.diff(res.losses[: res.steps]) <= 1e-12 * f0) or res.perturbations > 0
    A = res.A
    if not res.reached_target:  # sublinear convergence near a degenerate minimum
        A, U, _ = polish(q, k, res.A, res.U)  # it was in the basin of a global minimum
        assert th.lora_ml_loss(q, A, U) <= 1e-14 * f0
    # where it lands: a zero-loss point, hence rank(A_hat - A*) <= 2k (Theorem 2)
    s = np.linalg.svd(A - fam.A_star, compute_uv=False)
    if 2 * k < len(s):
        assert s[2 * k] <= 1e-6 * np.linalg.norm(fam.A_star, 2)


@given(k=st.integers(1, 2), extra=st.integers(0, 3), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=6)
def test_perturbed_gradient_descent_reaches_zero_loss_for_two_tasks(k, extra, seed):
    _check_pgd_reaches_zero(k, extra, seed)


@pytest.mark.slow
@given(k=st.integers(1, 3), extra=st.integers(0, 6), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=100)
def test_perturbed_gradient_descent_reaches_zero_loss_for_two_tasks_thorough(k, extra, seed):
    _check_pgd_reaches_zero(k, extra, seed)


# ---------------------------------------------------------------------------------------------
# Classification of stationary points
# ---------------------------------------------------------------------------------------------
def test_classify_point_tells_global_saddle_and_unconverged_apart(rng):
    fam = th.draw_family(6, 2, 1, rng)
    q = fam.population()
    assert classify_point(q, fam.A_star, fam.U_star, 0.0).kind == "global"
    saddle = classify_point(q, *zero_adapter_point(q, 1), 0.0)
    assert saddle.kind == "saddle" and saddle.min_eigenvalue < 0
    assert classify_point(q, *random_start(q, 1, rng), 0.0).kind == "unconverged"


def test_a_local_minimum_above_the_global_value_is_called_spurious(rng):
    """Rank-1 adapters on a family whose perturbations have rank 2 (misspecified): the solver's
    minimum has positive loss; declaring the global value 0 makes it 'spurious' by definition."""
    fam = th.draw_family(8, 3, 2, rng)
    q = fam.population()
    res = th.solve_lora_ml(q, 1)
    assert classify_point(q, res.A, res.U, 0.0).kind == "spurious"
    assert classify_point(q, res.A, res.U, res.objective).kind == "global"


def test_search_from_random_starts_finds_only_global_minima_for_three_generic_tasks(rng):
    fam = th.draw_family(10, 3, 2, rng)
    points = search_stationary_points(fam.population(), 2, rng, starts=4, global_value=0.0)
    assert [p.kind for p in points] == ["global"] * 4
    for p in points:  # Theorem 3: every zero-loss minimiser is the truth
        assert th.base_error(p.A, fam.A_star).relative <= 1e-8
        assert p.start[1].shape == (3, 10, 2)


def test_a_small_task_left_unfitted_is_not_global_however_small_the_loss():
    """Old rule: loss <= 1e-10 F(0, 0) was 'global'; with task scales 1e6 : 1 : 1e-6 that hides
    a task with all of its own signal unfitted. Per-task relative residuals do not."""
    fam = th.draw_family(8, 3, 1, np.random.default_rng(11))
    U = fam.U_star * np.array([1e3, 1.0, 1e-3])[:, None, None]
    q = th.Quadratics.population(fam.A_star + U @ np.swapaxes(U, 1, 2))
    U_hat = U.copy()
    U_hat[2] = 0.0  # the small task keeps its perturbation unfitted
    p = classify_point(q, fam.A_star, U_hat, 0.0)
    assert p.loss <= 1e-10 * 0.5 * float(np.sum(q.c))  # what the old threshold looked at
    assert p.kind != "global"
    assert p.task_residuals[2] > 1e-7 and p.task_residuals[0] < 1e-12


def test_an_end_point_far_out_along_a_valley_is_called_runaway():
    """Base shifted by -lambda w w^T, adapters the best rank-k PSD fits of B_t - A: every
    adapter absorbs most of lambda w w^T and the tasks keep part of their own signal."""
    fam = th.draw_family(8, 3, 1, np.random.default_rng(12))
    q = fam.population()
    w = np.random.default_rng(13).standard_normal(8)
    A = fam.A_star - 1e3 * np.linalg.norm(q.C[0]) * np.outer(w, w) / (w @ w)
    U = psd_factor(q.C - A, 1)
    p = classify_point(q, A, U, 0.0)
    assert p.kind == "runaway"
    assert p.task_residuals.max() > 1e-3


def test_wilson_interval_matches_hand_values():
    from loraml.theory.landscape import wilson_interval

    lo, hi = wilson_interval(0, 600)
    assert lo == 0.0 and hi == pytest.approx(1.959964**2 / (600 + 1.959964**2), rel=1e-9)
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(1 - hi) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson_interval(2, 600)
    assert lo < 2 / 600 < hi

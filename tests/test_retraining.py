"""Standard retraining and LoRA-ML retraining: closed forms, gradient solvers, recovery."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import loraml.theory as th


def _data_problem(fam, N, noise_std, rng):
    X, Y = th.sample_family_data(fam.targets(), N, noise_std, rng)
    return th.Quadratics.from_data(X, Y), X, Y


# ---------------------------------------------------------------------------------------------
# SR
# ---------------------------------------------------------------------------------------------
def test_sr_population_closed_form_is_a_star_plus_mean_perturbation(rng):
    fam = th.draw_family(8, 4, 2, rng)
    A = th.sr_closed_form(fam.population())
    expected = fam.A_star + np.mean(fam.U_star @ np.swapaxes(fam.U_star, 1, 2), axis=0)
    np.testing.assert_allclose(A, expected, atol=1e-12)


def test_sr_finite_sample_closed_form_is_pooled_least_squares(rng):
    fam = th.draw_family(6, 3, 1, rng)
    q, X, Y = _data_problem(fam, 40, 0.5, rng)
    Xp, Yp = np.concatenate(list(X), axis=1), np.concatenate(list(Y), axis=1)
    pooled = np.linalg.lstsq(Xp.T, Yp.T, rcond=None)[0].T
    np.testing.assert_allclose(th.sr_closed_form(q), pooled, atol=1e-10)


@pytest.mark.parametrize("kind", ["population", "data"])
def test_sr_gradient_descent_converges_to_the_closed_form(kind, rng):
    fam = th.draw_family(6, 3, 1, rng)
    q = fam.population() if kind == "population" else _data_problem(fam, 500, 0.1, rng)[0]
    res = th.sr_gd(q, steps=3000, lr=0.03)
    np.testing.assert_allclose(res.A, th.sr_closed_form(q), atol=1e-8)
    assert np.all(np.diff(res.losses) <= 1e-12)  # monotone for a small enough step


@pytest.mark.parametrize("kind", ["population", "data"])
def test_released_sr_converges_to_sr_biased_by_its_frozen_adapters(kind, rng):
    # Fixed point of A <- A - lr mean_t G_t(A + P_t0): (sum_t C_t - P_t0 S_t)(sum_t S_t)^{-1},
    # computed here independently by least squares on the data shifted by the frozen adapters.
    fam = th.draw_family(6, 2, 1, rng)
    q, X, Y = (
        (fam.population(), None, None)
        if kind == "population"
        else _data_problem(fam, 500, 0.1, rng)
    )
    res = th.sr_released(q, 1, np.random.default_rng(4))
    U0 = 0.1 * np.random.default_rng(4).standard_normal((2, 6, 1))  # lora_ml_paper_gd's first draw
    np.testing.assert_array_equal(res.U, U0)
    P0 = U0 @ np.swapaxes(U0, 1, 2)
    if kind == "population":
        expected = th.sr_closed_form(q) - P0.mean(0)
    else:
        shifted = [Yt - P @ Xt for Xt, Yt, P in zip(X, Y, P0, strict=True)]
        Xp, Yp = np.concatenate(list(X), axis=1), np.concatenate(shifted, axis=1)
        expected = np.linalg.lstsq(Xp.T, Yp.T, rcond=None)[0].T
    np.testing.assert_allclose(res.A, expected, atol=1e-8)
    assert np.linalg.norm(res.A - th.sr_closed_form(q)) > 0.5 * np.linalg.norm(P0.mean(0))


# ---------------------------------------------------------------------------------------------
# LoRA-ML fast solver
# ---------------------------------------------------------------------------------------------
@given(
    T=st.integers(3, 6),
    k=st.integers(1, 3),
    extra=st.integers(0, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_fast_solver_recovers_a_star_and_each_perturbation(T, k, extra, seed):
    """Theorem 3 setting: T >= 3, k(T+1) <= d, generic Gaussian factors."""
    d = k * (T + 1) + extra
    rng = np.random.default_rng(seed)
    fam = th.draw_family(d, T, k, rng)
    assume(fam.genericity().sigma_min_ratio > 1e-3)
    res = th.solve_lora_ml(fam.population(), k)
    assert res.converged
    assert th.base_error(res.A, fam.A_star).relative <= 1e-8
    P_star = np.linalg.norm(fam.perturbations(), axis=(1, 2))
    assert np.all(th.adapter_errors(res.U, fam.U_star) <= 1e-8 * P_star)


def test_fast_solver_is_invariant_under_task_permutation(rng):
    fam = th.draw_family(12, 4, 2, rng)
    perm = np.array([2, 0, 3, 1])
    res = th.solve_lora_ml(fam.population(), 2)
    res_p = th.solve_lora_ml(th.Quadratics.population(fam.targets()[perm]), 2)
    np.testing.assert_allclose(res_p.A, res.A, atol=1e-9)
    PU = res.U @ np.swapaxes(res.U, 1, 2)
    PUp = res_p.U @ np.swapaxes(res_p.U, 1, 2)
    np.testing.assert_allclose(PUp, PU[perm], atol=1e-9)


def test_objective_and_solver_are_invariant_under_orthogonal_factor_rotation(rng):
    d, T, k = 10, 3, 2
    fam = th.draw_family(d, T, k, rng)
    Q = np.stack([np.linalg.qr(rng.standard_normal((k, k)))[0] for _ in range(T)])
    q = fam.population()
    A, U = rng.standard_normal((d, d)), rng.standard_normal((T, d, k))
    assert th.lora_ml_loss(q, A, U @ Q) == pytest.approx(th.lora_ml_loss(q, A, U), rel=1e-12)
    g, gQ = th.lora_ml_grad(q, A, U), th.lora_ml_grad(q, A, U @ Q)
    np.testing.assert_allclose(gQ[1], g[1] @ Q, atol=1e-10)  # grad_U is equivariant
    rotated = th.TaskFamily(fam.A_star, fam.U_star @ Q, fam.U_test)
    np.testing.assert_allclose(rotated.targets(), fam.targets(), atol=1e-12)
    res_r = th.solve_lora_ml(rotated.population(), k)
    assert th.base_error(res_r.A, fam.A_star).relative <= 1e-8


def test_subspace_compression_matches_the_full_space_solution(rng):
    fam = th.draw_family(80, 4, 2, rng)
    q = fam.population()
    full = th.solve_lora_ml(q, 2, compress=False)
    small = th.solve_lora_ml(q, 2, compress=True)
    assert "subspace" in small.message and "subspace" not in full.message
    np.testing.assert_allclose(small.A, full.A, atol=1e-8)
    assert th.base_error(small.A, fam.A_star).relative <= 1e-10


def test_large_population_instance_reaches_relative_error_1e_10(rng):
    fam = th.draw_family(400, 10, 5, rng)
    res = th.solve_lora_ml(fam.population(), 5)
    assert th.base_error(res.A, fam.A_star).relative <= 1e-10


def test_fast_solver_finite_sample_is_stationary_and_beats_the_paper_schedule(rng):
    fam = th.draw_family(8, 3, 1, rng)
    q, _, _ = _data_problem(fam, 400, 0.1, rng)
    fast = th.solve_lora_ml(q, 1)
    paper = th.lora_ml_paper_gd(q, 1, rng, rounds=600)
    assert fast.converged
    assert fast.grad_norm <= 1e-6
    assert fast.objective <= th.lora_ml_loss(q, paper.A, paper.U) + 1e-12


def test_asymmetric_adapters_fit_general_perturbations_with_zero_loss(rng):
    fam = th.draw_family(12, 3, 1, rng, perturbation="general")
    res = th.solve_lora_ml(fam.population(), 1, asymmetric=True)
    assert res.V is not None and res.V.shape == res.U.shape
    assert res.objective <= 1e-16 * float(np.sum(fam.targets() ** 2))


def test_t2_minimiser_has_zero_loss_but_need_not_be_a_star(rng):
    """Theorem 4 setting: the solver reaches a global minimum, which is not unique for T = 2."""
    fam = th.draw_family(10, 2, 1, rng)
    res = th.solve_lora_ml(fam.population(), 1)
    assert res.objective <= 1e-18
    assert th.base_error(res.A, fam.A_star).rank(rtol=1e-6) <= 2  # Theorem 2: rank <= 2k


def test_solver_rejects_bad_rank(rng):
    q = th.draw_family(4, 3, 1, rng).population()
    with pytest.raises(ValueError, match="rank k=5"):
        th.solve_lora_ml(q, 5)


# ---------------------------------------------------------------------------------------------
# The paper's schedule on the paper's default instance (arXiv 2410.22264 v1)
# ---------------------------------------------------------------------------------------------
def test_paper_schedule_on_the_paper_default_instance():
    rng = np.random.default_rng(0)
    d, T, k, N, s = 10, 3, 1, 5000, 0.01
    fam = th.draw_family(d, T, k, rng)
    q, _, _ = _data_problem(fam, N, s, rng)
    gd = th.lora_ml_paper_gd(q, k, rng)  # 3000 rounds x 10 steps
    sr = th.sr_gd(q)
    noise_scale = s * d / np.sqrt(N * T)  # order of the pooled least-squares error
    assert th.base_error(gd.A, fam.A_star).fro <= 5 * noise_scale
    sv = th.base_error(sr.A, fam.A_star).singular_values
    assert sv[k * T - 1] > 100 * noise_scale  # kT large singular values...
    assert sv[k * T] < 5 * noise_scale  # ...and the rest at the noise level
    # The schedule has not fully converged after 3000 rounds (its loss still falls), but it is
    # heading to the fast solver's minimiser and is within the noise level of it.
    fast = th.solve_lora_ml(q, k)
    assert fast.objective <= th.lora_ml_loss(q, gd.A, gd.U)
    assert np.linalg.norm(gd.A - fast.A) <= 0.5 * noise_scale
    assert np.all(np.diff(gd.losses[100:]) <= 1e-12)


def test_paper_schedule_is_reproducible_from_its_seed(rng):
    q = th.draw_family(5, 3, 1, rng).population()
    a = th.lora_ml_paper_gd(q, 1, np.random.default_rng(7), rounds=20)
    b = th.lora_ml_paper_gd(q, 1, np.random.default_rng(7), rounds=20)
    c = th.lora_ml_paper_gd(q, 1, np.random.default_rng(8), rounds=20)
    np.testing.assert_array_equal(a.losses, b.losses)
    assert not np.array_equal(a.losses, c.losses)

"""The first-order error of finite-sample LoRA-ML retraining, against LoRA-ML on data."""

from __future__ import annotations

import numpy as np
import pytest

import loraml.theory as th
from loraml.theory.questions import unequal_n_noisy_cell
from loraml.theory.retraining_error import (
    predicted_retraining_error,
    predicted_retraining_error_unequal,
    retraining_error_ratio_limit,
    tangent_projector,
)


def test_tangent_projector_is_the_orthogonal_projector_onto_the_tangent_space():
    rng = np.random.default_rng(0)
    d, k = 5, 2
    U = rng.standard_normal((d, k))
    Pi = tangent_projector(U)
    np.testing.assert_allclose(Pi, Pi.T, atol=1e-12)
    np.testing.assert_allclose(Pi @ Pi, Pi, atol=1e-12)
    assert np.trace(Pi) == pytest.approx(d * k - k * (k - 1) / 2)
    # Tangent vectors U B^T + B U^T (the derivative of U U^T) are fixed ...
    B = rng.standard_normal((d, k))
    Z = U @ B.T + B @ U.T
    np.testing.assert_allclose((Pi @ Z.ravel()).reshape(d, d), Z, atol=1e-12)
    # ... antisymmetric matrices and symmetric ones living on range(U)^perp are removed.
    G = rng.standard_normal((d, d))
    np.testing.assert_allclose(Pi @ (G - G.T).ravel(), 0, atol=1e-12)
    N = np.linalg.svd(U)[0][:, k:]
    W = N @ N.T @ (G + G.T) @ N @ N.T
    np.testing.assert_allclose(Pi @ W.ravel(), 0, atol=1e-12)


@pytest.mark.parametrize("T", [3, 5])
def test_prediction_matches_lora_ml_on_data_and_the_pooled_rate_does_not(T):
    d, k, s, N, reps = 8, 1, 0.1, 400, 40
    rng = np.random.default_rng(100 + T)
    ratio, pooled = np.empty(reps), np.empty(reps)
    for i in range(reps):
        fam = th.draw_family(d, T, k, rng)
        q = th.Quadratics.from_data(*th.sample_family_data(fam.targets(), N, s, rng))
        err = th.base_error(th.solve_lora_ml(q, k).A, fam.A_star).fro ** 2
        ratio[i] = err / predicted_retraining_error(fam.U_star, s, N)
        pooled[i] = err / (s**2 * d**2 / (N * T))
    # 3 standard errors + 3 % for the dropped O(d/N) terms (S_t = X X^T/N is not exactly I).
    tol = 3 * ratio.std(ddof=1) / np.sqrt(reps) + 0.03
    assert abs(ratio.mean() - 1) <= tol
    assert pooled.mean() - 1 > tol  # README's old "approaches the pooled rate": 1.2-1.35x here


def test_ratio_limit_matches_the_prediction_for_many_tasks():
    # Two computations: the isotropic-average limit and tr(H^{-1}) of one family with T = 400.
    d, k, T = 6, 1, 400
    U = np.random.default_rng(5).standard_normal((T, d, k))
    ratio = predicted_retraining_error(U, 1.0, 1) * T / d**2
    assert ratio == pytest.approx(retraining_error_ratio_limit(d, k), rel=0.02)
    assert retraining_error_ratio_limit(8, 1) > 1.15  # the limit is not the pooled rate 1


def test_two_tasks_are_not_identifiable():
    U = np.random.default_rng(1).standard_normal((2, 6, 1))
    assert predicted_retraining_error(U, 0.1, 100) == np.inf


def test_unequal_sizes_prediction_matches_lora_ml_for_both_task_weightings():
    # LoRA-ML on data with N_t = 200, 632, 2000 (per-task means, and tasks weighted by N_t)
    reps = 30
    out = unequal_n_noisy_cell(
        np.random.default_rng(7), d=8, T=3, k=1, n_min=200, spread=10.0, noise_std=0.1,
        instances=reps, draws=1,
    )  # fmt: skip
    err, pred = out["error"][:, 0], out["predicted"]  # (reps, 2), (reps, 3)
    ratio = err / pred[:, :2]
    # 3 standard errors + 5 % for the dropped O(d/N_t) terms (d/N_t up to 0.04 here)
    tol = 3 * ratio.std(axis=0, ddof=1) / np.sqrt(reps) + 0.05
    assert np.all(np.abs(ratio.mean(axis=0) - 1) <= tol)
    naive = err[:, 0] / pred[:, 2]  # the equal-N formula at the mean N_t
    assert naive.mean() - 1 > 3 * naive.std(ddof=1) / np.sqrt(reps) + 0.05
    assert np.median(err[:, 1] / err[:, 0]) < 1  # weighting by N_t lowers the error


def test_unequal_prediction_refuses_bad_sizes_and_weightings():
    U = np.random.default_rng(2).standard_normal((3, 5, 1))
    with pytest.raises(ValueError, match="Ns must hold 3"):
        predicted_retraining_error_unequal(U, 0.1, [100, 200])
    with pytest.raises(ValueError, match="weighting"):
        predicted_retraining_error_unequal(U, 0.1, [100, 200, 300], weighting="pooled")
    assert predicted_retraining_error_unequal(U[:2], 0.1, [100, 1000]) == np.inf  # T = 2

"""LoRA fine-tuning: Eckart-Young and reduced-rank regression are optimal; GD heads there."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import loraml.theory as th


def _candidates(rng, U, V, n=20, eps=1e-3):
    """Perturbed and random rank-r candidates (U', V') of the same shapes."""
    for _ in range(n):
        yield U + eps * rng.standard_normal(U.shape), V + eps * rng.standard_normal(V.shape)
        yield rng.standard_normal(U.shape), rng.standard_normal(V.shape)


@given(d=st.integers(2, 8), r=st.integers(0, 8), seed=st.integers(0, 2**32 - 1))
def test_population_closed_form_is_eckart_young_and_unbeaten(d, r, seed):
    r = min(r, d)
    rng = np.random.default_rng(seed)
    A, target = rng.standard_normal((2, d, d))
    q = th.Quadratics.population(target)
    res = th.finetune_closed_form(q, A, r)
    sv = np.linalg.svd(target - A, compute_uv=False)
    assert res.loss == pytest.approx(0.5 * np.sum(sv[r:] ** 2), rel=1e-9, abs=1e-12)
    assert np.linalg.matrix_rank(res.U @ res.V.T) <= r
    for U, V in _candidates(rng, res.U, res.V):
        assert q.losses(A + U @ V.T)[0] >= res.loss - 1e-10


@given(
    d=st.integers(2, 6),
    r=st.integers(1, 6),
    n=st.integers(2, 30),
    seed=st.integers(0, 2**32 - 1),
)
def test_reduced_rank_regression_is_unbeaten(d, r, n, seed):
    """Also when n < d (the sample covariance is singular)."""
    r = min(r, d)
    rng = np.random.default_rng(seed)
    A, target = rng.standard_normal((2, d, d))
    X, Y = th.sample_task_data(target, n, 0.5, rng)
    q = th.Quadratics.from_data(X, Y)
    res = th.finetune_closed_form(q, A, r)
    for U, V in _candidates(rng, res.U, res.V):
        assert th.sample_loss(A + U @ V.T, X, Y) >= res.loss - 1e-9 * max(1.0, res.loss)


def test_reduced_rank_regression_full_rank_is_least_squares(rng):
    d, n = 5, 50
    A, target = rng.standard_normal((2, d, d))
    X, Y = th.sample_task_data(target, n, 0.3, rng)
    res = th.finetune_closed_form(th.Quadratics.from_data(X, Y), A, d)
    ls = np.linalg.lstsq(X.T, Y.T, rcond=None)[0].T
    np.testing.assert_allclose(A + res.U @ res.V.T, ls, atol=1e-9)


@pytest.mark.parametrize("kind", ["population", "data"])
def test_gradient_descent_decreases_to_the_closed_form(kind, rng):
    d, r = 6, 2
    A = rng.standard_normal((d, d))
    target = A + rng.standard_normal((d, r)) @ rng.standard_normal((r, d))
    if kind == "population":
        q = th.Quadratics.population(target)
    else:
        q = th.Quadratics.from_data(*th.sample_task_data(target, 200, 0.05, rng))
    gd = th.finetune_gd(q, A, r, rng, steps=4000, lr=0.02)
    best = th.finetune_closed_form(q, A, r).loss
    assert gd.losses[-1] <= best + 1e-6 * max(1.0, gd.losses[0])
    assert gd.losses[-1] < 1e-3 * gd.losses[0] or best > 1e-3 * gd.losses[0]


def test_paper_test_loss_is_the_noise_free_sum_over_inputs(rng):
    d, n, r = 5, 30, 1
    A, target = rng.standard_normal((2, d, d))
    X, Y = th.sample_task_data(target, n, 0.2, rng)
    gd = th.finetune_gd(th.Quadratics.from_data(X, Y), A, r, rng, steps=3, target=target)
    D = target - A - gd.U @ gd.V.T
    assert gd.test_losses[-1] == pytest.approx(np.sum((D @ X) ** 2), rel=1e-10)


def test_finetune_rejects_several_tasks(rng):
    q = th.draw_family(4, 3, 1, rng).population()
    with pytest.raises(ValueError, match="one task"):
        th.finetune_closed_form(q, np.zeros((4, 4)), 1)

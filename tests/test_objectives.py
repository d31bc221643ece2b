"""Losses, gradients and Hessian-vector products (Taylor tests) and the sufficient statistics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import loraml.theory as th
from tests.helpers import taylor_slope


def _problem(kind: str, d: int, T: int, rng: np.random.Generator) -> th.Quadratics:
    fam = th.draw_family(d, T, 1, rng)
    if kind == "population":
        return fam.population()
    if kind == "covariance":
        G = rng.standard_normal((d, d))
        return th.Quadratics.population(fam.targets(), cov=G @ G.T / d + np.eye(d))
    X, Y = th.sample_family_data(fam.targets(), 3 * d, 0.3, rng)
    return th.Quadratics.from_data(X, Y)


KINDS = ["population", "covariance", "data"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("asymmetric", [False, True])
def test_lora_ml_gradient_passes_taylor_test(kind, asymmetric, rng):
    d, T, k = 6, 3, 2
    q = _problem(kind, d, T, rng)
    A, dA = rng.standard_normal((2, d, d))
    U, dU, V, dV = rng.standard_normal((4, T, d, k))
    if not asymmetric:
        V = dV = None
    g = th.lora_ml_grad(q, A, U, V)
    directional = np.sum(g[0] * dA) + np.sum(g[1] * dU) + (0 if V is None else np.sum(g[2] * dV))

    def f(h):
        return th.lora_ml_loss(q, A + h * dA, U + h * dU, None if V is None else V + h * dV)

    slope, _ = taylor_slope(f, directional)
    assert slope == pytest.approx(2.0, abs=0.1)
    # A wrong gradient (sign flipped on the adapters) must fail the same test.
    wrong = np.sum(g[0] * dA) - np.sum(g[1] * dU)
    assert taylor_slope(f, wrong)[0] < 1.5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("asymmetric", [False, True])
def test_lora_ml_hvp_passes_taylor_test_on_the_gradient(kind, asymmetric, rng):
    d, T, k = 5, 3, 2
    q = _problem(kind, d, T, rng)
    A, dA = rng.standard_normal((2, d, d))
    U, dU, V, dV = rng.standard_normal((4, T, d, k))
    if not asymmetric:
        V = dV = None
    H = th.lora_ml_hvp(q, A, U, dA, dU, V, dV)
    w = [rng.standard_normal(h.shape) for h in H]  # probe: <w, grad(x + h dx)>

    def f(h):
        g = th.lora_ml_grad(q, A + h * dA, U + h * dU, None if V is None else V + h * dV)
        return float(sum(np.sum(wi * gi) for wi, gi in zip(w, g, strict=True)))

    slope, _ = taylor_slope(f, float(sum(np.sum(wi * hi) for wi, hi in zip(w, H, strict=True))))
    assert slope == pytest.approx(2.0, abs=0.1)


def test_hvp_is_symmetric(rng):
    d, T, k = 5, 3, 2
    q = _problem("data", d, T, rng)
    A, dA1, dA2 = rng.standard_normal((3, d, d))
    U, dU1, dU2 = rng.standard_normal((3, T, d, k))
    h1 = th.lora_ml_hvp(q, A, U, dA1, dU1)
    h2 = th.lora_ml_hvp(q, A, U, dA2, dU2)
    lhs = np.sum(h1[0] * dA2) + np.sum(h1[1] * dU2)
    rhs = np.sum(h2[0] * dA1) + np.sum(h2[1] * dU1)
    assert lhs == pytest.approx(rhs, rel=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_task_gradient_passes_taylor_test(kind, rng):
    q = _problem(kind, 6, 2, rng)
    M, dM = rng.standard_normal((2, 6, 6))
    G = q.grads(M)
    slope, _ = taylor_slope(lambda h: float(q.losses(M + h * dM).sum()), float(np.sum(G * dM)))
    assert slope == pytest.approx(2.0, abs=0.1)


@given(
    d=st.integers(1, 7),
    T=st.integers(1, 4),
    N=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
)
def test_sufficient_statistics_equal_raw_data_losses(d, T, N, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((T, d, N))
    Y = rng.standard_normal((T, d, N)) * 3
    M = rng.standard_normal((T, d, d))
    q = th.Quadratics.from_data(X, Y)
    raw = np.array([th.sample_loss(M[t], X[t], Y[t]) for t in range(T)])
    np.testing.assert_allclose(q.losses(M), raw, rtol=1e-9, atol=1e-12)
    raw_grads = np.stack([-(Y[t] - M[t] @ X[t]) @ X[t].T / N for t in range(T)])
    np.testing.assert_allclose(q.grads(M), raw_grads, rtol=1e-8, atol=1e-10)


def test_population_losses_match_excess_loss_and_covariance_form(rng):
    fam = th.draw_family(5, 3, 2, rng)
    M = rng.standard_normal((5, 5))
    q = fam.population()
    expected = [th.excess_loss(M, A) for A in fam.targets()]
    np.testing.assert_allclose(q.losses(M), expected, rtol=1e-12)
    G = rng.standard_normal((5, 5))
    cov = G @ G.T
    qc = th.Quadratics.population(fam.targets(), cov=cov)
    direct = [0.5 * np.trace((M - A) @ cov @ (M - A).T) for A in fam.targets()]
    np.testing.assert_allclose(qc.losses(M), direct, rtol=1e-10)


def test_population_loss_is_the_large_sample_limit(rng):
    """E[1/(2N)||Y - MX||^2] = 1/2||M - A||^2 + d s^2 / 2: the finite loss converges to it."""
    fam = th.draw_family(4, 1, 1, rng)
    s = 0.5
    X, Y = th.sample_task_data(fam.targets()[0], 200_000, s, rng)
    M = rng.standard_normal((4, 4))
    finite = th.sample_loss(M, X, Y)
    population = th.excess_loss(M, fam.targets()[0]) + 4 * s**2 / 2
    assert finite == pytest.approx(population, rel=0.02)


def test_losses_are_accurate_near_a_zero_residual_minimum(rng):
    """No catastrophic cancellation: a 1e-9 perturbation of the optimum gives loss ~1e-18."""
    fam = th.draw_family(8, 3, 1, rng)
    q = fam.population()
    E = 1e-9 * rng.standard_normal((8, 8))
    expected = 0.5 * np.sum(E**2) * 3
    assert float(q.losses(fam.targets() + E).sum()) == pytest.approx(expected, rel=1e-6)

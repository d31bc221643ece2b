"""Task families, genericity (Remark 1) and data sampling."""

from __future__ import annotations

import numpy as np
import pytest

import loraml.theory as th


def test_family_is_determined_by_the_seed():
    a = th.draw_family(6, 3, 2, np.random.default_rng(3))
    b = th.draw_family(6, 3, 2, np.random.default_rng(3))
    c = th.draw_family(6, 3, 2, np.random.default_rng(4))
    np.testing.assert_array_equal(a.targets(), b.targets())
    assert not np.allclose(a.A_star, c.A_star)


def test_family_shapes_and_symmetry(rng):
    fam = th.draw_family(7, 4, 2, rng, n_test=3)
    assert (fam.d, fam.T, fam.k) == (7, 4, 2)
    assert fam.test_targets().shape == (3, 7, 7)
    np.testing.assert_allclose(fam.A_star, fam.A_star.T)
    for P in fam.perturbations():
        assert np.linalg.eigvalsh(P).min() >= -1e-10  # PSD
        assert np.linalg.matrix_rank(P) == 2
    general = th.draw_family(7, 4, 2, rng, symmetric_base=False, perturbation="general")
    assert not np.allclose(general.A_star, general.A_star.T)
    assert not np.allclose(general.perturbations(), np.swapaxes(general.perturbations(), 1, 2))


def test_genericity_holds_exactly_when_columns_fit(rng):
    assert th.draw_family(8, 3, 2, rng).genericity().holds  # k(T+1) = 8 <= 8
    over = th.draw_family(7, 3, 2, rng).genericity()  # 8 > 7
    assert not over.holds and over.rank == 7 and over.sigma_min_ratio == 0.0
    U = rng.standard_normal((3, 10, 1))
    U[2] = U[0] + U[1]  # dependent columns
    assert not th.genericity(U).holds


def test_bad_family_arguments_are_named():
    with pytest.raises(ValueError, match="k=5 exceeds dimension d=4"):
        th.draw_family(4, 2, 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="perturbation"):
        th.draw_family(4, 2, 1, np.random.default_rng(0), perturbation="skew")


def test_noise_is_a_standard_deviation(rng):
    target = rng.standard_normal((4, 4))
    X, Y = th.sample_task_data(target, 50_000, 0.01, rng)
    assert np.std(Y - target @ X) == pytest.approx(0.01, rel=0.02)


def test_input_covariance_is_honoured(rng):
    G = rng.standard_normal((3, 3))
    cov = G @ G.T + np.eye(3)
    X, _ = th.sample_task_data(np.eye(3), 100_000, 0.0, rng, cov=cov)
    np.testing.assert_allclose(X @ X.T / X.shape[1], cov, atol=0.05 * np.abs(cov).max())


def test_metrics_respect_the_orthogonal_symmetry(rng):
    U = rng.standard_normal((6, 2))
    Q = np.linalg.qr(rng.standard_normal((2, 2)))[0]
    assert th.procrustes_distance(U @ Q, U) == pytest.approx(0.0, abs=1e-12)
    assert th.procrustes_distance(U + 1.0, U) > 0.1
    assert th.adapter_errors((U @ Q)[None], U[None])[0] == pytest.approx(0.0, abs=1e-12)
    err = th.base_error(np.eye(3) + np.diag([1.0, 0.0, 0.0]), np.eye(3))
    assert err.rank() == 1 and err.fro == pytest.approx(1.0)

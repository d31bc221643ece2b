"""Predictions of loraml.theory.adaptation measured against what they predict.

Each prediction is compared with a Monte Carlo measurement, never with itself: the tolerance is
three standard errors of the measured mean plus the size of the term the derivation drops.
"""

from __future__ import annotations

import numpy as np
import pytest

import loraml.theory as th
from loraml.theory.adaptation import (
    finetune_excess_risk,
    predicted_excess_risk,
    sr_floor,
    sr_floor_prediction,
    sr_floor_upper_bound,
)


def _measured_floor(d: int, k: int, T: int, instances: int, rng: np.random.Generator):
    f = np.empty(instances)
    for i in range(instances):
        fam = th.draw_family(d, T, k, rng)
        f[i] = sr_floor(fam.targets(), fam.test_targets()[0], k)
    return f.mean(), f.std(ddof=1) / np.sqrt(instances)


@pytest.mark.parametrize(("d", "k"), [(20, 1), (24, 2)])
def test_sr_floor_prediction_matches_the_measured_floor_and_the_upper_bound_does_not(d, k):
    # Tolerance: 3 standard errors + 2 %. The derivation drops the Schur-complement coupling
    # term, of order k^3/T against a floor of order (d-k)k^2/2: at most ~1.5 % at T = 5 here.
    rng = np.random.default_rng(2024 + d)
    for T in (5, 20, 100):
        mean, se = _measured_floor(d, k, T, 600, rng)
        tol = 3 * se / mean + 0.02
        pred = float(sr_floor_prediction(d, k, T))
        assert abs(pred / mean - 1) <= tol, (T, pred, mean, tol)
        # E[1/2 ||A_SR - A*||^2] (the old prediction) is 5-14 % high: it fails the same test.
        bound = float(sr_floor_upper_bound(d, k, T))
        assert bound / mean - 1 > tol, (T, bound, mean, tol)


def test_sr_floor_prediction_limits():
    # T -> infinity: the floor tends to (d-k)k^2/2, the bound to d k^2/2 (derived limits).
    assert float(sr_floor_prediction(24, 2, 10**12)) == pytest.approx(22 * 4 / 2)
    assert float(sr_floor_upper_bound(24, 2, 10**12)) == pytest.approx(24 * 4 / 2)
    assert np.all(np.diff(sr_floor_prediction(20, 1, np.arange(1, 50))) < 0)


def test_finite_n_excess_risk_explains_reduced_rank_regression_and_the_asymptote_does_not():
    # Exact base A*, so the residual has rank exactly k; high SNR (eigenvalues ~ d >> s sqrt(d/n)).
    d, k, s = 10, 1, 0.1
    rng = np.random.default_rng(7)
    fams = [th.draw_family(d, 3, k, rng) for _ in range(8)]
    for n in (30, 100):
        risk = np.concatenate(
            [
                finetune_excess_risk(f.A_star, f.test_targets()[0], k, n, s, rng, reps=60)
                for f in fams
            ]
        )
        mean, se = risk.mean(), risk.std(ddof=1) / np.sqrt(risk.size)
        tol = 3 * se / mean  # the dropped second-order terms are O(s^2 d / (n sigma_k^2)) ~ 1e-4
        finite = predicted_excess_risk(d, k, n, s, finite_n=True)
        assert abs(mean / finite - 1) <= tol, (n, mean, finite, tol)
        asymptotic = predicted_excess_risk(d, k, n, s)
        assert mean / asymptotic - 1 > tol, (n, mean, asymptotic, tol)  # 34 % and 8 % high


def test_finite_n_prediction_input_checks_and_limit():
    with pytest.raises(ValueError, match="n > d \\+ 1"):
        predicted_excess_risk(10, 1, 11, 0.1, finite_n=True)
    # n -> infinity: the finite-n value tends to the asymptotic one.
    big = 10**9
    assert predicted_excess_risk(10, 2, big, 0.1, finite_n=True) == pytest.approx(
        predicted_excess_risk(10, 2, big, 0.1), rel=1e-6
    )

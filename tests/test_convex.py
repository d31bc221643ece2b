"""Convex relaxations: optimality against the feasible truth, derived recovery conditions, the
finite-sample analogues, the SCS path, and ``loraml solve --method convex-*``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import loraml.theory as th
from loraml.cli import main
from loraml.theory.convex import default_penalty, nuclear_relaxation, sdp_relaxation
from loraml.theory.io import save_family, write_npz


@given(T=st.integers(2, 5), k=st.integers(1, 2), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=10)
def test_sdp_is_feasible_and_at_least_as_good_as_a_star(T, k, seed):
    """A* is feasible (A_t* - A* = U_t* U_t*^T >= 0), so the SDP's optimum has tr >= tr(A*)."""
    fam = th.draw_family(8, T, k, np.random.default_rng(seed))
    res = sdp_relaxation(fam.population())
    assert res.ok and res.solver == "CLARABEL"
    assert np.trace(res.A) >= np.trace(fam.A_star) - 1e-6 * np.linalg.norm(fam.A_star)
    for target in fam.targets():
        gap = np.linalg.eigvalsh(0.5 * (target + target.T) - 0.5 * (res.A + res.A.T))[0]
        assert gap >= -1e-6 * np.linalg.norm(target)
    # the skew part of a PSD family's base is common to all tasks and kept exactly
    np.testing.assert_allclose(res.A - res.A.T, fam.A_star - fam.A_star.T, atol=1e-9)


@given(T=st.integers(2, 5), k=st.integers(1, 2), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=8)
def test_nuclear_median_is_no_worse_than_a_star(T, k, seed):
    fam = th.draw_family(8, T, k, np.random.default_rng(seed))
    res = nuclear_relaxation(fam.population())
    assert res.ok
    at_star = sum(np.linalg.norm(P, "nuc") for P in fam.perturbations())
    at_result = sum(np.linalg.norm(t - res.A, "nuc") for t in fam.targets())
    assert res.objective <= at_star * (1 + 1e-6)
    assert at_result == pytest.approx(res.objective, rel=1e-5)
    np.testing.assert_allclose(res.deviations, fam.targets() - res.A, atol=1e-12)


def test_sdp_cannot_recover_a_star_for_two_tasks_with_overlapping_ranges(rng):
    """Derived: optimality of A* needs Y_1 + Y_2 = I, Y_t >= 0, Y_t U_t* = 0, which forces the
    ranges of U_1*, U_2* to be orthogonal; generic Gaussian factors are not."""
    fam = th.draw_family(8, 2, 1, rng)
    res = sdp_relaxation(fam.population())
    assert res.ok
    assert th.base_error(res.A, fam.A_star).relative > 1e-3
    assert np.trace(res.A) > np.trace(fam.A_star) + 1e-3


def test_sdp_recovers_a_star_for_two_tasks_with_orthogonal_ranges(rng):
    """Certificate Y_1 = P_2 + P_rest / 2, Y_2 = P_1 + P_rest / 2 (orthogonal ranges)."""
    d, k = 8, 2
    Q, _ = np.linalg.qr(rng.standard_normal((d, 2 * k)))
    U = np.stack([Q[:, :k] * [2.0, 1.5], Q[:, k:] * [1.0, 3.0]])
    fam = th.TaskFamily(th.draw_family(d, 1, 1, rng).A_star, U, U[:0])
    res = sdp_relaxation(fam.population())
    assert th.base_error(res.A, fam.A_star).relative <= 1e-6


def test_relaxations_differ_on_an_instance_where_only_the_sdp_recovers():
    """Seeded instance (d=10, T=4, k=2) where the nuclear-norm median misses A* and the SDP and
    LoRA-ML find it (loraml verify's convex measurement finds such instances routinely)."""
    for seed in range(20):
        fam = th.draw_family(10, 4, 2, np.random.default_rng(seed))
        nuc = nuclear_relaxation(fam.population())
        sdp = sdp_relaxation(fam.population())
        if th.base_error(nuc.A, fam.A_star).relative > 1e-2:
            break
    else:
        pytest.fail("the nuclear-norm median recovered A* on all 20 seeds")
    assert th.base_error(sdp.A, fam.A_star).relative <= 1e-5
    assert th.base_error(th.solve_lora_ml(fam.population(), 2).A, fam.A_star).relative <= 1e-8


def test_finite_sample_analogues_tend_to_the_population_problems_without_noise(rng):
    """Noise-free data: the penalised solution approaches the population one linearly in lambda."""
    fam = th.draw_family(6, 4, 1, rng)
    X, Y = th.sample_family_data(fam.targets(), 60, 0.0, rng)
    q = th.Quadratics.from_data(X, Y)
    for fn in (sdp_relaxation, nuclear_relaxation):
        pop = fn(fam.population())
        assert pop.penalty is None
        errs = []
        for lam in (1e-3, 1e-4):
            fs = fn(q, penalty=lam)
            assert fs.penalty == lam and fs.ok
            errs.append(np.linalg.norm(fs.A - pop.A) / np.linalg.norm(pop.A))
        assert errs[0] <= 1e-2
        assert errs[1] <= 0.2 * errs[0]


def test_finite_sample_sdp_deviations_are_psd_and_beat_sr(rng):
    fam = th.draw_family(6, 4, 1, rng)
    X, Y = th.sample_family_data(fam.targets(), 400, 0.05, rng)
    q = th.Quadratics.from_data(X, Y)
    res = sdp_relaxation(q)
    assert res.penalty == pytest.approx(default_penalty(q))
    assert all(np.linalg.eigvalsh(P)[0] >= -1e-6 for P in res.deviations)
    err = th.base_error(res.A, fam.A_star).relative
    assert err < 0.1 * th.base_error(th.sr_closed_form(q), fam.A_star).relative


def test_default_penalty_estimates_the_noise_level(rng):
    """lambda = 2 s_hat sqrt(d/N) with s_hat from the least-squares residuals."""
    d, N, s = 6, 4000, 0.3
    fam = th.draw_family(d, 3, 1, rng)
    X, Y = th.sample_family_data(fam.targets(), N, s, rng)
    lam = default_penalty(th.Quadratics.from_data(X, Y))
    assert lam == pytest.approx(2 * s * np.sqrt(d / N), rel=0.05)


def test_bad_penalties_are_rejected(rng):
    fam = th.draw_family(6, 3, 1, rng)
    X, Y = th.sample_family_data(fam.targets(), 5, 0.1, rng)
    q = th.Quadratics.from_data(X, Y)
    with pytest.raises(ValueError, match="N=5 <= d=6"):
        nuclear_relaxation(q)
    with pytest.raises(ValueError, match="penalty must be > 0"):
        sdp_relaxation(q, penalty=0.0)
    with pytest.raises(ValueError, match="finite-sample"):
        default_penalty(fam.population())


def test_scs_is_used_beyond_30_by_30(rng):
    fam = th.draw_family(32, 3, 1, rng)
    res = sdp_relaxation(fam.population())
    assert res.solver == "SCS" and res.ok
    assert np.trace(res.A) >= np.trace(fam.A_star) - 1e-4 * np.linalg.norm(fam.A_star)
    assert th.base_error(res.A, fam.A_star).relative <= 1e-4


# ---------------------------------------------------------------------------------------------
# loraml solve --method convex-nuclear / convex-sdp
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["convex-nuclear", "convex-sdp"])
def test_solve_cli_runs_the_relaxations(method, tmp_path, capsys):
    fam = th.draw_family(8, 6, 1, np.random.default_rng(3))
    path, out = tmp_path / "pop.npz", tmp_path / "out.npz"
    save_family(path, fam)
    code = main(["solve", "--instance", str(path), "--method", method, "--out", str(out), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "optimal" and report["solver"] == "CLARABEL"
    assert report["penalty"] is None
    expected = (nuclear_relaxation if method == "convex-nuclear" else sdp_relaxation)(
        fam.population()
    )
    with np.load(out) as z:
        np.testing.assert_allclose(z["A_hat"], expected.A, atol=1e-6)
        assert "U_hat" not in z.files
    assert report["a_error_fro"] == pytest.approx(np.linalg.norm(expected.A - fam.A_star), abs=1e-6)


def test_solve_cli_convex_on_too_few_samples_is_a_usage_error(tmp_path, capsys, rng):
    fam = th.draw_family(6, 3, 1, rng)
    X, Y = th.sample_family_data(fam.targets(), 4, 0.1, rng)
    path = tmp_path / "data.npz"
    write_npz(path, X=X, Y=Y)
    out = tmp_path / "out.npz"
    code = main(["solve", "--instance", str(path), "--method", "convex-sdp", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "N=4 <= d=6" in err
    assert not out.exists()

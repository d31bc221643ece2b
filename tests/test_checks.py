"""The paper's statements as property tests (loraml.theory.checks), counterexamples that must make
the checks fail, the measurements' qualitative findings, and ``loraml verify``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import loraml.theory as th
import loraml.theory.checks as checks
from loraml.cli import main
from loraml.theory.io import save_family, write_npz

SEEDS = st.integers(0, 2**32 - 1)


def _generic(seed, d, T, k):
    return checks.draw_generic_family(np.random.default_rng(seed), d, T, k)


# ---------------------------------------------------------------------------------------------
# margins
# ---------------------------------------------------------------------------------------------
def test_margins_are_decades_and_positive_exactly_when_the_claim_holds():
    assert checks.below(1e-12, 1e-10) == pytest.approx(2.0)
    assert checks.below(1e-8, 1e-10) == pytest.approx(-2.0)
    assert checks.above(1e-3, 1e-6) == pytest.approx(3.0)
    assert checks.above(0.0, 1e-6) < 0
    assert checks.below(0.0, 1e-10) > 0


# ---------------------------------------------------------------------------------------------
# Theorem 1 and Corollary 1
# ---------------------------------------------------------------------------------------------
def _theorem1_and_corollary1(T, k, extra, seed):
    fam = _generic(seed, k * (T + 1) + extra, T, k)
    rng = np.random.default_rng(seed)
    r1 = checks.check_theorem1(rng, families=[fam])
    r2 = checks.check_corollary1(rng, families=[fam], reps_for_T=0)
    assert r1.held and r1.worst_margin > 0 and r1.instances == 1, r1.failures
    assert r2.held and r2.worst_margin > 0 and r2.instances == 1, r2.failures


@given(T=st.integers(1, 5), k=st.integers(1, 3), extra=st.integers(0, 5), seed=SEEDS)
def test_theorem1_and_corollary1_hold_on_generic_families(T, k, extra, seed):
    _theorem1_and_corollary1(T, k, extra, seed)


@pytest.mark.slow
@given(T=st.integers(1, 10), k=st.integers(1, 4), extra=st.integers(0, 10), seed=SEEDS)
@settings(max_examples=400)
def test_theorem1_and_corollary1_hold_on_generic_families_thorough(T, k, extra, seed):
    _theorem1_and_corollary1(T, k, extra, seed)


def test_theorem1_check_fails_without_genericity(rng):
    fam = th.draw_family(10, 3, 1, rng)
    U = fam.U_star.copy()
    U[2] = U[0]  # two identical tasks: rank(A_SR - A*) = 2 < kT = 3
    res = checks.check_theorem1(rng, families=[th.TaskFamily(fam.A_star, U, fam.U_test)])
    assert res.held is False and res.worst_margin < 0
    assert any("rank(A_SR - A*) < 3" in f for f in res.failures)


def test_corollary1_check_fails_when_the_test_task_repeats_a_retraining_task(rng):
    fam = th.draw_family(10, 3, 1, rng)
    res = checks.check_corollary1(
        rng, families=[th.TaskFamily(fam.A_star, fam.U_star, fam.U_star[:1])], reps_for_T=0
    )
    assert res.held is False
    assert any("floor 0 at r=k(T+1)-1" in f for f in res.failures)


def test_sr_floor_value_falls_with_the_number_of_tasks(rng):
    """Derived (arXiv 2410.22264 Cor. 1): the value of SR's rank-k floor shrinks with T."""
    res = checks.check_corollary1(rng, instances=0, T_values=(1, 11), reps_for_T=12)
    by_T = res.numbers["floor_rank_k_by_T"]
    assert by_T[11]["mean"] < 0.5 * by_T[1]["mean"]
    assert by_T[11]["min"] > 0


# ---------------------------------------------------------------------------------------------
# Theorems 2, 3, 4
# ---------------------------------------------------------------------------------------------
@given(T=st.integers(2, 3), k=st.integers(1, 2), extra=st.integers(0, 3), seed=SEEDS)
@settings(max_examples=8)
def test_theorem2_holds(T, k, extra, seed):
    fam = _generic(seed, k * (T + 1) + extra, T, k)
    res = checks.check_theorem2(np.random.default_rng(seed), families=[fam], starts=2)
    assert res.held, res.failures


def test_lora_ml_at_two_tasks_lands_on_rank_2k_minima_not_on_a_star(rng):
    """Why the paper fine-tunes with rank 3k at T = 2: random starts find the continuous family."""
    fams = [checks.draw_generic_family(rng, 8, 2, 1) for _ in range(2)]
    res = checks.check_theorem2(rng, families=fams, starts=3)
    assert res.held
    assert res.numbers["found_minima"]["T=2"] == 6
    assert res.numbers["fraction_of_found_minima_with_rank_2k"]["T=2"] == 1.0


def _theorem3(T, k, extra, seed):
    fam = _generic(seed, k * (T + 1) + extra, T, k)
    res = checks.check_theorem3(np.random.default_rng(seed), families=[fam], starts=2)
    assert res.held and res.worst_margin > 0, res.failures
    assert res.numbers["end_points"].get("global", 0) >= 1  # not vacuous


@given(T=st.integers(3, 5), k=st.integers(1, 2), extra=st.integers(0, 3), seed=SEEDS)
@settings(max_examples=10)
def test_theorem3_holds(T, k, extra, seed):
    _theorem3(T, k, extra, seed)


@pytest.mark.slow
@given(T=st.integers(3, 8), k=st.integers(1, 3), extra=st.integers(0, 6), seed=SEEDS)
@settings(max_examples=150)
def test_theorem3_holds_thorough(T, k, extra, seed):
    _theorem3(T, k, extra, seed)


def test_theorem3_check_fails_for_two_tasks(rng):
    """T >= 3 is needed: at T = 2 the zero-loss minimisers found are not A*."""
    fam = checks.draw_generic_family(rng, 8, 2, 1)
    res = checks.check_theorem3(rng, families=[fam], starts=2)
    assert res.held is False
    assert any("A_hat != A*" in f for f in res.failures)


def test_theorem4_holds(rng):
    fam = checks.draw_generic_family(rng, 7, 2, 2)
    res = checks.check_theorem4(rng, families=[fam], starts=2)
    assert res.held and res.instances == 1, res.failures
    assert res.numbers["pgd_kicks_max"] >= 1  # the run started at the saddle needed a kick


# ---------------------------------------------------------------------------------------------
# Measurements: rate, retraining, convex, beyond, spurious
# ---------------------------------------------------------------------------------------------
def test_adaptation_rate_is_one_over_n_with_the_derived_constant(rng):
    res = checks.check_rate(rng, instances=1, reps=40)
    assert res.held, res.failures
    assert -1.15 <= res.numbers["slope"][0] <= -0.85
    assert 0.8 <= res.numbers["ratio_to_predicted_constant"][0] <= 1.25
    # the finite-n prediction is drawn from the same n, and the risk sits on it at every n
    assert all(0.8 <= r <= 1.25 for r in res.numbers["ratio_to_finite_n_prediction_by_n"][0])
    assert res.numbers["predicted_slope"][0] < -1  # finite n bends the fitted slope below -1
    # SR: rank k cannot go below its floor; rank k(T+1) pays the larger variance
    assert res.numbers["sr_rank_k_risk_over_floor_at_max_n"][0] >= 0.99
    measured = res.numbers["sr_rank_kT1_risk_over_lora_ml_rank_k_risk_at_max_n"][0]
    assert measured == pytest.approx(res.numbers["predicted_variance_ratio_kT1_over_k"][0], rel=0.3)


def test_sr_rank_kT1_variance_ratio_follows_the_finite_n_prediction(rng):
    # at n = 20 (d = 10, k = 1, K = 4) the finite-n ratio and its asymptote differ by 11 %
    res = checks.check_rate(rng, instances=3, ns=(15, 20), reps=300)
    n = res.numbers
    finite = n["predicted_variance_ratio_kT1_over_k"][0]
    asymptotic = n["predicted_variance_ratio_kT1_over_k_asymptotic"][0]
    assert finite > 1.1 * asymptotic
    assert min(n["sr_residual_sigma_K_over_noise_scale"]) > 5  # the derivation's high SNR
    measured = float(np.mean(n["sr_rank_kT1_risk_over_lora_ml_rank_k_risk_at_max_n"]))
    assert measured == pytest.approx(finite, rel=0.05)
    assert abs(np.log(measured / finite)) < 0.5 * abs(np.log(measured / asymptotic))


def test_finite_sample_lora_ml_error_shrinks_like_one_over_n(rng):
    res = checks.check_retraining(rng, reps=4, Ns=(100, 400, 1600), Ts=(3,))
    row = res.numbers["by_T"]["T=3"]
    assert res.held is None and not res.claimed
    assert -1.3 <= row["slope_in_N"] <= -0.7
    assert all(0.7 <= r <= 1.4 for r in row["ratio_to_prediction"])  # 4 reps: noisy
    assert all(r > 1.2 for r in row["predicted_ratio_to_s2d2_over_NT"])  # T = 3: not pooled
    assert max(row["lora_ml_sq_error"]) < 1e-2 * min(row["sr_sq_error"])


def test_convex_measurement_solves_both_relaxations_and_sdp_misses_at_two_tasks(rng):
    res = checks.check_convex(rng, reps=2, grid=[(8, 2, 1), (8, 6, 1)])
    assert res.held and not res.claimed  # both solved to at least A*'s objective value
    table = res.numbers["by_setting"]
    assert table["d=8,T=2,k=1"]["recovered"]["sdp"] == 0  # derived: impossible at T = 2
    assert table["d=8,T=6,k=1"]["recovered"]["lora_ml"] == 2  # Theorem 3


def test_beyond_the_assumptions_asymmetric_adapters_handle_general_perturbations(rng):
    res = checks.check_beyond(rng, reps=2)
    n = res.numbers
    assert n["general_UV_d12_T3_k1/symmetric_adapters"]["median_A_relative_error"] > 1e-2
    assert n["general_UV_d12_T3_k1/asymmetric_adapters"]["median_A_relative_error"] < 1e-6


def test_spurious_search_classifies_every_run_and_keeps_spurious_minima(rng):
    res = checks.check_spurious(rng, instances=2, starts=3, gd_starts=1)
    counts = res.numbers["end_points"]
    assert set(counts) == {"spread=0.0", "spread=1.0"}
    for row in counts.values():
        kinds = {"global", "saddle", "spurious", "unconverged"}
        assert sum(v for key, v in row["lbfgs"].items() if key in kinds) == 3
        assert sum(v for key, v in row["gd"].items() if key in kinds) == 1
    assert res.numbers["spurious_found"] == len(res.artifacts)
    json.dumps(res.to_json(), allow_nan=False)


def test_a_spurious_local_minimum_exists_for_three_tasks():
    """v1 appendix: for T >= 3 spurious local minima can exist. A seeded generic instance
    (d = 4, T = 3, k = 1, task scales exp(N(0, 1))) where random starts meet one."""
    rng = np.random.default_rng(8)
    fam = th.draw_family(4, 3, 1, rng)
    scales = np.exp(rng.normal(0, 1, 3))[:, None, None]
    fam = th.TaskFamily(fam.A_star, fam.U_star * scales, fam.U_test)
    assert fam.genericity().holds
    res = checks.check_spurious(rng, families=[fam], starts=4, gd_starts=0)
    assert res.numbers["end_points"]["given"]["lbfgs"].get("spurious", 0) >= 1
    example = res.numbers["spurious_examples"][0]
    assert example["loss_over_F00"] > 1e-9  # not a zero-loss point ...
    assert example["A_relative_error"] > 1e-2  # ... far from A* ...
    assert example["eigenvalue_after_symmetry"] > 0  # ... with positive curvature (k = 1) ...
    assert example["resolve_min_over_loss"] == pytest.approx(1.0, abs=1e-6)  # ... and a basin
    kept = next(iter(res.artifacts.values()))
    q = fam.population()
    again = th.solve_lora_ml(q, 1, init=(kept["A0"], kept["U0"]))  # reproducible from its start
    assert again.objective == pytest.approx(example["loss_over_F00"] * 0.5 * q.c.sum(), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# loraml verify
# ---------------------------------------------------------------------------------------------
REQUIRED = ("theorem1", "corollary1", "theorem2", "theorem3", "theorem4", "rate", "convex")


def test_verify_quick_json_has_every_statement_and_exits_zero(capsys):
    code = main(["verify", "--quick", "--json", "--seed", "1"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["all_claims_held"] is True
    for key in REQUIRED:
        assert isinstance(report[key]["held"], bool)
        assert isinstance(report[key]["instances"], int) and report[key]["instances"] >= 1
        assert isinstance(report[key]["worst_margin"], float)
    for key in ("spurious", "retraining", "beyond"):
        assert report[key]["held"] is None


def test_verify_is_deterministic_and_only_runs_what_was_asked(capsys):
    outs = []
    for _ in range(2):
        assert main(["verify", "--only", "theorem1,rate", "--instances", "2", "--json"]) == 0
        outs.append(json.loads(capsys.readouterr().out))
    assert set(outs[0]) == {"theorem1", "rate", "all_claims_held", "seed", "quick"}
    assert outs[0]["theorem1"]["instances"] == 2
    assert outs[0]["rate"]["numbers"] == outs[1]["rate"]["numbers"]


def test_verify_table_lists_statements(capsys):
    assert main(["verify", "--only", "theorem1", "--instances", "3"]) == 0
    out = capsys.readouterr().out
    assert "theorem1" in out and "yes" in out and "every claim of the paper held" in out


def test_verify_exit_code_is_one_when_a_claim_fails(capsys, monkeypatch):
    def failing(rng, **kwargs):
        return checks.CheckResult("theorem1", "forced failure", 1, False, -1.0, 0.0, True)

    monkeypatch.setattr(checks, "check_theorem1", failing)
    assert main(["verify", "--only", "theorem1"]) == 1
    assert "FAILED" in capsys.readouterr().out


@pytest.mark.parametrize("T", [2, 4])
def test_verify_on_a_population_instance(T, tmp_path, capsys, rng):
    fam = th.draw_family(10, T, 1, rng)
    path = tmp_path / "pop.npz"
    save_family(path, fam)
    code = main(["verify", "--instance", str(path), "--quick", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["all_claims_held"]
    expected = {"theorem1", "corollary1", "theorem2", "convex", "instance"}
    expected |= {"theorem4"} if T == 2 else {"theorem3", "rate"}
    assert expected <= set(report)
    errors = report["instance"]["numbers"]["relative_error_of_A"]
    assert (errors["lora_ml"] < 1e-8) == (T == 4)


def test_verify_on_a_data_instance(tmp_path, capsys, rng):
    fam = th.draw_family(6, 3, 1, rng)
    X, Y = th.sample_family_data(fam.targets(), 200, 0.05, rng)
    path = tmp_path / "data.npz"
    write_npz(path, X=X, Y=Y, k=np.array(1), A_star=fam.A_star)
    assert main(["verify", "--instance", str(path), "--quick", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["theorem1"]["verdict"] == "not applicable" and report["theorem1"]["held"] is None
    assert "population PSD statements" in report["notes"][0]
    errors = report["instance"]["numbers"]["relative_error_of_A"]
    assert errors["lora_ml"] < 0.1 * errors["sr"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--instance", "missing.npz"], "does not exist"),
        (["--only", "theorem9"], "unknown"),
        (["--instances", "0"], "--instances must be >= 1"),
        (["--rank", "2"], "--rank applies only with --instance"),
        (["--save-dir", "no/such/folder"], "does not exist"),
    ],
)
def test_verify_bad_input_is_one_line_and_exit_code_two(argv, message, capsys):
    assert main(["verify", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err


def test_verify_bad_instance_file_is_a_usage_error(tmp_path, capsys):
    path = tmp_path / "bad.npz"
    write_npz(path, A_star=np.eye(3))
    assert main(["verify", "--instance", str(path)]) == 2
    assert "need 'A_star' and 'U_star'" in capsys.readouterr().err


def test_verify_save_dir_keeps_the_artifacts_of_a_check(tmp_path, capsys, monkeypatch):
    def with_artifact(rng, **kwargs):
        arrays = {"A_star": np.eye(2), "U0": np.ones((1, 2, 1))}
        return checks.CheckResult(
            "theorem1", "stub", 1, True, 1.0, 0.0, True, artifacts={"spurious_0_1": arrays}
        )

    monkeypatch.setattr(checks, "check_theorem1", with_artifact)
    assert main(["verify", "--only", "theorem1", "--seed", "7", "--save-dir", str(tmp_path)]) == 0
    with np.load(tmp_path / "theorem1_spurious_0_1_seed7.npz") as z:
        np.testing.assert_array_equal(z["U0"], np.ones((1, 2, 1)))

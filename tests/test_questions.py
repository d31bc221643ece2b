"""Beyond the paper (issue 13): the qualitative findings of each question on small seeded instances,
and the README's numbers against the committed ``loraml verify --json`` output they come from."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import loraml.theory as th
from loraml.cli import main
from loraml.theory import checks
from loraml.theory import questions as qn
from loraml.theory.linalg import psd_factor

ROOT = Path(__file__).resolve().parents[1]
VERIFY_DIR = ROOT / "figures" / "output" / "verify"


# ---------------------------------------------------------------------------------------------
# Wilson interval
# ---------------------------------------------------------------------------------------------
def test_wilson_interval_matches_hand_computed_values():
    # 10/20: p = 0.5, centre 0.5, half-width 1.96 sqrt(0.25/20 + 1.96^2/1600) / (1 + 1.96^2/20)
    lo, hi = qn.wilson(10, 20)
    assert lo == pytest.approx(0.2993, abs=1e-4) and hi == pytest.approx(0.7007, abs=1e-4)
    lo, hi = qn.wilson(0, 20)  # not empty at 0: upper end z^2 / (n + z^2)
    assert lo == 0.0 and hi == pytest.approx(1.96**2 / (20 + 1.96**2), rel=1e-12)
    assert qn.wilson(20, 20)[1] == 1.0


# ---------------------------------------------------------------------------------------------
# 1. rank_misspecified
# ---------------------------------------------------------------------------------------------
def test_overparameterised_zero_loss_set_contains_the_cone_below_a_star():
    """The derivation of check_rank_misspecified, without any solver: A* - D with D >= 0 of rank
    k' - k, adapters U_t U_t^T = P_t + D, has zero loss at rank k' (and is not A*)."""
    rng = np.random.default_rng(3)
    fam = th.draw_family(7, 4, 1, rng)
    w = rng.standard_normal((7, 1))
    for c in (0.1, 10.0, 1000.0):  # unbounded along the cone
        D = c * w @ w.T
        P = fam.perturbations()
        U = psd_factor(P + D, 2)
        r = qn.task_residuals(fam, fam.A_star - D, U)
        assert r.max() < 1e-10 * max(1.0, c)
        # the unseen task's residual P_test + D has rank k' = 2: rank-2 fine-tuning exact
        resid = fam.test_targets()[0] - (fam.A_star - D)
        assert qn.finetune_floor(resid, 2) < 1e-20 * np.sum(resid**2)
        P_test = fam.test_targets()[0] - fam.A_star
        assert qn.finetune_floor(resid, 1) > 1e-3 * np.sum(P_test**2)  # rank k is not


def test_rank_misspecified_finds_no_recovery_above_k_and_exact_rank_kprime_finetuning_at_T5():
    rng = np.random.default_rng(0)
    data = qn.rank_misspecified_cell(rng, d=8, T=5, k=1, ranks=[1, 2], instances=3)
    rec = data["record"]  # (instance, k', field)
    assert np.all(rec[:, 0, 0] < 1e-8)  # k' = k: A* recovered
    assert np.all(rec[:, 1, 1] < qn.ZERO_RTOL)  # k' = 2: zero loss ...
    assert np.all(rec[:, 1, 0] > 1e-3)  # ... but not A*
    assert np.all(rec[:, 1, 2] < 1e-6)  # A_hat - A* negative semidefinite (the cone's branch)
    assert np.all(rec[:, 1, 3] <= 1)  # of rank <= k' - k
    assert np.all(rec[:, 1, 5] < 1e-16)  # rank-k' fine-tuning exact
    assert np.all(rec[:, 1, 4] > 1e-8)  # rank-k fine-tuning is not


def test_underparameterised_lora_ml_has_no_zero_loss_point():
    rng = np.random.default_rng(1)
    data = qn.rank_misspecified_cell(rng, d=10, T=3, k=2, ranks=[1], instances=2)
    rec = data["record"][:, 0]
    assert np.all(rec[:, 1] > 1e-2)  # per-task residual far from zero
    assert np.all(rec[:, 0] > 1e-2)


def test_one_extra_adapter_column_removes_the_bad_ends_of_a_seeded_tight_instance():
    """d = 4, T = 3, k = 1 with spread task scales: from the same random starts, rank 1 ends away
    from zero loss on some starts, rank 2 on none."""
    data = qn.rank_misspecified_landscape(
        np.random.default_rng(8), d=4, T=3, k=1, spread=1.0, ranks=[1, 2], instances=1, starts=4
    )
    classes = data["classes"][0]
    assert np.sum(classes[:, 0] != 0) >= 1
    assert np.all(classes[:, 1] == 0)


def test_rank_misspecified_verify_key_reports_fractions_with_intervals(capsys):
    code = main(["verify", "--quick", "--json", "--only", "rank_misspecified"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    r = report["rank_misspecified"]
    assert r["held"] is None and r["claimed"] is False
    cell = r["numbers"]["cells"]["T=3,k=1,d=6"]
    lo, hi = cell["k'=1"]["recovered"]["wilson95"]
    assert 0 <= lo <= cell["k'=1"]["recovered"]["p"] <= hi <= 1
    assert cell["k'=2"]["recovered"]["k"] == 0  # over-parameterised: A* not recovered
    assert callable(checks.check_rank_misspecified)


# ---------------------------------------------------------------------------------------------
# README numbers come from the committed verify JSON
# ---------------------------------------------------------------------------------------------
def _g(x: float) -> str:
    """Two significant digits as the README writes them (0.66, 1.5e-4, 1.2e-26)."""
    if 1e-2 <= x < 1e3:
        return f"{x:.2g}"
    m, e = f"{x:.1e}".split("e")
    return f"{m}e{int(e)}"


def _frac(v: dict) -> str:
    return f"{v['k']}/{v['n']}"


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Beyond the paper")
    return re.sub(r"\s+", " ", text[start : text.index("\n## ", start + 5)])


def test_readme_rank_misspecified_numbers_come_from_the_committed_json():
    n = json.loads((VERIFY_DIR / "rank_misspecified.json").read_text())["rank_misspecified"]
    n = n["numbers"]
    readme = _section()
    cells = n["cells"]
    over = [
        row
        for name, c in cells.items()
        for kp, row in c.items()
        if int(kp.split("=")[1]) > int(name.split("k=")[1].split(",")[0])
    ]
    assert len(over) == 10 and all(r["recovered"]["k"] == 0 for r in over)
    assert all(r["zero_loss"]["k"] == r["zero_loss"]["n"] == 20 for r in over)
    assert "0/20 instances in each of the 10 over-parameterised cells" in readme
    t5, t4, t3 = cells["T=5,k=1,d=8"], cells["T=4,k=1,d=7"], cells["T=3,k=1,d=6"]
    k2 = cells["T=3,k=2,d=10"]
    K1, K2, K3 = "k'=1", "k'=2", "k'=3"
    expected = [
        f"{_frac(t5[K2]['negative_semidefinite_error'])} instances at T = 5",
        f"only {_frac(t4[K3]['negative_semidefinite_error'])} at T = 4, k' = 3",
        f"{_frac(t3[K2]['negative_semidefinite_error'])} at T = 3, k' = 2",
        f"loss {_g(t4[K2]['median_rank_kprime_finetune_loss'])} of the unadapted loss",
        f"median {_g(t4[K2]['median_rank_k_finetune_loss'])} of it",
        f"leaves {_g(t3[K2]['median_rank_kprime_finetune_loss'])} (k = 1, k' = 2)",
        f"({_frac(k2[K1]['zero_loss'])}), the median error of A_hat is "
        f"{_g(k2[K1]['median_A_relative_error'])}",
        f"leaves {_g(k2[K1]['median_rank_k_finetune_loss'])} of the",
    ]
    for text in expected:
        assert text in readme, text
    assert t5[K3]["negative_semidefinite_error"]["k"] == 20
    assert t4[K2]["negative_semidefinite_error"]["k"] == 20
    exact = [r["max_rank_2k_plus_kprime_finetune_loss_at_zero_loss"] for r in over]
    assert max(exact) < 1e-20  # "Rank 2k + k' fine-tuning is exact at every zero-loss point"
    land = n["landscape"]
    assert land["setting"] == {"T": 3, "k": 1, "d": 4, "spread": 1.0, "starts": 5}
    r1, r2, r3 = land["k'=1"], land["k'=2"], land["k'=3"]
    expected = [
        f"rank 1 ends at zero loss on {_frac(r1['zero_loss'])} starts",
        f"nonzero-loss point on {_frac(r1['stuck'])} and runs away on {_frac(r1['runaway'])}",
        f"(k' = 2) {_frac(r2['zero_loss'])} reach",
        f"below {100 * r2['stuck']['wilson95'][1]:.1f} %",
        f"k' = 3 {_frac(r3['zero_loss'])} do",
    ]
    for text in expected:
        assert text in readme, text
    assert r2["runaway"]["wilson95"][1] == r2["stuck"]["wilson95"][1]


# ---------------------------------------------------------------------------------------------
# 2. t2_selection
# ---------------------------------------------------------------------------------------------
def test_max_trace_parameter_maximises_the_trace_over_the_t2_family():
    """The closed form c* of t2_max_trace_parameter against a grid search over the explicit
    family of Theorem 4 (landscape.t2_global_minimum), which the formula does not use."""
    from loraml.theory.landscape import t2_global_minimum

    rng = np.random.default_rng(5)
    for d in (3, 8):
        fam = th.draw_family(d, 2, 1, rng)
        cs = np.linspace(-0.999, 0.999, 20001)
        traces = [
            np.trace(t2_global_minimum(fam.A_star, fam.U_star, np.array([[c]]))[0]) for c in cs
        ]
        c_grid = cs[int(np.argmax(traces))]
        assert qn.t2_max_trace_parameter(fam) == pytest.approx(c_grid, abs=2e-4)
        A_c, _ = t2_global_minimum(fam.A_star, fam.U_star, np.array([[c_grid]]))
        assert qn.t2_family_parameter(fam, A_c) == pytest.approx(c_grid, abs=1e-9)


def test_fast_solver_and_sdp_pick_the_max_trace_member_and_paper_gd_one_nearer_a_star():
    data = qn.t2_selection_cell(np.random.default_rng(2), d=10, instances=3, starts=1, rounds=300)
    rec, c_star = data["record"], data["c_star"]
    assert np.all(rec[:, 0, 4] < qn.ZERO_RTOL)  # paper GD (+ L-BFGS) at a global minimum
    assert np.all(np.abs(rec[:, 1, 0] - c_star) < 1e-6)  # fast solver: c = c*
    assert np.all(np.abs(rec[:, 2, 0] - c_star) < 1e-6)  # SDP: c = c*
    # implicit bias of small initialisation: closer to A* (c = 0) than the max-trace member
    assert np.median(np.abs(rec[:, 0, 0])) < np.median(np.abs(c_star))
    assert np.median(rec[:, 0, 2]) < np.median(rec[:, 1, 2])  # smaller rank-k fine-tuning loss


def _wil(v: dict) -> str:
    return "[" + ", ".join(f"{x:.2f}" for x in v["wilson95"]) + "]"


def test_readme_t2_selection_numbers_come_from_the_committed_json():
    n = json.loads((VERIFY_DIR / "t2_selection.json").read_text())["t2_selection"]["numbers"]
    D = [n["by_d"][f"d={d}"] for d in (4, 10, 20)]
    readme = _section()

    def three(method: str, field: str) -> str:
        return ", ".join(_g(r[method][field]) for r in D)

    fast_gap = max(r["fast"]["max_abs_c_minus_c_star"] for r in D)
    sdp_gap = max(r["sdp"]["max_abs_c_minus_c_star"] for r in D)
    assert fast_gap < 1e-9 and sdp_gap < 1e-6  # both land on the max-trace member
    expected = [
        f"at most {_g(fast_gap)} (fast solver) and {_g(sdp_gap)} (SDP)",
        f"is {_g(D[1]['paper_gd']['median_abs_c'])} at d = 10 and "
        f"{_g(D[2]['paper_gd']['median_abs_c'])} at d = 20 against "
        f"{_g(D[1]['fast']['median_abs_c'])} and {_g(D[2]['fast']['median_abs_c'])}",
        f"{_g(D[0]['paper_gd']['median_abs_c'])} against {_g(D[0]['fast']['median_abs_c'])}",
        f"median `|c|` {three('random_starts', 'median_abs_c')} (d = 4, 10, 20)",
        f"median {three('paper_gd', 'median_rank_k_finetune_loss')} after the paper's descent",
        f"{three('fast', 'median_rank_k_finetune_loss')} after the fast solver or the SDP",
        f"{three('random_starts', 'median_rank_k_finetune_loss')} after a random start",
        f"{three('family_uniform', 'median_rank_k_finetune_loss')} at a uniformly drawn",
        ", ".join(_frac(r["paper_gd_below_median_random_start"]) for r in D) + " families",
        "the fast solver on " + ", ".join(_frac(r["paper_gd_below_fast"]) for r in D),
        "(Wilson intervals " + ", ".join(_wil(r["paper_gd_below_fast"]) for r in D),
        f"(median {three('paper_gd', 'median_rank_2k_finetune_loss')} after the descent, "
        f"{three('fast', 'median_rank_2k_finetune_loss')} after the max-trace member)",
        f"moved one end by {_g(D[0]['paper_gd']['max_polish_distance'])} relative",
    ]
    for text in expected:
        assert text in readme, text
    # "beyond doubt only at d = 10": the Wilson interval excludes 1/2 there and only there
    lows = [r["paper_gd_below_fast"]["wilson95"][0] for r in D]
    assert [lo > 0.5 for lo in lows] == [False, True, False]


# ---------------------------------------------------------------------------------------------
# 4. landscape_map
# ---------------------------------------------------------------------------------------------
def test_random_starts_end_badly_only_at_a_tight_dimension_with_spread_scales():
    tight = qn.landscape_map_cell(
        np.random.default_rng(8), T=3, k=1, gap=0, spread=2.0, instances=1, starts=4
    )["classes"]
    # stuck: still at nonzero loss after a tol=1e-16 restart (1 of 4 starts with the solver's
    # per-task stopping rule and its stalled-L-BFGS fallback; 2 of 4 before them)
    assert np.sum(tight == 1) >= 1
    roomy = qn.landscape_map_cell(
        np.random.default_rng(8), T=3, k=1, gap=3, spread=0.0, instances=3, starts=2
    )["classes"]
    assert np.all(roomy == 0)


def test_landscape_map_cells_cover_the_map_and_the_sweeps():
    cells = qn.landscape_map_cells(gaps=(0, 2), spreads=(0.0, 1.0), Ts=(3, 5), ks=(1, 2))
    assert cells[:4] == [(3, 1, 0, 0.0), (3, 1, 0, 1.0), (3, 1, 2, 0.0), (3, 1, 2, 1.0)]
    sweep = qn.MAP_SWEEP_SPREAD
    assert cells[4:] == [(3, 1, 0, sweep), (5, 1, 0, sweep), (3, 2, 0, sweep)]


# ---------------------------------------------------------------------------------------------
# 7. misspecified
# ---------------------------------------------------------------------------------------------
def test_misspecified_perturbations_have_the_stated_size_rank_and_sign():
    rng = np.random.default_rng(4)
    U = rng.standard_normal((6, 1))
    P0 = U @ U.T
    for kind in qn.MIS_KINDS:
        P = qn.misspecified_perturbation(U, kind, 0.2, rng)
        assert np.linalg.norm(P - P0) == pytest.approx(0.2 * np.linalg.norm(P0), rel=1e-12)
        w = np.linalg.eigvalsh(P)
        if kind == "rank_above_k":
            assert np.sum(w > 1e-12 * w[-1]) == 2 and w[0] > -1e-12 * w[-1]
        elif kind == "indefinite":
            assert w[0] < 0 and np.sum(np.abs(w) > 1e-12 * w[-1]) == 2
        else:
            assert np.sum(np.abs(w) > 1e-12 * w[-1]) == 6


def test_misspecification_moves_the_base_linearly_and_the_finetuning_loss_quadratically():
    """First order (check_misspecified): base error ~ eps, rank-k fine-tuning loss ~ eps^2, within
    a constant of the oracle's, below SR's for small eps."""
    for kind in qn.MIS_KINDS:
        data = qn.misspecified_cell(
            np.random.default_rng(6), d=8, T=3, k=1, kind=kind, eps_values=[0.005, 0.02],
            instances=2,
        )  # fmt: skip
        rec = data["record"]  # (instance, eps, field)
        base_ratio = rec[:, 1, 0] / rec[:, 0, 0]  # eps x4 -> error x4
        loss_ratio = rec[:, 1, 1] / rec[:, 0, 1]  # eps x4 -> loss x16
        assert np.all((base_ratio > 2.5) & (base_ratio < 6)), (kind, base_ratio)
        assert np.all((loss_ratio > 8) & (loss_ratio < 32)), (kind, loss_ratio)
        assert np.all(rec[:, :, 1] < 10 * rec[:, :, 2])  # a constant factor of the oracle
        assert np.all(rec[:, :, 1] < rec[:, :, 3])  # below SR's floor


def test_readme_misspecified_numbers_come_from_the_committed_json():
    n = json.loads((VERIFY_DIR / "misspecified.json").read_text())["misspecified"]["numbers"]
    kinds = ["full_rank_noise", "rank_above_k", "indefinite"]
    readme = _section()

    def three(field: str, eps: float) -> str:
        return ", ".join(_g(n[k][f"eps={eps}"][field]) for k in kinds)

    def slopes(field: str) -> str:
        return ", ".join(f"{n[k][field]:.2f}" for k in kinds)

    def ratios(kind: str) -> str:
        vals = [n[kind][f"eps={e}"]["median_lora_ml_over_oracle"] for e in (0.01, 0.03, 0.1)]
        lo, hi = f"{min(vals):.2f}", f"{max(vals):.2f}"
        return lo if lo == hi else f"{lo}-{hi}"

    ind = n["indefinite"]["eps=3.0"]
    expected = [
        f"slope {slopes('slope_A_error')} (noise, rank above k, indefinite",
        f"with slope {slopes('slope_lora_ml_finetune_loss')}.",
        f"median ratio {ratios('full_rank_noise')}, {ratios('rank_above_k')} and "
        f"{ratios('indefinite')} for eps <= 0.1",
        f"base error is {three('median_A_relative_error', 0.1)} ||A*||",
        f"fine-tuning loss {three('median_lora_ml_finetune_loss', 0.1)} of the unadapted loss, "
        f"against SR's {three('median_sr_finetune_loss', 0.1)}",
        "at eps = 1 LoRA-ML wins on "
        + ", ".join(_frac(n[k]["eps=1.0"]["lora_ml_below_sr"]) for k in kinds),
        "at eps = 3 on " + ", ".join(_frac(n[k]["eps=3.0"]["lora_ml_below_sr"]) for k in kinds),
        f"median error {_g(ind['median_A_relative_error'])} ||A*||",
        f"({_g(ind['median_lora_ml_finetune_loss'])} of the unadapted loss) is worse than SR's "
        f"({_g(ind['median_sr_finetune_loss'])})",
    ]
    for text in expected:
        assert text in readme, text
    for k in kinds:  # "on every family (20/20 of each kind) at every eps <= 0.3"
        for e in (0.0, 0.01, 0.03, 0.1, 0.3):
            assert n[k][f"eps={e}"]["lora_ml_below_sr"]["k"] == 20


# ---------------------------------------------------------------------------------------------
# 6. covariance
# ---------------------------------------------------------------------------------------------
def test_per_task_covariances_keep_the_zero_loss_set_and_lora_ml_recovers_a_star():
    data = qn.covariance_cell(
        np.random.default_rng(3), d=8, T=3, k=1, setting="per_task", condition=100.0,
        instances=2, starts=1,
    )  # fmt: skip
    rec = data["record"]
    assert np.all(rec[:, 0] <= qn.RECOVER_RTOL)  # spectral start: A* (Theorem 3 carries over)
    assert np.all(rec[:, 1] <= qn.ZERO_RTOL)
    assert np.all(data["classes"] == 0)  # random starts too, at this size
    assert np.all(np.abs(rec[:, 2] / rec[:, 3] - 1) > 1e-3)  # SR's floor moves with Sigma


def test_unequal_sample_sizes_from_n_equal_d_keep_the_zero_loss_set():
    # noiseless N_t = d, 3.2d, 10d: S_t = X X^T / N_t is positive definite but badly conditioned
    for d in (8, 4):
        data = qn.unequal_n_cell(
            np.random.default_rng(4), d=d, T=3, k=1, n_min=d, spread=10.0, instances=3,
            starts=2,
        )  # fmt: skip
        rec = data["record"]
        assert data["Ns"].tolist() == [d, round(3.16227766 * d), 10 * d]
        assert np.all(rec[:, 0] <= qn.RECOVER_RTOL)  # A* recovered (Theorem 3 carries over)
        assert np.all(rec[:, 1] <= qn.ZERO_RTOL)
        assert np.all(data["classes"] == 0)
        assert rec[:, 4].max() > 100  # even with max_t cond(S_t) above 100
        assert np.all(np.abs(rec[:, 2] / rec[:, 3] - 1) > 1e-3)  # SR's floor moves with S_t


def test_random_covariance_has_the_requested_condition_number():
    S = qn.random_covariance(6, 50.0, np.random.default_rng(0))
    w = np.linalg.eigvalsh(S)
    assert w[-1] / w[0] == pytest.approx(50.0, rel=1e-9)
    assert np.prod(w) == pytest.approx(1.0, rel=1e-9)
    assert np.array_equal(qn.random_covariance(6, 1.0, np.random.default_rng(0)), np.eye(6))


def test_readme_covariance_numbers_come_from_the_committed_json():
    n = json.loads((VERIFY_DIR / "covariance.json").read_text())["covariance"]["numbers"]
    n = {size: block for size, block in n.items() if size != "unequal_N"}  # Sigma cells only
    cells = [(key, v) for block in n.values() for key, v in block.items()]
    aniso = [v for key, v in cells if "cond=1.0" not in key]
    rec = sum(v["recovered"]["k"] for _, v in cells)
    tot = sum(v["recovered"]["n"] for _, v in cells)
    zero = sum(v["random_starts_zero_loss"]["k"] for _, v in cells)
    runs = sum(v["random_starts_zero_loss"]["n"] for _, v in cells)
    exceptions = [
        f"{v[f'random_starts_{cls}']['k']} {cls} at {size.split(',')[0]}, "
        f"{key.split(',cond=')[0].replace('_', '-')} Sigma, "
        f"condition {float(key.split(',cond=')[1]):.0f}"
        for size, block in n.items()
        for key, v in block.items()
        for cls in ("stuck", "runaway")
        if v[f"random_starts_{cls}"]["k"]
    ]
    ratios = [v["median_sr_floor_ratio_sigma_over_identity"] for v in aniso]
    straddle = sum(
        1 for v in aniso if v["sr_floor_above_identity"]["wilson95"][0] < 0.5
        and 0.5 < v["sr_floor_above_identity"]["wilson95"][1]
    )  # fmt: skip
    readme = _section()
    expected = [
        f"recovered A* on {rec}/{tot} families, and {zero} of {runs} random starts",
        "without the restart of `landscape_map`: " + "; ".join(exceptions) + ")",
        f"median factor between {_g(min(ratios))} and {_g(max(ratios))}",
        f"containing 1/2 in {straddle} of the {len(aniso)} anisotropic cells",
    ]
    for text in expected:
        assert text in readme, text
    assert zero + sum(v["random_starts_stuck"]["k"] + v["random_starts_runaway"]["k"]
                      for _, v in cells) == runs  # fmt: skip


# ---------------------------------------------------------------------------------------------
# 3. end_to_end
# ---------------------------------------------------------------------------------------------
def test_end_to_end_risk_follows_the_first_order_sum_and_a_larger_sr_rank_wins_at_large_n():
    d, T, k, s = 8, 3, 1, 0.1
    data = qn.end_to_end_cell(
        np.random.default_rng(11), d=d, T=T, k=k, N=100, ns=[20, 5000], noise_std=s, reps=3
    )
    risk, base_sq = data["risk"], data["base_sq"]
    pred = np.array([qn.end_to_end_prediction(d, k, 5000, s, b) for b in base_sq[:, 0]])
    assert np.all(np.abs(risk[:, 1, 0] / pred - 1) < 0.3)  # LoRA-ML at large n: base term
    assert np.all(risk[:, 1, 2] < risk[:, 1, 0])  # SR + rank k(T+1) wins at n >> n*
    assert np.all(risk[:, 0, 2] > risk[:, 0, 0])  # ... and loses at n << n*
    assert np.all(risk[:, :, 1] > 100 * risk[:, :, 0])  # SR + rank k sits at its floor


def test_readme_end_to_end_numbers_come_from_the_committed_json():
    n = json.loads((VERIFY_DIR / "end_to_end.json").read_text())["end_to_end"]["numbers"]
    cells = ["T=3,N=30", "T=3,N=300", "T=6,N=30", "T=6,N=300"]
    ns = (30, 100, 300, 1000, 3000, 10000)
    ratios = [n[c][f"n={m}"]["lora_ml_measured_over_predicted"] for c in cells for m in ns[1:]]
    e = [n[c]["mean_base_sq_over_s2d2_NT"] for c in cells]

    def first_win(c: str) -> int:
        return next(
            m for m in ns if n[c][f"n={m}"]["sr_rank_kT1_beats_lora_ml"]["wilson95"][0] > 0.5
        )

    wins = [n[c][f"n={first_win(c)}"]["sr_rank_kT1_beats_lora_ml"]["k"] for c in cells]
    below = [
        n[c][f"n={m}"]["sr_rank_kT1_beats_lora_ml"]["k"]
        for c in cells
        for m in ns
        if m <= n[c]["median_predicted_crossover_n"]
    ]
    srk = [n[c]["n=10000"]["sr_rank_k_mean_risk"] for c in cells]
    ml = [n[c]["n=10000"]["lora_ml_mean_risk"] for c in cells]
    readme = _section()
    expected = [
        f"within a factor {min(ratios):.2f}-{max(ratios):.2f} for n >= 100",
        f"base error is {min(e):.2f}-{max(e):.2f} times the pooled",
        "the median predicted n* is "
        + ", ".join(f"{n[c]['median_predicted_crossover_n']:.0f}" for c in cells),
        f"{min(wins)} to {max(wins)} of 20) from n = "
        + ", ".join(str(first_win(c)) for c in cells),
        f"at n <= n* it won on {max(below)} of 20",
        f"(mean risk {_g(min(srk))}-{_g(max(srk))}, its Corollary 1 floor, against LoRA-ML's "
        f"{_g(min(ml))}-{_g(max(ml))} at n = 10000)",
    ]
    for text in expected:
        assert text in readme, text


def test_readme_landscape_map_numbers_come_from_the_committed_json():
    n = json.loads((VERIFY_DIR / "landscape_map.json").read_text())["landscape_map"]["numbers"]
    cells = n["cells"]

    def key(T: int, k: int, g: int, sp: float) -> str:
        return f"T={T},k={k},gap={g},spread={float(sp)}"

    def sr(v: dict) -> str:
        return f"{v['stuck_or_runaway']['k']}/{v['runs']}"

    def inst(v: dict) -> str:
        return _frac(v["instances_with_a_bad_end"])

    sp0 = [cells[key(3, 1, g, 0.0)] for g in (0, 1, 3)]
    sp1 = [cells[key(3, 1, g, 1.0)] for g in (0, 1, 3)]
    sp2 = [cells[key(3, 1, g, 2.0)] for g in (0, 1, 3)]
    sweep = [cells[key(T, 1, 0, 2.0)] for T in (3, 4, 6)]
    k2 = cells[key(3, 2, 0, 2.0)]
    slow = sum(v["slow"]["k"] for v in cells.values())
    total = sum(v["runs"] for v in cells.values())
    readme = _section()
    expected = [
        f"({slow} of {total} runs, {cells[key(6, 1, 0, 2.0)]['slow']['k']} of them at T = 6",
        "0, 1, 3 (" + ", ".join(sr(v) for v in sp0) + "; Wilson upper bound 0.06 each)",
        "they occur on " + ", ".join(sr(v) for v in sp1) + " runs (gap 0, 1, 3)",
        ", ".join(sr(v) for v in sp2) + " runs (on " + ", ".join(inst(v) for v in sp2),
        ", ".join(sr(v) for v in sweep) + " runs for T = 3, 4, 6 (k = 1)",
        f"is worse: {sr(k2)} runs on {inst(k2)} families",
    ]
    for text in expected:
        assert text in readme, text
    benign = sp0
    assert all(v["stuck_or_runaway"]["k"] == 0 for v in benign)  # "no run ended stuck or runaway"
    assert all(abs(v["stuck_or_runaway"]["wilson95"][1] - 0.06) < 0.005 for v in benign)


def test_every_question_key_runs_quick_and_takes_the_instances_override(capsys):
    keys = "rank_misspecified,t2_selection,landscape_map,misspecified,covariance,end_to_end"
    code = main(["verify", "--quick", "--json", "--only", keys, "--instances", "1"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    for key in keys.split(","):
        assert report[key]["held"] is None and report[key]["claimed"] is False
        assert report[key]["instances"] >= 1

"""Issue 13, question 5: where the convex relaxations start to recover A* (small seeded instances),
and the README's numbers against the committed ``loraml verify --json`` record."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import loraml.theory as th
from loraml.cli import main
from loraml.theory import convex_transition as ct
from loraml.theory import questions as qn

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "figures" / "output" / "verify" / "convex_transition.json"


def _logistic(T, loc, w):
    return 1 / (1 + np.exp(-(np.asarray(T, dtype=float) - loc) / w))


def test_fit_recovers_a_known_logistic():
    Ts = np.arange(2, 11)
    rng = np.random.default_rng(5)
    # many trials: the estimate is close to the truth
    n = 4000
    hits = rng.binomial(n, _logistic(Ts, 5.3, 0.7))
    fit = ct.fit_logistic(Ts, hits, [n] * len(Ts))
    assert fit["status"] == "fit" and not fit["separated"]
    assert abs(fit["location"] - 5.3) < 0.05 and abs(fit["width"] / 0.7 - 1) < 0.1
    # 20 trials per T, 20 seeded repetitions: the 95 % interval covers the truth on most
    covered = 0
    for _ in range(20):
        hits = rng.binomial(20, _logistic(Ts, 5.3, 0.7))
        lo, hi = ct.fit_logistic(Ts, hits, [20] * len(Ts))["location95"]
        covered += lo <= 5.3 <= hi
    assert covered >= 16


def test_fit_of_a_step_bounds_the_width_and_of_no_success_bounds_the_location():
    fit = ct.fit_logistic([2, 3, 4, 5], [0, 0, 20, 20], [20] * 4)
    assert fit["separated"] and 3 < fit["location"] < 4
    assert fit["width95"][1] < 0.5  # a step: only an upper bound on the width
    none = ct.fit_logistic([2, 3, 4], [0, 0, 0], [20] * 3)
    assert none["status"] == "above" and none["location"] is None
    assert none["location95"][0] > 3  # all 0/20 up to T = 4: the transition lies beyond ~T = 4


def test_projection_sum_edge_matches_monte_carlo():
    rng = np.random.default_rng(0)
    d = 300
    for rho, T in ((0.1, 5), (0.25, 2), (0.2, 8)):
        k = int(rho * d)
        Q = np.linalg.qr(rng.standard_normal((T, d, k)))[0]
        top = np.linalg.eigvalsh(np.einsum("tik,tjk->ij", Q, Q))[-1]
        assert top == pytest.approx(ct.projection_sum_edge(rho, T), rel=0.03)
    # the nuclear prediction is where that edge meets T/2
    for rho in (0.05, 0.1, 0.3):
        T = ct.nuclear_tasks(rho)
        assert ct.projection_sum_edge(rho, T) == pytest.approx(T / 2, rel=1e-12)


def test_obstruction_is_a_descent_direction_of_the_nuclear_median():
    """Obstruction above 1: A* + eps x x^T beats A* (no solver needed), and the solver agrees."""
    fam = th.draw_family(8, 3, 2, np.random.default_rng(1))
    U = fam.U_star
    assert ct.nuclear_obstruction(U) > 1
    Q = np.linalg.qr(U)[0]
    x = np.linalg.eigh(np.einsum("tik,tjk->ij", Q, Q))[1][:, -1]

    def f(A):
        return sum(np.linalg.norm(B - A, "nuc") for B in fam.targets())

    eps = 1e-3 * np.linalg.norm(fam.A_star)
    assert f(fam.A_star + eps * np.outer(x, x)) < f(fam.A_star)
    from loraml.theory.convex import nuclear_relaxation

    res = nuclear_relaxation(fam.population(), solver="SCS")
    assert th.base_error(res.A, fam.A_star).relative > 1e-2


def test_lora_ml_needs_the_parameter_count_at_half_rank():
    """k/d = 1/2: the count asks for T >= 3.6; at T = 3 zero loss is reached away from A*."""
    assert 3 < ct.dof_tasks(8, 4) < 4
    for seed in range(3):
        fam = th.draw_family(8, 4, 4, np.random.default_rng(seed))
        for T, recovers in ((3, False), (4, True)):
            f = th.TaskFamily(fam.A_star, fam.U_star[:T], fam.U_test)
            res = th.solve_lora_ml(f.population(), 4)
            assert qn.task_residuals(f, res.A, res.U).max() <= qn.ZERO_RTOL
            err = th.base_error(res.A, f.A_star).relative
            assert (err <= qn.RECOVER_RTOL) == recovers, (seed, T, err)


def test_recovery_rises_with_T_and_the_relaxations_need_at_least_as_many_tasks():
    out = ct.transition_cell(3, d=8, k=2, Ts=[2, 3, 4, 6, 8], instances=4)
    rec = out["recovered"].astype(int)  # (method, instance, T)
    assert np.all(np.diff(rec[1], axis=1) >= 0)  # the SDP: monotone per instance (proved)
    frac = rec.mean(1)
    assert frac[:, 0].max() == 0  # T = 2: nobody
    assert np.all(frac[0, 1:] == 1)  # LoRA-ML from T = 3
    assert frac[1, -1] == 1 and frac[2, -1] < frac[1, -1]  # nuclear norm still short at T = 8

    def first(row):
        hits = np.flatnonzero(row)
        return hits[0] if hits.size else len(row)

    for i in range(rec.shape[1]):  # per instance: LoRA-ML <= SDP <= nuclear norm
        assert first(rec[0, i]) <= first(rec[1, i]) <= first(rec[2, i])
    assert np.sum(out["how"][2] == ct.OBSTRUCTED) > 0


def test_transition_cell_refuses_bad_task_counts():
    with pytest.raises(ValueError, match="Ts must be increasing"):
        ct.transition_cell(0, d=6, k=1, Ts=[3, 2], instances=1)
    with pytest.raises(ValueError, match="1 <= k < d"):
        ct.transition_cell(0, d=6, k=6, Ts=[2], instances=1)


def test_verify_key_runs_quick(capsys):
    code = main(["verify", "--quick", "--json", "--only", "convex_transition", "--instances", "2"])
    report = json.loads(capsys.readouterr().out)["convex_transition"]
    assert code == 0 and report["held"] is None and report["claimed"] is False
    cell = report["numbers"]["d=8,k=1"]
    assert [f["n"] for f in cell["sdp"]["fractions"]] == [2] * len(cell["Ts"])
    assert cell["lost"]["sdp"] == 0


# ---------------------------------------------------------------------------------------------
# README
# ---------------------------------------------------------------------------------------------
def _section() -> str:
    """README's convex_transition paragraphs, whitespace-normalised."""
    text = (ROOT / "README.md").read_text()
    start = text.index("**Where the convex relaxations start to recover A")
    return re.sub(r"\s+", " ", text[start : text.index("\n## The empirical experiment", start)])


def _fit_text(fit: dict) -> str:
    """A logistic fit as README writes it: location [95 % interval], or the one-sided bound."""
    if fit["status"] == "above":
        return f"> {fit['location95'][0]:.1f} (none)"
    if fit["status"] == "below":
        return f"< {fit['location95'][1]:.1f} (all)"
    lo, hi = fit["location95"]
    return f"{fit['location']:.2f} [{lo:.2f}, {hi:.2f}]"


def _width_text(fit: dict) -> str:
    if fit["status"] != "fit":
        return "-"
    lo, hi = fit["width95"]
    if fit["separated"]:
        return f"step (< {hi:.2f})"
    return f"{fit['width']:.2f} [{lo:.2f}, {hi:.2f}]"


def _cells(record: dict) -> list[tuple[str, dict]]:
    return [(key, v) for key, v in record["numbers"].items() if key.startswith("d=")]


def table_rows(record: dict) -> list[str]:
    """README's convex_transition table, one row per (d, k) cell of the committed record."""
    rows = []
    for key, v in _cells(record):
        d, k = (int(part.split("=")[1]) for part in key.split(","))
        p = v["predictions"]
        nuc = "never (k/d >= 1/2)" if p["nuclear_T"] is None else f"{p['nuclear_T']:.1f}"
        rows.append(
            f"| {v['rho']:g} | {d} | {k} | {_fit_text(v['lora_ml']['fit'])} | {p['dof_T']:.2f} | "
            f"{_fit_text(v['sdp']['fit'])} | {_width_text(v['sdp']['fit'])} | {p['sdp_T']:.2f} | "
            f"{_fit_text(v['nuclear']['fit'])} | {_width_text(v['nuclear']['fit'])} | {nuc} |"
        )
    return rows


def facts(record: dict) -> dict[str, int | float]:
    """The totals README's paragraph quotes."""
    cells = _cells(record)
    free = sum(f["k"] for _, v in cells for f in v["nuclear_not_obstructed"])
    nuc = sum(f["k"] for _, v in cells for f in v["nuclear"]["fractions"])
    return {
        "entries": sum(v["inferred"]["entries"] for _, v in cells),
        "free": free,
        "free_failed": free - nuc,
        "obstructed": sum(v["inferred"]["nuclear_obstructed"] for _, v in cells),
        "sdp_inferred": sum(v["inferred"]["sdp_recovered"] for _, v in cells),
        "nuc_inferred": sum(v["inferred"]["nuclear_recovered"] for _, v in cells),
        "uncertified": sum(sum(v["uncertified_failures"].values()) for _, v in cells),
        "lost_sdp": sum(v["lost"]["sdp"] for _, v in cells),
        "lost_nuc": sum(v["lost"]["nuclear"] for _, v in cells),
        "minutes": round(record["seconds"] / 60, 1),
    }


def test_readme_convex_transition_numbers_come_from_the_committed_record():
    record = json.loads(RECORD.read_text())["convex_transition"]
    readme = _section()
    table = re.sub(r"\s+", " ", (ROOT / "README.md").read_text())
    for row in table_rows(record):
        assert row in table, row
    f = facts(record)
    n = record["numbers"]
    c1, c2, c3, c5 = (n[f"d=20,k={k}"] for k in (2, 4, 6, 10))
    c40 = n["d=40,k=4"]

    def loc(c, m):
        return f"{c[m]['fit']['location']:.2f}"

    def hits(c, m, T):
        fr = c[m]["fractions"][c["Ts"].index(T)]
        return f"{fr['k']}/{fr['n']}"

    lora_T50 = [c["lora_ml"]["fit"]["location"] for c in (c1, c2, c3, c40)]
    nuc = [c["nuclear"]["fit"]["location"] for c in (c1, c2, c3, c40)]
    lo, hi = c5["sdp"]["fit"]["location95"]
    expected = [
        f"parameter count ({c5['predictions']['dof_T']:.2f} > 3)",
        f"T50 {loc(c5, 'sdp')} [{lo:.2f}, {hi:.2f}] against {c5['predictions']['sdp_T']:.2f}",
        f"{loc(c3, 'sdp')} against {c3['predictions']['sdp_T']:.2f} at 0.3",
        f"predictions ({c1['predictions']['sdp_T']:.2f}, {c2['predictions']['sdp_T']:.2f})",
        f"({hits(c2, 'sdp', 3)} at T = 3, {hits(c2, 'sdp', 4)} at T = 4 for k/d = 0.2)",
        f"({hits(c1, 'sdp', 3)} and {hits(c40, 'sdp', 3)} at T = 3 for d = 20 and 40)",
        f"Of the {f['entries']} (instance, T) entries, {f['obstructed']} were such proved",
        f"on all {f['free']} others the nuclear norm recovered A* ({f['nuc_inferred']} of them",
        "(" + ", ".join(f"{c['predictions']['nuclear_T']:.1f}" for c in (c1, c2, c3)) + " tasks at",
        f"where {hits(c5, 'nuclear', 12)} recovered up to T = 12",
        f"lies below it ({loc(c1, 'nuclear')}, {loc(c2, 'nuclear')}, {loc(c3, 'nuclear')})",
        f"({loc(c1, 'nuclear')} at d = 20, {loc(c40, 'nuclear')} at d = 40)",
        f"(w {c1['nuclear']['fit']['width']:.2f} to {c40['nuclear']['fit']['width']:.2f})",
        f"{f['lost_nuc']} instances were recovered at one T and provably not",
        f"it happened {f['lost_sdp']} times",
        f"needs {min(nuc) / 3:.1f} to {max(nuc) / 3:.1f} times the three tasks",
        f"(T50 {min(nuc):.2f} to {max(nuc):.2f})",
        f"The full profile took {f['minutes']} minutes",
    ]
    for text in expected:
        assert text in readme, text
    # the qualitative statements of the paragraph
    assert f["free_failed"] == 0 and f["uncertified"] == 0 and f["lost_sdp"] == 0
    assert all(2 < T < 3 for T in lora_T50) and 3 < c5["lora_ml"]["fit"]["location"] < 4
    for c in (c1, c2, c3, c40):  # on 20/20 from T = 3
        assert all(
            fr["k"] == fr["n"]
            for fr, T in zip(c["lora_ml"]["fractions"], c["Ts"], strict=True)
            if T >= 3
        )
    assert c5["nuclear"]["fit"]["status"] == "above"
    assert c5["lora_ml"]["fractions"][c5["Ts"].index(3)]["k"] == 0

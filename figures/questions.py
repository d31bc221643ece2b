"""Figures answering the questions the paper left open (issue 13, "Beyond the paper").

- ``rank-misspecified``: LoRA-ML retrained with adapter rank k' != k
  (:func:`loraml.theory.questions.rank_misspecified_cell` and
  :func:`loraml.theory.questions.rank_misspecified_landscape`).
- ``t2-selection``: which T = 2 global minimum each algorithm picks
  (:func:`loraml.theory.questions.t2_selection_cell`), with the predicted max-trace member.
- ``landscape-map``: where random starts end, by gap d - k(T+1), task-scale spread, T and k
  (:func:`loraml.theory.questions.landscape_map_cell`).
- ``misspecified``: perturbations that are not exactly rank-k PSD
  (:func:`loraml.theory.questions.misspecified_cell`), with the first-order slopes.
- ``covariance``: inputs with covariance Sigma != I, shared or per task
  (:func:`loraml.theory.questions.covariance_cell`), and finite samples with unequal N_t
  (:func:`loraml.theory.questions.unequal_n_cell` and ``unequal_n_noisy_cell``).
- ``end-to-end``: finite data at both stages over (N, T, n), with the first-order total risk
  (:func:`loraml.theory.questions.end_to_end_cell` and ``end_to_end_prediction``).
- ``convex-transition``: recovery of A* by the SDP, the nuclear norm and LoRA-ML against T at
  several k/d, with logistic fits and the derived predictions
  (:func:`loraml.theory.convex_transition.transition_cell`).

Each figure computes the same quantities as the ``loraml verify`` key of the same name (with ``_``
for ``-``), from the same functions of :mod:`loraml.theory.questions` (and
:mod:`loraml.theory.convex_transition`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loraml.figures.registry import FigureSpec, Run, RunResult
from loraml.theory import convex_transition as ct
from loraml.theory import questions as qn

_FLOOR = 1e-16


# ---------------------------------------------------------------------------------------------
# rank-misspecified
# ---------------------------------------------------------------------------------------------
def rank_cell_run(rng: np.random.Generator, *, d: int, T: int, k: int, instances: int) -> RunResult:
    """One (T, k, d) cell, k' = 1..3k (:func:`loraml.theory.questions.rank_misspecified_cell`)."""
    return qn.rank_misspecified_cell(
        rng, d=d, T=T, k=k, ranks=range(1, 3 * k + 1), instances=instances
    )


def rank_landscape_run(
    rng: np.random.Generator, *, d: int, T: int, k: int, spread: float, instances: int, starts: int
) -> RunResult:
    """Random starts at a tight dimension for k' = k, k+1, 3k."""
    ranks = sorted({k, k + 1, 3 * k})
    return qn.rank_misspecified_landscape(
        rng, d=d, T=T, k=k, spread=spread, ranks=ranks, instances=instances, starts=starts
    )


def _rank_runs(s: dict[str, Any]) -> list[Run]:
    runs = [
        Run(rank_cell_run, {"d": d, "T": T, "k": k, "instances": s["instances"]}, (i,))
        for i, (T, k, d) in enumerate(s["cells"])
    ]
    T, k, d, spread = s["landscape"]
    kw = {"d": d, "T": T, "k": k, "spread": spread}
    kw.update(instances=s["landscape_instances"], starts=s["starts"])
    runs.append(Run(rank_landscape_run, kw, (len(runs),), cost=2.0))
    return runs


def _rank_assemble(s: dict[str, Any], results: list[RunResult]) -> RunResult:
    out: RunResult = {}
    for i, r in enumerate(results[:-1]):
        out[f"cell{i}_ranks"], out[f"cell{i}_record"] = r["ranks"], r["record"]
    out["landscape_ranks"], out["landscape_classes"] = results[-1]["ranks"], results[-1]["classes"]
    return out


def _rank_draw(data: RunResult, s: dict[str, Any]):
    from loraml.figures import plot

    fig, (ax1, ax2, ax3, ax4) = plot.figure(ncols=4, width=17.0, height=3.9)
    for i, (T, k, d) in enumerate(s["cells"]):
        st = plot.style(i)
        ranks, rec = data[f"cell{i}_ranks"], data[f"cell{i}_record"]
        x = ranks / k
        label = f"T={T}, k={k}, d={d}"
        ax1.plot(x, np.maximum(np.median(rec[:, :, 0], 0), _FLOOR), color=st["color"],
                 marker=st["marker"], label=label)  # fmt: skip
        ax2.plot(x, np.maximum(np.median(rec[:, :, 5], 0), _FLOOR**2), color=st["color"],
                 marker=st["marker"])  # fmt: skip
        ax2.plot(x, np.maximum(np.median(rec[:, :, 4], 0), _FLOOR**2), color=st["color"],
                 marker=st["marker"], linestyle="--", markerfacecolor="white")  # fmt: skip
    ax1.axvline(1.0, color="0.5", linewidth=0.8)
    ax1.set_yscale("log")
    ax1.set_xlabel("adapter rank k' / true rank k")
    ax1.set_ylabel("median ||A_hat - A*|| / ||A*|| (1e-16 = exact)")
    ax1.set_title("retraining with rank k' (spectral start)")
    ax1.legend(loc="center right", fontsize=7)
    ax2.axvline(1.0, color="0.5", linewidth=0.8)
    ax2.axhspan(_FLOOR**2 / 3, 1e-20, color="0.88", zorder=0)
    ax2.text(0.45, 3e-31, "grey: zero (< 1e-20). Predicted zero for rank k' when k' > k on\n"
             "the branch A_hat = A* - D, D >= 0 (docstring)", fontsize=7)  # fmt: skip
    ax2.plot([], [], color="0.3", label="rank k' fine-tuning")
    ax2.plot([], [], color="0.3", linestyle="--", label="rank k fine-tuning")
    ax2.set_yscale("log")
    ax2.set_ylim(_FLOOR**2 / 3, 30)
    ax2.set_xlabel("adapter rank k' / true rank k")
    ax2.set_ylabel("median fine-tuning loss / (1/2 ||P_test||^2)")
    ax2.set_title("unseen task: loss left after fine-tuning")
    ax2.legend(loc="upper right", fontsize=7)
    T, k, d, spread = s["landscape"]
    ranks, classes = data["landscape_ranks"], data["landscape_classes"]
    n = classes.shape[0] * classes.shape[1]
    width = 0.25
    for c, name in enumerate(("zero loss", "stuck (nonzero loss)", "runaway")):
        st = plot.style(c)
        counts = [int(np.sum(classes[:, :, j] == c)) for j in range(len(ranks))]
        p = np.array(counts) / n
        lo_hi = np.array([qn.wilson(m, n) for m in counts])
        xs = np.arange(len(ranks)) + (c - 1) * width
        ax3.bar(xs, p, width, color=st["color"], label=name)
        ax3.errorbar(xs, p, yerr=[p - lo_hi[:, 0], lo_hi[:, 1] - p], fmt="none", ecolor="k",
                     capsize=2, linewidth=0.8)  # fmt: skip
        for x, m, pm in zip(xs, counts, p, strict=True):
            ax3.text(x + 0.02, min(pm + 0.02, 1.04), str(m), ha="left", fontsize=7)
    ax3.set_xticks(range(len(ranks)), [f"k' = {int(r)}" for r in ranks])
    ax3.set_ylim(0, 1.12)
    ax3.set_ylabel(f"fraction of {n} random starts (95 % Wilson)")
    ax3.set_title(f"tight d={d}, T={T}, k={k}, scales exp({spread} N(0,1))")
    ax3.legend(loc="center right", fontsize=7)
    fig.suptitle("rank-misspecified: LoRA-ML with adapter rank k' != k (population)")
    return fig


_RANK_FULL: dict[str, Any] = {
    "cells": [list(c) for c in qn.RANK_CELLS],
    "instances": 20,
    "landscape": list(qn.RANK_LANDSCAPE),
    "landscape_instances": 40,
    "starts": 5,
}
RANK_MISSPECIFIED = FigureSpec(
    name="rank-misspecified",
    summary="LoRA-ML with adapter rank k' != k: error of A_hat, fine-tuning loss, random starts",
    full=_RANK_FULL,
    quick={**_RANK_FULL, "instances": 5, "landscape_instances": 8, "starts": 3},
    runs=_rank_runs,
    assemble=_rank_assemble,
    draw=_rank_draw,
    seed=131,
    version="1",
)


# ---------------------------------------------------------------------------------------------
# t2-selection
# ---------------------------------------------------------------------------------------------
def t2_selection_run(
    rng: np.random.Generator, *, d: int, instances: int, starts: int, rounds: int
) -> RunResult:
    """One dimension of :func:`loraml.theory.questions.t2_selection_cell`."""
    return qn.t2_selection_cell(rng, d=d, instances=instances, starts=starts, rounds=rounds)


def _t2_runs(s: dict[str, Any]) -> list[Run]:
    kw = {key: s[key] for key in ("instances", "starts", "rounds")}
    return [Run(t2_selection_run, {"d": d, **kw}, (i,), cost=3.0) for i, d in enumerate(s["dims"])]


def _t2_assemble(s: dict[str, Any], results: list[RunResult]) -> RunResult:
    return {f"d{d}_{key}": r[key] for d, r in zip(s["dims"], results, strict=True) for key in r}


_T2_LABELS = ("paper GD (small init)", "fast solver (spectral)", "SDP (max trace)",
              "fast solver, random starts", "uniform family member")  # fmt: skip


def _t2_draw(data: RunResult, s: dict[str, Any]):
    from loraml.figures import plot

    fig, axes = plot.figure(ncols=3, width=13.0, height=3.9)
    jit = np.random.default_rng(0)  # horizontal jitter of the points only
    n_m = len(_T2_LABELS)
    for ax, field, ylabel in zip(axes, (0, 2, 3), (
        "|c| (family parameter; 0 = A*)",
        "rank-k fine-tuning loss / (1/2 ||P_test||^2)",
        "rank-2k fine-tuning loss / (1/2 ||P_test||^2)",
    ), strict=True):  # fmt: skip
        for g, d in enumerate(s["dims"]):
            rec, rand = data[f"d{d}_record"], data[f"d{d}_random"]
            values = [rec[:, m, field] for m in range(3)]
            values += [rand[:, m, :, field].ravel() for m in range(2)]
            for m, v in enumerate(values):
                st = plot.style(m)
                v = np.abs(v) if field == 0 else v
                x = g + (m - (n_m - 1) / 2) * 0.16
                ax.plot(x + jit.uniform(-0.04, 0.04, v.size), np.maximum(v, 1e-12),
                        linestyle="none", marker=st["marker"], color=st["color"], alpha=0.35,
                        markersize=3)  # fmt: skip
                ax.plot([x - 0.07, x + 0.07], [np.median(v)] * 2, color=st["color"], linewidth=2.5,
                        label=_T2_LABELS[m] if g == 0 else None)  # fmt: skip
            if field == 0:
                c_star = np.abs(data[f"d{d}_c_star"])
                label = "predicted max-trace |c*| (median)" if g == 0 else None
                ax.plot([g - 0.45, g + 0.45], [np.median(c_star)] * 2, color="k", linestyle=":",
                        linewidth=1, label=label)  # fmt: skip
        ax.set_yscale("log")
        ax.set_xticks(range(len(s["dims"])), [f"d = {d}" for d in s["dims"]])
        ax.set_ylabel(ylabel)
    axes[0].set_title("which global minimum (T = 2, k = 1)")
    axes[1].set_title("unseen task, rank-k fine-tuning")
    axes[2].set_title("unseen task, rank-2k fine-tuning")
    axes[0].legend(loc="lower left", fontsize=6)
    fig.suptitle(
        f"t2-selection: {s['instances']} families per d, {s['starts']} random starts / family "
        f"members each; paper GD = {s['rounds']} rounds + L-BFGS; bars: medians"
    )
    return fig


_T2_FULL: dict[str, Any] = {"dims": list(qn.T2_DIMS), "instances": 20, "starts": 5, "rounds": 1000}
T2_SELECTION = FigureSpec(
    name="t2-selection",
    summary="T = 2: the global minimum each algorithm picks, and its fine-tuning loss",
    full=_T2_FULL,
    quick={**_T2_FULL, "instances": 6, "starts": 3, "rounds": 300},
    runs=_t2_runs,
    assemble=_t2_assemble,
    draw=_t2_draw,
    seed=132,
    version="1",
)


# ---------------------------------------------------------------------------------------------
# landscape-map
# ---------------------------------------------------------------------------------------------
def landscape_map_run(
    rng: np.random.Generator, *, T: int, k: int, gap: int, spread: float, instances: int,
    starts: int,
) -> RunResult:  # fmt: skip
    """One cell of :func:`loraml.theory.questions.landscape_map_cell`."""
    return qn.landscape_map_cell(
        rng, T=T, k=k, gap=gap, spread=spread, instances=instances, starts=starts
    )


def _map_cells(s: dict[str, Any]) -> list[tuple[int, int, int, float]]:
    return qn.landscape_map_cells(s["gaps"], s["spreads"], s["Ts"], s["ks"])


def _map_runs(s: dict[str, Any]) -> list[Run]:
    kw = {"instances": s["instances"], "starts": s["starts"]}
    return [
        Run(landscape_map_run, {"T": T, "k": k, "gap": g, "spread": sp, **kw}, (i,), cost=1.0 + k)
        for i, (T, k, g, sp) in enumerate(_map_cells(s))
    ]


def _map_assemble(s: dict[str, Any], results: list[RunResult]) -> RunResult:
    return {
        "cells": np.array(_map_cells(s), dtype=float),  # (cell, [T, k, gap, spread])
        "classes": np.stack([r["classes"] for r in results]),  # (cell, instance, start)
    }


def _map_draw(data: RunResult, s: dict[str, Any]):
    from loraml.figures import plot

    fig, (ax1, ax2) = plot.figure(ncols=2, width=11.5, height=4.0)
    cells, classes = data["cells"], data["classes"]
    n = classes.shape[1] * classes.shape[2]
    gaps, spreads = s["gaps"], s["spreads"]
    grid = np.full((len(gaps), len(spreads)), np.nan)
    bad_all = [np.mean((classes[c] == 1) | (classes[c] == 2)) for c in range(len(cells))]
    vmax = max(0.1, float(np.max(bad_all)))
    for c, (T, k, g, sp) in enumerate(cells):
        if T == 3 and k == 1 and g in gaps and sp in spreads:
            i, j = gaps.index(int(g)), spreads.index(float(sp))
            bad = int(np.sum((classes[c] == 1) | (classes[c] == 2)))
            grid[i, j] = bad / n
            ax1.text(j, i, f"{bad}/{n}", ha="center", va="center", fontsize=8,
                     color="white" if bad / n > 0.5 * vmax else "black")  # fmt: skip
    im = ax1.imshow(grid, cmap="Greys", vmin=0, vmax=vmax,
                    origin="lower", aspect="auto")  # fmt: skip
    fig.colorbar(im, ax=ax1, label="fraction of runs stuck or runaway")
    ax1.set_xticks(range(len(spreads)), [str(v) for v in spreads])
    ax1.set_yticks(range(len(gaps)), [str(v) for v in gaps])
    ax1.set_xlabel("spread of task scales (U_t* x exp(spread N(0,1)))")
    ax1.set_ylabel("gap d - k(T+1)")
    ax1.set_title("T = 3, k = 1: random starts ending stuck or runaway")
    # T and k at the tight dimension, spread 1
    rows = [(c, f"T={int(T)}, k={int(k)}") for c, (T, k, g, sp) in enumerate(cells)
            if g == 0 and sp == qn.MAP_SWEEP_SPREAD]  # fmt: skip
    for m, name in ((1, "stuck"), (2, "runaway"), (3, "slow (zero after restart)")):
        st = plot.style(m)
        counts = np.array([int(np.sum(classes[c] == m)) for c, _ in rows])
        p = counts / n
        lo_hi = np.array([qn.wilson(int(v), n) for v in counts])
        xs = np.arange(len(rows)) + (m - 2) * 0.27
        ax2.bar(xs, p, 0.27, color=st["color"], label=name)
        ax2.errorbar(xs, p, yerr=[p - lo_hi[:, 0], lo_hi[:, 1] - p], fmt="none", ecolor="k",
                     capsize=2, linewidth=0.8)  # fmt: skip
    ax2.set_xticks(range(len(rows)), [label for _, label in rows])
    ax2.set_ylabel(f"fraction of {n} runs (95 % Wilson)")
    ax2.set_title(f"tight d = k(T+1), spread {qn.MAP_SWEEP_SPREAD}: by T and k")
    ax2.legend(loc="upper right")
    fig.suptitle(
        f"landscape-map: fast solver from random starts, {classes.shape[1]} families x "
        f"{classes.shape[2]} starts per cell; ends classified by per-task relative residuals"
    )
    return fig


_MAP_FULL: dict[str, Any] = {
    "gaps": list(qn.MAP_GAPS),
    "spreads": list(qn.MAP_SPREADS),
    "Ts": list(qn.MAP_TS),
    "ks": list(qn.MAP_KS),
    "instances": 20,
    "starts": 3,
}
LANDSCAPE_MAP = FigureSpec(
    name="landscape-map",
    summary="random-start ends of LoRA-ML by gap d-k(T+1), task-scale spread, T and k",
    full=_MAP_FULL,
    quick={**_MAP_FULL, "instances": 4, "starts": 2},
    runs=_map_runs,
    assemble=_map_assemble,
    draw=_map_draw,
    seed=134,
    version="2",
)


# ---------------------------------------------------------------------------------------------
# misspecified
# ---------------------------------------------------------------------------------------------
def misspecified_run(
    rng: np.random.Generator, *, d: int, T: int, k: int, kind: str, eps: list, instances: int
) -> RunResult:
    """One kind of :func:`loraml.theory.questions.misspecified_cell`."""
    return qn.misspecified_cell(rng, d=d, T=T, k=k, kind=kind, eps_values=eps, instances=instances)


def _mis_runs(s: dict[str, Any]) -> list[Run]:
    kw = {key: s[key] for key in ("d", "T", "k", "eps", "instances")}
    return [Run(misspecified_run, {"kind": kind, **kw}, (i,)) for i, kind in enumerate(s["kinds"])]


def _mis_assemble(s: dict[str, Any], results: list[RunResult]) -> RunResult:
    out: RunResult = {"eps": results[0]["eps"]}
    out.update({f"{kind}_record": r["record"] for kind, r in zip(s["kinds"], results, strict=True)})
    return out


def _mis_draw(data: RunResult, s: dict[str, Any]):
    from loraml.figures import plot

    kinds = s["kinds"]
    fig, axes = plot.figure(ncols=len(kinds), width=4.3 * len(kinds), height=3.9)
    eps = data["eps"]
    pos = eps > 0
    names = (
        "base error ||A_hat - A*|| / ||A*||",
        "LoRA-ML + rank k (loss / L0)",
        "A* + rank k (oracle)",
        "SR + rank k",
    )
    for ax, kind in zip(np.atleast_1d(axes), kinds, strict=True):
        med = np.median(data[f"{kind}_record"], axis=0)  # (eps, field)
        for f, name in enumerate(names):
            st = plot.style(f)
            ax.plot(eps[pos], med[pos, f], color=st["color"], marker=st["marker"],
                    linestyle=("-", "-", "--", ":")[f], label=name,
                    markerfacecolor=st["color"] if f < 2 else "white")  # fmt: skip
        # first-order prediction: slope 1 for the base error, 2 for the fine-tuning losses,
        # through the smallest eps's measurement
        e0 = eps[pos][0]
        for f, power in ((0, 1), (1, 2)):
            ax.plot(eps[pos], med[pos, f][0] * (eps[pos] / e0) ** power, color="0.4",
                    linewidth=0.8, linestyle=(0, (1, 2)),
                    label=f"slope {power} (first order)")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("misspecification eps (relative Frobenius size)")
        ax.set_title(kind.replace("_", " "))
    axes[0].set_ylabel("median over families (see legend)")
    axes[0].legend(loc="upper left", fontsize=6)
    fig.suptitle(
        f"misspecified: d={s['d']}, T={s['T']}, k={s['k']}, rank-k PSD adapters, "
        f"{s['instances']} families per point (population)"
    )
    return fig


_MIS_FULL: dict[str, Any] = {
    "d": 10,
    "T": 4,
    "k": 1,
    "kinds": list(qn.MIS_KINDS),
    "eps": list(qn.MIS_EPS),
    "instances": 20,
}
MISSPECIFIED = FigureSpec(
    name="misspecified",
    summary="perturbations not rank-k PSD: LoRA-ML base error and rank-k fine-tuning against SR",
    full=_MIS_FULL,
    quick={**_MIS_FULL, "instances": 6},
    runs=_mis_runs,
    assemble=_mis_assemble,
    draw=_mis_draw,
    seed=137,
    version="1",
)


# ---------------------------------------------------------------------------------------------
# covariance
# ---------------------------------------------------------------------------------------------
def covariance_run(
    rng: np.random.Generator, *, d: int, T: int, k: int, setting: str, condition: float,
    instances: int, starts: int,
) -> RunResult:  # fmt: skip
    """One cell of :func:`loraml.theory.questions.covariance_cell`."""
    return qn.covariance_cell(
        rng, d=d, T=T, k=k, setting=setting, condition=condition, instances=instances,
        starts=starts,
    )  # fmt: skip


def unequal_n_run(
    rng: np.random.Generator, *, d: int, T: int, k: int, spread: float, noisy_n_min: int,
    noise_std: float, instances: int, starts: int, draws: int,
) -> RunResult:  # fmt: skip
    """Noiseless and noisy unequal-N_t cells of one size (:func:`loraml.theory.questions`)."""
    clean = qn.unequal_n_cell(
        rng, d=d, T=T, k=k, n_min=d, spread=spread, instances=instances, starts=starts
    )
    noisy = qn.unequal_n_noisy_cell(
        rng, d=d, T=T, k=k, n_min=noisy_n_min, spread=spread, noise_std=noise_std,
        instances=instances, draws=draws,
    )  # fmt: skip
    return {
        "u_record": clean["record"], "u_classes": clean["classes"], "u_error": noisy["error"],
        "u_predicted": noisy["predicted"],
    }  # fmt: skip


def _cov_cells(s: dict[str, Any]) -> list[tuple[int, int, int, str, float]]:
    return [
        (d, T, k, setting, float(cond))
        for d, T, k in s["sizes"]
        for setting in s["settings"]
        for cond in s["conditions"]
        if not (setting == "per_task" and cond == 1.0)
    ]


def _cov_runs(s: dict[str, Any]) -> list[Run]:
    kw = {"instances": s["instances"], "starts": s["starts"]}
    cells = _cov_cells(s)
    u_kw = {key: s[key] for key in ("spread", "noisy_n_min", "noise_std", "draws")}
    return [
        Run(covariance_run, {"d": d, "T": T, "k": k, "setting": st, "condition": c, **kw}, (i,))
        for i, (d, T, k, st, c) in enumerate(cells)
    ] + [
        Run(unequal_n_run, {"d": d, "T": T, "k": k, **u_kw, **kw}, (len(cells) + j,))
        for j, (d, T, k) in enumerate(s["sizes"])
    ]


def _cov_assemble(s: dict[str, Any], results: list[RunResult]) -> RunResult:
    cov, unequal = results[: len(_cov_cells(s))], results[len(_cov_cells(s)) :]
    out = {
        "record": np.stack([r["record"] for r in cov]),  # (cell, instance, field)
        "classes": np.stack([r["classes"] for r in cov]),  # (cell, instance, start)
    }
    for key in ("u_record", "u_classes", "u_error", "u_predicted"):
        out[key] = np.stack([r[key] for r in unequal])  # (size, instance, ...)
    return out


def _cov_draw(data: RunResult, s: dict[str, Any]):
    from loraml.figures import plot

    fig, (ax1, ax2, ax3, ax4) = plot.figure(ncols=4, width=17.0, height=3.9)
    cells = _cov_cells(s)
    rec, classes = data["record"], data["classes"]
    series = sorted({(d, T, k, st) for d, T, k, st, _ in cells})
    for m, (d, T, k, st) in enumerate(series):
        idx = [i for i, c in enumerate(cells) if c[:4] == (d, T, k, st) or
               (st == "per_task" and c[:4] == (d, T, k, "shared") and c[4] == 1.0)]  # fmt: skip
        idx.sort(key=lambda i: cells[i][4])
        conds = np.array([cells[i][4] for i in idx])
        sty = plot.style(m)
        label = f"d={d}, T={T}, k={k}, {st.replace('_', '-')} Sigma"
        ls = "-" if st == "shared" else "--"
        n_inst = rec.shape[1]
        rate = np.array([np.sum(rec[i, :, 0] <= qn.RECOVER_RTOL) for i in idx]) / n_inst
        ax1.plot(conds, rate, color=sty["color"], marker=sty["marker"], linestyle=ls, label=label)
        n_runs = classes.shape[1] * classes.shape[2]
        bad = np.array([np.sum(classes[i] != 0) for i in idx])
        lo_hi = np.array([qn.wilson(int(b), n_runs) for b in bad])
        ax2.errorbar(conds * (1 + 0.06 * m), bad / n_runs,
                     yerr=[bad / n_runs - lo_hi[:, 0], lo_hi[:, 1] - bad / n_runs],
                     color=sty["color"], marker=sty["marker"], linestyle=ls, capsize=2)  # fmt: skip
        ax3.plot(conds, [np.median(rec[i, :, 2] / rec[i, :, 3]) for i in idx],
                 color=sty["color"], marker=sty["marker"], linestyle=ls)  # fmt: skip
    ax1.axhline(
        1.0, color="k", linestyle=":", linewidth=1, label="prediction: zero-loss set unchanged"
    )
    ax1.set_ylim(-0.05, 1.1)
    ax1.set_ylabel(f"fraction of {rec.shape[1]} families recovering A*")
    ax1.set_title("spectral-start solver")
    ax1.legend(loc="lower left", fontsize=6)
    ax2.set_ylabel(f"fraction of {classes.shape[1] * classes.shape[2]} random starts "
                   "not at zero loss")  # fmt: skip
    ax2.set_title("random starts (95 % Wilson)")
    ax3.set_yscale("log")
    ax3.axhline(1.0, color="k", linestyle=":", linewidth=1)
    ax3.set_ylabel("median SR floor with Sigma / with Sigma = I")
    ax3.set_title("SR + rank k, relative floor, paired by family")
    for ax in (ax1, ax2, ax3):
        ax.set_xscale("log")
        ax.set_xlabel("condition number of Sigma")
    _unequal_panel(ax4, data, s)
    fig.suptitle("covariance: population LoRA-ML and SR with x ~ N(0, Sigma_t); "
                 f"finite samples with N_t spread {s['spread']:g}x")  # fmt: skip
    return fig


def _unequal_panel(ax, data: RunResult, s: dict[str, Any]) -> None:
    """Measured against predicted retraining error, unequal N_t, one point per family."""
    from loraml.figures import plot

    err = data["u_error"].mean(axis=2)  # (size, instance, weighting): mean over draws
    pred = data["u_predicted"]  # (size, instance, 3)
    recovered = int(np.sum(data["u_record"][:, :, 0] <= qn.RECOVER_RTOL))
    zero_starts, n_starts = int(np.sum(data["u_classes"] == 0)), data["u_classes"].size
    for m, (d, T, k) in enumerate(s["sizes"]):
        sty = plot.style(m)
        size = f"d={d}, T={T}, k={k}"
        ax.scatter(pred[m, :, 0], err[m, :, 0], color=sty["color"], marker=sty["marker"], s=14,
                   label=f"{size}, per-task means")  # fmt: skip
        ax.scatter(pred[m, :, 1], err[m, :, 1], color=sty["color"], marker=sty["marker"], s=14,
                   facecolors="none", label=f"{size}, weighted by N_t")  # fmt: skip
        ax.scatter(
            pred[m, :, 2],
            err[m, :, 0],
            color=sty["color"],
            marker="x",
            s=12,
            alpha=0.5,
            label=f"{size}, per-task means vs equal-N formula at mean N_t",
        )
    lo = min(float(pred[..., :2].min()), float(err.min())) / 1.5
    hi = max(float(pred.max()), float(err.max())) * 1.5
    ax.plot([lo, hi], [lo, hi], color="k", linestyle=":", linewidth=1, label="measured = predicted")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("first-order prediction of E||A_hat - A*||^2")
    ax.set_ylabel(f"measured, mean of {data['u_error'].shape[2]} data sets")
    n_fam = data["u_record"].shape[0] * data["u_record"].shape[1]
    ax.set_title(f"unequal N_t, noise {s['noise_std']:g}; noiseless, N_t from d:\n"
                 f"A* on {recovered}/{n_fam} families, {zero_starts}/{n_starts} starts "
                 "at zero loss", fontsize=9)  # fmt: skip
    ax.legend(loc="upper left", fontsize=5)


_COV_FULL: dict[str, Any] = {
    "sizes": [[8, 3, 1], [4, 3, 1]],
    "settings": list(qn.COV_SETTINGS),
    "conditions": list(qn.COV_CONDITIONS),
    "instances": 20,
    "starts": 3,
    "spread": qn.COV_N_SPREAD,
    "noisy_n_min": qn.COV_NOISY_N_MIN,
    "noise_std": qn.COV_NOISE_STD,
    "draws": 5,
}
COVARIANCE = FigureSpec(
    name="covariance",
    summary="inputs with covariance Sigma != I and unequal N_t: recovery, random starts, SR's "
    "floor, retraining error",
    full=_COV_FULL,
    quick={**_COV_FULL, "instances": 5, "starts": 2, "draws": 3},
    runs=_cov_runs,
    assemble=_cov_assemble,
    draw=_cov_draw,
    seed=136,
    version="2",
)


# ---------------------------------------------------------------------------------------------
# end-to-end
# ---------------------------------------------------------------------------------------------
def end_to_end_run(
    rng: np.random.Generator, *, d: int, T: int, k: int, N: int, ns: list, noise_std: float,
    reps: int,
) -> RunResult:  # fmt: skip
    """One (T, N) cell of :func:`loraml.theory.questions.end_to_end_cell`."""
    return qn.end_to_end_cell(rng, d=d, T=T, k=k, N=N, ns=ns, noise_std=noise_std, reps=reps)


def _e2e_runs(s: dict[str, Any]) -> list[Run]:
    kw = {key: s[key] for key in ("d", "k", "ns", "noise_std", "reps")}
    cells = [(T, N) for T in s["Ts"] for N in s["Ns"]]
    return [Run(end_to_end_run, {"T": T, "N": N, **kw}, (i,)) for i, (T, N) in enumerate(cells)]


def _e2e_assemble(s: dict[str, Any], results: list[RunResult]) -> RunResult:
    return {
        "ns": results[0]["ns"],
        "risk": np.stack([r["risk"] for r in results]),  # (cell, rep, n, method)
        "base_sq": np.stack([r["base_sq"] for r in results]),  # (cell, rep, 2)
    }


def _e2e_draw(data: RunResult, s: dict[str, Any]):
    from loraml.figures import plot

    Ts, Ns = s["Ts"], s["Ns"]
    d, k, sd = s["d"], s["k"], s["noise_std"]
    fig, axes = plot.figure(ncols=len(Ts), width=5.2 * len(Ts), height=4.0)
    ns = data["ns"].astype(float)
    c = 0
    for ax, T in zip(np.atleast_1d(axes), Ts, strict=True):
        for m, N in enumerate(Ns):
            st = plot.style(m)
            risk, base_sq = data["risk"][c], data["base_sq"][c]
            c += 1
            mean = risk.mean(0)  # (n, method)
            ax.plot(ns, mean[:, 0], color=st["color"], marker=st["marker"],
                    label=f"N={N}: LoRA-ML + rank k")  # fmt: skip
            ax.plot(ns, mean[:, 2], color=st["color"], marker=st["marker"], linestyle="-.",
                    markerfacecolor="white", label=f"N={N}: SR + rank k(T+1)")  # fmt: skip
            ax.plot(ns, mean[:, 1], color=st["color"], linestyle="--", linewidth=1,
                    label=f"N={N}: SR + rank k")  # fmt: skip
            pred = np.mean([qn.end_to_end_prediction(d, k, ns, sd, b) for b in base_sq[:, 0]], 0)
            ax.plot(ns, pred, color="0.3", linestyle=(0, (1, 2)), linewidth=1,
                    label="first-order prediction" if m == 0 else None)  # fmt: skip
            dim = k * (2 * d - k)
            n_star = np.median(sd**2 * dim / (base_sq[:, 0] * (1 - dim / d**2)))
            ax.axvline(n_star, color=st["color"], linestyle=":", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("fine-tuning samples n (dotted verticals: predicted crossover n*)")
        ax.set_title(f"T = {T}")
    np.atleast_1d(axes)[0].set_ylabel("mean test excess risk")
    np.atleast_1d(axes)[0].legend(loc="center left", fontsize=6)
    fig.suptitle(
        f"end-to-end: d={d}, k={k}, noise std {sd}, {s['reps']} families per point; "
        "retrain on T tasks x N samples, fine-tune on n"
    )
    return fig


_E2E_FULL: dict[str, Any] = {
    "d": 10,
    "k": 1,
    "Ts": [3, 6],
    "Ns": [30, 300],
    "ns": list(qn.E2E_NS),
    "noise_std": 0.1,
    "reps": 20,
}
END_TO_END = FigureSpec(
    name="end-to-end",
    summary="finite data at both stages: test excess risk over (N, T, n), LoRA-ML vs SR",
    full=_E2E_FULL,
    quick={**_E2E_FULL, "reps": 6},
    runs=_e2e_runs,
    assemble=_e2e_assemble,
    draw=_e2e_draw,
    seed=133,
    version="1",
)


# ---------------------------------------------------------------------------------------------
# convex-transition
# ---------------------------------------------------------------------------------------------
def convex_transition_run(
    rng: np.random.Generator, *, d: int, k: int, Ts: list, instances: int
) -> RunResult:
    """One (d, k) cell of :func:`loraml.theory.convex_transition.transition_cell`."""
    return ct.transition_cell(rng, d=d, k=k, Ts=Ts, instances=instances)


def _ct_runs(s: dict[str, Any]) -> list[Run]:
    return [
        Run(
            convex_transition_run,
            {"d": d, "k": k, "Ts": list(Ts), "instances": s["instances"]},
            (i,),
            cost=s["instances"] * d * len(Ts) / 40,
        )  # fmt: skip
        for i, (d, k, Ts) in enumerate(s["cells"])
    ]


def _ct_assemble(s: dict[str, Any], results: list[RunResult]) -> RunResult:
    out: RunResult = {}
    for i, r in enumerate(results):
        for key in ("Ts", "recovered", "how", "error", "obstruction"):
            out[f"cell{i}_{key}"] = r[key]
    return out


def _ct_draw(data: RunResult, s: dict[str, Any]):
    from loraml.figures import plot

    cells = s["cells"]
    fig, axes = plot.figure(ncols=len(cells), width=3.3 * len(cells), height=3.9)
    axes = np.atleast_1d(axes)
    names = ("LoRA-ML", "SDP", "nuclear norm")
    for ax, (i, (d, k, _)) in zip(axes, enumerate(cells), strict=True):
        Ts = data[f"cell{i}_Ts"].astype(float)
        rec = data[f"cell{i}_recovered"]
        n = rec.shape[1]
        fine = np.linspace(Ts.min(), Ts.max(), 300)
        for m, name in enumerate(names):
            st = plot.style(m)
            hits = rec[m].sum(0)
            p = hits / n
            lo_hi = np.array([qn.wilson(int(h), n) for h in hits])
            ax.errorbar(Ts + 0.08 * (m - 1), p, yerr=[p - lo_hi[:, 0], lo_hi[:, 1] - p],
                        color=st["color"], marker=st["marker"], linestyle="none", capsize=2,
                        label=name)  # fmt: skip
            fit = ct.fit_logistic(Ts, hits, [n] * len(Ts))
            if fit["status"] == "fit":
                z = (fine - float(fit["location"])) / float(fit["width"])  # type: ignore[arg-type]
                ax.plot(fine, 1 / (1 + np.exp(-z)), color=st["color"],
                        linestyle=plot.METHOD_STYLE[name], linewidth=1)  # fmt: skip
        free = np.sum(data[f"cell{i}_obstruction"] <= 1 + 1e-9, axis=0) / n
        ax.step(Ts, free, where="mid", color=plot.style(2)["color"], linewidth=0.8, alpha=0.6,
                label="not ruled out by the obstruction")  # fmt: skip
        preds = [
            (ct.dof_tasks(d, k), "0.4", "parameter count"),
            (ct.sdp_tasks(d, k), plot.style(1)["color"], "SDP prediction"),
            (ct.nuclear_tasks(k / d), plot.style(2)["color"], "nuclear prediction"),
        ]
        for x, color, label in preds:
            if x <= Ts.max() + 0.5:
                ax.axvline(x, color=color, linestyle=":", linewidth=1.2, label=label)
        gen = d // k - 1  # k(T+1) <= d: the paper's genericity
        if gen >= 3:
            ax.axvspan(3, min(gen, Ts.max()), color="0.9", zorder=0, label="Theorem 3 applies")
        ax.set_ylim(-0.05, 1.08)
        ax.set_xlabel("tasks T")
        ax.set_title(f"d={d}, k={k} (k/d = {k / d:.2g})")
    axes[0].set_ylabel(f"fraction of {rec.shape[1]} instances recovering A*")
    axes[0].legend(loc="center right", fontsize=6)
    fig.suptitle("convex-transition: population recovery of A* against T (95 % Wilson); "
                 "curves: logistic fits; dotted: predictions", fontsize=9)  # fmt: skip
    return fig


# Full: the cells of the verify key's full profile (about 800 s of CPU, measured there); quick:
# d = 10, 10 instances (64 s of CPU, 4 min 52 s wall on the shared machine).
_CT_FULL: dict[str, Any] = {
    "cells": [[d, k, list(Ts)] for d, k, Ts in ct.CT_CELLS],
    "instances": 20,
}
_CT_QUICK: dict[str, Any] = {
    "cells": [[10, 1, [2, 3, 4, 5, 6, 7]], [10, 2, [2, 3, 4, 5, 6, 8, 10, 12]],
              [10, 3, [2, 3, 4, 5, 6, 8, 12, 16]], [10, 5, [2, 3, 4, 5, 6, 8, 10]]],
    "instances": 10,
}  # fmt: skip
CONVEX_TRANSITION = FigureSpec(
    name="convex-transition",
    summary="where the SDP and nuclear-norm relaxations start to recover A*, against T",
    full=_CT_FULL,
    quick=_CT_QUICK,
    runs=_ct_runs,
    assemble=_ct_assemble,
    draw=_ct_draw,
    seed=137,
    version="1",
)

FIGURES = [
    RANK_MISSPECIFIED,
    T2_SELECTION,
    LANDSCAPE_MAP,
    MISSPECIFIED,
    COVARIANCE,
    END_TO_END,
    CONVEX_TRANSITION,
]

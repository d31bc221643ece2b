"""Figures answering the questions the paper left open (issue 13, "Beyond the paper").

- ``rank-misspecified``: LoRA-ML retrained with adapter rank k' != k
  (:func:`loraml.theory.questions.rank_misspecified_cell` and
  :func:`loraml.theory.questions.rank_misspecified_landscape`).

Each figure computes the same quantities as the ``loraml verify`` key of the same name (with ``_``
for ``-``), from the same functions of :mod:`loraml.theory.questions`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loraml.figures.registry import FigureSpec, Run, RunResult
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

    fig, (ax1, ax2, ax3) = plot.figure(ncols=3, width=13.0, height=3.9)
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

FIGURES = [RANK_MISSPECIFIED]

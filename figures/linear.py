"""The paper's linear sweeps: vary-d, vary-T, vary-N, vary-n, vary-k (arXiv 2410.22264 v1).

One run = one task family and one data draw for one value of the swept parameter:

1. ``A*``, ``U_t*`` and a test task's ``U*`` from :func:`loraml.theory.draw_family`; N noisy
   samples per retraining task, n for the test task (noise standard deviation 0.01, the paper's
   actual value).
2. Retraining: LoRA-ML by the paper's schedule (:func:`loraml.theory.lora_ml_paper_gd`, 3000 rounds
   of 10 adapter steps and one base step) and SR by gradient descent (:func:`loraml.theory.sr_gd`).
3. Fine-tuning from each base with the *same* initial ``U, V`` (:func:`loraml.theory.finetune_gd`,
   step 0.005, rank k, or 3k when T = 2), recording the paper's plotted loss
   ``sum_i ||(A_test* - A - U V^T) x_i||^2`` over the n fine-tuning inputs.
4. The closed-form asymptote: the same loss at the exact rank-r fine-tuning optimum from that base
   (:func:`loraml.theory.finetune_closed_form`), i.e. where gradient descent is heading.

Difference from the released scripts: each run draws its own task family (the scripts drew one
family for all runs and settings), so the band covers the variation across instances too.

``vary-T`` also runs SR the way the released script trains it
(:func:`loraml.theory.sr_released`: T random adapters drawn like LoRA-ML's initial ones, here the
very same draws, and never updated), which converges to ``A_SR - mean_t U_t0 U_t0^T`` instead of
``A_SR`` (data keys ``sr_released_*``), and records each base's closed-form limit at fine-tuning
ranks k, 2k and 3k (``*_limit_by_rank``): at T = 2 the correct SR reaches the noise level at
rank 3k like LoRA-ML, the released SR does not, and LoRA-ML's advantage is its limit at ranks k
and 2k.

``vary-k`` also retrains LoRA-ML with the fast solver (:func:`loraml.theory.solve_lora_ml`) on the
same retraining losses and records its base's closed-form limit on the same test task at the same
rank (``fast_limit``, ``fast_base_error``): drawn per k as "LoRA-ML, fast solver's limit". At
k = 3 genericity fails (k(T + 1) = 12 > d = 10); at k = 2 the fast solver's limit lies far below
the paper schedule's, so the schedule's shortfall there is its 3000 rounds not converging.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

import loraml.theory as th
from loraml.figures.spec import FigureSpec, Run, RunResult
from loraml.theory.rng import RNGLike, as_generator

# The paper's retraining schedule and fine-tuning step (arXiv 2410.22264 v1, released script).
PAPER = {
    "base": {"d": 10, "T": 3, "N": 5000, "n": 100, "k": 1},
    "noise_std": 0.01,
    "rounds": 3000,
    "inner": 10,
    "lr_u": 0.003,
    "lr_a": 0.03,
    "sr_steps": 3000,
    "sr_lr": 0.03,
    "ft_lr": 0.005,
    "init_std": 0.1,
    "points": 300,
}
# Swept parameter -> (values, fine-tuning steps of the released scripts).
SWEEPS = {
    "d": ([5, 10, 20], 1400),
    "T": ([2, 3, 5], 10000),
    "N": ([100, 1000, 10000], 1000),
    "n": ([100, 1000, 10000], 1000),
    "k": ([1, 2, 3], 10000),
}
QUICK_RUNS, FULL_RUNS, QUICK_FT_CAP = 3, 5, 2000


def finetune_rank(T: int, k: int) -> int:
    """The paper's fine-tuning rank: k, or 3k when T = 2 (Theorem 4: the T = 2 minima)."""
    return 3 * k if T == 2 else k


def plotted_loss(q1: th.Quadratics, target: np.ndarray, M: np.ndarray) -> float:
    """The paper's test-task loss ``sum_i ||(target - M) x_i||^2`` over the task's inputs."""
    D = target - M
    assert q1.N is not None and q1.S is not None  # finite-sample quadratics (from data)
    return float(q1.N[0] * np.sum((D @ q1.S[0]) * D))


def sweep_run(
    rng: RNGLike,
    *,
    d: int,
    T: int,
    N: int,
    n: int,
    k: int,
    noise_std: float,
    rounds: int,
    inner: int,
    lr_u: float,
    lr_a: float,
    sr_steps: int,
    sr_lr: float,
    ft_steps: int,
    ft_lr: float,
    init_std: float,
    points: int,
    released_sr: bool = False,
    fast_solver: bool = False,
) -> RunResult:
    """One run of a linear sweep (module docstring); curves kept at ``points`` iterations.

    ``released_sr``: also the released script's SR (its frozen adapters are LoRA-ML's initial
    adapters: the same generator state draws both) and every base's limit at ranks k, 2k, 3k.
    ``fast_solver``: also LoRA-ML by :func:`loraml.theory.solve_lora_ml` on the same losses ``q``
    (its own fixed seed: the generator's draws are unchanged) and that base's closed-form limit at
    rank r on the same test task (``fast_limit``, ``fast_base_error``).
    """
    rng = as_generator(rng)
    fam = th.draw_family(d, T, k, rng)
    q = th.Quadratics.from_data(*th.sample_family_data(fam.targets(), N, noise_std, rng))
    target = fam.test_targets()[0]
    q1 = th.Quadratics.from_data(*th.sample_task_data(target, n, noise_std, rng))

    released_rng = copy.deepcopy(rng)  # the released SR's adapters = LoRA-ML's initial ones
    lora = th.lora_ml_paper_gd(
        q, k, rng, rounds=rounds, inner=inner, lr_u=lr_u, lr_a=lr_a, init_std=init_std
    )
    sr = th.sr_gd(q, steps=sr_steps, lr=sr_lr)
    bases = [("lora", lora.A), ("sr", sr.A)]
    if released_sr:
        rel = th.sr_released(q, k, released_rng, steps=sr_steps, lr=sr_lr, init_std=init_std)
        bases.append(("sr_released", rel.A))
    r = finetune_rank(T, k)
    init = (init_std * rng.standard_normal((d, r)), init_std * rng.standard_normal((d, r)))
    grid = np.unique(np.linspace(0, ft_steps, points).round().astype(int))
    out: RunResult = {"iterations": grid}
    for label, A in bases:
        ft = th.finetune_gd(q1, A, r, rng, steps=ft_steps, lr=ft_lr, init=init, target=target)
        cf = th.finetune_closed_form(q1, A, r)
        out[f"{label}_curve"] = ft.test_losses[grid]
        out[f"{label}_asymptote"] = np.array(plotted_loss(q1, target, A + cf.U @ cf.V.T))
        out[f"{label}_base_error"] = np.array(th.base_error(A, fam.A_star).fro)
        if released_sr:
            limits = []
            for rr in (k, 2 * k, 3 * k):
                c = th.finetune_closed_form(q1, A, rr)
                limits.append(plotted_loss(q1, target, A + c.U @ c.V.T))
            out[f"{label}_limit_by_rank"] = np.array(limits)
    out["lora_retrain_loss"] = np.array(lora.losses[-1])
    if fast_solver:
        A_fast = th.solve_lora_ml(q, k).A
        cf = th.finetune_closed_form(q1, A_fast, r)
        out["fast_limit"] = np.array(plotted_loss(q1, target, A_fast + cf.U @ cf.V.T))
        out["fast_base_error"] = np.array(th.base_error(A_fast, fam.A_star).fro)
    return out


def _runs(param: str):
    def runs(s: dict[str, Any]) -> list[Run]:
        out = []
        for i, value in enumerate(s["values"]):
            setting = {**s["base"], param: value}
            kw = {key: s[key] for key in PAPER if key != "base"} | setting
            kw["ft_steps"] = s["ft_steps"]
            for flag in ("released_sr", "fast_solver"):
                if s.get(flag):
                    kw[flag] = True
            out += [Run(sweep_run, kw, (i, j)) for j in range(s["runs"])]
        return out

    return runs


def _assemble(s: dict[str, Any], results: list[RunResult]) -> RunResult:
    V, R = len(s["values"]), s["runs"]
    data: RunResult = {"values": np.array(s["values"]), "iterations": results[0]["iterations"]}
    for key in results[0]:
        if key != "iterations":
            data[key] = np.stack([res[key] for res in results]).reshape(
                (V, R) + results[0][key].shape
            )
    return data


def _draw(param: str):
    label = {"d": "d", "T": "T", "N": "N", "n": "n", "k": "k"}[param]

    def draw(data: RunResult, s: dict[str, Any]):
        from loraml.figures import plot

        values = data["values"]
        fig, axes = plot.figure(ncols=len(values), width=3.0 * len(values), height=3.3)
        x = data["iterations"]
        for i, (ax, v) in enumerate(zip(axes, values, strict=True)):
            setting = {**s["base"], param: int(v)}
            r = finetune_rank(setting["T"], setting["k"])
            methods = [("lora", "LoRA-ML", "-"), ("sr", "SR", "--")]
            if "sr_released_curve" in data:
                methods.append(("sr_released", "SR as released (frozen random adapters)", "-."))
            for m, (key, name, ls) in enumerate(methods):
                st = plot.style(m if m < 2 else 3)
                plot.median_band(
                    ax, x, data[f"{key}_curve"][i], label=name, color=st["color"],
                    marker=st["marker"], linestyle=ls, filled=m == 0,
                )  # fmt: skip
                ax.axhline(
                    np.median(data[f"{key}_asymptote"][i]), color=st["color"], linestyle=":",
                    linewidth=1.2, label=f"{name.split(' (')[0]} closed-form limit (median)",
                )  # fmt: skip
            if "fast_limit" in data:
                st = plot.style(2)
                ax.plot(
                    x[[0, -1]], [np.median(data["fast_limit"][i])] * 2, color=st["color"],
                    marker="*", markersize=9, linestyle=(0, (6, 2)), linewidth=1.2,
                    label="LoRA-ML, fast solver's limit (median)",
                )  # fmt: skip
            if "lora_limit_by_rank" in data and r == 3 * setting["k"]:
                lim = {key: np.median(data[f"{key}_limit_by_rank"][i], axis=0) for key in
                       ("lora", "sr")}  # fmt: skip
                ax.text(
                    0.03, 0.03, "limit at rank k / 2k (median):\n"
                    f"LoRA-ML {lim['lora'][0]:.3g} / {lim['lora'][1]:.3g}\n"
                    f"SR {lim['sr'][0]:.3g} / {lim['sr'][1]:.3g}",
                    transform=ax.transAxes, fontsize=7, va="bottom",
                    bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.7"},
                )  # fmt: skip
            ax.set_yscale("log")
            ax.set_title(f"{label} = {int(v)} (fine-tuning rank {r})")
            ax.set_xlabel("fine-tuning iteration")
        axes[0].set_ylabel("test-task loss")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=4 if len(labels) <= 4 else 3)
        other = ", ".join(f"{k}={v}" for k, v in s["base"].items() if k != param)
        fig.suptitle(
            f"vary-{param}: {other}, noise std {s['noise_std']}, "
            f"curves: {plot.band_note(s['runs'])}"
        )
        return fig

    return draw


def _sweep_numbers(data: RunResult, s: dict[str, Any]) -> dict[str, Any]:
    """Medians over runs, per swept value: final losses, closed-form limits and the extras.

    The extras: limits by rank (vary-T), the fast solver's limit and base error (vary-k).
    """

    def med(x: np.ndarray) -> list[float]:
        return [float(f"{v:.4g}") for v in np.median(x, axis=1)]

    out: dict[str, Any] = {s["param"]: [int(v) for v in data["values"]]}
    for key in ("lora", "sr", "sr_released"):
        if f"{key}_curve" not in data:
            continue
        out[f"{key}_final_loss_median"] = med(data[f"{key}_curve"][:, :, -1])
        out[f"{key}_limit_median"] = med(data[f"{key}_asymptote"])
        out[f"{key}_base_error_median"] = med(data[f"{key}_base_error"])
        if f"{key}_limit_by_rank" in data:
            lim = np.median(data[f"{key}_limit_by_rank"], axis=1)  # (value, rank k/2k/3k)
            out[f"{key}_limit_by_rank_k_2k_3k_median"] = [
                [float(f"{v:.4g}") for v in row] for row in lim
            ]
    if "fast_limit" in data:
        out["fast_limit_median"] = med(data["fast_limit"])
        out["fast_base_error_median"] = med(data["fast_base_error"])
    return out


def _spec(param: str) -> FigureSpec:
    values, ft_steps = SWEEPS[param]
    full = {**PAPER, "param": param, "values": values, "runs": FULL_RUNS, "ft_steps": ft_steps}
    if param == "T":
        full["released_sr"] = True
    if param == "k":
        full["fast_solver"] = True
    quick = {**full, "runs": QUICK_RUNS, "ft_steps": min(ft_steps, QUICK_FT_CAP)}
    return FigureSpec(
        name=f"vary-{param}",
        summary=f"paper sweep over {param} in {values}: test-task loss during fine-tuning",
        full=full,
        quick=quick,
        runs=_runs(param),
        assemble=_assemble,
        draw=_draw(param),
        seed=20241029 + list(SWEEPS).index(param),
        version="2" if param == "k" else "1",
        numbers=_sweep_numbers if param in ("T", "k") else None,
    )


FIGURES = [_spec(p) for p in SWEEPS]

"""Our own figures, answering what the paper (arXiv 2410.22264) left open (its reviews).

- ``spectrum``: singular values of ``A_hat - A*`` for SR and LoRA-ML (population, T = 2, 3, 5):
  rank kT for SR (Theorem 1), at most 2k for LoRA-ML (Theorem 2), zero for T >= 3 (Theorem 3).
- ``sr-floor-vs-T``: the *value* of SR's irreducible rank-k fine-tuning loss as T grows
  (Corollary 1; :func:`loraml.theory.adaptation.sr_floor`), with the derived prediction
  (:func:`loraml.theory.adaptation.sr_floor_prediction`) and the expected value of an upper bound
  (:func:`loraml.theory.adaptation.sr_floor_upper_bound`).
- ``rate``: fine-tuning excess risk against n from the LoRA-ML base at rank k and from SR at ranks
  k and k(T+1) (:func:`loraml.theory.adaptation.finetune_excess_risk`), with
  the first-order finite-n prediction ``1/2 s^2 r [d/(n-d-1) + (d-r)/(n-r-1)]`` and its
  asymptote ``1/2 s^2 r(2d - r)/n`` (:func:`loraml.theory.adaptation.predicted_excess_risk`).
- ``phase``: fraction of instances on which ``A*`` is recovered over a (T, k) grid at fixed d,
  for LoRA-ML (:func:`loraml.theory.solve_lora_ml`), SR, and the convex relaxations
  (:mod:`loraml.theory.convex`).
- ``landscape-T2``: the T = 2 family of global minima
  (:func:`loraml.theory.landscape.t2_global_minimum`) and where descent from random starts
  (:func:`loraml.theory.landscape.random_start`) ends, against
  T = 3.

All are population (infinite-sample) retraining, solved with the fast solver, so they show the
theory's objects exactly; ``rate`` adds finite-sample fine-tuning.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import loraml.theory as th
from loraml.figures.spec import FigureSpec, Run, RunResult
from loraml.theory.adaptation import sr_floor, sr_floor_prediction, sr_floor_upper_bound
from loraml.theory.rng import RNGLike, as_generator

RECOVERY_RTOL = 1e-4  # ||A_hat - A*||_F / ||A*||_F below this counts as recovering A*


def _stack(results: list[RunResult], key: str) -> np.ndarray:
    return np.stack([r[key] for r in results])


# ---------------------------------------------------------------------------------------------
# spectrum
# ---------------------------------------------------------------------------------------------
def spectrum_run(rng: RNGLike, *, d: int, T: int, k: int, instances: int) -> RunResult:
    """Singular values of ``A_hat - A*`` for SR and LoRA-ML on ``instances`` population families."""
    rng = as_generator(rng)
    sv = np.empty((2, instances, d))
    for i in range(instances):
        fam = th.draw_family(d, T, k, rng)
        q = fam.population()
        sv[0, i] = th.base_error(th.solve_lora_ml(q, k).A, fam.A_star).singular_values
        sv[1, i] = th.base_error(th.sr_closed_form(q), fam.A_star).singular_values
    return {"sv": sv}


def _spectrum_runs(s: dict[str, Any]) -> list[Run]:
    return [
        Run(spectrum_run, {"d": s["d"], "T": T, "k": s["k"], "instances": s["instances"]}, (i,))
        for i, T in enumerate(s["Ts"])
    ]


def _spectrum_assemble(s: dict[str, Any], results: list[RunResult]) -> RunResult:
    return {"Ts": np.array(s["Ts"]), "sv": _stack(results, "sv")}  # (T, method, inst, d)


def _spectrum_draw(data: RunResult, s: dict[str, Any]):
    from loraml.figures import plot

    Ts, k, d = data["Ts"], s["k"], s["d"]
    fig, axes = plot.figure(ncols=len(Ts), width=3.0 * len(Ts), height=3.2)
    idx = np.arange(1, d + 1)
    floor = 1e-16
    for ax, T, sv in zip(axes, Ts, data["sv"], strict=True):
        for m, name in enumerate(("LoRA-ML", "SR")):
            st = plot.style(m)
            vals = np.maximum(sv[m], floor)
            for i, row in enumerate(vals):
                ax.plot(
                    idx, row, color=st["color"], marker=st["marker"],
                    linestyle=plot.METHOD_STYLE[name], alpha=0.7,
                    markerfacecolor=st["color"] if m == 0 else "white",
                    label=name if i == 0 else None,
                )  # fmt: skip
        ax.axvline(2 * k + 0.5, color="0.3", linestyle=":", linewidth=1)
        ax.axvline(k * T + 0.5, color="0.3", linestyle="-.", linewidth=1)
        ax.text(2 * k + 0.6, 1e-3, "2k", fontsize=8)
        ax.text(k * T + 0.6, 1e-6, "kT", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylim(floor / 3, None)
        ax.set_title(f"T = {int(T)}")
        ax.set_xlabel("index i")
    axes[0].set_ylabel("singular value i of A_hat - A* (1e-16 = zero)")
    axes[0].legend(loc="center right")
    fig.suptitle(
        f"spectrum: d={d}, k={k}, population, {s['instances']} instances per T "
        "(LoRA-ML: fast solver, spectral start)"
    )
    return fig


SPECTRUM = FigureSpec(
    name="spectrum",
    summary="singular values of A_hat - A* for SR and LoRA-ML (T = 2, 3, 5)",
    full={"d": 20, "k": 2, "Ts": [2, 3, 5], "instances": 10},
    quick={"d": 20, "k": 2, "Ts": [2, 3, 5], "instances": 5},
    runs=_spectrum_runs,
    assemble=_spectrum_assemble,
    draw=_spectrum_draw,
    seed=31,
    version="1",
)


# ---------------------------------------------------------------------------------------------
# sr-floor-vs-T
# ---------------------------------------------------------------------------------------------
def sr_floor_run(rng: RNGLike, *, d: int, k: int, T: int, instances: int) -> RunResult:
    """SR's rank-k floor, its upper bound and Weyl lower bound, on ``instances`` families."""
    rng = as_generator(rng)
    out = np.empty((3, instances))
    for i in range(instances):
        fam = th.draw_family(d, T, k, rng)
        E = th.sr_closed_form(fam.population()) - fam.A_star
        s = np.linalg.svd(E, compute_uv=False)
        out[0, i] = sr_floor(fam.targets(), fam.test_targets()[0], k)
        out[1, i] = 0.5 * float(np.sum(s**2))
        out[2, i] = 0.5 * float(np.sum(s[2 * k :] ** 2))
    return {"floor": out[0], "upper": out[1], "lower": out[2]}


def _sr_floor_runs(s: dict[str, Any]) -> list[Run]:
    return [
        Run(sr_floor_run, {"d": s["d"], "k": s["k"], "T": T, "instances": s["instances"]}, (i,))
        for i, T in enumerate(s["Ts"])
    ]


def _sr_floor_assemble(s: dict[str, Any], results: list[RunResult]) -> RunResult:
    Ts = np.array(s["Ts"])
    return {
        "Ts": Ts,
        "floor": _stack(results, "floor"),
        "upper": _stack(results, "upper"),
        "lower": _stack(results, "lower"),
        "prediction": sr_floor_prediction(s["d"], s["k"], Ts),
        "upper_bound_expected": sr_floor_upper_bound(s["d"], s["k"], Ts),
    }


def _sr_floor_draw(data: RunResult, s: dict[str, Any]):
    from loraml.figures import plot

    fig, ax = plot.figure(width=6.0, height=3.8)
    Ts = data["Ts"].astype(float)
    st = plot.style(0)
    plot.median_band(
        ax, Ts, data["floor"].T, label="SR rank-k floor", color=st["color"],
        marker=st["marker"], markevery=1,
    )  # fmt: skip
    # The predictions and the upper bound are expectations: the means sit beside them as points.
    ax.plot(Ts, data["floor"].mean(1), color=st["color"], linestyle="none", marker="x",
            label="SR rank-k floor, mean (what the prediction predicts)")  # fmt: skip
    d, k = s["d"], s["k"]
    ax.plot(Ts, data["prediction"], color=plot.COLORS[1], linestyle="-", linewidth=2.0,
            label="prediction ((d-k)k/2)((d+1)/T + k(1-1/T))")  # fmt: skip
    ax.plot(Ts, data["upper_bound_expected"], color="0.35", linestyle="--",
            label="upper bound E[1/2||A_SR - A*||^2] = (dk/2)((d+k+1)/T + k(1-1/T))")  # fmt: skip
    ax.plot(Ts, data["upper"].mean(1), color="0.35", linestyle="none", marker="v",
            markerfacecolor="white", label="1/2||A_SR - A*||^2 (measured mean)")  # fmt: skip
    lower = np.median(data["lower"], 1)
    lower = np.where(lower > 1e-8 * np.median(data["floor"], 1), lower, np.nan)  # 0: kT <= 2k
    ax.plot(Ts, lower, color="0.6", linestyle=":", marker="^", markevery=1,
            markerfacecolor="white", label="Weyl lower bound (median; 0 for T <= 2)")  # fmt: skip
    ax.axhline(0.5 * (d - k) * k**2, color=plot.COLORS[1], linewidth=0.8, linestyle=":",
               label="(d-k) k^2 / 2 (prediction as T -> infinity)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of retraining tasks T")
    ax.set_ylabel("population loss after best rank-k fine-tuning")
    ax.set_title(
        f"sr-floor-vs-T: d={s['d']}, k={s['k']}, LoRA-ML's floor is 0 for T>=3\n"
        f"{plot.band_note(s['instances'], 'instances')} per T",
        fontsize=9,
    )
    ax.legend(loc="upper right", fontsize=7)
    return fig


def _sig(x: Any, digits: int = 4) -> Any:
    """Round to ``digits`` significant digits, elementwise, as plain Python floats (for JSON)."""
    arr = np.atleast_1d(np.asarray(x, dtype=float))
    out = [float(f"{v:.{digits}g}") if np.isfinite(v) else None for v in arr]
    return out if np.ndim(x) else out[0]


def _sr_floor_numbers(data: RunResult, s: dict[str, Any]) -> dict[str, Any]:
    floor = data["floor"].mean(1)
    return {
        "Ts": [int(T) for T in data["Ts"]],
        "floor_mean": _sig(floor),
        "prediction_over_floor": _sig(data["prediction"] / floor),
        "upper_bound_expected_over_floor": _sig(data["upper_bound_expected"] / floor),
        "weyl_lower_over_floor": _sig(data["lower"].mean(1) / floor),
    }


_SR_FLOOR_FULL = {"d": 20, "k": 1, "Ts": [1, 2, 3, 5, 8, 12, 20, 30, 50, 100], "instances": 500}
SR_FLOOR = FigureSpec(
    name="sr-floor-vs-T",
    summary="value of SR's irreducible rank-k fine-tuning loss as T grows, prediction and bound",
    full=_SR_FLOOR_FULL,
    quick={**_SR_FLOOR_FULL, "instances": 200},
    runs=_sr_floor_runs,
    assemble=_sr_floor_assemble,
    draw=_sr_floor_draw,
    numbers=_sr_floor_numbers,
    seed=32,
    version="2",
)


# ---------------------------------------------------------------------------------------------
# rate
# ---------------------------------------------------------------------------------------------
def rate_run(
    rng: RNGLike, *, d: int, T: int, k: int, noise_std: float, ns: list[int], reps: int
) -> RunResult:
    """Excess risk of rank-r fine-tuning from n samples, one family, ``reps`` data draws per n."""
    rng = as_generator(rng)
    from loraml.theory.adaptation import finetune_excess_risk

    fam = th.draw_family(d, T, k, rng)
    q = fam.population()
    target = fam.test_targets()[0]
    bases = (
        (th.solve_lora_ml(q, k).A, k),
        (th.sr_closed_form(q), k),
        (th.sr_closed_form(q), min(d, k * (T + 1))),
    )
    risk = np.array(
        [[finetune_excess_risk(A, target, r, n, noise_std, rng, reps=reps) for n in ns]
         for A, r in bases]
    )  # fmt: skip
    return {"risk": risk}  # (method, n, reps)


def _rate_runs(s: dict[str, Any]) -> list[Run]:
    kw = {key: s[key] for key in ("d", "T", "k", "noise_std", "ns", "reps")}
    return [Run(rate_run, kw, (i,)) for i in range(s["instances"])]


def _rate_assemble(s: dict[str, Any], results: list[RunResult]) -> RunResult:
    from loraml.theory.adaptation import fit_power_law, predicted_excess_risk

    ns = np.array(s["ns"])
    risk = _stack(results, "risk")  # (instance, method, n, reps)
    mean = risk.mean(axis=(0, 3))  # (method, n)
    d, k, T, s2 = s["d"], s["k"], s["T"], s["noise_std"]
    r_full = min(d, k * (T + 1))
    return {
        "ns": ns,
        "risk": risk,
        "mean": mean,
        "predicted_k": np.array([predicted_excess_risk(d, k, int(n), s2) for n in ns]),
        "predicted_full": np.array([predicted_excess_risk(d, r_full, int(n), s2) for n in ns]),
        # first-order finite-n values (n > d + 1), NaN where undefined
        "predicted_k_finite_n": np.array([_finite_n(d, k, int(n), s2) for n in ns]),
        "predicted_full_finite_n": np.array([_finite_n(d, r_full, int(n), s2) for n in ns]),
        "slopes": np.array([fit_power_law(ns, m).slope for m in mean]),
    }


def _finite_n(d: int, r: int, n: int, noise_std: float) -> float:
    from loraml.theory.adaptation import predicted_excess_risk

    return predicted_excess_risk(d, r, n, noise_std, finite_n=True) if n > d + 1 else np.nan


RATE_METHODS = ("LoRA-ML, rank k", "SR, rank k", "SR, rank k(T+1)")


def _rate_draw(data: RunResult, s: dict[str, Any]):
    from loraml.figures import plot

    fig, ax = plot.figure(width=6.0, height=3.9)
    ns = data["ns"].astype(float)
    per_instance = data["risk"].mean(3)  # (instance, method, n): each family's expected risk
    styles = ("-", "--", "-.")
    for m, name in enumerate(RATE_METHODS):
        st = plot.style(m)
        plot.median_band(
            ax, ns, per_instance[:, m], label=f"{name} (slope {data['slopes'][m]:.2f})",
            color=st["color"], marker=st["marker"], linestyle=styles[m], markevery=1,
            filled=m != 1,
        )  # fmt: skip
    ax.plot(ns, data["predicted_k_finite_n"], color="black", linestyle="-", linewidth=0.9,
            label="predicted 1/2 s^2 k[d/(n-d-1) + (d-k)/(n-k-1)]")  # fmt: skip
    ax.plot(ns, data["predicted_k"], color="black", linestyle=":", label="1/2 s^2 k(2d-k)/n")
    ax.plot(ns, data["predicted_full_finite_n"], color="0.5", linestyle="-", linewidth=0.9,
            label="predicted, r = k(T+1)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("fine-tuning samples n")
    ax.set_ylabel("excess risk 1/2||A + UV^T - A_test*||^2")
    ax.set_title(
        f"rate: d={s['d']}, T={s['T']}, k={s['k']}, noise std {s['noise_std']}; "
        f"{s['instances']} families x {s['reps']} draws\neach family: mean risk over its draws; "
        f"{plot.band_note(s['instances'], 'families')}\nslopes: fit to the mean over all",
        fontsize=9,
    )
    ax.legend(loc="center right", fontsize=7)
    return fig


def _rate_numbers(data: RunResult, s: dict[str, Any]) -> dict[str, Any]:
    from loraml.theory.adaptation import fit_power_law

    ns, lora = data["ns"], data["mean"][0]
    ok = np.isfinite(data["predicted_k_finite_n"])
    return {
        "ns": [int(n) for n in ns],
        "slopes": dict(zip(RATE_METHODS, _sig(data["slopes"]), strict=True)),
        "lora_ml_over_finite_n_prediction": _sig(lora / data["predicted_k_finite_n"]),
        "lora_ml_over_asymptote": _sig(lora / data["predicted_k"]),
        "finite_n_prediction_slope": _sig(
            fit_power_law(ns[ok], data["predicted_k_finite_n"][ok]).slope
        ),
    }


_RATE_FULL = {
    "d": 10, "T": 3, "k": 1, "noise_std": 0.1, "instances": 10, "reps": 50,
    "ns": [30, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000],
}  # fmt: skip
RATE = FigureSpec(
    name="rate",
    summary="fine-tuning excess risk against n (log-log) from LoRA-ML and SR bases",
    full=_RATE_FULL,
    quick={**_RATE_FULL, "instances": 5, "reps": 20},
    runs=_rate_runs,
    assemble=_rate_assemble,
    draw=_rate_draw,
    numbers=_rate_numbers,
    seed=33,
    version="2",
)


# ---------------------------------------------------------------------------------------------
# phase
# ---------------------------------------------------------------------------------------------
PHASE_METHODS = ("LoRA-ML", "SR", "nuclear norm", "SDP")


def phase_run(rng: RNGLike, *, d: int, T: int, k: int, instances: int, convex: bool) -> RunResult:
    """Relative base errors of each method on ``instances`` population families (one grid cell).

    NaN marks a method that returned no solution (a convex solver failure) or was skipped.
    """
    rng = as_generator(rng)
    from loraml.theory.convex import nuclear_relaxation, sdp_relaxation

    err = np.full((len(PHASE_METHODS), instances), np.nan)
    for i in range(instances):
        fam = th.draw_family(d, T, k, rng)
        q = fam.population()
        err[0, i] = th.base_error(th.solve_lora_ml(q, k).A, fam.A_star).relative
        err[1, i] = th.base_error(th.sr_closed_form(q), fam.A_star).relative
        if convex:
            for m, solve in ((2, nuclear_relaxation), (3, sdp_relaxation)):
                res = solve(q)
                if res.ok:
                    err[m, i] = th.base_error(res.A, fam.A_star).relative
    return {"error": err}


def _phase_runs(s: dict[str, Any]) -> list[Run]:
    return [
        Run(
            phase_run,
            {"d": s["d"], "T": T, "k": k, "instances": s["instances"], "convex": s["convex"]},
            (i, j),
            cost=s["instances"] * (1.0 if s["convex"] else 0.05),
        )
        for i, T in enumerate(s["Ts"])
        for j, k in enumerate(s["ks"])
    ]


def _phase_assemble(s: dict[str, Any], results: list[RunResult]) -> RunResult:
    nT, nk = len(s["Ts"]), len(s["ks"])
    err = _stack(results, "error").reshape(nT, nk, len(PHASE_METHODS), s["instances"])
    err = np.moveaxis(err, 2, 0)  # (method, T, k, instance)
    with np.errstate(invalid="ignore"):
        recovered = np.where(np.isnan(err), np.nan, err < RECOVERY_RTOL)
    return {
        "Ts": np.array(s["Ts"]),
        "ks": np.array(s["ks"]),
        "error": err,
        "fraction": np.nanmean(recovered, axis=3) if s["convex"] else recovered.mean(3),
        "rtol": np.array(RECOVERY_RTOL),
    }


def _phase_draw(data: RunResult, s: dict[str, Any]):
    from loraml.figures import plot

    Ts, ks, frac = data["Ts"], data["ks"], data["fraction"]
    fig, axes = plot.figure(ncols=len(PHASE_METHODS), width=2.6 * len(PHASE_METHODS), height=3.2)
    for ax, name, f in zip(axes, PHASE_METHODS, frac, strict=True):
        im = ax.imshow(f.T, origin="lower", cmap="Greys", vmin=0, vmax=1, aspect="auto")
        for i in range(len(Ts)):
            for j in range(len(ks)):
                v = f[i, j]
                txt = "-" if np.isnan(v) else f"{v:.1f}".replace("1.0", "1").replace("0.0", "0")
                ax.text(i, j, txt, ha="center", va="center", fontsize=8,
                        color="white" if v > 0.5 else "black")  # fmt: skip
        # Genericity boundary k(T+1) <= d: cells right of the step are non-generic.
        edge = [max((i for i, T in enumerate(Ts) if k * (T + 1) <= s["d"]), default=-1) + 0.5
                for k in ks]  # fmt: skip
        ax.step(edge, np.arange(len(ks)), where="mid", color=plot.COLORS[1], linewidth=2)
        ax.set_xticks(range(len(Ts)), [str(int(T)) for T in Ts])
        ax.set_yticks(range(len(ks)), [str(int(k)) for k in ks])
        ax.set_xlabel("T")
        ax.set_title(name)
        ax.grid(False)
    axes[0].set_ylabel("k")
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="fraction recovering A*")
    fig.suptitle(
        f"phase: d={s['d']}, population, {s['instances']} instances per cell, recovered = "
        f"relative error < {RECOVERY_RTOL:g}; orange line: k(T+1) = d (genericity)",
        fontsize=9,
    )
    return fig


_PHASE_FULL = {
    "d": 12,
    "Ts": [2, 3, 4, 5, 6, 8, 10],
    "ks": [1, 2, 3, 4],
    "instances": 20,
    "convex": True,
}
PHASE = FigureSpec(
    name="phase",
    summary="fraction of instances recovering A*, over (T, k), for LoRA-ML, SR, convex relaxations",
    full=_PHASE_FULL,
    quick={**_PHASE_FULL, "instances": 5},
    runs=_phase_runs,
    assemble=_phase_assemble,
    draw=_phase_draw,
    seed=34,
    version="1",
)


# ---------------------------------------------------------------------------------------------
# landscape-T2
# ---------------------------------------------------------------------------------------------
def landscape_run(rng: RNGLike, *, d: int, k: int, starts: int, family_points: int) -> RunResult:
    """One T = 2 and one T = 3 family: where LoRA-ML ends from random starts; the T = 2 family.

    For each start (:func:`loraml.theory.landscape.random_start`) the fast solver runs from it; the
    record is the relative distance ``||A_hat - A*||_F / ||A*||_F``, the final objective and
    ``rank(A_hat - A*)``. For T = 2 (k = 1) the explicit family of global minima is traced over
    its parameter ``c in (-1, 1)``.
    """
    rng = as_generator(rng)
    from loraml.theory.landscape import random_start, t2_global_minimum

    out: RunResult = {}
    for T in (2, 3):
        fam = th.draw_family(d, T, k, rng)
        q = fam.population()
        rec = np.empty((3, starts))
        for i in range(starts):
            res = th.solve_lora_ml(q, k, init=random_start(q, k, rng))
            err = th.base_error(res.A, fam.A_star)
            rec[:, i] = err.relative, res.objective, err.rank(rtol=1e-6)
        out[f"T{T}"] = rec
        if T == 2:
            cs = np.linspace(-0.98, 0.98, family_points)
            fam_dist = np.empty(family_points)
            for j, c in enumerate(cs):
                A_hat, _ = t2_global_minimum(fam.A_star, fam.U_star, c * np.eye(k))
                fam_dist[j] = th.base_error(A_hat, fam.A_star).relative
            out["family_c"], out["family_distance"] = cs, fam_dist
    return out


def _landscape_runs(s: dict[str, Any]) -> list[Run]:
    kw = {key: s[key] for key in ("d", "k", "starts", "family_points")}
    return [Run(landscape_run, kw, (i,)) for i in range(s["instances"])]


def _landscape_assemble(s: dict[str, Any], results: list[RunResult]) -> RunResult:
    return {key: _stack(results, key) for key in results[0]}


def _landscape_draw(data: RunResult, s: dict[str, Any]):
    from loraml.figures import plot

    fig, (ax1, ax2) = plot.figure(ncols=2, width=9.0, height=3.6)
    floor = 1e-16
    n_inst = data["T2"].shape[0]
    for T, off, m in ((2, -0.15, 0), (3, 0.15, 1)):
        rec = data[f"T{T}"]  # (instance, 3, starts)
        st = plot.style(m)
        for i in range(n_inst):
            y = np.maximum(rec[i, 0], floor)
            ax1.plot(np.full(y.shape, i + off), y, linestyle="none", marker=st["marker"],
                     color=st["color"], markerfacecolor=st["color"] if m == 0 else "white",
                     alpha=0.7, label=f"T = {T}" if i == 0 else None)  # fmt: skip
    ax1.set_yscale("log")
    ax1.set_ylim(floor / 3, None)
    ax1.set_xticks(range(n_inst), [str(i + 1) for i in range(n_inst)])
    ax1.set_xlabel("instance")
    ax1.set_ylabel("||A_hat - A*|| / ||A*|| (1e-16 = exact)")
    ax1.set_title(f"ends of {s['starts']} random starts per instance")
    ax1.legend(loc="center right")
    for i in range(n_inst):
        st = plot.style(i)
        ax2.plot(data["family_c"][i], data["family_distance"][i], color=st["color"],
                 linestyle=("-", "--", "-.", ":")[i % 4], label=f"instance {i + 1}")  # fmt: skip
        ends = data["T2"][i, 0]
        ax2.plot(np.full(ends.shape, 1.08 + 0.05 * i), ends, linestyle="none",
                 marker=st["marker"], color=st["color"], markersize=4,
                 markerfacecolor="white")  # fmt: skip
    ax2.axvline(1.0, color="0.5", linewidth=0.8)
    ax2.set_yscale("log")
    ax2.set_ylim(1e-3, None)
    ax2.set_xlabel("family parameter c (zero loss for |c| < 1)")
    ax2.set_ylabel("||A_hat - A*|| / ||A*||")
    ax2.set_title("T = 2 family of global minima (right of c = 1: random starts)", fontsize=8)
    ax2.legend(loc="upper left", fontsize=7, ncols=2)
    fig.suptitle(f"landscape-T2: d={s['d']}, k={s['k']}, population LoRA-ML")
    return fig


LANDSCAPE = FigureSpec(
    name="landscape-T2",
    summary="T = 2 family of global minima: distance of A_hat from A* across random starts",
    full={"d": 10, "k": 1, "starts": 50, "family_points": 101, "instances": 5},
    quick={"d": 10, "k": 1, "starts": 20, "family_points": 61, "instances": 4},
    runs=_landscape_runs,
    assemble=_landscape_assemble,
    draw=_landscape_draw,
    seed=35,
    version="1",
)

FIGURES = [SPECTRUM, SR_FLOOR, RATE, PHASE, LANDSCAPE]

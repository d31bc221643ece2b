"""Benchmark of the LoRA-ML solvers: the fast solver against the paper's schedule, and scaling.

Run from the repository root::

    .venv/bin/python benchmarks/bench_solvers.py [--repeats 3] [--json OUT.json] [--skip-paper]

Three parts, each printed as a table (and all written to ``--json`` when given):

1. Paper default finite-sample instance (d=10, T=3, N=5000, k=1, noise std 0.01): the paper's
   schedule (3000 rounds x 10 steps) and the fast solver side by side, with ``||A_hat - A*||_F``
   and wall time of each, and the speed-up.
2. Population instance d=1000, T=10, k=5: wall time to relative error 1e-10.
3. Scaling of the fast solver with d, T, k (population) and N (finite sample; the solver itself is
   independent of N, forming the sufficient statistics is O(T d^2 N)).

Times are the median over ``--repeats`` runs on the same instance, both wall time
(``time.perf_counter``) and CPU time of this process (``time.process_time``, less sensitive to other
jobs on a shared machine; with several BLAS threads it can exceed the wall time). Speed-ups are
ratios of medians measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

import loraml.theory as th


def _median_time(fn, repeats: int) -> tuple[float, float, object]:
    """Median wall seconds, median CPU seconds of this process, and the last result."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), out


def paper_instance(repeats: int, skip_paper: bool) -> dict:
    """Part 1: the paper's default instance, both solvers on the same data."""
    rng = np.random.default_rng(0)
    d, T, k, N, s = 10, 3, 1, 5000, 0.01
    fam = th.draw_family(d, T, k, rng)
    X, Y = th.sample_family_data(fam.targets(), N, s, rng)
    q = th.Quadratics.from_data(X, Y)
    t_fast, c_fast, fast = _median_time(lambda: th.solve_lora_ml(q, k), repeats)
    row = {
        "instance": "d=10 T=3 N=5000 k=1 noise_std=0.01 (seed 0)",
        "fast_seconds": t_fast,
        "fast_cpu_seconds": c_fast,
        "fast_error_fro": th.base_error(fast.A, fam.A_star).fro,
        "fast_iterations": fast.iterations,
    }
    if not skip_paper:
        t_paper, c_paper, paper = _median_time(
            lambda: th.lora_ml_paper_gd(q, k, np.random.default_rng(1)), repeats
        )
        row |= {
            "paper_seconds": t_paper,
            "paper_cpu_seconds": c_paper,
            "paper_error_fro": th.base_error(paper.A, fam.A_star).fro,
            "speedup": t_paper / t_fast,
            "speedup_cpu": c_paper / c_fast,
        }
    return row


def large_population(repeats: int) -> dict:
    """Part 2: population d=1000, T=10, k=5."""
    fam = th.draw_family(1000, 10, 5, np.random.default_rng(0))
    q = fam.population()
    t, c, res = _median_time(lambda: th.solve_lora_ml(q, 5), repeats)
    return {
        "instance": "population d=1000 T=10 k=5 (seed 0)",
        "seconds": t,
        "cpu_seconds": c,
        "relative_error": th.base_error(res.A, fam.A_star).relative,
        "message": res.message,
    }


def scaling(repeats: int) -> list[dict]:
    """Part 3: fast-solver time as d, T, k, N vary one at a time around (d=100, T=5, k=2)."""
    base = {"d": 100, "T": 5, "k": 2, "N": None}
    grid = (
        [{"d": d} for d in (25, 50, 100, 200, 400, 1000)]
        + [{"T": T} for T in (3, 5, 10, 20)]
        + [{"k": k} for k in (1, 2, 4, 8)]
        + [{"d": 20, "T": 3, "k": 1, "N": N} for N in (1000, 10000, 100000)]
    )
    rows = []
    for change in grid:
        p = base | change
        rng = np.random.default_rng(0)
        fam = th.draw_family(p["d"], p["T"], p["k"], rng)
        t_stats = 0.0
        if p["N"] is None:
            q = fam.population()
        else:
            X, Y = th.sample_family_data(fam.targets(), p["N"], 0.01, rng)
            t_stats, _, q = _median_time(lambda X=X, Y=Y: th.Quadratics.from_data(X, Y), repeats)
        t, c, res = _median_time(lambda q=q, k=p["k"]: th.solve_lora_ml(q, k), repeats)
        rows.append(
            p
            | {
                "stats_seconds": t_stats,
                "solve_seconds": t,
                "solve_cpu_seconds": c,
                "relative_error": th.base_error(res.A, fam.A_star).relative,
                "iterations": res.iterations,
            }
        )
    return rows


def machine() -> dict:
    """Where the numbers were measured."""
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        "load_average_1min_at_start": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }


def main() -> None:
    """Run the benchmark and print its tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per entry (median)")
    ap.add_argument("--json", default=None, help="write all numbers to this JSON file")
    ap.add_argument("--skip-paper", action="store_true", help="skip the minutes-long schedule")
    args = ap.parse_args()

    out = {"command": " ".join(["python", "benchmarks/bench_solvers.py", *sys.argv[1:]])}
    out["machine"] = machine()
    out["paper"] = p = paper_instance(args.repeats, args.skip_paper)
    print("## Paper default instance:", p["instance"])
    print(f"fast solver : {p['fast_seconds']:.4f} s, ||A_hat - A*||_F = {p['fast_error_fro']:.3e}")
    if "paper_seconds" in p:
        err = p["paper_error_fro"]
        print(f"paper sched.: {p['paper_seconds']:.2f} s, ||A_hat - A*||_F = {err:.3e}")
        print(f"speed-up    : {p['speedup']:.0f}x wall, {p['speedup_cpu']:.0f}x CPU time")

    out["large"] = g = large_population(args.repeats)
    print(f"\n## {g['instance']}: {g['seconds']:.3f} s, relative error {g['relative_error']:.2e}")

    out["scaling"] = rows = scaling(args.repeats)
    print("\n## Scaling (fast solver; population unless N is given)")
    print(
        "|    d |  T |  k |      N | stats (s) | solve (s) | solve CPU (s) | rel. error "
        "| iterations |"
    )
    print(
        "|-----:|---:|---:|-------:|----------:|----------:|--------------:|-----------:"
        "|-----------:|"
    )
    for r in rows:
        n = "-" if r["N"] is None else str(r["N"])
        print(
            f"| {r['d']:>4} | {r['T']:>2} | {r['k']:>2} | {n:>6} | {r['stats_seconds']:9.4f} "
            f"| {r['solve_seconds']:9.4f} | {r['solve_cpu_seconds']:13.4f} "
            f"| {r['relative_error']:10.2e} | {r['iterations']:>10} |"
        )
    out["machine"]["load_average_1min_at_end"] = os.getloadavg()[0]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2, default=str)


if __name__ == "__main__":
    main()

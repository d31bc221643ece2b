"""Where local search on the T >= 3 LoRA-ML landscape ends, counted over several seeds.

Runs ``loraml verify --only spurious --seed S`` (full profile: 60 generic instances, T in 3..4,
k in 1..2, ``d = k(T+1)``, half with task scales spread by ``exp(N(0, 1))``; 10 L-BFGS and 1
gradient-descent run from random starts each) for every seed, and pools the end-point classes
(:func:`loraml.theory.landscape.classify_point`) with 95 % Wilson intervals. Command (writes the
JSON that README quotes)::

    python -m loraml.theory.spurious_survey --seeds 0 1 2 11 --out theory/results/spurious.json

(or one process per seed, ``--seeds S --out sS.json``, pooled by ``--merge s0.json ... --out``;
the pooled file is identical: every seed draws from its own generator).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path

from loraml.theory.landscape import KINDS, wilson_interval


def survey(seeds: Sequence[int], instances: int | None = None) -> dict:
    """Run the ``spurious`` check of ``loraml verify`` for each seed and pool the classes.

    Parameters
    ----------
    seeds : sequence of int
        ``loraml verify --seed`` values.
    instances : int, optional
        Instances per seed (default: the full profile's 60).

    Returns
    -------
    dict
        ``per_seed`` (each seed's ``classes``, ``spurious_examples`` and ``runaway_examples``) and
        ``pooled``: per solver (``lbfgs``, ``gd``) and class, ``count``, ``runs`` and
        ``wilson95``.
    """
    from loraml.theory.verify_cli import _one_blas_thread, run_random

    per_seed: dict[str, dict] = {}
    start = time.perf_counter()
    with _one_blas_thread():
        for seed in seeds:
            (res,) = run_random(["spurious"], int(seed), quick=False, instances=instances)
            n = res.numbers
            per_seed[str(seed)] = {
                "classes": n["classes"],
                "end_points": n["end_points"],
                "spurious_examples": n["spurious_examples"],
                "runaway_examples": n["runaway_examples"],
                "instances": res.instances,
                "seconds": res.seconds,
            }
    return pool(per_seed, time.perf_counter() - start)


def pool(per_seed: dict[str, dict], seconds: float) -> dict:
    """Pool per-seed classes (the ``per_seed`` entries of :func:`survey`) with Wilson intervals."""
    seeds = [int(s) for s in per_seed]
    pooled: dict[str, dict[str, dict]] = {}
    for solver in ("lbfgs", "gd"):
        pooled[solver] = {}
        runs = sum(s["classes"][solver]["global"]["runs"] for s in per_seed.values())
        for kind in KINDS:
            count = sum(s["classes"][solver][kind]["count"] for s in per_seed.values())
            lo, hi = wilson_interval(count, runs)
            pooled[solver][kind] = {"count": count, "runs": runs, "wilson95": [lo, hi]}
    return {
        "command": "python -m loraml.theory.spurious_survey --seeds "
        + " ".join(str(s) for s in seeds),
        "seeds": seeds,
        "instances_per_seed": sorted({s["instances"] for s in per_seed.values()}),
        "pooled": pooled,
        "per_seed": per_seed,
        "seconds": seconds,
        "machine": platform.platform(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``--seeds S [S ...] --out FILE.json [--instances N]``."""
    p = argparse.ArgumentParser(prog="python -m loraml.theory.spurious_survey")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--instances", type=int, default=None)
    p.add_argument("--merge", type=Path, nargs="+", default=None, help="pool earlier outputs")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.merge:
        parts = [json.loads(f.read_text()) for f in args.merge]
        per_seed = {k: v for part in parts for k, v in part["per_seed"].items()}
        out = pool(per_seed, sum(part["seconds"] for part in parts))
    elif args.seeds:
        out = survey(args.seeds, args.instances)
    else:
        p.error("give --seeds or --merge")
    args.out.write_text(json.dumps(out, indent=1, allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

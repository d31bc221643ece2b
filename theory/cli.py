"""``loraml solve``: run a retraining method on an instance file (population or data).

Methods are entries of :data:`METHODS`; a new method is a function
``(instance, k, rng) -> Solution`` added there (see ``loraml.theory.convex`` for the convex
relaxations).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from loraml.cli import positive_int, seed
from loraml.theory.divergence import DivergenceError
from loraml.theory.io import (
    Instance,
    InstanceError,
    OutputPathError,
    check_output_path,
    load_instance,
    write_npz,
)
from loraml.theory.metrics import adapter_errors, base_error
from loraml.theory.objectives import lora_ml_loss
from loraml.theory.retraining import lora_ml_paper_gd, solve_lora_ml, sr_closed_form, sr_released


@dataclass
class Solution:
    """What a method returns to ``loraml solve``.

    Attributes
    ----------
    A_hat : ndarray, shape (d, d)
    U_hat : ndarray, shape (T, d, k), or None
    objective : float
        The method's own objective at the solution.
    iterations : int
    seconds : float
    extra : dict
        Method-specific numbers for the JSON report (must be JSON-serialisable).
    """

    A_hat: np.ndarray
    U_hat: np.ndarray | None
    objective: float
    iterations: int
    seconds: float
    extra: dict = field(default_factory=dict)


def _need_rank(k: int | None) -> int:
    if k is None:
        raise InstanceError(
            "this method needs the adapter rank: store 'k' in the file or pass --rank"
        )
    return k


def _sr(inst: Instance, k: int | None, rng: np.random.Generator) -> Solution:
    import time

    start = time.perf_counter()
    A = sr_closed_form(inst.q)
    return Solution(A, None, float(inst.q.losses(A).sum()), 0, time.perf_counter() - start)


def _lora_ml(inst: Instance, k: int | None, rng: np.random.Generator) -> Solution:
    res = solve_lora_ml(inst.q, _need_rank(k))
    extra = {
        "grad_norm": res.grad_norm,
        "stationarity": res.stationarity,
        "converged": res.converged,
        "status": res.status,
        "identifiable": res.identifiable,
        "identifiability": res.identifiability,
        "message": res.message,
    }
    return Solution(res.A, res.U, res.objective, res.iterations, res.seconds, extra)


def _lora_ml_gd(inst: Instance, k: int | None, rng: np.random.Generator) -> Solution:
    res = lora_ml_paper_gd(inst.q, _need_rank(k), rng)
    assert res.U is not None  # the paper's schedule returns its adapters
    objective = lora_ml_loss(inst.q, res.A, res.U)
    return Solution(res.A, res.U, objective, len(res.losses) - 1, res.seconds)


def _sr_released(inst: Instance, k: int | None, rng: np.random.Generator) -> Solution:
    """SR as the released script trains it (frozen random adapters; seeded like lora-ml-gd)."""
    res = sr_released(inst.q, _need_rank(k), rng)
    extra = {"sr_objective": float(inst.q.losses(res.A).sum())}  # without the frozen adapters
    return Solution(res.A, None, float(res.losses[-1]), len(res.losses) - 1, res.seconds, extra)


def _convex(relaxation: str) -> Callable[[Instance, int | None, np.random.Generator], Solution]:
    """Wrap a relaxation of :mod:`loraml.theory.convex` (no rank needed; cvxpy imported on use)."""

    def method(inst: Instance, k: int | None, rng: np.random.Generator) -> Solution:
        from loraml.theory import convex

        try:
            res = getattr(convex, relaxation)(inst.q)
        except ValueError as err:
            raise InstanceError(f"{relaxation}: {err}") from None
        if not res.ok:
            raise InstanceError(f"{relaxation}: the solver {res.solver} returned '{res.status}'")
        extra = {"status": res.status, "solver": res.solver, "penalty": res.penalty}
        return Solution(res.A, None, res.objective, 0, res.seconds, extra)

    return method


#: Method name -> solver. ``loraml solve --method`` chooses among these keys.
METHODS: dict[str, Callable[[Instance, int | None, np.random.Generator], Solution]] = {
    "sr": _sr,
    "lora-ml": _lora_ml,
    "lora-ml-gd": _lora_ml_gd,
    "sr-released": _sr_released,
    "convex-nuclear": _convex("nuclear_relaxation"),
    "convex-sdp": _convex("sdp_relaxation"),
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``solve`` subcommand."""
    p = sub.add_parser(
        "solve",
        help="run a retraining method on an instance file",
        description="Run SR or LoRA-ML retraining on a population instance (A_star, U_star) "
        "or a data instance (X, Y, k) stored as .npz; write A_hat (and U_hat) to OUT.",
    )
    p.add_argument("--instance", required=True, help="input .npz file")
    p.add_argument("--method", required=True, help=f"one of: {', '.join(METHODS)}")
    p.add_argument("--out", required=True, help="output .npz (A_hat, U_hat)")
    p.add_argument(
        "--rank", type=positive_int, default=None, help="adapter rank k (overrides the file)"
    )
    p.add_argument("--seed", type=seed, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``loraml solve``."""
    from loraml.cli import UsageError

    if args.method not in METHODS:
        raise UsageError(f"--method {args.method!r} is unknown; choose one of {', '.join(METHODS)}")
    try:  # before any work: never write onto the input, a folder or a device
        check_output_path(args.out, inputs=[args.instance])
    except OutputPathError as err:
        raise UsageError(str(err)) from None
    try:
        inst = load_instance(args.instance, rank=args.rank)
        sol = METHODS[args.method](inst, inst.k, np.random.default_rng(args.seed))
    except InstanceError as err:
        raise UsageError(f"--instance: {err}") from None
    except DivergenceError as err:
        raise UsageError(f"--method {args.method}: {err}; nothing written") from None
    if not (np.isfinite(sol.objective) and np.all(np.isfinite(sol.A_hat))):
        raise UsageError(
            f"--method {args.method}: the result is not finite (objective {sol.objective}); "
            "nothing written"
        )

    arrays = {"A_hat": sol.A_hat}
    if sol.U_hat is not None:
        arrays["U_hat"] = sol.U_hat
    try:
        write_npz(args.out, **arrays)
    except OutputPathError as err:
        raise UsageError(f"--out: {err}") from None

    report: dict = {
        "method": args.method,
        "instance": str(args.instance),
        "kind": inst.kind,
        "d": inst.q.d,
        "T": inst.q.T,
        "k": inst.k,
        "iterations": sol.iterations,
        "seconds": sol.seconds,
        "objective": sol.objective,
        **sol.extra,
    }
    if inst.A_star is not None:
        a_err = base_error(sol.A_hat, inst.A_star)
        report["a_error_fro"] = a_err.fro
        report["a_error_relative"] = a_err.relative
        report["a_error_singular_values"] = a_err.singular_values.tolist()
    if inst.U_star is not None and sol.U_hat is not None and sol.U_hat.shape == inst.U_star.shape:
        report["adapter_errors_fro"] = adapter_errors(sol.U_hat, inst.U_star).tolist()
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            if isinstance(value, list):
                value = (
                    "["
                    + ", ".join(f"{v:.3g}" for v in value[:8])
                    + (", ...]" if len(value) > 8 else "]")
                )
            elif key == "identifiable":
                value = {True: "yes", False: "no", None: "undecided"}[value]
            elif isinstance(value, float):
                value = f"{value:.6g}"
            print(f"{key:>26}: {value}", file=sys.stdout)
        print(f"{'written':>26}: {args.out}")
    return 0

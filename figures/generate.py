"""Compute (or load from cache) and draw figures: the engine behind ``loraml figures``.

For each figure: if ``OUT/NAME.json`` records the current key (settings + seed + code version),
only redraw from ``OUT/NAME.npz``; otherwise run the figure's runs (in a process pool with
``jobs > 1``), keeping each finished run in ``OUT/.partial/`` so an interrupted computation
resumes, then write the data file and draw ``OUT/NAME.png`` and ``OUT/NAME.pdf``.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loraml import __version__
from loraml.figures import cache
from loraml.figures.registry import registry
from loraml.figures.spec import FigureSpec, Run, RunResult, run_rng
from loraml.theory.io import clean_stale_temporaries

DEFAULT_OUT = Path("figures") / "output"


@dataclass
class Outcome:
    """What happened to one figure.

    Attributes
    ----------
    name : str
    stem : Path
        ``stem.npz``, ``stem.json``, ``stem.png``, ``stem.pdf`` were written.
    data : dict of ndarray
        The figure's data.
    cached : bool
        The data came from the cache (only redrawn).
    seconds : float
        Compute time summed over the figure's runs (0 when cached).
    """

    name: str
    stem: Path
    data: RunResult
    cached: bool
    seconds: float


def execute(run: Run, seed: int) -> tuple[RunResult, float]:
    """Run one piece of a figure with its own generator; return its arrays and wall time."""
    start = time.perf_counter()
    result = run.fn(run_rng(seed, run.seed_key), **run.kwargs)
    return {k: np.asarray(v) for k, v in result.items()}, time.perf_counter() - start


# One BLAS thread per worker: the matrices are small and the workers already use the cores. Set in
# the parent before the pool starts (BLAS reads these when numpy loads, before any initializer).
_WORKER_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def generate(
    names: Sequence[str] | None = None,
    *,
    quick: bool = False,
    out: str | os.PathLike[str] | None = None,
    jobs: int = 1,
    force: bool = False,
    progress: bool = True,
    overrides: dict[str, dict[str, Any]] | None = None,
    draw: bool = True,
) -> list[Outcome]:
    """Compute or load, then draw, the named figures (all when ``names`` is empty).

    Parameters
    ----------
    names : sequence of str, optional
        Figure names (see :func:`loraml.figures.registry.registry`); all figures when None or empty.
    quick : bool
        Quick protocol (fewer runs and steps, same code) instead of the full one.
    out : path, optional
        Output folder; default ``figures/output/quick`` or ``figures/output/full``.
    jobs : int
        Worker processes for the runs (1: run in this process).
    force : bool
        Recompute even when the cache is valid.
    progress : bool
        Show a tqdm progress bar over runs.
    overrides : dict, optional
        ``{name: {setting: value}}`` applied on top of the protocol's settings (tests use this
        to make small instances; the cache key includes them).
    draw : bool
        Draw PNG and PDF after computing.

    Returns
    -------
    list of Outcome
    """
    specs = registry()
    names = list(names or specs)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise KeyError(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(specs)}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    base = Path(out) if out is not None else DEFAULT_OUT / ("quick" if quick else "full")
    protocol = "quick" if quick else "full"
    clean_stale_temporaries(base)  # hidden .NAME.tmp-PID files of killed runs

    outcomes: dict[str, Outcome] = {}
    pending: dict[str, dict[str, Any]] = {}  # name -> {spec, settings, key, runs, results, ...}
    for name in names:
        spec = specs[name]
        settings = {**spec.settings(quick), **(overrides or {}).get(name, {})}
        key = cache.settings_key(name, settings, spec.seed, spec.version)
        stem = base / name
        data = None if force else cache.load(stem, key)
        if data is not None:
            outcomes[name] = Outcome(name, stem, data, True, 0.0)
            continue
        runs = spec.runs(settings)
        folder = cache.partial_dir(stem, key)
        if force:  # recompute everything, finished runs of an earlier attempt included
            cache.drop_partial(folder)
        else:
            clean_stale_temporaries(folder)
        loaded = [cache.load_run(folder, i) for i in range(len(runs))]
        results: list[RunResult | None] = [None if r is None else r[0] for r in loaded]
        pending[name] = dict(
            spec=spec, settings=settings, key=key, stem=stem, runs=runs, folder=folder,
            results=results, seconds=sum(r[1] for r in loaded if r is not None),
        )  # fmt: skip

    todo = [(n, i) for n, p in pending.items() for i, r in enumerate(p["results"]) if r is None]
    todo.sort(key=lambda t: -pending[t[0]]["runs"][t[1]].cost)  # longest first (stable)
    bar = _bar(len(todo), progress)
    for name, p in pending.items():  # figures whose runs were all cached already
        if all(r is not None for r in p["results"]):
            outcomes[name] = _finish(name, p, protocol)

    def done(name: str, i: int, result: RunResult, seconds: float) -> None:
        p = pending[name]
        cache.save_run(p["folder"], i, result, seconds)
        p["results"][i] = result
        p["seconds"] += seconds
        bar.update(1)
        bar.set_postfix_str(name)
        if all(r is not None for r in p["results"]):
            outcomes[name] = _finish(name, p, protocol)

    try:
        if jobs == 1 or len(todo) <= 1:
            for name, i in todo:
                done(name, i, *execute(pending[name]["runs"][i], pending[name]["spec"].seed))
        else:
            _run_in_pool(todo, pending, jobs, done)
    finally:
        bar.close()

    ordered = [outcomes[n] for n in names]
    if draw:
        from loraml.figures import plot

        for o in ordered:
            spec = specs[o.name]
            settings = {**spec.settings(quick), **(overrides or {}).get(o.name, {})}
            plot.save(spec.draw(o.data, settings), o.stem)
    return ordered


def _run_in_pool(todo, pending, jobs, done) -> None:
    """Run ``todo`` (figure name, run index) in ``jobs`` spawned processes; ``done`` each result."""
    saved = {var: os.environ.get(var) for var in _WORKER_ENV}
    os.environ.update({var: "1" for var, val in saved.items() if val is None})
    try:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            jobs, mp_context=ctx, initializer=_die_with_parent, initargs=(os.getpid(),)
        ) as pool:
            futures: dict[Future, tuple[str, int]] = {}
            for name, i in todo:
                p = pending[name]
                futures[pool.submit(execute, p["runs"][i], p["spec"].seed)] = (name, i)
            while futures:
                finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                for fut in finished:
                    name, i = futures.pop(fut)
                    done(name, i, *fut.result())
    finally:
        for var, val in saved.items():
            if val is None:
                os.environ.pop(var, None)


def _die_with_parent(parent: int, interval: float = 0.2) -> None:
    """Pool-worker initializer: end this worker when ``parent`` is gone (e.g. after ``kill -9``).

    A daemon thread polls ``os.getppid()``: when the parent dies the worker is re-parented (to
    init or a subreaper), its parent id changes, and the worker exits at once. Without it the
    workers of a killed ``loraml figures`` would keep computing, and then wait, forever.
    """
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _finish(name: str, p: dict[str, Any], protocol: str) -> Outcome:
    spec: FigureSpec = p["spec"]
    data = spec.assemble(p["settings"], p["results"])
    meta = {
        "figure": name,
        "summary": spec.summary,
        "protocol": protocol,
        "settings": p["settings"],
        "seed": spec.seed,
        "version": spec.version,
        "loraml_version": __version__,
        "runs": len(p["runs"]),
        "compute_seconds": round(p["seconds"], 2),
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores",
    }
    if spec.numbers is not None:
        meta["numbers"] = spec.numbers(data, p["settings"])
    cache.save(p["stem"], p["key"], data, meta)
    cache.drop_partial(p["folder"])
    return Outcome(name, p["stem"], data, False, p["seconds"])


def _bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled or total == 0, unit="run", desc="figures")

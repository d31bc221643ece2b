"""The figures: name -> how to compute its data (independent seeded runs) and how to draw it.

A figure is a :class:`FigureSpec`. Its data come from independent *runs* (one
:class:`Run` each, executed in any order, in a process pool with ``--jobs``); ``assemble`` stacks
the runs' arrays into the figure's data file and ``draw`` turns that file into a matplotlib
figure. Settings come in two protocols: ``full`` (the paper's, the default of
``loraml figures``) and ``quick`` (fewer runs and steps, same code; ``make reproduce``).

Randomness: run ``i`` of a figure draws everything from
``numpy.random.default_rng(SeedSequence(seed, spawn_key=run.seed_key))``, so each run is
reproducible on its own and independent of the others and of the order they run in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RunResult = dict[str, np.ndarray]


@dataclass(frozen=True)
class Run:
    """One independent piece of a figure's computation.

    Attributes
    ----------
    fn : callable
        Module-level function ``fn(rng, **kwargs) -> dict of arrays`` (picklable).
    kwargs : dict
        Its arguments besides the generator.
    seed_key : tuple of int
        Spawn key of the run's ``SeedSequence`` under the figure's seed.
    cost : float
        Rough relative cost (1 = a linear-sweep run), so the longest runs start first.
    """

    fn: Callable[..., RunResult]
    kwargs: dict[str, Any]
    seed_key: tuple[int, ...]
    cost: float = 1.0


@dataclass(frozen=True)
class FigureSpec:
    """A figure: its protocols, how to split it into runs, assemble and draw it.

    Attributes
    ----------
    name : str
        File stem and command-line name (``loraml figures NAME``).
    summary : str
        One line for ``loraml figures --list``.
    full, quick : dict
        JSON-serialisable settings of the two protocols.
    runs : callable
        ``runs(settings) -> list[Run]``.
    assemble : callable
        ``assemble(settings, results) -> dict of arrays`` (results in the order of ``runs``).
    draw : callable
        ``draw(data, settings) -> matplotlib Figure``.
    seed : int
        Root seed.
    version : str
        Code version of the computation; part of the cache key.
    needs : tuple of str
        Optional modules the computation imports (``"torch"``).
    """

    name: str
    summary: str
    full: dict[str, Any]
    quick: dict[str, Any]
    runs: Callable[[dict[str, Any]], list[Run]]
    assemble: Callable[[dict[str, Any], list[RunResult]], RunResult]
    draw: Callable[[RunResult, dict[str, Any]], Any]
    seed: int
    version: str
    needs: tuple[str, ...] = field(default=())

    def settings(self, quick: bool) -> dict[str, Any]:
        """The settings of the quick or the full protocol."""
        return dict(self.quick if quick else self.full)


def run_rng(seed: int, key: tuple[int, ...]) -> np.random.Generator:
    """The generator of the run with spawn key ``key`` under the figure seed ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def registry() -> dict[str, FigureSpec]:
    """Every figure, in the order ``loraml figures`` makes them (paper first, then ours)."""
    from loraml.figures import linear, ours, questions, shallow

    specs = [*linear.FIGURES, *shallow.FIGURES, *ours.FIGURES, *questions.FIGURES]
    return {s.name: s for s in specs}

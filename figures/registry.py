"""The figures: name -> :class:`~loraml.figures.spec.FigureSpec`, paper figures first, then ours.

The spec types live in :mod:`loraml.figures.spec`, which the figure modules import; this module
imports the figure modules, so the arrows point one way (spec <- figure modules <- registry). The
spec names are re-exported here for code written against the old layout.
"""

from __future__ import annotations

from loraml.figures.spec import FigureSpec, Run, RunResult, run_rng

__all__ = ["FigureSpec", "Run", "RunResult", "registry", "run_rng"]


def registry() -> dict[str, FigureSpec]:
    """Every figure, in the order ``loraml figures`` makes them (paper first, then ours)."""
    from loraml.figures import linear, ours, questions, shallow

    specs = [*linear.FIGURES, *shallow.FIGURES, *ours.FIGURES, *questions.FIGURES]
    return {s.name: s for s in specs}

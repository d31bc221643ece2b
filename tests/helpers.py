"""Test helpers: Taylor tests (pymanopt-style), small instance builders, small data files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np


def taylor_slope(
    f: Callable[[float], float], df0: float, hs: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """Slope of ``log |f(h) - f(0) - h df0|`` against ``log h``: 2 for a correct derivative.

    Returns the fitted slope over the ``hs`` where the remainder is well above round-off, and the
    remainders themselves.
    """
    hs = np.logspace(-1, -4, 7) if hs is None else hs
    f0 = f(0.0)
    rem = np.array([abs(f(h) - f0 - h * df0) for h in hs])
    keep = rem > 1e-11 * max(1.0, abs(f0))
    slope = np.polyfit(np.log(hs[keep]), np.log(rem[keep]), 1)[0]
    return float(slope), rem


def write_persona_file(path: Path, personas: dict[str, int]) -> Path:
    """Write a ConvAI2-style fbdialog file: ``personas[p]`` two-turn episodes of persona ``p``
    ("i am p."), whose replies read ``"<file stem> <p> <episode> one|two"``; returns ``path``."""
    lines = []
    for persona, n in personas.items():
        for e in range(n):
            lines += [
                f"1 your persona: i am {persona}.",
                f"2 hi\t{path.stem} {persona} {e} one",
                f"3 so ?\t{path.stem} {persona} {e} two",
            ]
    path.write_text("\n".join(lines) + "\n")
    return path


def results_object(config: dict, records: list[dict], wall_seconds: float = 0.0) -> dict:
    """The smallest ``results.json`` content :func:`loraml.empirical.report.load_results` accepts:
    ``config`` and hits@1 ``records``, empty summaries (analysis recomputes from the records)."""
    return {
        "config": config,
        "records": records,
        "summary": [],
        "paired": [],
        "throughput": [],
        "versions": {},
        "wall_seconds": wall_seconds,
    }

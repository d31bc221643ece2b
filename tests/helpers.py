"""Test helpers: Taylor tests (pymanopt-style) and small instance builders."""

from __future__ import annotations

from collections.abc import Callable

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

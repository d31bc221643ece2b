"""Divergence of fixed-step gradient descent: detect it, stop, and say which step to change.

A fixed step ``lr`` is stable for a quadratic only while ``lr < 2 / L`` (``L`` the largest
curvature); the curvature of every loss here grows with the instance's scale (``L ~ ||A_t*||_2``
for the LoRA-ML adapters, ``L = lambda_max(S)`` for SR), so the paper's step sizes diverge on an
instance scaled by ``1e6``. A diverging run grows geometrically, so it is caught by the first
recorded loss that is non-finite or exceeds ``growth`` times the starting loss (a stable run of
these methods stays below its start up to small non-monotone bumps).
"""

from __future__ import annotations

import math


class DivergenceError(FloatingPointError):
    """A gradient-descent run diverged; the message names the method, the step and the fix."""


def check_descent(
    loss: float,
    initial: float,
    step: int,
    *,
    method: str,
    lr: str,
    growth: float = 1e3,
    unit: str = "step",
) -> None:
    """Raise :class:`DivergenceError` when ``loss`` is non-finite or above ``growth * initial``.

    Parameters
    ----------
    loss : float
        Loss recorded after ``step`` steps (or rounds).
    initial : float
        Loss at the start of the run.
    step : int
        Index of the step that produced ``loss``.
    method : str
        Name of the solver, for the message.
    lr : str
        The step-size arguments and their values, for the message (e.g. ``"lr=0.03"``).
    growth : float
        Allowed growth over the starting loss.
    unit : str
        What ``step`` counts (``"step"``, ``"round"``), for the message.

    Returns
    -------
    None
        Returns only when the loss is finite and has not grown past ``growth * initial``.

    Examples
    --------
    >>> check_descent(0.5, 1.0, 3, method="sr_gd", lr="lr=0.03")
    >>> try:
    ...     check_descent(float("nan"), 1.0, 3, method="sr_gd", lr="lr=0.03")
    ... except DivergenceError as err:
    ...     print(str(err)[:34])
    sr_gd diverged at step 3: the loss
    """
    if math.isfinite(loss) and loss <= growth * max(initial, 0.0):
        return
    was = "became non-finite" if not math.isfinite(loss) else f"grew to {loss:.3g}"
    raise DivergenceError(
        f"{method} diverged at {unit} {step}: the loss {was} (start {initial:.3g}); the step size "
        f"({lr}) is too large for this instance's scale: reduce it (the stable step scales like "
        "1 / ||A_t*||_2), or rescale the instance"
    )

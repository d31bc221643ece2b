"""The record every theorem check returns, its margins, and the instances the checks draw.

:class:`CheckResult` is what each ``check_*`` function of :mod:`loraml.theory.checks` returns: the
statement, how many instances were tried, whether it held on all of them (``None`` for
measurements), the worst margin, the wall time and the measured numbers. :class:`_Tally` collects a
check's per-instance margins; :func:`_measurement` builds the record of a measurement.

Margins are in **decades**: for a claim "x is zero" checked as ``x <= threshold`` the margin is
``log10(threshold / x)`` (:func:`below`); for "x is nonzero" checked as ``x >= threshold`` it is
``log10(x / threshold)`` (:func:`above`). A positive margin means the claim held; the worst margin
is the minimum over instances and sub-claims.

On a given instance a claim can also be **undecided**: each check estimates the numerical floor of
what it measures (rounding, ``u = 2.2e-16`` relative to the largest target; a solver's minimiser,
located through its loss, to about ``sqrt(u)`` of that scale) and a claim that misses its threshold
while the floor is within a decade of that threshold is recorded as undecided, not failed
(:meth:`_Tally.claim`). A statement with no claim to check on an instance is *not applicable*
(:meth:`CheckResult.verdict`).

Instances: :func:`draw_generic_family` and :func:`random_sizes` draw the generic task families the
checks run on; the private helpers below them give each instance's rounding floor and description.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from loraml.theory.family import TaskFamily, draw_family
from loraml.theory.reprs import compact_repr
from loraml.theory.rng import RNGLike, as_generator

_TINY = 1e-300
#: Unit roundoff of double precision.
_U = float(np.finfo(float).eps)
#: Relative accuracy of a minimiser located through its loss: near a minimum the loss changes by
#: ``O(|dx|^2)``, so a loss known to ``u`` relative locates the point to ``~sqrt(u)`` relative.
_SQRT_U = float(np.sqrt(_U))


@dataclass
class CheckResult:
    """Outcome of checking one statement on several instances.

    Attributes
    ----------
    key : str
        Short name (``"theorem1"``, ...), the key of ``loraml verify --json``.
    statement : str
        The statement in one line.
    instances : int
        Instances (task families) it was checked on.
    held : bool or None
        True when it held on every instance; None for measurements or when not applicable.
    worst_margin : float or None
        Worst margin in decades (see module docstring); None for measurements.
    seconds : float
        Wall time.
    claimed : bool
        The paper claims the statement (``loraml verify`` exits non-zero when a claimed statement
        fails).
    numbers : dict
        Measured values (JSON-serialisable).
    failures : list of str
        One line per failing instance (with what is needed to reproduce it).
    artifacts : dict
        Arrays worth keeping (e.g. a spurious minimum and its start), name -> dict of arrays.
    undecided : list of str
        Claims that missed their threshold on an instance whose numerical floor lies within a
        decade of that threshold (double precision cannot decide them there).
    """

    key: str
    statement: str
    instances: int
    held: bool | None
    worst_margin: float | None
    seconds: float
    claimed: bool
    numbers: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)
    artifacts: dict = field(default_factory=dict)
    undecided: list = field(default_factory=list)

    def verdict(self) -> str:
        """``"held"``, ``"FAILED"``, ``"undecided"``, ``"not applicable"`` or ``"measured"``.

        A claimed statement held when every sub-claim on every instance held, failed when one
        failed, is undecided when none failed but one could not be decided, and is not applicable
        when nothing was checked (no instance it applies to).
        """
        if not self.claimed:
            return "measured"
        if self.held is not None:
            return "held" if self.held else "FAILED"
        return "undecided" if self.undecided else "not applicable"

    def __repr__(self) -> str:
        return compact_repr(self)

    def to_json(self) -> dict:
        """The JSON object of ``loraml verify --json`` (artifacts left out)."""
        return {
            "statement": self.statement,
            "verdict": self.verdict(),
            "held": self.held,
            "instances": self.instances,
            "worst_margin": self.worst_margin,
            "seconds": self.seconds,
            "claimed": self.claimed,
            "numbers": _jsonable(self.numbers),
            "failures": list(self.failures),
            "undecided": list(self.undecided),
        }


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def below(x: float, threshold: float) -> float:
    """Margin in decades of the claim ``x <= threshold``: ``log10(threshold / x)``.

    Parameters
    ----------
    x : float
        Measured value (non-negative).
    threshold : float
        The claim's threshold (positive).

    Returns
    -------
    float
        ``log10(threshold / x)``; positive when the claim holds, ``+inf`` at ``x = 0``.

    Examples
    --------
    >>> from loraml.theory.checks import below
    >>> below(1e-14, 1e-10)  # the claim "x <= 1e-10" holds with 4 decades to spare
    4.0
    """
    return float(np.log10(threshold / max(abs(x), _TINY)))


def above(x: float, threshold: float) -> float:
    """Margin in decades of the claim ``x >= threshold``: ``log10(x / threshold)``.

    Parameters
    ----------
    x : float
        Measured value (non-negative).
    threshold : float
        The claim's threshold (positive).

    Returns
    -------
    float
        ``log10(x / threshold)``; positive when the claim holds.

    Examples
    --------
    >>> from loraml.theory.checks import above
    >>> above(1e-3, 1e-6)  # the claim "x >= 1e-6" holds with 3 decades to spare
    3.0
    """
    return float(np.log10(max(x, _TINY) / threshold))


class _Tally:
    """Collects per-instance margins and failures of one check."""

    def __init__(self) -> None:
        self.margins: list[float] = []
        self.failures: list[str] = []
        self.undecided: list[str] = []
        self.instances = 0

    def claim(self, margin: float, what: str, floor: tuple[float, float] | None = None) -> None:
        """Record a claim's margin (decades; > 0: held).

        ``floor = (x, f)``: the measured quantity and its numerical floor on this instance (what
        rounding or the solver's accuracy can produce by itself). A claim that misses its
        threshold with ``x <= 10 f`` is undecided (the floor, not the statement, may be what was
        measured), not failed.
        """
        if not margin > 0 and floor is not None and floor[0] <= 10 * floor[1]:
            self.undecided.append(
                f"{what} ({floor[0]:.1e} is within a decade of the numerical floor {floor[1]:.1e})"
            )
            return
        self.margins.append(margin)
        if not margin > 0:
            self.failures.append(f"{what} (margin {margin:.2f} decades)")

    def rank(self, s: np.ndarray, rank: int, noise: float, what: str, rtol: float | None) -> None:
        """Claims ``rank(M) = rank`` from the singular values ``s`` of ``M`` (descending).

        ``noise``: the rounding floor of ``sigma_i / sigma_1`` (entries of ``M`` computed to
        ``u`` relative to the largest target ``S``: ``||E||_2 <= d u S``, over ``sigma_1``).
        With ``rtol`` given, ``sigma_rank / sigma_1 >= rtol`` and ``sigma_{rank+1} / sigma_1 <=
        rtol``; with ``rtol=None`` (scale-free, for a user's instance) the threshold is
        ``100 * noise``, and a ``sigma_rank`` between ``noise`` and that is undecided.
        A rank beyond ``len(s)`` is impossible and not claimed; ``rank + 1 > len(s)`` has no
        upper claim.
        """
        if rank < 1 or rank > len(s) or s[0] <= 0:
            return
        thr = 100 * noise if rtol is None else rtol
        lower = s[rank - 1] / s[0]
        if rtol is None and noise < lower < thr:  # above rounding, below the margin we want
            self.undecided.append(
                f"{what} < {rank}: sigma_{rank} / sigma_1 = {lower:.1e} is within two decades "
                f"of the rounding floor {noise:.1e}"
            )
        else:
            self.claim(above(lower, thr), f"{what} < {rank}")
        if rank < len(s):
            self.claim(below(s[rank] / s[0], thr), f"{what} > {rank}")

    def result(self, key, statement, start, numbers=None, artifacts=None) -> CheckResult:
        worst = min(self.margins) if self.margins else None
        held = None if worst is None else bool(worst > 0)
        if held and self.undecided:
            held = None  # some sub-claims could not be decided: the statement is undecided
        return CheckResult(
            key,
            statement,
            self.instances,
            held,
            worst,
            time.perf_counter() - start,
            True,
            numbers or {},
            self.failures,
            artifacts or {},
            self.undecided,
        )


def _measurement(
    key: str,
    statement: str,
    instances: int,
    start: float,
    numbers: dict,
    artifacts: dict | None = None,
) -> CheckResult:
    """The result of a measurement: the paper claims nothing, so no verdict and no margin."""
    return CheckResult(
        key,
        statement,
        instances,
        held=None,
        worst_margin=None,
        seconds=time.perf_counter() - start,
        claimed=False,
        numbers=numbers,
        artifacts=artifacts or {},
    )


# ---------------------------------------------------------------------------------------------
# Instances
# ---------------------------------------------------------------------------------------------
def draw_generic_family(
    rng: RNGLike,
    d: int,
    T: int,
    k: int,
    *,
    min_ratio: float = 1e-3,
    tries: int = 20,
) -> TaskFamily:
    """A Gaussian family (one test task) whose stacked factors are well conditioned (Remark 1).

    Redraws until ``sigma_min / sigma_max`` of ``[U_1*, ..., U_{T+1}*]`` exceeds ``min_ratio``
    (Gaussian factors are generic almost surely; the margin keeps numerical ranks meaningful).
    Requires ``k (T + 1) <= d``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every draw.
    d, T, k : int
        Dimension, number of retraining tasks, perturbation rank; ``k (T + 1) <= d``.
    min_ratio : float
        Required ``sigma_min / sigma_max`` of the stacked factors.
    tries : int
        Redraws before giving up.

    Returns
    -------
    TaskFamily
        With one test task.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory.checks import draw_generic_family
    >>> fam = draw_generic_family(np.random.default_rng(0), d=8, T=3, k=2)
    >>> fam.genericity().holds, fam.genericity().sigma_min_ratio > 1e-3
    (True, True)
    """
    rng = as_generator(rng)
    if k * (T + 1) > d:
        raise ValueError(f"genericity needs k(T+1) <= d, got k={k}, T={T}, d={d}")
    for _ in range(tries):
        fam = draw_family(d, T, k, rng)
        if fam.genericity().sigma_min_ratio > min_ratio:
            return fam
    raise RuntimeError(f"no well-conditioned family in {tries} draws (d={d}, T={T}, k={k})")


def random_sizes(
    rng: RNGLike, T_range: tuple[int, int], k_range: tuple[int, int], extra: int
) -> tuple[int, int, int]:
    """Draw ``(d, T, k)`` with T, k uniform in the ranges and ``d = k(T+1) + U{0..extra}``.

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
    T_range, k_range : tuple of int
        Inclusive ranges of T and k.
    extra : int
        Largest number of dimensions added to ``k (T + 1)``.

    Returns
    -------
    d, T, k : int

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory.checks import random_sizes
    >>> d, T, k = random_sizes(np.random.default_rng(0), (3, 5), (1, 2), extra=0)
    >>> d == k * (T + 1), 3 <= T <= 5, 1 <= k <= 2
    (True, True, True)
    """
    rng = as_generator(rng)
    T = int(rng.integers(T_range[0], T_range[1] + 1))
    k = int(rng.integers(k_range[0], k_range[1] + 1))
    return k * (T + 1) + int(rng.integers(0, extra + 1)), T, k


def _families(rng, families, instances, T_range, k_range, extra) -> list[TaskFamily]:
    if families is not None:
        return list(families)
    out = []
    for _ in range(instances):
        d, T, k = random_sizes(rng, T_range, k_range, extra)
        out.append(draw_generic_family(rng, d, T, k))
    return out


def _perturbations(U: np.ndarray) -> np.ndarray:
    return U @ np.swapaxes(U, -1, -2)


def _largest_target(fam: TaskFamily) -> float:
    """``S = max_t ||A_t*||_F`` over retraining and test tasks: the scale rounding acts on."""
    targets = [fam.targets()] + ([fam.test_targets()] if fam.U_test.shape[0] else [])
    return float(max(np.linalg.norm(t, axis=(1, 2)).max() for t in targets))


def _rounding(fam: TaskFamily, ref: float) -> float:
    """Rounding floor, relative to ``ref``, of a d x d matrix computed from the targets:
    ``d u S / ref`` (each entry to ``u S``; the spectral norm of the error is at most d times
    its largest entry)."""
    return fam.d * _U * _largest_target(fam) / max(ref, _TINY)


def _desc(fam: TaskFamily, i: int) -> str:
    return f"instance {i} (d={fam.d}, T={fam.T}, k={fam.k})"

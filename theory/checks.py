"""Every statement of the paper's linear theory as a function that checks it on instances.

Each ``check_*`` function returns a :class:`CheckResult`: the statement, how many instances were
tried, whether it held on all of them (``None`` for measurements), the worst margin, the wall time
and the measured numbers. ``loraml verify`` runs them (:mod:`loraml.theory.verify_cli`); the test
suite holds the same statements as property tests.

Margins are in **decades**: for a claim "x is zero" checked as ``x <= threshold`` the margin is
``log10(threshold / x)``; for "x is nonzero" checked as ``x >= threshold`` it is
``log10(x / threshold)``. A positive margin means the claim held; the worst margin is the minimum
over instances and sub-claims. The thresholds (relative to the problem's scale) are stated in each
check's docstring.

On a given instance a claim can also be **undecided**: each check estimates the numerical floor of
what it measures (rounding, ``u = 2.2e-16`` relative to the largest target; a solver's minimiser,
located through its loss, to about ``sqrt(u)`` of that scale) and a claim that misses its threshold
while the floor is within a decade of that threshold is recorded as undecided, not failed
(:meth:`_Tally.claim`). A statement with no claim to check on an instance is *not applicable*
(:meth:`CheckResult.verdict`).

Statements (arXiv 2410.22264 v1 Thm 1-4, Cor 1): ``theorem1``, ``corollary1``, ``theorem2``,
``theorem3``, ``theorem4`` and ``rate`` are claims of the paper; ``spurious``, ``retraining``,
``convex`` and ``beyond`` are measurements (``convex.held`` only says that both relaxations were
solved to at least the objective value of ``A*``, which is feasible for both).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loraml.theory.adaptation import (
    finetune_excess_risk,
    fit_power_law,
    predicted_excess_risk,
    sr_floor,
)
from loraml.theory.family import TaskFamily, draw_family, sample_family_data
from loraml.theory.finetune import finetune_closed_form
from loraml.theory.landscape import (
    KINDS,
    classify_point,
    hessian_extreme_eigenvalues,
    hessian_operator,
    perturbed_gd,
    polish,
    random_start,
    search_stationary_points,
    t2_global_minimum,
    wilson_interval,
    zero_adapter_point,
)
from loraml.theory.metrics import adapter_errors, base_error
from loraml.theory.objectives import Quadratics, lora_ml_grad_norm, lora_ml_loss
from loraml.theory.reprs import compact_repr
from loraml.theory.retraining import solve_lora_ml, sr_closed_form
from loraml.theory.retraining_error import predicted_retraining_error, retraining_error_ratio_limit
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


# ---------------------------------------------------------------------------------------------
# 1. Theorem 1
# ---------------------------------------------------------------------------------------------
def check_theorem1(
    rng: RNGLike,
    *,
    instances: int = 20,
    families: Sequence[TaskFamily] | None = None,
    rank_rtol: float | None = 1e-8,
) -> CheckResult:
    r"""Theorem 1: population SR is ``A* + mean_t U_t* U_t*^T``, and ``rank(A_SR - A*) = kT``.

    Under genericity also ``rank(A_{T+1}* - A_SR) = k(T+1)`` (the test residual; when the family
    has a test task). Claims checked per instance: ``||A_SR - A* - mean_t P_t||_F <= 1e-10
    ||A_SR||_F``; ``sigma_{kT} >= rank_rtol sigma_1`` and ``sigma_{kT+1} <= rank_rtol sigma_1``
    for ``A_SR - A*`` and likewise with ``k(T+1)`` for the test residual. ``rank_rtol=None`` (a
    user's instance) sets the rank threshold from the rounding floor instead (scale-free; see
    :meth:`_Tally.rank`).
    Random instances: T in 1..5, k in 1..3, ``d = k(T+1) + 0..6``.

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
        Seed, or the source of every random draw.
    instances : int
        Random families drawn when ``families`` is None.
    families : sequence of TaskFamily, optional
        Check these families instead of random ones.
    rank_rtol : float
        Relative threshold of the numerical ranks.

    Returns
    -------
    CheckResult
        The statement, instances, ``held`` (``None`` for a measurement), worst margin in decades,
        seconds and the measured ``numbers``.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import checks
    >>> rec = checks.check_theorem1(np.random.default_rng(0), instances=2)
    >>> rec.key, rec.held, rec.instances, rec.worst_margin > 1
    ('theorem1', True, 2, True)
    """
    rng = as_generator(rng)
    start = time.perf_counter()
    tally = _Tally()
    for i, fam in enumerate(_families(rng, families, instances, (1, 5), (1, 3), 6)):
        tally.instances += 1
        A_sr = sr_closed_form(fam.population())
        expected = fam.A_star + _perturbations(fam.U_star).mean(0)
        err = np.linalg.norm(A_sr - expected) / max(np.linalg.norm(A_sr), _TINY)
        floor = (err, _rounding(fam, float(np.linalg.norm(A_sr))))
        tally.claim(below(err, 1e-10), f"{_desc(fam, i)}: SR formula error {err:.2e}", floor)
        pairs = [(A_sr - fam.A_star, fam.k * fam.T, "A_SR - A*")]
        if fam.U_test.shape[0] > 0:
            pairs.append((fam.test_targets()[0] - A_sr, fam.k * (fam.T + 1), "A_test* - A_SR"))
        for M, rank, name in pairs:
            s = np.linalg.svd(M, compute_uv=False)
            noise = _rounding(fam, s[0])
            tally.rank(s, rank, noise, f"{_desc(fam, i)}: rank({name})", rank_rtol)
    return tally.result(
        "theorem1", "Theorem 1: A_SR = A* + mean U_t*U_t*^T, rank(A_SR - A*) = kT", start
    )


# ---------------------------------------------------------------------------------------------
# 2. Corollary 1
# ---------------------------------------------------------------------------------------------
def check_corollary1(
    rng: RNGLike,
    *,
    instances: int = 20,
    families: Sequence[TaskFamily] | None = None,
    T_values: Sequence[int] = (1, 2, 3, 5, 8, 11),
    d_for_T: int = 24,
    k_for_T: int = 2,
    reps_for_T: int | None = None,
    zero_rtol: float | None = 1e-24,
) -> CheckResult:
    r"""Corollary 1: rank-r fine-tuning from SR leaves ``1/2 sum_{i>r} sigma_i^2(A_{T+1}* - A_SR)``.

    Claims per instance (relative to ``L0 = 1/2 ||A_{T+1}* - A_SR||_F^2``): the closed-form
    fine-tuning loss (:func:`loraml.theory.adaptation.sr_floor`) equals the Eckart-Young tail within
    ``1e-10 L0`` for every r; it is ``>= 1e-18 L0`` at ``r = k(T+1) - 1`` (hence for every
    ``r < k(T+1)``, the tail being monotone), and ``<= 1e-24 L0`` at ``r = k(T+1)`` (double
    precision leaves ~1e-30 there; near-degenerate instances have ~1e-14 at ``k(T+1) - 1``).
    ``zero_rtol=None`` (a user's instance) replaces both fixed thresholds by ``(100 n)^2`` with
    ``n`` the rounding floor of ``sigma_i / sigma_1`` of the residual (:meth:`_Tally.rank`), the
    floors being squared singular values (scale-free; large d raises the floor).

    Measurement (the value, not only the rank): the rank-k floor against T for d=``d_for_T``,
    k=``k_for_T``, divided by the loss of not adapting from the truth, ``1/2 ||U_{T+1}*
    U_{T+1}*^T||_F^2``; reported as ``numbers["floor_rank_k_by_T"]`` (mean, min, max over
    ``reps_for_T`` families; 0 skips the measurement).

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
        Seed, or the source of every random draw.
    instances : int
        Random families drawn when ``families`` is None.
    families : sequence of TaskFamily, optional
        Check these families (each with a test task) instead of random ones.
    T_values : sequence of int
        Numbers of tasks of the floor-against-T measurement.
    d_for_T, k_for_T : int
        Dimension and rank of that measurement.
    reps_for_T : int, optional
        Families per T (default: ``max(3, instances // 2)``); 0 skips the measurement.

    Returns
    -------
    CheckResult
        The statement, instances, ``held`` (``None`` for a measurement), worst margin in decades,
        seconds and the measured ``numbers``.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import checks
    >>> rec = checks.check_corollary1(np.random.default_rng(0), instances=2, reps_for_T=0)
    >>> rec.key, rec.held
    ('corollary1', True)
    """
    rng = as_generator(rng)
    start = time.perf_counter()
    tally = _Tally()
    for i, fam in enumerate(_families(rng, families, instances, (1, 5), (1, 3), 6)):
        if fam.U_test.shape[0] == 0:
            continue
        tally.instances += 1
        test = fam.test_targets()[0]
        R = test - sr_closed_form(fam.population())
        s2 = np.linalg.svd(R, compute_uv=False) ** 2
        L0 = 0.5 * float(s2.sum())
        K = fam.k * (fam.T + 1)
        r_max = min(K, len(s2))
        floors = np.array([sr_floor(fam.targets(), test, r) for r in range(r_max + 1)])
        tails = np.array([0.5 * s2[r:].sum() for r in range(r_max + 1)])
        err = float(np.max(np.abs(floors - tails))) / L0
        noise = _rounding(fam, float(np.sqrt(s2[0])))
        floor = (err, noise * s2[0] / L0)
        tally.claim(
            below(err, 1e-10), f"{_desc(fam, i)}: floor != Eckart-Young tail ({err:.1e})", floor
        )
        if K > len(s2):  # k(T+1) > d: no rank-k(T+1) residual to speak of
            continue
        if zero_rtol is None:  # floors / L0 ~ (sigma_i / sigma_1)^2 up to L0 / sigma_1^2
            tally.rank(np.sqrt(s2), K, noise, f"{_desc(fam, i)}: rank of the residual", None)
            continue
        tally.claim(above(floors[K - 1] / L0, 1e-18), f"{_desc(fam, i)}: floor 0 at r=k(T+1)-1")
        tally.claim(below(floors[K] / L0, zero_rtol), f"{_desc(fam, i)}: floor > 0 at r=k(T+1)")

    reps = reps_for_T if reps_for_T is not None else max(3, instances // 2)
    by_T = {}
    for T in T_values if reps > 0 else ():
        if k_for_T * (T + 1) > d_for_T:
            continue
        vals = []
        for _ in range(reps):
            fam = draw_generic_family(rng, d_for_T, T, k_for_T)
            P_test = _perturbations(fam.U_test)[0]
            floor_value = sr_floor(fam.targets(), fam.test_targets()[0], k_for_T)
            vals.append(floor_value / (0.5 * float(np.sum(P_test**2))))
        by_T[T] = {"mean": float(np.mean(vals)), "min": min(vals), "max": max(vals)}
    numbers = {
        "floor_rank_k_by_T": by_T,
        "floor_rank_k_by_T_setting": {"d": d_for_T, "k": k_for_T, "reps": reps},
        "floor_rank_k_by_T_unit": "SR's rank-k floor / (1/2 ||U_test U_test^T||_F^2)",
    }
    return tally.result(
        "corollary1",
        "Corollary 1: SR + rank-r fine-tuning leaves 1/2 sum_{i>r} sigma_i^2 > 0 for r < k(T+1)",
        start,
        numbers,
    )


# ---------------------------------------------------------------------------------------------
# 3. Theorem 2
# ---------------------------------------------------------------------------------------------
def _spectral_ball(rng: np.random.Generator, k: int, radius: float) -> np.ndarray:
    C = rng.standard_normal((k, k))
    return radius * C / max(float(np.linalg.norm(C, 2)), _TINY)


def check_theorem2(
    rng: RNGLike,
    *,
    instances: int = 10,
    starts: int = 5,
    families: Sequence[TaskFamily] | None = None,
    rank_rtol: float = 1e-6,
) -> CheckResult:
    r"""Theorem 2: every zero-loss LoRA-ML minimiser has ``rank(A_hat - A*) <= 2k``.

    Per instance (T in 2..3): zero-loss points found by :func:`loraml.theory.solve_lora_ml` from
    ``starts`` random starts satisfy ``sigma_{2k+1}(A_hat - A*) <= rank_rtol sigma_1(A*)``, and
    rank-3k fine-tuning from them reaches ``<= 1e-16 L0`` on the test task.
    For T = 2 the explicit continuous family (:func:`loraml.theory.landscape.t2_global_minimum`) is
    built at three random ``C`` with ``||C||_2 in {0.3, 0.6, 0.9}``: each has loss
    ``<= 1e-20 F(0, 0)`` and ``rank(A_hat - A*) = 2k`` exactly (``sigma_{2k} >= 1e-6
    sigma_1(A*)``, ``sigma_{2k+1} <= 1e-10 sigma_1(A*)``); the members are distinct
    (pairwise ``||A(C) - A(C')||_F >= 1e-3 ||A*||_F``) and the map is continuous
    (``||A(C + hE) - A(C)|| / h`` agrees at ``h = 1e-5`` and ``1e-6`` within 1 %).

    With ``2k >= d`` the rank bound holds for every matrix and is not claimed. A claim about a
    solver's minimiser that misses its threshold where the solver's floor (``sqrt(u) S``,
    relative to the claim's scale, ``S`` the largest target) lies within a decade of it is
    undecided (tasks of very different scales).

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
        Seed, or the source of every random draw.
    instances : int
        Random families drawn when ``families`` is None.
    starts : int
        Random starts of the solver per instance.
    families : sequence of TaskFamily, optional
        Check these families instead of random ones.
    rank_rtol : float
        Threshold of ``sigma_{2k+1}(A_hat - A*)`` relative to ``sigma_1(A*)``.

    Returns
    -------
    CheckResult
        The statement, instances, ``held`` (``None`` for a measurement), worst margin in decades,
        seconds and the measured ``numbers``.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import checks
    >>> rec = checks.check_theorem2(np.random.default_rng(0), instances=1, starts=2)
    >>> rec.key, rec.held
    ('theorem2', True)
    """
    rng = as_generator(rng)
    start = time.perf_counter()
    tally = _Tally()
    rank2k: dict[str, list[bool]] = {"T=2": [], "T=3": []}
    for i, fam in enumerate(_families(rng, families, instances, (2, 3), (1, 2), 4)):
        tally.instances += 1
        q, k, d = fam.population(), fam.k, fam.d
        f0 = lora_ml_loss(q, np.zeros((d, d)), np.zeros_like(fam.U_star))
        scale = max(float(np.linalg.norm(fam.A_star, 2)), _TINY)
        desc = _desc(fam, i)
        solver_floor = _SQRT_U * _largest_target(fam)  # a minimiser's accuracy (absolute)
        points = search_stationary_points(q, k, rng, starts=starts, global_value=0.0)
        if 2 * k < d and not any(p.kind == "global" for p in points):
            tally.undecided.append(
                f"{desc}: no start reached zero loss at every task's own scale ({starts} starts)"
            )
        for p in points:
            if p.kind != "global" or 2 * k >= d:
                continue
            s = np.linalg.svd(p.A - fam.A_star, compute_uv=False)
            floor = (s[2 * k] / scale, solver_floor / scale)
            tally.claim(below(s[2 * k] / scale, rank_rtol), f"{desc}: rank(A_hat - A*) > 2k", floor)
            rank2k.setdefault(f"T={min(fam.T, 3)}", []).append(
                bool(s[2 * k - 1] / scale > rank_rtol)
            )
            if fam.U_test.shape[0] and 3 * k < d:
                test = fam.test_targets()[0]
                L0 = 0.5 * float(np.sum((test - p.A) ** 2))
                ft = finetune_closed_form(Quadratics.population(test), p.A, min(3 * k, d))
                floor = (ft.loss / L0, 0.5 * d * solver_floor**2 / L0)
                tally.claim(
                    below(ft.loss / L0, 1e-16), f"{desc}: rank-3k fine-tuning not exact", floor
                )
        if fam.T != 2 or 2 * k > d:
            continue
        members = []
        for radius in (0.3, 0.6, 0.9):
            C = _spectral_ball(rng, k, radius)
            A_hat, U_hat = t2_global_minimum(fam.A_star, fam.U_star, C)
            loss = lora_ml_loss(q, A_hat, U_hat)
            floor = (loss / f0, (d * _U * _largest_target(fam)) ** 2 / f0)
            tally.claim(
                below(loss / f0, 1e-20), f"{desc}: family member has loss {loss:.1e}", floor
            )
            s = np.linalg.svd(A_hat - fam.A_star, compute_uv=False)
            tally.claim(above(s[2 * k - 1] / scale, 1e-6), f"{desc}: family rank < 2k")
            if 2 * k < d:
                floor = (s[2 * k] / scale, _rounding(fam, scale))
                tally.claim(below(s[2 * k] / scale, 1e-10), f"{desc}: family rank > 2k", floor)
            members.append(A_hat)
            E = _spectral_ball(rng, k, 1.0)
            slopes = [
                np.linalg.norm(t2_global_minimum(fam.A_star, fam.U_star, C + h * E)[0] - A_hat) / h
                for h in (1e-5, 1e-6)
            ]
            rel = abs(slopes[0] - slopes[1]) / max(slopes[0], _TINY)
            tally.claim(below(rel, 1e-2), f"{desc}: family not continuous in C")
        gaps = [
            np.linalg.norm(members[a] - members[b]) / np.linalg.norm(fam.A_star)
            for a in range(len(members))
            for b in range(a)
        ]
        tally.claim(above(min(gaps), 1e-3), f"{desc}: family members coincide")
    numbers = {
        "fraction_of_found_minima_with_rank_2k": {
            key: (float(np.mean(v)) if v else None) for key, v in rank2k.items()
        },
        "found_minima": {key: len(v) for key, v in rank2k.items()},
    }
    return tally.result(
        "theorem2",
        "Theorem 2: zero-loss minimisers have rank(A_hat - A*) <= 2k; T=2 continuous family",
        start,
        numbers,
    )


# ---------------------------------------------------------------------------------------------
# 4 and 6. Theorem 3 and the T >= 3 landscape
# ---------------------------------------------------------------------------------------------
def check_theorem3(
    rng: RNGLike,
    *,
    instances: int = 10,
    starts: int = 5,
    families: Sequence[TaskFamily] | None = None,
    tol: float = 1e-6,
) -> CheckResult:
    r"""Theorem 3: for T >= 3 and generic factors every zero-loss minimiser is the truth.

    Per instance (T in 3..5, k in 1..2, ``d = k(T+1) + 0..4``), every zero-loss point found from
    ``starts`` random starts has ``||A_hat - A*||_F <= tol ||A*||_F``,
    ``||U_hat_t U_hat_t^T - U_t* U_t*^T||_F <= tol ||U_t* U_t*^T||_F``, and rank-k fine-tuning
    from ``A_hat`` reaches ``<= 1e-12 L0`` on the test task. Starts that end elsewhere are

    counted in ``numbers`` (see :func:`check_spurious` for the landscape). A miss within a
    decade of the solver's floor (``sqrt(u) S`` relative to ``||A*||``, to ``||U_t* U_t*^T||`` per
    task; ``S`` the largest target) is undecided: with tasks of very different scales double
    precision cannot resolve the small ones. Likewise a point the search calls global (loss
    small against ``F(0, 0)``, which the largest task dominates) is only judged when it fits every
    task to ``tol`` relative to that task's own perturbation,
    ``||A_hat + U_t U_t^T - A_t*||_F <= tol ||U_t* U_t*^T||_F``; otherwise zero loss is not
    established at the smaller tasks' scale and the point leaves the claim undecided.
    counted in ``numbers`` (see :func:`check_spurious` for the landscape).

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
        Seed, or the source of every random draw.
    instances : int
        Random families drawn when ``families`` is None.
    starts : int
        Random starts of the solver per instance.
    families : sequence of TaskFamily, optional
        Check these families (T >= 3, generic, with a test task) instead of random ones.
    tol : float
        Relative distance to ``A*`` (and of the adapters) that counts as recovered.

    Returns
    -------
    CheckResult
        The statement, instances, ``held`` (``None`` for a measurement), worst margin in decades,
        seconds and the measured ``numbers``.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import checks
    >>> rec = checks.check_theorem3(np.random.default_rng(0), instances=1, starts=2)
    >>> rec.key, rec.held
    ('theorem3', True)
    """
    rng = as_generator(rng)
    start = time.perf_counter()
    tally = _Tally()
    kinds: dict[str, int] = {}
    for i, fam in enumerate(_families(rng, families, instances, (3, 5), (1, 2), 4)):
        tally.instances += 1
        q, k = fam.population(), fam.k
        desc = _desc(fam, i)
        P_norm = np.linalg.norm(_perturbations(fam.U_star), axis=(1, 2))
        solver_floor = _SQRT_U * _largest_target(fam)  # a minimiser's accuracy (absolute)
        A_norm = max(float(np.linalg.norm(fam.A_star)), _TINY)
        points = search_stationary_points(q, k, rng, starts=starts, global_value=0.0)
        if not any(p.kind == "global" for p in points):
            tally.undecided.append(
                f"{desc}: no start reached zero loss at every task's own scale ({starts} starts)"
            )
        for p in points:
            kinds[p.kind] = kinds.get(p.kind, 0) + 1
            if p.kind != "global":
                continue
            fit = np.linalg.norm(p.A + _perturbations(p.U) - fam.targets(), axis=(1, 2))
            worst = float(np.max(fit / np.maximum(P_norm, _TINY)))
            if worst > tol:
                tally.undecided.append(
                    f"{desc}: a point of loss {p.loss:.1e} leaves a residual of {worst:.1e} "
                    "x ||U_t* U_t*^T|| on one task: zero loss not reached at that task's scale"
                )
                continue
            err = base_error(p.A, fam.A_star).relative
            floor = (err, solver_floor / A_norm)
            tally.claim(below(err, tol), f"{desc}: A_hat != A*", floor)
            ads = adapter_errors(p.U, fam.U_star) / np.maximum(P_norm, _TINY)
            for t, ad in enumerate(ads):
                floor = (float(ad), solver_floor / max(P_norm[t], _TINY))
                tally.claim(below(float(ad), tol), f"{desc}: U_hat U_hat^T != U* U*^T", floor)
            if fam.U_test.shape[0] and k < fam.d:
                test = fam.test_targets()[0]
                L0 = 0.5 * float(np.sum((test - p.A) ** 2))
                ft = finetune_closed_form(Quadratics.population(test), p.A, k)
                floor = (ft.loss / L0, 0.5 * fam.d * solver_floor**2 / L0)
                tally.claim(
                    below(ft.loss / L0, 1e-12), f"{desc}: rank-k fine-tuning not exact", floor
                )
    return tally.result(
        "theorem3",
        "Theorem 3: T>=3, generic: zero-loss minimisers have A_hat = A*, U_hat U_hat^T = U* U*^T",
        start,
        {"end_points": kinds, "starts_per_instance": starts},
    )


def _local_minimum_evidence(q: Quadratics, k: int, p, rng: np.random.Generator) -> dict:
    """Is a spurious point a local minimum? Hessian beyond the symmetry, and perturb + re-solve.

    ``U_t -> U_t Q_t`` gives ``T k(k-1)/2`` zero Hessian eigenvalues at a stationary point (see
    :mod:`loraml.theory.landscape`); the next one, relative to
    ``lambda_max``, is ``eigenvalue_after_symmetry`` (> 0: strict local minimum modulo the
    symmetry). Three re-solves from ``U + 1e-3 ||U|| xi`` return ``resolve_min_over_loss``
    (1.0: every one came back to the same value, none went lower).
    """
    n_sym = q.T * k * (k - 1) // 2
    op = hessian_operator(q, p.A, p.U)
    H = op.matmat(np.eye(op.shape[0]))
    w = np.linalg.eigvalsh(0.5 * (H + H.T))
    scale = 1e-3 * np.linalg.norm(p.U)
    again = [
        solve_lora_ml(q, k, init=(p.A, p.U + scale * rng.standard_normal(p.U.shape))).objective
        for _ in range(3)
    ]
    return {
        "eigenvalue_after_symmetry": float(w[n_sym] / w[-1]),
        "resolve_min_over_loss": float(min(again) / p.loss),
    }


def check_spurious(
    rng: RNGLike,
    *,
    instances: int = 10,
    starts: int = 10,
    families: Sequence[TaskFamily] | None = None,
    gd_starts: int = 2,
    spreads: Sequence[float] = (0.0, 1.0),
) -> CheckResult:
    r"""Measurement: how often local search on the T >= 3 landscape ends at a spurious minimum.

    Per instance (T in 3..4, k in 1..2, ``d = k(T+1)``, tight): ``starts`` L-BFGS runs
    (:func:`loraml.theory.landscape.search_stationary_points`) and ``gd_starts`` plain
    gradient-descent runs (:func:`loraml.theory.landscape.perturbed_gd` without kicks, 5000 steps; a
    run still
    moving is finished by L-BFGS, :func:`loraml.theory.landscape.polish`, and counted as
    ``polished``), each
    end point classified by per-task relative residuals, per-task relative gradients and the
    Hessian (:func:`loraml.theory.landscape.classify_point`: global, runaway, unconverged,
    saddle, spurious local minimum). ``numbers["classes"]`` pools the counts per class and
    solver over the instances with a 95 % Wilson interval
    (:func:`loraml.theory.landscape.wilson_interval`); ``numbers["runaway_examples"]`` lists
    runs whose base grew past 10 times the largest task (their error and per-task residuals).
    Instances alternate
    between the task-scale spreads in ``spreads``: ``U_t*`` is multiplied by
    ``exp(spread * N(0, 1))`` (0 is the paper's setting, equal scales in distribution).
    Spurious minima are kept in ``artifacts`` (family, start and end point) so they can be
    reproduced, and summarised in ``numbers["spurious_examples"]`` (loss relative to ``F(0, 0)``,
    ``||A_hat - A*|| / ||A*||``, ``lambda_min / lambda_max``, and the evidence that it is a local
    minimum: the first Hessian eigenvalue beyond the rotation symmetry and the value that three
    re-solves from small perturbations return, see :func:`_local_minimum_evidence`).

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
        Seed, or the source of every random draw.
    instances : int
        Random families drawn when ``families`` is None.
    starts : int
        L-BFGS runs from random starts per instance.
    families : sequence of TaskFamily, optional
        Measure these families instead of random ones.
    gd_starts : int
        Plain gradient-descent runs per instance.
    spreads : sequence of float
        Task-scale spreads the instances alternate between.

    Returns
    -------
    CheckResult
        The statement, instances, ``held`` (``None`` for a measurement), worst margin in decades,
        seconds and the measured ``numbers``.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import checks
    >>> rec = checks.check_spurious(np.random.default_rng(0), instances=1, starts=2, gd_starts=0)
    >>> rec.key, rec.held  # a measurement: held is None
    ('spurious', None)
    >>> rec.instances
    1
    """
    rng = as_generator(rng)
    start = time.perf_counter()
    counts: dict[str, dict[str, dict[str, int]]] = {}
    artifacts: dict = {}
    examples: list[dict] = []
    runaways: list[dict] = []
    if families is not None:
        plan = [(fam, "given") for fam in families]
    else:
        plan = []
        for i in range(instances):
            spread = float(spreads[i % len(spreads)])
            d, T, k = random_sizes(rng, (3, 4), (1, 2), 0)
            fam = draw_generic_family(rng, d, T, k)
            factor = np.exp(spread * rng.standard_normal(T))[:, None, None]
            scaled = TaskFamily(fam.A_star, fam.U_star * factor, fam.U_test)
            plan.append((scaled, f"spread={spread}"))
    for i, (fam, label) in enumerate(plan):
        q, k = fam.population(), fam.k
        f0 = 0.5 * float(np.sum(q.c))
        tally = counts.setdefault(label, {"lbfgs": {}, "gd": {}})
        points = search_stationary_points(q, k, rng, starts=starts, global_value=0.0)
        for p in points:
            tally["lbfgs"][p.kind] = tally["lbfgs"].get(p.kind, 0) + 1
        for _ in range(gd_starts):
            init = random_start(q, k, rng)
            res = perturbed_gd(q, k, rng, init=init, kick_ratio=0.0, max_steps=5000)
            p = classify_point(q, res.A, res.U, 0.0, start=init)
            if p.kind == "unconverged":  # slow: classify where L-BFGS takes it from there
                A_p, U_p, _ = polish(q, k, res.A, res.U)
                p = classify_point(q, A_p, U_p, 0.0, start=init)
                tally["gd"]["polished"] = tally["gd"].get("polished", 0) + 1
            points.append(p)
            tally["gd"][p.kind] = tally["gd"].get(p.kind, 0) + 1
        for j, p in enumerate(points):
            if p.kind == "runaway":
                runaways.append(
                    {
                        "instance": i,
                        "d": fam.d,
                        "T": fam.T,
                        "k": k,
                        "setting": label,
                        "A_relative_error": base_error(p.A, fam.A_star).relative,
                        "task_residuals": [float(r) for r in p.task_residuals],
                    }
                )
            if p.kind not in ("spurious", "runaway"):
                continue
            artifacts[f"{p.kind}_{i}_{j}"] = {
                "A_star": fam.A_star,
                "U_star": fam.U_star,
                "A0": p.start[0],
                "U0": p.start[1],
                "A_hat": p.A,
                "U_hat": p.U,
            }
            if p.kind == "runaway":
                continue
            examples.append(
                {
                    **_local_minimum_evidence(q, k, p, rng),
                    "instance": i,
                    "d": fam.d,
                    "T": fam.T,
                    "k": k,
                    "setting": label,
                    "loss_over_F00": p.loss / f0,
                    "A_relative_error": base_error(p.A, fam.A_star).relative,
                    "min_over_max_eigenvalue": p.min_eigenvalue / p.max_eigenvalue,
                }
            )
    classes: dict[str, dict[str, dict]] = {}
    for solver in ("lbfgs", "gd"):
        total = sum(row[solver].get(kind, 0) for row in counts.values() for kind in KINDS)
        classes[solver] = {}
        for kind in KINDS:
            n = sum(row[solver].get(kind, 0) for row in counts.values())
            lo, hi = wilson_interval(n, total)
            classes[solver][kind] = {"count": n, "runs": total, "wilson95": [lo, hi]}
    numbers = {
        "end_points": counts,
        "classes": classes,
        "runaway_examples": runaways[:20],
        "spurious_found": len(examples),
        "instances_with_spurious": len({e["instance"] for e in examples}),
        "spurious_examples": examples[:20],
    }
    return _measurement(
        "spurious",
        "T>=3 landscape: how often local search meets a spurious local minimum (measurement)",
        len(plan),
        start,
        numbers,
        artifacts,
    )


# ---------------------------------------------------------------------------------------------
# 5. Theorem 4
# ---------------------------------------------------------------------------------------------
def check_theorem4(
    rng: RNGLike,
    *,
    instances: int = 5,
    starts: int = 5,
    families: Sequence[TaskFamily] | None = None,
) -> CheckResult:
    r"""Theorem 4 (T = 2): strict saddles only; perturbed gradient descent reaches zero loss.

    Per instance (T = 2, k in 1..3, ``d = 3k + 0..4``):

    - the zero-adapter point ``U = 0, A = mean A_t*`` is stationary
      (``||grad F|| <= 1e-12 sqrt(F(0, 0))``) and its smallest Hessian eigenvalue (Lanczos on
      Hessian-vector products) is ``< -1e-6 lambda_max`` and equals the closed form
      ``-max(lambda_max(P_1 - P_2), lambda_max(P_2 - P_1))`` within ``1e-6`` relative;
    - every end point of ``starts`` L-BFGS runs from random starts is global
      (``F <= 1e-10 F(0, 0)``) or has negative curvature (``lambda_min < -1e-6 lambda_max``);
      none is a spurious local minimum (unconverged runs are counted, not judged);
    - perturbed gradient descent (run to ``1e-16 F(0, 0)``, at most 20000 steps) from ``starts``
      random starts and from the saddle itself reaches ``F <= 1e-12 F(0, 0)``; near degenerate
      T = 2 minima it converges sublinearly, so a run that stops above that must show no
      substantial negative curvature where it stopped (``lambda_min >= -1e-3 lambda_max``; the
      saddles met have ratios near -1) and be finished by L-BFGS
      (:func:`loraml.theory.landscape.polish`) to ``F <= 1e-12 F(0, 0)``: it ended in the basin of a
      global minimum (counted as
      ``pgd_slow_runs_polished``; the relative distance L-BFGS moved, which can be large along the
      flat family of T = 2 minima, is reported).

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
        Seed, or the source of every random draw.
    instances : int
        Random families drawn when ``families`` is None.
    starts : int
        L-BFGS and perturbed-gradient-descent runs from random starts per instance.
    families : sequence of TaskFamily, optional
        Check these two-task families instead of random ones.

    Returns
    -------
    CheckResult
        The statement, instances, ``held`` (``None`` for a measurement), worst margin in decades,
        seconds and the measured ``numbers``.

    Examples
    --------
    >>> import numpy as np
    >>> import loraml.theory as th
    >>> from loraml.theory import checks
    >>> rng = np.random.default_rng(0)
    >>> rec = checks.check_theorem4(rng, starts=1, families=[th.draw_family(3, 2, 1, rng)])
    >>> rec.key, rec.held
    ('theorem4', True)
    """
    rng = as_generator(rng)
    start = time.perf_counter()
    tally = _Tally()
    steps, kicks, unconverged, slow, distances = [], [], 0, 0, []
    for i, fam in enumerate(_families(rng, families, instances, (2, 2), (1, 3), 4)):
        tally.instances += 1
        q, k, d = fam.population(), fam.k, fam.d
        desc = _desc(fam, i)
        f0 = lora_ml_loss(q, np.zeros((d, d)), np.zeros_like(fam.U_star))
        A0, U0 = zero_adapter_point(q, k)
        gn = lora_ml_grad_norm(q, A0, U0)
        tally.claim(below(gn / np.sqrt(f0), 1e-12), f"{desc}: zero-adapter point not stationary")
        curv = hessian_extreme_eigenvalues(q, A0, U0, method="eigsh")
        P = _perturbations(fam.U_star)
        diff = np.linalg.eigvalsh(P[0] - P[1])
        expected = -max(diff[-1], -diff[0])
        tally.claim(
            above(-curv.min_eigenvalue / curv.max_eigenvalue, 1e-6), f"{desc}: saddle not strict"
        )
        rel = abs(curv.min_eigenvalue - expected) / abs(expected)
        tally.claim(below(rel, 1e-6), f"{desc}: saddle curvature != closed form ({rel:.1e})")
        for p in search_stationary_points(q, k, rng, starts=starts, global_value=0.0):
            unconverged += p.kind == "unconverged"
            if p.kind == "global":
                tally.claim(below(p.loss / f0, 1e-10), f"{desc}: global point, loss {p.loss:.1e}")
            elif p.kind == "saddle":
                tally.claim(above(-p.min_eigenvalue / p.max_eigenvalue, 1e-6), f"{desc}: saddle")
            elif p.kind == "spurious":
                tally.claim(-np.inf, f"{desc}: spurious local minimum, loss {p.loss:.2e}")
        inits = [random_start(q, k, rng) for _ in range(starts)] + [(A0, U0)]
        for init in inits:
            res = perturbed_gd(q, k, rng, init=init, target_loss=1e-16 * f0)
            if res.loss <= 1e-12 * f0:
                tally.claim(below(res.loss / f0, 1e-12), f"{desc}: PGD loss {res.loss:.1e}")
            else:  # slow (sublinear) convergence near a degenerate minimum: where was it going?
                slow += 1
                A_p, U_p, dist = polish(q, k, res.A, res.U)
                loss_p = lora_ml_loss(q, A_p, U_p)
                tally.claim(below(loss_p / f0, 1e-12), f"{desc}: polished to {loss_p:.1e}")
                end = hessian_extreme_eigenvalues(q, res.A, res.U)
                bend = max(-end.min_eigenvalue / end.max_eigenvalue, 0.0)
                tally.claim(below(bend, 1e-3), f"{desc}: PGD stopped near a saddle ({bend:.1e})")
                distances.append(dist)
            steps.append(res.steps)
            kicks.append(res.perturbations)
    numbers = {
        "pgd_steps_median": float(np.median(steps)) if steps else None,
        "pgd_steps_max": int(max(steps)) if steps else None,
        "pgd_kicks_max": int(max(kicks)) if kicks else None,
        "lbfgs_unconverged": unconverged,
        "pgd_slow_runs_polished": slow,
        "pgd_slow_runs_max_distance_to_polished": max(distances) if distances else None,
    }
    return tally.result(
        "theorem4",
        "Theorem 4: T=2 strict saddles (U=0 saddle has negative curvature); PGD reaches zero loss",
        start,
        numbers,
    )


# ---------------------------------------------------------------------------------------------
# 7. Adaptation rate
# ---------------------------------------------------------------------------------------------
def check_rate(
    rng: RNGLike,
    *,
    instances: int = 3,
    d: int = 10,
    T: int = 3,
    k: int = 1,
    noise_std: float | None = 0.1,
    ns: Sequence[int] | None = (100, 200, 400, 800, 1600),
    reps: int = 40,
    families: Sequence[TaskFamily] | None = None,
) -> CheckResult:
    r"""Adaptation rate (v2): rank-k fine-tuning from LoRA-ML has excess risk O(kd/n).

    The statement presumes that retraining recovered ``A*`` (Theorem 3: T >= 3, generic); with
    T <= 2 the LoRA-ML base carries a bias and the risk does not vanish.

    Per instance: LoRA-ML population retraining (:func:`loraml.theory.solve_lora_ml`), then rank-k
    finite-sample fine-tuning on n fresh samples of the test task, averaged over ``reps``
    draws, for each n in ``ns``. Claim: the fitted exponent of ``risk ~ c n^slope`` is in
    ``[-1.25, -0.75]`` (margin: ``log10(0.25 / |slope + 1|)``). Measured: the ratio of the
    constant (exponent fixed at -1) to the derived ``1/2 s^2 k(2d-k)``; the risk against the
    first-order finite-n prediction ``1/2 s^2 k [d/(n-d-1) + (d-k)/(n-k-1)]``
    (:func:`loraml.theory.adaptation.predicted_excess_risk` with ``finite_n=True``, which explains
    why the fitted slope is a little below -1 and the constant a little above the asymptotic one:
    the same fit applied to the prediction gives ``predicted_slope`` and
    ``predicted_ratio_to_asymptotic_constant``); SR's rank-k risk at the
    largest n against its floor (Corollary 1); SR's rank-k(T+1) risk against LoRA-ML's rank-k
    risk and against the predicted variance ratio ``K(2d-K) / (k(2d-k))``, ``K = k(T+1)``.

    For a user's instance (scale-free): ``ns=None`` takes ``n = p (2, 4, 8, 16, 32)`` with
    ``p = k(2d - k)`` the adapter's parameter count (the rate is asymptotic in ``n >> p``), and
    ``noise_std=None`` takes ``0.1 ||A_test*||_F / sqrt(d)`` (a tenth of the signal per output).
    When LoRA-ML's base is off ``A*`` by more than a tenth of the predicted risk at the largest n
    (``1/2 ||A_hat - A*||_F^2 > 0.1 * 1/2 s^2 k(2d-k)/n``), the bias hides the rate and a slope
    outside the band is undecided, not failed.

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
        Seed, or the source of every random draw.
    instances : int
        Random families drawn when ``families`` is None.
    d, T, k : int
        Sizes of the random families.
    noise_std : float
        Noise standard deviation ``s`` of the fine-tuning samples.
    ns : sequence of int
        Fine-tuning sample sizes.
    reps : int
        Repetitions (fresh samples) per n.
    families : sequence of TaskFamily, optional
        Measure these families (each with a test task) instead of random ones.

    Returns
    -------
    CheckResult
        The statement, instances, ``held`` (``None`` for a measurement), worst margin in decades,
        seconds and the measured ``numbers``.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import checks
    >>> rec = checks.check_rate(np.random.default_rng(0), instances=1, ns=(100, 400), reps=5)
    >>> rec.key, rec.held
    ('rate', True)
    """
    rng = as_generator(rng)
    start = time.perf_counter()
    tally = _Tally()
    ratios, slopes, sr_floor_ratio, sr_var_ratio, sr_var_pred = [], [], [], [], []
    finite_ratio, pred_slope, pred_ratio = [], [], []
    if families is None:
        families = [draw_generic_family(rng, d, T, k) for _ in range(instances)]
    for i, fam in enumerate(families):
        if fam.U_test.shape[0] == 0:
            continue
        tally.instances += 1
        dd, kk, TT = fam.d, fam.k, fam.T
        test = fam.test_targets()[0]
        s_noise = 0.1 * np.linalg.norm(test) / np.sqrt(dd) if noise_std is None else noise_std
        n_list = np.asarray(
            [kk * (2 * dd - kk) * m for m in (2, 4, 8, 16, 32)] if ns is None else ns
        )
        A_ml = solve_lora_ml(fam.population(), kk).A
        risks = np.array(
            [
                finetune_excess_risk(A_ml, test, kk, int(n), s_noise, rng, reps=reps).mean()
                for n in n_list
            ]
        )
        fit = fit_power_law(n_list, risks)
        slopes.append(fit.slope)
        asymptotic = 0.5 * s_noise**2 * kk * (2 * dd - kk)
        ratios.append(fit.constant_at_minus_one / asymptotic)
        if n_list.min() > dd + 1:
            pred = np.array(
                [predicted_excess_risk(dd, kk, int(n), s_noise, finite_n=True) for n in n_list]
            )
            finite_ratio.append((risks / pred).tolist())
            pred_fit = fit_power_law(n_list, pred)
            pred_slope.append(pred_fit.slope)
            pred_ratio.append(pred_fit.constant_at_minus_one / asymptotic)
        margin = below(abs(fit.slope + 1), 0.25)
        bias = 0.5 * float(np.sum((A_ml - fam.A_star) ** 2))
        predicted = predicted_excess_risk(dd, kk, int(n_list[-1]), s_noise)
        if not margin > 0 and bias > 0.1 * predicted:
            tally.undecided.append(
                f"{_desc(fam, i)}: slope {fit.slope:.2f}, but LoRA-ML's base is off A* by "
                f"{bias:.1e} (half squared error) against a predicted risk of {predicted:.1e}"
            )
        else:
            tally.claim(margin, f"{_desc(fam, i)}: slope {fit.slope:.2f}")
        A_sr = sr_closed_form(fam.population())
        n_max = int(n_list[-1])
        floor = sr_floor(fam.targets(), test, kk)
        sr_k = finetune_excess_risk(A_sr, test, kk, n_max, s_noise, rng, reps=reps).mean()
        sr_floor_ratio.append(sr_k / floor)
        K = min(kk * (TT + 1), dd)
        sr_K = finetune_excess_risk(A_sr, test, K, n_max, s_noise, rng, reps=reps).mean()
        sr_var_ratio.append(sr_K / risks[-1])
        sr_var_pred.append(
            predicted_excess_risk(dd, K, n_max, 1.0) / predicted_excess_risk(dd, kk, n_max, 1.0)
        )
    numbers = {
        "slope": slopes,
        "ratio_to_predicted_constant": ratios,
        "ratio_to_finite_n_prediction_by_n": finite_ratio,
        "predicted_slope": pred_slope,
        "predicted_ratio_to_asymptotic_constant": pred_ratio,
        "setting": {"ns": ns, "reps": reps, "noise_std": noise_std},  # None: per instance
        "sr_rank_k_risk_over_floor_at_max_n": sr_floor_ratio,
        "sr_rank_kT1_risk_over_lora_ml_rank_k_risk_at_max_n": sr_var_ratio,
        "predicted_variance_ratio_kT1_over_k": sr_var_pred,
    }
    return tally.result(
        "rate",
        "Adaptation rate: rank-k fine-tuning from LoRA-ML has excess risk ~ 1/n (v2: O(kd/n))",
        start,
        numbers,
    )


# ---------------------------------------------------------------------------------------------
# 8. Finite-sample retraining
# ---------------------------------------------------------------------------------------------
def check_retraining(
    rng: RNGLike,
    *,
    reps: int = 5,
    d: int = 8,
    k: int = 1,
    noise_std: float = 0.1,
    Ns: Sequence[int] = (100, 400, 1600),
    Ts: Sequence[int] = (3, 5),
) -> CheckResult:
    r"""Measurement: finite-sample LoRA-ML's ``||A_hat - A*||_F^2`` against N and T.

    For each T in ``Ts`` and N in ``Ns``, ``reps`` families with N noisy samples per task; mean
    squared error of LoRA-ML's base, its fitted exponent in N, and its ratio to the pooled
    least-squares order ``s^2 d^2 / (N T)``, and its ratio to the first-order prediction
    ``(s^2 / N) tr((T I - sum_t Pi_t)^{-1})`` of the same family
    (:func:`loraml.theory.retraining_error.predicted_retraining_error`; derivation there). The
    prediction is above the pooled order and its ratio to it tends to
    :func:`loraml.theory.retraining_error.retraining_error_ratio_limit` (1.16 for d = 8, k = 1)
    as T grows, not to 1. SR's base error is reported for contrast (biased: it does not shrink
    with N).

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
        Seed, or the source of every random draw.
    reps : int
        Families per (T, N).
    d, k : int
        Dimension and perturbation rank.
    noise_std : float
        Noise standard deviation of the retraining samples.
    Ns : sequence of int
        Samples per task.
    Ts : sequence of int
        Numbers of retraining tasks.

    Returns
    -------
    CheckResult
        The statement, instances, ``held`` (``None`` for a measurement), worst margin in decades,
        seconds and the measured ``numbers``.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import checks
    >>> rec = checks.check_retraining(np.random.default_rng(0), reps=1, Ns=(100, 400), Ts=(3,))
    >>> rec.key, rec.held  # a measurement
    ('retraining', None)
    """
    rng = as_generator(rng)
    start = time.perf_counter()
    table = {}
    for T in Ts:
        errs, sr_errs, preds = [], [], []
        for N in Ns:
            e, e_sr, pr = [], [], []
            for _ in range(reps):
                fam = draw_generic_family(rng, max(d, k * (T + 1)), T, k)
                X, Y = sample_family_data(fam.targets(), N, noise_std, rng)
                q = Quadratics.from_data(X, Y)
                e.append(base_error(solve_lora_ml(q, k).A, fam.A_star).fro ** 2)
                e_sr.append(base_error(sr_closed_form(q), fam.A_star).fro ** 2)
                pr.append(predicted_retraining_error(fam.U_star, noise_std, N))
            errs.append(float(np.mean(e)))
            preds.append(float(np.mean(pr)))
            sr_errs.append(float(np.mean(e_sr)))
        dd = max(d, k * (T + 1))
        order = [noise_std**2 * dd**2 / (N * T) for N in Ns]
        table[f"T={T}"] = {
            "N": list(Ns),
            "lora_ml_sq_error": errs,
            "ratio_to_s2d2_over_NT": [e / o for e, o in zip(errs, order, strict=True)],
            "predicted_sq_error": preds,
            "ratio_to_prediction": [e / p for e, p in zip(errs, preds, strict=True)],
            "predicted_ratio_to_s2d2_over_NT": [p / o for p, o in zip(preds, order, strict=True)],
            "slope_in_N": fit_power_law(Ns, errs).slope,
            "sr_sq_error": sr_errs,
        }
    return _measurement(
        "retraining",
        "Finite-sample LoRA-ML: ||A_hat - A*||^2 against N and T (measurement)",
        len(Ts) * len(Ns) * reps,
        start,
        {
            "d": d,
            "k": k,
            "noise_std": noise_std,
            "reps": reps,
            "by_T": table,
            "predicted_ratio_limit_T_to_infinity": retraining_error_ratio_limit(d, k),
        },
    )


# ---------------------------------------------------------------------------------------------
# 9. Convex relaxations
# ---------------------------------------------------------------------------------------------
def check_convex(
    rng: RNGLike,
    *,
    reps: int = 3,
    grid: Sequence[tuple[int, int, int]] | None = None,
    families: Sequence[TaskFamily] | None = None,
    recover_tol: float = 1e-4,
) -> CheckResult:
    r"""Measurement: where the convex relaxations recover ``A*``, against LoRA-ML.

    For each ``(d, T, k)`` in ``grid`` (default: d = 10 with T in {2, 3, 4, 6, 9}, k in {1, 2, 3},
    and d = 20 with T in {3, 4, 6}, k in {1, 2, 4}, wherever ``k(T+1) <= d``) ``reps`` population
    families; a method "recovers" when
    ``||A_hat - A*||_F <= recover_tol ||A*||_F``. Reported per grid cell: recovery counts of
    the nuclear-norm median, the SDP and LoRA-ML, and the median relative errors.

    ``held`` says only that both relaxations were solved correctly as optimisation problems:
    ``A*`` is feasible for both, so the nuclear objective must be ``<= sum_t ||P_t||_*`` and the
    SDP's trace ``>= tr(A*)`` (each within ``1e-6`` relative). It is not a claim of the paper.

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
        Seed, or the source of every random draw.
    reps : int
        Population families per grid cell.
    grid : sequence of (d, T, k), optional
        Cells to measure (default: see above).
    families : sequence of TaskFamily, optional
        Measure these families instead of a grid.
    recover_tol : float
        Relative distance to ``A*`` that counts as recovered.

    Returns
    -------
    CheckResult
        The statement, instances, ``held`` (``None`` for a measurement), worst margin in decades,
        seconds and the measured ``numbers``.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import checks
    >>> rec = checks.check_convex(np.random.default_rng(0), reps=1, grid=[(4, 3, 1)])
    >>> rec.key, rec.held  # both relaxations were solved correctly
    ('convex', True)
    """
    rng = as_generator(rng)
    from loraml.theory.convex import nuclear_relaxation, sdp_relaxation

    start = time.perf_counter()
    tally = _Tally()
    if families is not None:
        cells = {"instance": list(families)}
    else:
        if grid is None:
            grid = [(10, T, k) for T in (2, 3, 4, 6, 9) for k in (1, 2, 3) if k * (T + 1) <= 10]
            grid += [(20, T, k) for T in (3, 4, 6) for k in (1, 2, 4) if k * (T + 1) <= 20]
        cells = {
            f"d={d},T={T},k={k}": [draw_generic_family(rng, d, T, k) for _ in range(reps)]
            for d, T, k in grid
        }
    table = {}
    for name, fams in cells.items():
        rec = {"nuclear": 0, "sdp": 0, "lora_ml": 0}
        errs: dict[str, list[float]] = {"nuclear": [], "sdp": [], "lora_ml": []}
        for fam in fams:
            tally.instances += 1
            q = fam.population()
            P = fam.perturbations()
            nuc = nuclear_relaxation(q)
            sdp = sdp_relaxation(q)
            ml = solve_lora_ml(q, fam.k)
            for key, A in (("nuclear", nuc.A), ("sdp", sdp.A), ("lora_ml", ml.A)):
                e = base_error(A, fam.A_star).relative if np.all(np.isfinite(A)) else np.inf
                errs[key].append(e)
                rec[key] += bool(e <= recover_tol)
            nuc_star = float(sum(np.linalg.norm(p, "nuc") for p in P))
            tally.claim(
                below(max(nuc.objective - nuc_star, 0.0) / nuc_star, 1e-6),
                f"{name}: nuclear objective above A*'s",
            )
            tr_star = float(np.trace(fam.A_star))
            gap = max(tr_star - np.trace(sdp.A), 0.0) / max(np.linalg.norm(fam.A_star), _TINY)
            tally.claim(below(gap, 1e-6), f"{name}: SDP trace below tr(A*)")
        table[name] = {
            "instances": len(fams),
            "recovered": rec,
            "median_relative_error": {key: float(np.median(v)) for key, v in errs.items()},
        }
    res = tally.result(
        "convex",
        "Convex relaxations (nuclear-norm median, SDP) vs LoRA-ML: recovery of A* (measurement)",
        start,
        {"recover_tol": recover_tol, "by_setting": table},
    )
    res.claimed = False
    return res


# ---------------------------------------------------------------------------------------------
# 10. Beyond the assumptions
# ---------------------------------------------------------------------------------------------
def check_beyond(rng: RNGLike, *, reps: int = 3) -> CheckResult:
    r"""Measurement: LoRA-ML outside the theory's assumptions.

    Three settings, ``reps`` families each, population losses:

    - ``crowded``: ``k(T+1) > d`` (d = 6 with T = 4, k = 2 and T = 5, k = 3: genericity is
      impossible);
    - ``general``: perturbations ``U_t* V_t*^T`` (not PSD; d = 12, T = 3, k = 1), retrained with
      symmetric and with asymmetric adapters;
    - ``asymmetric_on_psd``: PSD perturbations retrained with asymmetric adapters
      (d = 10, T = 3, k = 1).

    Reported: median relative error of ``A_hat``, the fraction of families where
    ``||A_hat - A*|| <= 1e-6 ||A*||`` (recovered) and where the solver reached zero loss
    (``F <= 1e-20 F(0, 0)``: a zero-loss point that is not A* means the minimiser is not unique),
    and the median loss of rank-k fine-tuning on a fresh test task from the same family, relative
    to ``1/2 ||A_test* - A_hat||_F^2``. Asymmetric adapters are also solved from 5 random starts
    (:func:`loraml.theory.landscape.random_start` scale) and the best run's recovery is reported.

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
        Seed, or the source of every random draw.
    reps : int
        Families per setting.

    Returns
    -------
    CheckResult
        The statement, instances, ``held`` (``None`` for a measurement), worst margin in decades,
        seconds and the measured ``numbers``.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import checks
    >>> rec = checks.check_beyond(np.random.default_rng(0), reps=1)
    >>> rec.key, rec.held  # a measurement
    ('beyond', None)
    """
    rng = as_generator(rng)
    start = time.perf_counter()
    settings: dict[str, dict[str, Any]] = {
        "crowded_d6_T4_k2": dict(d=6, T=4, k=2, perturbation="psd", asym=[False]),
        "crowded_d6_T5_k3": dict(d=6, T=5, k=3, perturbation="psd", asym=[False]),
        "general_UV_d12_T3_k1": dict(d=12, T=3, k=1, perturbation="general", asym=[False, True]),
        "asymmetric_on_psd_d10_T3_k1": dict(d=10, T=3, k=1, perturbation="psd", asym=[True]),
    }
    out = {}
    for name, s in settings.items():
        for asym in s["asym"]:
            a_err, ft, zero, restarts = [], [], [], []
            for _ in range(reps):
                fam = draw_family(s["d"], s["T"], s["k"], rng, perturbation=s["perturbation"])
                q = fam.population()
                res = solve_lora_ml(q, s["k"], asymmetric=asym)
                f0 = 0.5 * float(np.sum(q.c))
                a_err.append(base_error(res.A, fam.A_star).relative)
                zero.append(res.objective <= 1e-20 * f0)
                if asym:  # the best of 5 random starts (U, V at the problem's scale)
                    runs = [
                        solve_lora_ml(q, s["k"], asymmetric=True, init=(None, U0, U1))
                        for U0, U1 in (
                            (random_start(q, s["k"], rng)[1], random_start(q, s["k"], rng)[1])
                            for _ in range(5)
                        )
                    ]
                    best = min(runs, key=lambda r: r.objective)
                    restarts.append(base_error(best.A, fam.A_star).relative <= 1e-6)
                test = fam.test_targets()[0]
                L0 = 0.5 * float(np.sum((test - res.A) ** 2))
                loss = finetune_closed_form(Quadratics.population(test), res.A, s["k"]).loss
                ft.append(loss / max(L0, _TINY))
            out[f"{name}/{'asymmetric' if asym else 'symmetric'}_adapters"] = {
                "median_A_relative_error": float(np.median(a_err)),
                "fraction_recovered": float(np.mean(np.array(a_err) <= 1e-6)),
                "fraction_zero_loss": float(np.mean(zero)),
                "median_rank_k_finetune_relative_loss": float(np.median(ft)),
            }
            if restarts:
                out[f"{name}/asymmetric_adapters"]["fraction_recovered_best_of_5_random_starts"] = (
                    float(np.mean(restarts))
                )
    return _measurement(
        "beyond",
        "Beyond the assumptions: k(T+1) > d, U V^T perturbations, asymmetric adapters (measured)",
        reps * sum(len(s["asym"]) for s in settings.values()),
        start,
        out,
    )


# ---------------------------------------------------------------------------------------------
# A user's instance
# ---------------------------------------------------------------------------------------------
def check_instance_recovery(
    q: Quadratics,
    k: int,
    rng: RNGLike,
    *,
    A_star: np.ndarray | None = None,
    starts: int = 5,
    convex: bool = True,
) -> CheckResult:
    r"""Measurement on one instance: every retraining method, and the landscape from random starts.

    Runs SR, LoRA-ML (symmetric and asymmetric adapters), the nuclear-norm and SDP relaxations
    (penalised analogues on finite-sample losses, :mod:`loraml.theory.convex`) and ``starts``
    random-start LoRA-ML runs classified by
    :func:`loraml.theory.landscape.search_stationary_points`. Reports
    each method's objective and, when ``A_star`` is known, ``||A_hat - A*||_F / ||A*||_F``.

    Parameters
    ----------
    q : Quadratics
        The instance's task losses (population or finite-sample).
    k : int
        Adapter rank.
    rng : numpy.random.Generator
        Draws the random starts.
    A_star : ndarray, shape (d, d), optional
        The true base, when known.
    starts : int
        Random-start LoRA-ML runs.
    convex : bool
        Also solve the two convex relaxations.

    Returns
    -------
    CheckResult
        A measurement (``held`` is None) keyed ``"instance"``.

    Examples
    --------
    >>> import numpy as np
    >>> import loraml.theory as th
    >>> from loraml.theory import checks
    >>> rng = np.random.default_rng(0)
    >>> fam = th.draw_family(8, 3, 1, rng)
    >>> rec = checks.check_instance_recovery(fam.population(), 1, rng, A_star=fam.A_star, starts=1,
    ...                                      convex=False)
    >>> bool(rec.numbers["relative_error_of_A"]["lora_ml"] < 1e-8)
    True
    """
    rng = as_generator(rng)
    start = time.perf_counter()
    bases = {
        "sr": sr_closed_form(q),
        "lora_ml": solve_lora_ml(q, k).A,
        "lora_ml_asymmetric": solve_lora_ml(q, k, asymmetric=True).A,
    }
    status = {}
    if convex:
        from loraml.theory.convex import nuclear_relaxation, sdp_relaxation

        for name, fn in (("nuclear", nuclear_relaxation), ("sdp", sdp_relaxation)):
            try:
                res = fn(q)
            except ValueError as err:  # e.g. no noise estimate with N <= d
                status[name] = f"not run: {err}"
                continue
            bases[name], status[name] = res.A, res.status
    numbers: dict = {"d": q.d, "T": q.T, "k": k, "kind": "population" if q.N is None else "data"}
    numbers["convex_status"] = status
    if A_star is not None:
        numbers["relative_error_of_A"] = {
            name: base_error(A, A_star).relative if np.all(np.isfinite(A)) else None
            for name, A in bases.items()
        }
    points = search_stationary_points(q, k, rng, starts=starts)
    kinds: dict[str, int] = {}
    for p in points:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    numbers["random_start_end_points"] = kinds
    numbers["best_lora_ml_objective"] = min(p.loss for p in points)
    artifacts = {
        f"spurious_{j}": {"A0": p.start[0], "U0": p.start[1], "A_hat": p.A, "U_hat": p.U}
        for j, p in enumerate(points)
        if p.kind == "spurious"
    }
    return _measurement(
        "instance",
        "Your instance: every method's base error and the landscape from random starts (measured)",
        1,
        start,
        numbers,
        artifacts,
    )


# ---------------------------------------------------------------------------------------------
# Beyond the paper (issue 13): the measurements live in loraml.theory.questions
# ---------------------------------------------------------------------------------------------
_QUESTIONS = (
    "check_rank_misspecified",
    "check_t2_selection",
    "check_landscape_map",
    "check_misspecified",
    "check_covariance",
    "check_end_to_end",
)


def __getattr__(name: str) -> object:
    """``checks.check_<question>`` for ``loraml verify``: imported lazily (questions imports us)."""
    if name in _QUESTIONS:
        from loraml.theory import questions

        return getattr(questions, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

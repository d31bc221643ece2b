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
(:meth:`~loraml.theory.check_record._Tally.claim`). A statement with no claim to check on an
instance is *not applicable* (:meth:`CheckResult.verdict`).

Statements (arXiv 2410.22264 v1 Thm 1-4, Cor 1): ``theorem1``, ``corollary1``, ``theorem2``,
``theorem3``, ``theorem4`` and ``rate`` are claims of the paper; ``spurious``, ``retraining``,
``convex`` and ``beyond`` are measurements (``convex.held`` only says that both relaxations were
solved to at least the objective value of ``A*``, which is feasible for both).

This module is the public face; the code lives in three rooms, and every name is re-exported here:

- :mod:`loraml.theory.check_record`: :class:`CheckResult`, the margins :func:`below` and
  :func:`above`, the tally of a check and the instances the checks draw
  (:func:`draw_generic_family`, :func:`random_sizes`);
- :mod:`loraml.theory.checks_theorems`: Theorem 1, Corollary 1, Theorems 2, 3 and 4;
- :mod:`loraml.theory.checks_measurements`: the adaptation rate and the measurements (spurious
  minima, finite-sample retraining, convex relaxations, beyond the assumptions, a user's
  instance).

The questions beyond the paper (:mod:`loraml.theory.questions`) are reachable here too, as
``checks.check_<question>``, imported on first use.
"""

from __future__ import annotations

from loraml.theory.check_record import _SQRT_U as _SQRT_U
from loraml.theory.check_record import _TINY as _TINY
from loraml.theory.check_record import _U as _U
from loraml.theory.check_record import CheckResult as CheckResult
from loraml.theory.check_record import _desc as _desc
from loraml.theory.check_record import _families as _families
from loraml.theory.check_record import _jsonable as _jsonable
from loraml.theory.check_record import _largest_target as _largest_target
from loraml.theory.check_record import _measurement as _measurement
from loraml.theory.check_record import _perturbations as _perturbations
from loraml.theory.check_record import _rounding as _rounding
from loraml.theory.check_record import _Tally as _Tally
from loraml.theory.check_record import above as above
from loraml.theory.check_record import below as below
from loraml.theory.check_record import draw_generic_family as draw_generic_family
from loraml.theory.check_record import random_sizes as random_sizes
from loraml.theory.checks_measurements import _local_minimum_evidence as _local_minimum_evidence
from loraml.theory.checks_measurements import check_beyond as check_beyond
from loraml.theory.checks_measurements import check_convex as check_convex
from loraml.theory.checks_measurements import check_instance_recovery as check_instance_recovery
from loraml.theory.checks_measurements import check_rate as check_rate
from loraml.theory.checks_measurements import check_retraining as check_retraining
from loraml.theory.checks_measurements import check_spurious as check_spurious
from loraml.theory.checks_theorems import _spectral_ball as _spectral_ball
from loraml.theory.checks_theorems import check_corollary1 as check_corollary1
from loraml.theory.checks_theorems import check_theorem1 as check_theorem1
from loraml.theory.checks_theorems import check_theorem2 as check_theorem2
from loraml.theory.checks_theorems import check_theorem3 as check_theorem3
from loraml.theory.checks_theorems import check_theorem4 as check_theorem4

__all__ = [
    "CheckResult",
    "above",
    "below",
    "check_beyond",
    "check_convex",
    "check_corollary1",
    "check_instance_recovery",
    "check_rate",
    "check_retraining",
    "check_spurious",
    "check_theorem1",
    "check_theorem2",
    "check_theorem3",
    "check_theorem4",
    "draw_generic_family",
    "random_sizes",
]


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
    if name == "check_convex_transition":  # issue 13, question 5: its own module
        from loraml.theory import convex_transition

        return convex_transition.check_convex_transition
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

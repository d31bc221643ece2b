"""Convex relaxations of LoRA-ML retraining (ours; not in arXiv 2410.22264).

LoRA-ML asks for a base ``A`` such that every ``A_t* - A`` has rank at most k (and is PSD). Two
convex problems drop the rank constraint:

- **Nuclear-norm median**: ``min_A sum_t ||A_t* - A||_*`` (the nuclear norm is the convex
  envelope of rank on the spectral-norm ball).
- **SDP**: ``max tr(A) s.t. A <= A_t*`` in the PSD order for every t. ``A*`` is feasible (each
  ``A_t* - A* = U_t* U_t*^T`` is PSD); it is optimal when a dual certificate exists.

Neither has a rank-k constraint, so neither is guaranteed to return ``A*``: where each does is a
measured question (``loraml verify``, statement ``convex``; README, section "Verification").

Finite samples: the exact targets are unknown, so each task gets a free deviation penalised by its
nuclear norm (its trace for the PSD deviations of the SDP)::

    nuclear:  min_{A, D_t}       sum_t f_t(A + D_t) + lambda sum_t ||D_t||_*
    SDP:      min_{A, P_t >= 0}  sum_t f_t(A + P_t) + lambda sum_t tr(P_t)

with ``f_t`` the per-sample-mean losses of :class:`~loraml.theory.objectives.Quadratics`. As
``lambda -> 0`` on noise-free data these tend to the population problems. Solvers: Clarabel up to
30 x 30 and SCS beyond (the project's rule), unless ``solver`` says otherwise. cvxpy is imported
inside the functions (it is slow to import).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np

from loraml.theory.linalg import psd_sqrt, sym
from loraml.theory.objectives import Quadratics
from loraml.theory.reprs import compact_repr

#: Largest d solved with Clarabel by default; SCS beyond (project rule: SCS beyond 30 x 30).
CLARABEL_MAX_D = 30


@dataclass
class ConvexResult:
    """Outcome of a convex relaxation.

    Attributes
    ----------
    A : ndarray, shape (d, d)
        The relaxation's base (NaN-filled when the solver returned no solution).
    deviations : ndarray, shape (T, d, d)
        Per-task deviations: ``A_t* - A`` (population) or the fitted ``D_t`` / ``P_t``.
    status : str
        cvxpy's status (``"optimal"``, ``"optimal_inaccurate"``, ``"infeasible"``, ...).
    objective : float
        Optimal value of the problem that was solved.
    solver : str
        The conic solver used.
    penalty : float or None
        ``lambda`` of the finite-sample analogue; ``None`` for the exact population problem.
    seconds : float
        Wall time, including problem construction.
    """

    A: np.ndarray
    deviations: np.ndarray
    status: str
    objective: float
    solver: str
    penalty: float | None
    seconds: float

    def __repr__(self) -> str:
        return compact_repr(self)

    @property
    def ok(self) -> bool:
        """True when the solver reported an (accurate or inaccurate) optimum."""
        return self.status in ("optimal", "optimal_inaccurate")


def _choose_solver(d: int, solver: str | None) -> str:
    if solver is not None:
        return solver.upper()
    return "CLARABEL" if d <= CLARABEL_MAX_D else "SCS"


def _solve(problem, solver: str) -> None:
    import cvxpy as cp

    scs = {"eps_abs": 1e-7, "eps_rel": 1e-7, "max_iters": 50_000}
    with warnings.catch_warnings():  # an inaccurate solve is reported through the status
        warnings.simplefilter("ignore", UserWarning)
        try:
            problem.solve(solver=solver, **(scs if solver == "SCS" else {}))
        except cp.error.SolverError:
            if solver == "SCS":
                raise
            problem.solve(solver="SCS", **scs)


def default_penalty(q: Quadratics) -> float:
    r"""Noise-level penalty ``lambda = 2 s_hat sqrt(d / N)`` for the finite-sample analogues.

    The per-task gradient at the truth is ``-E_t X_t^T / N`` whose spectral norm is about
    ``2 s sqrt(d / N)`` for ``N >> d``; a penalty above it keeps the deviations low-rank. The noise
    standard deviation is estimated from the least-squares residuals,
    ``s_hat^2 = 2 N f_t(B_t) / (d (N - d))`` averaged over tasks.

    Parameters
    ----------
    q : Quadratics
        Finite-sample losses with ``N > d`` samples per task.

    Raises
    ------
    ValueError
        Population losses, or ``N <= d`` (pass ``penalty`` explicitly then).

    Returns
    -------
    float
        The penalty ``lambda``.

    Examples
    --------
    >>> import numpy as np
    >>> import loraml.theory as th
    >>> from loraml.theory.convex import default_penalty
    >>> rng = np.random.default_rng(0)
    >>> fam = th.draw_family(6, 3, 1, rng)
    >>> X, Y = th.sample_family_data(fam.targets(), N=2000, noise_std=0.1, rng=rng)
    >>> lam = default_penalty(th.Quadratics.from_data(X, Y))
    >>> bool(0.5 < lam / (2 * 0.1 * np.sqrt(6 / 2000)) < 1.5)
    True
    """
    if q.N is None:
        raise ValueError("default_penalty needs finite-sample losses (q.N is None)")
    N = q.N.astype(float)
    if np.any(N <= q.d):
        raise ValueError(
            f"cannot estimate the noise level from N={int(N.min())} <= d={q.d} samples per task; "
            "use more samples or give the penalty explicitly"
        )
    s2 = float(np.mean(2.0 * N * q.minima() / (q.d * (N - q.d))))
    return 2.0 * np.sqrt(max(s2, 0.0)) * float(np.sqrt(q.d / N.mean()))


def _penalty(q: Quadratics, penalty: float | None) -> float:
    """The penalised relaxations' ``lambda``: ``penalty``, or :func:`default_penalty` if None."""
    lam = default_penalty(q) if penalty is None else float(penalty)
    if not lam > 0:
        raise ValueError(f"penalty must be > 0, got {penalty}")
    return lam


def _rescaled(q: Quadratics) -> tuple[Quadratics, float]:
    r"""``q`` divided by ``c`` (the power of 2 nearest the rms entry of the ``B_t``), and ``c``.

    Instances whose rms entry lies in ``[1/16, 16]`` are returned unchanged (``c = 1``).

    Both relaxations are homogeneous: with ``M = c M'`` the population problems scale their
    objective by ``c`` (norms, traces), the penalised ones by ``c^2`` with ``lambda' = lambda /
    c`` (``f_t(c M') = c^2 f'_t(M')``, ``lambda ||c D'||_* = c lambda ||D'||_*``), and the PSD
    constraints are invariant. Conic solvers use absolute tolerances (``1e-8``-ish) and
    infeasibility tests, so an instance at scale ``1e12`` reads as unbounded and one at ``1e-10``
    as solved at any point: solving at unit scale and multiplying back removes both.
    """
    B = q.least_squares()
    rms = float(np.sqrt(np.mean(B * B)))
    if not np.isfinite(rms) or rms <= 0:
        return q, 1.0
    if 2.0**-4 <= rms <= 2.0**4:  # unit scale already: solve the problem as given
        return q, 1.0
    c = float(2.0 ** np.round(np.log2(rms)))  # a power of 2: the scaling itself is exact
    m = None if q.m is None else q.m / c**2
    scaled = Quadratics(q.S, q.C / c, q.c / c**2, q.N, m)
    object.__setattr__(scaled, "_B", B / c)
    return scaled, c


def _fit_terms(q: Quadratics, M_list):
    """cvxpy expressions ``f_t(M_t) - f_t(B_t) = 1/2 ||(M_t - B_t) S_t^{1/2}||_F^2``."""
    import cvxpy as cp

    B = q.least_squares()
    terms = []
    for t, M in enumerate(M_list):
        if q.S is None:
            terms.append(0.5 * cp.sum_squares(M - B[t]))
        else:
            root, _ = psd_sqrt(q.S[t])
            terms.append(0.5 * cp.sum_squares((M - B[t]) @ root))
    return terms


def nuclear_relaxation(
    q: Quadratics, *, penalty: float | None = None, solver: str | None = None
) -> ConvexResult:
    r"""Nuclear-norm median of the tasks: ``min_A sum_t ||A_t* - A||_*``.

    The convex relaxation of LoRA-ML's requirement that every ``A_t* - A`` be low-rank
    (ours, not in arXiv 2410.22264; compare its Theorem 3, where LoRA-ML recovers ``A*`` for
    T >= 3). Population losses (``q.N is None``) with ``penalty=None`` solve this exactly, with
    ``A_t*`` the per-task minimisers ``q.least_squares()``. Otherwise the finite-sample analogue
    ``min_{A, D_t} sum_t f_t(A + D_t) + lambda sum_t ||D_t||_*`` (losses are per-sample means)
    with ``lambda = penalty`` or :func:`default_penalty`.

    Parameters
    ----------
    q : Quadratics
        T task losses of dimension d.
    penalty : float, optional
        ``lambda > 0``; forces the penalised form even for population losses.
    solver : str, optional
        cvxpy solver name; default Clarabel for ``d <= 30``, SCS beyond.

    Returns
    -------
    ConvexResult
        ``deviations[t]`` is ``A_t* - A`` (population) or ``D_t``.

    Examples
    --------
    With many tasks per unit of rank the nuclear-norm median recovers ``A*``:

    >>> import numpy as np
    >>> import loraml.theory as th
    >>> from loraml.theory.convex import nuclear_relaxation
    >>> fam = th.draw_family(6, 9, 1, np.random.default_rng(0))
    >>> res = nuclear_relaxation(fam.population())
    >>> res.status, bool(th.base_error(res.A, fam.A_star).relative < 1e-4)
    ('optimal', True)
    """
    import cvxpy as cp

    start = time.perf_counter()
    T, d, d_out = q.T, q.d, q.C.shape[1]
    name = _choose_solver(d, solver)
    exact = penalty is None and q.N is None
    q, c = _rescaled(q)  # solve at unit scale, map back (see _rescaled)
    penalty = None if penalty is None else float(penalty) / c
    A = cp.Variable((d_out, d))
    if exact:
        B = q.least_squares()
        problem = cp.Problem(cp.Minimize(sum(cp.normNuc(B[t] - A) for t in range(T))))
        D_vars: list[cp.Variable] = []  # no deviation variables: the fit is exact
    else:
        lam = _penalty(q, penalty)
        D_vars = [cp.Variable((d_out, d)) for _ in range(T)]
        fit = _fit_terms(q, [A + D for D in D_vars])
        problem = cp.Problem(cp.Minimize(sum(fit) + lam * sum(cp.normNuc(D) for D in D_vars)))
    _solve(problem, name)
    A_val = _value(A, (d_out, d))
    if exact:
        dev = q.least_squares() - A_val[None]
    else:
        dev = np.stack([_value(D, (d_out, d)) for D in D_vars])
    return ConvexResult(
        c * A_val,
        c * dev,
        str(problem.status),
        _objective(problem) * (c if exact else c**2),
        name,
        None if exact else lam * c,
        time.perf_counter() - start,
    )


def sdp_relaxation(
    q: Quadratics, *, penalty: float | None = None, solver: str | None = None
) -> ConvexResult:
    r"""Largest base below every task in the PSD order: ``max tr(A)`` subject to all ``A <= A_t*``.

    Relaxes LoRA-ML's symmetric PSD adapters (``A_t* - A = U_t U_t^T``) by dropping their rank
    (ours, not in arXiv 2410.22264). ``A*`` is feasible; it is the optimum when dual
    certificates ``Y_t >= 0``, ``Y_t U_t* = 0``, ``sum_t Y_t = I`` exist (they cannot for T = 2
    unless the ranges of ``U_1*`` and ``U_2*`` are orthogonal).

    Population losses (``q.N is None``) with ``penalty=None``: the order is taken on symmetric
    parts, ``sym(A_t*) - S >= 0`` with ``A = S + skew(mean_t A_t*)`` (the skew part is common to
    all tasks of a PSD family and invisible to the trace). Otherwise the finite-sample analogue
    ``min_{A, P_t >= 0} sum_t f_t(A + P_t) + lambda sum_t tr(P_t)`` (per-sample-mean losses;
    ``lambda = penalty`` or :func:`default_penalty`).

    Parameters
    ----------
    q : Quadratics
        T task losses of dimension d (square outputs, ``d_out = d``).
    penalty : float, optional
        ``lambda > 0``; forces the penalised form even for population losses.
    solver : str, optional
        cvxpy solver name; default Clarabel for ``d <= 30``, SCS beyond.

    Returns
    -------
    ConvexResult
        ``deviations[t]`` is ``sym(A_t*) - S`` (population) or ``P_t``.

    Examples
    --------
    >>> import numpy as np
    >>> import loraml.theory as th
    >>> from loraml.theory.convex import sdp_relaxation
    >>> fam = th.draw_family(4, 3, 1, np.random.default_rng(0))
    >>> res = sdp_relaxation(fam.population())
    >>> res.status, bool(th.base_error(res.A, fam.A_star).relative < 1e-4)
    ('optimal', True)
    """
    import cvxpy as cp

    start = time.perf_counter()
    T, d = q.T, q.d
    if q.C.shape[1] != d:
        raise ValueError(f"the SDP relaxation needs square tasks, got d_out={q.C.shape[1]}, d={d}")
    name = _choose_solver(d, solver)
    exact = penalty is None and q.N is None
    q, c = _rescaled(q)  # solve at unit scale, map back (see _rescaled)
    penalty = None if penalty is None else float(penalty) / c
    if exact:
        B = q.least_squares()
        skew = (B - np.swapaxes(B, 1, 2)).mean(0) / 2
        Bs = sym(B)
        S = cp.Variable((d, d), symmetric=True)
        constraints = [cp.Constant(Bs[t]) - S >> 0 for t in range(T)]
        problem = cp.Problem(cp.Maximize(cp.trace(S)), constraints)
        _solve(problem, name)
        S_val = _value(S, (d, d))
        A_val = S_val + skew
        dev = Bs - S_val[None]
        lam = None
    else:
        lam = _penalty(q, penalty)
        A = cp.Variable((d, d))
        P_vars = [cp.Variable((d, d), PSD=True) for _ in range(T)]
        fit = _fit_terms(q, [A + P for P in P_vars])
        problem = cp.Problem(cp.Minimize(sum(fit) + lam * sum(cp.trace(P) for P in P_vars)))
        _solve(problem, name)
        A_val = _value(A, (d, d))
        dev = np.stack([_value(P, (d, d)) for P in P_vars])
    return ConvexResult(
        c * A_val,
        c * dev,
        str(problem.status),
        _objective(problem) * (c if exact else c**2),
        name,
        None if lam is None else lam * c,
        time.perf_counter() - start,
    )


def _value(var, shape: tuple[int, int]) -> np.ndarray:
    v = var.value
    return np.full(shape, np.nan) if v is None else np.asarray(v, dtype=float)


def _objective(problem) -> float:
    v = problem.value
    return float(v) if v is not None and np.isfinite(v) else float("nan")

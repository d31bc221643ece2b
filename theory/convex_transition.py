r"""Where the convex relaxations start to recover ``A*`` (issue 13, question 5).

The nuclear-norm median and the SDP of :mod:`loraml.theory.convex` drop LoRA-ML's rank
constraint. This module measures, on population families drawn as in the paper's experiments
(:func:`loraml.theory.draw_family`: ``A*`` a symmetrised Gaussian, ``U_t*`` Gaussian), the
fraction of instances on which each recovers ``A*`` as the number of tasks T grows at fixed
``rho = k/d``,
fits a logistic in T to locate the transition (:func:`fit_logistic`), and compares the location
with three predictions derived here and with LoRA-ML (:func:`loraml.theory.solve_lora_ml`) on the
same instances:

- :func:`dof_tasks`: the parameter count, ``d(d+1) / ((d-k)(d-k+1))`` tasks (identifiability);
- :func:`sdp_tasks`: the SDP's statistical-dimension prediction, about twice that count;
- :func:`nuclear_tasks`: where the nuclear norm's first-order obstruction
  (:func:`nuclear_obstruction`, a proof of failure on an instance) stops holding, from the edge of
  the spectrum of a sum of T random projections; infinite for ``k/d >= 1/2``.

A method *recovers* A* when ``||A_hat - A*||_F <= 1e-4 ||A*||_F`` (the criterion of the ``phase``
figure and of :mod:`loraml.theory.questions`). The task sets are nested: instance i is drawn once
with the largest T of its grid and measured on its first T tasks, so the curves of one instance
share its draws.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from loraml.theory.check_record import CheckResult, _measurement
from loraml.theory.family import TaskFamily, draw_family
from loraml.theory.questions import RECOVER_RTOL, fraction
from loraml.theory.retraining import solve_lora_ml
from loraml.theory.rng import RNGLike, as_generator

#: Methods in the order of the cell arrays.
METHODS = ("LoRA-ML", "SDP", "nuclear norm")
#: How each entry of a cell was decided: solved, or inferred (see :func:`transition_cell`).
SOLVED, INFERRED_RECOVERED, OBSTRUCTED = 0, 1, 2
#: A relaxation's optimum better than A*'s value by this relative amount proves that A* is not
#: its minimiser (a *certified* failure); a failure without it may be a solver inaccuracy.
CERTIFY_RTOL = 1e-6
#: 95 % profile-likelihood cut for one parameter: chi-square(1) quantile.
CHI2_95 = 3.841458820694124
#: Full-profile cells ``(d, k, Ts)``: k/d = 0.1, 0.2, 0.3, 0.5 at d = 20, and 0.1 at d = 40.
CT_CELLS: tuple[tuple[int, int, tuple[int, ...]], ...] = (
    (20, 2, (2, 3, 4, 5, 6, 7, 8, 10)),
    (20, 4, (2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 14, 16)),
    (20, 6, (2, 3, 4, 5, 6, 8, 12, 16, 20, 24, 28)),
    (20, 10, (2, 3, 4, 5, 6, 7, 8, 9, 10, 12)),
    (40, 4, (2, 3, 4, 5, 6, 7, 8, 10)),
)
#: Quick-profile cells (d = 8: seconds).
CT_QUICK_CELLS: tuple[tuple[int, int, tuple[int, ...]], ...] = (
    (8, 1, (2, 3, 4, 5, 6)),
    (8, 2, (2, 3, 4, 6, 8)),
)


# ---------------------------------------------------------------------------------------------
# Predictions
# ---------------------------------------------------------------------------------------------
def dof_tasks(d: int, k: int) -> float:
    r"""Tasks needed by the parameter count: ``T* = d(d+1) / ((d-k)(d-k+1))``.

    Derivation. Population targets ``A_t* = A* + P_t`` with ``P_t`` symmetric PSD of rank k:
    ``A*`` has ``n = d(d+1)/2`` free parameters (its symmetric part; the skew part is read off any
    target) and each ``P_t`` has ``dk - k(k-1)/2`` (a ``d x k`` factor up to a k x k rotation).
    T targets give ``T n`` equations. A* can be identified from generic targets only if the
    unknowns do not outnumber them, ``n + T (dk - k(k-1)/2) <= T n``; since
    ``n - dk + k(k-1)/2 = (d-k)(d-k+1)/2`` this is ``T >= T*``. A necessary condition for every
    method, not a sufficient one (T = 2 has a continuum of zero-loss points for any d,
    arXiv 2410.22264 v1 Theorem 4 and its discussion).

    Parameters
    ----------
    d, k : int
        Dimension and perturbation rank, ``1 <= k < d``.

    Returns
    -------
    float
        ``T*``; about ``1 / (1 - k/d)^2`` for large d.

    Examples
    --------
    >>> dof_tasks(20, 10)  # k/d = 1/2: three tasks are too few to identify A*
    3.8181818181818183
    >>> round(dof_tasks(20, 2), 3)
    1.228
    """
    return d * (d + 1) / ((d - k) * (d - k + 1))


def sdp_tasks(d: int, k: int) -> float:
    r"""Statistical-dimension prediction of the SDP's transition: ``(4n - 2) / ((d-k)(d-k+1))``.

    Derivation. Write ``S = A* - D`` (symmetric). ``S`` is feasible iff ``P_t + D >= 0`` for every t
    and has a larger trace iff ``tr D < 0``, so A* is the unique optimum iff the cone of feasible
    directions at ``D = 0`` meets the half-space ``{tr D <= 0}`` only at 0. With ``V_t`` an
    orthonormal basis of the null space of ``P_t`` (dimension ``d - k``) that cone is
    ``K_1 cap ... cap K_T``, ``K_t = {D : V_t^T D V_t >= 0}``: a PSD cone of size ``d - k`` times
    the free blocks. In ``Sym(d)`` (dimension ``n = d(d+1)/2``) the statistical dimension of the
    PSD cone of size m is half its dimension (it is self-dual), so
    ``delta(K_t) = n - (d-k)(d-k+1)/4``, and the half-space has ``delta = n - 1/2``. The
    approximate kinematic formula (Amelunxen, Lotz, McCoy, Tropp 2014, "Living on the edge")
    says randomly oriented cones meet only at 0, with high probability, once their
    co-dimensions ``n - delta`` add up to more than n:
    ``T (d-k)(d-k+1)/4 + 1/2 >= n``, i.e. ``T >= (4n - 2) / ((d-k)(d-k+1))``, about twice
    :func:`dof_tasks`. Assumption (why this is a first-order prediction, not a theorem): the
    formula needs independent uniformly random rotations of ``Sym(d)``, while the tasks' cones
    are only rotated by conjugation ``D -> Q D Q^T``; the measurement checks it.

    Parameters
    ----------
    d, k : int
        Dimension and perturbation rank, ``1 <= k < d``.

    Returns
    -------
    float
        The predicted location of the SDP's transition in T.

    Examples
    --------
    >>> round(sdp_tasks(20, 2), 3), round(2 * dof_tasks(20, 2), 3)
    (2.45, 2.456)
    """
    n = d * (d + 1) / 2
    return (4 * n - 2) / ((d - k) * (d - k + 1))


def projection_sum_edge(rho: float, T: float) -> float:
    r"""Upper edge of the spectrum of a sum of T independent random projections of rank ``rho d``.

    ``Tρ + (1 - 2ρ) + 2 sqrt(ρ(1-ρ)(T-1))`` (``d -> infinity``): the upper end of the support of
    the T-fold free additive convolution of the Bernoulli(ρ) law (independent uniformly random
    subspaces are asymptotically free, Voiculescu). T = 2 is the classical two-subspace case: the
    eigenvalues of ``E_1 + E_2`` are ``1 -+ cos(theta_i)`` over principal angles, whose largest
    cosine squared tends to ``4ρ(1-ρ)`` (Wachter's law), giving ``1 + 2 sqrt(ρ(1-ρ))``. The test
    suite checks the formula against ``d = 300`` Monte Carlo.

    Parameters
    ----------
    rho : float
        Rank over dimension, in (0, 1).
    T : float
        Number of projections (at least 1).

    Returns
    -------
    float
        The limiting largest eigenvalue.

    Examples
    --------
    >>> projection_sum_edge(0.25, 2.0)  # 1 + 2 sqrt(3/16)
    1.8660254037844386
    """
    return T * rho + (1 - 2 * rho) + 2 * float(np.sqrt(rho * (1 - rho) * (T - 1)))


def nuclear_tasks(rho: float) -> float:
    r"""Where the nuclear norm's obstruction stops: ``T = 1 + ((1 + 2 sqrt(ρ(1-ρ))) / (1 - 2ρ))^2``.

    Derivation. :func:`nuclear_obstruction` proves failure whenever
    ``lambda_max(sum_t E_t) > T/2``. For large d that largest eigenvalue tends to
    :func:`projection_sum_edge` ``Tρ + (1-2ρ) + 2 sqrt(ρ(1-ρ)(T-1))``; setting it equal to ``T/2``
    with ``a = 1/2 - ρ`` gives ``a (T-2) = 2 sqrt(ρ(1-ρ)(T-1))``, a quadratic in
    ``x = sqrt(T-1)``: ``a x^2 - 2 sqrt(ρ(1-ρ)) x - a = 0``, whose positive root is
    ``x = (sqrt(ρ(1-ρ)) + sqrt(ρ(1-ρ) + a^2)) / a`` and ``ρ(1-ρ) + a^2 = 1/4``. Below this T the
    nuclear norm fails on almost every large instance (a necessary condition for its recovery);
    whether it recovers just above is what the measurement says. Infinite for ``ρ >= 1/2``:
    there ``tr(sum_t E_t) = Tρd >= Td/2`` forces ``lambda_max >= T/2``.

    Parameters
    ----------
    rho : float
        ``k / d``, in (0, 1).

    Returns
    -------
    float
        The predicted location in T (``inf`` for ``rho >= 1/2``); tends to 2 as ``rho -> 0``.

    Examples
    --------
    >>> round(nuclear_tasks(0.1), 12), round(nuclear_tasks(0.2), 12)
    (5.0, 10.0)
    >>> nuclear_tasks(0.5)
    inf
    """
    if rho >= 0.5:
        return float("inf")
    return float(1 + ((1 + 2 * np.sqrt(rho * (1 - rho))) / (1 - 2 * rho)) ** 2)


def nuclear_obstruction(U: np.ndarray) -> float:
    r"""``lambda_max(sum_t E_t) / (T/2)``, ``E_t`` the projection onto the range of ``U_t*``.

    Above 1, ``A*`` is provably not a minimiser of the nuclear-norm median
    ``sum_t ||A_t* - A||_*`` (population, PSD perturbations ``P_t = U_t* U_t*^T``). Derivation:
    with ``A = A* - D``, the one-sided derivative of ``||P_t + D||_*`` at ``D = 0`` is
    ``tr(E_t D) + ||V_t^T D V_t||_*`` (``V_t`` an orthonormal basis of the null space of ``P_t``;
    Watson 1992). For ``D = -x x^T`` with ``||x|| = 1`` it is
    ``-x^T E_t x + ||V_t^T x||^2 = 1 - 2 x^T E_t x``, so the objective's derivative along
    ``A* + eps x x^T`` is ``T - 2 x^T (sum_t E_t) x``, negative for the top eigenvector when
    ``lambda_max > T/2``: moving A* that way lowers the objective. A one-sided test: below 1 the
    nuclear norm may still fail.

    Parameters
    ----------
    U : ndarray, shape (T, d, k)
        The tasks' factors ``U_t*`` (full column rank).

    Returns
    -------
    float
        The ratio; above 1 proves that the nuclear norm does not recover A*.

    Examples
    --------
    >>> import numpy as np
    >>> U = np.eye(4)[None, :, :2].repeat(3, axis=0)  # three identical ranges: lambda_max = 3
    >>> nuclear_obstruction(U)
    2.0
    """
    T = U.shape[0]
    Q = np.linalg.qr(U)[0]
    S = np.einsum("tik,tjk->ij", Q, Q)
    return float(np.linalg.eigvalsh((S + S.T) / 2)[-1] / (T / 2))


# ---------------------------------------------------------------------------------------------
# Fit
# ---------------------------------------------------------------------------------------------
def fit_logistic(Ts: ArrayLike, successes: ArrayLike, trials: ArrayLike) -> dict[str, object]:
    r"""Maximum-likelihood logistic ``p(T) = 1 / (1 + exp(-(T - T50) / w))`` to binomial counts.

    Fit method: the binomial log-likelihood ``sum_j k_j log p(T_j) + (n_j - k_j) log(1 - p(T_j))``
    is evaluated on a grid (``T50`` in steps of 0.01 from ``min T - 3`` to ``max T + 3``, ``w``
    on 240 log-spaced values from 0.02 to 30) and maximised there; 95 % intervals are
    profile-likelihood intervals (grid points with ``2 (l_max - l_profile) <= 3.84``, the
    chi-square(1) quantile). ``w`` is the logistic scale: p goes from 10 % to 90 % over
    ``2 ln(9) w = 4.39 w`` tasks. When the counts are a perfect step (no T with ``0 < k < n``),
    the likelihood keeps rising as ``w -> 0``: ``w`` is then only bounded above, by its
    interval's upper end (``"separated": True``). When no T (every T) recovered, the location
    lies beyond the grid: ``status`` is ``"above"`` (``"below"``) and ``location95`` the one-sided
    bound the data give.

    Parameters
    ----------
    Ts : array_like of float
        Task counts.
    successes, trials : array_like of int
        Recoveries and instances at each T.

    Returns
    -------
    dict
        ``"status"`` (``"fit"``, ``"above"`` or ``"below"``), ``"location"`` (T50; None unless
        fitted), ``"location95"``, ``"width"`` (w; None unless fitted), ``"width95"``,
        ``"separated"`` (bool).

    Examples
    --------
    >>> fit = fit_logistic([2, 3, 4, 5, 6], [0, 2, 10, 18, 20], [20] * 5)
    >>> fit["status"], round(fit["location"], 1)
    ('fit', 4.0)
    >>> lo, hi = fit["location95"]
    >>> bool(3.5 < lo < 4 < hi < 4.5)
    True
    >>> fit_logistic([2, 3], [0, 0], [20, 20])["status"]
    'above'
    """
    T = np.asarray(Ts, dtype=float)
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    locs = np.round(np.arange(T.min() - 3, T.max() + 3 + 1e-9, 0.01), 10)
    widths = np.geomspace(0.02, 30.0, 240)
    z = (T[None, None, :] - locs[:, None, None]) / widths[None, :, None]
    # log p = -log(1 + e^-z), log(1 - p) = -log(1 + e^z), both evaluated stably
    ll = -(k * np.logaddexp(0.0, -z) + (n - k) * np.logaddexp(0.0, z)).sum(-1)
    best = float(ll.max())
    i, j = np.unravel_index(int(np.argmax(ll)), ll.shape)
    in_loc = locs[2 * (best - ll.max(1)) <= CHI2_95]
    in_w = widths[2 * (best - ll.max(0)) <= CHI2_95]
    interval = [float(in_loc.min()), float(in_loc.max())]
    separated = not bool(np.any((k > 0) & (k < n)))
    out: dict[str, object] = {
        "status": "fit",
        "location": float(locs[i]),
        "location95": interval,
        "width": float(widths[j]),
        "width95": [float(in_w.min()), float(in_w.max())],
        "separated": separated,
    }
    if k.sum() == 0 or k.sum() == n.sum():
        out.update(
            status="above" if k.sum() == 0 else "below", location=None, width=None,
            location95=[interval[0], None] if k.sum() == 0 else [None, interval[1]],
        )  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------
def _nested(fam: TaskFamily, T: int) -> TaskFamily:
    return TaskFamily(fam.A_star, fam.U_star[:T], fam.U_test)


def transition_cell(
    rng: RNGLike,
    *,
    d: int,
    k: int,
    Ts: Sequence[int],
    instances: int,
    solver: str = "SCS",
) -> dict[str, np.ndarray]:
    r"""Recovery of A* by LoRA-ML, the SDP and the nuclear norm over T, at one (d, k).

    Each instance is a population family drawn with ``max(Ts)`` tasks
    (:func:`loraml.theory.draw_family`, no genericity requirement: ``k(T+1) > d`` is allowed);
    at each T its first T tasks are used. LoRA-ML is the fast solver (spectral start, rank k).
    Two rules save solves, and ``"how"`` records where they were used:

    - the SDP, once it recovered an instance at two consecutive grid values of T, is counted as
      recovering it at every larger T: adding a task adds a constraint that A* satisfies, so the
      feasible set shrinks and A* stays optimal (a proof, ``INFERRED_RECOVERED``);
    - the nuclear norm is not solved where :func:`nuclear_obstruction` exceeds 1 (a proof of
      failure, ``OBSTRUCTED``); once it recovered an instance at two consecutive grid values it
      is counted as recovering it at every larger T the obstruction does not rule out (an
      *assumption*: adding a task can break the nuclear norm's recovery, as the obstruction
      shows on some instances; ``INFERRED_RECOVERED``).

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
        Source of every draw.
    d, k : int
        Dimension and perturbation rank.
    Ts : sequence of int
        Increasing task counts (each at least 2).
    instances : int
        Families drawn.
    solver : str
        cvxpy solver of both relaxations (SCS: at d = 20 Clarabel took 10-25 times longer on the
        nuclear norm, with the same recoveries on the instances timed).

    Returns
    -------
    dict
        ``"Ts"`` (nT,); ``"error"`` (3, instances, nT): relative base errors
        ``||A_hat - A*|| / ||A*||`` by method (:data:`METHODS`), NaN where not solved;
        ``"recovered"`` (3, instances, nT) in {0, 1}; ``"how"`` (3, instances, nT) (0 solved,
        1 inferred recovered, 2 obstructed); ``"gain"`` (2, instances, nT): how much better than
        A*'s the relaxation's optimum is, relative (SDP: ``(tr S - tr A*) / ||A*||_F``; nuclear:
        ``(f(A*) - f(A_hat)) / f(A*)``), NaN where not solved; ``"obstruction"``
        (instances, nT); ``"seconds"`` (3,): solve time per method.

    Examples
    --------
    >>> out = transition_cell(0, d=6, k=1, Ts=[2, 4], instances=2)
    >>> out["recovered"].shape
    (3, 2, 2)
    >>> out["recovered"][0, :, 1].tolist()  # LoRA-ML at T = 4
    [1, 1]
    """
    from loraml.theory.convex import nuclear_relaxation, sdp_relaxation

    rng = as_generator(rng)
    Ts = [int(T) for T in Ts]
    if len(Ts) == 0 or min(Ts) < 2 or any(b <= a for a, b in zip(Ts, Ts[1:], strict=False)):
        raise ValueError(f"Ts must be increasing task counts >= 2, got {Ts}")
    if not 1 <= k < d:
        raise ValueError(f"need 1 <= k < d, got d={d}, k={k}")
    nT = len(Ts)
    err = np.full((3, instances, nT), np.nan)
    rec = np.zeros((3, instances, nT), dtype=np.int8)
    how = np.zeros((3, instances, nT), dtype=np.int8)
    gain = np.full((2, instances, nT), np.nan)
    obstruction = np.full((instances, nT), np.nan)
    seconds = np.zeros(3)
    for i in range(instances):
        full = draw_family(d, max(Ts), k, rng)
        scale = float(np.linalg.norm(full.A_star))
        streak = [0, 0, 0]  # consecutive recoveries (SDP, nuclear norm)
        for j, T in enumerate(Ts):
            fam = _nested(full, T)
            q = fam.population()
            t0 = time.perf_counter()
            err[0, i, j] = np.linalg.norm(solve_lora_ml(q, k).A - fam.A_star) / scale
            seconds[0] += time.perf_counter() - t0
            rec[0, i, j] = err[0, i, j] <= RECOVER_RTOL
            obstruction[i, j] = nuclear_obstruction(fam.U_star)
            for m, solve in ((1, sdp_relaxation), (2, nuclear_relaxation)):
                if m == 2 and obstruction[i, j] > 1 + 1e-9:
                    how[m, i, j] = OBSTRUCTED
                    streak[m] = 0
                    continue
                if streak[m] >= 2:
                    rec[m, i, j], how[m, i, j] = 1, INFERRED_RECOVERED
                    continue
                t0 = time.perf_counter()
                res = solve(q, solver=solver)
                seconds[m] += time.perf_counter() - t0
                if res.ok and np.all(np.isfinite(res.A)):
                    err[m, i, j] = np.linalg.norm(res.A - fam.A_star) / scale
                    if m == 1:
                        gain[0, i, j] = (np.trace(res.A) - np.trace(fam.A_star)) / scale
                    else:
                        P = fam.perturbations()
                        f_star = float(sum(np.linalg.norm(p, "nuc") for p in P))
                        f_hat = float(sum(np.linalg.norm(B - res.A, "nuc") for B in fam.targets()))
                        gain[1, i, j] = (f_star - f_hat) / f_star
                rec[m, i, j] = bool(err[m, i, j] <= RECOVER_RTOL)  # NaN (no solution): False
                streak[m] = streak[m] + 1 if rec[m, i, j] else 0
    return {
        "Ts": np.array(Ts),
        "error": err,
        "recovered": rec,
        "how": how,
        "gain": gain,
        "obstruction": obstruction,
        "seconds": seconds,
    }


def summarise_cell(d: int, k: int, data: dict[str, np.ndarray]) -> dict:
    """The JSON summary of one :func:`transition_cell`: fractions, fits, predictions, checks.

    Parameters
    ----------
    d, k : int
        The cell's dimension and rank.
    data : dict
        :func:`transition_cell`'s output.

    Returns
    -------
    dict
        ``"rho"``, ``"Ts"``; per method (``"lora_ml"``, ``"sdp"``, ``"nuclear"``) the
        ``"fractions"`` (one :func:`loraml.theory.questions.fraction` per T) and the logistic
        ``"fit"`` (:func:`fit_logistic`); ``"nuclear_not_obstructed"`` (fractions: an upper bound
        on the nuclear norm's); the ``"predictions"`` (:func:`dof_tasks`, :func:`sdp_tasks`,
        :func:`nuclear_tasks`, LoRA-ML's T = 3 of Theorem 3 and the largest T of the paper's
        genericity condition ``k(T+1) <= d``); and honesty counts: ``"uncertified_failures"``
        (a relaxation solved, not recovering, and not better than A* by ``CERTIFY_RTOL``),
        ``"inferred"`` (entries decided by a rule of :func:`transition_cell`) and
        ``"lost"`` (instances a relaxation recovered at one T and not at a larger one:
        impossible for the SDP, so a nonzero SDP count is a solver error).

    Examples
    --------
    >>> out = transition_cell(0, d=6, k=1, Ts=[2, 4], instances=2)
    >>> s = summarise_cell(6, 1, out)
    >>> s["lora_ml"]["fractions"][1]["k"], s["predictions"]["genericity_max_T"]
    (2, 5)
    """
    Ts = [int(T) for T in data["Ts"]]
    rec, how, gain, err = data["recovered"], data["how"], data["gain"], data["error"]
    n = rec.shape[1]
    out: dict = {"rho": k / d, "Ts": Ts, "instances": n}
    for m, key in enumerate(("lora_ml", "sdp", "nuclear")):
        hits = [int(rec[m, :, j].sum()) for j in range(len(Ts))]
        out[key] = {
            "fractions": [fraction(h, n) for h in hits],
            "fit": fit_logistic(Ts, hits, [n] * len(Ts)),
        }
    free = [int(np.sum(data["obstruction"][:, j] <= 1 + 1e-9)) for j in range(len(Ts))]
    out["nuclear_not_obstructed"] = [fraction(f, n) for f in free]
    out["predictions"] = {
        "dof_T": dof_tasks(d, k),
        "sdp_T": sdp_tasks(d, k),
        "nuclear_T": float(nuclear_tasks(k / d)) if k / d < 0.5 else None,
        "lora_ml_T": 3,
        "genericity_max_T": d // k - 1,
    }
    with np.errstate(invalid="ignore"):
        failed = (how == SOLVED) & (rec == 0) & np.isfinite(err)
        uncertified = failed[1:] & ~(gain > CERTIFY_RTOL)
    out["uncertified_failures"] = {
        "sdp": int(uncertified[0].sum()),
        "nuclear": int(uncertified[1].sum()),
    }
    out["inferred"] = {
        "sdp_recovered": int(np.sum(how[1] == INFERRED_RECOVERED)),
        "nuclear_recovered": int(np.sum(how[2] == INFERRED_RECOVERED)),
        "nuclear_obstructed": int(np.sum(how[2] == OBSTRUCTED)),
        "entries": n * len(Ts),
    }
    out["lost"] = {
        key: int(sum(np.any(np.diff(rec[m, i].astype(int)) < 0) for i in range(n)))
        for m, key in ((1, "sdp"), (2, "nuclear"))
    }
    names = ("lora_ml", "sdp", "nuclear")
    out["seconds"] = {key: float(t) for key, t in zip(names, data["seconds"], strict=True)}
    return out


def check_convex_transition(
    rng: RNGLike,
    *,
    instances: int = 20,
    cells: Sequence[tuple[int, int, Sequence[int]]] = CT_CELLS,
    solver: str = "SCS",
) -> CheckResult:
    r"""Measurement: where the nuclear norm and the SDP start to recover A* (issue 13, question 5).

    For each cell ``(d, k, Ts)`` (:data:`CT_CELLS`: k/d = 0.1, 0.2, 0.3, 0.5 at d = 20 and 0.1 at
    d = 40) ``instances`` nested population families (:func:`transition_cell`): the fraction of
    instances recovering A* at each T for LoRA-ML, the SDP and the nuclear norm (95 % Wilson
    intervals), a logistic fit of each curve (:func:`fit_logistic`: location T50 and scale w with
    profile-likelihood intervals), and the predictions :func:`dof_tasks`, :func:`sdp_tasks`,
    :func:`nuclear_tasks` (derived in their docstrings), with the per-T fraction of instances
    that :func:`nuclear_obstruction` does not rule out.

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
        Source of every draw.
    instances : int
        Families per cell (the same families at every T of the cell).
    cells : sequence of (d, k, Ts)
        Dimension, rank and increasing task counts.
    solver : str
        cvxpy solver of the relaxations.

    Returns
    -------
    CheckResult
        A measurement: ``key`` ``"convex_transition"``, ``held`` None, ``numbers`` keyed
        ``"d=..,k=.."`` (:func:`summarise_cell`) plus ``"recover_rtol"``.

    Examples
    --------
    >>> res = check_convex_transition(0, instances=2, cells=[(6, 1, (2, 4))])
    >>> res.key, res.numbers["d=6,k=1"]["lora_ml"]["fractions"][1]["k"]
    ('convex_transition', 2)
    """
    rng = as_generator(rng)
    start = time.perf_counter()
    out: dict = {"recover_rtol": RECOVER_RTOL, "solver": solver}
    total = 0
    for d, k, Ts in cells:
        data = transition_cell(rng, d=d, k=k, Ts=Ts, instances=instances, solver=solver)
        out[f"d={d},k={k}"] = summarise_cell(d, k, data)
        total += instances
    return _measurement(
        "convex_transition",
        "Convex relaxations (SDP, nuclear norm) vs LoRA-ML: where recovery of A* starts in T",
        total,
        start,
        out,
    )

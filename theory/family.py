"""Task families of the linear setting and data drawn from them (arXiv 2410.22264 v1).

Task t has ground truth ``A_t* = A* + U_t* U_t*^T`` (symmetric PSD rank-k perturbation of a shared
``A*``); optionally ``A_t* = A* + U_t* V_t*^T`` (a general rank-k perturbation, beyond the theory).
Data of task t: ``x ~ N(0, Sigma)`` (``Sigma = I`` in the paper) and ``y = A_t* x + eps`` with
``eps ~ N(0, noise_std^2 I)``.

Convention
----------
``noise_std`` is the noise *standard deviation*. The released scripts' "sigma = 0.1" drew noise with
standard deviation ``sigma^2 = 0.01``: the paper's figures correspond to ``noise_std=0.01``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loraml.theory.objectives import Quadratics
from loraml.theory.reprs import compact_repr
from loraml.theory.rng import RNGLike, as_generator


@dataclass(frozen=True)
class TaskFamily:
    """A shared base and per-task low-rank perturbations.

    Attributes
    ----------
    A_star : ndarray, shape (d, d)
        Shared ground-truth base ``A*``.
    U_star : ndarray, shape (T, d, k)
        Retraining tasks' factors ``U_t*``.
    U_test : ndarray, shape (T_test, d, k)
        Unseen test tasks' factors.
    V_star, V_test : ndarray or None
        Right factors for general perturbations ``U V^T``; ``None`` means PSD ``U U^T``.
    """

    A_star: np.ndarray
    U_star: np.ndarray
    U_test: np.ndarray
    V_star: np.ndarray | None = None
    V_test: np.ndarray | None = None

    def __repr__(self) -> str:
        return compact_repr(self)

    @property
    def d(self) -> int:
        """Dimension of inputs and outputs."""
        return self.A_star.shape[0]

    @property
    def T(self) -> int:
        """Number of retraining tasks."""
        return self.U_star.shape[0]

    @property
    def k(self) -> int:
        """Rank of each task's perturbation."""
        return self.U_star.shape[2]

    def targets(self) -> np.ndarray:
        """Retraining ground truths ``A_t*``, shape (T, d, d)."""
        return _targets(self.A_star, self.U_star, self.V_star)

    def test_targets(self) -> np.ndarray:
        """Test-task ground truths, shape (T_test, d, d)."""
        return _targets(self.A_star, self.U_test, self.V_test)

    def perturbations(self) -> np.ndarray:
        """Retraining perturbations ``U_t* U_t*^T`` (or ``U_t* V_t*^T``), shape (T, d, d)."""
        return self.targets() - self.A_star

    def population(self, cov: np.ndarray | None = None) -> Quadratics:
        """Population excess losses of the retraining tasks (see :meth:`Quadratics.population`)."""
        return Quadratics.population(self.targets(), cov=cov)

    def genericity(self, include_test: bool = True) -> Genericity:
        """Check Remark 1 on ``[U_1*, ..., U_T*(, U_test*)]`` (see :func:`genericity`)."""
        blocks = [self.U_star, self.U_test] if include_test else [self.U_star]
        return genericity(np.concatenate(blocks, axis=0))


def _targets(A: np.ndarray, U: np.ndarray, V: np.ndarray | None) -> np.ndarray:
    right = U if V is None else V
    return A[None] + U @ np.swapaxes(right, -1, -2)


def draw_family(
    d: int,
    T: int,
    k: int,
    rng: RNGLike,
    *,
    n_test: int = 1,
    symmetric_base: bool = True,
    perturbation: str = "psd",
) -> TaskFamily:
    """Draw a task family as in the paper's synthetic experiments (arXiv 2410.22264 v1).

    ``A* = (G + G^T) / 2`` with ``G_ij ~ N(0, 1)`` (or ``A* = G`` when ``symmetric_base=False``),
    and ``U_t*`` with i.i.d. N(0, 1) entries for T retraining and ``n_test`` test tasks.

    Parameters
    ----------
    d, T, k : int
        Dimension, number of retraining tasks, perturbation rank (``1 <= k <= d``).
    rng : int, numpy.random.Generator or None
        Source of every random draw.
    n_test : int
        Number of unseen test tasks.
    symmetric_base : bool
        Symmetrise ``A*`` (the paper's default).
    perturbation : {"psd", "general"}
        ``"psd"``: ``U U^T`` as in the theory; ``"general"``: ``U V^T`` with an independent V.

    Returns
    -------
    TaskFamily

    Examples
    --------
    >>> import numpy as np
    >>> import loraml.theory as th
    >>> fam = th.draw_family(d=6, T=3, k=1, rng=np.random.default_rng(0))
    >>> fam.A_star.shape, fam.U_star.shape, fam.targets().shape
    ((6, 6), (3, 6, 1), (3, 6, 6))
    >>> fam.genericity().holds
    True
    """
    rng = as_generator(rng)
    if d < 1 or T < 1 or k < 1 or n_test < 0:
        raise ValueError(f"need d, T, k >= 1 and n_test >= 0, got d={d}, T={T}, k={k}")
    if k > d:
        raise ValueError(f"rank k={k} exceeds dimension d={d}; choose k <= d")
    if perturbation not in ("psd", "general"):
        raise ValueError(f"perturbation must be 'psd' or 'general', got {perturbation!r}")
    G = rng.standard_normal((d, d))
    A = (G + G.T) / 2 if symmetric_base else G
    U = rng.standard_normal((T, d, k))
    U_test = rng.standard_normal((n_test, d, k))
    if perturbation == "psd":
        return TaskFamily(A, U, U_test)
    V = rng.standard_normal((T, d, k))
    V_test = rng.standard_normal((n_test, d, k))
    return TaskFamily(A, U, U_test, V, V_test)


@dataclass(frozen=True)
class Genericity:
    """Outcome of the genericity check (Remark 1).

    Attributes
    ----------
    holds : bool
        The stacked columns are linearly independent (numerically: ``sigma_min > rtol sigma_max``).
    rank : int
        Numerical rank of the stacked matrix.
    columns : int
        Number of stacked columns, ``k (T + T_test)``.
    sigma_min_ratio : float
        Smallest over largest singular value of the stacked matrix (a margin; 0 when k(T+1) > d).
    """

    holds: bool
    rank: int
    columns: int
    sigma_min_ratio: float

    def __repr__(self) -> str:
        return compact_repr(self)


def genericity(U_blocks: np.ndarray, rtol: float = 1e-10) -> Genericity:
    """Check that the columns of ``[U_1, ..., U_m]`` are linearly independent (Remark 1).

    Needs ``k m <= d``; holds almost surely for Gaussian factors when it does.

    Parameters
    ----------
    U_blocks : ndarray, shape (m, d, k)

    Returns
    -------
    Genericity

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import genericity
    >>> U = np.random.default_rng(0).standard_normal((3, 6, 2))
    >>> genericity(U).holds, genericity(U).rank
    (True, 6)
    >>> genericity(np.stack([U[0], U[0]])).holds  # a repeated task is not generic
    False
    """
    m, d, k = U_blocks.shape
    stacked = np.concatenate(list(U_blocks), axis=1)
    s = np.linalg.svd(stacked, compute_uv=False)
    ratio = float(s[-1] / s[0]) if m * k <= d and s[0] > 0 else 0.0
    rank = int(np.sum(s > rtol * s[0])) if s[0] > 0 else 0
    return Genericity(rank == m * k, rank, m * k, ratio)


def sample_task_data(
    target: np.ndarray,
    N: int,
    noise_std: float,
    rng: RNGLike,
    cov: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``N`` samples ``x ~ N(0, cov)``, ``y = target x + eps``, ``eps ~ N(0, noise_std^2 I)``.

    Parameters
    ----------
    target : ndarray, shape (d_out, d)
    N : int
    noise_std : float
        Noise standard deviation (the paper's scripts used 0.01 where the text says sigma = 0.1).
    rng : int, numpy.random.Generator or None
    cov : ndarray, shape (d, d), optional
        Input covariance (identity when omitted).

    Returns
    -------
    X : ndarray, shape (d, N)
    Y : ndarray, shape (d_out, N)

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import sample_task_data
    >>> X, Y = sample_task_data(np.eye(3), N=5, noise_std=0.0, rng=np.random.default_rng(0))
    >>> X.shape, bool(np.allclose(X, Y))
    ((3, 5), True)
    """
    rng = as_generator(rng)
    if N < 1:
        raise ValueError(f"N must be >= 1, got {N}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    d = target.shape[1]
    X = rng.standard_normal((d, N))
    if cov is not None:
        X = np.linalg.cholesky(cov) @ X
    Y = target @ X + noise_std * rng.standard_normal((target.shape[0], N))
    return X, Y


def sample_family_data(
    targets: np.ndarray,
    N: int,
    noise_std: float,
    rng: RNGLike,
    cov: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``N`` samples for each of the tasks ``targets`` (shape (T, d, d)).

    Parameters
    ----------
    targets : ndarray, shape (T, d_out, d)
        Ground truths ``A_t*``.
    N : int
        Samples per task.
    noise_std : float
        Noise standard deviation.
    rng : numpy.random.Generator
    cov : ndarray, shape (d, d), optional
        Input covariance (identity when omitted).

    Returns
    -------
    X : ndarray, shape (T, d, N)
    Y : ndarray, shape (T, d, N)

    Examples
    --------
    >>> import numpy as np
    >>> import loraml.theory as th
    >>> rng = np.random.default_rng(0)
    >>> fam = th.draw_family(4, 3, 1, rng)
    >>> X, Y = th.sample_family_data(fam.targets(), N=10, noise_std=0.01, rng=rng)
    >>> X.shape, Y.shape
    ((3, 4, 10), (3, 4, 10))
    """
    rng = as_generator(rng)
    pairs = [sample_task_data(A, N, noise_std, rng, cov) for A in targets]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

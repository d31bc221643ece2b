"""Losses of the linear setting, all written as one per-task quadratic.

Every loss in the paper's linear setting is, for each task t, a quadratic in the task's matrix M::

    f_t(M) = 1/2 tr(M S_t M^T) - tr(M^T C_t) + 1/2 c_t

- Population excess loss (arXiv 2410.22264 v1), ``x ~ N(0, I)``: ``S_t = I``, ``C_t = A_t*``,
  ``c_t = ||A_t*||_F^2``, so ``f_t(M) = 1/2 ||M - A_t*||_F^2``. With input covariance Sigma:
  ``S_t = Sigma``, ``C_t = A_t* Sigma``, ``c_t = tr(A_t* Sigma A_t*^T)``.
- Finite-sample loss from data ``X_t, Y_t`` (d x N): ``S_t = X X^T / N``, ``C_t = Y X^T / N``,
  ``c_t = tr(Y Y^T) / N``, so ``f_t(M) = 1/(2N) ||Y_t - M X_t||_F^2``. These are sufficient
  statistics: every loss, gradient and solver costs O(d^2)-ish per task, independent of N.

Convention: finite-sample losses are per-sample *means*. The paper sums squared errors and divides
its gradients by N; the gradients agree.

The retraining objectives are sums over tasks:

- SR: ``F_SR(A) = sum_t f_t(A)``.
- LoRA-ML: ``F(A, U) = sum_t f_t(A + U_t U_t^T)`` (symmetric adapters, as in the theory), or
  ``F(A, U, V) = sum_t f_t(A + U_t V_t^T)`` (asymmetric option). With ``G_t = M_t S_t - C_t``:
  ``grad_A = sum_t G_t``, ``grad_{U_t} = (G_t + G_t^T) U_t`` (symmetric),
  ``grad_{U_t} = G_t V_t``, ``grad_{V_t} = G_t^T U_t`` (asymmetric).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from loraml.theory.reprs import compact_repr


def _t(M: np.ndarray) -> np.ndarray:
    return np.swapaxes(M, -1, -2)


@dataclass(frozen=True)
class Quadratics:
    """Per-task quadratic losses ``f_t(M) = 1/2 tr(M S_t M^T) - tr(M^T C_t) + 1/2 c_t``.

    Attributes
    ----------
    S : ndarray, shape (T, d, d), or None
        Input second moments; ``None`` means the identity for every task (population, isotropic),
        which the solvers exploit.
    C : ndarray, shape (T, d_out, d)
        Cross moments (population: the targets ``A_t*``).
    c : ndarray, shape (T,)
        Output second moments (population: ``||A_t*||_F^2``).
    N : ndarray of int, shape (T,), or None
        Sample sizes for finite-sample losses; ``None`` for population losses.
    m : ndarray, shape (T,), or None
        Per-task minimum values ``f_t(B_t)`` computed from residuals (:meth:`from_data` sets
        them from the data, ``1/(2N) ||Y_t - B_t X_t||_F^2``); ``None``: from the sufficient
        statistics, ``1/2 (c_t - tr(B_t S_t B_t^T))``, which cancels to ``~eps c_t``.
    """

    S: np.ndarray | None
    C: np.ndarray
    c: np.ndarray
    N: np.ndarray | None = None
    m: np.ndarray | None = None

    def __repr__(self) -> str:
        return compact_repr(self)

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def population(cls, targets: np.ndarray, cov: np.ndarray | None = None) -> Quadratics:
        """Population excess losses ``1/2 ||M - A_t*||_F^2`` (or Sigma-weighted).

        Parameters
        ----------
        targets : ndarray, shape (T, d, d)
            Ground truths ``A_t*``.
        cov : ndarray, shape (d, d), optional
            Input covariance Sigma; the identity when omitted.
        """
        targets = np.asarray(targets, dtype=float)
        if targets.ndim == 2:
            targets = targets[None]
        if cov is None:
            c = np.einsum("tij,tij->t", targets, targets)
            return cls(None, targets, c)
        C = targets @ cov
        c = np.einsum("tij,tij->t", C, targets)
        S = np.broadcast_to(cov, (targets.shape[0],) + cov.shape).copy()
        return cls(S, C, c)

    @classmethod
    def from_data(
        cls, X: np.ndarray | Sequence[np.ndarray], Y: np.ndarray | Sequence[np.ndarray]
    ) -> Quadratics:
        """Finite-sample losses ``1/(2N) ||Y_t - M X_t||_F^2`` from raw data.

        Parameters
        ----------
        X : ndarray, shape (T, d, N) or (d, N), or a sequence of (d, N_t) arrays
        Y : ndarray, shape (T, d_out, N) or (d_out, N), or a sequence of (d_out, N_t) arrays
        """
        if isinstance(X, np.ndarray) and X.ndim == 2:
            X, Y = X[None], np.asarray(Y)[None]
        S, C, c, N, B, m = [], [], [], [], [], []
        for x, y in zip(X, Y, strict=True):
            n = x.shape[1]
            S.append(x @ x.T / n)
            C.append(y @ x.T / n)
            c.append(float(np.sum(y * y)) / n)
            N.append(n)
            # Minimum from the residual itself: 1/2 (c - tr(B S B^T)) would cancel to ~eps c.
            B.append(C[-1] @ np.linalg.pinv(S[-1], hermitian=True))
            R = y - B[-1] @ x
            m.append(0.5 * float(np.sum(R * R)) / n)
        q = cls(np.stack(S), np.stack(C), np.array(c), np.array(N), np.array(m))
        object.__setattr__(q, "_B", np.stack(B))
        return q

    # -- shape ----------------------------------------------------------------------------------
    @property
    def T(self) -> int:
        """Number of tasks."""
        return self.C.shape[0]

    @property
    def d(self) -> int:
        """Input dimension."""
        return self.C.shape[2]

    @property
    def isotropic(self) -> bool:
        """True when every ``S_t`` is the identity (population, ``x ~ N(0, I)``)."""
        return self.S is None

    def task(self, t: int) -> Quadratics:
        """The single-task quadratic of task ``t``."""
        sl = slice(t, t + 1)
        return Quadratics(
            None if self.S is None else self.S[sl],
            self.C[sl],
            self.c[sl],
            None if self.N is None else self.N[sl],
            None if self.m is None else self.m[sl],
        )

    # -- evaluation -----------------------------------------------------------------------------
    # Losses are evaluated as f_t(M) = 1/2 tr((M - B_t) S_t (M - B_t)^T) + f_t(B_t) with the
    # per-task least-squares solution B_t = C_t S_t^+. The expanded form 1/2 tr(M S M^T) -
    # tr(M^T C) + c/2 cancels catastrophically near a zero-residual minimum (absolute precision
    # ~ eps * c), which would stop solvers long before they reach the minimiser.
    def least_squares(self) -> np.ndarray:
        """Per-task minimisers ``B_t = C_t S_t^+`` (population: the targets), (T, d_out, d)."""
        if self.S is None:
            return self.C
        S = self.S
        return self.memo(
            "_B",
            lambda: np.stack(
                [C @ np.linalg.pinv(s, hermitian=True) for C, s in zip(self.C, S, strict=True)]
            ),
        )

    def memo(self, name: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """``compute()``, computed once and kept on this object under ``name``.

        The object is frozen, so a value derived from its arrays cannot go stale; solvers keep
        per-task constants here that they would otherwise recompute at every iteration.

        Parameters
        ----------
        name : str
            Attribute name of the stored value (private: starts with an underscore).
        compute : callable
            Returns the value; called on the first request only.

        Returns
        -------
        ndarray
            The stored value.

        Examples
        --------
        >>> import numpy as np
        >>> q = Quadratics.population(np.eye(2)[None])
        >>> q.memo("_twice", lambda: 2 * q.C) is q.memo("_twice", lambda: 3 * q.C)
        True
        """
        value = self.__dict__.get(name)
        if value is None:
            value = compute()
            object.__setattr__(self, name, value)
        return value

    def minima(self) -> np.ndarray:
        """Per-task minimum values ``f_t(B_t)``, shape (T,) (population: zeros)."""
        if self.S is None:
            return np.zeros(self.T)
        if self.m is not None:
            return self.m
        B = self.least_squares()
        return np.maximum(0.5 * (self.c - np.einsum("tij,tij->t", B @ self.S, B)), 0.0)

    def times_S(self, M: np.ndarray) -> np.ndarray:
        """``M_t S_t`` for M of shape (d_out, d) (broadcast) or (T, d_out, d)."""
        if self.S is None:
            return np.broadcast_to(M, self.C.shape)
        return M @ self.S

    def losses(self, M: np.ndarray) -> np.ndarray:
        """Per-task losses ``f_t(M_t)``, shape (T,); M is (d_out, d) or (T, d_out, d)."""
        D = M - self.least_squares()
        return 0.5 * np.einsum("tij,tij->t", self.times_S(D), D) + self.minima()

    def grads(self, M: np.ndarray) -> np.ndarray:
        """Per-task gradients ``G_t = M_t S_t - C_t = (M_t - B_t) S_t``, shape (T, d_out, d)."""
        return self.times_S(M - self.least_squares())


# ---------------------------------------------------------------------------------------------
# LoRA-ML objective, gradient and Hessian-vector product
# ---------------------------------------------------------------------------------------------
def adapted(A: np.ndarray, U: np.ndarray, V: np.ndarray | None = None) -> np.ndarray:
    """Task matrices ``M_t = A + U_t U_t^T`` (or ``A + U_t V_t^T``), shape (T, d, d).

    Parameters
    ----------
    A : ndarray, shape (d, d)
        Base.
    U : ndarray, shape (T, d, k)
        Left factors.
    V : ndarray, shape (T, d, k), optional
        Right factors (asymmetric adapters); ``V = U`` when omitted.

    Returns
    -------
    ndarray, shape (T, d, d)

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import adapted
    >>> M = adapted(np.zeros((2, 2)), np.ones((3, 2, 1)))
    >>> M.shape, M[0].tolist()
    ((3, 2, 2), [[1.0, 1.0], [1.0, 1.0]])
    """
    return A[None] + U @ _t(U if V is None else V)


def lora_ml_loss(q: Quadratics, A: np.ndarray, U: np.ndarray, V: np.ndarray | None = None) -> float:
    """LoRA-ML objective ``F(A, U) = sum_t f_t(A + U_t U_t^T)`` (or ``U_t V_t^T``).

    Parameters
    ----------
    q : Quadratics
        Task losses (population or finite-sample).
    A : ndarray, shape (d, d)
    U : ndarray, shape (T, d, k)
    V : ndarray, shape (T, d, k), optional
        Right factors of asymmetric adapters.

    Returns
    -------
    float
        ``F(A, U)``.

    Examples
    --------
    Zero at the truth, positive elsewhere:

    >>> import numpy as np
    >>> import loraml.theory as th
    >>> fam = th.draw_family(4, 3, 1, np.random.default_rng(0))
    >>> q = fam.population()
    >>> bool(th.lora_ml_loss(q, fam.A_star, fam.U_star) < 1e-20)
    True
    >>> bool(th.lora_ml_loss(q, fam.A_star, 0 * fam.U_star) > 0)
    True
    """
    return float(np.sum(q.losses(adapted(A, U, V))))


def lora_ml_grad(
    q: Quadratics, A: np.ndarray, U: np.ndarray, V: np.ndarray | None = None
) -> tuple[np.ndarray, ...]:
    """Gradient of :func:`lora_ml_loss`.

    Parameters
    ----------
    q : Quadratics
        Task losses.
    A : ndarray, shape (d, d)
    U : ndarray, shape (T, d, k)
    V : ndarray, shape (T, d, k), optional
        Right factors of asymmetric adapters.

    Returns
    -------
    (grad_A, grad_U) for symmetric adapters: ``sum_t G_t`` and ``(G_t + G_t^T) U_t``;
    (grad_A, grad_U, grad_V) for asymmetric ones: ``sum_t G_t``, ``G_t V_t``, ``G_t^T U_t``.

    Examples
    --------
    A finite-difference check along a random direction of A:

    >>> import numpy as np
    >>> import loraml.theory as th
    >>> rng = np.random.default_rng(0)
    >>> fam = th.draw_family(4, 3, 1, rng)
    >>> q, A, U = fam.population(), rng.standard_normal((4, 4)), rng.standard_normal((3, 4, 1))
    >>> gA, gU = th.lora_ml_grad(q, A, U)
    >>> E, h = rng.standard_normal((4, 4)), 1e-6
    >>> fd = (th.lora_ml_loss(q, A + h * E, U) - th.lora_ml_loss(q, A - h * E, U)) / (2 * h)
    >>> bool(np.isclose(fd, np.sum(gA * E), rtol=1e-6))
    True
    """
    G = q.grads(adapted(A, U, V))
    if V is None:
        return G.sum(0), (G + _t(G)) @ U
    return G.sum(0), G @ V, _t(G) @ U


def lora_ml_grad_norm(
    q: Quadratics, A: np.ndarray, U: np.ndarray, V: np.ndarray | None = None
) -> float:
    """Euclidean norm of the whole gradient of :func:`lora_ml_loss` (all blocks together).

    ``sqrt(||grad_A||_F^2 + ||grad_U||_F^2)``, plus ``||grad_V||_F^2`` under the root for
    asymmetric adapters (:func:`lora_ml_grad`).

    Parameters
    ----------
    q : Quadratics
        Task losses.
    A : ndarray, shape (d, d)
    U : ndarray, shape (T, d, k)
    V : ndarray, shape (T, d, k), optional
        Right factors of asymmetric adapters.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> import loraml.theory as th
    >>> fam = th.draw_family(4, 3, 1, np.random.default_rng(0))
    >>> from loraml.theory.objectives import lora_ml_grad_norm
    >>> bool(lora_ml_grad_norm(fam.population(), fam.A_star, fam.U_star) < 1e-10)
    True
    """
    return float(np.sqrt(sum(np.sum(g * g) for g in lora_ml_grad(q, A, U, V))))


def lora_ml_hvp(
    q: Quadratics,
    A: np.ndarray,
    U: np.ndarray,
    dA: np.ndarray,
    dU: np.ndarray,
    V: np.ndarray | None = None,
    dV: np.ndarray | None = None,
) -> tuple[np.ndarray, ...]:
    """Hessian-vector product of :func:`lora_ml_loss` at ``(A, U[, V])`` along ``(dA, dU[, dV])``.

    With ``dM_t = dA + dU_t U_t^T + U_t dU_t^T`` and ``dG_t = dM_t S_t``:
    ``H_A = sum_t dG_t``, ``H_{U_t} = (dG_t + dG_t^T) U_t + (G_t + G_t^T) dU_t`` (symmetric);
    asymmetric: ``dM_t = dA + dU_t V_t^T + U_t dV_t^T``, ``H_{U_t} = dG_t V_t + G_t dV_t``,
    ``H_{V_t} = dG_t^T U_t + G_t^T dU_t``.

    Parameters
    ----------
    q : Quadratics
        Task losses.
    A : ndarray, shape (d, d)
    U : ndarray, shape (T, d, k)
        The point.
    dA : ndarray, shape (d, d)
    dU : ndarray, shape (T, d, k)
        The direction.
    V, dV : ndarray, shape (T, d, k), optional
        Right factors and their direction (asymmetric adapters).

    Returns
    -------
    tuple of ndarray
        ``(H_A, H_U)``, or ``(H_A, H_U, H_V)`` for asymmetric adapters.

    Examples
    --------
    The product matches a finite difference of the gradient:

    >>> import numpy as np
    >>> import loraml.theory as th
    >>> rng = np.random.default_rng(0)
    >>> fam = th.draw_family(4, 3, 1, rng)
    >>> q, A, U = fam.population(), rng.standard_normal((4, 4)), rng.standard_normal((3, 4, 1))
    >>> dA, dU, h = rng.standard_normal((4, 4)), rng.standard_normal((3, 4, 1)), 1e-6
    >>> HA, HU = th.lora_ml_hvp(q, A, U, dA, dU)
    >>> gp = th.lora_ml_grad(q, A + h * dA, U + h * dU)
    >>> gm = th.lora_ml_grad(q, A - h * dA, U - h * dU)
    >>> bool(np.allclose((gp[1] - gm[1]) / (2 * h), HU, rtol=1e-5, atol=1e-6))
    True
    """
    G = q.grads(adapted(A, U, V))
    if V is None:
        dM = dA[None] + dU @ _t(U) + U @ _t(dU)
        dG = q.times_S(dM)
        return dG.sum(0), (dG + _t(dG)) @ U + (G + _t(G)) @ dU
    if dV is None:
        raise ValueError("dV is required with asymmetric adapters (V given)")
    dM = dA[None] + dU @ _t(V) + U @ _t(dV)
    dG = q.times_S(dM)
    return dG.sum(0), dG @ V + G @ dV, _t(dG) @ U + _t(G) @ dU


# ---------------------------------------------------------------------------------------------
# Raw-data and population losses (for users and for checking the sufficient statistics)
# ---------------------------------------------------------------------------------------------
def excess_loss(M: np.ndarray, target: np.ndarray) -> float:
    """Population excess loss ``1/2 ||M - A_t*||_F^2`` for ``x ~ N(0, I)``.

    The expected squared error is this plus the noise constant ``d s^2 / 2`` (dropped, as in the
    paper).

    Parameters
    ----------
    M : ndarray, shape (d_out, d)
        The model's matrix.
    target : ndarray, shape (d_out, d)
        The task's ground truth.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import excess_loss
    >>> excess_loss(np.eye(2), np.zeros((2, 2)))
    1.0
    """
    return 0.5 * float(np.sum((M - target) ** 2))


def sample_loss(M: np.ndarray, X: np.ndarray, Y: np.ndarray) -> float:
    """Finite-sample loss ``1/(2N) ||Y - M X||_F^2`` (per-sample mean) of one task's data.

    Parameters
    ----------
    M : ndarray, shape (d_out, d)
        The model's matrix.
    X : ndarray, shape (d, N)
        Inputs.
    Y : ndarray, shape (d_out, N)
        Outputs.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import sample_loss
    >>> X = np.eye(2)
    >>> sample_loss(np.zeros((2, 2)), X, X)  # 1/(2 * 2) * ||X||_F^2
    0.5
    """
    R = Y - M @ X
    return 0.5 * float(np.sum(R * R)) / X.shape[1]

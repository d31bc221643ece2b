"""Distances that respect the symmetries of the problem.

``U U^T`` is invariant under ``U -> U Q`` with Q orthogonal, so factors are compared through
``U U^T`` or after orthogonal Procrustes alignment, never entrywise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from loraml.theory.reprs import compact_repr


@dataclass(frozen=True)
class BaseError:
    """Error of a retrained base.

    Attributes
    ----------
    fro : float
        ``||A_hat - A*||_F``.
    relative : float
        ``||A_hat - A*||_F / ||A*||_F``.
    singular_values : ndarray
        Singular values of ``A_hat - A*`` in decreasing order.
    """

    fro: float
    relative: float
    singular_values: np.ndarray

    def __repr__(self) -> str:
        return compact_repr(self)

    def rank(self, rtol: float = 1e-6) -> int:
        """Numerical rank: singular values above ``rtol * max(1, ||A*||_2-scale)``."""
        s = self.singular_values
        return int(np.sum(s > rtol * max(1.0, s[0] if s.size else 0.0)))


def base_error(A_hat: np.ndarray, A_star: np.ndarray) -> BaseError:
    """Compare a retrained base with the ground truth ``A*``.

    Parameters
    ----------
    A_hat, A_star : ndarray, shape (d, d)

    Returns
    -------
    BaseError
        ``||A_hat - A*||_F``, its ratio to ``||A*||_F`` and the singular values of ``A_hat - A*``.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import base_error
    >>> err = base_error(np.diag([1.0, 0.0]), np.zeros((2, 2)))
    >>> err.fro, err.singular_values
    (1.0, array([1., 0.]))
    """
    E = A_hat - A_star
    fro = float(np.linalg.norm(E))
    return BaseError(
        fro, fro / max(float(np.linalg.norm(A_star)), 1e-300), np.linalg.svd(E, compute_uv=False)
    )


def adapter_errors(
    U_hat: np.ndarray,
    U_star: np.ndarray,
    V_hat: np.ndarray | None = None,
    V_star: np.ndarray | None = None,
) -> np.ndarray:
    """Per-task ``||U_hat_t U_hat_t^T - U_t* U_t*^T||_F`` (or with right factors V).

    Parameters
    ----------
    U_hat, U_star : ndarray, shape (T, d, k)
    V_hat, V_star : ndarray, shape (T, d, k), optional

    Returns
    -------
    ndarray, shape (T,)

    Examples
    --------
    The error compares ``U U^T``, so it ignores the rotation ``U -> U Q``:

    >>> import numpy as np
    >>> from loraml.theory import adapter_errors
    >>> U = np.random.default_rng(0).standard_normal((2, 4, 2))
    >>> Q = np.array([[0.0, -1.0], [1.0, 0.0]])
    >>> bool(np.all(adapter_errors(U @ Q, U) < 1e-12))
    True
    """
    P_hat = U_hat @ np.swapaxes(U_hat if V_hat is None else V_hat, -1, -2)
    P_star = U_star @ np.swapaxes(U_star if V_star is None else V_star, -1, -2)
    return np.linalg.norm(P_hat - P_star, axis=(1, 2))


def procrustes_distance(U_hat: np.ndarray, U_star: np.ndarray) -> float:
    """``min_{Q orthogonal} ||U_hat Q - U_star||_F`` for one pair of (d, k) factors.

    Parameters
    ----------
    U_hat, U_star : ndarray, shape (d, k)
        The two factors.

    Returns
    -------
    float
        The distance after the best orthogonal alignment (orthogonal Procrustes).

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory import procrustes_distance
    >>> U = np.random.default_rng(0).standard_normal((4, 2))
    >>> Q = np.array([[0.0, -1.0], [1.0, 0.0]])
    >>> bool(procrustes_distance(U @ Q, U) < 1e-12)
    True
    """
    Q, _ = sla.orthogonal_procrustes(U_hat, U_star)
    return float(np.linalg.norm(U_hat @ Q - U_star))

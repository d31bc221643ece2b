"""Small linear-algebra kernels shared by the solvers: symmetrisation, PSD and rank truncations,
square roots of covariance-like matrices, and a range finder.

All functions are pure and vectorised over a leading task axis where noted.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla


def sym(M: np.ndarray) -> np.ndarray:
    """Symmetric part ``(M + M^T) / 2`` over the last two axes."""
    return 0.5 * (M + np.swapaxes(M, -1, -2))


def psd_factor(M: np.ndarray, k: int) -> np.ndarray:
    """Factor ``U`` of the best rank-k PSD approximation of ``sym(M)`` (batched over leading axes).

    Solves ``min_{U in R^{d x k}} ||U U^T - sym(M)||_F``: take the top-k eigenpairs of ``sym(M)``
    and clip negative eigenvalues to zero, ``U = V_k diag(sqrt(max(lambda_k, 0)))``.
    ``U`` is defined up to ``U -> U Q`` with ``Q`` orthogonal; this returns the eigenvector basis.
    For large d and small k only the top-k eigenpairs are computed.

    Parameters
    ----------
    M : ndarray, shape (..., d, d)
    k : int, 1 <= k <= d

    Returns
    -------
    U : ndarray, shape (..., d, k)
    """
    d = M.shape[-1]
    if d >= 256 and 8 * k <= d:
        flat = sym(M).reshape(-1, d, d)
        out = np.empty((flat.shape[0], d, k))
        for i, m in enumerate(flat):
            w, V = sla.eigh(m, subset_by_index=[d - k, d - 1])
            out[i] = V * np.sqrt(np.clip(w, 0.0, None))
        return out.reshape(M.shape[:-1] + (k,))
    w, V = np.linalg.eigh(sym(M))
    return V[..., -k:] * np.sqrt(np.clip(w[..., None, -k:], 0.0, None))


def low_rank_factors(R: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced factors ``(U, V)`` of the best rank-r approximation of ``R`` (Eckart-Young).

    ``U V^T = sum_{i<=r} sigma_i u_i v_i^T`` with ``U = U_r sqrt(Sigma_r)`` and
    ``V = V_r sqrt(Sigma_r)``.

    Parameters
    ----------
    R : ndarray, shape (d, d2)
    r : int, 0 <= r <= min(d, d2)

    Returns
    -------
    U : ndarray, shape (d, r)
    V : ndarray, shape (d2, r)
    """
    P, s, Qt = np.linalg.svd(R, full_matrices=False)
    root = np.sqrt(s[:r])
    return P[:, :r] * root, Qt[:r].T * root


def psd_sqrt(S: np.ndarray, rtol: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """Square root and pseudo-inverse square root of a symmetric PSD matrix.

    Eigenvalues below ``rtol * max eigenvalue`` are treated as zero (so a rank-deficient sample
    covariance, n < d, is handled by the pseudo-inverse).

    Returns
    -------
    root : ndarray, shape (d, d)
        ``S^{1/2}``.
    inv_root : ndarray, shape (d, d)
        ``(S^{1/2})^+``.
    """
    w, V = np.linalg.eigh(sym(S))
    keep = w > rtol * max(w.max(), 0.0)
    sq = np.sqrt(np.where(keep, w, 0.0))
    inv = np.where(keep, 1.0 / np.where(keep, sq, 1.0), 0.0)
    return (V * sq) @ V.T, (V * inv) @ V.T


def union_range(mats: np.ndarray, rng_seed: int = 0, rtol: float = 1e-11) -> np.ndarray | None:
    """Orthonormal basis of the union of the column spaces of ``mats[t]`` (randomized range finder).

    Draws ``Omega_t`` (seeded, deterministic), forms ``Y = sum_t mats[t] Omega_t``, orthonormalises,
    and verifies on fresh Gaussian probes ``Z`` that ``||Z - Q Q^T Z|| <= rtol ||Z||``, doubling the
    sketch until it holds. Returns ``None`` when the union is not low-dimensional (the basis
    would exceed d/2), so the caller can fall back to the full space.

    Parameters
    ----------
    mats : ndarray, shape (T, d, d)

    Returns
    -------
    Q : ndarray, shape (d, m) or None
    """
    T, d, _ = mats.shape
    scale = float(np.linalg.norm(mats))
    if scale == 0.0:
        return np.zeros((d, 0))
    gen = np.random.default_rng(rng_seed)
    width = 32
    while 2 * width <= d:
        Y = (mats @ gen.standard_normal((T, d, width))).sum(0)
        P, s, _ = np.linalg.svd(Y, full_matrices=False)
        Q = P[:, s > rtol * s[0]]
        if Q.shape[1] < width:
            # Verify on fresh Gaussian probes (a randomized a-posteriori check, 4 per task).
            Z = mats @ gen.standard_normal((T, d, 4))
            if np.linalg.norm(Z - Q @ (Q.T @ Z)) <= rtol * float(np.linalg.norm(Z)):
                return Q
        width *= 2
    return None

"""Instance files (``.npz``) for ``loraml solve`` and ``loraml verify``: reading with validation.

A population instance holds ``A_star`` (d x d) and ``U_star`` (T x d x k), optionally
``V_star`` (T x d x k, general perturbations ``U V^T``). A data instance holds ``X`` and ``Y``
(T x d x N) and the adapter rank as ``k`` (or ``--rank``), optionally ``A_star``/``U_star`` so
recovery can be reported.
Every problem is reported as :class:`InstanceError` with a message naming the key and the fix.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loraml.theory.family import TaskFamily
from loraml.theory.objectives import Quadratics
from loraml.theory.reprs import compact_repr


class InstanceError(ValueError):
    """An instance file that cannot be used; the message says which key and why."""


@dataclass(frozen=True)
class Instance:
    """A problem read from a file.

    Attributes
    ----------
    q : Quadratics
        Task losses (population or finite-sample).
    k : int or None
        Adapter rank from the file (``k`` key, or the width of ``U_star``).
    A_star : ndarray or None
        Ground-truth base, when known.
    U_star, V_star : ndarray or None
        Ground-truth perturbation factors, when known.
    kind : str
        ``"population"`` or ``"data"``.
    """

    q: Quadratics
    k: int | None
    A_star: np.ndarray | None
    U_star: np.ndarray | None
    V_star: np.ndarray | None
    kind: str

    def __repr__(self) -> str:
        return compact_repr(self)


def _array(z: np.lib.npyio.NpzFile, key: str, ndim: int) -> np.ndarray:
    a = z[key]
    if a.dtype.kind not in "biuf":
        raise InstanceError(f"key '{key}' must hold real numbers, got dtype {a.dtype}")
    if a.ndim != ndim:
        raise InstanceError(f"key '{key}' must have {ndim} dimensions, got shape {a.shape}")
    if a.size == 0:
        raise InstanceError(f"key '{key}' is empty (shape {a.shape})")
    a = a.astype(float)
    if not np.all(np.isfinite(a)):
        raise InstanceError(f"key '{key}' contains NaN or inf; clean the data first")
    return a


def load_instance(path: str | os.PathLike[str], rank: int | None = None) -> Instance:
    """Read and validate an instance file.

    Parameters
    ----------
    path : path-like
        An ``.npz`` file (see module docstring for the keys).
    rank : int, optional
        Adapter rank; overrides the file's ``k``.

    Returns
    -------
    Instance

    Raises
    ------
    InstanceError
        Unreadable file, missing keys, wrong shapes, NaN/inf, or a rank outside ``1..d``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from loraml.theory.io import load_instance
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "inst.npz"
    >>> rng = np.random.default_rng(0)
    >>> np.savez(path, A_star=np.eye(5), U_star=rng.standard_normal((3, 5, 1)))
    >>> inst = load_instance(path)
    >>> inst.kind, inst.k, inst.q.T
    ('population', 1, 3)
    """
    path = Path(path)
    if not path.is_file():
        raise InstanceError(f"instance file '{path}' does not exist")
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise InstanceError(f"cannot read '{path}' as a .npz file ({err})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise InstanceError(f"'{path}' holds a single array, not an .npz archive of named arrays")
    with z:
        keys = set(z.files)
        try:
            A = _array(z, "A_star", 2) if "A_star" in keys else None
            U = _array(z, "U_star", 3) if "U_star" in keys else None
            V = _array(z, "V_star", 3) if "V_star" in keys else None
            if {"X", "Y"} <= keys:
                kind = "data"
                X, Y = _array(z, "X", 3), _array(z, "Y", 3)
                k_file = int(_array(z, "k", 0)) if "k" in keys else None
            elif "X" in keys or "Y" in keys:
                missing = "Y" if "X" in keys else "X"
                raise InstanceError(f"data instance lacks key '{missing}': give both X and Y")
            elif A is not None and U is not None:
                kind = "population"
                k_file = U.shape[2]
            else:
                raise InstanceError(
                    f"'{path}' has keys {sorted(keys)}; need 'A_star' and 'U_star' "
                    "(population instance) or 'X' and 'Y' (data instance)"
                )
        except (KeyError, ValueError, TypeError) as err:
            if isinstance(err, InstanceError):
                raise
            raise InstanceError(f"cannot read '{path}': {err}") from None

    if A is not None and A.shape[0] != A.shape[1]:
        raise InstanceError(f"'A_star' must be square (d x d), got shape {A.shape}")
    d = A.shape[0] if A is not None else None
    if U is not None:
        if U.shape[0] < 1:
            raise InstanceError("'U_star' must hold at least one task (T >= 1)")
        if d is not None and U.shape[1] != d:
            raise InstanceError(f"'U_star' must be T x d x k with d={d}, got shape {U.shape}")
    if V is not None and (U is None or V.shape != U.shape):
        raise InstanceError(f"'V_star' must have the shape of 'U_star', got {V.shape}")

    if kind == "data":
        if X.shape != Y.shape:
            raise InstanceError(f"'X' and 'Y' must both be T x d x N, got {X.shape} and {Y.shape}")
        if d is not None and X.shape[1] != d:
            raise InstanceError(f"'X' has d={X.shape[1]} but 'A_star' is {d} x {d}")
        if U is not None and U.shape[0] != X.shape[0]:
            raise InstanceError(f"'U_star' has T={U.shape[0]} tasks but 'X' has T={X.shape[0]}")
        q = Quadratics.from_data(X, Y)
    else:
        assert A is not None and U is not None  # a population instance has both (checked above)
        family = TaskFamily(A, U, U[:0], V, None if V is None else V[:0])
        q = Quadratics.population(family.targets())
    k = rank if rank is not None else k_file
    if k is not None and not 1 <= k <= q.d:
        raise InstanceError(f"rank k={k} must satisfy 1 <= k <= d={q.d}; pass --rank")
    return Instance(q, k, A, U, V, kind)


def save_family(path: str | os.PathLike[str], family: TaskFamily) -> None:
    """Write a population instance (``A_star``, ``U_star`` and ``V_star`` when present).

    Parameters
    ----------
    path : path-like
        Destination ``.npz`` (written atomically).
    family : TaskFamily
        The family; its retraining tasks are written.

    Returns
    -------
    None

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> import loraml.theory as th
    >>> from loraml.theory.io import load_instance, save_family
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "family.npz"
    >>> fam = th.draw_family(5, 3, 1, np.random.default_rng(0))
    >>> save_family(path, fam)
    >>> bool(np.array_equal(load_instance(path).A_star, fam.A_star))
    True
    """
    arrays = {"A_star": family.A_star, "U_star": family.U_star}
    if family.V_star is not None:
        arrays["V_star"] = family.V_star
    write_npz(path, **arrays)


def write_npz(path: str | os.PathLike[str], **arrays: np.ndarray) -> None:
    """Write arrays to ``path`` atomically: a complete file appears, or nothing does.

    Parameters
    ----------
    path : path-like
        Destination file.
    **arrays : ndarray
        Arrays to store, by name.

    Returns
    -------
    None

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from loraml.theory.io import write_npz
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "out.npz"
    >>> write_npz(path, A_hat=np.zeros((2, 2)))
    >>> sorted(np.load(path).files)
    ['A_hat']
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub: **kwds vs allow_pickle
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

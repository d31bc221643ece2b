"""Instance files (``.npz``) for ``loraml solve`` and ``loraml verify``: reading with validation.

A population instance holds ``A_star`` (d x d) and ``U_star`` (T x d x k), optionally
``V_star`` (T x d x k, general perturbations ``U V^T``). A data instance holds ``X`` and ``Y``
(T x d x N) and the adapter rank as ``k`` (or ``--rank``), optionally ``A_star``/``U_star`` so
recovery can be reported.
Every problem is reported as :class:`InstanceError` with a message naming the key and the fix.

Files are never trusted: the archive's table of contents and each array's ``.npy`` header are read
first (no pickles), the memory the arrays and the losses built from them need is estimated from
those shapes (:func:`estimate_instance_bytes`) and refused above :func:`memory_limit` before
anything is allocated. Outputs are checked before any computation (:func:`check_output_path`) and
written atomically (:func:`write_npz`), never onto an input and never replacing a special file.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from loraml.theory.family import TaskFamily
from loraml.theory.objectives import Quadratics
from loraml.theory.reprs import compact_repr


class InstanceError(ValueError):
    """An instance file that cannot be used; the message says which key and why."""


class OutputPathError(ValueError):
    """An output path that cannot be written safely; the message says why and what to give."""


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


# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------
def memory_limit() -> int:
    """Bytes an instance may ask for: ``LORAML_MEMORY_LIMIT`` (bytes) or half the physical memory.

    Parameters
    ----------
    None
        Reads the environment variable ``LORAML_MEMORY_LIMIT`` and the machine's memory.

    Returns
    -------
    int

    Examples
    --------
    >>> memory_limit() > 0
    True
    """
    env = os.environ.get("LORAML_MEMORY_LIMIT")
    if env:
        try:
            return max(int(float(env)), 0)
        except ValueError:
            pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (AttributeError, ValueError, OSError):  # pragma: no cover (not POSIX)
        return 8 << 30


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g} GiB" if nbytes >= 2**27 else f"{nbytes / 2**20:.3g} MiB"


def estimate_instance_bytes(shapes: dict[str, tuple[int, ...]]) -> int:
    r"""Memory (bytes) that reading an instance and building its losses needs, from shapes only.

    Every array is held as float64 (8 bytes an entry). The losses
    (:class:`loraml.theory.objectives.Quadratics`) hold ``C`` (T x d x d) and, for data, ``S``
    (T x d x d); population targets ``A_t* = A* + U_t U_t^T`` are another T x d x d. The solvers
    hold a few d x d iterates and gradients besides: with ``6 d^2`` for those, the estimate is

    .. math:: 8 \left(\sum_{\text{arrays}} \text{size} + (2T + 6) d^2\right) \text{ bytes}.

    Parameters
    ----------
    shapes : dict of str to tuple of int
        Key -> shape as read from the ``.npy`` headers.

    Returns
    -------
    int

    Examples
    --------
    >>> estimate_instance_bytes({"X": (1, 40000, 1), "Y": (1, 40000, 1)}) > 12 * 10**9
    True
    """
    entries = sum(int(np.prod(s, dtype=object)) for s in shapes.values())
    d, T = 0, 1
    for key in ("X", "U_star"):
        if key in shapes and len(shapes[key]) == 3:
            T, d = max(T, int(shapes[key][0])), max(d, int(shapes[key][1]))
    if "A_star" in shapes and len(shapes["A_star"]) == 2:
        d = max(d, *map(int, shapes["A_star"]))
    return 8 * (entries + (2 * T + 6) * d * d)


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shapes and dtypes of an ``.npz``'s arrays from their headers, checked against the archive."""
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                raise InstanceError(f"'{path}' holds '{info.filename}', not only .npy arrays")
            key = info.filename[:-4]
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
                else:
                    raise InstanceError(f"key '{key}': unsupported .npy version {version}")
                header_len = fh.tell() if hasattr(fh, "tell") else None
            if dtype.hasobject:
                raise InstanceError(
                    f"key '{key}' holds Python objects (dtype {dtype}); store real numbers"
                )
            claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if header_len is not None and claimed != info.file_size - header_len:
                raise InstanceError(
                    f"key '{key}': its header claims shape {shape} ({_gib(claimed)}) but the "
                    f"file holds {_gib(max(info.file_size - header_len, 0))}; the file is corrupt"
                )
            out[key] = (tuple(int(n) for n in shape), dtype)
    return out


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
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


def _rank_key(z: np.lib.npyio.NpzFile) -> int:
    """The file's ``k``: a scalar integer (a bool or a non-integral number is refused)."""
    a = z["k"]
    if a.ndim != 0 or a.dtype.kind not in "iuf":
        raise InstanceError(
            f"key 'k' must be one integer (the adapter rank), got dtype {a.dtype}, shape {a.shape}"
        )
    v = a.item()
    if not np.isfinite(v) or v != int(v):
        raise InstanceError(f"key 'k' must be an integer (the adapter rank), got {v}")
    return int(v)


def _check_readable_file(path: Path, what: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InstanceError(f"{what} '{path}' does not exist") from None
    except OSError as err:
        raise InstanceError(f"cannot read {what} '{path}' ({err.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InstanceError(f"'{path}' is a folder; give the {what} itself")
    if not stat.S_ISREG(st.st_mode):
        raise InstanceError(f"'{path}' is not a regular file; give the {what} itself")
    if not os.access(path, os.R_OK):
        raise InstanceError(f"cannot read {what} '{path}' (permission denied)")


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
        Unreadable or corrupt file, missing keys, wrong shapes, NaN/inf, a rank outside
        ``1..d``, or an instance needing more memory than :func:`memory_limit`.

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
    if str(path) == "":
        raise InstanceError("the instance path is empty; give an .npz file")
    _check_readable_file(path, "instance file")
    try:
        headers = _npz_headers(path)
    except zipfile.BadZipFile as err:
        raise InstanceError(f"cannot read '{path}' as an .npz archive ({err})") from None
    except (OSError, ValueError, EOFError, zipfile.LargeZipFile, NotImplementedError) as err:
        if isinstance(err, InstanceError):
            raise
        raise InstanceError(f"cannot read '{path}' as a .npz file ({err})") from None
    need, limit = estimate_instance_bytes({k: s for k, (s, _) in headers.items()}), memory_limit()
    if need > limit:
        raise InstanceError(
            f"'{path}' needs about {_gib(need)} of memory (shapes "
            + ", ".join(f"{k} {s}" for k, (s, _) in sorted(headers.items()))
            + f"), more than the limit of {_gib(limit)} (half the memory; "
            "set LORAML_MEMORY_LIMIT in bytes to change it)"
        )
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise InstanceError(f"cannot read '{path}' as a .npz file ({err})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):  # pragma: no cover (headers were read as a zip)
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
                k_file = _rank_key(z) if "k" in keys else None
            elif "X" in keys or "Y" in keys:
                missing = "Y" if "X" in keys else "X"
                raise InstanceError(f"data instance lacks key '{missing}': give both X and Y")
            elif A is not None and U is not None:
                kind = "population"
                k_file = U.shape[2]
                if "k" in keys and _rank_key(z) != k_file:
                    raise InstanceError(
                        f"key 'k' = {_rank_key(z)} disagrees with the width of 'U_star' "
                        f"{U.shape}; drop 'k' or pass --rank"
                    )
            else:
                raise InstanceError(
                    f"'{path}' has keys {sorted(keys)}; need 'A_star' and 'U_star' "
                    "(population instance) or 'X' and 'Y' (data instance)"
                )
        except InstanceError:
            raise
        except (KeyError, ValueError, TypeError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise InstanceError(f"cannot read '{path}': the file is corrupt ({err})") from None

    if A is not None and A.shape[0] != A.shape[1]:
        raise InstanceError(f"'A_star' must be square (d x d), got shape {A.shape}")
    d = A.shape[0] if A is not None else (X.shape[1] if kind == "data" else None)
    if U is not None:
        if d is not None and U.shape[1] != d:
            raise InstanceError(f"'U_star' must be T x d x k with d={d}, got shape {U.shape}")
        if U.shape[2] > U.shape[1]:
            raise InstanceError(
                f"'U_star' of shape {U.shape} has rank k={U.shape[2]} > d={U.shape[1]}; "
                "the adapter rank must satisfy k <= d"
            )
    if V is not None and (U is None or V.shape != U.shape):
        raise InstanceError(f"'V_star' must have the shape of 'U_star', got {V.shape}")

    if kind == "data":
        if X.shape != Y.shape:
            raise InstanceError(f"'X' and 'Y' must both be T x d x N, got {X.shape} and {Y.shape}")
        if A is not None and X.shape[1] != A.shape[0]:
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


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def _existing_ancestor(path: Path) -> Path:
    p = path
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def check_output_path(
    path: str | os.PathLike[str],
    *,
    inputs: Iterable[str | os.PathLike[str]] = (),
    folder: bool = False,
    what: str = "--out",
) -> Path:
    """Check, before any work, that ``path`` can be written without destroying anything.

    Refused (with :class:`OutputPathError`, a one-line message naming ``what``): an empty path; a
    name longer than the file system allows; a path under a regular file; a missing or unwritable
    folder; an existing folder where a file is wanted (a file where a folder is wanted); the same
    file as one of ``inputs`` (compared by device and inode, so symbolic and hard links count);
    a named pipe, socket or block device. A character device (``/dev/null``) is accepted and
    written directly (:func:`write_npz` never replaces it).

    Parameters
    ----------
    path : path-like
        The output file (or folder with ``folder=True``; a missing folder will be created, so its
        nearest existing ancestor must be a writable folder).
    inputs : iterable of path-like
        Files the command reads; the output must not be one of them.
    folder : bool
        ``path`` names a folder instead of a file.
    what : str
        The argument's name, for the message.

    Returns
    -------
    Path

    Raises
    ------
    OutputPathError

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = check_output_path(Path(tmp) / "out.npz")
    ...     try:
    ...         check_output_path(tmp)
    ...     except OutputPathError as err:
    ...         print("refused")
    refused
    """
    raw = os.fspath(path)
    if raw == "":
        raise OutputPathError(f"{what} is empty; give a {'folder' if folder else 'file'} path")
    if "\0" in raw:
        raise OutputPathError(f"{what} contains a NUL character")
    p = Path(raw)
    anc = _existing_ancestor(p.absolute())
    limit = _name_max(anc if anc.is_dir() else anc.parent)
    long = [part for part in p.parts if len(os.fsencode(part)) > limit]
    if long or len(os.fsencode(os.path.abspath(raw))) >= 4096:
        raise OutputPathError(
            f"{what} '{raw[:60]}...' is too long (names up to {limit} bytes); give a shorter path"
        )
    try:
        st = os.stat(p)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise OutputPathError(
            f"{what} '{raw}' is under '{anc}', which is a file, not a folder"
        ) from None
    except OSError as err:
        raise OutputPathError(f"{what} '{raw}': {err.strerror}") from None
    if st is not None:
        if folder:
            if not stat.S_ISDIR(st.st_mode):
                raise OutputPathError(f"{what} '{raw}' exists and is not a folder; give a folder")
            if not os.access(p, os.W_OK | os.X_OK):
                raise OutputPathError(f"{what} '{raw}' is not writable; give a writable folder")
            return p
        if stat.S_ISDIR(st.st_mode):
            raise OutputPathError(f"{what} '{raw}' is a folder; give a file name inside it")
        for inp in inputs:
            try:
                ist = os.stat(inp)
            except OSError:
                continue
            if (ist.st_dev, ist.st_ino) == (st.st_dev, st.st_ino):
                raise OutputPathError(
                    f"{what} '{raw}' is the input '{os.fspath(inp)}'; give another file name"
                )
        if stat.S_ISCHR(st.st_mode):
            if not os.access(p, os.W_OK):
                raise OutputPathError(f"{what} '{raw}' is not writable")
            return p
        if not stat.S_ISREG(st.st_mode):
            kind = "a named pipe" if stat.S_ISFIFO(st.st_mode) else "a special file"
            raise OutputPathError(f"{what} '{raw}' is {kind}; give a regular file or /dev/null")
        if not os.access(p, os.W_OK):
            raise OutputPathError(f"{what} '{raw}' is read-only; give another file name")
        parent = Path(os.path.realpath(p)).parent
    else:
        if os.path.islink(p):  # a dangling symbolic link: writing would follow it somewhere
            raise OutputPathError(f"{what} '{raw}' is a broken symbolic link; remove it first")
        parent = p.absolute().parent
        if folder:
            parent = anc
    if not parent.exists():
        if anc.exists() and not anc.is_dir():
            raise OutputPathError(f"{what} '{raw}' is under '{anc}', which is a file, not a folder")
        raise OutputPathError(f"{what}: folder '{parent}' does not exist; create it first")
    if not parent.is_dir():
        raise OutputPathError(f"{what} '{raw}' is under '{parent}', which is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what}: folder '{parent}' is not writable; give another folder")
    if not folder:  # the permission bits can say yes where the file system says no (/proc, ro)
        probe = parent / f".{p.name}.tmp-{os.getpid()}"
        try:
            with open(probe, "xb"):
                pass
        except FileExistsError:
            pass
        except OSError as err:
            raise OutputPathError(
                f"{what}: cannot create a file in '{parent}' ({err.strerror}); give another folder"
            ) from None
        else:
            probe.unlink(missing_ok=True)
    return p


_TMP = re.compile(r"^\..+\.tmp-(\d+)$")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's live process (or an absurd number: leave it alone)
    return True


def clean_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove ``.NAME.tmp-PID`` files in ``folder`` left by a killed process (PID not running).

    Temporaries of live processes (including this one) are kept.

    Parameters
    ----------
    folder : path-like

    Returns
    -------
    list of Path
        The files removed.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / f".a.npz.tmp-{os.getpid()}").write_bytes(b"")
    ...     clean_stale_temporaries(tmp)
    []
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TMP.match(entry.name)
        if m and entry.is_file(follow_symlinks=False) and not _pid_alive(int(m.group(1))):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> None:
    """Write a file with ``write(fh)``: a complete file appears at ``path``, or nothing changes.

    A regular file (or a new one) is written to a hidden temporary beside it and renamed over it
    (a symbolic link is followed, so the link stays and its target is replaced). A character
    device (``/dev/null``) is written directly, never replaced; any other special file is refused.
    Temporaries left by killed processes in the folder are removed first
    (:func:`clean_stale_temporaries`).

    Parameters
    ----------
    path : path-like
    write : callable
        Writes the content to a binary file object.

    Returns
    -------
    None

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     atomic_write(Path(tmp) / "a.txt", lambda fh: fh.write(b"hello"))
    ...     (Path(tmp) / "a.txt").read_bytes(), sorted(p.name for p in Path(tmp).iterdir())
    (b'hello', ['a.txt'])
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        if stat.S_ISCHR(st.st_mode):  # /dev/null and the like: written, never replaced
            buffer = io.BytesIO()  # a zip archive needs a seekable file; a device is not one
            write(buffer)
            with open(path, "wb") as fh:
                fh.write(buffer.getvalue())
            return
        raise OutputPathError(f"'{path}' is not a regular file; refusing to replace it")
    target = Path(os.path.realpath(path))
    clean_stale_temporaries(target.parent)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, target)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OutputPathError(f"'{path}': no space left on the device") from None
        raise OutputPathError(f"cannot write '{path}' ({err.strerror or err})") from None
    finally:
        tmp.unlink(missing_ok=True)


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

    See :func:`atomic_write` (special files are written directly or refused, never replaced).

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
    atomic_write(path, lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]  # numpy stub

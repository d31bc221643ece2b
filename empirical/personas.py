"""PAML persona maps: a restricted unpickler and the persona-sentence normalisation they need.

A persona map (HLTCHKUST/PAML, ``data/ConvAI2/{train,valid,test}_persona_map``) is a pickled dict
``cluster id -> list of persona-sentence lists``; its sentences are Persona-Chat spelled (lower
case, ``i am`` where ConvAI2 writes ``i'm``, no trailing period) and each list is sorted. The
cluster ids are pickled numpy integer scalars, so the unpickler must allow numpy's scalar
reconstruction, and nothing else: a pickle can otherwise run arbitrary code on load.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np

from loraml.empirical.fbdialog import DataError

__all__ = [
    "CONTRACTION_MODES",
    "load_persona_map",
    "normalise_persona",
    "persona_key",
    "restricted_loads",
]

# Builtins that plain containers of strings and numbers can need.
_SAFE_BUILTINS = frozenset({"dict", "list", "tuple", "set", "frozenset", "str", "int", "float"})


def _numpy_scalar(dtype: np.dtype, data: bytes | None = None) -> np.generic:
    """``numpy.core.multiarray.scalar``, limited to numeric dtypes and raw bytes."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf":
        raise pickle.UnpicklingError(f"numpy scalar of dtype {dtype!r} refused (numeric only)")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("numpy scalar payload must be raw bytes of the dtype's size")
    return np.frombuffer(data, dtype=dtype)[0]


def _numpy_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """``numpy.dtype`` built only from a short type string such as ``'i4'`` or ``'f8'``."""
    if not isinstance(spec, str) or not re.fullmatch(r"[<>=|]?[biuf]\d{0,2}", spec):
        raise pickle.UnpicklingError(f"numpy dtype {spec!r} refused (numeric type strings only)")
    return np.dtype(spec)


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only safe builtins and numpy's numeric scalar reconstruction."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _SAFE_BUILTINS:
            return getattr(__import__("builtins"), name)
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "scalar":
            return _numpy_scalar
        if module == "numpy" and name == "dtype":
            return _numpy_dtype
        raise pickle.UnpicklingError(f"global '{module}.{name}' is forbidden in a persona map")


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` allowing only containers, strings, numbers and numeric numpy scalars.

    Parameters
    ----------
    data : bytes
        A pickle.

    Returns
    -------
    object
        The unpickled object.

    Raises
    ------
    pickle.UnpicklingError
        If the pickle refers to any other global (for example ``os.system``).
    """
    return _RestrictedUnpickler(io.BytesIO(data)).load()


# ConvAI2 contractions whose Persona-Chat spelling the maps use (all that occur in the valid
# file's personas: i'm, i've, i'll, they're and n't forms; won't and can't for completeness).
_CONTRACTIONS = (
    (re.compile(r"\bi've\b"), "i have"),
    (re.compile(r"\bi'll\b"), "i will"),
    (re.compile(r"\bi'd\b"), "i would"),
    (re.compile(r"\b(you|we|they)'re\b"), r"\1 are"),
    (re.compile(r"\bwon't\b"), "will not"),
    (re.compile(r"\bcan't\b"), "cannot"),
    (re.compile(r"n't\b"), " not"),
)
CONTRACTION_MODES = ("i'm", "all")


def normalise_persona(sentence: str, *, contractions: str = "i'm") -> str:
    """Persona-Chat spelling of a ConvAI2 persona sentence, as the PAML maps store it.

    Lower case, ``i'm`` -> ``i am``, surrounding blanks and one trailing period removed
    (``"i'm a stunt double as my second job."`` -> ``"i am a stunt double as my second job"``).

    Parameters
    ----------
    sentence : str
        A persona sentence as ConvAI2 writes it (without the ``your persona:`` prefix).
    contractions : {"i'm", "all"}
        ``"i'm"`` (default, the PAML maps' spelling): only ``i'm`` is expanded; 734 of the 1,000
        episodes of the ConvAI2 valid file then match ``valid_persona_map``. ``"all"``: also
        ``i've``, ``i'll``, ``they're``, ``don't`` and the other ``n't`` forms (the maps hold no
        apostrophes at all); then all 1,000 episodes match, in 100 clusters.

    Returns
    -------
    str
    """
    if contractions not in CONTRACTION_MODES:
        raise ValueError(f"contractions must be one of {CONTRACTION_MODES}, got {contractions!r}")
    s = sentence.strip().lower()
    s = re.sub(r"\bi'm\b", "i am", s)
    if contractions == "all":
        for pattern, replacement in _CONTRACTIONS:
            s = pattern.sub(replacement, s)
    if s.endswith("."):
        s = s[:-1].rstrip()
    return s


def persona_key(
    sentences: tuple[str, ...] | list[str], *, contractions: str = "i'm"
) -> tuple[str, ...]:
    """The map key of a persona: its normalised sentences (:func:`normalise_persona`), sorted."""
    return tuple(sorted(normalise_persona(s, contractions=contractions) for s in sentences))


def load_persona_map(path: str | os.PathLike) -> dict[tuple[str, ...], int]:
    """Read a PAML persona map with the restricted unpickler and invert it.

    Parameters
    ----------
    path : str or path-like
        A pickled dict ``cluster id -> list of persona-sentence lists``.

    Returns
    -------
    dict
        ``persona_key(sentences) -> cluster id`` (a Python int) for every persona list.

    Raises
    ------
    DataError
        If the file is not such a pickle, holds forbidden globals, or lists one persona under two
        clusters.
    """
    name = str(path)
    try:
        obj = restricted_loads(Path(path).read_bytes())
    except pickle.UnpicklingError as err:
        raise DataError(name, None, f"refused to unpickle persona map: {err}") from None
    except OSError as err:
        raise DataError(name, None, f"cannot read persona map: {err.strerror or err}") from None
    except Exception as err:  # noqa: BLE001 - a malformed pickle fails in many ways; one line
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(name, None, f"not a readable persona-map pickle: {detail}") from None
    if not isinstance(obj, dict):
        raise DataError(name, None, f"persona map must be a dict, got {type(obj).__name__}")
    inverse: dict[tuple[str, ...], int] = {}
    for cluster, personas in obj.items():
        if (
            isinstance(cluster, bool)
            or not isinstance(cluster, (int, np.integer))
            or not isinstance(personas, list)
        ):
            raise DataError(name, None, f"entry {cluster!r}: expected int -> list of lists")
        for persona in personas:
            if not isinstance(persona, list) or not all(isinstance(s, str) for s in persona):
                raise DataError(name, None, f"cluster {cluster}: a persona is not a list of str")
            key = persona_key(persona)
            if inverse.get(key, int(cluster)) != int(cluster):
                raise DataError(name, None, f"persona {key} is listed under two clusters")
            inverse[key] = int(cluster)
    return inverse

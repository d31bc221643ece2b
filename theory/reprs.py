"""Compact representations of the result objects: one line of shapes and key numbers.

A dataclass's default repr prints every array in full (a d = 20 :class:`LoraMLResult` ran to 153
lines). :func:`compact_repr` prints arrays as their shape, floats to four significant digits,
long strings cut short and large containers as their size; the arrays themselves stay one
attribute away (``result.A``).
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import numpy as np

MAX_STR = 60  # characters of a string field shown before it is cut
MAX_ITEMS = 4  # dict / sequence entries shown before only the size is


def _short(value: Any) -> str:
    """One field's value in a few characters."""
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return _short(value.item())
        return "<" + "x".join(str(n) for n in value.shape) + f" {value.dtype} array>"
    if isinstance(value, bool | np.bool_) or value is None:
        return repr(bool(value) if isinstance(value, np.bool_) else value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.4g}"
    if isinstance(value, str):
        return repr(value if len(value) <= MAX_STR else value[: MAX_STR - 3] + "...")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return compact_repr(value)
    if isinstance(value, dict):
        if len(value) <= MAX_ITEMS:
            return "{" + ", ".join(f"{k!r}: {_short(v)}" for k, v in value.items()) + "}"
        return f"<dict, {len(value)} keys>"
    if isinstance(value, list | tuple):
        if len(value) <= MAX_ITEMS:
            inner = ", ".join(_short(v) for v in value)
            return f"[{inner}]" if isinstance(value, list) else f"({inner})"
        return f"<{type(value).__name__}, {len(value)} items>"
    text = repr(value)
    return text if len(text) <= MAX_STR else f"<{type(value).__name__}>"


def compact_repr(obj: Any) -> str:
    """``ClassName(field=value, ...)`` on one line, arrays shown as their shape.

    Parameters
    ----------
    obj : dataclass instance
        The object to describe; every field with ``repr=True`` is shown, in declaration order.

    Returns
    -------
    str
        One line, e.g. ``BaseError(fro=0.01, relative=0.001, singular_values=<20 float64 array>)``.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory.metrics import BaseError
    >>> BaseError(fro=0.5, relative=0.125, singular_values=np.zeros(20))
    BaseError(fro=0.5, relative=0.125, singular_values=<20 float64 array>)
    """
    fields = (f for f in dataclasses.fields(obj) if f.repr)
    inner = ", ".join(f"{f.name}={_short(getattr(obj, f.name))}" for f in fields)
    return f"{type(obj).__name__}({inner})"

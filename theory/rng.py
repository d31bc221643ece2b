"""Random generators: every public function that draws accepts a seed or a Generator.

The convention of scikit-learn's ``check_random_state``, with numpy's
:func:`numpy.random.default_rng` in place of the legacy ``RandomState``: pass an int for a
reproducible stream, a :class:`numpy.random.Generator` to continue (and advance) your own stream,
or None for fresh operating-system entropy.
"""

from __future__ import annotations

import numbers
from typing import TypeAlias

import numpy as np

RNGLike: TypeAlias = int | np.integer | np.random.Generator | np.random.SeedSequence | None
"""What a public ``rng`` argument accepts: an int seed, a Generator, a SeedSequence or None."""


def as_generator(seed: RNGLike, name: str = "rng") -> np.random.Generator:
    """The :class:`numpy.random.Generator` that ``seed`` stands for.

    Parameters
    ----------
    seed : int, numpy.random.Generator, numpy.random.SeedSequence or None
        A Generator is returned as is (draws advance the caller's stream); an int (>= 0) or a
        SeedSequence seeds a new one; None draws a fresh seed from the operating system.
    name : str
        The argument's name, for the error message.

    Returns
    -------
    numpy.random.Generator

    Raises
    ------
    TypeError
        When ``seed`` is none of these (a float, a string, a legacy ``RandomState``).
    ValueError
        When ``seed`` is a negative int.

    Examples
    --------
    >>> import numpy as np
    >>> from loraml.theory.rng import as_generator
    >>> float(as_generator(0).standard_normal()) == float(as_generator(0).standard_normal())
    True
    >>> g = np.random.default_rng(1)
    >>> as_generator(g) is g
    True
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, np.random.SeedSequence):
        return np.random.default_rng(seed)
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        if int(seed) < 0:
            raise ValueError(f"{name} must be a non-negative int seed, not {int(seed)}")
        return np.random.default_rng(int(seed))
    raise TypeError(
        f"{name} must be an int seed, a numpy.random.Generator or None, "
        f"not {type(seed).__name__} (use numpy.random.default_rng(seed))"
    )

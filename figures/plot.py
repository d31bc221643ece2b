"""Common matplotlib style: readable in grey scale and at README width, no LaTeX.

Curves differ by line style and marker as well as colour, so a grey-scale print still tells them
apart. :func:`save` writes PNG (README) and PDF (papers) atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Colours of clearly different lightness (dark blue, orange, light green-blue, dark red, grey).
COLORS = ("#1b3a6b", "#e08a1e", "#5fb3a1", "#9e2a2b", "#6e6e6e")
MARKERS = ("o", "s", "^", "D", "v", "P")
# Method -> line style: solid for LoRA-ML, dashed for SR, and so on.
METHOD_STYLE = {
    "LoRA-ML": "-",
    "SR": "--",
    "SR (rank k)": "--",
    "SR (rank k(T+1))": "-.",
    "nuclear norm": "-.",
    "SDP": ":",
}

RC = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "lines.linewidth": 1.6,
    "lines.markersize": 5,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "savefig.dpi": 110,
    "text.usetex": False,
    "figure.constrained_layout.use": True,
}


def figure(ncols: int = 1, nrows: int = 1, width: float = 6.4, height: float = 4.0):
    """A new figure in the common style; returns ``(fig, axes)`` (axes squeezed)."""
    plt.rcParams.update(RC)  # type: ignore[arg-type]  # the stub's keys: a Literal of rc names
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False)
    if axes.size == 1:
        return fig, axes[0, 0]
    return fig, (axes[0] if nrows == 1 else axes)


def style(i: int) -> dict:
    """Colour and marker of the i-th curve group (a swept value)."""
    return {"color": COLORS[i % len(COLORS)], "marker": MARKERS[i % len(MARKERS)]}


def band_note(runs: int, what: str = "runs") -> str:
    """Caption of every :func:`median_band` figure: ``median, band: min-max over N runs``."""
    return f"median, band: min-max over {runs} {what}"


def median_band(
    ax,
    x: np.ndarray,
    runs: np.ndarray,
    *,
    label: str | None = None,
    color: str,
    marker: str,
    linestyle: str = "-",
    markevery: int | None = None,
    filled: bool = True,
    alpha: float = 0.15,
):
    """Median over runs as the line, with the min-max band over runs shaded behind it.

    On log axes an arithmetic mean is pulled towards the largest run (one bad run can lift it
    above every other run), so every figure that summarises runs draws the median and the full
    min-max range instead; captions say so with :func:`band_note`.

    Parameters
    ----------
    ax : matplotlib Axes
    x : ndarray, shape (m,)
    runs : ndarray, shape (runs, m)
        One row per run.
    label : str, optional
        Legend entry of the median line.
    color, marker, linestyle : str
    markevery : int, optional
        Marker spacing (about 8 markers per curve when omitted).
    filled : bool
        Filled markers (open markers otherwise, which tell methods apart in grey scale).
    alpha : float
        Opacity of the band.

    Returns
    -------
    (Line2D, PolyCollection)
        The median line and the band.
    """
    x = np.asarray(x)
    runs = np.atleast_2d(np.asarray(runs, dtype=float))
    if runs.shape[-1] != x.shape[0]:
        raise ValueError(f"runs has {runs.shape[-1]} points per run, x has {x.shape[0]}")
    shade = ax.fill_between(x, runs.min(0), runs.max(0), color=color, alpha=alpha, linewidth=0)
    (line,) = ax.plot(
        x,
        np.median(runs, axis=0),
        label=label,
        color=color,
        marker=marker,
        linestyle=linestyle,
        markevery=markevery or max(1, len(x) // 8),
        markerfacecolor=color if filled else "white",
    )
    return line, shade


def save(fig, stem: Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` atomically and close the figure."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.{fmt}")
        try:
            fig.savefig(tmp, format=fmt, metadata=_metadata(fmt))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        paths.append(path)
    plt.close(fig)
    return paths


def _metadata(fmt: str) -> dict:
    # No creation dates, so regenerated files are byte-stable where the backend allows it.
    if fmt == "pdf":
        return {"CreationDate": None, "Producer": None}
    if fmt == "png":
        return {"Software": None}
    return {}

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


def band(
    ax,
    x: np.ndarray,
    runs: np.ndarray,
    *,
    label: str,
    color: str,
    marker: str,
    linestyle: str = "-",
    center: str = "mean",
    markevery: int | None = None,
    filled: bool = True,
) -> None:
    """Centre curve (mean or median over runs) with the min-max band over runs.

    Parameters
    ----------
    ax : matplotlib Axes
    x : ndarray, shape (m,)
    runs : ndarray, shape (runs, m)
    label, color, marker, linestyle : str
    center : {"mean", "median"}
    markevery : int, optional
        Marker spacing (about 8 markers per curve when omitted).
    filled : bool
        Filled markers (open markers otherwise, which tell methods apart in grey scale).
    """
    mid = runs.mean(0) if center == "mean" else np.median(runs, axis=0)
    ax.fill_between(x, runs.min(0), runs.max(0), color=color, alpha=0.15, linewidth=0)
    ax.plot(
        x,
        mid,
        label=label,
        color=color,
        marker=marker,
        linestyle=linestyle,
        markevery=markevery or max(1, len(x) // 8),
        markerfacecolor=color if filled else "white",
    )


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

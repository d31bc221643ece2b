"""Cached figure data: one ``.npz`` (the numbers) and one ``.json`` (settings, key, timing).

A figure's data is valid for one *key*: the hash of its name, settings, seed and code version
(:func:`settings_key`). A second run with the same key only redraws. Every write is atomic (a
complete file appears, or nothing does), so an interrupted run never leaves a result that looks
finished. Runs of a figure are also cached one by one in a ``.partial`` folder, so an interrupted
long run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from loraml.theory.io import atomic_write, write_npz


def settings_key(name: str, settings: dict[str, Any], seed: int, version: str) -> str:
    """Hash of everything that determines a figure's data.

    Parameters
    ----------
    name : str
        Figure name.
    settings : dict
        JSON-serialisable settings (protocol sizes, sweep values, steps, ...).
    seed : int
        The figure's root seed.
    version : str
        Code version of the figure's computation (bumped when the computation changes).

    Returns
    -------
    str
        16 hexadecimal digits.
    """
    blob = json.dumps(
        {"name": name, "settings": settings, "seed": seed, "version": version}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def warn(message: str) -> None:
    """Tell the user (stderr, one line) that a cached file was unusable and will be recomputed."""
    print(f"loraml figures: warning: {message}", file=sys.stderr)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (see :func:`atomic_write`)."""
    text = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
    atomic_write(path, lambda fh: fh.write(text))


# What a truncated or corrupt cache file raises when read.
_UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def load(stem: Path, key: str) -> dict[str, np.ndarray] | None:
    """Load ``stem.npz`` if ``stem.json`` records the same key; ``None`` otherwise.

    A truncated or corrupt data file is reported (:func:`warn`) and treated as absent, so the
    figure is recomputed.
    """
    meta_path, data_path = stem.with_suffix(".json"), stem.with_suffix(".npz")
    if not (meta_path.exists() and data_path.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        warn(f"{meta_path} is unreadable; recomputing {stem.name}")
        return None
    if not isinstance(meta, dict) or meta.get("key") != key:
        return None
    try:
        with np.load(data_path, allow_pickle=False) as z:
            if str(z["key"]) != key:  # the .npz belongs to another key (partial overwrite)
                return None
            return {name: z[name] for name in z.files if name != "key"}
    except _UNREADABLE as err:
        warn(f"{data_path} is truncated or corrupt ({err}); recomputing {stem.name}")
        return None


def save(stem: Path, key: str, data: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write ``stem.npz`` (data, plus the key) and then ``stem.json`` (meta, plus the key)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_npz(stem.with_suffix(".npz"), key=np.array(key), **data)
    write_json(stem.with_suffix(".json"), {**meta, "key": key})


def partial_dir(stem: Path, key: str) -> Path:
    """Folder holding the finished runs of an unfinished computation of ``stem``."""
    return stem.parent / ".partial" / f"{stem.name}-{key}"


def load_run(folder: Path, index: int) -> tuple[dict[str, np.ndarray], float] | None:
    """A finished run's arrays and compute seconds, or ``None`` when that run has not finished.

    A truncated or corrupt run file is reported (:func:`warn`), removed and treated as unfinished.
    """
    path = folder / f"run-{index:05d}.npz"
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            result = {name: z[name] for name in z.files if name != _SECONDS}
            seconds = float(z[_SECONDS]) if _SECONDS in z.files else 0.0
    except _UNREADABLE as err:
        warn(f"{path} is truncated or corrupt ({err}); recomputing that run")
        path.unlink(missing_ok=True)
        return None
    return result, seconds


# Key of a run file holding the run's compute time (so a resumed figure adds the earlier part).
_SECONDS = "__compute_seconds__"


def save_run(folder: Path, index: int, result: dict[str, np.ndarray], seconds: float = 0.0) -> None:
    """Store one finished run (and its compute ``seconds``) atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    write_npz(folder / f"run-{index:05d}.npz", **result, **{_SECONDS: np.array(seconds)})


def drop_partial(folder: Path) -> None:
    """Remove a computation's per-run cache once its data file is written."""
    shutil.rmtree(folder, ignore_errors=True)
    parent = folder.parent
    if parent.name == ".partial" and parent.exists() and not any(parent.iterdir()):
        parent.rmdir()

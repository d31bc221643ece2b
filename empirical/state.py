"""Run-directory state: checkpoints, resumption records and the settings/tasks a directory holds.

Checkpoints hold tensors and plain data only, load with ``torch.load(weights_only=True)`` and
carry a SHA-256 checksum file beside them (:func:`save_checkpoint`, :func:`load_checkpoint`,
:class:`CheckpointError`); :func:`write_json` writes JSON atomically; the torch RNG state is
captured and restored for exact resumption. ``config.json``, ``tasks.json`` and ``data.json`` make
a rerun in the same directory use the same settings, tasks and prepared data
(:func:`_check_config`, :func:`_check_tasks`, :func:`_check_data`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from loraml.empirical.config import RunConfig, _sha256

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from loraml.empirical.data import Task, TaskSplit


class CheckpointError(ValueError):
    """A checkpoint that fails its checksum, is truncated, or holds anything but tensors and
    plain data (a pickle that would run code is refused, never executed)."""


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_digests(path: Path) -> list[str]:
    """The digests a checksum file allows (one; two while a checkpoint is being replaced)."""
    try:
        stored = json.loads(path.read_text())
        digests = stored["sha256"]
        if not isinstance(digests, list) or not all(isinstance(d, str) for d in digests):
            raise TypeError("sha256 is not a list of strings")
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"{path}: unreadable checksum file ({err}); delete it") from None
    return digests


def save_checkpoint(obj: dict[str, Any], path: Path) -> None:
    """Save tensors and plain data to ``path`` with a SHA-256 checksum beside it (``.sha256``).

    Crash-safe: the new file is written aside, the checksum file then lists the new and the old
    digest, the new file replaces the old, and the checksum file is rewritten with the new digest
    only; a kill at any moment leaves a checkpoint that matches its checksum file.
    """
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    digest = _sha256(tmp)
    side = _checksum_path(path)
    old = _read_digests(side)[:1] if side.exists() and path.exists() else []
    write_json({"sha256": [digest, *old]}, side)
    os.replace(tmp, path)
    write_json({"sha256": [digest]}, side)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, verifying it first.

    Only tensors and plain containers load (``torch.load(weights_only=True)``): a crafted file
    cannot run code. A checkpoint without a checksum file (written before checksums existed)
    loads with a note on stderr.

    Raises
    ------
    CheckpointError
        One line naming the file: checksum mismatch, truncated/corrupt, or refused content.
    """
    side = _checksum_path(path)
    if side.exists():
        if _sha256(path) not in _read_digests(side):
            raise CheckpointError(
                f"{path} does not match its checksum ({side.name}): corrupt or truncated; "
                "delete both files to recompute that part of the run"
            )
    else:
        print(f"note: {path} has no checksum file (an older run); loading it", file=sys.stderr)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure is the file's: report it in one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path} is not a loadable checkpoint (only tensors and plain data are accepted: "
            f"{first[:200]}); delete it to recompute that part of the run"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a checkpoint dict; delete it")
    return obj


def encoder_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of an encoder's weights: each tensor's name, dtype, shape and bytes, by name.

    Unlike a checkpoint file's checksum it names the content, not one serialization of it, so
    two retrainings that produced the same weights bit for bit have the same digest wherever
    they were saved. Fine-tuning records carry the digest of the encoder they were fine-tuned
    from (``base_sha256``; :func:`check_finetune_records`).

    Parameters
    ----------
    state : mapping of str to torch.Tensor
        A state dict (any dtype, any device).

    Returns
    -------
    str
        64 hexadecimal digits.

    Examples
    --------
    >>> a = {"w": torch.zeros(2, 3), "b": torch.ones(3)}
    >>> encoder_digest(a) == encoder_digest({"b": torch.ones(3), "w": torch.zeros(2, 3)})
    True
    >>> encoder_digest(a) == encoder_digest({"w": torch.zeros(3, 2), "b": torch.ones(3)})
    False
    """
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}\0{t.dtype}\0{tuple(state[name].shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_finetune_records(records: Sequence[dict[str, Any]], digest: str, path: Path) -> None:
    """Refuse fine-tuning records that were fine-tuned from another encoder than ``digest``.

    A run resumes by fine-tuning only the tasks without a record in ``path``
    (``finetune-<method>.json``). Those records are valid only if the retrained encoder is,
    bit for bit, the one they came from; that holds in the directory they were written in, but
    not for records copied to a directory that retrains anew on another machine or software.
    Records written before the field existed carry no ``base_sha256`` and cannot be checked;
    they are accepted as before.

    Parameters
    ----------
    records : sequence of dict
        The records read from ``path``.
    digest : str
        :func:`encoder_digest` of the retrained encoder the run fine-tunes from.
    path : Path
        Where the records were read (named in the error).

    Raises
    ------
    ValueError
        One line naming ``path``, the two digests and the fix (delete ``path``).

    Examples
    --------
    >>> records = [{"task": "persona-1", "base_sha256": "a" * 64}, {"task": "persona-2"}]
    >>> check_finetune_records(records, "a" * 64, Path("finetune-sr.json"))  # the same encoder
    >>> check_finetune_records(records, "b" * 64, Path("finetune-sr.json"))
    Traceback (most recent call last):
    ValueError: finetune-sr.json holds records fine-tuned from another retrained encoder ...
    """
    other = sorted({r["base_sha256"] for r in records if r.get("base_sha256", digest) != digest})
    if other:
        raise ValueError(
            f"{path} holds records fine-tuned from another retrained encoder (sha256 "
            f"{other[0][:12]}; this one is {digest[:12]}): delete {path.name} to fine-tune "
            "every task from this encoder"
        )


def write_json(obj: object, path: Path) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (temporary file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


class WallLedger:
    """The wall time a run directory has cost over all its invocations, kept in ``wall.json``.

    A long run is often killed (end of a session, a machine taken back) and resumed with the
    same command, so the wall time of the last invocation says little about the run. The ledger
    appends one entry per invocation, ``{"started": ISO time (UTC), "seconds": ...}`` (with
    ``"versions"`` where given: a run resumed on another machine may run on other library
    versions, and its results then say so), and a
    background thread rewrites it every ``interval`` seconds, so a process killed with SIGKILL
    loses at most ``interval`` seconds of its count. A directory that already held seed
    directories when its first ledger was opened was run by code without the ledger (or the file
    was deleted): its total is then unknown (:meth:`total` returns None), never guessed.

    Parameters
    ----------
    out : Path
        The run directory (it exists).
    interval : float
        Seconds between two rewrites of ``wall.json``.
    write : bool
        False in every process but the main one of a multi-process run: the ledger then only
        times this invocation.
    t0 : float, optional
        ``time.perf_counter()`` at which this invocation began (default: when it is started).
    versions : dict of str to str, optional
        The library versions this invocation runs on (:func:`loraml.empirical.report.versions`),
        kept in its entry.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as d, WallLedger(Path(d)) as ledger:
    ...     pass
    >>> ledger.invocations, ledger.total() is not None
    (1, True)
    """

    FILE = "wall.json"

    def __init__(
        self,
        out: Path,
        *,
        interval: float = 60.0,
        write: bool = True,
        t0: float | None = None,
        versions: dict[str, str] | None = None,
    ) -> None:
        self.path = Path(out) / self.FILE
        self.versions = versions
        self.interval = interval
        self.write = write
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._beat, name="wall-ledger", daemon=True)
        self._earlier: list[dict[str, Any]] = []
        self.unrecorded = False
        try:
            stored = json.loads(self.path.read_text())
            self._earlier = [
                {"started": str(e["started"]), "seconds": float(e["seconds"])}
                | ({"versions": dict(e["versions"])} if e.get("versions") else {})
                for e in stored["invocations"]
            ]
            self.unrecorded = bool(stored.get("earlier_unrecorded", False))
        except FileNotFoundError:
            self.unrecorded = any(p.is_dir() and any(p.iterdir()) for p in Path(out).glob("seed*"))
        except (OSError, ValueError, TypeError, KeyError):
            # an unreadable ledger: the time it held is unknown, not an error of the run
            self._earlier, self.unrecorded = [], True
        now = time.perf_counter()
        self._t0 = now if t0 is None else t0
        self._t1: float | None = None  # set by close(): the count stops there
        ago = datetime.timedelta(seconds=now - self._t0)
        started = datetime.datetime.now(datetime.timezone.utc) - ago
        self._started = started.strftime("%Y-%m-%dT%H:%M:%SZ")

    def start(self) -> WallLedger:
        """Record this invocation and keep its entry current until :meth:`close`."""
        self._save()
        if self.write:
            self._thread.start()
        return self

    def close(self) -> None:
        """Write this invocation's final count and stop the background thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._t1 is None:
            self._t1 = time.perf_counter()
        self._save()

    def __enter__(self) -> WallLedger:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            self._save()

    @property
    def seconds(self) -> float:
        """Wall seconds of this invocation so far (until :meth:`close`)."""
        return (time.perf_counter() if self._t1 is None else self._t1) - self._t0

    @property
    def invocations(self) -> int:
        """Invocations the ledger counts, this one included."""
        return len(self._earlier) + 1

    def versions_by_invocation(self) -> list[dict[str, str] | None]:
        """Each invocation's library versions in order, this one last; None where an entry was
        written without them (by code that predates the field)."""
        return [e.get("versions") for e in self._earlier] + [self.versions]

    def total(self) -> float | None:
        """Wall seconds over all invocations, or None where earlier ones were not recorded."""
        if self.unrecorded:
            return None
        return sum(e["seconds"] for e in self._earlier) + self.seconds

    def _save(self) -> None:
        if not self.write:
            return
        entry: dict[str, Any] = {"started": self._started, "seconds": round(self.seconds, 3)}
        if self.versions:
            entry["versions"] = self.versions
        with self._lock:
            write_json(
                {"earlier_unrecorded": self.unrecorded, "invocations": [*self._earlier, entry]},
                self.path,
            )


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


#: Settings that say what to run rather than how: a run directory may be resumed with other
#: retraining methods (each method's retraining and fine-tuning are seeded on their own, so
#: adding one leaves the others' numbers unchanged).
_WHAT_TO_RUN = ("methods",)


def _check_config(out: Path, cfg: RunConfig, write: bool) -> None:
    """Refuse a run directory holding other settings; with ``write``, record ours.

    A setting the stored file lacks (written before the setting existed) counts as its default,
    so older run directories still resume; :data:`_WHAT_TO_RUN` settings may differ.
    """
    path = out / "config.json"
    current = cfg.to_json()
    stored = json.loads(path.read_text()) if path.exists() else None
    if stored is not None:
        defaults = RunConfig().to_json()
        diff = sorted(
            k for k in current if k not in _WHAT_TO_RUN and stored.get(k, defaults[k]) != current[k]
        )
        if diff:
            raise ValueError(
                f"--out {out} holds a run with other settings ({', '.join(diff)}); "
                "use another --out or the same settings to resume"
            )
    if write and stored != current:
        write_json(current, path)


def _check_tasks(out: Path, split: TaskSplit, source: str, write: bool) -> None:
    """Refuse a run directory made on other tasks; with ``write``, record ours.

    The settings alone cannot tell: ``data="auto"`` resolves to ConvAI2 where the shared file is
    found and to chitchat where it is not, so the tasks themselves are recorded in
    ``tasks.json`` (source, and each task's name and example counts). A directory written before
    ``tasks.json`` existed is checked against its ``results.json`` (source and names).
    """

    def counts(tasks: Sequence[Task]) -> list[list[Any]]:
        return [[t.name, len(t.train), len(t.eval)] for t in tasks]

    current = {"data_used": source, "retrain": counts(split.retrain), "test": counts(split.test)}
    path, old = out / "tasks.json", out / "results.json"
    stored, ours = None, current
    if path.exists():
        stored = json.loads(path.read_text())
    elif old.exists():
        config = json.loads(old.read_text()).get("config", {})
        if "tasks" in config:
            stored = {"data_used": config.get("data_used"), **config["tasks"]}
            ours = {
                "data_used": source,
                "retrain": [t.name for t in split.retrain],
                "test": [t.name for t in split.test],
            }
    if stored is not None and stored != ours:
        raise ValueError(
            f"--out {out} holds a run on other tasks (data {stored['data_used']!r}; here "
            f"{source!r}, or other tasks of it); give the same data (is the ConvAI2 file "
            "found here? see LORAML_CONVAI2_DIR) or another --out"
        )
    if write and not path.exists():
        write_json(current, path)


#: Files that make a directory a run directory of ``loraml empirical run``.
_RUN_FILES = ("config.json", "tasks.json", "results.json")


def _check_data(out: Path, record: dict[str, Any], write: bool) -> None:
    """Refuse a run directory made on other prepared data; with ``write``, record ours.

    ``record`` is :func:`loraml.empirical.data.data_fingerprint` of this run's tasks; it is
    kept in ``data.json`` when the directory is created. The task check
    (:func:`_check_tasks`) compares names and example counts only, so a directory made before
    a change to the examples (other distractors, another separator) would resume and mix two
    versions of the data in one result: the digest catches that. A run directory without
    ``data.json`` (one of :data:`_RUN_FILES` present) was made before the record existed, when
    the data was possibly of format 1 (held-out replies among training distractors); it cannot
    be checked, so it is refused too, not resumed with a warning (its checkpoints would be
    reused silently). Nothing in ``out`` is changed by a refusal.

    Raises
    ------
    ValueError
        One line naming ``out`` and the fix (a new ``--out``).
    """
    path = out / "data.json"
    if path.exists():
        try:
            stored = json.loads(path.read_text())
            same = (stored["data_format"], stored["sha256"]) == (
                record["data_format"],
                record["sha256"],
            )
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise ValueError(
                f"--out {out}: {path.name} is unreadable ({type(err).__name__}); use a new --out"
            ) from None
        if not same:
            raise ValueError(
                f"--out {out} holds a run on other prepared data (data format "
                f"{stored['data_format']}, sha256 {str(stored['sha256'])[:12]}; here format "
                f"{record['data_format']}, {record['sha256'][:12]}): its checkpoints and records "
                "would mix two versions of the data; use a new --out"
            )
    elif any((out / name).exists() for name in _RUN_FILES):
        raise ValueError(
            f"--out {out} holds a run made before data.json recorded the prepared data (possibly "
            "with held-out replies among training distractors and another separator); it cannot "
            "be checked against this data: use a new --out"
        )
    if write and not path.exists():
        write_json(record, path)

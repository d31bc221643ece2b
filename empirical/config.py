"""Settings of the language experiment: the :class:`RunConfig` dataclass, the named presets, and
the checks run before anything is created (:meth:`RunConfig.validate`, :func:`preflight`).

Also what the settings resolve to: the device (:func:`resolve_device`), the data source
(:func:`resolve_source`) and the task split (:func:`load_split`). Imports nothing else of the run
(:mod:`loraml.empirical.state`, :mod:`loraml.empirical.train` and :mod:`loraml.empirical.run`
import from here).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from loraml.empirical import methods as M
from loraml.empirical.parallel import launched_world_size
from loraml.theory.io import check_output_path

if TYPE_CHECKING:
    from collections.abc import Sequence

    from loraml.empirical.data import TaskSplit


#: Device names a run accepts (checked before anything is created).
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")

#: Retraining batch layouts (see :attr:`RunConfig.batching`).
BATCHING = ("interleaved", "per-task")
#: Retraining epoch selection (see :attr:`RunConfig.retrain_selection`).
SELECTION = ("last", "best")

#: Training seeds: non-negative and small enough for a directory name and every seeding API.
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class RunConfig:
    """Settings of one experiment (everything except the seeds and the output directory).

    Attributes
    ----------
    model : str
        ``tiny``, ``minilm``, a Hugging Face id or a local directory.
    data : str
        Source for :func:`loraml.empirical.data.load_tasks` (``convai2``, ``chitchat``, ``tiny``),
        or ``auto``: ConvAI2's shared valid file where present, else chitchat.
    data_path, persona_map : str or None
        ConvAI2 fbdialog file and PAML persona map (None: the shared ones).
    test_data_path, test_persona_map : str or None
        A second ConvAI2 file (and its map) for the unseen tasks, as the paper took them from the
        valid split and the retraining tasks from the train split (None: both from
        ``data_path``, see :func:`loraml.empirical.data.load_tasks`).
    n_retrain, n_test, n_candidates : int
        T retraining tasks, unseen test tasks, K candidates per example.
    max_length : int or None
        Tokens per (context, candidate) pair; None: the model's limit.
    max_examples_per_task : int or None
        Cap on each task's training examples.
    eval_dialogues : int
        Last dialogues of each task (retraining and unseen) held out: hits@1 of the unseen tasks,
        and with ``retrain_selection="best"`` the retraining epoch's selection (the released
        scripts hold out 3 dialogues per retraining task; the ``paper`` and ``power`` presets
        use 3).
    methods : tuple of str
        Retraining methods (:data:`loraml.empirical.methods.RETRAIN_METHODS`).
    ranks : tuple of int
        Fine-tuning LoRA ranks.
    head_only : bool
        Also fine-tune a fresh head only (last-layer fine-tuning).
    epochs, ft_epochs : int
        Retraining and fine-tuning epochs.
    lr, ft_lr, weight_decay, warmup_ratio : float
        AdamW learning rates (retraining, fine-tuning), weight decay, warm-up fraction of steps.
    batch_size, eval_batch_size : int
        Examples per training / evaluation batch.
    lora_rank, lora_alpha, dropout : int, float, float
        LoRA-ML's retraining adapter rank; LoRA scaling numerator (all adapters); dropout.
    reptile_inner_steps, reptile_inner_lr, reptile_outer_lr : int, float, float
        Reptile's inner loop and outer learning rate.
    data_seed : int
        Seed of the task split's candidates (fixed across training seeds).
    device : str
        ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:N``.
    bf16 : bool
        bfloat16 autocast for the encoder.
    batching : {"interleaved", "per-task"}
        Retraining batches of SR, LoRA-ML and last-layer-ML (:data:`BATCHING`):
        ``interleaved`` mixes the tasks within every batch
        (:func:`loraml.empirical.methods.interleaved_batches`); ``per-task`` gives each batch
        one task, tasks in turn (:func:`loraml.empirical.methods.per_task_batches`), and the
        per-task adapters and heads of the tasks absent from a batch receive no update at all
        (:class:`loraml.empirical.optim.TaskRowAdamW`), as in the released scripts.
    grad_clip : float
        Gradient norm clipped at this value at every step; 0: no clipping (released scripts).
    ft_decay_horizon : float
        Fine-tuning schedule: warm-up over ``warmup_ratio`` of the real steps S, then linear
        decay that would reach 0 at ``ft_decay_horizon * S`` steps. 1: decays to 0 at the end;
        4 (released scripts): the rate ends at ``(4 - 1) / (4 - warmup_ratio)`` of its peak
        (0.77 for warm-up 0.1).
    retrain_selection : {"last", "best"}
        Which retraining epoch's encoder is fine-tuned: the last, or (released scripts) the one
        with the best hits@1 on the retraining tasks' held-out dialogues (each task's own head
        and adapter; ties: the earlier epoch).
    exclude_tasks : tuple of str
        Task (group) names never chosen, e.g. ``("persona-0",)``: PAML's cluster 0, which the
        released scripts delete from the persona map (:func:`load_split`).
    """

    model: str = "tiny"
    data: str = "tiny"
    data_path: str | None = None
    persona_map: str | None = None
    test_data_path: str | None = None
    test_persona_map: str | None = None
    n_retrain: int = 10
    n_test: int = 10
    n_candidates: int = 20
    max_length: int | None = None
    max_examples_per_task: int | None = None
    eval_dialogues: int = 2
    methods: tuple[str, ...] = M.RETRAIN_METHODS
    ranks: tuple[int, ...] = (1, 4, 8, 12, 16)
    head_only: bool = True
    epochs: int = 10
    ft_epochs: int = 10
    lr: float = 5e-5
    ft_lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    batch_size: int = 8
    eval_batch_size: int = 32
    lora_rank: int = 8
    lora_alpha: float = 16.0
    dropout: float = 0.1
    reptile_inner_steps: int = 20
    reptile_inner_lr: float = 5e-5
    reptile_outer_lr: float = 1e-4
    data_seed: int = 0
    device: str = "auto"
    bf16: bool = False
    batching: str = "interleaved"
    grad_clip: float = 1.0
    ft_decay_horizon: float = 1.0
    retrain_selection: str = "last"
    exclude_tasks: tuple[str, ...] = ()

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        for name in (
            "n_retrain",
            "n_test",
            "epochs",
            "ft_epochs",
            "batch_size",
            "eval_batch_size",
            "lora_rank",
            "reptile_inner_steps",
            "eval_dialogues",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_candidates < 2:
            raise ValueError(f"n_candidates must be >= 2, got {self.n_candidates}")
        bad = [m for m in self.methods if m not in M.RETRAIN_METHODS]
        if bad or not self.methods:
            raise ValueError(f"methods {bad or '[]'}: choose from {', '.join(M.RETRAIN_METHODS)}")
        if any(r < 1 for r in self.ranks):
            raise ValueError(f"ranks must be >= 1, got {self.ranks}")
        if not self.ranks and not self.head_only:
            raise ValueError("no fine-tuning scheme: give ranks or keep head-only fine-tuning")
        for name in ("lr", "ft_lr", "reptile_inner_lr", "reptile_outer_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1 or not 0 <= self.warmup_ratio < 1:
            raise ValueError("dropout and warmup_ratio must lie in [0, 1)")
        if self.max_length is not None and self.max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {self.max_length}")
        for name in ("lr", "ft_lr", "reptile_inner_lr", "reptile_outer_lr", "lora_alpha"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be finite and >= 0, got {self.weight_decay}")
        if self.batching not in BATCHING:
            raise ValueError(f"batching must be one of {BATCHING}, got {self.batching!r}")
        if self.retrain_selection not in SELECTION:
            raise ValueError(
                f"retrain_selection must be one of {SELECTION}, got {self.retrain_selection!r}"
            )
        if not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise ValueError(f"grad_clip must be finite and >= 0 (0: off), got {self.grad_clip}")
        if not (math.isfinite(self.ft_decay_horizon) and self.ft_decay_horizon >= 1):
            raise ValueError(
                f"ft_decay_horizon must be finite and >= 1, got {self.ft_decay_horizon}"
            )
        if not all(isinstance(n, str) and n for n in self.exclude_tasks):
            raise ValueError(f"exclude_tasks must be task names, got {self.exclude_tasks!r}")
        if not _DEVICE.fullmatch(self.device):
            raise ValueError(
                f"device {self.device!r} is not a device: use 'auto', 'cpu', 'cuda', 'cuda:N' "
                "or 'mps'"
            )

    def schemes(self) -> list[tuple[str, int]]:
        """Fine-tuning schemes as (scheme, rank): LoRA ranks first, then (``head``, 0)."""
        return [("lora", r) for r in self.ranks] + ([("head", 0)] if self.head_only else [])

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


# Sized on the 2-core VM: K = 8 instead of 20, 48 tokens per pair, 32 training examples
# per task, 2 retraining and 3 fine-tuning epochs; with so few steps the learning rates are
# raised (1e-4 retraining, 5e-4 fine-tuning) from the paper's 5e-5 / 1e-4.
_CPU = RunConfig(
    model="minilm",
    data="auto",
    n_candidates=8,
    max_length=48,
    max_examples_per_task=32,
    methods=("sr", "lora-ml"),
    ranks=(8,),
    epochs=2,
    ft_epochs=3,
    lr=1e-4,
    ft_lr=5e-4,
    eval_batch_size=16,
)


#: Named settings. ``paper``: the paper's protocol as the released scripts ran it (GPU);
#: ``cpu``: the offline check, sized for about 30 minutes per seed on 2 CPU cores, with our
#: defaults (interleaved batches, weight decay 0, clipping at 1, schedule decaying to 0, last
#: epoch); ``power``: the powered offline protocol of ``empirical/results/POWER.md`` (the cpu
#: schedule on 50 ConvAI2 clusters, K = 20, four methods, five seeds); ``tiny``: end-to-end
#: plumbing in seconds.
PRESETS: dict[str, RunConfig] = {
    "paper": RunConfig(
        model="roberta-base",
        data="convai2",
        n_candidates=20,
        methods=M.RETRAIN_METHODS,
        ranks=(1, 4, 8, 12, 16),
        epochs=10,
        ft_epochs=10,
        bf16=False,
        # the released scripts' protocol (README, "paper / released scripts / our default")
        batching="per-task",
        weight_decay=0.01,
        grad_clip=0.0,
        ft_decay_horizon=4.0,
        retrain_selection="best",
        eval_dialogues=3,
        exclude_tasks=("persona-0",),
    ),
    "cpu": _CPU,
    # empirical/results/POWER.md's powered protocol: the cpu preset's schedule, K = 20, the 10
    # largest clusters retrain, the next 40 are unseen, 3 held-out dialogues per task, four
    # methods, rank-8 LoRA and head-only fine-tuning, seeds 0-4 (DEFAULT_SEEDS); ConvAI2 only
    # (no chitchat fallback), batching as given by --batching (default interleaved).
    "power": dataclasses.replace(
        _CPU,
        data="convai2",
        n_candidates=20,
        n_test=40,
        eval_dialogues=3,
        methods=("sr", "lora-ml", "last-layer-ml", "reptile"),
    ),
    "tiny": RunConfig(
        model="tiny",
        data="tiny",
        n_retrain=3,
        n_test=2,
        n_candidates=4,
        max_length=32,
        max_examples_per_task=8,
        methods=M.RETRAIN_METHODS,
        ranks=(2,),
        epochs=2,
        ft_epochs=2,
        lr=1e-3,
        ft_lr=1e-3,
        lora_rank=2,
        reptile_inner_steps=2,
        reptile_inner_lr=1e-3,
        reptile_outer_lr=1e-3,
    ),
}

#: Default seeds per preset.
DEFAULT_SEEDS: dict[str, tuple[int, ...]] = {
    "paper": (0, 1, 2, 3, 4),
    "cpu": (0,),
    "power": (0, 1, 2, 3, 4),
    "tiny": (0,),
}


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not a device; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name}: CUDA is not available here; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(
            f"device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name}: MPS is not available here; use --device cpu")
    return device


def resolve_source(cfg: RunConfig) -> str:
    """``cfg.data`` with ``auto`` resolved: ``convai2`` where the shared file is, else chitchat."""
    from loraml.empirical.data import default_convai2_paths

    if cfg.data != "auto":
        return cfg.data
    return "convai2" if default_convai2_paths() is not None else "chitchat"


def load_split(cfg: RunConfig) -> TaskSplit:
    """The retraining and unseen tasks of ``cfg`` (``data="auto"`` resolved).

    With ``exclude_tasks`` the groups so named are never chosen: ``k`` more groups are loaded
    (the largest ``n_retrain + n_test + k`` of one file; ``n_retrain + k`` and ``n_test + k``
    of two files), the excluded ones dropped, and the rest taken in the same size order.
    """
    from loraml.empirical.data import TaskSplit

    k = len(cfg.exclude_tasks)
    if not k:
        return _load_tasks(cfg, cfg.n_retrain, cfg.n_test)
    drop = set(cfg.exclude_tasks)
    if cfg.test_data_path is not None:
        more = _load_tasks(cfg, cfg.n_retrain + k, cfg.n_test + k)
        retrain = [t for t in more.retrain if t.name not in drop][: cfg.n_retrain]
        test = [t for t in more.test if t.name not in drop][: cfg.n_test]
    else:
        more = _load_tasks(cfg, cfg.n_retrain, cfg.n_test + k)
        kept = [t for t in (*more.retrain, *more.test) if t.name not in drop]
        retrain, test = kept[: cfg.n_retrain], kept[cfg.n_retrain : cfg.n_retrain + cfg.n_test]
    info = {**more.info, "excluded_tasks": sorted(drop)}
    return TaskSplit(retrain=tuple(retrain), test=tuple(test), info=info)


def _load_tasks(cfg: RunConfig, n_retrain: int, n_test: int) -> TaskSplit:
    from loraml.empirical.data import load_tasks

    return load_tasks(
        resolve_source(cfg),
        n_retrain=n_retrain,
        n_test=n_test,
        n_candidates=cfg.n_candidates,
        seed=cfg.data_seed,
        path=cfg.data_path,
        persona_map=cfg.persona_map,
        test_path=cfg.test_data_path,
        test_persona_map=cfg.test_persona_map,
        eval_dialogues=cfg.eval_dialogues,
        max_examples_per_task=cfg.max_examples_per_task,
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _same_content(a: str, b: str) -> bool:
    """Whether two existing files hold the same bytes (size first, then SHA-256)."""
    pa, pb = Path(a), Path(b)
    if not (pa.is_file() and pb.is_file()):
        return False
    if pa.stat().st_size != pb.stat().st_size:
        return False
    return pa.samefile(pb) or _sha256(pa) == _sha256(pb)


def _check_out(out: Path) -> None:
    """Refuse a run directory that cannot be one (:func:`loraml.theory.io.check_output_path`
    with ``folder=True``: not a folder, a name too long, under a regular file, or not writable on
    its nearest existing ancestor); the message starts with ``out``, shown as ``--out``."""
    check_output_path(out, folder=True, what="out")


def preflight(cfg: RunConfig, seeds: Sequence[int], out: Path) -> None:
    """Check everything that can be checked before a run creates or reads anything heavy.

    Raises
    ------
    ValueError
        One line naming the setting: bad settings (:meth:`RunConfig.validate`), seeds not
        distinct integers in [0, :data:`MAX_SEED`], ``out`` not a possible directory (a file,
        under a file, a name over 255 bytes, not writable), a
        ``test_data_path`` with the same content as ``data_path`` (the unseen tasks would be
        retraining tasks), or a CUDA device where there is none.
    """
    cfg.validate()
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and non-empty, got {list(seeds)}")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s <= MAX_SEED:
            raise ValueError(f"seeds must be integers in [0, {MAX_SEED}], got {s!r}")
    _check_out(out)
    for name in ("data_path", "persona_map", "test_data_path", "test_persona_map"):
        value = getattr(cfg, name)
        if value is not None and not Path(value).is_file():
            raise ValueError(f"{name} {value} is not a readable file")
    if (
        cfg.data_path is not None
        and cfg.test_data_path is not None
        and _same_content(cfg.data_path, cfg.test_data_path)
    ):
        raise ValueError(
            f"test_data_path {cfg.test_data_path} holds the same content as data_path "
            f"{cfg.data_path}: the unseen tasks would be retraining tasks; give the other split "
            "(the paper: train for data_path, valid for test_data_path)"
        )
    if launched_world_size() == 1:
        resolve_device(cfg.device)

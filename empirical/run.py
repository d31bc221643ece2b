"""Running the language experiment: presets, retraining and fine-tuning loops, resumable runs.

One run = for each seed, each retraining method retrains the pretrained encoder on the T
retraining tasks; then each retrained encoder is fine-tuned on each unseen task by each
fine-tuning scheme (LoRA of rank r, or a fresh head only) and scored by hits@1 on the task's
held-out dialogues after every fine-tuning epoch (the last epoch is the result). Training: AdamW,
linear warm-up then linear decay, batches of 8 examples (8 K pairs), loss
:func:`loraml.empirical.model.candidate_cross_entropy`, gradient norm clipped at ``grad_clip``;
where the released scripts differ (batching, weight decay, clipping, fine-tuning schedule,
retraining epoch kept, excluded clusters) :class:`RunConfig` has a setting, and the ``paper``
preset takes the released value.

Resumability. The run directory holds ``config.json`` (a rerun must use the same settings),
and per seed: ``retrain-<method>.ckpt.pt`` after every retraining epoch (model, optimizer,
scheduler, torch RNG states, epoch), ``base-<method>.pt`` once retraining is done (the retrained
encoder, adapters and heads discarded), and ``finetune-<method>.json`` after every fine-tuned task.
Each fine-tuning record carries the digest of the encoder it was fine-tuned from
(``base_sha256``, :func:`encoder_digest`), and a rerun refuses records that do not match the
retrained encoder beside them (records copied to a machine that retrained anew), before any
work where that encoder already exists.
``wall.json`` counts the wall time of every invocation (:class:`WallLedger`), so a resumed run
still reports what the whole run cost.
Checkpoints hold tensors and plain data only, load with ``torch.load(weights_only=True)`` and
carry a SHA-256 checksum file beside them (:func:`save_checkpoint`, :func:`load_checkpoint`).
A NaN or infinite loss, gradient, parameter or held-out score stops the run with
:class:`Diverged` before the epoch's checkpoint is written.
Every random draw is seeded from (seed, method, epoch) or (seed, method, scheme, rank, task), and
the torch RNG state is restored from the checkpoint, so a run killed at any point and restarted
with the same command ends with the same numbers as an uninterrupted one (on the same machine
and device; timings differ). ``tasks.json`` records the tasks the data resolved to, and a rerun on
other tasks is refused; ``data.json`` records a digest of the prepared examples
(:func:`loraml.empirical.data.data_fingerprint`), and a rerun on other data, or in a directory
made before the record existed, is refused too.

Several processes (``accelerate launch`` or ``torchrun``): see :mod:`loraml.empirical.parallel`.

This module is the orchestrator (:func:`run_experiment`); the settings and presets live in
:mod:`loraml.empirical.config`, the training loops in :mod:`loraml.empirical.train`, and the
run-directory state (checkpoints, ``config.json``, ``tasks.json``) in
:mod:`loraml.empirical.state`. Their names are re-exported here.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from loraml.empirical.config import (
    _DEVICE,
    BATCHING,
    DEFAULT_SEEDS,
    MAX_SEED,
    PRESETS,
    SELECTION,
    RunConfig,
    _check_out,
    _load_tasks,
    _same_content,
    _sha256,
    load_split,
    preflight,
    resolve_device,
    resolve_source,
)
from loraml.empirical.data import data_fingerprint
from loraml.empirical.model import (
    PairScorer,
    PairTokenizer,
    candidate_cross_entropy,
    hits_at_1,
    load_encoder,
    model_limit,
)
from loraml.empirical.parallel import Workers, launched_world_size
from loraml.empirical.state import (
    _WHAT_TO_RUN,
    CheckpointError,
    WallLedger,
    _check_config,
    _check_data,
    _check_tasks,
    _checksum_path,
    _read_digests,
    _rng_state,
    _set_rng_state,
    check_finetune_records,
    encoder_digest,
    load_checkpoint,
    save_checkpoint,
    write_json,
)
from loraml.empirical.train import (
    Diverged,
    RunInterrupted,
    StepBudget,
    _autocast,
    _backward,
    _base_encoder,
    _batch,
    _check_parameters,
    _clip,
    _Context,
    _derive,
    _optimizer,
    _progress,
    _reptile_epoch,
    _retrain_batches,
    _step,
    _stop_unless_finite,
    _train_head,
    evaluate,
    finetune,
    retrain,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from loraml.empirical.data import TaskSplit

__all__ = [
    # the orchestrator
    "run_experiment",
    "_finetune_all",
    # re-exported from loraml.empirical.config
    "_DEVICE",
    "BATCHING",
    "DEFAULT_SEEDS",
    "MAX_SEED",
    "PRESETS",
    "SELECTION",
    "RunConfig",
    "_check_out",
    "_load_tasks",
    "_same_content",
    "_sha256",
    "load_split",
    "preflight",
    "resolve_device",
    "resolve_source",
    # re-exported from loraml.empirical.state
    "_WHAT_TO_RUN",
    "CheckpointError",
    "WallLedger",
    "_check_config",
    "_check_data",
    "_check_tasks",
    "_checksum_path",
    "_read_digests",
    "_rng_state",
    "_set_rng_state",
    "load_checkpoint",
    "save_checkpoint",
    "write_json",
    # re-exported from loraml.empirical.train
    "Diverged",
    "RunInterrupted",
    "StepBudget",
    "_Context",
    "_autocast",
    "_backward",
    "_base_encoder",
    "_batch",
    "_check_parameters",
    "_clip",
    "_derive",
    "_optimizer",
    "_progress",
    "_reptile_epoch",
    "_retrain_batches",
    "_step",
    "_stop_unless_finite",
    "_train_head",
    "evaluate",
    "finetune",
    "retrain",
    # re-exported from loraml.empirical.model and loraml.empirical.parallel
    "PairScorer",
    "PairTokenizer",
    "Workers",
    "candidate_cross_entropy",
    "hits_at_1",
    "launched_world_size",
    "load_encoder",
    "model_limit",
]


def run_experiment(
    cfg: RunConfig,
    seeds: Sequence[int],
    out: str | os.PathLike,
    *,
    progress: bool = True,
    budget: StepBudget | None = None,
    split: TaskSplit | None = None,
) -> dict[str, Any]:
    """Run (or resume) the experiment and write ``results.json``, ``results.md`` and the plot.

    Parameters
    ----------
    cfg : RunConfig
    seeds : sequence of int
        Training seeds (the task split is fixed by ``cfg.data_seed``).
    out : path-like
        Run directory (created; holds checkpoints and results).
    progress : bool
        Show tqdm progress bars.
    budget : StepBudget, optional
        Stops the run with :class:`RunInterrupted` after a number of optimizer steps (tests).
    split : TaskSplit, optional
        Use these tasks instead of loading ``cfg``'s data.

    Returns
    -------
    dict
        The content of ``results.json`` (see :func:`loraml.empirical.report.build_results`).
    """
    from loraml.empirical import report

    out = Path(out)
    preflight(cfg, seeds, out)
    wall0 = time.perf_counter()
    _check_config(out, cfg, write=False)
    workers = Workers.from_env(cfg.device)
    ledger: WallLedger | None = None
    try:
        device = workers.device or resolve_device(cfg.device)
        split = split if split is not None else load_split(cfg)
        encoder, tokenizer = load_encoder(cfg.model, seed=0)
        source = resolve_source(cfg)
        limit = model_limit(tokenizer, encoder)
        max_length = min(cfg.max_length or limit, limit)
        del encoder
        pairs = PairTokenizer(tokenizer, max_length)
        data_record = data_fingerprint(split, pairs.sep)
        # created only once the settings, data and model are known to be good
        if workers.main:
            out.mkdir(parents=True, exist_ok=True)
        workers.barrier()
        # only once data and model load; every check before any write; process 0 writes,
        # data.json first (a directory with tasks.json but no data.json predates the record)
        _check_tasks(out, split, source, write=False)
        _check_data(out, data_record, write=False)
        if workers.main:
            _check_data(out, data_record, write=True)
            _check_tasks(out, split, source, write=True)
            _check_config(out, cfg, write=True)
        _check_resumed(out, seeds, cfg.methods)
        ledger = WallLedger(out, write=workers.main, t0=wall0, versions=report.versions()).start()
        ctx = _Context(
            cfg,
            split,
            pairs,
            device,
            budget or StepBudget(),
            progress and workers.main,
            workers,
        )
        records: list[dict[str, Any]] = []
        timing: list[dict[str, Any]] = []
        for seed in seeds:
            seed_dir = out / f"seed{seed}"
            seed_dir.mkdir(exist_ok=True)
            for method in cfg.methods:
                base = retrain(method, seed, seed_dir, ctx)
                timing.append(
                    {
                        "stage": "retrain",
                        "method": method,
                        "seed": seed,
                        "seconds": base["seconds"],
                        "examples": base["examples"],
                        **{k: base[k] for k in ("selected_epoch", "epoch_hits") if k in base},
                    }
                )
                done = _finetune_all(base["encoder"], method, seed, seed_dir, ctx)
                records.extend(done)
                for scheme, rank in cfg.schemes():
                    rows = [r for r in done if r["scheme"] == scheme and r["rank"] == rank]
                    timing.append(
                        {
                            "stage": f"finetune-{scheme}",
                            "method": method,
                            "seed": seed,
                            "rank": rank,
                            "seconds": sum(r["seconds"] for r in rows),
                            "examples": sum(r["examples"] for r in rows),
                        }
                    )
        config = {
            **cfg.to_json(),
            "seeds": list(seeds),
            "max_length_used": max_length,
            "data_used": source,
            "data_sha256": data_record["sha256"],
            "data_format": data_record["data_format"],
            "device_used": str(device),
            "tasks": {
                "retrain": [t.name for t in split.retrain],
                "test": [t.name for t in split.test],
            },
        }
        if workers.world > 1:
            config["processes"] = workers.world
        results = report.build_results(
            config,
            records,
            timing,
            ledger.seconds,
            wall_total=ledger.total(),
            invocations=ledger.invocations,
            invocation_versions=ledger.versions_by_invocation(),
        )
        if workers.main:
            report.write_results(results, out)
        workers.barrier()
        return results
    finally:
        if ledger is not None:
            ledger.close()
        workers.close()


def _check_resumed(out: Path, seeds: Sequence[int], methods: Sequence[str]) -> None:
    """Before any work, refuse fine-tuning records that do not belong to the retrained encoder
    beside them (:func:`check_finetune_records`); bases not retrained yet are checked by
    :func:`_finetune_all` once they exist."""
    for seed in seeds:
        for method in methods:
            base = out / f"seed{seed}" / f"base-{method}.pt"
            done_path = base.with_name(f"finetune-{method}.json")
            if base.exists() and done_path.exists():
                digest = encoder_digest(load_checkpoint(base)["encoder"])
                check_finetune_records(json.loads(done_path.read_text()), digest, done_path)


def _finetune_all(
    encoder_state: dict[str, torch.Tensor], method: str, seed: int, seed_dir: Path, ctx: _Context
) -> list[dict[str, Any]]:
    """Fine-tune ``method``'s retrained encoder on every unseen task by every scheme, resuming
    from ``finetune-<method>.json``; returns all its records.

    With several processes the missing jobs are dealt out in rounds (one job per process per
    round); each round's records are gathered and written by process 0.
    """
    workers = ctx.workers
    done_path = seed_dir / f"finetune-{method}.json"
    done = json.loads(done_path.read_text()) if done_path.exists() else []
    digest = encoder_digest(encoder_state)
    check_finetune_records(done, digest, done_path)
    have = {(r["scheme"], r["rank"], r["task"]) for r in done}
    jobs = [
        (scheme, rank, index, task)
        for scheme, rank in ctx.cfg.schemes()
        for index, task in enumerate(ctx.split.test)
        if (scheme, rank, task.name) not in have
    ]
    bar = _progress(ctx, len(have) + len(jobs), f"seed {seed} {method} fine-tuning")
    bar.update(len(have))
    for start in range(0, len(jobs), workers.world):
        mine = jobs[start + workers.rank] if start + workers.rank < len(jobs) else None
        record = None
        if mine is not None:
            scheme, rank, index, task = mine
            key = (seed, method, scheme, rank, index)
            rec = finetune(encoder_state, scheme, rank, task, key, ctx)
            record = {
                "method": method,
                "scheme": scheme,
                "rank": rank,
                "task": task.name,
                "seed": seed,
                "base_sha256": digest,
                **rec,
            }
        new = [r for r in workers.gather(record) if r is not None]
        done.extend(new)
        if workers.main:
            write_json(done, done_path)
        bar.update(len(new))
    bar.close()
    return done

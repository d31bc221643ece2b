"""What a run will do, before it does it: the tasks chosen, their sizes and a cost estimate.

``loraml empirical run ... --dry-run`` prints :func:`render_plan` of :func:`plan` and stops
(nothing is created). The cost is counted in *training-example equivalents*: one example
trained (forward and backward over its K pairs) counts 1, one example only scored (held-out
evaluation, head-only fine-tuning's frozen features, the retraining epoch's selection) counts
:data:`FORWARD_SHARE`. What is counted, per seed, follows :mod:`loraml.empirical.train`:

- retraining, each method: ``epochs`` x (SR, LoRA-ML, last-layer-ML) every training example of
  the retraining tasks once an epoch, (Reptile) the inner batches of
  :func:`loraml.empirical.methods.reptile_rounds`; with ``retrain_selection="best"`` also the
  retraining tasks' held-out examples scored after every epoch;
- LoRA fine-tuning, each method, rank and unseen task: ``ft_epochs`` x its training examples
  trained and ``ft_epochs`` x its held-out examples scored (hits@1 after every epoch);
- head-only fine-tuning, each method and unseen task: its training examples scored once (the
  frozen features) and ``ft_epochs`` x its held-out examples; the head's own steps are left out
  (a dense layer on stored features).

CPU hours are given for MiniLM only, from the measured rate :data:`MINILM_CPU_RATE` scaled to the
run's K and tokens.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

import numpy as np

from loraml.empirical import methods as M

if TYPE_CHECKING:
    from collections.abc import Sequence

    from loraml.empirical.config import RunConfig
    from loraml.empirical.data import Task, TaskSplit

#: SR's training rate on MiniLM, examples per CPU second, with K = :data:`RATE_K` candidates of
#: :data:`RATE_TOKENS` tokens and one torch thread: the median of
#: ``benchmarks/results/empirical_cpu.json`` (``median_examples_per_cpu_s``, ``sr``).
MINILM_CPU_RATE = 2.02
RATE_K = 8
RATE_TOKENS = 48
#: Cost of scoring an example relative to training on it: a backward pass costs about two
#: forward passes (one product each for the input and the weight gradients of every layer), so
#: a forward pass is about a third of a training step.
FORWARD_SHARE = 1 / 3


def _sizes(tasks: Sequence[Task], part: str) -> list[int]:
    return [len(getattr(t, part)) for t in tasks]


def plan(cfg: RunConfig, split: TaskSplit, seeds: Sequence[int]) -> dict[str, Any]:
    """The tasks, their sizes and the cost of running ``cfg`` on ``split`` for ``seeds``.

    Parameters
    ----------
    cfg : RunConfig
        The settings.
    split : TaskSplit
        The tasks the settings resolve to (:func:`loraml.empirical.config.load_split`).
    seeds : sequence of int
        The training seeds.

    Returns
    -------
    dict
        ``retrain`` and ``test``: ``[name, training examples, held-out examples]`` per task;
        ``per_seed``: ``retrain_trained``, ``retrain_scored``, ``finetune_trained``,
        ``finetune_scored`` (examples) and ``equivalents`` (their training-example
        equivalents); ``equivalents`` for all seeds; ``rate`` (examples per CPU second, None
        when the model has no measured rate) and ``cpu_hours`` (None likewise).

    Examples
    --------
    >>> from loraml.empirical.config import PRESETS, load_split
    >>> cfg = PRESETS["tiny"]
    >>> p = plan(cfg, load_split(cfg), [0, 1])
    >>> p["equivalents"] == 2 * p["per_seed"]["equivalents"]
    True
    >>> p["cpu_hours"] is None  # no measured rate for the tiny model
    True
    """
    retrain_train = _sizes(split.retrain, "train")
    retrain_eval = _sizes(split.retrain, "eval")
    test_train, test_eval = sum(_sizes(split.test, "train")), sum(_sizes(split.test, "eval"))
    retrain_trained = retrain_scored = finetune_trained = finetune_scored = 0
    for method in cfg.methods:
        if method == "reptile":
            rounds = M.reptile_rounds(
                retrain_train, cfg.batch_size, cfg.reptile_inner_steps, np.random.default_rng(0)
            )
            per_epoch = sum(len(b) for _, batches in rounds for b in batches)
        else:
            per_epoch = sum(retrain_train)
        retrain_trained += cfg.epochs * per_epoch
        if cfg.retrain_selection == "best":
            retrain_scored += cfg.epochs * sum(retrain_eval)
        finetune_trained += len(cfg.ranks) * cfg.ft_epochs * test_train
        finetune_scored += len(cfg.ranks) * cfg.ft_epochs * test_eval
        if cfg.head_only:
            finetune_scored += test_train + cfg.ft_epochs * test_eval
    equivalents = (
        retrain_trained + finetune_trained + FORWARD_SHARE * (retrain_scored + finetune_scored)
    )
    rate = None
    if cfg.model == "minilm" and cfg.max_length is not None:
        # the cost of a step grows with the K x tokens it encodes (linear: at 48 tokens the
        # attention's quadratic part is small beside MiniLM's 384-wide dense layers)
        rate = MINILM_CPU_RATE * RATE_K * RATE_TOKENS / (cfg.n_candidates * cfg.max_length)
    total = equivalents * len(seeds)
    return {
        "retrain": [[t.name, len(t.train), len(t.eval)] for t in split.retrain],
        "test": [[t.name, len(t.train), len(t.eval)] for t in split.test],
        "per_seed": {
            "retrain_trained": retrain_trained,
            "retrain_scored": retrain_scored,
            "finetune_trained": finetune_trained,
            "finetune_scored": finetune_scored,
            "equivalents": equivalents,
        },
        "equivalents": total,
        "rate": rate,
        "cpu_hours": None if rate is None else total / rate / 3600,
    }


def _range(values: Sequence[int]) -> str:
    if not values:
        return "none"
    return (
        f"{min(values)}-{max(values)} (median {statistics.median(values):g}, {sum(values)} in all)"
    )


def render_plan(cfg: RunConfig, p: dict[str, Any], seeds: Sequence[int], source: str) -> str:
    """:func:`plan`'s result as the lines ``--dry-run`` prints.

    Parameters
    ----------
    cfg : RunConfig
        The settings.
    p : dict
        :func:`plan`'s result.
    seeds : sequence of int
        The training seeds.
    source : str
        The data source the settings resolved to.

    Returns
    -------
    str
        Several lines, the last ending without a newline.

    Examples
    --------
    >>> from loraml.empirical.config import PRESETS, load_split
    >>> cfg = PRESETS["tiny"]
    >>> text = render_plan(cfg, plan(cfg, load_split(cfg), [0]), [0], "tiny")
    >>> text.splitlines()[0][:52]
    'Plan: data tiny, model tiny, 3 retraining tasks, 2 u'
    """
    s = p["per_seed"]
    lines = [
        f"Plan: data {source}, model {cfg.model}, {len(p['retrain'])} retraining tasks, "
        f"{len(p['test'])} unseen tasks, K = {cfg.n_candidates}, {cfg.eval_dialogues} held-out "
        f"dialogues per task, seeds {list(seeds)}",
        f"methods {', '.join(cfg.methods)}; fine-tuning "
        + ", ".join([f"LoRA r={r}" for r in cfg.ranks] + (["head only"] if cfg.head_only else []))
        + f"; batching {cfg.batching}",
        "retraining tasks (training / held-out examples): "
        + ", ".join(f"{n} {a}/{b}" for n, a, b in p["retrain"]),
        "unseen tasks (training / held-out examples): "
        + ", ".join(f"{n} {a}/{b}" for n, a, b in p["test"]),
        f"unseen tasks' held-out examples: {_range([b for _, _, b in p['test']])}; training "
        f"examples: {_range([a for _, a, _ in p['test']])}",
        f"per seed: {s['retrain_trained']} retraining and {s['finetune_trained']} fine-tuning "
        f"examples trained, {s['retrain_scored'] + s['finetune_scored']} examples scored = "
        f"{s['equivalents']:,.0f} training-example equivalents "
        f"(scoring = {FORWARD_SHARE:.2f} of training)",
    ]
    if p["cpu_hours"] is None:
        lines.append(
            f"cost: {p['equivalents']:,.0f} training-example equivalents in all; no measured "
            f"rate for model {cfg.model!r} (CPU hours are estimated for minilm only)"
        )
    else:
        lines.append(
            f"cost: {p['equivalents']:,.0f} training-example equivalents in all, about "
            f"{p['cpu_hours']:.1f} CPU hours at {p['rate']:.2f} examples per CPU second "
            f"(MiniLM's measured {MINILM_CPU_RATE} at K = {RATE_K}, {RATE_TOKENS} tokens, "
            f"scaled by K x tokens; one torch thread per core)"
        )
    return "\n".join(lines)

"""Tasks for the language experiment: persona (or prompt, or speaker) tasks of response selection.

An :class:`Example` is a dialogue context and K candidate replies, one of them true; a
:class:`Task` is a persona's examples, split into training dialogues and the last
``eval_dialogues`` dialogues held out for evaluation (as the paper does); a :class:`TaskSplit`
holds the T retraining tasks and the unseen test tasks. :func:`load_tasks` builds one from

- ``"convai2"``: a ParlAI fbdialog file (:mod:`loraml.empirical.fbdialog`), tasks = personas,
  grouped exactly or through a PAML persona map (:mod:`loraml.empirical.personas`);
- ``"chitchat"``: the ``chitchat-dataset`` PyPI package, tasks = conversation prompts (default) or
  speakers;
- ``"tiny"``: a small generated data set with learnable structure, for tests.

Candidates. Where the source has none (``*_no_cands`` files, chitchat, tiny), each example gets
K - 1 distractors drawn, with a seeded :class:`numpy.random.Generator`, from the replies of *other*
dialogues of the same source (never the true reply, nor a string-identical copy, nor a duplicate),
as ConvAI2's own candidates were built. No held-out text reaches training: the distractors of a
training (retraining or fine-tuning) example come only from dialogues that no chosen task holds
out, and never equal any turn of a held-out dialogue (of any chosen task, in either file of a
two-file split); held-out examples draw from all other dialogues. The true reply is put at a
uniformly random position, drawn from the same generator, also where a file supplies the
candidates (ConvAI2 files list the true reply last): a scorer that breaks ties by position then
gains nothing. The generator for a dialogue is seeded by ``(seed, dialogue index in the
source)``, so a held-out dialogue's candidates do not depend on which tasks are selected (a
training dialogue's pool does: it leaves out the chosen tasks' held-out dialogues).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loraml.empirical.fbdialog import DataError, Dialogue, read_fbdialog

__all__ = [
    "CONVAI2_ENV",
    "DATA_FORMAT",
    "DataError",
    "Dialogue",
    "Example",
    "Task",
    "TaskSplit",
    "build_examples",
    "chitchat_dialogues",
    "chitchat_groups",
    "data_fingerprint",
    "default_convai2_paths",
    "encode_pair_texts",
    "group_by_persona",
    "held_out_texts",
    "load_tasks",
    "make_tasks",
    "tiny_dialogues",
]

#: Environment variable naming a directory with the ConvAI2 files (overrides the default place).
CONVAI2_ENV = "LORAML_CONVAI2_DIR"
CONVAI2_FILE = "valid_self_original_no_cands.txt"
CONVAI2_MAP = "valid_persona_map"

#: Version of how examples are made from a source: raise it with any change to the contexts,
#: candidates, labels or the joining of turns that the data itself does not show. 1: training
#: distractors could be held-out replies, turns joined with the separator between spaces (runs
#: made before issue 12's data fixes); 2: the rules of this module and
#: :func:`encode_pair_texts` with :func:`loraml.empirical.model.separator`.
DATA_FORMAT = 2


@dataclass(frozen=True)
class Example:
    """One response-selection example.

    Attributes
    ----------
    context : tuple of str
        The dialogue turns so far, oldest first (the last one is the partner's utterance).
    candidates : tuple of str
        K candidate replies.
    label : int
        Index of the true reply in ``candidates``.
    """

    context: tuple[str, ...]
    candidates: tuple[str, ...]
    label: int

    @property
    def reply(self) -> str:
        """The true reply."""
        return self.candidates[self.label]


@dataclass(frozen=True)
class Task:
    """A task: one persona's (prompt's, speaker's) examples.

    Attributes
    ----------
    name : str
        For example ``"persona-17"`` (PAML cluster 17) or ``"chitchat-prompt-3"``.
    train : tuple of Example
        Fine-tuning / retraining examples (all but the last ``eval_dialogues`` dialogues).
    eval : tuple of Example
        Held-out examples: those of the task's last ``eval_dialogues`` dialogues.
    """

    name: str
    train: tuple[Example, ...]
    eval: tuple[Example, ...]


@dataclass(frozen=True)
class TaskSplit:
    """Retraining tasks and unseen test tasks (disjoint).

    Attributes
    ----------
    retrain : tuple of Task
        The T retraining tasks.
    test : tuple of Task
        The unseen tasks, fine-tuned and evaluated one at a time.
    info : dict
        A JSON-serialisable description of how the split was made (source, files, counts of
        dialogues, examples and groups, the chosen groups' sizes, K, seed); for results files.
        Not part of equality.
    """

    retrain: tuple[Task, ...]
    test: tuple[Task, ...]
    info: dict = field(default_factory=dict, compare=False)


def encode_pair_texts(example: Example, sep: str) -> list[tuple[str, str]]:
    """The (context text, candidate) pairs a pair scorer reads, one per candidate.

    Parameters
    ----------
    example : Example
        The example.
    sep : str
        Separator between context turns, the tokenizer's own token without spaces
        (``"</s>"`` for RoBERTa, ``"[SEP]"`` for BERT: :func:`loraml.empirical.model.separator`).
        The paper's released scripts joined turns with nothing.

    Returns
    -------
    list of (str, str)
        ``(sep.join(example.context), candidate)`` for each candidate, in candidate order.
        Truncation (from the left, keeping the most recent turns) happens at tokenisation.
    """
    context = sep.join(example.context)
    return [(context, candidate) for candidate in example.candidates]


def data_fingerprint(split: TaskSplit, sep: str) -> dict[str, Any]:
    """A record of the prepared data: SHA-256 over every example as the scorer reads it.

    Hashed, in order: :data:`DATA_FORMAT`, then for each retraining and each unseen task, for
    its training and then its held-out examples, one JSON line ``[kind, task name, part, joined
    context, candidates, label]`` with the context joined as :func:`encode_pair_texts` joins it.
    Any change to a distractor, a label, a task's examples or the separator changes the digest.

    Parameters
    ----------
    split : TaskSplit
        The tasks of a run.
    sep : str
        The separator joining context turns (:func:`loraml.empirical.model.separator`).

    Returns
    -------
    dict
        ``data_format`` (:data:`DATA_FORMAT`), ``sha256`` (hex digest), ``separator`` and
        ``examples`` (how many were hashed).

    Examples
    --------
    >>> split = load_tasks("tiny", n_retrain=2, n_test=1, n_candidates=3)
    >>> record = data_fingerprint(split, "[SEP]")
    >>> record["examples"] == sum(len(t.train) + len(t.eval) for t in split.retrain + split.test)
    True
    >>> data_fingerprint(split, "</s>")["sha256"] == record["sha256"]
    False
    """
    digest = hashlib.sha256(f"loraml data format {DATA_FORMAT}\n".encode())
    n = 0
    for kind, tasks in (("retrain", split.retrain), ("test", split.test)):
        for task in tasks:
            for part, examples in (("train", task.train), ("eval", task.eval)):
                for ex in examples:
                    pairs = encode_pair_texts(ex, sep)
                    context = pairs[0][0] if pairs else sep.join(ex.context)
                    line = [kind, task.name, part, context, [c for _, c in pairs], ex.label]
                    digest.update(json.dumps(line, ensure_ascii=False).encode() + b"\n")
                    n += 1
    return {
        "data_format": DATA_FORMAT,
        "sha256": digest.hexdigest(),
        "separator": sep,
        "examples": n,
    }


def default_convai2_paths() -> tuple[Path, Path] | None:
    """The ConvAI2 valid file and its PAML persona map, where this machine has them.

    Looks in ``$LORAML_CONVAI2_DIR`` if set, else in ``../shared/data/convai2/`` next to the
    repository (the project's shared data directory).

    Returns
    -------
    (Path, Path) or None
        ``(valid_self_original_no_cands.txt, valid_persona_map)`` if both exist, else None.
    """
    env = os.environ.get(CONVAI2_ENV)
    root = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared/data/convai2"
    text, pmap = root / CONVAI2_FILE, root / CONVAI2_MAP
    return (text, pmap) if text.is_file() and pmap.is_file() else None


# --------------------------------------------------------------------------------------------
# Candidates and examples


class _ReplyPool:
    """The replies of a source's dialogues, to draw distractors from.

    ``exclude_dialogues`` (indices) and ``exclude_texts`` (strings) are left out of the pool: the
    pool of training examples leaves out the held-out dialogues and every string they contain.
    """

    def __init__(
        self,
        dialogues: Sequence[Dialogue],
        exclude_dialogues: Collection[int] = (),
        exclude_texts: Collection[str] = (),
    ) -> None:
        texts: list[str] = []
        owners: list[int] = []
        skip_dialogues, skip_texts = set(exclude_dialogues), set(exclude_texts)
        for j, dialogue in enumerate(dialogues):
            if j in skip_dialogues:
                continue
            for i in dialogue.targets:
                if dialogue.turns[i] in skip_texts:
                    continue
                texts.append(dialogue.turns[i])
                owners.append(j)
        self.texts = texts
        self.owners = np.asarray(owners, dtype=np.int64)
        self.n_distinct = len(set(texts))

    def draw(self, k: int, owner: int, true_reply: str, rng: np.random.Generator) -> list[str]:
        """``k`` distinct replies from dialogues other than ``owner``, none equal to the truth."""
        if k > self.n_distinct - 1:
            raise ValueError(
                f"n_candidates={k + 1} needs {k} distinct distractor replies, but the source has "
                f"only {self.n_distinct} distinct replies; lower n_candidates"
            )
        chosen: list[str] = []
        seen = {true_reply}
        tries = 0
        while len(chosen) < k:
            for idx in rng.integers(0, len(self.texts), size=2 * (k - len(chosen)) + 4):
                text = self.texts[idx]
                if self.owners[idx] != owner and text not in seen:
                    seen.add(text)
                    chosen.append(text)
                    if len(chosen) == k:
                        break
            tries += 1
            if tries > 1000:  # only when nearly all replies belong to `owner` or equal the truth
                raise ValueError(
                    f"could not draw {k} distinct distractors from other dialogues; "
                    "the source is too small for this n_candidates"
                )
        return chosen


def build_examples(
    dialogues: Sequence[Dialogue],
    indices: Sequence[int],
    *,
    n_candidates: int,
    seed: int,
    pool: _ReplyPool | None = None,
    targets: Callable[[Dialogue], Sequence[int]] | None = None,
    exclude: Collection[str] = (),
) -> list[list[Example]]:
    """The examples of the chosen dialogues, with K candidates each.

    Parameters
    ----------
    dialogues : sequence of Dialogue
        All dialogues of the source (the distractor pool is their replies).
    indices : sequence of int
        Which dialogues to turn into examples.
    n_candidates : int
        K, the number of candidates per example (true reply included), >= 2.
    seed : int
        Seeds one generator per dialogue, ``numpy.random.default_rng([seed, index])``.
    pool : optional
        A prebuilt reply pool of ``dialogues`` (built here if None).
    targets : callable, optional
        Which turns of a dialogue are examples (default: ``dialogue.targets``); the speaker
        tasks of chitchat keep only one speaker's replies.
    exclude : collection of str
        Texts never used as distractors (the held-out dialogues' turns, for training examples):
        left out of the pool built here and of a file's own candidates. A prebuilt ``pool``
        must already leave them out.

    Returns
    -------
    list of list of Example
        Per chosen dialogue, its examples in turn order.

    Raises
    ------
    ValueError
        If ``n_candidates < 2``, or a dialogue's own candidates are fewer than K, or the source
        has too few distinct replies to draw K - 1 distractors.
    """
    if n_candidates < 2:
        raise ValueError(
            f"n_candidates must be >= 2 (one true reply + distractors), got {n_candidates}"
        )
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    needs_pool = any(dialogues[j].candidates is None for j in indices)
    exclude = frozenset(exclude)
    if pool is None and needs_pool:
        pool = _ReplyPool(dialogues, exclude_texts=exclude)
    out: list[list[Example]] = []
    for j in indices:
        dialogue = dialogues[j]
        rng = np.random.default_rng([seed, j])
        chosen = dialogue.targets if targets is None else targets(dialogue)
        examples = []
        for i in chosen:
            true = dialogue.turns[i]
            if dialogue.candidates is None:
                assert pool is not None
                distractors = pool.draw(n_candidates - 1, j, true, rng)
            else:
                given = dialogue.candidates[dialogue.targets.index(i)]
                others = sorted(
                    {c for c in given if c != true and c not in exclude}, key=given.index
                )
                if len(others) < n_candidates - 1:
                    raise ValueError(
                        f"{dialogue.origin}: the file gives {len(others) + 1} distinct candidates "
                        f"(held-out texts left out), fewer than n_candidates={n_candidates}"
                    )
                pick = rng.choice(len(others), size=n_candidates - 1, replace=False)
                distractors = [others[p] for p in sorted(pick)]
            label = int(rng.integers(0, n_candidates))
            candidates = distractors[:label] + [true] + distractors[label:]
            examples.append(Example(tuple(dialogue.turns[:i]), tuple(candidates), label))
        out.append(examples)
    return out


# --------------------------------------------------------------------------------------------
# Tasks from groups of dialogues


def _choose_groups(
    dialogues: Sequence[Dialogue],
    groups: dict[str, list[int]],
    need: int,
    eval_dialogues: int,
    pick: Callable[[str, Dialogue], Sequence[int]],
) -> tuple[list[str], dict[str, tuple[int, int]], int]:
    """The ``need`` largest eligible groups (see :func:`make_tasks`), every group's (examples,
    dialogues) and the number of eligible groups."""
    sizes = {
        name: (sum(len(pick(name, dialogues[j])) for j in idx), len(idx))
        for name, idx in groups.items()
    }
    eligible = [
        name for name, idx in groups.items() if len(idx) > eval_dialogues and sizes[name][0]
    ]
    eligible.sort(key=lambda name: (-sizes[name][0], -sizes[name][1], name))
    if len(eligible) < need:
        raise ValueError(
            f"only {len(eligible)} groups have more than eval_dialogues={eval_dialogues} "
            f"dialogues, but n_retrain + n_test = {need}; lower them or eval_dialogues"
        )
    return eligible[:need], sizes, len(eligible)


def held_out_texts(
    dialogues: Sequence[Dialogue],
    groups: dict[str, list[int]],
    *,
    n_tasks: int,
    eval_dialogues: int,
    targets: Callable[[str, Dialogue], Sequence[int]] | None = None,
) -> set[str]:
    """Every turn of the dialogues that :func:`make_tasks` would hold out for ``n_tasks`` tasks.

    A two-file split keeps these texts (of the other file) out of training distractors.

    Parameters
    ----------
    dialogues, groups, eval_dialogues, targets
        As for :func:`make_tasks`.
    n_tasks : int
        ``n_retrain + n_test`` of that call.

    Returns
    -------
    set of str

    Examples
    --------
    >>> dialogues, groups = tiny_dialogues(2)
    >>> texts = held_out_texts(dialogues, groups, n_tasks=2, eval_dialogues=1)
    >>> last = [groups["tiny-0"][-1], groups["tiny-1"][-1]]
    >>> texts == {turn for j in last for turn in dialogues[j].turns}
    True
    """

    def pick(name: str, dialogue: Dialogue) -> Sequence[int]:
        return dialogue.targets if targets is None else targets(name, dialogue)

    chosen, _, _ = _choose_groups(dialogues, groups, n_tasks, eval_dialogues, pick)
    return {
        turn
        for name in chosen
        for j in groups[name][-eval_dialogues:]
        for turn in dialogues[j].turns
    }


def make_tasks(
    dialogues: Sequence[Dialogue],
    groups: dict[str, list[int]],
    *,
    n_retrain: int,
    n_test: int,
    n_candidates: int,
    seed: int,
    eval_dialogues: int,
    max_examples_per_task: int | None = None,
    targets: Callable[[str, Dialogue], Sequence[int]] | None = None,
    exclude_texts: Collection[str] = (),
) -> TaskSplit:
    """Choose the largest groups as tasks and split each into training and held-out dialogues.

    Groups are ranked by their number of examples (then dialogues, then name, for ties); groups
    with no more than ``eval_dialogues`` dialogues are not eligible (they would have no training
    data). The first ``n_retrain`` eligible groups become retraining tasks, the next ``n_test``
    unseen test tasks. Within a task, dialogues keep source order; the last ``eval_dialogues`` are
    held out.

    Training examples (every task's ``train``) draw their distractors only from the dialogues
    that no chosen task holds out, and never a string equal to a turn of a held-out dialogue (or
    to one of ``exclude_texts``): no held-out reply reaches training, not even as a negative.
    Held-out examples draw from all other dialogues of the source.

    Parameters
    ----------
    dialogues : sequence of Dialogue
        All dialogues of the source (their replies are the distractor pool).
    groups : dict
        Task name -> indices into ``dialogues`` (in source order).
    n_retrain, n_test : int
        Numbers of retraining and unseen tasks.
    n_candidates : int
        K candidates per example.
    seed : int
        Seed for the candidates (see :func:`build_examples`).
    eval_dialogues : int
        Dialogues held out at the end of each task (the paper: 2), >= 1.
    max_examples_per_task : int, optional
        Keep at most this many training examples per task (the first ones, in source order);
        the held-out examples are never capped.
    targets : callable, optional
        ``targets(task name, dialogue)``: which turns of a dialogue are that task's examples
        (default: all of ``dialogue.targets``); chitchat speaker tasks keep one speaker's replies.
    exclude_texts : collection of str
        More texts no training example may use as a distractor (a two-file split passes the
        other file's held-out turns).

    Returns
    -------
    TaskSplit

    Raises
    ------
    ValueError
        If the arguments are out of range or there are fewer than ``n_retrain + n_test``
        eligible groups.
    """
    if n_retrain < 0 or n_test < 0 or n_retrain + n_test == 0:
        raise ValueError(f"need n_retrain >= 0, n_test >= 0, not both 0; got {n_retrain}, {n_test}")
    if eval_dialogues < 1:
        raise ValueError(f"eval_dialogues must be >= 1, got {eval_dialogues}")
    if max_examples_per_task is not None and max_examples_per_task < 1:
        raise ValueError(f"max_examples_per_task must be >= 1 or None, got {max_examples_per_task}")

    def pick(name: str, dialogue: Dialogue) -> Sequence[int]:
        return dialogue.targets if targets is None else targets(name, dialogue)

    chosen, sizes, n_eligible = _choose_groups(
        dialogues, groups, n_retrain + n_test, eval_dialogues, pick
    )
    held_out = {j for name in chosen for j in groups[name][-eval_dialogues:]}
    never = {turn for j in held_out for turn in dialogues[j].turns} | set(exclude_texts)
    needs_pool = any(d.candidates is None for d in dialogues)
    pool = _ReplyPool(dialogues) if needs_pool else None
    train_pool = _ReplyPool(dialogues, held_out, never) if needs_pool else None
    tasks = []
    for name in chosen:
        idx = groups[name]
        train_idx, held_idx = idx[:-eval_dialogues], idx[-eval_dialogues:]
        if max_examples_per_task is not None:  # enough leading dialogues to fill the cap
            counts = np.cumsum([len(pick(name, dialogues[j])) for j in train_idx])
            train_idx = train_idx[: int(np.searchsorted(counts, max_examples_per_task)) + 1]
        task_targets = functools.partial(pick, name)
        per_train = build_examples(
            dialogues,
            train_idx,
            pool=train_pool,
            exclude=never,
            n_candidates=n_candidates,
            seed=seed,
            targets=task_targets,
        )
        per_held = build_examples(
            dialogues,
            held_idx,
            pool=pool,
            n_candidates=n_candidates,
            seed=seed,
            targets=task_targets,
        )
        train = [ex for exs in per_train for ex in exs]
        held = [ex for exs in per_held for ex in exs]
        if max_examples_per_task is not None:
            train = train[:max_examples_per_task]
        tasks.append(Task(name, tuple(train), tuple(held)))
    info = {
        "dialogues": len(dialogues),
        "examples": sum(len(pick(name, dialogues[j])) for name, idx in groups.items() for j in idx),
        "source_examples": sum(d.n_examples for d in dialogues),
        "groups": len(groups),
        "grouped_dialogues": len({j for idx in groups.values() for j in idx}),
        "eligible_groups": n_eligible,
        "chosen": {
            name: {"examples": sizes[name][0], "dialogues": sizes[name][1]} for name in chosen
        },
        "n_candidates": n_candidates,
        "seed": seed,
        "eval_dialogues": eval_dialogues,
        "max_examples_per_task": max_examples_per_task,
        "training_distractors": "training dialogues only (no held-out turn)",
    }
    return TaskSplit(retrain=tuple(tasks[:n_retrain]), test=tuple(tasks[n_retrain:]), info=info)


def group_by_persona(
    dialogues: Sequence[Dialogue],
    persona_map: dict[tuple[str, ...], int] | None = None,
    *,
    contractions: str = "i'm",
) -> dict[str, list[int]]:
    """Group ConvAI2 dialogues by the persona of "self".

    Parameters
    ----------
    dialogues : sequence of Dialogue
        From :func:`loraml.empirical.fbdialog.read_fbdialog`.
    persona_map : dict, optional
        From :func:`loraml.empirical.personas.load_persona_map`. If given, a dialogue belongs to the
        cluster of its normalised, sorted persona (:func:`loraml.empirical.personas.persona_key`);
        dialogues whose persona is not in the map belong to no group. If None, dialogues are
        grouped by their exact set of persona sentences (as written).
    contractions : {"i'm", "all"}
        Which ConvAI2 contractions to expand before the map lookup
        (:func:`loraml.empirical.personas.normalise_persona`): ``"i'm"`` (the maps' own rule; 734 of
        the valid file's 1,000 episodes match ``valid_persona_map``), ``"all"`` (all 1,000 match).

    Returns
    -------
    dict
        ``"persona-<cluster id>"`` (map) or ``"persona-exact-<n>"`` (n = order of first
        appearance) -> dialogue indices in source order.

    Raises
    ------
    DataError
        If a dialogue has no ``your persona:`` lines.
    """
    from loraml.empirical.personas import persona_key

    groups: dict[str, list[int]] = {}
    exact_names: dict[frozenset[str], str] = {}
    for j, dialogue in enumerate(dialogues):
        if not dialogue.persona:
            raise DataError(
                dialogue.origin, None, "episode has no 'your persona:' lines to group by"
            )
        if persona_map is not None:
            cluster = persona_map.get(persona_key(dialogue.persona, contractions=contractions))
            if cluster is None:
                continue
            name = f"persona-{cluster}"
        else:
            key = frozenset(dialogue.persona)
            name = exact_names.setdefault(key, f"persona-exact-{len(exact_names)}")
        groups.setdefault(name, []).append(j)
    return groups


# --------------------------------------------------------------------------------------------
# Sources


def _load_convai2(
    path: str | os.PathLike | None, persona_map: str | os.PathLike | None, contractions: str
) -> tuple[list[Dialogue], dict[str, list[int]], dict]:
    from loraml.empirical.personas import load_persona_map

    if path is None:
        found = default_convai2_paths()
        if found is None:
            raise FileNotFoundError(
                f"source 'convai2' needs path= (command line: --data-path FILE, a ParlAI "
                f"fbdialog file); no {CONVAI2_FILE} found in ${CONVAI2_ENV} or "
                f"../shared/data/convai2/"
            )
        path, default_map = found
        persona_map = default_map if persona_map is None else persona_map
    dialogues = read_fbdialog(path)
    mapping = load_persona_map(persona_map) if persona_map is not None else None
    groups = group_by_persona(dialogues, mapping, contractions=contractions)
    info = {
        "path": str(path),
        "persona_map": None if persona_map is None else str(persona_map),
        "grouping": "exact persona set" if mapping is None else f"persona map ({contractions})",
    }
    return dialogues, groups, info


# Tiny generated data: a made-up language with task-specific words.
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def _words(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        syllables = rng.integers(2, 4)
        word = "".join(
            _CONSONANTS[rng.integers(len(_CONSONANTS))] + _VOWELS[rng.integers(len(_VOWELS))]
            for _ in range(syllables)
        )
        if word not in taken:
            taken.add(word)
            out.append(word)
    return out


def tiny_dialogues(
    n_tasks: int,
    *,
    dialogues_per_task: int = 6,
    turns_per_dialogue: int = 4,
    seed: int = 0,
) -> tuple[list[Dialogue], dict[str, list[int]]]:
    """A small generated data set whose replies are learnable, deterministic in ``seed``.

    Every task has its own 4 words; 40 generic words and 24 topic words serve all tasks. Each
    partner utterance is three generic words around a topic word drawn afresh for the turn, and
    the reply is ``<task word> <topic word> <task word>``. So the true reply shares the turn's
    topic word with the context (a rule all tasks share) and is made of its task's words (a rule
    per task). Distractors come from other dialogues: some share the topic word by chance (1 in
    24 each), so the shared rule alone is right for most but not all examples, and knowing the
    task's words resolves most of the rest.

    Parameters
    ----------
    n_tasks : int
        Number of tasks (personas), >= 1.
    dialogues_per_task : int
        Dialogues per task, >= 2.
    turns_per_dialogue : int
        Replies per dialogue (each preceded by a partner utterance), >= 1.
    seed : int
        Seed of the generator that makes the words and dialogues.

    Returns
    -------
    dialogues : list of Dialogue
        Tasks interleaved in source order (dialogue ``j`` belongs to task ``j % n_tasks``), each
        with ``persona = ("tiny task <t>",)``.
    groups : dict
        ``"tiny-<t>"`` -> indices of task t's dialogues.
    """
    if n_tasks < 1 or dialogues_per_task < 2 or turns_per_dialogue < 1:
        raise ValueError(
            "tiny data needs n_tasks >= 1, dialogues_per_task >= 2, turns_per_dialogue >= 1; "
            f"got {n_tasks}, {dialogues_per_task}, {turns_per_dialogue}"
        )
    rng = np.random.default_rng([seed, 7919])
    taken: set[str] = set()
    generic = _words(rng, 40, taken)
    topics = _words(rng, 24, taken)
    task_words = [_words(rng, 4, taken) for _ in range(n_tasks)]
    dialogues: list[Dialogue] = []
    groups: dict[str, list[int]] = {f"tiny-{t}": [] for t in range(n_tasks)}
    for j in range(n_tasks * dialogues_per_task):
        t = j % n_tasks
        turns: list[str] = []
        for _ in range(turns_per_dialogue):
            topic = topics[rng.integers(len(topics))]
            g = [generic[i] for i in rng.integers(len(generic), size=3)]
            a, b = (task_words[t][i] for i in rng.choice(4, size=2, replace=False))
            turns.append(f"{g[0]} {g[1]} {topic} {g[2]}")
            turns.append(f"{a} {topic} {b}")
        dialogues.append(
            Dialogue(
                turns=tuple(turns),
                targets=tuple(range(1, len(turns), 2)),
                persona=(f"tiny task {t}",),
                origin=f"tiny:{j}",
            )
        )
        groups[f"tiny-{t}"].append(j)
    return dialogues, groups


@functools.lru_cache(maxsize=1)
def _chitchat_raw() -> dict:
    try:
        import chitchat_dataset
    except ImportError as err:  # pragma: no cover - the package is a dependency of the extra
        raise ImportError(
            "source 'chitchat' needs the chitchat-dataset package: pip install 'loraml[empirical]'"
        ) from err
    return dict(chitchat_dataset.Dataset())


def chitchat_dialogues() -> tuple[list[Dialogue], dict[str, str]]:
    """The conversations of the ``chitchat-dataset`` package as dialogues.

    A message (consecutive texts of one sender) is one turn, its texts joined by spaces. Every
    turn after the first is a target (the reply to the conversation so far). Conversations with a
    single message have no target and are left out (the package has 3,150 of its 7,168).

    Returns
    -------
    dialogues : list of Dialogue
        In the package's order, with ``speakers`` set and ``origin`` the conversation id.
    prompts : dict
        Conversation id -> its prompt (the conversation starter; may be empty).
    """
    dialogues: list[Dialogue] = []
    prompts: dict[str, str] = {}
    for conv_id, conv in _chitchat_raw().items():
        messages = conv["messages"]
        if len(messages) < 2:
            continue
        turns = tuple(" ".join(u["text"].strip() for u in m) for m in messages)
        speakers = tuple(m[0]["sender"] for m in messages)
        dialogues.append(
            Dialogue(
                turns=turns,
                targets=tuple(range(1, len(turns))),
                speakers=speakers,
                origin=f"chitchat:{conv_id}",
            )
        )
        prompts[conv_id] = (conv.get("prompt") or "").strip()
    return dialogues, prompts


def chitchat_groups(
    dialogues: Sequence[Dialogue], prompts: dict[str, str], by: str = "prompt"
) -> tuple[dict[str, list[int]], Callable[[str, Dialogue], Sequence[int]] | None]:
    """Group chitchat conversations into tasks by prompt or by speaker.

    Parameters
    ----------
    dialogues, prompts
        From :func:`chitchat_dialogues`.
    by : {"prompt", "speaker"}
        ``"prompt"``: a task is the conversations started from one prompt (35 prompts; those
        without a prompt belong to none), all replies of both speakers are examples.
        ``"speaker"``: a task is one sender; its examples are that sender's replies in the
        conversations it took part in.

    Returns
    -------
    groups : dict
        ``"chitchat-prompt-<n>"`` (n = rank of the prompt text in sorted order) or
        ``"chitchat-speaker-<first 8 hex digits of the sender id>"`` -> dialogue indices.
    targets : callable or None
        For speaker tasks, ``targets(task name, dialogue)`` giving that speaker's reply turns;
        None for prompt tasks (every reply is an example).
    """
    if by == "prompt":
        names = {
            p: f"chitchat-prompt-{n}" for n, p in enumerate(sorted(set(prompts.values()) - {""}))
        }
        groups: dict[str, list[int]] = {}
        for j, dialogue in enumerate(dialogues):
            prompt = prompts[dialogue.origin.removeprefix("chitchat:")]
            if prompt:
                groups.setdefault(names[prompt], []).append(j)
        return groups, None
    if by == "speaker":
        speaker_of: dict[str, str] = {}
        groups = {}
        for j, dialogue in enumerate(dialogues):
            assert dialogue.speakers is not None
            for speaker in dict.fromkeys(dialogue.speakers[i] for i in dialogue.targets):
                name = f"chitchat-speaker-{speaker[:8]}"
                if speaker_of.setdefault(name, speaker) != speaker:
                    raise DataError("chitchat", None, f"two senders share the task name {name}")
                groups.setdefault(name, []).append(j)

        def speaker_targets(name: str, dialogue: Dialogue) -> list[int]:
            assert dialogue.speakers is not None
            return [i for i in dialogue.targets if dialogue.speakers[i] == speaker_of[name]]

        return groups, speaker_targets
    raise ValueError(f"chitchat tasks are by 'prompt' or 'speaker', got {by!r}")


def load_tasks(
    source: str,
    *,
    n_retrain: int = 10,
    n_test: int = 10,
    n_candidates: int = 20,
    seed: int = 0,
    path: str | os.PathLike | None = None,
    persona_map: str | os.PathLike | None = None,
    eval_dialogues: int = 2,
    max_examples_per_task: int | None = None,
    persona_contractions: str = "i'm",
    test_path: str | os.PathLike | None = None,
    test_persona_map: str | os.PathLike | None = None,
) -> TaskSplit:
    """Retraining and unseen test tasks of response selection, from one source or two files.

    Parameters
    ----------
    source : str
        ``"convai2"``: the fbdialog file at ``path``, tasks = personas, grouped through the PAML
        map ``persona_map`` if given, else by exact persona set. With ``path=None`` the shared
        files are used (:func:`default_convai2_paths`: the valid file and ``valid_persona_map``).
        ``"chitchat"`` or ``"chitchat:prompt"``: the ``chitchat-dataset`` package, tasks =
        prompts; ``"chitchat:speaker"``: tasks = senders. ``"tiny"``: generated data
        (:func:`tiny_dialogues`, ``n_retrain + n_test`` tasks of 6 dialogues).
    n_retrain, n_test : int
        Numbers of retraining and unseen test tasks: the largest groups (by examples), the first
        ``n_retrain`` for retraining, the next ``n_test`` as unseen.
    n_candidates : int
        K candidates per example (ConvAI2: 20), the true reply at a seeded random position.
    seed : int
        Seeds the candidates (and the tiny data).
    path, persona_map : path-like, optional
        ConvAI2 files (see ``source``); not allowed for the other sources.
    eval_dialogues : int
        The last dialogues of each task held out for evaluation (the paper: 2).
    max_examples_per_task : int, optional
        Cap on each task's training examples (the first ones); held-out examples are not capped.
    persona_contractions : {"i'm", "all"}
        ConvAI2 with a persona map: the contractions expanded before the lookup (see
        :func:`group_by_persona`). Default: the maps' own rule (99 clusters, 734 episodes of the
        valid file); ``"all"`` places all 1,000 episodes (100 clusters).
    test_path, test_persona_map : path-like, optional
        ``"convai2"`` only: take the unseen test tasks from this second fbdialog file (grouped
        through ``test_persona_map`` if given, else by exact persona set) and the retraining
        tasks from ``path``, as the paper did (retraining on the train split, unseen personas
        from the valid split). Each file's largest groups are chosen, and each file's
        distractor candidates come from that file only. Without ``test_path`` both kinds of
        task come from ``path``: the largest groups retrain, the next ones are unseen.

    Returns
    -------
    TaskSplit

    Raises
    ------
    ValueError
        Unknown source, arguments out of range, or too few eligible groups.
    DataError
        Malformed data files (a ValueError naming file and line).
    FileNotFoundError
        ``"convai2"`` without ``path`` where the shared files are absent.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    kind, _, by = source.partition(":")
    if kind not in ("convai2", "chitchat", "tiny") or (by and kind != "chitchat"):
        raise ValueError(
            f"unknown source {source!r}; use 'convai2', 'chitchat', 'chitchat:prompt', "
            "'chitchat:speaker' or 'tiny'"
        )
    if kind != "convai2" and any(
        p is not None for p in (path, persona_map, test_path, test_persona_map)
    ):
        raise ValueError(
            f"path=, persona_map=, test_path= and test_persona_map= apply to source 'convai2' "
            f"only, not {source!r}"
        )
    if test_persona_map is not None and test_path is None:
        raise ValueError("test_persona_map= needs test_path= (the file it groups)")
    if test_path is not None:
        if path is None:
            raise ValueError("test_path= needs path= (the file of the retraining tasks)")
        common: dict[str, Any] = {
            "n_candidates": n_candidates,
            "seed": seed,
            "eval_dialogues": eval_dialogues,
            "max_examples_per_task": max_examples_per_task,
        }
        files = [
            (n_retrain, 0, *_load_convai2(path, persona_map, persona_contractions)),
            (0, n_test, *_load_convai2(test_path, test_persona_map, persona_contractions)),
        ]
        # each file's held-out turns stay out of the other file's training distractors too
        held = [
            held_out_texts(d, g, n_tasks=r + t, eval_dialogues=eval_dialogues)
            for r, t, d, g, _ in files
        ]
        first, second = (
            make_tasks(d, g, n_retrain=r, n_test=t, exclude_texts=held[1 - i], **common)
            for i, (r, t, d, g, _) in enumerate(files)
        )
        for part, (_, _, _, _, more) in zip((first, second), files, strict=True):
            part.info.update({"source": source, **more})
        info: dict = {"source": source, "retrain": first.info, "test": second.info}
        return TaskSplit(retrain=first.retrain, test=second.test, info=info)
    targets = None
    info = {"source": source if kind != "chitchat" else f"chitchat:{by or 'prompt'}"}
    if kind == "convai2":
        dialogues, groups, more = _load_convai2(path, persona_map, persona_contractions)
        info.update(more)
    elif kind == "chitchat":
        dialogues, prompts = chitchat_dialogues()
        groups, targets = chitchat_groups(dialogues, prompts, by or "prompt")
    else:
        dialogues, groups = tiny_dialogues(n_retrain + n_test, seed=seed)
    split = make_tasks(
        dialogues,
        groups,
        n_retrain=n_retrain,
        n_test=n_test,
        n_candidates=n_candidates,
        seed=seed,
        eval_dialogues=eval_dialogues,
        max_examples_per_task=max_examples_per_task,
        targets=targets,
    )
    split.info.update(info)
    return split

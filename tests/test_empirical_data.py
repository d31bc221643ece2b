"""Tests for the language-experiment data: fbdialog reader, persona maps, candidates, tasks."""

from __future__ import annotations

import collections
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loraml.empirical.data import (
    DataError,
    Dialogue,
    Example,
    build_examples,
    chitchat_dialogues,
    chitchat_groups,
    default_convai2_paths,
    encode_pair_texts,
    group_by_persona,
    load_tasks,
    make_tasks,
    tiny_dialogues,
)
from loraml.empirical.fbdialog import read_fbdialog
from loraml.empirical.personas import (
    load_persona_map,
    normalise_persona,
    persona_key,
    restricted_loads,
)
from tests.helpers import write_persona_file

# --------------------------------------------------------------------------------------------
# The real ConvAI2 valid file (skipped where ../shared/data/convai2 is absent)


def _convai2_dir() -> Path | None:
    env = os.environ.get("LORAML_CONVAI2_DIR")
    for root in ([Path(env)] if env else []) + [
        Path(__file__).parents[1].parent / "shared/data/convai2"
    ]:
        if (root / "valid_self_original_no_cands.txt").is_file():
            return root
    return None


@pytest.fixture(scope="module")
def convai2() -> tuple[Path, list[Dialogue]]:
    root = _convai2_dir()
    if root is None:
        pytest.skip("ConvAI2 files absent (../shared/data/convai2 or $LORAML_CONVAI2_DIR)")
    return root, read_fbdialog(root / "valid_self_original_no_cands.txt")


def test_real_file_counts(convai2):
    root, dialogues = convai2
    raw = (root / "valid_self_original_no_cands.txt").read_text(encoding="utf-8").splitlines()
    assert len(dialogues) == 1000
    assert sum(d.n_examples for d in dialogues) == 7801
    # every line is accounted for: persona lines + one line per turn pair
    assert sum(len(d.persona) + d.n_examples for d in dialogues) == len(raw) == 12284
    assert all(d.candidates is None and len(d.persona) in (4, 5) for d in dialogues)
    # the last episode is kept: its last reply is the file's last line's reply
    assert dialogues[-1].turns[-1] == raw[-1].split("\t")[1]
    assert dialogues[-1].turns[-2] == raw[-1].split("\t")[0].split(" ", 1)[1]


def test_real_file_persona_groups(convai2):
    root, dialogues = convai2
    assert len(group_by_persona(dialogues)) == 680  # exact persona sets (measured)
    mapping = load_persona_map(root / "valid_persona_map")
    assert len(mapping) == 409 and len(set(mapping.values())) == 100  # SOURCE.md
    groups = group_by_persona(dialogues, mapping)
    assert sum(len(idx) for idx in groups.values()) == 734
    assert len(groups) == 99
    turns = sorted(
        (sum(dialogues[j].n_examples for j in idx) for idx in groups.values()), reverse=True
    )
    # Team notes said the 20 largest hold 78-173 turns; measured: 84-173 (78 is the 25th-27th
    # largest cluster; ranking by dialogue count instead gives 81-173). See the data report.
    assert turns[0] == 173 and turns[19] == 84 and turns[24] == 78
    # the maps hold no apostrophes: expanding every contraction (i've, don't, i'll, ...) places
    # all 1,000 episodes, in 100 clusters
    full = group_by_persona(dialogues, mapping, contractions="all")
    assert sum(len(idx) for idx in full.values()) == 1000 and len(full) == 100
    assert all(set(idx) >= set(groups.get(name, [])) for name, idx in full.items())


def test_real_file_default_tasks(convai2):
    root, dialogues = convai2
    if default_convai2_paths() is None:
        pytest.skip("default ConvAI2 paths absent")
    split = load_tasks("convai2")
    names = [t.name for t in split.retrain + split.test]
    assert len(split.retrain) == 10 and len(split.test) == 10 and len(set(names)) == 20
    info = split.info
    assert (info["dialogues"], info["source_examples"]) == (1000, 7801)
    assert (info["grouped_dialogues"], info["groups"]) == (734, 99)
    assert list(info["chosen"]) == names
    groups = group_by_persona(dialogues, load_persona_map(root / "valid_persona_map"))
    size = {n: sum(dialogues[j].n_examples for j in idx) for n, idx in groups.items()}
    ranked = sorted(size.values(), reverse=True)
    assert [size[t.name] for t in split.retrain] == ranked[:10]
    assert [size[t.name] for t in split.test] == ranked[10:20]
    for task in split.retrain + split.test:
        idx = groups[task.name]
        held = [dialogues[j] for j in idx[-2:]]
        assert len(task.eval) == sum(d.n_examples for d in held)
        assert len(task.train) + len(task.eval) == size[task.name]
        # held-out examples are exactly the last two dialogues' turns, in order
        assert [ex.reply for ex in task.eval] == [d.turns[i] for d in held for i in d.targets]
        assert [ex.context for ex in task.eval] == [d.turns[:i] for d in held for i in d.targets]
        assert all(len(ex.candidates) == 20 for ex in task.train + task.eval)


def test_real_file_candidates(convai2):
    _, dialogues = convai2
    per_dialogue = build_examples(dialogues, range(len(dialogues)), n_candidates=20, seed=0)
    owners = collections.defaultdict(set)
    for j, d in enumerate(dialogues):
        for i in d.targets:
            owners[d.turns[i]].add(j)
    labels = []
    for j, examples in enumerate(per_dialogue):
        for ex, i in zip(examples, dialogues[j].targets, strict=True):
            assert ex.reply == dialogues[j].turns[i]
            assert len(set(ex.candidates)) == 20  # distinct, truth exactly once
            for k, cand in enumerate(ex.candidates):
                if k != ex.label:
                    assert owners[cand] - {j}, "distractor must come from another episode"
            labels.append(ex.label)
    # the true reply's position is uniform over 0..19: 7,801 labels, ~390 per position
    counts = np.bincount(labels, minlength=20)
    assert counts.sum() == 7801 and counts.min() > 300 and counts.max() < 480


# --------------------------------------------------------------------------------------------
# Reader on small files


GOOD = (
    "1 your persona: i like cats.\n"
    "2 your persona: i'm a pilot.\n"
    "3 hi there\thello ! i love cats .\n"
    "4 what do you do ?\ti fly planes .\n"
    "1 your persona: i hate rain.\n"
    "2 __SILENCE__\tis it raining where you are ?\n"
)


def _write(tmp_path: Path, content: str | bytes, name: str = "data.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="|"),
    min_size=1,
    max_size=12,
).filter(lambda t: t.strip() == t and t != "")


@given(
    episodes=st.lists(
        st.tuples(
            st.lists(_text, min_size=0, max_size=3),
            st.lists(st.tuples(_text, _text), min_size=1, max_size=4),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_reader_round_trip(episodes):
    lines = []
    for persona, turns in episodes:
        n = 0
        for sentence in persona:
            n += 1
            lines.append(f"{n} your persona: {sentence}")
        for partner, reply in turns:
            n += 1
            lines.append(f"{n} {partner}\t{reply}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "round_trip.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        dialogues = read_fbdialog(path)
    assert len(dialogues) == len(episodes)
    for dialogue, (persona, turns) in zip(dialogues, episodes, strict=True):
        assert dialogue.persona == tuple(persona)
        assert dialogue.turns == tuple(t for pair in turns for t in pair)
        assert [dialogue.turns[i] for i in dialogue.targets] == [r for _, r in turns]


@pytest.mark.parametrize("trailing_newline", [True, False])
def test_reader_small_file_keeps_last_episode(tmp_path, trailing_newline):
    text = GOOD if trailing_newline else GOOD.rstrip("\n")
    dialogues = read_fbdialog(_write(tmp_path, text))
    assert len(dialogues) == 2
    first, last = dialogues
    assert first.persona == ("i like cats.", "i'm a pilot.")
    assert first.turns == (
        "hi there",
        "hello ! i love cats .",
        "what do you do ?",
        "i fly planes .",
    )
    assert first.targets == (1, 3)
    assert last.turns == ("__SILENCE__", "is it raining where you are ?") and last.targets == (1,)
    assert last.origin.endswith(":5")


def test_reader_with_candidates(tmp_path):
    text = (
        "1 your persona: i like cats.\n"
        "2 partner's persona: i like dogs.\n"
        "3 hi\thello\t\tfoo|hello|bar|baz\n"
        "4 how are you ?\tfine\t\tfine|qux|foo|quux\n"
    )
    (dialogue,) = read_fbdialog(_write(tmp_path, text))
    assert dialogue.partner_persona == ("i like dogs.",)
    assert dialogue.candidates == (("foo", "hello", "bar", "baz"), ("fine", "qux", "foo", "quux"))
    (examples,) = build_examples([dialogue], [0], n_candidates=3, seed=1)
    for ex, truth, offered in zip(examples, ["hello", "fine"], dialogue.candidates, strict=True):
        assert (
            ex.reply == truth
            and set(ex.candidates) <= set(offered)
            and len(set(ex.candidates)) == 3
        )
    with pytest.raises(ValueError, match="fewer than n_candidates=5"):
        build_examples([dialogue], [0], n_candidates=5, seed=1)


MALFORMED = {
    "not utf-8": (b"1 your persona: a.\n2 hi\thello\n3 caf\xe9\tok\n", 3, "not UTF-8"),
    "no line number": ("1 your persona: a.\nhi\thello\n", 2, "line number"),
    "number not ascii digit": ("1 your persona: a.\n\u00b2 hi\thello\n", 2, "line number"),
    "non-increasing number": (
        "1 your persona: a.\n2 hi\thello\n3 a\tb\n2 c\td\n",
        4,
        "out of sequence",
    ),
    "skipped number": ("1 your persona: a.\n2 hi\thello\n4 a\tb\n", 3, "out of sequence"),
    "first number not 1": ("2 your persona: a.\n3 hi\thello\n", 1, "out of sequence"),
    "missing tab": ("1 your persona: a.\n2 hi hello\n", 2, "no TAB"),
    "three fields": ("1 your persona: a.\n2 hi\thello\t\n", 2, "3 TAB-separated fields"),
    "empty reply": ("1 your persona: a.\n2 hi\t \n", 2, "empty reply"),
    "empty partner": ("1 your persona: a.\n2 \thello\n", 2, "empty partner"),
    "blank line": ("1 your persona: a.\n2 hi\thello\n\n", 3, "line number"),
    "empty episode": (
        "1 your persona: a.\n2 your persona: b.\n1 your persona: c.\n2 a\tb\n",
        1,
        "no dialogue turns",
    ),
    "empty last episode": (
        "1 your persona: a.\n2 a\tb\n1 your persona: c.\n",
        3,
        "no dialogue turns",
    ),
    "persona after turns": (
        "1 your persona: a.\n2 a\tb\n3 your persona: c.\n",
        3,
        "persona line after",
    ),
    "empty persona": ("1 your persona:  \n2 a\tb\n", 1, "empty persona"),
    "reply not a candidate": ("1 your persona: a.\n2 hi\thello\t\tx|y\n", 2, "not among"),
    "mixed candidates": ("1 your persona: a.\n2 hi\thello\t\thello|y\n3 a\tb\n", 3, "some turns"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_reader_malformed_names_file_and_line(tmp_path, case):
    content, line, phrase = MALFORMED[case]
    path = _write(tmp_path, content, name="bad.txt")
    with pytest.raises(DataError) as info:
        read_fbdialog(path)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.path == str(path) and err.line == line
    assert str(err).startswith(f"{path}:{line}: ")
    assert phrase in str(err)


def test_reader_empty_file(tmp_path):
    path = _write(tmp_path, "")
    with pytest.raises(DataError, match="no episodes") as info:
        read_fbdialog(path)
    assert info.value.path == str(path)


# --------------------------------------------------------------------------------------------
# Candidates


def _dialogues_with_tagged_replies(n: int, turns: int = 3) -> list[Dialogue]:
    out = []
    for j in range(n):
        t = []
        for i in range(turns):
            t += [f"partner {j}.{i}", f"reply {j}.{i}"]
        out.append(Dialogue(turns=tuple(t), targets=tuple(range(1, 2 * turns, 2)), origin=f"d{j}"))
    return out


def test_candidates_are_seeded():
    dialogues = _dialogues_with_tagged_replies(30)
    a = build_examples(dialogues, range(30), n_candidates=8, seed=5)
    b = build_examples(dialogues, range(30), n_candidates=8, seed=5)
    c = build_examples(dialogues, range(30), n_candidates=8, seed=6)
    assert a == b
    assert a != c
    # a dialogue's candidates do not depend on which other dialogues are built
    assert build_examples(dialogues, [7], n_candidates=8, seed=5)[0] == a[7]


def test_candidates_come_from_other_dialogues_never_the_truth():
    dialogues = _dialogues_with_tagged_replies(12)
    for j, examples in enumerate(build_examples(dialogues, range(12), n_candidates=10, seed=0)):
        for ex in examples:
            assert ex.candidates.count(ex.reply) == 1
            others = [c for k, c in enumerate(ex.candidates) if k != ex.label]
            assert all(not c.startswith(f"reply {j}.") for c in others)
            assert len(set(others)) == len(others)


def test_candidates_exclude_string_identical_copies_of_the_truth():
    # many dialogues reply the same "i like it ." that each example's truth also is
    dialogues = [
        Dialogue(turns=("hi", "i like it .", "ok", f"unique {j}"), targets=(1, 3), origin=f"d{j}")
        for j in range(40)
    ]
    for examples in build_examples(dialogues, range(40), n_candidates=12, seed=3):
        for ex in examples:
            assert ex.candidates.count(ex.reply) == 1


def test_candidates_need_enough_distinct_replies():
    dialogues = [Dialogue(turns=("hi", "same"), targets=(1,)) for _ in range(50)]
    with pytest.raises(ValueError, match="distinct"):
        build_examples(dialogues, [0], n_candidates=2, seed=0)
    with pytest.raises(ValueError, match="n_candidates must be >= 2"):
        build_examples(_dialogues_with_tagged_replies(3), [0], n_candidates=1, seed=0)


def test_encode_pair_texts():
    ex = Example(
        context=("hi", "hello", "how are you ?"), candidates=("fine", "blue", "no"), label=0
    )
    assert encode_pair_texts(ex, " </s> ") == [
        ("hi </s> hello </s> how are you ?", "fine"),
        ("hi </s> hello </s> how are you ?", "blue"),
        ("hi </s> hello </s> how are you ?", "no"),
    ]


# --------------------------------------------------------------------------------------------
# Persona maps


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/loraml_pwned_by_pickle",))


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = Path("/tmp/loraml_pwned_by_pickle")
    marker.unlink(missing_ok=True)
    payload = pickle.dumps({1: [["i am x"]], 2: _Evil()})
    with pytest.raises(pickle.UnpicklingError, match="forbidden"):
        restricted_loads(payload)
    path = _write(tmp_path, payload, name="evil_map")
    with pytest.raises(DataError, match="refused"):
        load_persona_map(path)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):
        restricted_loads(pickle.dumps(eval))


def test_restricted_unpickler_allows_only_numeric_numpy_scalars():
    assert restricted_loads(pickle.dumps({np.int32(3): [np.float64(1.5)]})) == {3: [1.5]}
    for obj in (np.str_("x"), np.array([1, 2]), np.dtype("O")):
        with pytest.raises(pickle.UnpicklingError):
            restricted_loads(pickle.dumps(obj))


def test_data_modules_import_without_torch():
    code = (
        "import sys, loraml.empirical.data, loraml.empirical.fbdialog, loraml.empirical.personas; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    root = Path(__file__).parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=60)


def test_persona_map_with_numpy_keys(tmp_path):
    pmap = {np.int32(3): [["i am a pilot", "i like cats"]], np.int64(7): [["i hate rain"]]}
    path = _write(tmp_path, pickle.dumps(pmap), name="map")
    assert load_persona_map(path) == {("i am a pilot", "i like cats"): 3, ("i hate rain",): 7}


def test_normalise_persona():
    assert normalise_persona("I'm a stunt double as my second job.") == (
        "i am a stunt double as my second job"
    )
    assert normalise_persona("i swim in him.") == "i swim in him"
    assert persona_key(["i'm tall.", "i like cats."]) == ("i am tall", "i like cats")
    assert normalise_persona("I've a dog.") == "i've a dog"  # default rule: i'm only
    assert normalise_persona("I've a dog and i don't walk.", contractions="all") == (
        "i have a dog and i do not walk"
    )
    assert normalise_persona("they're nice, i'll go, i won't", contractions="all") == (
        "they are nice, i will go, i will not"
    )
    with pytest.raises(ValueError, match="contractions"):
        normalise_persona("x", contractions="none")


def test_group_by_persona_exact_and_mapped():
    def d(*persona):
        return Dialogue(turns=("a", "b"), targets=(1,), persona=persona)

    dialogues = [
        d("i like cats.", "i'm tall."),
        d("i'm tall.", "i like cats."),
        d("i hate rain."),
        d("x."),
    ]
    exact = group_by_persona(dialogues)
    assert sorted(exact.values()) == [[0, 1], [2], [3]]
    mapping = {("i am tall", "i like cats"): 4, ("i hate rain",): 4}
    assert group_by_persona(dialogues, mapping) == {"persona-4": [0, 1, 2]}
    with pytest.raises(DataError, match="no 'your persona:'"):
        group_by_persona([Dialogue(turns=("a", "b"), targets=(1,), origin="f:1")])


# --------------------------------------------------------------------------------------------
# Task splits


def test_make_tasks_largest_groups_and_last_dialogues_held_out():
    dialogues = _dialogues_with_tagged_replies(40)
    # sizes (dialogues): g0 3, g1 9, g2 6, g3 12, g4 2 (too small with eval_dialogues=2), ...
    groups = {
        "g0": [0, 1, 2],
        "g1": list(range(3, 12)),
        "g2": list(range(12, 18)),
        "g3": list(range(18, 30)),
        "g4": [30, 31],
        "g5": list(range(32, 36)),
    }
    split = make_tasks(
        dialogues, groups, n_retrain=2, n_test=2, n_candidates=5, seed=0, eval_dialogues=2
    )
    assert [t.name for t in split.retrain] == ["g3", "g1"]
    assert [t.name for t in split.test] == ["g2", "g5"]
    g1 = split.retrain[1]
    assert [ex.reply for ex in g1.eval] == [f"reply {j}.{i}" for j in (10, 11) for i in range(3)]
    assert [ex.reply for ex in g1.train] == [
        f"reply {j}.{i}" for j in range(3, 10) for i in range(3)
    ]
    capped = make_tasks(
        dialogues,
        groups,
        n_retrain=2,
        n_test=2,
        n_candidates=5,
        seed=0,
        eval_dialogues=2,
        max_examples_per_task=4,
    )
    for full, cap in zip(split.retrain + split.test, capped.retrain + capped.test, strict=True):
        assert cap.train == full.train[:4] and cap.eval == full.eval
    with pytest.raises(ValueError, match="only 5 groups"):
        make_tasks(
            dialogues, groups, n_retrain=3, n_test=3, n_candidates=5, seed=0, eval_dialogues=2
        )


def test_load_tasks_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown source"):
        load_tasks("persona")
    with pytest.raises(ValueError, match="'convai2' only"):
        load_tasks("tiny", path="x.txt")
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        load_tasks("tiny", n_retrain=2, n_test=1, seed=-1)
    with pytest.raises(ValueError, match="eval_dialogues"):
        load_tasks("tiny", n_retrain=2, n_test=1, eval_dialogues=0)


def test_default_convai2_paths_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAML_CONVAI2_DIR", str(tmp_path))
    assert default_convai2_paths() is None
    (tmp_path / "valid_self_original_no_cands.txt").write_text("x")
    assert default_convai2_paths() is None  # the persona map is missing
    (tmp_path / "valid_persona_map").write_bytes(b"x")
    assert default_convai2_paths() == (
        tmp_path / "valid_self_original_no_cands.txt",
        tmp_path / "valid_persona_map",
    )


def test_load_tasks_convai2_explicit_file_exact_personas(tmp_path):
    lines = []
    for e in range(8):  # personas A (5 episodes) and B (3 episodes), alternating
        persona = "a" if e % 3 else "b"
        lines += [
            f"1 your persona: i am {persona}.",
            f"2 hi {e}\treply {e} one",
            f"3 so ?\treply {e} two",
        ]
    path = _write(tmp_path, "\n".join(lines) + "\n")
    split = load_tasks("convai2", path=path, n_retrain=1, n_test=1, n_candidates=4)
    (a,), (b,) = split.retrain, split.test
    assert len(a.train) == 6 and len(a.eval) == 4 and len(b.train) == 2 and len(b.eval) == 4
    assert [ex.reply for ex in b.eval] == [
        "reply 3 one",
        "reply 3 two",
        "reply 6 one",
        "reply 6 two",
    ]


def test_load_tasks_convai2_two_files_retrain_from_one_test_from_the_other(tmp_path):
    train = write_persona_file(tmp_path / "train", {"a": 6, "b": 5, "c": 4, "d": 3})
    valid = write_persona_file(tmp_path / "valid", {"x": 3, "y": 5, "z": 4})
    split = load_tasks(
        "convai2", path=train, test_path=valid, n_retrain=3, n_test=2, n_candidates=4, seed=1
    )
    assert len(split.retrain) == 3 and len(split.test) == 2
    # the largest groups of each file: train a, b, c; valid y, z
    first = {t.name: t.train[0].reply.split()[1] for t in split.retrain}
    second = {t.name: t.train[0].reply.split()[1] for t in split.test}
    assert sorted(first.values()) == ["a", "b", "c"] and sorted(second.values()) == ["y", "z"]
    for tasks, name in ((split.retrain, "train"), (split.test, "valid")):
        for task in tasks:
            for ex in task.train + task.eval:  # every candidate is from the task's own file
                assert all(c.startswith(f"{name} ") for c in ex.candidates)
    assert split.info["retrain"]["path"] == str(train)
    assert split.info["test"]["path"] == str(valid)
    # the same retraining tasks as from the train file alone
    alone = load_tasks("convai2", path=train, n_retrain=3, n_test=0, n_candidates=4, seed=1)
    assert split.retrain == alone.retrain


def test_load_tasks_two_files_rejects_half_settings(tmp_path):
    valid = write_persona_file(tmp_path / "valid", {"x": 3, "y": 5})
    with pytest.raises(ValueError, match="test_path= needs path="):
        load_tasks("convai2", test_path=valid)
    with pytest.raises(ValueError, match="test_persona_map= needs test_path="):
        load_tasks("convai2", path=valid, test_persona_map="m")
    with pytest.raises(ValueError, match="'convai2' only"):
        load_tasks("tiny", test_path=valid)


# --------------------------------------------------------------------------------------------
# No held-out text in training (issue 12, "Data: no leaks")


def _training_leaks(split) -> list[tuple[str, str]]:
    """(task, text) for every held-out reply (the true reply of a held-out example, of any task)
    found anywhere in a training example (retraining or fine-tuning: context, truth or
    distractor)."""
    held = {ex.reply for task in split.retrain + split.test for ex in task.eval}
    return [
        (task.name, text)
        for task in split.retrain + split.test
        for ex in task.train
        for text in ex.candidates + ex.context
        if text in held
    ]


def test_real_file_no_held_out_reply_reaches_training(convai2):
    # Before the fix, 149 of the 154 held-out replies of the unseen tasks were distractors of
    # retraining examples and 22 were distractors of their own task's fine-tuning examples.
    root, _ = convai2
    split = load_tasks(
        "convai2",
        path=root / "valid_self_original_no_cands.txt",
        persona_map=root / "valid_persona_map",
        n_candidates=20,
        seed=0,
    )
    assert sum(len(t.eval) for t in split.test) == 154
    assert _training_leaks(split) == []
    # still 19 distinct distractors per training example, from other dialogues
    assert all(len(set(ex.candidates)) == 20 for t in split.retrain for ex in t.train)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_file_no_held_out_reply_reaches_training(tmp_path, seed):
    # a small pool (98 replies) and K = 30: without the fix nearly every held-out reply is drawn
    path = write_persona_file(
        tmp_path / "data", {p: n for p, n in zip("abcdefg", [9, 8, 8, 7, 6, 6, 5], strict=True)}
    )
    split = load_tasks("convai2", path=path, n_retrain=3, n_test=3, n_candidates=30, seed=seed)
    assert _training_leaks(split) == []
    held = {ex.reply for t in split.retrain + split.test for ex in t.eval}
    assert len(held) == 6 * 2 * 2  # 2 held-out dialogues of 2 replies per task
    # held-out examples still draw from every other dialogue, training ones included
    train_replies = {ex.reply for t in split.retrain + split.test for ex in t.train}
    assert any(set(ex.candidates) & train_replies for t in split.test for ex in t.eval)


def test_two_files_keep_each_others_held_out_texts_out_of_training(tmp_path):
    # The same file name in two folders: both files hold the replies "data <p> <e> one|two", so
    # file 2's held-out replies exist in file 1, where training could draw them as negatives.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    train = write_persona_file(tmp_path / "a" / "data", {"a": 9, "b": 8, "c": 7, "x": 5, "y": 5})
    valid = write_persona_file(tmp_path / "b" / "data", {"x": 7, "y": 6, "a": 3, "b": 3})
    split = load_tasks(
        "convai2", path=train, test_path=valid, n_retrain=3, n_test=2, n_candidates=25, seed=0
    )
    assert [t.train[0].reply.split()[1] for t in split.test] == ["x", "y"]
    held_test = {ex.reply for t in split.test for ex in t.eval}
    file1 = {d.turns[i] for d in read_fbdialog(train) for i in d.targets}
    # episode 4 of persona y in file 1 is a training dialogue there (y is not a chosen task)
    assert held_test & file1 == {"data y 4 one", "data y 4 two"}
    assert _training_leaks(split) == []


def test_build_examples_exclude_applies_to_a_files_own_candidates(tmp_path):
    text = "1 your persona: i like cats.\n2 hi\thello\t\tfoo|hello|bar|baz|qux\n"
    (dialogue,) = read_fbdialog(_write(tmp_path, text))
    for seed in range(20):
        ((ex,),) = build_examples([dialogue], [0], n_candidates=4, seed=seed, exclude={"bar"})
        assert "bar" not in ex.candidates and len(set(ex.candidates)) == 4
    with pytest.raises(ValueError, match="held-out texts left out"):
        build_examples([dialogue], [0], n_candidates=5, seed=0, exclude={"bar"})


# --------------------------------------------------------------------------------------------
# Tiny generated data


def test_tiny_is_deterministic_and_learnable():
    a = load_tasks("tiny", n_retrain=3, n_test=2, seed=0)
    assert a == load_tasks("tiny", n_retrain=3, n_test=2, seed=0)
    assert a != load_tasks("tiny", n_retrain=3, n_test=2, seed=1)
    tasks = a.retrain + a.test
    assert [(len(t.train), len(t.eval)) for t in tasks] == [(16, 8)] * 5
    # the truth shares the last utterance's topic word (a rule shared by all tasks), and is made
    # of the task's own words (a rule per task, read off the task's training replies)
    shared, with_task = [], []
    for t in tasks:
        own = {w for ex in t.train for w in ex.reply.split()[::2]}  # first and last words
        for ex in t.train + t.eval:
            last = set(ex.context[-1].split())
            s1 = np.array([len(last & set(c.split())) for c in ex.candidates], dtype=float)
            s2 = s1 + np.array([len(own & set(c.split())) / 10 for c in ex.candidates])
            for scores, out in ((s1, shared), (s2, with_task)):
                best = np.flatnonzero(scores == scores.max())
                out.append((ex.label in best) / len(best))  # expected hits@1, ties at random
    assert 0.5 < np.mean(shared) < 0.9  # chance is 1/20
    # (a distractor of the same task with the same topic word is indistinguishable: not 100 %)
    assert np.mean(with_task) > max(0.85, np.mean(shared) + 0.15)
    # and each task has words of its own: replies' first words never shared across tasks
    firsts = [{ex.reply.split()[0] for ex in t.train + t.eval} for t in tasks]
    assert all(not (firsts[i] & firsts[j]) for i in range(5) for j in range(i + 1, 5))


def test_tiny_dialogues_shape():
    dialogues, groups = tiny_dialogues(3, dialogues_per_task=4, turns_per_dialogue=2, seed=9)
    assert len(dialogues) == 12 and groups == {
        f"tiny-{t}": [t, t + 3, t + 6, t + 9] for t in range(3)
    }
    assert all(len(d.turns) == 4 and d.targets == (1, 3) for d in dialogues)


# --------------------------------------------------------------------------------------------
# chitchat-dataset


@pytest.fixture(scope="module")
def chitchat():
    pytest.importorskip("chitchat_dataset")
    return chitchat_dialogues()


def test_chitchat_dialogues_counts(chitchat):
    dialogues, prompts = chitchat
    # the package holds 7,168 conversations, 3,150 of them a single message (no reply)
    assert len(dialogues) == 7168 - 3150
    # the package's own compounding view has one example per message after the first
    assert sum(d.n_examples for d in dialogues) == 131569
    by_prompt, targets = chitchat_groups(dialogues, prompts, "prompt")
    # 34 distinct non-empty prompts (team notes said 35: the package also has 239 conversations
    # without a prompt and 4 with an empty one, which belong to no prompt task)
    assert targets is None and len(by_prompt) == 34


def test_chitchat_speaker_tasks(chitchat):
    dialogues, prompts = chitchat
    groups, targets = chitchat_groups(dialogues, prompts, "speaker")
    for name in list(groups)[:20]:
        speaker_ids = set()
        for j in groups[name]:
            chosen = targets(name, dialogues[j])
            assert chosen  # every dialogue of the task has a reply by its speaker
            speaker_ids |= {dialogues[j].speakers[i] for i in chosen}
        assert len(speaker_ids) == 1 and name.endswith(next(iter(speaker_ids))[:8])
    split = load_tasks(
        "chitchat:speaker", n_retrain=2, n_test=1, n_candidates=5, max_examples_per_task=30
    )
    assert [len(t.train) for t in split.retrain + split.test] == [30, 30, 30]
    assert all(t.eval for t in split.retrain + split.test)
    assert len({t.name for t in split.retrain + split.test}) == 3


def test_chitchat_prompt_tasks(chitchat):
    dialogues, prompts = chitchat
    groups, _ = chitchat_groups(dialogues, prompts, "prompt")
    split = load_tasks("chitchat", n_retrain=3, n_test=2, n_candidates=6, max_examples_per_task=40)
    for task in split.retrain + split.test:
        held = [dialogues[j] for j in groups[task.name][-2:]]
        assert [ex.context for ex in task.eval] == [d.turns[:i] for d in held for i in d.targets]
        assert len(task.train) == 40 and all(len(ex.candidates) == 6 for ex in task.train)
    with pytest.raises(ValueError, match="'prompt' or 'speaker'"):
        chitchat_groups(dialogues, prompts, "topic")


def test_missing_convai2_file_names_the_command_line_option(monkeypatch):
    """Without the file, the error says how to give it on the command line (--data-path)."""
    import loraml.empirical.data as data_module

    monkeypatch.setattr(data_module, "default_convai2_paths", lambda: None)
    with pytest.raises(FileNotFoundError, match="--data-path FILE"):
        data_module._load_convai2(None, None, "keep")

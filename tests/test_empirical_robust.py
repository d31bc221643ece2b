"""Hostile files, faults and bad input for ``loraml empirical run/report`` (issue 11): a crafted
checkpoint runs nothing, a corrupt one is named in one line, a diverging run stops without a
result, and bad arguments are refused before anything is created."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from loraml.cli import main  # noqa: E402
from loraml.empirical import run as R  # noqa: E402
from loraml.empirical import train as T  # noqa: E402
from loraml.empirical.fbdialog import DataError  # noqa: E402
from loraml.empirical.personas import load_persona_map  # noqa: E402
from loraml.empirical.run import PRESETS, RunInterrupted, StepBudget, run_experiment  # noqa: E402
from tests.helpers import write_persona_file  # noqa: E402

pytestmark = [pytest.mark.empirical, pytest.mark.usefixtures("one_torch_thread")]

# SR on tiny: 3 retraining batches per epoch; one LoRA-free fine-tuning scheme (head only).
_CFG = dataclasses.replace(PRESETS["tiny"], methods=("sr",), ranks=(), epochs=2, ft_epochs=1)
_ARGV = ["empirical", "run", "--preset", "tiny", "--methods", "sr", "--ranks", "--epochs", "2"]
_ARGV += ["--ft-epochs", "1", "--no-progress"]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


class _Evil:
    """Unpickling this calls ``open(marker, "w")``: it creates the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _cut_after_first_epoch(out):
    with pytest.raises(RunInterrupted):
        run_experiment(_CFG, [0], out, progress=False, budget=StepBudget(4))
    return out / "seed0" / "retrain-sr.ckpt.pt"


def test_malicious_checkpoint_runs_nothing_and_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    ckpt = _cut_after_first_epoch(out)
    marker = tmp_path / "pwned"
    torch.save({"epoch": 1, "model": _Evil(str(marker))}, ckpt)
    # even with a matching checksum (an attacker can compute one), nothing may run
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    (ckpt.parent / (ckpt.name + ".sha256")).write_text(json.dumps({"sha256": [digest]}))
    assert main([*_ARGV, "--out", str(out)]) == 2
    err = _one_line_error(capsys)
    assert str(ckpt) in err and "not a loadable checkpoint" in err
    assert not marker.exists()
    assert not (out / "results.json").exists()


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_checkpoint_is_named_in_one_line(tmp_path, capsys, damage):
    out = tmp_path / "run"
    ckpt = _cut_after_first_epoch(out)
    data = bytearray(ckpt.read_bytes())
    if damage == "flip":  # one bit somewhere in the middle (a tensor's bytes or the pickle)
        data[len(data) // 2] ^= 0x40
    else:
        data = data[: len(data) // 2]
    ckpt.write_bytes(bytes(data))
    assert main([*_ARGV, "--out", str(out)]) == 2
    err = _one_line_error(capsys)
    assert str(ckpt) in err and "checksum" in err
    assert not (out / "results.json").exists()


def test_checkpoints_load_with_weights_only_and_carry_a_checksum(tmp_path):
    ckpt = _cut_after_first_epoch(tmp_path / "run")
    state = torch.load(ckpt, weights_only=True)  # tensors and plain data only
    assert state["epoch"] == 1 and isinstance(state["rng"]["torch"], torch.Tensor)
    side = json.loads((ckpt.parent / (ckpt.name + ".sha256")).read_text())
    assert side["sha256"] == [hashlib.sha256(ckpt.read_bytes()).hexdigest()]


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = T.candidate_cross_entropy  # the training loops' name for it

    def poisoned(scores, labels):
        calls["n"] += 1
        loss = real(scores, labels)
        return loss * float("nan") if calls["n"] == 5 else loss  # epoch 2, step 2

    monkeypatch.setattr(T, "candidate_cross_entropy", poisoned)
    out = tmp_path / "run"
    with pytest.raises(R.Diverged, match=r"sr, seed 0, retraining epoch 2, step 2: the training"):
        run_experiment(_CFG, [0], out, progress=False)
    assert not (out / "results.json").exists()
    ckpt = out / "seed0" / "retrain-sr.ckpt.pt"
    assert R.load_checkpoint(ckpt)["epoch"] == 1  # epoch 1's checkpoint, intact
    monkeypatch.setattr(T, "candidate_cross_entropy", real)
    resumed = run_experiment(_CFG, [0], out, progress=False)  # resumes from it
    assert all(r["n_eval"] > 0 for r in resumed["records"])


def test_lr_that_diverges_exits_2_without_results(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*_ARGV, "--lr", "1e30", "--out", str(out)]) == 2
    err = _one_line_error(capsys)
    assert "sr, seed 0, retraining epoch 1, step" in err and "lower the learning rate" in err
    assert not (out / "results.json").exists()


def test_non_finite_scores_never_count_as_hits():
    class NaNScorer(torch.nn.Module):
        def forward(self, batch):
            scores = torch.zeros(batch.size, batch.n_candidates)
            scores[:, 0] = float("nan")  # argmax over NaN is 0: a "hit" where the label is 0
            return scores

    split = R.load_split(_CFG)
    from loraml.empirical.model import PairTokenizer, load_encoder

    _, tokenizer = load_encoder("tiny")
    ctx = R._Context(
        _CFG, split, PairTokenizer(tokenizer, 32), torch.device("cpu"), StepBudget(), False
    )
    examples = split.test[0].eval
    with pytest.raises(R.Diverged, match="a held-out score"):
        R.evaluate(NaNScorer(), examples, ctx, "here")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--device", "bogus"], "--device 'bogus' is not a device"),
        (["--lr", "inf"], "--lr must be finite"),
        (["--lr", "nan"], "--lr must be > 0"),
        (["--seeds", "-1"], "--seeds must be integers in [0, "),
        (["--seeds", str(10**30)], "--seeds must be integers in [0, "),
        (["--batching", "random"], "--batching must be one of"),
        (["--grad-clip", "-1"], "--grad-clip must be finite and >= 0"),
        (["--ft-decay-horizon", "0.5"], "--ft-decay-horizon must be finite and >= 1"),
        (["--model", "/no/such/model"], "--model"),
    ],
)
def test_bad_run_arguments_exit_2_before_creating_out(tmp_path, capsys, extra, message):
    out = tmp_path / "new" / "run"
    assert main([*_ARGV, "--out", str(out), *extra]) == 2
    assert message in _one_line_error(capsys)
    assert not (tmp_path / "new").exists()


def test_test_data_with_the_same_content_as_the_training_data_is_refused(tmp_path, capsys):
    train = write_persona_file(tmp_path / "train.txt", {"a": 6, "b": 5, "c": 4, "d": 3})
    same = tmp_path / "copy.txt"
    shutil.copyfile(train, same)  # another name, same bytes
    out = tmp_path / "run"
    argv = [*_ARGV, "--data", "convai2", "--data-path", str(train), "--out", str(out)]
    assert main([*argv, "--test-data-path", str(same)]) == 2
    err = _one_line_error(capsys)
    assert "--test-data-path" in err and "same content as data_path" in err
    assert not out.exists()


@pytest.mark.parametrize(
    "content",
    [
        b"\x89PNG\r\n\x1a\n\x00\xff",  # binary
        b"[1, 2]",  # JSON, not an object
        b'{"config": {}, "summary": 3, "paired": [], "throughput": [], "versions": {}, '
        b'"wall_seconds": 1}',  # the keys, wrong contents
    ],
)
def test_corrupt_results_json_is_one_line(tmp_path, capsys, content):
    (tmp_path / "results.json").write_bytes(content)
    assert main(["empirical", "report", str(tmp_path)]) == 2
    assert "results.json" in _one_line_error(capsys)
    assert not (tmp_path / "results.md").exists()


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps([1, 2]),  # not a dict
        pickle.dumps({"a": [["i like cats"]]}),  # str cluster id
        pickle.dumps({1: "i like cats"}),  # a string, not a list of personas
        pickle.dumps({True: [["i like cats"]]}),  # bool is no cluster id
        b"]}X\x01\x00\x00\x00aK\x01sb.",  # BUILD on a list: AttributeError inside pickle
    ],
)
def test_malformed_persona_map_is_one_data_error(tmp_path, payload):
    path = tmp_path / "map.pkl"
    path.write_bytes(payload)
    with pytest.raises(DataError) as info:
        load_persona_map(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# Fuzzing: generated bad arguments and generated results files
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_BAD_RATES = st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e400", "abc", ""])
_BAD_COUNTS = st.sampled_from(["0", "-1", "abc", "", "1.5", "nan", "1e3"])
_FLAGS = {  # flag -> values it must refuse (values a flag may accept are filtered below)
    "--lr": _BAD_RATES,
    "--ft-lr": _BAD_RATES,
    "--epochs": _BAD_COUNTS,
    "--candidates": st.sampled_from(["1", "0", "-3", "x", "2.5"]),
    "--batch-size": _BAD_COUNTS,
    "--dropout": st.sampled_from(["1", "-0.1", "nan", "2", "x"]),
    "--weight-decay": st.sampled_from(["-1", "nan", "inf", "x"]),
    "--grad-clip": st.sampled_from(["-1", "nan", "inf", "x"]),
    "--ft-decay-horizon": st.sampled_from(["0", "0.5", "nan", "inf", "x"]),
    "--batching": st.text(max_size=12).filter(lambda s: s not in ("interleaved", "per-task")),
    "--retrain-selection": st.text(max_size=8).filter(lambda s: s not in ("last", "best")),
    "--device": st.text(min_size=1, max_size=12).filter(
        lambda s: not R._DEVICE.fullmatch(s) and not s.startswith("-")
    ),
    "--seeds": st.sampled_from(["-1", str(2**32), str(10**40), "x", "1.5"]),
    "--max-length": st.sampled_from(["0", "7", "-5", "x"]),
}


@given(flag=st.sampled_from(sorted(_FLAGS)), data=st.data())
def test_fuzzed_bad_run_arguments_exit_2_in_one_line_before_anything_is_made(
    tmp_path_factory, flag, data
):
    value = data.draw(_FLAGS[flag])
    root = tmp_path_factory.mktemp("fuzz")
    out = root / "run"
    code = None
    err = ""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        try:
            code = main([*_ARGV, "--out", str(out), f"{flag}={value}"])
        except SystemExit as exit_:  # argparse's own refusals
            code = exit_.code
    err = buf.getvalue().strip()
    assert code == 2, (flag, value, err)
    assert err and "\n" not in err and "Traceback" not in err, err
    assert list(root.iterdir()) == []  # nothing created


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
_KEYS = ("config", "summary", "paired", "throughput", "versions", "wall_seconds")


@given(values=st.fixed_dictionaries({k: _JSON for k in _KEYS}))
def test_fuzzed_results_json_is_rendered_or_refused_in_one_line(tmp_path_factory, values):
    import contextlib
    import io

    root = tmp_path_factory.mktemp("report")
    (root / "results.json").write_text(json.dumps(values))
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(io.StringIO()):
        code = main(["empirical", "report", str(root)])
    err = buf.getvalue().strip()
    assert code in (0, 2)
    if code == 2:
        assert "results.json" in err and "\n" not in err and "Traceback" not in err
        assert not (root / "results.md").exists()


@pytest.mark.parametrize("kind", ["empty", "under-file", "too-long", "fifo", "file"])
def test_impossible_out_is_refused_before_the_run(tmp_path, capsys, kind):
    import os

    afile = tmp_path / "afile"
    afile.write_text("keep me")
    out = {
        "empty": "",
        "under-file": str(afile / "run"),
        "too-long": str(tmp_path / ("x" * 300)),
        "fifo": str(tmp_path / "fifo"),
        "file": str(afile),
    }[kind]
    if kind == "fifo":
        os.mkfifo(out)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main([*_ARGV, "--out", out]) == 2
    assert "--out" in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert afile.read_text() == "keep me"

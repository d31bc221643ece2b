"""``loraml empirical compare``: whether two runs computed the same records."""

from __future__ import annotations

import json

import pytest

from loraml.cli import main
from loraml.empirical.compare import compare_runs
from tests.helpers import results_object


def _records(hits: list[int], digest: str = "d0") -> list[dict]:
    return [
        dict(
            method=m,
            scheme=s,
            rank=8 if s == "lora" else 0,
            task=f"t{i}",
            seed=0,
            hits=h,
            n_eval=20,
            hits_at_1=h / 20,
            hits_by_epoch=[h - 1, h],
            base_sha256=f"{m}-{digest}",
            seconds=100.0 + i,
        )
        for m in ("sr", "lora-ml")
        for s in ("lora", "head")
        for i, h in enumerate(hits)
    ]


def _write(path, records, versions=None, **config):
    path.mkdir()
    res = results_object({"seeds": [0], **config}, records)
    res["versions"] = versions or {"torch": "2.13.0", "transformers": "5.25.0"}
    (path / "results.json").write_text(json.dumps(res))
    return path


def test_same_records_on_other_versions_and_other_timings_are_identical(tmp_path, capsys):
    a = _write(tmp_path / "a", _records([3, 5, 7]), {"torch": "2.13.0", "transformers": "5.24.0"})
    slower = [{**r, "seconds": 2 * r["seconds"]} for r in _records([3, 5, 7])]
    b = _write(tmp_path / "b", slower)
    out = tmp_path / "cmp.json"
    assert main(["empirical", "compare", str(a), str(b), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("identical: 12 of 12 records equal in every field but seconds")
    assert "retrained encoders (base_sha256): 2 of 2 bit for bit" in text
    assert f"versions: transformers 5.24.0 ({a}) and 5.25.0 ({b})" in text
    saved = json.loads(out.read_text())
    assert saved["identical"] is True and saved["a"] == str(a)
    assert saved["versions"] == {"a": {"transformers": "5.24.0"}, "b": {"transformers": "5.25.0"}}


def test_a_changed_record_a_missing_one_and_another_encoder_make_runs_different(tmp_path, capsys):
    a = _write(tmp_path / "a", _records([3, 5, 7]))
    changed = _records([3, 6, 7])  # task t1 scored one more hit, in all four records
    b = _write(tmp_path / "b", changed[1:], epochs=3)  # and sr/lora t0 is missing
    assert main(["empirical", "compare", str(a), str(b)]) == 1
    text = capsys.readouterr().out
    assert text.startswith("different: 7 of 11 records equal")
    assert "differs: sr/lora r=8/t1/seed 0 (hits, hits_at_1, hits_by_epoch)" in text
    assert f"only in {a}: 1 records (e.g. sr/lora r=8/t0/seed 0)" in text
    assert "settings that differ: epochs" in text
    # same hits from another retraining: the records differ in base_sha256 only
    c = compare_runs(
        results_object({}, _records([3, 5, 7])), results_object({}, _records([3, 5, 7], "d1"))
    )
    assert not c["identical"]
    assert c["encoders"] == {
        "compared": 2,
        "identical": 0,
        "differ": ["lora-ml/seed 0", "sr/seed 0"],
    }
    assert {tuple(d["fields"]) for d in c["records"]["differ"]} == {("base_sha256",)}


def test_compare_runs_refuses_a_record_held_twice():
    twice = _records([3]) + [{**_records([4])[0], "seconds": 1.0}]
    with pytest.raises(ValueError, match=r"run b holds a record twice \(sr/lora r=8/t0/seed 0\)"):
        compare_runs(results_object({}, _records([3])), results_object({}, twice))


def test_runs_without_a_shared_record_are_not_identical():
    c = compare_runs(results_object({}, []), results_object({}, []))
    assert c["identical"] is False and c["records"]["compared"] == 0


@pytest.mark.parametrize("case", ["missing", "not-json", "json-is-an-input", "record-twice"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case):
    a = _write(tmp_path / "a", _records([3]))
    b = tmp_path / "b"
    extra: list[str] = []
    if case == "not-json":
        b.mkdir()
        (b / "results.json").write_text("{oops")
    elif case == "json-is-an-input":
        b = _write(b, _records([3]))
        extra = ["--json", str(a / "results.json")]
    elif case == "record-twice":  # an edited file: which of the two to compare is a guess
        b = _write(b, _records([3]) + [{**_records([4])[0], "seconds": 1.0}])
    before = (a / "results.json").read_text()
    assert main(["empirical", "compare", str(a), str(b), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert {
        "missing": "does not exist",
        "not-json": "is not valid JSON",
        "record-twice": "holds 1 record(s) twice (e.g. sr lora 8 t0 0)",
    }.get(case, "--json") in err
    assert (a / "results.json").read_text() == before  # nothing the user has is overwritten


def test_committed_transformers_check_is_what_compare_gives():
    """README quotes ``empirical/results/transformers-5.24-5.25/compare.json``: it is the
    comparison of the two committed runs beside it, recomputed here."""
    from pathlib import Path

    from loraml.empirical.report import load_results

    root = Path(__file__).resolve().parents[1] / "empirical/results/transformers-5.24-5.25"
    saved = json.loads((root / "compare.json").read_text())
    runs = [load_results(root / f"transformers-{v}") for v in ("5.24.0", "5.25.0")]
    assert {k: v for k, v in saved.items() if k not in ("a", "b")} == compare_runs(*runs)
    assert [r["versions"]["transformers"] for r in runs] == ["5.24.0", "5.25.0"]

"""Whether two runs of the experiment computed the same numbers, record by record.

A run resumed on another machine, a rerun under newer library releases, or a colleague's
rerun of a committed result should give the same hits@1 records; :func:`compare_runs` says
whether it did. It reads only the two ``results.json`` files (no checkpoint is loaded):

- the fine-tuning records are matched by (method, scheme, rank, task, seed) and compared in
  every field but ``seconds`` (wall time is not a result): hits, held-out size, hits per
  epoch, and ``base_sha256``, the digest of the retrained encoder the record was fine-tuned
  from (:func:`loraml.empirical.state.encoder_digest`), so equal records of a (method, seed)
  also say its two retrainings gave the same weights bit for bit;
- the settings (``config``) and library versions (``versions``) that differ are listed, so a
  user sees what changed between the runs and whether the records moved with it.

Examples
--------
>>> rec = dict(method="sr", scheme="lora", rank=8, task="t1", seed=0, hits=3, n_eval=10,
...            hits_at_1=0.3, hits_by_epoch=[2, 3], base_sha256="ab", seconds=12.0)
>>> a = {"config": {"seeds": [0]}, "versions": {"transformers": "5.24.0"}, "records": [rec]}
>>> b = {"config": {"seeds": [0]}, "versions": {"transformers": "5.25.0"},
...      "records": [{**rec, "seconds": 14.5}]}
>>> c = compare_runs(a, b)
>>> c["identical"], c["versions_differ"], c["records"]["identical"]
(True, ['transformers'], 1)
"""

from __future__ import annotations

from typing import Any

from loraml.empirical.report import record_key as _key
from loraml.empirical.report import repeated_records

#: Record fields that are measurements of the machine, not results.
NOT_RESULTS = ("seconds",)


def _label(key: tuple[Any, ...]) -> str:
    """``method/scheme r=rank/task/seed N``: a record's name in one word."""
    method, scheme, rank, task, seed = key
    return f"{method}/{scheme} r={rank}/{task}/seed {seed}"


def _differing(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def compare_runs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Compare two runs' ``results.json`` contents record by record.

    Parameters
    ----------
    a, b : dict
        The content of two ``results.json`` files
        (:func:`loraml.empirical.report.load_results`).

    Returns
    -------
    dict
        ``identical`` (True when both hold the same records and every one is equal in every
        field but ``seconds``); ``records``: ``compared`` (records in both), ``identical``,
        ``differ`` (each a record's name and the fields that differ), ``only_a`` and
        ``only_b`` (names); ``encoders``: ``compared`` and ``identical``, counting the
        (method, seed) retrainings whose records carry ``base_sha256`` on both sides, and
        ``differ`` (their names); ``config_differs`` and ``versions_differ`` (keys), and
        ``versions`` (``a`` and ``b``: each side's value of the differing keys).

    Raises
    ------
    ValueError
        One line, where a run holds one (method, scheme, rank, task, seed) record twice
        (:func:`loraml.empirical.report.repeated_records`): which of the two to compare
        would be a guess.

    Examples
    --------
    >>> rec = dict(method="lora-ml", scheme="head", rank=0, task="t", seed=1, hits=2)
    >>> c = compare_runs({"config": {}, "versions": {}, "records": [rec]},
    ...                  {"config": {}, "versions": {}, "records": [{**rec, "hits": 3}]})
    >>> c["identical"], c["records"]["differ"]
    (False, [{'record': 'lora-ml/head r=0/t/seed 1', 'fields': ['hits']}])
    """
    for name, run in (("a", a), ("b", b)):
        twice = repeated_records(run["records"])
        if twice:
            raise ValueError(
                f"run {name} holds a record twice ({_label(twice[0])}): records are matched by "
                "(method, scheme, rank, task, seed), so each must be there once"
            )
    by_a = {_key(r): r for r in a["records"]}
    by_b = {_key(r): r for r in b["records"]}
    shared = [k for k in by_a if k in by_b]
    differ = []
    for k in shared:
        ra, rb = ({f: v for f, v in r[k].items() if f not in NOT_RESULTS} for r in (by_a, by_b))
        fields = _differing(ra, rb)
        if fields:
            differ.append({"record": _label(k), "fields": fields})
    # one retraining per (method, seed): its digest as the records of each side carry it
    digests: dict[tuple[Any, Any], list[set[str]]] = {}
    for side, records in enumerate((a["records"], b["records"])):
        for r in records:
            if r.get("base_sha256"):
                entry = digests.setdefault((r["method"], r["seed"]), [set(), set()])
                entry[side].add(r["base_sha256"])
    both = {k: v for k, v in digests.items() if v[0] and v[1]}
    enc_differ = [f"{m}/seed {s}" for (m, s), (da, db) in sorted(both.items()) if da != db]
    only_a = [_label(k) for k in by_a if k not in by_b]
    only_b = [_label(k) for k in by_b if k not in by_a]
    versions_differ = _differing(a.get("versions", {}), b.get("versions", {}))
    return {
        "identical": not differ and not only_a and not only_b and bool(shared),
        "records": {
            "compared": len(shared),
            "identical": len(shared) - len(differ),
            "differ": differ,
            "only_a": only_a,
            "only_b": only_b,
        },
        "encoders": {
            "compared": len(both),
            "identical": len(both) - len(enc_differ),
            "differ": enc_differ,
        },
        "config_differs": _differing(a.get("config", {}), b.get("config", {})),
        "versions_differ": versions_differ,
        "versions": {
            side: {k: r.get("versions", {}).get(k) for k in versions_differ}
            for side, r in (("a", a), ("b", b))
        },
    }


def comparison_lines(c: dict[str, Any], a: str = "A", b: str = "B") -> list[str]:
    """:func:`compare_runs`'s result in a few lines of text, the verdict first.

    Examples
    --------
    >>> rec = dict(method="sr", scheme="head", rank=0, task="t", seed=0, hits=1)
    >>> run = {"config": {}, "versions": {"torch": "2.13.0"}, "records": [rec]}
    >>> print("\\n".join(comparison_lines(compare_runs(run, run))))
    identical: 1 of 1 records equal in every field but seconds
    """
    r, e = c["records"], c["encoders"]
    verdict = "identical" if c["identical"] else "different"
    lines = [
        f"{verdict}: {r['identical']} of {r['compared']} records equal in every field but seconds"
    ]
    if e["compared"]:
        lines.append(
            f"retrained encoders (base_sha256): {e['identical']} of {e['compared']} bit for bit"
            + (f"; differ: {', '.join(e['differ'])}" if e["differ"] else "")
        )
    for d in r["differ"][:10]:
        lines.append(f"differs: {d['record']} ({', '.join(d['fields'])})")
    if len(r["differ"]) > 10:
        lines.append(f"... and {len(r['differ']) - 10} more records differ")
    for side, name in (("only_a", a), ("only_b", b)):
        if r[side]:
            lines.append(f"only in {name}: {len(r[side])} records (e.g. {r[side][0]})")
    for k in c["versions_differ"]:
        lines.append(
            f"versions: {k} {c['versions']['a'][k]} ({a}) and {c['versions']['b'][k]} ({b})"
        )
    if c["config_differs"]:
        lines.append(f"settings that differ: {', '.join(c['config_differs'])}")
    return lines

"""Sphinx extension: the Results page, assembled from the committed data at build time.

Nothing on the page is typed by hand. It reads

- every figure of :func:`loraml.figures.registry.registry` from ``figures/output/full/`` when
  its files are committed there, else from ``figures/output/quick/``: the image, the metadata
  file ``NAME.json`` (protocol, settings, runs, compute seconds) and, as the caption, the
  registry's one-line summary followed by the README paragraph that describes the figure (the
  paragraph opening with ``NAME`` and its command);
- the verify records ``results/verify-*.json`` (written by ``loraml verify ... --json``);
- the empirical results ``empirical/results/*/results.json`` (rendered by
  :func:`loraml.empirical.report.render_markdown`, the function that writes ``results.md``).

It writes ``docs/generated/results.md`` (ignored by git) when the builder starts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

VERIFY_FILES = {
    "verify-seed0.json": "full profile, `loraml verify --seed 0 --json`",
    "verify-seed2.json": "full profile on another seed, `loraml verify --seed 2 --json`",
    "verify-quick.json": "quick profile, `loraml verify --quick --json`",
}


def readme_paragraph(readme: str, name: str) -> str | None:
    """The README paragraph that opens with ```NAME` (`loraml figures NAME``, or None."""
    start = re.search(rf"^`{re.escape(name)}` \(`loraml figures {re.escape(name)}\b", readme, re.M)
    if start is None:
        return None
    rest = readme[start.start() :]
    end = re.search(r"\n\s*\n", rest)
    return " ".join((rest if end is None else rest[: end.start()]).split())


def figures_section(readme: str) -> list[str]:
    """Markdown for every registered figure: image, caption, settings."""
    from loraml.figures.registry import registry

    lines = ["## Figures", ""]
    for name, spec in registry().items():
        for protocol in ("full", "quick"):
            folder = ROOT / "figures" / "output" / protocol
            if (folder / f"{name}.png").exists():
                break
        else:
            lines += [f"### `{name}`", "", f"{spec.summary}. No committed image.", ""]
            continue
        meta_path = folder / f"{name}.json"
        meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        rel = f"../../figures/output/{protocol}/{name}.png"
        lines += [f"### `{name}`", "", f"![{name}]({rel})", ""]
        lines += [f"**{spec.summary}.**", ""]
        paragraph = readme_paragraph(readme, name)
        if paragraph:
            lines += [paragraph, ""]
        flag = " --quick" if protocol == "quick" else ""
        seconds = meta.get("compute_seconds")
        facts = [
            f"protocol `{protocol}`",
            f"command `loraml figures {name}{flag}`",
            f"{meta.get('runs', '?')} runs",
            f"seed {meta.get('seed', '?')}",
        ]
        if seconds is not None:
            facts.append(f"{seconds:g} s of compute on {meta.get('machine', 'an unnamed machine')}")
        lines += ["*" + "; ".join(facts) + ".*", ""]
        settings = meta.get("settings")
        if settings:
            lines += ["```json", json.dumps(settings, sort_keys=True), "```", ""]
    return lines


def _fmt(x: Any) -> str:
    if x is None:
        return "measurement"
    if isinstance(x, bool):
        return "yes" if x else "**no**"
    if isinstance(x, float):
        return f"{x:.2f}"
    return str(x)


def verify_section() -> list[str]:
    """Markdown tables of the committed ``loraml verify --json`` records."""
    lines = ["## Verification of the paper's statements", ""]
    found = False
    for fname, how in VERIFY_FILES.items():
        path = ROOT / "results" / fname
        if not path.exists():
            continue
        found = True
        data = json.loads(path.read_text())
        held = data.get("all_claims_held")
        lines += [
            f"### {how}",
            "",
            f"From `results/{fname}`; every claim of the paper held: {_fmt(held)}. "
            "Worst margin in decades (how far the worst instance is from the claim's "
            "threshold); measurements report numbers, not pass/fail.",
            "",
            "| statement | key | held | instances | worst margin | seconds |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for key, rec in data.items():
            if not isinstance(rec, dict) or "statement" not in rec:
                continue
            statement = " ".join(str(rec["statement"]).split()).replace("|", "\\|")
            margin = rec.get("worst_margin")
            lines.append(
                f"| {statement} | `{key}` | {_fmt(rec.get('held'))} | {rec.get('instances')} | "
                f"{'' if margin is None else f'{margin:.2f}'} | {rec.get('seconds', 0):.1f} |"
            )
        lines.append("")
    if not found:
        lines += ["No verify record is committed under `results/`.", ""]
    return lines


def empirical_section() -> list[str]:
    """The empirical tables, rendered from each committed ``results.json``."""
    from loraml.empirical.report import render_markdown

    lines = ["## The empirical experiment", ""]
    for path in sorted((ROOT / "empirical" / "results").glob("*/results.json")):
        results = json.loads(path.read_text())
        rel = path.relative_to(ROOT)
        lines += [f"### `{rel}`", ""]
        body = render_markdown(results)
        body = re.sub(r"^# .*\n", "", body, count=1)  # the page has its own title
        body = re.sub(r"^(#+) ", r"\1### ", body, flags=re.M)
        lines += [body.strip(), ""]
        png = path.with_name("results.png")
        if png.exists():
            lines += [f"![{rel.parent}](../../{png.relative_to(ROOT).as_posix()})", ""]
    # the powered protocol's reports (`loraml empirical analysis DIR... --out FOLDER`)
    from loraml.empirical.power import render_power_markdown

    for path in sorted((ROOT / "empirical" / "results").glob("*/analysis.json")):
        rel = path.relative_to(ROOT)
        lines += [f"### `{rel}`", ""]
        body = render_power_markdown(json.loads(path.read_text()))
        body = re.sub(r"^# .*\n", "", body, count=1)
        body = re.sub(r"^(#+) ", r"\1## ", body, flags=re.M)  # its ## sections under our ###
        png = f"../../{path.with_name('results.png').relative_to(ROOT).as_posix()}"
        lines += [body.replace("](results.png)", f"]({png})").strip(), ""]
    return lines


def build_page() -> str:
    """The whole Results page as Markdown."""
    readme = (ROOT / "README.md").read_text()
    lines = [
        "# Results",
        "",
        "Everything on this page is read from files committed in the repository when the "
        "documentation is built (`docs/_ext/results_page.py`); the command that wrote each file "
        "is given beside it.",
        "",
        *verify_section(),
        *figures_section(readme),
        *empirical_section(),
    ]
    return "\n".join(lines) + "\n"


def write_page(app: Any) -> None:
    out = Path(app.srcdir) / "generated" / "results.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = build_page()
    if not out.exists() or out.read_text() != text:
        out.write_text(text)


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", write_page)
    return {"version": "1", "parallel_read_safe": True}

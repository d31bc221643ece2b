"""The Python examples of README.md and the user guide run, and say what their comments say.

A user copies these blocks first; an API rename that breaks one must fail here. Each block runs
in a fresh namespace (``exec``), and the comments' claims are checked on what it leaves behind:
SR's base error has kT large singular values (Theorem 1), LoRA-ML recovers A* (Theorem 3), the
relaxations and checks return what the comments name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def guide_blocks() -> list[str]:
    text = (ROOT / "docs" / "guide.rst").read_text()
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:   .*\n|\n)+)", text)
    return [re.sub(r"^   ", "", b, flags=re.M) for b in blocks]


def run(block: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(block, "<example>", "exec"), namespace)  # noqa: S102 - our own README
    return namespace


def test_there_are_examples_to_run():
    assert len(readme_blocks()) == 2 and len(guide_blocks()) == 1


def test_readme_theory_example(capsys):
    import loraml.theory as th

    ns = run(readme_blocks()[0])
    fam, k = ns["fam"], 1
    sv = th.base_error(ns["A_sr"], fam.A_star).singular_values
    # "kT large values: Theorem 1" (T = 3 tasks, k = 1; data with noise std 0.01 adds small ones)
    assert int(np.sum(sv > 1e-2 * sv[0])) == k * fam.T
    # LoRA-ML from data: close to A* (the noise and N = 5000 bound how close)
    assert th.base_error(ns["res"].A, fam.A_star).relative < 1e-2
    assert ns["gd"].A.shape == ns["res"].A.shape == (10, 10)
    assert ns["ft"].U.shape == (10, 1)
    assert capsys.readouterr().out.count("\n") >= 2


def test_readme_landscape_and_relaxations_example():
    ns = run(readme_blocks()[1])
    assert ns["record"].held
    assert ns["floor"] > 0  # Corollary 1: SR + rank-2 fine-tuning leaves a positive floor
    assert ns["sdp"].A.shape == ns["nuc"].A.shape == (10, 10)
    assert ns["pred"] == pytest.approx(0.5 * 0.1**2 * 2 * (2 * 10 - 2) / 400)
    # "U = 0, A = A_SR" is a saddle: the Hessian there has a negative eigenvalue
    assert ns["curv"].min_eigenvalue < 0 < ns["curv"].max_eigenvalue


def test_guide_example_recovers_a_star(capsys):
    ns = run(guide_blocks()[0])
    printed = float(capsys.readouterr().out.split()[-1])
    assert printed < 1e-6 * np.linalg.norm(ns["fam"].A_star)  # Theorem 3: T = 3 >= 3

"""The installed package is one import package, ``loraml``, that works from any folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_installs_only_the_loraml_namespace():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = meta["packages"]
    assert packages and all(p == "loraml" or p.startswith("loraml.") for p in packages)
    # The repository keeps theory/, figures/ and empirical/ at its top level, mapped into loraml.
    for name, folder in meta["package-dir"].items():
        assert (ROOT / folder / "__init__.py").is_file(), (name, folder)


def test_subpackages_import_from_another_folder_and_bare_names_do_not(tmp_path):
    code = (
        "import importlib.util, loraml.theory, loraml.figures, loraml.empirical\n"
        "import loraml.theory.checks\n"
        "names = ('theory', 'figures', 'empirical')\n"
        "print(all(importlib.util.find_spec(n) is None for n in names))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "True", out.stderr

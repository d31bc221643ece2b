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


# ---------------------------------------------------------------------------------------------
# Version, licence, citation, metadata
# ---------------------------------------------------------------------------------------------
def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_is_written_once_and_the_command_prints_it(capsys):
    import loraml
    from loraml.cli import main

    project = _pyproject()["project"]
    assert "version" not in project and "version" in project["dynamic"]
    dynamic = _pyproject()["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "loraml.__version__"}
    parts = loraml.__version__.split(".")
    assert len(parts) == 3 and all(p.isdigit() for p in parts), loraml.__version__
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"loraml {loraml.__version__}"


def test_licence_citation_and_pypi_metadata():
    import loraml

    project = _pyproject()["project"]
    assert project["license"] == "Apache-2.0"  # SPDX expression, not the deprecated table
    assert project["license-files"] == ["LICENSE"]
    licence = (ROOT / "LICENSE").read_text()
    assert licence.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in licence and len(licence.splitlines()) == 201
    assert project["authors"] and project["requires-python"] == ">=3.10"
    classifiers = project["classifiers"]
    assert "Programming Language :: Python :: 3.10" in classifiers
    assert "Typing :: Typed" in classifiers
    # PEP 639: with a licence expression, no licence classifier.
    assert not any(c.startswith("License ::") for c in classifiers)
    requires = _pyproject()["build-system"]["requires"]
    assert requires == ["setuptools>=77"]  # the first setuptools that reads SPDX `license`
    cff = (ROOT / "CITATION.cff").read_text()
    assert "arXiv:2410.22264" in cff and "family-names: Block" in cff
    assert f"version: {loraml.__version__}" in cff
    assert f"## [{loraml.__version__}]" in (ROOT / "CHANGELOG.md").read_text()
    assert (ROOT / "loraml" / "py.typed").is_file()


def test_figure_metadata_records_the_package_version(tmp_path):
    pytest.importorskip("matplotlib")
    import json

    import loraml
    from loraml.figures.generate import generate

    tiny = {"d": 8, "k": 1, "Ts": [2, 3], "instances": 1}
    (out,) = generate(
        ["spectrum"], quick=True, out=tmp_path, jobs=1, progress=False,
        overrides={"spectrum": tiny}, draw=False,
    )  # fmt: skip
    meta = json.loads(out.stem.with_suffix(".json").read_text())
    assert meta["loraml_version"] == loraml.__version__


def test_wheel_holds_only_loraml_with_licence_and_type_marker(tmp_path):
    """Build the wheel from a copy of the sources (the checkout stays clean) and read its files."""
    import shutil
    import zipfile

    import loraml

    # The build runs offline, without isolation: it needs the build requirement installed.
    pytest.importorskip("setuptools", minversion="77")

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "output", "results", "*.egg-info")
    for name in ("loraml", "theory", "figures", "empirical"):
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v"]
        + ["--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True,
        text=True,
    )
    log = built.stdout + built.stderr  # -v shows the backend's warnings
    assert built.returncode == 0, log[-3000:]
    assert "DeprecationWarning" not in log, log[-3000:]
    (wheel,) = (tmp_path / "dist").glob("loraml-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    info = f"loraml-{loraml.__version__}.dist-info"
    assert {n.split("/")[0] for n in names} == {"loraml", info}
    assert "loraml/py.typed" in names
    assert f"{info}/licenses/LICENSE" in names
    for sub in ("theory", "figures", "empirical"):
        assert f"loraml/{sub}/__init__.py" in names
    metadata = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert f"Version: {loraml.__version__}" in metadata

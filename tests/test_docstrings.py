"""The public theory functions are documented (numpydoc) and their examples run.

Public theory functions: those in ``loraml.theory.__all__`` and the public module-level functions
of every ``loraml.theory`` module except the command-line front ends (the spurious survey script
included) and the private linear-algebra kernels (:data:`EXCLUDED`). Each needs a numpydoc
``Parameters``, ``Returns`` and ``Examples`` section, and every example is run as a doctest
here (so ``make test`` runs them), as are the examples of the rest of the package (figures,
empirical, the command line).
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import os
import pkgutil
import re
from types import ModuleType

import pytest

import loraml.theory

EXCLUDED = {"cli", "verify_cli", "linalg", "spurious_survey"}  # commands and kernels
SECTIONS = ("Parameters", "Returns", "Examples")


def theory_modules() -> list[ModuleType]:
    """Every documented module of ``loraml.theory`` (walks the package, so new modules count)."""
    names = [
        m.name
        for m in pkgutil.walk_packages(loraml.theory.__path__, "loraml.theory.")
        if m.name.rsplit(".", 1)[-1] not in EXCLUDED
    ]
    return [importlib.import_module(name) for name in sorted(names)]


def public_functions() -> dict[str, object]:
    found: dict[str, object] = {}
    for name in loraml.theory.__all__:
        obj = getattr(loraml.theory, name)
        if inspect.isfunction(obj):
            found[f"{obj.__module__}.{obj.__name__}"] = obj
    for mod in theory_modules():
        for name, obj in vars(mod).items():
            if name.startswith("_") or not inspect.isfunction(obj):
                continue
            if obj.__module__ == mod.__name__:
                found[f"{mod.__name__}.{name}"] = obj
    return found


def sections(doc: str) -> set[str]:
    """numpydoc section headers: a title line underlined by dashes of the same length."""
    lines = inspect.cleandoc(doc).splitlines()
    return {
        a.strip()
        for a, b in zip(lines, lines[1:], strict=False)
        if re.fullmatch(r"-{3,}", b.strip()) and len(b.strip()) == len(a.strip())
    }


def test_there_are_public_theory_functions_to_check():
    names = public_functions()
    # the count grows as functions are added; it only guards against an empty discovery
    assert len(names) >= 50
    assert "loraml.theory.retraining.solve_lora_ml" in names
    assert "loraml.theory.checks_theorems.check_theorem3" in names


def test_every_public_theory_function_has_parameters_returns_and_examples():
    missing = {
        name: [s for s in SECTIONS if s not in sections(fn.__doc__ or "")]
        for name, fn in public_functions().items()
    }
    missing = {name: s for name, s in missing.items() if s}
    assert not missing, f"{len(missing)} public functions lack numpydoc sections: {missing}"


def test_section_parser_sees_headers_and_ignores_prose():
    doc = """Summary.

    Parameters
    ----------
    x : int

    Some text
    ---
    """
    assert sections(doc) == {"Parameters"}


OPTIONAL = {"torch", "transformers", "peft", "matplotlib"}  # extras a module may need


def other_modules() -> list[ModuleType]:
    """The rest of the package (figures, empirical, the command line): their examples run too.

    A module that needs an extra which is not installed is left out (the extras' own tests
    skip the same way); ``__main__`` is left out since importing it runs the command line.
    """
    names = [
        m.name
        for pkg in ("loraml.figures", "loraml.empirical")
        for m in pkgutil.walk_packages(importlib.import_module(pkg).__path__, pkg + ".")
    ] + [
        m.name
        for m in pkgutil.iter_modules(loraml.__path__, "loraml.")
        if not m.ispkg and m.name != "loraml.__main__"
    ]
    modules = []
    for name in sorted(names):
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as err:
            if (err.name or "").split(".")[0] not in OPTIONAL:
                raise
    return modules


def _doctests() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = []
    for mod in theory_modules() + other_modules():
        tests += [t for t in finder.find(mod) if t.examples]
    return sorted(tests, key=lambda t: t.name)


DOCTESTS = _doctests()


@pytest.mark.parametrize("test", DOCTESTS, ids=[t.name for t in DOCTESTS])
def test_docstring_examples_run(test: doctest.DocTest, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(os.environ, "OPENBLAS_NUM_THREADS", "1")
    out: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    result = runner.run(test, out=out.append)
    assert result.failed == 0, "".join(out)


def test_every_public_theory_function_has_a_doctest_that_runs():
    with_examples = {t.name for t in DOCTESTS}
    missing = sorted(name for name in public_functions() if name not in with_examples)
    assert not missing, f"no runnable example: {missing}"

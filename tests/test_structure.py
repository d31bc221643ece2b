"""Module structure: imports between the figure modules point one way."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    """Every module a file imports (top level or inside functions), as dotted names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_figure_modules_take_the_spec_types_from_spec_not_from_registry():
    # registry imports the figure modules; were they to import registry, the arrows would circle.
    for name in ("linear", "ours", "shallow", "spec"):
        imported = _imports(ROOT / "figures" / f"{name}.py")
        assert "loraml.figures.registry" not in imported, name
    spec_imports = _imports(ROOT / "figures" / "spec.py")
    assert not any(m.startswith("loraml.figures.") for m in spec_imports), spec_imports


def test_registry_still_exports_the_spec_types():
    from loraml.figures import registry, spec

    for name in ("FigureSpec", "Run", "RunResult", "run_rng"):
        assert getattr(registry, name) is getattr(spec, name)
    assert all(isinstance(s, spec.FigureSpec) for s in registry.registry().values())

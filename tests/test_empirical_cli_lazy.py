"""`loraml --help` and `loraml empirical --help` work without torch (imports are lazy)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.empirical

_BLOCK_TORCH = (
    "import sys\n"
    "for name in ('torch', 'transformers', 'peft'):\n"
    "    sys.modules[name] = None  # any import of them now raises ImportError\n"
    "from loraml.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit as e:\n"
    "    sys.exit(e.code)\n"
)


@pytest.mark.parametrize(
    "argv", [["--help"], ["empirical", "--help"], ["empirical", "run", "--help"]]
)
def test_help_without_torch(argv):
    out = subprocess.run(
        [sys.executable, "-c", _BLOCK_TORCH, *argv], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "empirical" in out.stdout
    assert "Traceback" not in out.stderr


def _blocked(modules: tuple[str, ...]) -> str:
    return (
        "import sys\n"
        f"for name in {modules!r}:\n"
        "    sys.modules[name] = None\n"
        "from loraml.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )


@pytest.mark.parametrize(
    ("blocked", "argv"),
    [
        (("torch", "transformers", "peft"), ["empirical", "run", "--preset", "tiny"]),
        (("peft",), ["empirical", "run", "--preset", "tiny"]),
        (("matplotlib",), ["empirical", "report", "RUN"]),
    ],
)
def test_missing_extra_names_it_and_the_pip_command(tmp_path, blocked, argv):
    out = tmp_path / "run"
    argv = [str(out) if a == "RUN" else a for a in argv]
    if argv[1] == "run":
        argv += ["--out", str(out)]
    else:
        out.mkdir()
        (out / "results.json").write_text("{}")
    result = subprocess.run(
        [sys.executable, "-c", _blocked(blocked), *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    err = result.stderr.strip()
    assert result.returncode == 2, err
    assert "\n" not in err and "Traceback" not in err
    assert "pip install 'loraml[empirical]'" in err and blocked[0] in err
    if argv[1] == "run":
        assert not out.exists()
    else:
        assert not (out / "results.md").exists()

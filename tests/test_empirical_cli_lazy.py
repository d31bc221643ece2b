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

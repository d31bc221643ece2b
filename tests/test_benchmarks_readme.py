"""benchmarks/README.md quotes the committed benchmark JSON (no number typed by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "empirical_cpu.json"


def test_readme_quotes_the_committed_empirical_benchmark():
    if not RESULT.is_file():
        pytest.skip("no committed benchmark JSON")
    readme = (ROOT / "benchmarks" / "README.md").read_text()
    r = json.loads(RESULT.read_text())
    assert r["command"] in readme
    quoted = [
        f"{r['cpu_speed_ratio_lora_ml_over_sr']:.2f}x",
        f"{r['speed_ratio_lora_ml_over_sr']:.2f}x",
        f"{r['flop_bound_speed_ratio']:.3f}",
        f"{r['memory_ratio_lora_ml_over_sr']:.2f}x",
        *(f"{x:.2f}" for x in r["cpu_speed_ratios_per_round"]),
        *(f"{r['median_examples_per_cpu_s'][m]:.2f}" for m in ("sr", "lora-ml")),
        *(f"{r['median_examples_per_s'][m]:.2f}" for m in ("sr", "lora-ml")),
        *(f"{r['peak_mib'][m]:.0f} MiB" for m in ("sr", "lora-ml")),
    ]
    missing = [q for q in quoted if q not in readme]
    assert not missing, f"benchmarks/README.md does not quote {missing} from {RESULT.name}"

"""
The empirical experiment: the ``tiny`` preset
=============================================

The language experiment retrains an encoder on T persona tasks (SR, LoRA-ML, last-layer-ML,
Reptile), then fine-tunes each retrained encoder on unseen personas with a fresh LoRA adapter
or a fresh head, and reports hits@1. The ``tiny`` preset runs the whole pipeline in seconds on a
CPU: a random 2-layer BERT, an in-memory tokenizer and generated data. It checks the plumbing, not
the paper's claim (for that: the ``cpu`` preset offline, or ``paper`` on a GPU).

This example needs the ``empirical`` extra (torch, transformers, peft) and is shown without
running when the documentation is built. The same from the shell::

    loraml empirical run --preset tiny --out runs/tiny
    loraml empirical report runs/tiny
"""

import json
import tempfile
from pathlib import Path

from loraml.cli import main

out = Path(tempfile.mkdtemp()) / "tiny"
code = main(["empirical", "run", "--preset", "tiny", "--device", "cpu", "--out", str(out)])
print("exit code", code)

# %%
# The run directory holds ``config.json``, ``tasks.json``, checkpoints and per-task records,
# and ``results.json`` / ``results.md`` / ``results.png``. Rerunning the same command resumes
# (finished work is reused); other settings on the same directory are refused.
results = json.loads((out / "results.json").read_text())
for row in results["summary"]:
    print(row["method"], row["scheme"], row["rank"], f"{100 * row['mean']:.1f} %")
print((out / "results.md").read_text())

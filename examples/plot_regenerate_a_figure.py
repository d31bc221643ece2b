"""
Regenerate a paper figure
=========================

``loraml figures NAME --quick`` computes a figure's data from independent seeded runs, caches it
beside the image (``NAME.npz`` and ``NAME.json``: settings, seed, code version and their hash, the
*key*) and draws it. With the committed data and an unchanged key it only redraws; any change of
settings or code version recomputes.

Here we copy the committed quick data of ``rate`` to a scratch folder and redraw from it (the
cache is valid, so nothing is recomputed), then recompute a smaller version of the same figure
with an override of its settings (the key changes, so it runs).
"""

import json
import shutil
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

import loraml.figures
from loraml.figures.generate import generate
from loraml.figures.registry import registry

committed = Path(loraml.figures.__file__).parent / "output" / "quick"
out = Path(tempfile.mkdtemp())
for suffix in (".npz", ".json"):
    shutil.copy(committed / f"rate{suffix}", out / f"rate{suffix}")

meta = json.loads((out / "rate.json").read_text())
print(meta["summary"])
print("settings:", meta["settings"])
print("key:", meta["key"], "| compute seconds when it was made:", meta["compute_seconds"])

# %%
# Redraw from the cache: no run is computed.
(outcome,) = generate(["rate"], quick=True, out=out, progress=False)
print("from cache:", outcome.cached, "| fitted slopes:", outcome.data["slopes"].round(2))

fig, ax = plt.subplots(figsize=(7, 4))
ax.imshow(plt.imread(out / "rate.png"))
ax.set_axis_off()

# %%
# A smaller variant (fewer repetitions and sample sizes): a new key, so it is computed.
small = {"rate": {"instances": 1, "reps": 5, "ns": [100, 400, 1600]}}
(outcome,) = generate(["rate"], quick=True, out=out, progress=False, overrides=small)
print("from cache:", outcome.cached, f"| computed in {outcome.seconds:.1f} s")
print("fitted slopes:", outcome.data["slopes"].round(2))
print("every figure:", ", ".join(registry()))

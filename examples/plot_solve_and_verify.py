"""
Bring your own instance to ``solve`` and ``verify``
===================================================

``loraml solve`` and ``loraml verify --instance`` take an ``.npz`` file: a population instance
(``A_star`` d x d, ``U_star`` T x d x k, optionally ``V_star``) or data (``X``, ``Y`` of shape
T x d x N, with ``k``). Here we write one, solve it with two methods from the command line (the
same entry point as the shell command, called from Python), and run the checks that apply.
"""

import json
import tempfile
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np

from loraml.cli import main

folder = Path(tempfile.mkdtemp())
rng = np.random.default_rng(0)
d, T, k = 12, 3, 1
A_star = rng.standard_normal((d, d))
A_star = (A_star + A_star.T) / 2
U_star = rng.standard_normal((T, d, k))
np.savez(folder / "mine.npz", A_star=A_star, U_star=U_star)

# %%
# ``loraml solve --json`` prints one JSON object; the solution is written atomically.
for method in ("sr", "lora-ml"):
    buf = StringIO()
    with redirect_stdout(buf):
        code = main(
            [
                "solve",
                "--instance",
                str(folder / "mine.npz"),
                "--method",
                method,
                "--out",
                str(folder / f"{method}.npz"),
                "--json",
            ]
        )
    out = json.loads(buf.getvalue())
    print(method, "exit", code, "relative error", f"{out['a_error_relative']:.2e}")

print(sorted(np.load(folder / "lora-ml.npz").files))

# %%
# Bad input is one line and exit code 2, before any work: here the rank is larger than d.
code = main(["solve", "--instance", str(folder / "mine.npz"), "--method", "sr",
             "--out", str(folder / "bad.npz"), "--rank", "50"])  # fmt: skip
print("exit code", code, "| output written:", (folder / "bad.npz").exists())

# %%
# ``loraml verify --instance`` runs the statements that apply to this instance (Theorem 1,
# Corollary 1, Theorem 3 for T = 3, ...) and the ``instance`` measurement: every method's
# distance to ``A*``. The same checks are Python functions in :mod:`loraml.theory.checks`.
from loraml.theory import checks  # noqa: E402
from loraml.theory.io import load_instance  # noqa: E402

inst = load_instance(folder / "mine.npz")
rec = checks.check_instance_recovery(inst.q, k, rng, A_star=inst.A_star, starts=3, convex=False)
for method, rel in rec.numbers["relative_error_of_A"].items():
    print(f"{method:20s} ||A_hat - A*|| / ||A*|| = {rel:.1e}")
print("random starts ended at:", rec.numbers["random_start_end_points"])

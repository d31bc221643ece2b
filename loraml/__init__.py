"""LoRA-ML: meta-learning with low-rank adaptation (Block et al., arXiv 2410.22264).

Subpackages: :mod:`loraml.theory` (the linear low-rank theory, its solvers and checks),
:mod:`loraml.figures` (the paper's figures and ours) and :mod:`loraml.empirical` (the
RoBERTa/ConvAI2 experiment); :mod:`loraml.cli` is the ``loraml`` command line.
"""

# The one place the version is written: pyproject.toml reads it (``[tool.setuptools.dynamic]``),
# ``loraml --version`` prints it and figure metadata records it.
__version__ = "0.1.0"

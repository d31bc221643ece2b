"""The linear low-rank setting of Block et al., "Meta-Learning Adaptable Foundation Models".

Task t has ground truth ``A_t* = A* + U_t* U_t*^T``. This package holds the task families and their
data (:mod:`loraml.theory.family`), the losses as per-task quadratics
(:mod:`loraml.theory.objectives`), standard retraining and LoRA-ML retraining
(:mod:`loraml.theory.retraining`), LoRA fine-tuning
(:mod:`loraml.theory.finetune`) and symmetry-aware distances (:mod:`loraml.theory.metrics`).

The other modules are attributes of the package too, imported on first use so that
``import loraml.theory`` stays light: :mod:`~loraml.theory.adaptation` (fine-tuning rates and
floors), :mod:`~loraml.theory.checks` (the paper's statements as checks),
:mod:`~loraml.theory.convex` (convex relaxations; cvxpy), :mod:`~loraml.theory.landscape`
(stationary points and curvature), :mod:`~loraml.theory.io`, :mod:`~loraml.theory.linalg` and
:mod:`~loraml.theory.rng` (seeds and Generators).

Conventions: noise is a standard deviation; finite-sample losses are per-sample means; every
``rng`` argument takes an int seed, a :class:`numpy.random.Generator` or None.
"""

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from loraml.theory.divergence import DivergenceError
from loraml.theory.family import (
    Genericity,
    TaskFamily,
    draw_family,
    genericity,
    sample_family_data,
    sample_task_data,
)
from loraml.theory.finetune import FineTuneResult, finetune_closed_form, finetune_gd
from loraml.theory.metrics import BaseError, adapter_errors, base_error, procrustes_distance
from loraml.theory.objectives import (
    Quadratics,
    adapted,
    excess_loss,
    lora_ml_grad,
    lora_ml_hvp,
    lora_ml_loss,
    sample_loss,
)
from loraml.theory.retraining import (
    GDResult,
    LoraMLResult,
    identifiability,
    lora_ml_paper_gd,
    solve_lora_ml,
    sr_closed_form,
    sr_gd,
    sr_released,
    stationarity_thresholds,
    task_residuals,
    task_stationarity,
)

if TYPE_CHECKING:  # what the lazy attributes below are, for type checkers
    from loraml.theory import adaptation as adaptation
    from loraml.theory import checks as checks
    from loraml.theory import convex as convex
    from loraml.theory import io as io
    from loraml.theory import landscape as landscape
    from loraml.theory import linalg as linalg
    from loraml.theory import rng as rng

# Submodules imported on first attribute access (PEP 562), not by ``import loraml.theory``.
_LAZY_SUBMODULES = ("adaptation", "checks", "convex", "io", "landscape", "linalg", "rng")


def __getattr__(name: str) -> ModuleType:
    """Import the submodule ``name`` on first access (``loraml.theory.convex`` etc.)."""
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The package's names, the not-yet-imported submodules included."""
    return sorted({*globals(), *_LAZY_SUBMODULES})


__all__ = [
    "BaseError",
    "DivergenceError",
    "FineTuneResult",
    "GDResult",
    "Genericity",
    "LoraMLResult",
    "Quadratics",
    "TaskFamily",
    "adapted",
    "adapter_errors",
    "base_error",
    "draw_family",
    "excess_loss",
    "finetune_closed_form",
    "finetune_gd",
    "genericity",
    "identifiability",
    "lora_ml_grad",
    "lora_ml_hvp",
    "lora_ml_loss",
    "lora_ml_paper_gd",
    "procrustes_distance",
    "sample_family_data",
    "sample_loss",
    "sample_task_data",
    "solve_lora_ml",
    "sr_closed_form",
    "sr_gd",
    "sr_released",
    "stationarity_thresholds",
    "task_residuals",
    "task_stationarity",
]

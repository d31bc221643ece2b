"""The linear low-rank setting of Block et al., "Meta-Learning Adaptable Foundation Models".

Task t has ground truth ``A_t* = A* + U_t* U_t*^T``. This package holds the task families and their
data (:mod:`loraml.theory.family`), the losses as per-task quadratics
(:mod:`loraml.theory.objectives`), standard retraining and LoRA-ML retraining
(:mod:`loraml.theory.retraining`), LoRA fine-tuning
(:mod:`loraml.theory.finetune`) and symmetry-aware distances (:mod:`loraml.theory.metrics`).

Conventions: noise is a standard deviation; finite-sample losses are per-sample means.
"""

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
    stationarity_thresholds,
    task_residuals,
    task_stationarity,
)

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
    "stationarity_thresholds",
    "task_residuals",
    "task_stationarity",
]

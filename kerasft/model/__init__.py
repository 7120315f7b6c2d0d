"""Model: keras.applications ResNet backbone + new head; fine-tuning plans."""

from kerasft.model.builder import build_model, resolve_weights, stage_of
from kerasft.model.init import draw_initial_weights
from kerasft.model.plan import Phase, apply_phase, make_phases, param_counts

__all__ = [
    "Phase",
    "apply_phase",
    "build_model",
    "draw_initial_weights",
    "make_phases",
    "param_counts",
    "resolve_weights",
    "stage_of",
]

"""Fine-tuning plans: which layers train in which phase, at what rate.

A plan is a list of `Phase`s. Each phase sets `layer.trainable` per layer
and is trained with its own compile (Keras needs a recompile after
`trainable` changes). A BatchNormalization layer whose `trainable` is False
runs in inference mode in Keras 3: it uses, and does not update, its moving
statistics. ``batchnorm: inference`` therefore freezes every BN layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from kerasft.config import PlanConfig, TrainConfig
from kerasft.model.builder import stage_of

ALL_STAGES = frozenset({1, 2, 3, 4, 5})


@dataclass
class Phase:
    """One stretch of training with a fixed set of trainable layers.

    Attributes:
        name: ``head``, ``full`` or ``finetune``.
        epochs: how many epochs the phase lasts.
        stages: backbone stages (1-5) that train; the head always trains.
        lr_factor: multiplies the base learning rate.
    """

    name: str
    epochs: int
    stages: frozenset
    lr_factor: float = 1.0

    def describe(self) -> str:
        if not self.stages:
            what = "head only (backbone frozen)"
        elif self.stages == ALL_STAGES:
            what = "all layers"
        else:
            names = ", ".join(f"conv{s}" for s in sorted(self.stages))
            what = f"head + {names}"
        return f"{self.name}: {self.epochs} epoch(s), {what}, lr x{self.lr_factor:g}"


def make_phases(plan: PlanConfig, train: TrainConfig) -> list[Phase]:
    """Turns the plan config into phases covering `train.epochs` epochs."""
    if plan.kind == "head":
        return [Phase("head", train.epochs, frozenset())]
    if plan.kind == "full":
        return [Phase("full", train.epochs, ALL_STAGES)]
    if plan.unfreeze == "all":
        stages = ALL_STAGES
    else:
        stages = frozenset(range(6 - int(plan.unfreeze), 6))
    return [
        Phase("head", plan.head_epochs, frozenset()),
        Phase(
            "finetune",
            train.epochs - plan.head_epochs,
            stages,
            plan.finetune_lr_factor,
        ),
    ]


def apply_phase(model: keras.Model, phase: Phase, batchnorm: str) -> dict:
    """Sets `trainable` on every layer for `phase`.

    Args:
        model: a model from `build_model`.
        phase: the phase to apply.
        batchnorm: ``inference`` (BN layers frozen, inference mode) or
            ``train`` (BN layers of trainable stages train).

    Returns:
        Parameter counts: ``{"trainable": n, "frozen": m}``.
    """
    for layer in model.layers:
        stage = stage_of(layer.name)
        if stage == "head":
            layer.trainable = True
        elif stage is None:
            layer.trainable = False
        else:
            on = stage in phase.stages
            if isinstance(layer, keras.layers.BatchNormalization):
                on = on and batchnorm == "train"
            layer.trainable = on
    return param_counts(model)


def param_counts(model: keras.Model) -> dict:
    """Counts of trainable and frozen parameters."""
    def count(variables):
        return int(sum(int(keras.ops.size(v)) for v in variables))

    return {
        "trainable": count(model.trainable_weights),
        "frozen": count(model.non_trainable_weights),
    }

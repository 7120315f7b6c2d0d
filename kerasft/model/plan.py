"""Fine-tuning plans: which layers train in which phase, at what rate.

A plan is a list of `Phase`s. Each phase sets `layer.trainable` per layer
and is trained with its own compile (Keras needs a recompile after
`trainable` changes). A BatchNormalization layer whose `trainable` is False
runs in inference mode in Keras 3: it uses, and does not update, its moving
statistics. ``batchnorm: inference`` therefore freezes every BN layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras

from kerasft.config import (
    STAGE_NAMES,
    PlanConfig,
    TrainConfig,
    stage_name,
    trained_stages,
)
from kerasft.model.builder import stage_of

ALL_STAGES = frozenset({1, 2, 3, 4, 5})


def stage_multipliers(plan: PlanConfig) -> dict[str, float]:
    """Each stage's learning-rate multiplier, from the head down.

    `plan.lr_decay_per_stage` ``d`` gives the head 1, conv5 ``d``, conv4
    ``d**2`` ... conv1 (the stem) ``d**5``; `plan.lr_multipliers` gives
    the listed stages their value and the others 1 (config validation
    makes sure every backbone stage that trains is listed). Neither: all 1.

    Args:
        plan: the plan section of the run config.

    Returns:
        ``{stage name: multiplier}`` for every name in
        `kerasft.config.STAGE_NAMES`.
    """
    if plan.lr_decay_per_stage is not None:
        return {name: float(plan.lr_decay_per_stage) ** depth
                for depth, name in enumerate(STAGE_NAMES)}
    given = plan.lr_multipliers or {}
    return {name: float(given.get(name, 1.0)) for name in STAGE_NAMES}


@dataclass
class Phase:
    """One stretch of training with a fixed set of trainable layers.

    Attributes:
        name: ``head``, ``full`` or ``finetune``.
        epochs: how many epochs the phase lasts.
        stages: backbone stages (1-5) that train; the head always trains.
        lr_factor: multiplies the base learning rate.
        lr_multipliers: per stage name (`stage_name`), multiplies the
            phase's rate (base x `lr_factor`) for that stage's variables.
    """

    name: str
    epochs: int
    stages: frozenset
    lr_factor: float = 1.0
    lr_multipliers: dict = field(
        default_factory=lambda: dict.fromkeys(STAGE_NAMES, 1.0))

    @property
    def discriminative(self) -> bool:
        """Whether a stage that trains in this phase has a multiplier other
        than 1 (its rate is not the phase's rate)."""
        return any(self.lr_multipliers[n] != 1.0 for n in self.trained_names())

    def trained_names(self) -> list[str]:
        """Names of the stages that train in this phase, from the head down."""
        return ["head"] + [stage_name(s)
                           for s in sorted(self.stages, reverse=True)]

    def stage_learning_rates(self, base_lr: float) -> dict[str, float]:
        """The starting learning rate of each stage that trains.

        Args:
            base_lr: `optimizer.learning_rate` of the config.

        Returns:
            ``{stage name: base_lr x lr_factor x multiplier}`` (a schedule
            then scales every stage alike).
        """
        return {n: base_lr * self.lr_factor * self.lr_multipliers[n]
                for n in self.trained_names()}

    def describe(self) -> str:
        if not self.stages:
            what = "head only (backbone frozen)"
        elif self.stages == ALL_STAGES:
            what = "all layers"
        else:
            names = ", ".join(f"conv{s}" for s in sorted(self.stages))
            what = f"head + {names}"
        text = (f"{self.name}: {self.epochs} epoch(s), {what}, "
                f"lr x{self.lr_factor:g}")
        if self.discriminative:
            per = ", ".join(f"{n} x{self.lr_multipliers[n]:.3g}"
                            for n in self.trained_names())
            text += f" (per stage: {per})"
        return text


def make_phases(plan: PlanConfig, train: TrainConfig) -> list[Phase]:
    """Turns the plan config into phases covering `train.epochs` epochs."""
    multipliers = stage_multipliers(plan)
    if plan.kind == "head":
        return [Phase("head", train.epochs, frozenset(),
                      lr_multipliers=dict(multipliers))]
    if plan.kind == "full":
        return [Phase("full", train.epochs, trained_stages(plan),
                      lr_multipliers=dict(multipliers))]
    return [
        Phase("head", plan.head_epochs, frozenset(),
              lr_multipliers=dict(multipliers)),
        Phase(
            "finetune",
            train.epochs - plan.head_epochs,
            trained_stages(plan),
            plan.finetune_lr_factor,
            dict(multipliers),
        ),
    ]


def variable_lr_multipliers(model: keras.Model, phase: Phase) -> dict:
    """Each of `model`'s variables' learning-rate multiplier in `phase`.

    Args:
        model: a model from `build_model`.
        phase: the phase being trained.

    Returns:
        ``{variable path: multiplier}`` for every variable of a backbone
        stage or the head (what `kerasft.backend.lr_multipliers` takes).
    """
    out = {}
    for layer in model.layers:
        stage = stage_of(layer.name)
        if stage is None:
            continue
        for v in layer.weights:
            out[v.path] = phase.lr_multipliers[stage_name(stage)]
    return out


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

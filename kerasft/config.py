"""Typed run configuration: YAML + overrides -> validated dataclasses.

A config is loaded once, validated once, and then passed around as plain
frozen-free dataclasses. Every key can be overridden from the command line as
``--set section.key=value`` (the value is parsed as YAML, so ``3``, ``0.1``,
``null`` and ``[1, 2]`` mean what they look like). Every error names the file,
the key and the value received, and is a `ConfigError` (exit code 2).

Example:

```python
cfg = load_config("configs/quickstart.yaml", ["train.epochs=1"])
cfg.train.epochs  # 1
```
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kerasft.errors import ConfigError

MODELS = (
    "resnet50",
    "resnet101",
    "resnet152",
    "resnet50v2",
    "resnet101v2",
    "resnet152v2",
)
# keras.applications refuses smaller inputs for these models.
MIN_IMAGE_SIZE = 32
# Activation memory grows with the square of the side: at 1024 px one
# ResNet50 training image keeps ~21x what it keeps at 224 px (several GB),
# more than one GPU holds for a batch; above it a typo (100000) would only
# end in an out-of-memory crash after the data is loaded.
MAX_IMAGE_SIZE = 1024
# numpy's legacy seeding (np.random.seed, which keras.utils.set_random_seed
# calls) takes 0 to 2**32 - 1.
MAX_SEED = 2**32 - 1
# A config is a few KB; these bound what a YAML file or a --set value may
# expand to (aliases can make a 1 KB file expand to 10**9 nodes).
MAX_CONFIG_BYTES = 1_000_000
MAX_YAML_NODES = 100_000
BAD_IMAGE_POLICIES = ("fail", "skip")
DATA_SOURCES = ("tfds", "folder", "builtin", "numpy")
BUILTIN_DATASETS = ("digits",)
PLANS = ("head", "full", "phased")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine")
BN_MODES = ("inference", "train")
# Names of the parts of a ResNet that `plan.lr_multipliers` may give a
# learning-rate multiplier, from the head down (conv1 is the stem).
STAGE_NAMES = ("head", "conv5", "conv4", "conv3", "conv2", "conv1")
# Keras dtype-policy names (keras.mixed_precision): variables stay float32,
# layers compute in the second half of the name.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _choice(*choices: str) -> dict:
    return {"choices": choices}


@dataclass
class DataConfig:
    """Where images come from and how they are batched.

    Args:
        source: `tfds`, `folder`, `builtin` or `numpy`. Defaults to `"tfds"`.
        name: the tensorflow-datasets name (`source: tfds`) or the built-in
            set (`source: builtin`, only `digits`). Defaults to `"cifar10"`.
        path: image folder, one sub-folder per class (`source: folder`).
        data_dir: where tensorflow-datasets keeps prepared sets. Defaults to
            tfds's own default (`~/tensorflow_datasets`).
        image_size: square side in pixels the images are resized to.
        batch_size: images per training step.
        validation_fraction: share of the training split held out for
            validation when the set has no validation split.
        train_split, validation_split, test_split: split names.
        max_train_images, max_test_images: cap the number of images used,
            for smoke runs (`null` = all).
        augment_flip: random horizontal flips, drawn from numpy by seed.
        augment_crop_pad: pad-and-random-crop by this many pixels (0 = off).
        workers: threads that decode, resize and augment batches ahead of
            the model (`null` = one per CPU core, at most 16). Images stay at
            native size in memory and are resized per batch; the worker
            count never changes the batches.
        on_bad_image: what to do with an image file (or encoded image) that
            cannot be decoded, found when every image the run uses is
            decoded once at native size before the first step: `fail` stops
            with an error naming each bad file; `skip` leaves those images
            out and prints a warning naming each one. Defaults to `"fail"`.
        classes: train and test on these classes only, by name as the set
            names them (`data.json`'s ``class_names``; the digits' names
            are ``"0"``-``"9"``, so ``[5, 6, 7, 8, 9]`` works, a number is
            read as its name), e.g. ``[cat, dog]``. Labels are renumbered
            0..k-1 in the order listed; the class names stay the set's, so
            reports read ``"5"``, not ``"0"``. The test split is every test
            image of the listed classes (for a set without one, it is
            carved from the whole set before the classes are picked, so a
            run on other classes of the same set never trained on it).
            At least 2, no repeats. Defaults to `None` (every class).
        train_per_class: labelled images per class, drawn by seed (numpy,
            the same on every backend), for few-label fine-tuning. The cap
            is taken before the validation split: with
            `validation_fraction` 0.1 and 30 per class, 27 train and 3
            validate, so every label the run uses is counted. A set with
            its own validation split keeps it (of the chosen classes).
            Every chosen class must have this many training images.
            Defaults to `None` (all).

    Pixel values: uint8 images are used as they are; other integer arrays
    must hold values in [0, 255], except uint16 arrays (and 16-bit image
    files) whose values exceed 255, which are read as 16-bit and scaled by
    255/65535. Float arrays must lie in [0, 1] (scaled by 255) or in
    [0, 255]; anything else (negative values, NaN or infinity, [0, 1] data
    with a few values above 1) is an error naming the array and the fix:
    kerasft never clips or rescales pixels by guesswork. Labels must be
    integers (whole-number floats are accepted) in [0, number of classes),
    one per image, as a 1-D array.
    """

    source: str = field(default="tfds", metadata=_choice(*DATA_SOURCES))
    name: str | None = "cifar10"
    path: str | None = None
    data_dir: str | None = None
    image_size: int = 224
    batch_size: int = 32
    validation_fraction: float = 0.1
    train_split: str = "train"
    validation_split: str | None = None
    test_split: str = "test"
    max_train_images: int | None = None
    max_test_images: int | None = None
    augment_flip: bool = False
    augment_crop_pad: int = 0
    workers: int | None = None
    on_bad_image: str = field(
        default="fail", metadata=_choice(*BAD_IMAGE_POLICIES))
    classes: list[str | int] | None = None
    train_per_class: int | None = None


@dataclass
class ModelConfig:
    """The backbone and its new head.

    Args:
        arch: a keras.applications ResNet: resnet50/101/152 or the v2 forms.
        weights: `imagenet`, `none` (random init, seeded), a path to a
            weights file (`.weights.h5`, `.keras` or Keras's legacy `.h5`),
            or a finished kerasft run directory (or a folder of runs: its
            newest run): that run's final weights, backbone only (the head
            is new, for the new task; see
            `kerasft.model.resolve_weights`). Relative paths are taken
            from the current directory.
        pooling: `avg` or `max` global pooling before the head.
        dropout: dropout rate before the Dense head (0 = no dropout layer).
        bn_momentum: overrides every BatchNorm layer's moving-average
            momentum (Keras's default is 0.99). Useful when training from
            random init for few steps: the moving statistics then lag far
            behind the weights and inference-mode accuracy collapses.
    """

    arch: str = field(default="resnet50", metadata=_choice(*MODELS))
    weights: str = "imagenet"
    pooling: str = field(default="avg", metadata=_choice("avg", "max"))
    dropout: float = 0.0
    bn_momentum: float | None = None


@dataclass
class PlanConfig:
    """Which layers train, and when.

    Args:
        kind: `head` (backbone frozen), `full` (everything trains) or
            `phased` (head first, then the top stages at a lower rate).
        head_epochs: epochs of the head-only phase of a `phased` plan.
        unfreeze: for `phased`: how many ResNet stages to unfreeze from the
            top (1-5: conv5 ... conv1), or `all`.
        finetune_lr_factor: the unfrozen phase's learning rate is the base
            rate times this factor.
        batchnorm: `inference` keeps every BatchNorm layer frozen and in
            inference mode (the safe choice for small data); `train` lets
            BatchNorm layers of trainable stages update their statistics.
        lr_decay_per_stage: discriminative learning rates: the head trains
            at the phase's rate, conv5 at this factor times it, conv4 at
            its square, ... conv1 (the stem) at its fifth power; a value in
            (0, 1]. Defaults to `null` (every stage at the phase's rate).
        lr_multipliers: discriminative learning rates as an explicit map
            from stage name (`head`, `conv5` ... `conv1`) to a multiplier
            > 0 of the phase's rate, e.g. ``{conv5: 0.5, conv4: 0.1}``.
            The head defaults to 1; every backbone stage that trains in the
            plan must be listed (a forgotten stage would otherwise train at
            the full rate). At most one of the two options. Defaults to
            `null`.
    """

    kind: str = field(default="phased", metadata=_choice(*PLANS))
    head_epochs: int = 1
    unfreeze: int | str = 2
    finetune_lr_factor: float = 0.1
    batchnorm: str = field(default="inference", metadata=_choice(*BN_MODES))
    lr_decay_per_stage: float | None = None
    lr_multipliers: dict[str, float] | None = None


@dataclass
class OptimizerConfig:
    """Optimizer and learning-rate schedule.

    Args:
        name: `sgd` (with momentum), `adam` or `adamw`.
        learning_rate: base learning rate, or `auto`: each phase first
            runs the learning-rate range test (`lr_find:` section,
            `kerasft.train.lr_find`) from the weights it starts from, and
            trains at the rate it suggests (the phase's `lr_factor` is then
            not applied: the test measured that phase).
        momentum: SGD momentum.
        weight_decay: decoupled weight decay (0 = off).
        schedule: `constant` or `cosine` (cosine decay over each phase).
        clipnorm: clip each gradient to this global norm (`null` = off).
    """

    name: str = field(default="sgd", metadata=_choice(*OPTIMIZERS))
    learning_rate: float | str = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = field(default="constant", metadata=_choice(*SCHEDULES))
    clipnorm: float | None = None


@dataclass
class LRFindConfig:
    """The learning-rate range test (`kerasft lr-find`,
    `optimizer.learning_rate: auto`); see `kerasft.train.lr_find`.

    Args:
        steps: the most steps of one test (`null`: 100, or one pass over
            the training images if that is fewer, but at least 30:
            repeating batches lets the loss fall from memorising them).
            Defaults to `None`.
        start_lr: the first rate. Defaults to `1e-7`.
        end_lr: the last rate. Defaults to `10.0`.
    """

    steps: int | None = None
    start_lr: float = 1e-7
    end_lr: float = 10.0


@dataclass
class TrainConfig:
    """How long to train and what to keep.

    Args:
        epochs: total epochs over all phases.
        steps_per_epoch: cap on steps per epoch (`null` = one pass).
        checkpoint_every: save weights every this many epochs.
        verbose: Keras progress output: `auto`, 0, 1 or 2.
        deterministic: turn on the backend's deterministic ops.
        precision: `float32`, `mixed_bfloat16` or `mixed_float16`: the Keras
            dtype policy the model is built with. Mixed policies keep the
            variables (and so the optimizer, the recorded weights and
            checkpoints) in float32 and compute in 16 bits; the head's
            logits and the loss stay float32. `mixed_float16` adds Keras's
            dynamic loss scaling (`LossScaleOptimizer`). Use
            `mixed_bfloat16` on GPUs with bfloat16 (A100, H100, recent
            TPUs/CPUs), `mixed_float16` on older NVIDIA GPUs (V100, T4).
            Defaults to `"float32"`.
        jit_compile: `auto`, `true` or `false`, passed to `model.compile`.
            `auto` is Keras's own choice per backend: torch runs eagerly
            (`true` uses `torch.compile`, which Keras's torch step does
            not profit from; see `kerasft.backend.jit_compile_note`),
            tensorflow compiles with
            XLA on a GPU and not on a CPU-only machine, jax always compiles
            with XLA (`false` runs the step un-jitted, very slowly).
            Defaults to `"auto"`.
    """

    epochs: int = 5
    steps_per_epoch: int | None = None
    checkpoint_every: int = 1
    verbose: int | str = "auto"
    deterministic: bool = False
    precision: str = field(default="float32", metadata=_choice(*PRECISIONS))
    jit_compile: bool | str = "auto"


@dataclass
class RecordConfig:
    """What the recorders write into ``<run>/record/`` (see the README).

    Args:
        enabled: attach the recorders at all.
        every_steps: gradient norms and update ratios every this many
            steps, or ``auto``: about `AUTO_POINTS` rows over the run
            (`RecordConfig.steps_between`), so a short run still gets its
            figures. Defaults to `"auto"`.
        scalars_every_steps: per-step loss/metrics/lr/images-per-second rows.
        weights, gradients, update_ratios, activations, embeddings,
        probe_gradients, batchnorm, feature_maps, scalars, attention: switch
            each kind on or off.
        weights_every_steps: weight histograms every this many steps too
            (`null` = per epoch only).
        probe_size: images in the probe batch (activations, gradients).
        embedding_size: images whose penultimate features are recorded.
        attention_images: probe images whose Grad-CAM and saliency maps
            are recorded (``attention``), at epoch 0 and the last epoch;
            at most 16.
        attention_every_epoch: record those maps after every epoch too.
        attention_layer: the Grad-CAM layer's name, or `null` for the
            deepest ResNet stage output whose map is at least 4x4
            (`kerasft.explain.default_layer`).
        tensorboard: export the records for TensorBoard at the end.
    """

    enabled: bool = True
    every_steps: int | str = "auto"
    scalars_every_steps: int = 1
    weights: bool = True
    gradients: bool = True
    update_ratios: bool = True
    activations: bool = True
    embeddings: bool = True
    probe_gradients: bool = True
    batchnorm: bool = True
    feature_maps: bool = True
    attention: bool = True
    scalars: bool = True
    weights_every_steps: int | None = None
    probe_size: int = 32
    embedding_size: int = 256
    attention_images: int = 4
    attention_every_epoch: bool = False
    attention_layer: str | None = None
    tensorboard: bool = True

    def steps_between(self, total_steps: int) -> int:
        """The step interval of the step tables for a run of `total_steps`.

        ``every_steps: auto`` gives ``total_steps // AUTO_POINTS``, at
        least 1; an explicit number is kept.

        Example:

        ```python
        RecordConfig().steps_between(4)      # 1: every step of a tiny run
        RecordConfig().steps_between(2000)   # 100
        ```
        """
        if self.every_steps == "auto":
            return max(1, int(total_steps) // AUTO_POINTS)
        return int(self.every_steps)


# ``record.attention_images`` at most: one row each in the report's figure.
MAX_ATTENTION_IMAGES = 16
# ``record.every_steps: auto`` aims at this many rows per step table: enough
# for a trend line and the diagnosis (which needs 3), few enough to cost
# nothing on a long run.
AUTO_POINTS = 20


@dataclass
class RunConfig:
    """A whole run: what `kerasft train` reads from a YAML file.

    Args:
        name: run name, used in the run directory's name.
        seed: seeds data order, augmentation, the probe set and random init
            (0 to 2**32 - 1).
        data, model, plan, optimizer, train, record, lr_find: the
            sections above.
    """

    name: str = "run"
    seed: int = 1337
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    lr_find: LRFindConfig = field(default_factory=LRFindConfig)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (the inverse of `from_dict`)."""
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- loading


def _show(value: Any, limit: int = 120) -> str:
    """`repr(value)`, cut to `limit` characters: errors stay one short line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... (cut)"


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is dict:
        return "a mapping (e.g. {conv5: 0.5})"
    if typing.get_origin(tp) is list:
        return "a list (e.g. [5, 6, 7])"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Checks `value` against the annotation `tp`; returns the value to keep."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            if typing.get_origin(option) is dict and isinstance(value, dict):
                # A mapping's own error names the entry that is wrong.
                return _coerce(value, option, where)
            if typing.get_origin(option) is list and isinstance(value, list):
                # So does a list's.
                return _coerce(value, option, where)
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        expected = " or ".join(_type_name(o) for o in options)
        raise ConfigError(f"{where}: expected {expected}. Received: {_show(value)}")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(
                f"{where}: expected {_type_name(tp)}. Received: {_show(value)}")
        # Keys are names, checked by `_check` (which lists the known ones).
        _, value_type = typing.get_args(tp)
        return {str(k): _coerce(v, value_type, f"{where}.{k}")
                for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(
                f"{where}: expected {_type_name(tp)}. Received: {_show(value)}")
        (item_type,) = typing.get_args(tp)
        return [_coerce(v, item_type, f"{where}[{i}]")
                for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
            # YAML 1.1 (PyYAML) reads 1e-5 as a string; it is a number
            # (and what Python prints for 0.00001, so --lr 1e-5 sends it).
            value = float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(
                    f"{where}: expected a finite number. Received: {_show(value)}"
                )
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - only the types above are used
        raise TypeError(f"unsupported config type {tp}")
    raise ConfigError(
        f"{where}: expected {_type_name(tp)}. Received: {_show(value)}"
    )


def _build(cls: type, data: Any, where: str, source: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: {where or 'the file'} must be a mapping of keys. "
            f"Received: {_show(data)}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            known = ", ".join(fields)
            raise ConfigError(
                f"{source}: unknown key '{path}'. Known keys here: {known}."
            )
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, path, source)
            continue
        value = _coerce(value, tp, f"{source}: {path}")
        choices = fields[key].metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(
                f"{source}: {path}: expected one of {', '.join(choices)}. "
                f"Received: {_show(value)}"
            )
        kwargs[key] = value
    return cls(**kwargs)


def _check(cfg: RunConfig, source: str) -> None:
    """Value checks that need more than a type."""

    def bad(key: str, value: Any, expected: str) -> ConfigError:
        return ConfigError(
            f"{source}: {key}: expected {expected}. Received: {_show(value)}"
        )

    d, m, p, o, t = cfg.data, cfg.model, cfg.plan, cfg.optimizer, cfg.train
    # Each key's own range first, then the rules that tie keys together,
    # so an error blames the key that is wrong (train.epochs: -3 is a bad
    # epoch count, not a bad plan.head_epochs).
    if not 0 <= cfg.seed <= MAX_SEED:
        raise bad("seed", cfg.seed, f"an integer from 0 to 2**32 - 1 "
                  f"({MAX_SEED}), the range numpy's seeding takes")
    if d.image_size < MIN_IMAGE_SIZE:
        raise bad(
            "data.image_size",
            d.image_size,
            f"at least {MIN_IMAGE_SIZE} (the smallest input "
            f"keras.applications accepts for {m.arch})",
        )
    if d.image_size > MAX_IMAGE_SIZE:
        raise bad(
            "data.image_size",
            d.image_size,
            f"at most {MAX_IMAGE_SIZE}: activation memory grows with the "
            "square of the side (at 1024 px one ResNet50 training image "
            "needs ~21x its 224 px memory, several GB); ImageNet ResNets "
            "were trained at 224 px",
        )
    if d.batch_size < 1:
        raise bad("data.batch_size", d.batch_size, "a positive integer")
    if not 0.0 <= d.validation_fraction < 1.0:
        raise bad(
            "data.validation_fraction",
            d.validation_fraction,
            "a fraction in [0, 1)",
        )
    for key in ("max_train_images", "max_test_images"):
        value = getattr(d, key)
        if value is not None and value < 1:
            raise bad(f"data.{key}", value, "a positive integer or null")
    if d.train_per_class is not None and d.train_per_class < 1:
        raise bad("data.train_per_class", d.train_per_class,
                  "a positive integer (labelled images per class) or null")
    if d.classes is not None:
        names = [str(c) for c in d.classes]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise bad("data.classes", d.classes,
                      f"each class once; {', '.join(repeated)} is listed "
                      "more than once")
        if len(names) < 2:
            raise bad("data.classes", d.classes,
                      "at least 2 class names (a classifier needs 2), or "
                      "null for every class")
    if d.augment_crop_pad < 0:
        raise bad("data.augment_crop_pad", d.augment_crop_pad, "0 or more")
    if d.workers is not None and d.workers < 1:
        raise bad("data.workers", d.workers, "a positive integer or null")
    if not 0.0 <= m.dropout < 1.0:
        raise bad("model.dropout", m.dropout, "a rate in [0, 1)")
    if m.bn_momentum is not None and not 0.0 <= m.bn_momentum < 1.0:
        raise bad("model.bn_momentum", m.bn_momentum, "a value in [0, 1)")
    if isinstance(o.learning_rate, str) and o.learning_rate != "auto":
        raise bad("optimizer.learning_rate", o.learning_rate,
                  "a number > 0 or auto")
    if not isinstance(o.learning_rate, str) and o.learning_rate <= 0:
        raise bad("optimizer.learning_rate", o.learning_rate,
                  "a value > 0 (or auto)")
    f = cfg.lr_find
    if f.steps is not None and f.steps < 2:
        raise bad("lr_find.steps", f.steps, "at least 2 or null")
    if not 0 < f.start_lr < f.end_lr:
        raise bad("lr_find.start_lr", f.start_lr,
                  f"a value > 0 and below lr_find.end_lr ({f.end_lr:g})")
    if not 0.0 <= o.momentum < 1.0:
        raise bad("optimizer.momentum", o.momentum, "a value in [0, 1)")
    if o.weight_decay < 0:
        raise bad("optimizer.weight_decay", o.weight_decay, "0 or more")
    if o.clipnorm is not None and o.clipnorm <= 0:
        raise bad("optimizer.clipnorm", o.clipnorm, "a value > 0 or null")
    if t.epochs < 1:
        raise bad("train.epochs", t.epochs, "at least 1")
    if t.steps_per_epoch is not None and t.steps_per_epoch < 1:
        raise bad(
            "train.steps_per_epoch", t.steps_per_epoch, "at least 1 or null"
        )
    if t.checkpoint_every < 1:
        raise bad("train.checkpoint_every", t.checkpoint_every, "at least 1")
    if t.verbose not in ("auto", 0, 1, 2):
        raise bad("train.verbose", t.verbose, "auto, 0, 1 or 2")
    if t.jit_compile not in ("auto", True, False):
        raise bad("train.jit_compile", t.jit_compile, "auto, true or false")
    r = cfg.record
    if r.every_steps != "auto" and (isinstance(r.every_steps, str)
                                    or r.every_steps < 1):
        raise bad("record.every_steps", r.every_steps, "auto or at least 1")
    for key in ("scalars_every_steps", "probe_size", "embedding_size",
                "attention_images"):
        if getattr(r, key) < 1:
            raise bad(f"record.{key}", getattr(r, key), "at least 1")
    if r.attention_images > MAX_ATTENTION_IMAGES:
        raise bad("record.attention_images", r.attention_images,
                  f"at most {MAX_ATTENTION_IMAGES} (one row each in the "
                  "report's figure)")
    if r.weights_every_steps is not None and r.weights_every_steps < 1:
        raise bad("record.weights_every_steps", r.weights_every_steps,
                  "at least 1 or null")
    if isinstance(p.unfreeze, str) and p.unfreeze != "all":
        raise bad("plan.unfreeze", p.unfreeze, "an integer 1-5 or 'all'")
    if isinstance(p.unfreeze, int) and not 1 <= p.unfreeze <= 5:
        raise bad("plan.unfreeze", p.unfreeze, "an integer 1-5 or 'all'")
    if not 0.0 < p.finetune_lr_factor <= 1.0:
        raise bad(
            "plan.finetune_lr_factor", p.finetune_lr_factor, "a value in (0, 1]"
        )
    if p.lr_decay_per_stage is not None and not 0.0 < p.lr_decay_per_stage <= 1.0:
        raise bad(
            "plan.lr_decay_per_stage", p.lr_decay_per_stage,
            "a value in (0, 1]: each stage below the head trains at this "
            "factor times the stage above (e.g. 0.3; for other shapes set "
            "plan.lr_multipliers instead)",
        )
    for stage, value in (p.lr_multipliers or {}).items():
        if stage not in STAGE_NAMES:
            raise bad(
                "plan.lr_multipliers", {stage: value},
                f"stage names from {', '.join(STAGE_NAMES)} (conv1 is the "
                "stem); rename or remove the unknown one",
            )
        if value <= 0:
            raise bad(
                f"plan.lr_multipliers.{stage}", value,
                "a multiplier > 0 of the phase's learning rate (1 = the "
                "phase's rate; to freeze a stage, leave it out of "
                "plan.unfreeze or set plan.kind: head)",
            )
    if p.kind == "phased" and p.head_epochs < 1:
        raise bad("plan.head_epochs", p.head_epochs,
                  "at least 1 (epochs of the phased plan's head phase)")
    # Rules across keys.
    if d.source == "folder" and not d.path:
        raise bad(
            "data.path", d.path, "an image folder when data.source is folder"
        )
    if d.source == "numpy" and not d.path:
        raise bad(
            "data.path", d.path, "a .npz file when data.source is numpy"
        )
    if d.source == "tfds" and not d.name:
        raise bad(
            "data.name",
            d.name,
            "a tensorflow-datasets name (e.g. cifar10) when data.source "
            "is tfds",
        )
    if d.source == "builtin" and d.name not in BUILTIN_DATASETS:
        raise bad(
            "data.name",
            d.name,
            f"one of {', '.join(BUILTIN_DATASETS)} when data.source is "
            "builtin (the sets that ship inside an installed package)",
        )
    if m.weights not in ("imagenet", "none"):
        path = os.path.expanduser(m.weights)
        if os.path.isdir(path):
            from kerasft.rundir import final_weights

            # Before any data is read: an unfinished run stops here.
            final_weights(path, "model.weights", arch=m.arch)
        elif not os.path.isfile(path):
            raise bad(
                "model.weights",
                m.weights,
                "imagenet, none, the path of an existing weights file, or "
                "a finished kerasft run directory (no such file or "
                "directory)",
            )
    if p.lr_decay_per_stage is not None and p.lr_multipliers is not None:
        raise bad(
            "plan.lr_decay_per_stage", p.lr_decay_per_stage,
            "null when plan.lr_multipliers is set "
            f"({_show(p.lr_multipliers)}): give one of the two, not both",
        )
    if p.lr_multipliers is not None:
        missing = [f"conv{s}" for s in sorted(trained_stages(p), reverse=True)
                   if f"conv{s}" not in p.lr_multipliers]
        if missing:
            raise bad(
                "plan.lr_multipliers", p.lr_multipliers,
                f"a multiplier for every backbone stage that trains: "
                f"{', '.join(missing)} train(s) in this plan (plan.kind: "
                f"{p.kind}) but is not listed; add e.g. {missing[0]}: 0.1 "
                "(only the head defaults to 1)",
            )
    if p.kind == "phased" and not p.head_epochs < t.epochs:
        raise bad(
            "plan.head_epochs",
            p.head_epochs,
            f"less than train.epochs ({t.epochs}) so that both phases of "
            "the phased plan run (or set plan.kind: head or full)",
        )


def stage_name(stage: int | str) -> str:
    """The `STAGE_NAMES` entry of a stage: ``"head"``, or 1-5 -> ``"conv1"``
    ... ``"conv5"`` (as `kerasft.model.stage_of` numbers them, and as
    ``layers.json`` records them)."""
    return "head" if stage == "head" else f"conv{stage}"


def trained_stages(plan: PlanConfig) -> frozenset:
    """The backbone stages (1-5; 1 = the stem conv1) that train at some
    point of `plan`: its last phase's, since every plan unfreezes from the
    head down and never freezes again.

    Args:
        plan: the plan section of the run config.

    Returns:
        A frozenset of stage numbers (empty for a head-only plan).
    """
    if plan.kind == "head":
        return frozenset()
    if plan.kind == "full" or plan.unfreeze == "all":
        return frozenset(range(1, 6))
    return frozenset(range(6 - int(plan.unfreeze), 6))


def _yaml_children(node: yaml.Node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node, where: str) -> None:
    """Refuses YAML whose aliases expand to more than `MAX_YAML_NODES`.

    Counts every node as often as aliases repeat it, without expanding
    anything (sizes are memoized per node), so a "billion laughs" file is
    refused in microseconds; a recursive alias is refused too.
    """
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in _yaml_children(node))
            if size[key] > MAX_YAML_NODES:
                raise ConfigError(
                    f"{where}: its aliases (*name) expand to more than "
                    f"{MAX_YAML_NODES:,} values, far beyond any config. "
                    "Write the values out instead of nesting aliases."
                )
            continue
        if key in size:
            continue
        if key in on_path:
            raise ConfigError(
                f"{where}: an alias refers to a node that contains it "
                "(a recursive YAML structure). Remove the recursion."
            )
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _yaml_children(node)
                     if id(c) not in size)


def safe_yaml(text: str, where: str) -> Any:
    """Parses YAML like `yaml.safe_load`, within a config's limits.

    Refuses text over `MAX_CONFIG_BYTES`, aliases that expand past
    `MAX_YAML_NODES` and nesting too deep for the parser, each with a
    `ConfigError` naming `where`. YAML syntax errors and unsafe tags raise
    `yaml.YAMLError` as `yaml.safe_load` does.

    Args:
        text: the YAML text.
        where: the file or flag the text came from, for messages.

    Returns:
        The parsed data.
    """
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{where}: {len(text):,} characters is not a config (the limit "
            f"is {MAX_CONFIG_BYTES:,}; shipped configs are ~1 KB). Check "
            "that --config names the YAML file."
        )
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, where)
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError(
            f"{where}: nested too deeply for a config (the YAML parser "
            "ran out of stack). Flatten the file."
        ) from None
    finally:
        loader.dispose()


def parse_override(text: str) -> tuple[list[str], Any]:
    """Splits ``"a.b=value"`` into (``["a", "b"]``, parsed YAML value)."""
    if "=" not in text:
        raise ConfigError(
            "--set expects key=value, e.g. --set train.epochs=3. "
            f"Received: {text!r}"
        )
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not k for k in key.split(".")):
        raise ConfigError(
            f"--set has an empty key, expected e.g. train.epochs=3. "
            f"Received: {text!r}"
        )
    try:
        value = safe_yaml(raw, f"--set {key}") if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _is_mapping(tp: Any) -> bool:
    """Whether the annotation `tp` is a dict (optionally ``| None``)."""
    options = typing.get_args(tp) if typing.get_origin(tp) in (
        typing.Union, types.UnionType) else (tp,)
    return any(typing.get_origin(o) is dict for o in options)


def _check_override_target(keys: list[str], value: Any, text: str) -> None:
    """An override must not replace a whole section with a value.

    ``--set data=3`` is refused here, naming what was typed, before a later
    override (a flag's ``data.batch_size=...``) would trip over it.
    """
    cls = RunConfig
    for depth, k in enumerate(keys):
        f = {f.name: f for f in dataclasses.fields(cls)}.get(k)
        if f is None:
            return  # unknown keys are reported by _build, with the known ones
        tp = typing.get_type_hints(cls)[k]
        if not dataclasses.is_dataclass(tp):
            if _is_mapping(tp) and depth == len(keys) - 2:
                return  # one entry of a map: --set plan.lr_multipliers.conv5=0.5
            if depth < len(keys) - 1:
                raise ConfigError(
                    f"--set {text}: '{'.'.join(keys[:depth + 1])}' is a "
                    "value, not a section."
                )
            return
        if depth == len(keys) - 1 and not isinstance(value, (dict, type(None))):
            names = [x.name for x in dataclasses.fields(tp)]
            raise ConfigError(
                f"--set {text}: '{'.'.join(keys)}' is a section, not a "
                f"value; set one of its keys ({', '.join(names)}), e.g. "
                f"--set {'.'.join(keys)}.{names[0]}=... . Received: "
                f"{_show(value)}"
            )
        cls = tp


def config_from_dict(
    data: dict, overrides: list[str] | tuple = (), source: str = "<config>"
) -> RunConfig:
    """Builds and validates a `RunConfig` from plain data plus overrides.

    Args:
        data: the parsed YAML mapping.
        overrides: ``"section.key=value"`` strings, applied in order.
        source: the file name used in error messages.

    Returns:
        The validated `RunConfig`.
    """
    data = _deep_copy(data or {})
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping of sections at the top level. "
            f"Received: {_show(data)}"
        )
    for text in overrides:
        keys, value = parse_override(text)
        _check_override_target(keys, value, text)
        node = data
        for k in keys[:-1]:
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            if not isinstance(child, dict):
                raise ConfigError(
                    f"--set {text}: '{k}' is not a section here: it holds "
                    f"{_show(child)} (set by the config file or an earlier "
                    "--set)."
                )
            node = child
        node[keys[-1]] = value
    where = source if not overrides else f"{source} (with --set overrides)"
    cfg = _build(RunConfig, data, "", where)
    _check(cfg, where)
    return cfg


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def load_config(
    path: str | os.PathLike, overrides: list[str] | tuple = ()
) -> RunConfig:
    """Reads a YAML config file, applies overrides, validates the result.

    Args:
        path: the YAML file.
        overrides: ``"section.key=value"`` strings. Defaults to none.

    Returns:
        The validated `RunConfig`.

    Example:

    ```python
    cfg = load_config("configs/linear_probe.yaml", ["data.batch_size=64"])
    ```
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file not found: expected a YAML file. Received: "
            f"{str(path)!r}. The shipped configs are in configs/."
        )
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: {path.stat().st_size:,} bytes is not a config (the "
            f"limit is {MAX_CONFIG_BYTES:,}; shipped configs are ~1 KB). "
            "Check that --config names the YAML file."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path}: expected a UTF-8 text (YAML) file. Received bytes that "
            f"are not UTF-8 (at byte {e.start}). Check that --config names "
            "the YAML file."
        ) from None
    try:
        data = safe_yaml(text, str(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(
            f"{path}: not valid YAML{line}: "
            f"{getattr(e, 'problem', None) or e}. Fix the file's syntax."
        ) from None
    return config_from_dict(data, overrides, source=str(path))


def save_config(cfg: RunConfig, path: str | os.PathLike) -> None:
    """Writes the resolved config as YAML (loadable by `load_config`)."""
    from kerasft.rundir import atomic_write

    with atomic_write(path) as f:
        f.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

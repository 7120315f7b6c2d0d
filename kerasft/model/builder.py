"""Builds a keras.applications ResNet backbone with a new classification head.

The model is one flat functional graph (backbone layers, then
``head_pool``, optional ``head_dropout`` and ``head``), so every layer keeps
its keras.applications name (``conv3_block2_1_conv``), which is the same on
every backend and is the key under which everything is recorded.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Iterator

import keras

from kerasft.config import ModelConfig
from kerasft.errors import ConfigError, DownloadError
from kerasft.model.init import draw_initial_weights

_APPLICATIONS = {
    "resnet50": "ResNet50",
    "resnet101": "ResNet101",
    "resnet152": "ResNet152",
    "resnet50v2": "ResNet50V2",
    "resnet101v2": "ResNet101V2",
    "resnet152v2": "ResNet152V2",
}
HEAD_LAYERS = ("head_pool", "head_dropout", "head")
_STAGE = re.compile(r"^(?:conv|pool)(\d)_")


def imagenet_weights_file(arch: str) -> str:
    """The file name Keras downloads for a notop ImageNet ResNet."""
    return f"{arch}_weights_tf_dim_ordering_tf_kernels_notop.h5"


def imagenet_weights_path(arch: str) -> str:
    """Where Keras looks for (and caches) that file."""
    from keras.src.backend import config as keras_config

    return os.path.join(
        keras_config.keras_home(), "models", imagenet_weights_file(arch)
    )


def stage_of(layer_name: str) -> int | str | None:
    """ResNet stage (1-5) of a backbone layer, `"head"`, or None (input).

    Stage 1 is the stem (conv1, pool1); stages 2-5 are the residual stages
    conv2-conv5. The v2 models' final ``post_bn``/``post_relu`` belong to
    stage 5.
    """
    if layer_name in HEAD_LAYERS:
        return "head"
    m = _STAGE.match(layer_name)
    if m:
        return int(m.group(1))
    if layer_name.startswith("post_"):
        return 5
    return None


def _download_error(arch: str, reason: str) -> DownloadError:
    fname = imagenet_weights_file(arch)
    return DownloadError(
        f"model.weights imagenet: Keras could not get {fname} ({reason}). "
        f"Download it on a machine with network from "
        f"https://storage.googleapis.com/tensorflow/keras-applications/"
        f"resnet/{fname} and put it at {imagenet_weights_path(arch)}, or "
        "pass --weights none (random init) or --weights PATH "
        "(a .weights.h5/.keras/.h5 file)."
    )


def _backbone(arch: str, weights: str | None, image_size: int):
    app = getattr(keras.applications, _APPLICATIONS[arch])
    try:
        return app(
            include_top=False,
            weights=weights,
            input_shape=(image_size, image_size, 3),
        )
    except Exception as e:
        if weights != "imagenet":
            raise
        if os.path.exists(imagenet_weights_path(arch)):
            # Keras re-downloads a cached file whose checksum is wrong.
            raise _download_error(
                arch,
                "the cached file's checksum does not match and a fresh "
                f"download failed: {str(e).splitlines()[0][:120]}",
            ) from None
        raise _download_error(
            arch, f"download failed: {str(e).splitlines()[0][:120]}"
        ) from None


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Keras's global dtype policy is `name` inside the block only.

    keras.applications models take their layers' policy from the global
    one, so the model is built inside this block; afterwards the previous
    policy is back, so a second `train()` in the same process (or the
    caller's own models) is not affected. The built layers keep `name`.

    Args:
        name: a Keras dtype policy name, e.g. `"mixed_bfloat16"`.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_model(
    cfg: ModelConfig, num_classes: int, image_size: int,
    precision: str = "float32", seed: int | None = None,
) -> keras.Model:
    """Builds the backbone plus a new Dense head, with weights loaded.

    Args:
        cfg: the model section of the run config.
        num_classes: outputs of the new head (logits).
        image_size: square input side in pixels.
        precision: the Keras dtype policy of every layer but the head
            (`float32`, `mixed_bfloat16` or `mixed_float16`); the head
            always computes in float32, so the logits and the loss are
            numerically stable. Defaults to `"float32"`.
        seed: draw every variable that `cfg.weights` does not load (all of
            them for `none`, the head for `imagenet` or a backbone-only
            file) from numpy by this seed and the variable's path
            (`kerasft.model.init`), so the start is the same on every
            backend. None keeps Keras's own draw, which depends on the
            backend. Defaults to None; `kerasft train` passes the run's
            seed.

    Returns:
        An uncompiled `keras.Model` whose layers keep their
        keras.applications names, plus ``head_pool``, ``head_dropout``
        (when `cfg.dropout > 0`) and ``head``.

    Example:

    ```python
    model = build_model(ModelConfig(weights="none"), 10, 32)
    model.output_shape  # (None, 10)
    ```
    """
    weights = cfg.weights
    file, backbone_only = resolve_weights(weights, cfg.arch)
    with dtype_policy(precision):
        backbone = _backbone(
            cfg.arch, "imagenet" if weights == "imagenet" else None,
            image_size,
        )
        pool = (
            keras.layers.GlobalAveragePooling2D
            if cfg.pooling == "avg"
            else keras.layers.GlobalMaxPooling2D
        )
        x = pool(name="head_pool")(backbone.output)
        if cfg.dropout > 0:
            x = keras.layers.Dropout(cfg.dropout, name="head_dropout")(x)
        outputs = keras.layers.Dense(
            num_classes, name="head", dtype="float32"
        )(x)
        # The model's own policy decides at compile time whether Keras
        # wraps the optimizer in a LossScaleOptimizer (mixed_float16).
        model = keras.Model(
            backbone.input, outputs, name=f"{cfg.arch}_finetune"
        )
    if seed is not None:
        # ImageNet weights are already in the backbone: draw the head only.
        # A file is loaded over the drawn values below, so whatever it does
        # not hold (the head, for a backbone-only file) keeps the draw.
        own = {id(layer) for layer in backbone.layers}
        draw_initial_weights(model, seed, layers=[
            layer for layer in model.layers
            if weights != "imagenet" or id(layer) not in own])
    if file is not None:
        load_weights_file(model, backbone, file, cfg.arch, num_classes,
                          backbone_only=backbone_only)
    if cfg.bn_momentum is not None:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = cfg.bn_momentum
    return model


def resolve_weights(weights: str, arch: str) -> tuple[str | None, bool]:
    """The file that `model.weights` names, and whether to load only its
    backbone.

    A run directory (or a folder of runs: its newest) means that run's
    final trained weights (`kerasft.rundir.final_weights`), for transfer to
    a new task: its backbone is loaded and the head is new, even when the
    class counts match (the classes differ). A file is loaded as
    `load_weights_file` says; `imagenet` and `none` name no file.

    Args:
        weights: the `model.weights` value.
        arch: `model.arch`, which a run's weights must fit.

    Returns:
        ``(path or None, backbone_only)``.

    Example:

    ```python
    resolve_weights("runs/digits-pretrain", "resnet50")
    # ('/.../runs/digits-pretrain/2026...-torch/model.keras', True)
    ```
    """
    if weights in ("imagenet", "none"):
        return None, False
    path = os.path.expanduser(weights)
    if os.path.isdir(path):
        from kerasft.rundir import final_weights

        return str(final_weights(path, "model.weights", arch=arch)), True
    return path, False


def load_weights_file(
    model: keras.Model,
    backbone: keras.Model,
    path: str,
    arch: str,
    num_classes: int,
    backbone_only: bool = False,
) -> str:
    """Loads a whole-model file, else a backbone-only file, into `model`.

    A whole-model file is what kerasft saves in a run (``initial.weights.h5``,
    checkpoints, ``model.keras``); a backbone file is what you get from
    ``keras.applications.ResNet50(include_top=False).save_weights(...)`` or
    Keras's own ImageNet ``*_notop.h5``.

    Args:
        model, backbone: the model and its backbone (sharing layers).
        path: the file.
        arch, num_classes: for the error message.
        backbone_only: load only the backbone's layers from a whole-model
            file, leaving the head as built (transfer to a new task).
            Defaults to `False`.

    Returns:
        ``"model"`` or ``"backbone"``: what was loaded.
    """
    errors = []
    targets = ((model, "model"), (backbone, "backbone"))
    if backbone_only:
        targets = targets[1:]
    for target, what in targets:
        try:
            if path.endswith(".keras"):
                saved = keras.saving.load_model(path, compile=False)
                source = saved if what == "model" else None
                if source is None:
                    by_name = {l.name: l for l in saved.layers}
                    missing = [l.name for l in backbone.layers
                               if l.weights and l.name not in by_name]
                    if missing:
                        raise ValueError(
                            f"no layer {missing[0]} (and {len(missing) - 1} "
                            "more backbone layers) in the file")
                    for layer in backbone.layers:
                        if layer.weights:
                            layer.set_weights(by_name[layer.name].get_weights())
                else:
                    target.set_weights(source.get_weights())
            else:
                target.load_weights(path)
            return what
        except Exception as e:
            errors.append(f"as a whole {what}: {str(e).splitlines()[0][:100]}")
    raise ConfigError(
        f"model.weights: expected a weights file for {arch} (whole model "
        f"with a {num_classes}-class head, or the backbone alone). "
        f"Received: {path!r}, which did not load ({'; '.join(errors)}). "
        "Weights files must keep Keras's suffix (.weights.h5, .keras, or "
        "the legacy ImageNet .h5)."
    )

"""Which layer Grad-CAM looks at: found by name, or chosen by a rule.

A model may hold its backbone flat (kerasft's own models) or nested as one
layer of a model with a new head (``keras.Sequential([ResNet50(...),
GlobalAveragePooling2D(), Dense(k)])``); both are searched, the nested
model's own layers in its order.
"""

from __future__ import annotations

from typing import Any

from kerasft.errors import ConfigError

# Grad-CAM on a map smaller than this (per side) says little about where:
# at 32 px input ResNet50's last stage is 1x1, so the default moves to the
# deepest stage whose map is at least this wide.
MIN_MAP_SIDE = 4


def _is_nested(layer: Any) -> bool:
    """A model used as a layer (a functional or Sequential backbone)."""
    return bool(getattr(layer, "layers", None)) and hasattr(layer, "inputs")


def _named_layers(model: Any):
    """Every layer of `model`, nested models included (each before its own
    layers), so a nested backbone can be named as a whole."""
    for layer in model.layers:
        yield layer
        if _is_nested(layer):
            yield from _named_layers(layer)


def flat_layers(model: Any) -> list:
    """Every layer of `model` in order, nested models replaced by their layers."""
    return [layer for layer in _named_layers(model) if not _is_nested(layer)]


def output_shape(layer: Any) -> tuple | None:
    """The layer's symbolic output shape (batch dim included), or None."""
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):
        return None
    return tuple(shape) if shape is not None else None


def _is_map(layer: Any) -> bool:
    # An input layer does not run when the model is called (its output is
    # the input: saliency is that gradient).
    if type(layer).__name__ == "InputLayer":
        return False
    shape = output_shape(layer)
    return shape is not None and len(shape) == 4


def _side(layer: Any) -> int | None:
    h, w = output_shape(layer)[1:3]
    return None if h is None or w is None else min(h, w)


def _is_stage_output(layer: Any) -> bool:
    # keras.applications ResNets: conv{n}_block{k}_out ends each residual
    # block; v2 ends with post_relu.
    return layer.name.endswith("_out") or layer.name == "post_relu"


def find_layer(model: Any, name: str) -> Any:
    """The layer called `name` in `model` or a model nested in it (or the
    nested model itself: a backbone's output as a whole).

    Raises:
        ConfigError: no such layer, or its output is not an image-shaped map.
    """
    layers = flat_layers(model)
    for layer in _named_layers(model):
        if layer.name == name:
            if not _is_map(layer):
                raise ConfigError(
                    f"Grad-CAM needs a layer with a (batch, height, width, "
                    f"channels) output. Received: layer={name!r}, output "
                    f"shape {output_shape(layer)}. Pick a convolutional "
                    f"layer, e.g. {default_layer(model).name!r}."
                )
            return layer
    maps = [l.name for l in layers if _is_map(l) and _is_stage_output(l)]
    hint = ", ".join(maps[-4:]) if maps else "a convolutional layer's name"
    raise ConfigError(
        f"no layer named {name!r} in model {model.name!r}. Use one of its "
        f"layers, e.g. {hint}."
    )


def default_layer(model: Any) -> Any:
    """The deepest stage output whose map is at least `MIN_MAP_SIDE` wide.

    Stage (block) outputs of a keras.applications ResNet if the model has
    them, else every layer with an image-shaped output; if no map is that
    wide (a tiny input), the widest map (the deepest of equally wide
    ones), so there is always an answer.

    Raises:
        ConfigError: the model has no layer with an image-shaped output.
    """
    maps = [l for l in flat_layers(model) if _is_map(l)]
    if not maps:
        raise ConfigError(
            f"model {model.name!r} has no layer with a (batch, height, "
            "width, channels) output to run Grad-CAM on"
        )
    stages = [l for l in maps if _is_stage_output(l)] or maps
    for layer in reversed(stages):
        side = _side(layer)
        if side is None or side >= MIN_MAP_SIDE:
            return layer
    return max(reversed(stages), key=lambda l: _side(l) or 0)

"""Initial weights drawn from numpy: the same seed gives the same start on
every backend.

Keras draws a layer's initial values from the active backend's random
generator, so `keras.utils.set_random_seed(1337)` gives one ResNet50 under
torch, another under tensorflow and a third under jax. kerasft draws them
itself: each variable from its own numpy generator, seeded by the run's seed
and the variable's path (``conv2_block1_1_conv/kernel``), following the
distribution of the initializer the layer was built with (Glorot/He/LeCun
uniform or normal, truncated normal, zeros, ones, constants). The values are
therefore a function of (seed, path, shape, initializer) alone: identical on
every backend, independent of the order variables are created in, and a
layer's values do not change when another layer is added or removed.

Variables whose initializer is not one of these (e.g. ``Orthogonal``) keep
Keras's own draw; `draw_initial_weights` returns them and logs a warning,
because their start then depends on the backend. Every ResNet kerasft
builds uses only initializers drawn here.
"""

from __future__ import annotations

import hashlib
import logging
import math

import keras
import numpy as np

log = logging.getLogger(__name__)

# Keras truncates normal draws at two standard deviations and rescales the
# standard deviation so the truncated distribution keeps the requested one
# (keras.initializers.VarianceScaling, "truncated_normal").
_TRUNCATED_STD = 0.87962566103423978
_TRUNCATE_AT = 2.0


def variable_rng(seed: int, path: str) -> np.random.Generator:
    """A numpy generator that depends on the run's seed and a variable path
    only.

    Args:
        seed: the run's seed (0 to 2**32 - 1).
        path: the variable's Keras path, e.g. ``"head/kernel"``.
    """
    digest = hashlib.sha256(path.encode()).digest()
    words = np.frombuffer(digest[:16], dtype=np.uint32).tolist()
    return np.random.default_rng(np.random.SeedSequence([int(seed), *words]))


def _fans(shape, input_axes=None, output_axes=None) -> tuple[float, float]:
    """(fan_in, fan_out) of a weight shape, as Keras's VarianceScaling
    computes them: dense (in, out); convolution (..., in, out) times the
    receptive field; explicit axes when the initializer names them."""
    shape = tuple(int(s) for s in shape)
    if input_axes is not None and output_axes is not None:
        return (float(np.prod([shape[a] for a in input_axes])),
                float(np.prod([shape[a] for a in output_axes])))
    if not shape:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    if len(shape) == 2:
        return float(shape[0]), float(shape[1])
    field = float(np.prod(shape[:-2]))
    return shape[-2] * field, shape[-1] * field


def _truncated_normal(rng, shape, mean: float, std: float) -> np.ndarray:
    """Normal draws, every one outside mean +- 2 std drawn again (what
    Keras's truncated normal does on every backend)."""
    out = rng.standard_normal(shape)
    bad = np.abs(out) > _TRUNCATE_AT
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > _TRUNCATE_AT
    return mean + std * out


def draw(initializer, shape, rng: np.random.Generator) -> np.ndarray | None:
    """Values with `initializer`'s distribution, from `rng`; None when
    kerasft does not draw this initializer (the caller keeps Keras's draw).

    Args:
        initializer: a `keras.initializers.Initializer`.
        shape: the variable's shape.
        rng: the variable's generator (`variable_rng`).

    Returns:
        A float64 array of `shape`, or None.
    """
    inits = keras.initializers
    shape = tuple(int(s) for s in shape)
    # The subclasses' get_config (GlorotUniform: the seed only) hides the
    # parameters; the attributes hold them for every Keras initializer.
    cfg = vars(initializer)
    if isinstance(initializer, inits.Zeros):
        return np.zeros(shape)
    if isinstance(initializer, inits.Ones):
        return np.ones(shape)
    if isinstance(initializer, inits.Constant):
        return np.full(shape, float(cfg["value"]))
    if isinstance(initializer, inits.VarianceScaling):
        fan_in, fan_out = _fans(shape, cfg.get("input_axes"),
                                cfg.get("output_axes"))
        fan = {"fan_in": fan_in, "fan_out": fan_out}.get(
            cfg["mode"], (fan_in + fan_out) / 2.0)
        scale = cfg["scale"] / max(1.0, fan)
        if cfg["distribution"] == "truncated_normal":
            return _truncated_normal(rng, shape, 0.0,
                                     math.sqrt(scale) / _TRUNCATED_STD)
        if cfg["distribution"] == "untruncated_normal":
            return rng.normal(0.0, math.sqrt(scale), shape)
        limit = math.sqrt(3.0 * scale)
        return rng.uniform(-limit, limit, shape)
    if isinstance(initializer, inits.TruncatedNormal):
        return _truncated_normal(rng, shape, cfg["mean"], cfg["stddev"])
    if isinstance(initializer, inits.RandomNormal):
        return rng.normal(cfg["mean"], cfg["stddev"], shape)
    if isinstance(initializer, inits.RandomUniform):
        return rng.uniform(cfg["minval"], cfg["maxval"], shape)
    return None


def _initializer_of(layer, variable):
    """The initializer `layer` built `variable` with (Keras layers keep it
    as ``<variable name>_initializer``: kernel, bias, gamma, beta,
    moving_mean, moving_variance), or None."""
    init = getattr(layer, f"{variable.name}_initializer", None)
    return init if isinstance(init, keras.initializers.Initializer) else None


def draw_initial_weights(
    model: keras.Model, seed: int, layers=None
) -> list[str]:
    """Sets every variable of `layers` to values drawn from numpy by
    (`seed`, variable path), with its layer's initializer's distribution.

    Args:
        model: a built model.
        seed: the run's seed.
        layers: the layers to draw (default: all of `model`'s layers).

    Returns:
        The paths of the variables that kept Keras's own (backend-dependent)
        draw, because their initializer is not one kerasft draws.

    Example:

    ```python
    model = build_model(ModelConfig(weights="none"), 10, 32)
    draw_initial_weights(model, seed=1337)  # [] for every ResNet
    ```
    """
    kept = []
    for layer in model.layers if layers is None else layers:
        for variable in layer.weights:
            init = _initializer_of(layer, variable)
            values = (None if init is None else
                      draw(init, variable.shape,
                           variable_rng(seed, variable.path)))
            if values is None:
                kept.append(variable.path)
                continue
            variable.assign(values.astype(variable.dtype))
    if kept:
        log.warning(
            "%d variables keep Keras's own initial values, which differ "
            "across backends (their initializers are not ones kerasft "
            "draws from numpy): %s", len(kept), ", ".join(kept[:5]))
    return kept

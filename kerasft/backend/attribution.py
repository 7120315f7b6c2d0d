"""Gradients of class scores with respect to a layer's output and the input.

Grad-CAM needs d(score)/d(A) for the output A of a layer inside the model,
saliency needs d(score)/d(x) for the input. Keras 3 has no backend-neutral
way to ask for either, and the usual recipe -- a second
``keras.Model(model.inputs, [layer.output, model.output])`` -- breaks on a
backbone nested inside a model with a new head ("Graph disconnected") and
on JAX, which cannot differentiate with respect to an intermediate value at
all. So the layer's output is intercepted instead: for the duration of one
call, the layer instance's ``call`` is wrapped (Keras's
``Operation.__call__`` looks ``self.call`` up on the instance, in a flat
graph, a nested functional backbone or a Sequential alike) so that its
output is

* recorded by the tape (TensorFlow: computed from the watched input inside
  a `tf.GradientTape`; torch: on the autograd graph of an input that
  requires grad), or
* the output plus a zero tensor that JAX differentiates with respect to
  (``d(score)/d(A + delta)`` at ``delta = 0`` is ``d(score)/dA``).

The model is called with ``training=False`` (BatchNorm on its moving
statistics), so each example's gradient depends on that example only and a
batch's per-example scores can be summed into one backward pass. Nothing
about the model changes: no variable, trainable flag or moving statistic.

Frameworks are imported late, inside the branch for the active backend.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np


@dataclass
class ScoreGradients:
    """One forward and backward pass of a batch, as float32 numpy.

    Attributes:
        logits: (N, K) the model's outputs.
        activation: (N, ...) the layer's output, or None without a layer.
        activation_grad: d(score_i)/d(activation_i), same shape, or None.
        input_grad: (N, H, W, C) d(score_i)/d(x_i).
    """

    logits: np.ndarray
    activation: np.ndarray | None
    activation_grad: np.ndarray | None
    input_grad: np.ndarray


@contextlib.contextmanager
def intercept(layer: Any, fn: Callable[[Any], Any]) -> Iterator[None]:
    """Replaces `layer`'s output by ``fn(output)`` while the block runs.

    The wrapper is an instance attribute set past Keras's and torch's
    attribute tracking, and removed afterwards, so the layer is exactly
    as before (its class's ``call`` is untouched and shared).

    Args:
        layer: a Keras layer (anywhere in a model, nested or not).
        fn: takes the layer's output tensor, returns the tensor to use.
    """
    if "call" in vars(layer):
        raise RuntimeError(
            f"layer {layer.name!r} is already intercepted (a nested "
            "explanation of the same layer is not supported)"
        )
    original = layer.call

    def call(*args, **kwargs):
        return fn(original(*args, **kwargs))

    object.__setattr__(layer, "call", call)
    try:
        yield
    finally:
        del vars(layer)["call"]


def _scores(logits: Any, classes: np.ndarray) -> Any:
    """Sum over the batch of each example's logit for its class (float32)."""
    import keras

    k = logits.shape[-1]
    # Checked here (static values, also under a JAX trace): an index out
    # of range would make an all-zero one-hot on TensorFlow and JAX (a
    # silently blank map) and an error on torch.
    if classes.size and (classes.min() < 0 or classes.max() >= k):
        raise ValueError(
            f"class indices must be in [0, {k}) for a model with {k} "
            f"outputs. Received: classes={classes.tolist()}")
    logits = keras.ops.cast(logits, "float32")
    onehot = keras.ops.one_hot(
        keras.ops.convert_to_tensor(classes.astype("int32")), k,
        dtype="float32",
    )
    return keras.ops.sum(logits * onehot)


def class_score_gradients(
    model: Any, x: np.ndarray, classes: np.ndarray, layer: Any = None
) -> ScoreGradients:
    """Each example's class logit, differentiated w.r.t. `layer` and `x`.

    Args:
        model: a Keras model whose output is logits (N, K), on any backend.
        x: (N, H, W, C) float32 model inputs (preprocessed).
        classes: (N,) the class whose logit is differentiated, per example.
        layer: a layer of `model` (or of a model nested in it) whose output
            is wanted with its gradient, or None for the input gradient only.
            It must run exactly once per call of the model.

    Returns:
        A `ScoreGradients`.

    Raises:
        ValueError: the backend is not supported, or `layer` did not run
            (exactly once) when the model was called.

    Example:
        >>> g = class_score_gradients(model, x, np.array([3]),
        ...                           model.get_layer("conv5_block3_out"))
        >>> g.activation.shape, g.activation_grad.shape
        ((1, 7, 7, 2048), (1, 7, 7, 2048))
    """
    import keras

    x = np.ascontiguousarray(x, dtype=np.float32)
    classes = np.asarray(classes).reshape(-1)
    if classes.shape[0] != x.shape[0]:
        raise ValueError(
            f"one class per image expected: {x.shape[0]} images, "
            f"received {classes.shape[0]} classes"
        )
    backend = keras.backend.backend()
    impl = {"tensorflow": _tensorflow, "torch": _torch, "jax": _jax}
    if backend not in impl:
        raise ValueError(f"class_score_gradients: unsupported backend {backend!r}")
    from kerasft.backend.gradients import sync_state

    sync_state(model)
    logits, act, dact, dx = impl[backend](model, x, classes, layer)
    return ScoreGradients(
        np.asarray(logits, np.float32),
        None if act is None else np.asarray(act, np.float32),
        None if dact is None else np.asarray(dact, np.float32),
        np.asarray(dx, np.float32),
    )


def _one(captured: list, layer: Any) -> Any:
    if len(captured) != 1:
        raise ValueError(
            f"layer {layer.name!r} ran {len(captured)} times in one call of "
            "the model; expected exactly once (is it a layer of this model?)"
        )
    return captured[0]


def _capture(layer: Any, captured: list):
    if layer is None:
        return contextlib.nullcontext()

    def keep(out):
        captured.append(out)
        return out

    return intercept(layer, keep)


def _tensorflow(model, x, classes, layer):
    import tensorflow as tf

    xt = tf.convert_to_tensor(x)
    captured: list = []
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(xt)
        with _capture(layer, captured):
            logits = model(xt, training=False)
        score = _scores(logits, classes)
    if layer is None:
        return logits.numpy(), None, None, tape.gradient(score, xt).numpy()
    act = _one(captured, layer)
    dact, dx = tape.gradient(score, [act, xt])
    return (logits.numpy(), tf.cast(act, tf.float32).numpy(),
            tf.cast(dact, tf.float32).numpy(), dx.numpy())


def _torch_host(t):
    # float32 first: numpy has no bfloat16 (a mixed_bfloat16 model's
    # logits and activations), and torch's .numpy() refuses it.
    return t.detach().float().cpu().numpy()


def _torch(model, x, classes, layer):
    import keras
    import torch

    with torch.enable_grad():
        # The input requires grad, so every layer's output is on the
        # autograd graph, frozen weights or not.
        xt = keras.ops.convert_to_tensor(x).detach().requires_grad_(True)
        captured: list = []
        with _capture(layer, captured):
            logits = model(xt, training=False)
        score = _scores(logits, classes)
        if layer is None:
            (dx,) = torch.autograd.grad(score, [xt])
            return _torch_host(logits), None, None, _torch_host(dx)
        act = _one(captured, layer)
        dact, dx = torch.autograd.grad(score, [act, xt])
    return (_torch_host(logits), _torch_host(act), _torch_host(dact),
            _torch_host(dx))


def _jax(model, x, classes, layer):
    import jax
    import jax.numpy as jnp

    xj = jnp.asarray(x)

    def forward(xv, delta):
        captured: list = []
        if layer is None:
            logits = model(xv, training=False)
            return _scores(logits, classes), (logits, None)

        def add(out):
            captured.append(out)
            return out if delta is None else out + delta.astype(out.dtype)

        with intercept(layer, add):
            logits = model(xv, training=False)
        return _scores(logits, classes), (logits, _one(captured, layer))

    if layer is None:
        (_, (logits, _)), dx = jax.value_and_grad(forward, has_aux=True)(
            xj, None)
        return np.asarray(logits), None, None, np.asarray(dx)
    # The output's shape, from an abstract trace (no compute), gives the
    # zero tensor to differentiate with respect to.
    shape = jax.eval_shape(lambda v: forward(v, None)[1][1], xj)
    delta = jnp.zeros(shape.shape, jnp.float32)
    (_, (logits, act)), (dx, dact) = jax.value_and_grad(
        forward, argnums=(0, 1), has_aux=True)(xj, delta)
    return (np.asarray(logits), np.asarray(act, np.float32),
            np.asarray(dact), np.asarray(dx))

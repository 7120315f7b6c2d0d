"""Loss and gradients of a model in inference mode, on any Keras backend.

Keras 3 has no backend-neutral "gradient of this loss" call, so this module
holds the three framework-specific versions side by side. They all compute the
same thing: the mean sparse categorical cross-entropy of the model's logits,
with the model called with ``training=False`` (BatchNorm on its moving
statistics, dropout off) so the number is deterministic and the three backends
can be compared with each other.

Frameworks are imported late, inside the branch for the active backend, as in
`kerasft.backend`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np


def sync_state(model: Any) -> None:
    """Makes the model's `keras.Variable`s hold the current values.

    Under JAX, `fit` keeps the live weights in its own state and writes them
    back to the `keras.Variable`s only at certain points, so a callback that
    reads weights mid-epoch would see stale values. Torch and TensorFlow
    update the variables in place, so there is nothing to do there.

    Args:
        model: a Keras model (or anything; non-models are ignored).

    Example:
        >>> sync_state(model)  # in a callback, before model.get_weights()
    """
    import keras

    if keras.backend.backend() != "jax":
        return
    sync = getattr(model, "jax_state_sync", None)
    if callable(sync):
        # A no-op outside fit or when already synced (checked by Keras).
        sync()


def live_value(model: Any, variable: Any) -> Any:
    """An optimizer variable's current value, also inside a JAX `fit`.

    Under JAX, `fit` keeps the live values in the trainer's private state
    between steps (see `sync_state`); this reads the one variable from it
    without writing every variable back, so a callback can look at a small
    flag each step for the cost of one tiny device read. Elsewhere it is
    the variable's value.

    Args:
        model: the model being fitted.
        variable: one of ``model.optimizer.variables``.

    Returns:
        A backend tensor.
    """
    import keras

    if keras.backend.backend() != "jax":
        return variable.value
    state = getattr(model, "_jax_state", None)
    if not state or getattr(model, "_jax_state_synced", True):
        return variable.value
    values = state.get("optimizer_variables") or ()
    for v, value in zip(model.optimizer.variables, values):
        if v is variable:
            return value
    return variable.value


def loss_and_gradients(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    variables: Sequence[Any],
    training: bool = False,
    as_numpy: bool = True,
) -> tuple[float, list[Any]]:
    """Mean cross-entropy of a logits model and its gradient, in inference mode.

    The loss is `keras.losses.SparseCategoricalCrossentropy(from_logits=True)`
    over the batch (mean over examples), with the model called with
    ``training=False``. Gradients are taken with respect to every variable in
    `variables`, including frozen ones (``trainable=False``). No variable's
    value or trainable flag is changed and BatchNorm moving statistics are not
    updated. Under JAX the model's state is synced first (see `sync_state`),
    so mid-`fit` calls see the live weights as on the other backends.

    Args:
        model: a built Keras 3 model whose output is logits of shape
            ``(N, num_classes)``.
        x: a batch of inputs the model accepts, e.g. float32 ``(N, H, W, C)``.
        y: integer class labels, shape ``(N,)``.
        variables: the `keras.Variable`s to differentiate with respect to;
            they must belong to `model`.
        training: call the model in training mode instead (BatchNorm on
            the batch's statistics, as in a training step). On torch and
            TensorFlow that call updates BatchNorm moving statistics; the
            caller restores them if it must. Defaults to `False`.
        as_numpy: return the gradients as numpy arrays; `False` leaves
            them where they were computed, as float32 backend tensors (for
            a reduction on the device). Defaults to `True`.

    Returns:
        ``(loss, grads)``: the loss as a Python float and one float32 array
        per entry of `variables`, in the same order and shapes. A variable
        the loss does not depend on gets zeros.

    Raises:
        ValueError: a variable is not one of the model's variables (JAX), or
            the backend is not supported.

    Example:
        >>> model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
        >>> x = np.random.rand(4, 5).astype("float32")
        >>> y = np.array([0, 2, 1, 0])
        >>> loss, (dw, db) = loss_and_gradients(model, x, y, model.weights)
        >>> dw.shape, db.shape
        ((5, 3), (3,))
    """
    import keras

    variables = list(variables)
    # Differentiate each distinct variable once: a variable listed twice
    # would otherwise confuse the JAX substitution (only one copy would be
    # traced) and costs nothing to handle the same way on every backend.
    unique: list[Any] = []
    slot_of: dict[int, int] = {}
    for v in variables:
        if id(v) not in slot_of:
            slot_of[id(v)] = len(unique)
            unique.append(v)

    backend = keras.backend.backend()
    impl: dict[str, Callable[..., tuple[float, list[Any]]]] = {
        "tensorflow": _tensorflow,
        "torch": _torch,
        "jax": _jax,
    }
    if backend not in impl:
        raise ValueError(f"loss_and_gradients: unsupported backend {backend!r}")
    loss, grads = impl[backend](model, x, y, unique, training)
    grads = [_float32(g, v, as_numpy) for g, v in zip(grads, unique)]
    return loss, [grads[slot_of[id(v)]] for v in variables]


def _loss(logits: Any, y: Any) -> Any:
    """The mean cross-entropy, in float32 even under a mixed-precision policy."""
    import keras

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return loss(y, keras.ops.cast(logits, "float32"))


def _float32(grad: Any, variable: Any, as_numpy: bool) -> Any:
    """A framework's gradient as float32 (numpy, or a backend tensor),
    zeros where the framework gave None."""
    import keras

    if grad is None:
        zeros = np.zeros(tuple(variable.shape), dtype=np.float32)
        return zeros if as_numpy else keras.ops.convert_to_tensor(zeros)
    if as_numpy:
        return np.asarray(keras.ops.convert_to_numpy(grad),
                          dtype=np.float32).reshape(tuple(variable.shape))
    return keras.ops.reshape(keras.ops.cast(grad, "float32"),
                             tuple(variable.shape))


def _tensorflow(
    model: Any, x: np.ndarray, y: np.ndarray, variables: list[Any],
    training: bool = False,
) -> tuple[float, list[Any]]:
    import tensorflow as tf

    # `.value` is the underlying tf.Variable (outside an autocast scope).
    sources = [v.value for v in variables]
    xt = tf.convert_to_tensor(x)
    yt = tf.convert_to_tensor(y)
    # watch_accessed_variables=False + explicit watch: frozen variables are
    # non-trainable tf.Variables, which the tape would not watch by itself,
    # and nothing but the requested variables needs recording.
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        for s in sources:
            tape.watch(s)
        loss = _loss(model(xt, training=training), yt)
    grads = tape.gradient(loss, sources)
    return float(loss.numpy()), [
        None if g is None else tf.convert_to_tensor(g) for g in grads]


def _torch(
    model: Any, x: np.ndarray, y: np.ndarray, variables: list[Any],
    training: bool = False,
) -> tuple[float, list[Any]]:
    import keras
    import torch

    # `.value` is the torch.nn.Parameter the layers compute with. Its
    # requires_grad mirrors `trainable`, so frozen ones would not be on the
    # autograd graph; enable it on the tensor only (not via `trainable`,
    # which callers may be watching) and put it back afterwards.
    params = [v.value for v in variables]
    saved = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        # enable_grad: the caller may be inside a no_grad block (e.g. code
        # running under predict/evaluate).
        with torch.enable_grad():
            xt = keras.ops.convert_to_tensor(x)
            yt = keras.ops.convert_to_tensor(y)
            loss = _loss(model(xt, training=training), yt)
            # autograd.grad refuses an empty input list; the loss alone is
            # a legitimate request (e.g. for a finite difference).
            grads = (
                torch.autograd.grad(loss, params, allow_unused=True)
                if params else ()
            )
    finally:
        for p, flag in zip(params, saved):
            p.requires_grad_(flag)
    return float(loss.detach().cpu().item()), [
        None if g is None else g.detach() for g in grads]


def _jax(
    model: Any, x: np.ndarray, y: np.ndarray, variables: list[Any],
    training: bool = False,
) -> tuple[float, list[Any]]:
    import jax.numpy as jnp

    # The keras.Variables lag behind fit's own state under JAX.
    sync_state(model)
    trainable = list(model.trainable_variables)
    non_trainable = list(model.non_trainable_variables)
    # Map by identity: keras.Variable.__eq__ is elementwise on values.
    where: dict[int, tuple[int, int]] = {}
    for i, v in enumerate(trainable):
        where[id(v)] = (0, i)
    for i, v in enumerate(non_trainable):
        where.setdefault(id(v), (1, i))
    missing = [v.path for v in variables if id(v) not in where]
    if missing:
        raise ValueError(
            f"loss_and_gradients: not variables of the model: {missing}"
        )
    base = ([v.value for v in trainable], [v.value for v in non_trainable])
    fn = _jax_function(model, variables, where, training)
    loss, grads = fn([v.value for v in variables], base[0], base[1],
                     jnp.asarray(x), jnp.asarray(y))
    return float(loss), list(grads)


# Compiled loss-and-gradient functions, per model (dropped with it).
_JAX_FUNCTIONS: Any = None  # a weakref.WeakKeyDictionary, at first use


def _jax_function(model: Any, variables: list[Any], where: dict,
                  training: bool):
    """`jax.jit` of the loss's value and gradient for these variables,
    compiled once per (model, variables, training) and input shapes: an
    un-jitted `jax.value_and_grad` re-traces the whole model at every call
    (seconds for a ResNet50 each epoch). The values are arguments, not
    constants of the compiled function, so it always sees the live ones.
    The function holds the model weakly, so the cache does not keep it."""
    import weakref

    import jax

    global _JAX_FUNCTIONS
    if _JAX_FUNCTIONS is None:
        _JAX_FUNCTIONS = weakref.WeakKeyDictionary()
    per_model = _JAX_FUNCTIONS.setdefault(model, {})
    # where each variable sits in (trainable, non-trainable): a phase that
    # freezes or unfreezes layers moves them, and gets its own function
    slots = tuple(where[id(v)] for v in variables)
    key = (tuple(id(v) for v in variables), slots, training)
    if key in per_model:
        return per_model[key]
    model_ref = weakref.ref(model)

    def loss_of(requested, trainable, non_trainable, xj, yj):
        values = (list(trainable), list(non_trainable))
        for (group, index), value in zip(slots, requested):
            values[group][index] = value
        # stateless_call leaves the variables alone; the updated
        # non-trainable state it returns (unchanged in inference) is dropped.
        logits, _ = model_ref().stateless_call(
            values[0], values[1], xj, training=training
        )
        return _loss(logits, yj)

    per_model[key] = fn = jax.jit(jax.value_and_grad(loss_of))
    return fn

"""Saving and restoring what a resumed run needs: weights and optimizer state.

Keras saves a model's variables with its optimizer's (``save_weights``) or
both with the model's structure (``model.save``). A checkpoint wants them
apart: the model's variables in a small ``.weights.h5`` any Keras model of
the same structure loads, and the optimizer's state (every variable: the
iteration count, which places a learning-rate schedule, and the moment
slots) beside it, to continue training exactly where it stopped. Keras's
private `saving_lib` is used here, and only here, to leave the optimizer out
of the weights file.
"""

from __future__ import annotations

import os

import numpy as np


def save_model_weights(model, path: str | os.PathLike) -> None:
    """Writes the model's variables, without the optimizer's, to `path`.

    Args:
        model: a Keras model.
        path: a file name ending in ``.weights.h5``; load it with
            ``model.load_weights(path)``.
    """
    from keras.src.saving import saving_lib

    skip = [model.optimizer] if getattr(model, "optimizer", None) else []
    # Model variables only: with the optimizer's slots (Adam keeps two per
    # weight) a ResNet50 checkpoint triples to ~280 MB.
    saving_lib.save_weights_only(model, str(path), objects_to_skip=skip)


def _own_variables(optimizer) -> list:
    """The optimizer's variables, without a `GradientTap`'s."""
    from kerasft.backend.gradient_tap import tap_variables

    tapped = tap_variables(optimizer)
    return [v for v in optimizer.variables
            if not any(v is t for t in tapped)]


def optimizer_state(optimizer) -> dict[str, np.ndarray]:
    """The optimizer's state as numpy arrays, in the optimizer's order.

    Keys are ``"<index>:<path without the optimizer's name>"``: Keras names
    optimizers ``adam``, ``adam_1``... per process, so the first path
    component differs between a run and its resume.

    Args:
        optimizer: a built Keras optimizer (a `LossScaleOptimizer` too).

    Returns:
        ``{key: array}`` for `restore_optimizer` (or ``np.savez``).
    """
    import keras

    out = {}
    for i, v in enumerate(_own_variables(optimizer)):
        name = v.path.split("/", 1)[-1]
        out[f"{i:05d}:{name}"] = np.asarray(keras.ops.convert_to_numpy(v))
    return out


def restore_optimizer(optimizer, trainable_variables, state: dict) -> None:
    """Builds `optimizer` for `trainable_variables` and loads `state` into it.

    Args:
        optimizer: the freshly compiled model's optimizer (built or not).
        trainable_variables: the model's trainable variables, as Keras
            builds the optimizer for them.
        state: what `optimizer_state` returned for the same model, phase
            and optimizer config.

    Raises:
        ValueError: the state does not fit the optimizer (another
            optimizer, phase or model).
    """
    if not optimizer.built:
        optimizer.build(trainable_variables)
    variables = _own_variables(optimizer)
    keys = sorted(state)
    if len(keys) != len(variables):
        raise ValueError(
            f"the saved optimizer state has {len(keys)} variables, the "
            f"optimizer {len(variables)}")
    # By position (the order Keras builds them in); names only in errors:
    # auto-named layers may be numbered differently in another process.
    for key, v in zip(keys, variables):
        value = state[key]
        if tuple(value.shape) != tuple(v.shape):
            raise ValueError(
                f"saved optimizer variable {key} {value.shape} does not "
                f"fit {v.path} {tuple(v.shape)}")
        v.assign(value.astype(v.dtype))

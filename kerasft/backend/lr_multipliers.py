"""Per-variable learning-rate multipliers for any Keras optimizer.

Keras 3 optimizers have one learning rate for every variable (there is no
parameter-group API, keras-team/keras#21741). Scaling the gradients instead
would be wrong: Adam's update does not depend on the gradient's scale.
What scales an update is the learning rate each variable's update step is
given, and every backend passes it through one private method,

    ``optimizer._backend_update_step(grads, variables, learning_rate)``

(the base optimizer's loop over ``update_step`` on JAX, TensorFlow's
distributed ``update_step`` per variable, torch's fused
``_parallel_update_step`` over all variables at once), called from
``_backend_apply_gradients`` after clipping and decoupled weight decay,
which reads the learning rate itself (``_apply_weight_decay``). This module
wraps both methods on one optimizer instance: the variables are split into
groups of equal multiplier and each group is updated with
``learning_rate * multiplier`` -- on torch one fused update per group --
and decays with ``weight_decay * multiplier``, so a multiplier scales the
whole step, as a torch parameter group's learning rate does. The schedule's
rate (``learning_rate``) is computed once per step as before, so a
schedule and the multipliers multiply.

It composes with `kerasft.backend.gradient_tap.GradientTap` (which wraps
``apply``, above this) and with Keras's `LossScaleOptimizer`: the
multipliers sit on the inner optimizer, which receives the unscaled
gradients (on JAX through the inner ``stateless_apply``). No optimizer
variable is added, so checkpoints of the optimizer state are unchanged.
The wrapping is not saved with the optimizer (``model.keras``): a model
loaded from it trains with one rate again.
"""

from __future__ import annotations

from collections.abc import Mapping

from kerasft.backend.gradient_tap import unscaled_optimizer

_ATTR = "_kerasft_lr_multipliers"


class _Scaling:
    """The multipliers of one optimizer and its original methods."""

    def __init__(self, optimizer, multipliers: Mapping[str, float]):
        self.optimizer = optimizer
        self.multipliers = dict(multipliers)
        self._update_step = optimizer._backend_update_step
        self._weight_decay = optimizer._apply_weight_decay

    def groups(self, variables) -> list[tuple[float, list[int]]]:
        """``(multiplier, indices)`` per distinct multiplier, in first-seen
        order (plain Python: on TensorFlow and JAX it runs while tracing)."""
        out: dict[float, list[int]] = {}
        for i, v in enumerate(variables):
            out.setdefault(float(self.multipliers.get(v.path, 1.0)),
                           []).append(i)
        return list(out.items())

    def update_step(self, grads, trainable_variables, learning_rate):
        grads, trainable_variables = list(grads), list(trainable_variables)
        for m, index in self.groups(trainable_variables):
            self._update_step(
                [grads[i] for i in index],
                [trainable_variables[i] for i in index],
                learning_rate if m == 1.0 else learning_rate * m,
            )

    def weight_decay(self, variables):
        opt = self.optimizer
        decay = opt.weight_decay
        if decay is None:
            return self._weight_decay(variables)
        variables = list(variables)
        # `_apply_weight_decay` reads the rate itself (the schedule's value)
        # and multiplies it by `weight_decay`: scaling the latter for one
        # call scales the decay step. Read while tracing on TF and JAX.
        try:
            for m, index in self.groups(variables):
                opt.weight_decay = decay * m
                self._weight_decay([variables[i] for i in index])
        finally:
            opt.weight_decay = decay
        return None


def set_lr_multipliers(optimizer, multipliers: Mapping[str, float]) -> None:
    """Makes `optimizer` scale each variable's learning rate.

    Call it before training (before `model.compile` or before the first
    step): TensorFlow and JAX read the multipliers when they trace the
    train step. Calling it again replaces the multipliers.

    Args:
        optimizer: a Keras optimizer (SGD, Adam, AdamW, ...), or a
            `LossScaleOptimizer` around one.
        multipliers: ``{variable path: multiplier}``; variables not listed
            keep the optimizer's rate (x1).

    Example:

    ```python
    opt = keras.optimizers.Adam(1e-3)
    set_lr_multipliers(opt, {"conv5_block1_1_conv/kernel": 0.1})
    model.compile(optimizer=opt, loss="mse")
    ```
    """
    target = unscaled_optimizer(optimizer)
    scaling = getattr(target, _ATTR, None)
    if scaling is not None:
        scaling.multipliers = dict(multipliers)
        return
    scaling = _Scaling(target, multipliers)
    target._backend_update_step = scaling.update_step
    target._apply_weight_decay = scaling.weight_decay
    setattr(target, _ATTR, scaling)


def lr_multipliers(optimizer) -> dict[str, float]:
    """The multipliers set on `optimizer` (``{}``: none)."""
    scaling = getattr(unscaled_optimizer(optimizer), _ATTR, None)
    return dict(scaling.multipliers) if scaling is not None else {}

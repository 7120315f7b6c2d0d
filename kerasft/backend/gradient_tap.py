"""Access to the gradients of real training steps, on every backend.

Keras hands callbacks no gradients, and each backend computes them in its own
compiled train step (a `tf.function`, a `jax.jit`, or eager torch). What every
backend does call is the optimizer's `apply(grads, ...)` (JAX through
`stateless_apply`, inside the jit). The tap wraps that method on one
optimizer instance: with `keras.ops`, on the device, it writes each
gradient's L2 norm and a fixed sample of its entries into extra optimizer
variables. Being optimizer variables, they are threaded through JAX's
stateless step like the optimizer's own slots. Nothing is copied to the host
during training; a callback reads the two small variables when it wants.
"""

from __future__ import annotations

import keras
import numpy as np

_ATTR = "_kerasft_gradient_tap"


class GradientTap:
    """Per-variable gradient norms and entry samples of the latest step.

    Use `GradientTap.attach(optimizer, variables)`; it returns the existing
    tap if the optimizer already has one for the same variables.

    Args:
        optimizer: a built or unbuilt Keras optimizer.
        variables: the model variables to follow (any subset, in any order;
            a variable that gets no gradient in a step reads as NaN).
        sample_size: entries sampled per variable. Defaults to `4096`.
        seed: picks the sampled entries. Defaults to `0`.
    """

    def __init__(self, optimizer, variables, sample_size=4096, seed=0):
        self.optimizer = optimizer
        self.variables = list(variables)
        self.names = [v.path for v in self.variables]
        self._index = {id(v): i for i, v in enumerate(self.variables)}
        rng = np.random.default_rng([seed, 17])
        self.sample_index = []
        for v in self.variables:
            size = int(np.prod(v.shape))
            k = min(size, sample_size)
            idx = np.sort(rng.choice(size, k, replace=False)) if k < size else (
                np.arange(size)
            )
            self.sample_index.append(idx.astype(np.int32))
        self.offsets = np.cumsum([0] + [len(i) for i in self.sample_index])
        # Under loss scaling the tap sits on the inner optimizer (see
        # `unscaled_optimizer`); `self.optimizer` stays the model's one.
        target = unscaled_optimizer(optimizer)
        with keras.name_scope("kerasft_gradient_tap"):
            self.norms = target.add_variable(
                (len(self.variables),), initializer="zeros", name="grad_norms"
            )
            self.norms.assign(np.full(len(self.variables), np.nan, "float32"))
            self.samples = target.add_variable(
                (int(self.offsets[-1]),), initializer="zeros",
                name="grad_samples",
            )
        self._own = [self.norms, self.samples]
        self._original_apply = target.apply
        target.apply = self._apply
        setattr(optimizer, _ATTR, self)

    @classmethod
    def attach(cls, optimizer, variables, sample_size=4096, seed=0):
        """The optimizer's tap, created on first use."""
        tap = getattr(optimizer, _ATTR, None)
        names = [v.path for v in variables]
        if tap is not None and tap.names == names:
            return tap
        if tap is not None:
            tap.detach()
        if not optimizer.built:
            # Build first so the tap's variables come after the optimizer's
            # own slots (the order JAX threads them in is then stable).
            trainable = [v for v in variables if v.trainable]
            optimizer.build(trainable)
        return cls(optimizer, variables, sample_size, seed)

    def _apply(self, grads, trainable_variables=None):
        opt = self.optimizer
        targets = (
            list(trainable_variables)
            if trainable_variables is not None
            else list(opt._trainable_variables)
        )
        norms = [None] * len(self.variables)
        samples = [None] * len(self.variables)
        for g, v in zip(grads, targets):
            i = self._index.get(id(v))
            if i is None or g is None:
                continue
            g = keras.ops.convert_to_tensor(g, "float32")
            flat = keras.ops.reshape(g, (-1,))
            norms[i] = keras.ops.sqrt(keras.ops.sum(keras.ops.square(flat)))
            samples[i] = keras.ops.take(flat, self.sample_index[i])
        nan = keras.ops.convert_to_tensor(np.float32(np.nan))
        self.norms.assign(
            keras.ops.stack([n if n is not None else nan for n in norms])
        )
        self.samples.assign(
            keras.ops.concatenate(
                [
                    s if s is not None
                    else keras.ops.full((len(self.sample_index[i]),), np.nan)
                    for i, s in enumerate(samples)
                ]
            )
        )
        return self._original_apply(grads, trainable_variables)

    def read_norms(self) -> np.ndarray:
        """Gradient L2 norm per variable at the latest step (NaN: none)."""
        return np.asarray(keras.ops.convert_to_numpy(self.norms))

    def read_samples(self) -> list[np.ndarray]:
        """The sampled gradient entries per variable at the latest step."""
        flat = np.asarray(keras.ops.convert_to_numpy(self.samples))
        return [
            flat[self.offsets[i] : self.offsets[i + 1]]
            for i in range(len(self.variables))
        ]

    def detach(self) -> None:
        """Restores the optimizer's `apply` and drops the tap's variables.

        Call it before saving the optimizer (e.g. `model.save`), so the file
        holds only the optimizer's own state.
        """
        opt = unscaled_optimizer(self.optimizer)
        opt.__dict__.pop("apply", None)  # back to the class's method
        # In place (the optimizer's tracker holds this very list, wrapped by
        # TensorFlow's tracking), by identity (a variable's == is
        # element-wise), from the end so indices stay valid.
        for i in reversed(range(len(opt._variables))):
            if any(opt._variables[i] is o for o in self._own):
                del opt._variables[i]
        if getattr(self.optimizer, _ATTR, None) is self:
            delattr(self.optimizer, _ATTR)


def unscaled_optimizer(optimizer):
    """The optimizer whose `apply` receives the unscaled gradients.

    Under `mixed_float16` Keras wraps the optimizer in a
    `keras.optimizers.LossScaleOptimizer`. Its `apply` gets the gradients
    of the scaled loss (x 32768 at the start), and under JAX its
    `stateless_apply` never calls its own `apply` at all. Both divide by the
    scale and then call the inner optimizer's `apply` (JAX: through the
    inner `stateless_apply`), on finite steps only: a step whose scaled
    gradients overflowed is skipped, so the tap keeps the previous step's
    values. The tap's variables are the inner optimizer's, which are part
    of the wrapper's `variables`, so JAX threads them through the step.
    """
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.inner_optimizer
    return optimizer

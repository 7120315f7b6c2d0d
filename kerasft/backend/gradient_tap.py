"""Access to the gradients of real training steps, on every backend.

Keras hands callbacks no gradients, and each backend computes them in its own
compiled train step (a `tf.function`, a `jax.jit`, or eager torch). What every
backend does call is the optimizer's `apply(grads, ...)` (JAX through
`stateless_apply`, inside the jit). The tap wraps that method on one
optimizer instance: on the device, it writes each gradient's L2 norm and a
fixed sample of its entries into extra optimizer variables. Being optimizer
variables, they are threaded through JAX's stateless step like the
optimizer's own slots. Nothing is copied to the host during training; a
callback reads the small variables when it wants.

Only scheduled steps are recorded (`GradientTap.schedule`); the others cost
nothing beyond the check. Torch runs the step eagerly, so the check is plain
Python on Python integers (no device read, no sync). TensorFlow and JAX
compile the step once, so the check is part of the graph: a small int32
state variable counts the steps and a `keras.ops.cond` runs the reduction
only when the count is due. On recorded steps the norms are fused
(`torch._foreach_norm` on torch; one compiled graph on TensorFlow and JAX)
and every reduction runs in float32, whatever the gradients' dtype.

Non-finite watch: on every step (recorded or not) the tap also checks, on
the device, whether any gradient holds a NaN or inf, and keeps the first
such step's first variable (in tap order) in a small int32 variable
(`read_watch`). TensorFlow and JAX test every entry (``isfinite``, fused
into the step); torch reduces each gradient to one float32 number
(`_nonfinite_torch`: one fused L1 norm kernel on a GPU, a plain sum per
gradient on a CPU), which is non-finite exactly when an entry is, or when
the entries' (absolute) sum passes float32's 3.4e38. With
``skip_nonfinite`` (set by `kerasft.train.NonFiniteGuard`) such a step's
update is not applied, so the weights stay those the faulty step started
from and the step can be recomputed. That costs one host read per step on
torch (the Python `if`), a `cond` on TensorFlow, and on JAX a
`jax.lax.cond` whose branches return the update's new values or the old
ones (a select per variable after the update compiles 6x slower).
"""

from __future__ import annotations

import keras
import numpy as np

_ATTR = "_kerasft_gradient_tap"
# Layout of the schedule state: [count, every, phase, last, recorded].
_COUNT, _EVERY, _PHASE, _LAST, _RECORDED = range(5)


def _due(count, every, phase, last):
    """Whether apply number `count` (1-based) is recorded.

    Works on Python ints and on backend tensors alike, so the eager (torch)
    and compiled (TensorFlow, JAX) paths share one rule.
    """
    if isinstance(count, int):
        return count % every == phase or count == last
    ops = keras.ops
    return ops.logical_or(
        ops.equal(ops.mod(count, every), phase), ops.equal(count, last)
    )


class GradientTap:
    """Per-variable gradient norms and entry samples of the latest recorded step.

    Use `GradientTap.attach(optimizer, variables)`; it returns the existing
    tap if the optimizer already has one for the same variables. Until
    `schedule` is called, every step is recorded.

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
        self._eager = keras.backend.backend() == "torch"
        self._jax = keras.backend.backend() == "jax"
        # Not applying an update whose gradients are non-finite: only for a
        # caller that stops the run on it (NonFiniteGuard); otherwise
        # skipping steps would silently "fix" training.
        self.skip_nonfinite = False
        self._present_index = {}
        # The torch path keeps the schedule in Python (see module docstring).
        self._py_state = [0, 1, 0, -1, 0]
        self._device_index = None
        # Under loss scaling the tap sits on the inner optimizer (see
        # `unscaled_optimizer`); `self.optimizer` stays the model's one.
        target = self._target = unscaled_optimizer(optimizer)
        with keras.name_scope("kerasft_gradient_tap"):
            self.norms = target.add_variable(
                (len(self.variables),), initializer="zeros", name="grad_norms"
            )
            # -1: no gradient (NaN would read like a NaN gradient).
            self.norms.assign(np.full(len(self.variables), -1.0, "float32"))
            self.samples = target.add_variable(
                (int(self.offsets[-1]),), initializer="zeros",
                name="grad_samples",
            )
            self.watch = target.add_variable(
                (2,), initializer="zeros", dtype="int32",
                name="nonfinite_watch",
            )
            self.watch.assign(np.array([0, -1], "int32"))
            self._own = [self.norms, self.samples, self.watch]
            if not self._eager:
                self.state = target.add_variable(
                    (5,), initializer="zeros", dtype="int32",
                    name="schedule",
                )
                self.state.assign(np.array(self._py_state, "int32"))
                self._own.append(self.state)
        if self._eager:
            import torch

            self._torch_step = torch.compiler.disable(self._tap_torch)
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

    # ------------------------------------------------------------ schedule

    def schedule(self, every: int = 1, phase: int = 0, last: int = -1,
                 count: int = 0) -> None:
        """Which of the coming `apply` calls are recorded.

        Apply number ``n`` (1-based, counted from `count`) is recorded when
        ``n % every == phase`` or ``n == last``. Call it outside the train
        step (a callback's `on_train_begin` / `on_epoch_begin`; under JAX
        the state reaches the step when Keras next loads it, which fit does
        at every epoch start).

        Args:
            every: record every this many steps. Defaults to `1`.
            phase: the remainder of recorded steps. Defaults to `0`.
            last: also record this apply number (e.g. an epoch's last
                step; `-1`: none). Defaults to `-1`.
            count: applies already counted. Defaults to `0`.
        """
        # A reset (count 0) starts a new numbering: nothing recorded in it.
        recorded = self.recorded_count() if count else 0
        self._py_state = [int(count), int(every), int(phase) % int(every),
                          int(last), recorded]
        if not self._eager:
            self.state.assign(np.array(self._py_state, "int32"))

    def recorded_count(self) -> int:
        """The apply number of the latest recorded step, in the numbering of
        the last `schedule` call (0: none recorded in it yet)."""
        if self._eager:
            return self._py_state[_RECORDED]
        return int(np.asarray(keras.ops.convert_to_numpy(self.state))[
            _RECORDED])

    # ------------------------------------------------------------ the step

    def _apply(self, grads, trainable_variables=None):
        if self._eager:
            bad = self._torch_step(grads, trainable_variables)
        else:
            self._record_compiled(grads, trainable_variables)
            bad = self._watch_compiled(grads, trainable_variables)
        if not self.skip_nonfinite or bad is None:
            return self._original_apply(grads, trainable_variables)
        if self._eager:
            if bad:  # a Python bool (`_tap_torch` read it)
                return None
            return self._original_apply(grads, trainable_variables)
        if self._jax:
            return self._apply_unless_jax(bad, grads, trainable_variables)

        def apply():
            self._original_apply(grads, trainable_variables)

        # As keras's LossScaleOptimizer skips a step (tf.cond).
        keras.ops.cond(bad, lambda: None, apply)
        return None

    def _apply_unless_jax(self, bad, grads, trainable_variables):
        """The update inside a `jax.lax.cond`, as values.

        Under JAX's stateless step the update's variable writes go to the
        trainer's `StatelessScope`, which a traced branch cannot write to.
        So the branch runs the update in its own scope over the values it
        is given (the mapping Keras's own `stateless_apply` uses: the
        optimizer's variables and the trainable ones) and returns the new
        values; the skipping branch returns them unchanged; the outer scope
        then takes the chosen ones. Applying the update and selecting the
        old values back (`where` per variable) does the same, but made
        XLA's CPU compile of a ResNet50 train step ~6x slower (153 s
        instead of 26 s without the skip; `benchmarks/nonfinite_guard.py`
        prints it).
        """
        import jax

        target = self._target
        own = {id(v) for v in self._own}
        tvars = (list(trainable_variables) if trainable_variables is not None
                 else list(target._trainable_variables))
        mapped, seen = [], set()
        for v in [*target.variables, *target._trainable_variables, *tvars]:
            if id(v) not in seen:
                seen.add(id(v))
                mapped.append(v)
        # written by the update: all but the tap's own scratch variables
        at = [i for i, v in enumerate(mapped) if id(v) not in own]
        kept = [mapped[i] for i in at]

        def update(values):
            with keras.StatelessScope(
                    state_mapping=list(zip(mapped, values))) as scope:
                self._original_apply(grads, trainable_variables)
            return [scope.get_current_value(v) for v in kept]

        def skip(values):
            return [values[i] for i in at]

        new = jax.lax.cond(bad, skip, update, [v.value for v in mapped])
        for v, value in zip(kept, new):
            v.assign(value)
        return None

    def _tap_torch(self, grads, trainable_variables):
        """torch's step work: count, record when due, watch.

        Returns None (no gradient), the watch's flag as a device tensor, or,
        with ``skip_nonfinite``, that flag read to a Python bool (the one
        host read of the step, a sync on a GPU).

        Always runs eagerly (`_torch_step` is this method wrapped in
        `torch.compiler.disable`): under `jit_compile=True` Keras hands the
        train step to `torch.compile`, and dynamo would otherwise
        specialise on the Python step count and compile the optimizer's
        update again at every step, until its recompile limit (measured:
        ~1 minute a step for ResNet50 on a CPU), and break the graph with
        a warning at the host read.
        """
        s = self._py_state
        s[_COUNT] += 1
        if _due(s[_COUNT], s[_EVERY], s[_PHASE], s[_LAST]):
            s[_RECORDED] = s[_COUNT]
            self._record_torch(grads, trainable_variables)
        bad = self._watch_torch(grads, trainable_variables)
        if self.skip_nonfinite and bad is not None:
            return bool(bad)
        return bad

    def _watch_torch(self, grads, trainable_variables):
        import torch

        ordered = self._by_index(grads, trainable_variables)
        present = tuple(i for i, g in enumerate(ordered) if g is not None)
        if not present:
            return None
        with torch.no_grad():
            w = self.watch.value
            index = self._present_index.get(present)
            if index is None:
                index = self._present_index[present] = torch.as_tensor(
                    present, dtype=torch.int32, device=w.device)
            bad = _nonfinite_torch([ordered[i] for i in present],
                                   fused=w.device.type != "cpu")
            any_bad = bad.any()
            first = index[torch.argmax(bad.to(torch.float32))]
            new = torch.stack([torch.ones_like(first), first])
            self.watch.assign(torch.where(
                torch.logical_and(w[0] == 0, any_bad), new, w))
        return any_bad

    def _watch_compiled(self, grads, trainable_variables):
        ops = keras.ops
        ordered = self._by_index(grads, trainable_variables)
        present = tuple(i for i, g in enumerate(ordered) if g is not None)
        if not present:
            return None
        bad = ops.stack([ops.logical_not(ops.all(ops.isfinite(ordered[i])))
                         for i in present])
        any_bad = ops.any(bad)
        first = ops.take(ops.convert_to_tensor(np.array(present, "int32")),
                         ops.argmax(ops.cast(bad, "int32")))
        w = self.watch.value
        new = ops.stack([ops.convert_to_tensor(1, "int32"),
                         ops.cast(first, "int32")])
        self.watch.assign(ops.where(
            ops.logical_and(ops.equal(w[0], 0), any_bad), new, w))
        return any_bad

    def _by_index(self, grads, trainable_variables):
        """The gradients in tap order (None where a variable got none)."""
        targets = (
            list(trainable_variables)
            if trainable_variables is not None
            else list(self._target._trainable_variables)
        )
        out = [None] * len(self.variables)
        for g, v in zip(grads, targets):
            i = self._index.get(id(v))
            if i is not None and g is not None:
                out[i] = g
        return out

    def _record_torch(self, grads, trainable_variables):
        import torch

        ordered = self._by_index(grads, trainable_variables)
        present = [i for i, g in enumerate(ordered) if g is not None]
        with torch.no_grad():
            device = self.norms.value.device
            if self._device_index is None:
                self._device_index = [
                    torch.as_tensor(i, dtype=torch.long, device=device)
                    for i in self.sample_index
                ]
            norms = torch.full((len(ordered),), -1.0,
                               dtype=torch.float32, device=device)
            samples = torch.full((int(self.offsets[-1]),), float("nan"),
                                 dtype=torch.float32, device=device)
            if present:
                gs = [ordered[i].detach() for i in present]
                fused = torch._foreach_norm(gs, 2, dtype=torch.float32)
                norms[present] = torch.stack(fused)
                for i, g in zip(present, gs):
                    flat = g.reshape(-1)
                    if len(self.sample_index[i]) < flat.numel():
                        flat = flat.index_select(0, self._device_index[i])
                    samples[self.offsets[i]:self.offsets[i + 1]] = flat
            self.norms.assign(norms)
            self.samples.assign(samples)

    def _record_compiled(self, grads, trainable_variables):
        ops = keras.ops
        ordered = self._by_index(grads, trainable_variables)
        state = self.state.value
        count = state[_COUNT] + 1
        due = _due(count, state[_EVERY], state[_PHASE], state[_LAST])
        recorded = ops.where(due, count, state[_RECORDED])
        self.state.assign(ops.stack(
            [count, state[_EVERY], state[_PHASE], state[_LAST], recorded]))

        def reduce():
            norms, samples = [], []
            for i, g in enumerate(ordered):
                n = len(self.sample_index[i])
                if g is None:
                    norms.append(ops.full((), -1.0, "float32"))
                    samples.append(ops.full((n,), np.nan, "float32"))
                    continue
                flat = ops.reshape(ops.cast(g, "float32"), (-1,))
                norms.append(ops.sqrt(ops.sum(ops.square(flat))))
                samples.append(flat if n == int(np.prod(flat.shape)) else
                               ops.take(flat, self.sample_index[i]))
            return ops.stack(norms), ops.concatenate(samples)

        def keep():
            return (ops.convert_to_tensor(self.norms.value),
                    ops.convert_to_tensor(self.samples.value))

        norms, samples = ops.cond(due, reduce, keep)
        self.norms.assign(norms)
        self.samples.assign(samples)

    # ------------------------------------------------------------ reading

    def read_norms(self) -> np.ndarray:
        """Gradient L2 norm per variable at the latest recorded step
        (NaN: none, or a non-finite gradient; see `read_present`)."""
        norms = np.asarray(keras.ops.convert_to_numpy(self.norms))
        return np.where(norms < 0, np.nan, norms)

    def read_present(self) -> np.ndarray:
        """Whether each variable got a gradient at the latest recorded step
        (True also where that gradient was non-finite)."""
        norms = np.asarray(keras.ops.convert_to_numpy(self.norms))
        return ~(norms < 0)

    def read_watch(self, model=None) -> tuple[bool, int]:
        """The non-finite watch: whether a step since the last
        `reset_watch` had a NaN/inf gradient, and the tap index of the
        first such variable of the first such step (-1: none).

        Args:
            model: the model being fitted; under JAX the value is read
                from the trainer's live state (one small array, without
                syncing every variable). Defaults to `None`.
        """
        from kerasft.backend.gradients import live_value

        value = self.watch if model is None else live_value(model,
                                                            self.watch)
        w = np.asarray(keras.ops.convert_to_numpy(value))
        return bool(w[0]), int(w[1])

    def reset_watch(self) -> None:
        """Clears the non-finite watch (outside the train step)."""
        self.watch.assign(np.array([0, -1], "int32"))

    def read_samples(self) -> list[np.ndarray]:
        """The sampled gradient entries per variable at the latest
        recorded step."""
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


def _nonfinite_torch(grads, fused: bool):
    """Whether each torch gradient holds a NaN or inf (a bool tensor).

    Each gradient is reduced to one float32 number, non-finite exactly when
    an entry is (or when finite entries sum past 3.4e38). `fused`: one L1
    norm kernel over all of them (`torch._foreach_norm`; a GPU, where one
    launch per tensor would cost more than the arithmetic). Otherwise a
    plain sum per gradient, which reads each entry once: on a CPU 2.6x
    faster than the L1 norm (ResNet50's 23.6M entries, one thread: 9.5 ms
    against 25 ms).
    """
    import torch

    if fused:
        totals = torch._foreach_norm(grads, 1, dtype=torch.float32)
    else:
        totals = [g.sum(dtype=torch.float32) for g in grads]
    return ~torch.isfinite(torch.stack(totals))


def tap_variables(optimizer) -> list:
    """The variables a `GradientTap` added to `optimizer` (none: ``[]``).

    They are the tap's scratch space, not optimizer state: a checkpoint
    leaves them out.
    """
    tap = getattr(optimizer, _ATTR, None)
    return list(tap._own) if isinstance(tap, GradientTap) else []


def unscaled_optimizer(optimizer):
    """The optimizer whose `apply` receives the unscaled gradients.

    Under `mixed_float16` Keras wraps the optimizer in a
    `keras.optimizers.LossScaleOptimizer`. Its `apply` gets the gradients
    of the scaled loss (x 32768 at the start), and under JAX its
    `stateless_apply` never calls its own `apply` at all. Both divide by the
    scale and then call the inner optimizer's `apply` (JAX: through the
    inner `stateless_apply`), on finite steps only: a step whose scaled
    gradients overflowed is skipped, so the tap keeps the previous step's
    values, and its schedule counts applied steps only (after a skipped
    step, recorded steps come one training step later). The tap's variables are the inner optimizer's, which are part
    of the wrapper's `variables`, so JAX threads them through the step.
    """
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.inner_optimizer
    return optimizer

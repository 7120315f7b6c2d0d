"""Stops training at the first NaN/inf and says where it came from.

`NonFiniteGuard` checks, at every training step, the loss Keras logs and
the gradient tap's non-finite watch (`kerasft.backend.gradient_tap`), and
every validation batch's metrics. At the first non-finite value it
recomputes the offending batch once, layer by layer (`locate_nonfinite`),
and raises `NonFiniteError` naming the step, the first layer, input to
output, whose activation or gradient went non-finite, and the learning
rate at that step. Raising (rather than `stop_training`) means no other
callback sees the faulty step or epoch: no metrics row, checkpoint or
record of it is written, so what the run directory holds stays finite.

Cost per step: the loss is already a Python float when callbacks run
(Keras converts the logs to floats before every `on_train_batch_end` as
soon as any callback has that hook: the progress bar, kerasft's
recorders and loggers), so checking it is a `math.isfinite`. The gradient
check runs on the device inside the train step, and its result is one
int32 pair read per step (see `GradientTap`).
"""

from __future__ import annotations

import logging
import math
from typing import Callable

import keras
import numpy as np

from kerasft.errors import NonFiniteError

log = logging.getLogger(__name__)

# Under `mixed_float16` Keras's `LossScaleOptimizer` skips a step whose
# scaled gradients overflow and halves its scale (from 2**15), so the tap
# behind it never sees them. Overflow now and then is what loss scaling is
# for; a scale below 1 means the loss was scaled *down* and the gradients
# still were not finite: some 16 skipped steps in a row with no recovery,
# a model that trains nothing. The guard stops there.
MIN_LOSS_SCALE = 1.0

# (phase, epoch, batch index) -> (x, y): "train" or "validation" batch.
BatchFn = Callable[[str, int, int], tuple]


def nonfinite_logs(logs: dict | None) -> dict[str, str]:
    """The entries of Keras `logs` whose value is a non-finite number,
    as text (``{"loss": "nan"}``)."""
    out = {}
    for key, value in (logs or {}).items():
        try:
            v = float(np.asarray(value))
        except (TypeError, ValueError):
            continue  # not a number (Keras logs only numbers; be exact)
        if not math.isfinite(v):
            out[key] = str(v)
    return out


def _count_nonfinite(value) -> int:
    """Non-finite entries of a tensor, counted on the host.

    Diagnosis only, once per fault: copying each tensor to the host is
    cheaper than a device reduction, which JAX compiles anew for every
    shape of an eager op (ResNet50's weights and layer outputs: ~600
    compilations, ~1 minute on a CPU).
    """
    a = np.asarray(keras.ops.convert_to_numpy(value))
    if a.dtype.kind not in "fc":  # ml_dtypes' bfloat16 is kind "V"
        a = a.astype(np.float32)
    return int(a.size - np.count_nonzero(np.isfinite(a)))


def _size(value) -> int:
    return int(np.prod(value.shape))


def locate_nonfinite(model: keras.Model, x, y, training: bool,
                     gradients: bool = True) -> dict:
    """Where one batch first goes non-finite, in the order a step runs.

    Checks, in order: the model's weights, the input batch, every layer's
    output from input to output (``model.layers`` order, a functional
    model), the loss (mean sparse cross-entropy of the logits, as kerasft
    compiles), then each trainable variable's gradient in model order.
    Only for diagnosis after a fault: it keeps every layer's output of
    the batch at once. BatchNorm moving statistics that a training-mode
    call updates are put back.

    Args:
        model: a functional Keras model whose output is logits.
        x: the batch's inputs.
        y: its integer labels.
        training: call the model in training mode (as the train step did).
        gradients: also check the gradients. Defaults to `True`.

    Returns:
        A dict: ``weights`` (first non-finite variable path or None),
        ``input`` (non-finite input entries), ``layer`` / ``layer_class``
        / ``layer_nonfinite`` / ``layer_size`` (the first layer whose
        output is non-finite, or None), ``loss`` (the recomputed loss as
        text), ``gradient`` (first variable path with a non-finite
        gradient, model order, or None), ``gradients_nonfinite`` and
        ``gradients_total``.
    """
    from kerasft.backend import gradients as grads_mod

    found: dict = {"training": training}
    # What the step read: the trainable weights, and in inference mode the
    # BatchNorm moving statistics too (a training-mode step's own forward
    # has already written its batch's statistics into them).
    used = model.weights if not training else model.trainable_variables
    found["weights"] = next(
        (v.path for v in used if _count_nonfinite(v.value)), None)
    x = np.asarray(x)
    found["input"] = _count_nonfinite(x)
    layers = [l for l in model.layers
              if not isinstance(l, keras.layers.InputLayer)]
    saved = [np.array(keras.ops.convert_to_numpy(v.value))
             for v in model.non_trainable_variables]
    try:
        probe = keras.Model(model.input, [l.output for l in layers])
        outs = probe(x, training=training)
        found["layer"] = None
        for layer, out in zip(layers, outs):
            n = _count_nonfinite(out)
            if n:
                found.update(layer=layer.name,
                             layer_class=type(layer).__name__,
                             layer_nonfinite=n, layer_size=_size(out))
                break
        logits = keras.ops.cast(outs[-1], "float32")
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
            y, logits)
        found["loss"] = str(float(np.asarray(
            keras.ops.convert_to_numpy(loss))))
        if gradients:
            variables = list(model.trainable_variables)
            _, g = grads_mod.loss_and_gradients(model, x, y, variables,
                                                training=training)
            bad = [v.path for v, a in zip(variables, g)
                   if not np.all(np.isfinite(a))]
            found.update(gradient=bad[0] if bad else None,
                         gradients_nonfinite=len(bad),
                         gradients_total=len(variables))
    finally:
        for v, value in zip(model.non_trainable_variables, saved):
            v.assign(value)
    return found


def describe(fault: dict) -> str:
    """The one-line message of a fault (see `NonFiniteGuard`)."""
    where = (f"epoch {fault['epoch']}, "
             + ("validation " if fault["phase"] == "validation" else "")
             + f"batch {fault['batch']}"
             + (f" of {fault['batches']}" if fault.get("batches") else "")
             + (f" (training step {fault['step']})"
                if fault["phase"] == "training" else ""))
    values = ", ".join(f"{k} {v}" for k, v in fault["values"].items())
    parts = [f"non-finite values at {where}, learning rate "
             f"{fault['learning_rate']:.4g}:"]
    if values:
        parts.append(f"{values};")
    if fault.get("loss_scale") is not None:
        parts.append(
            "mixed_float16's loss scaling skipped the update of this step "
            "and of the steps before it, until its scale fell to "
            f"{fault['loss_scale']:g} (below {MIN_LOSS_SCALE:g}): the "
            "gradients are non-finite even unscaled;")
    if fault.get("gradient_watch"):
        parts.append(
            f"non-finite gradient, first variable {fault['gradient_watch']}"
            + ("; its update was not applied;" if fault.get("update_skipped")
               else ";"))
    found = fault.get("found") or {}
    if found.get("error"):
        parts.append(f"the layer search failed ({found['error']}).")
    elif found:
        mode = "training" if found.get("training") else "inference"
        lead = f"recomputed in {mode} mode, the first non-finite, input to "\
               "output:"
        if found.get("weights"):
            parts.append(f"{lead} the weights of {found['weights']} "
                         "(already non-finite before this batch).")
        elif found.get("input"):
            parts.append(
                f"{lead} the input batch itself ({found['input']} non-finite "
                "entries), first layer reached: "
                f"{found.get('layer')} ({found.get('layer_class')}).")
        elif found.get("layer"):
            parts.append(
                f"{lead} the output of layer {found['layer']} "
                f"({found['layer_class']}, {found['layer_nonfinite']} of "
                f"{found['layer_size']} entries).")
        elif not _finite_text(found.get("loss")):
            parts.append(f"{lead} the loss ({found['loss']}) from finite "
                         "logits.")
        elif found.get("gradient"):
            parts.append(
                f"{lead} every activation and the loss are finite; the "
                f"gradient of {found['gradient']} "
                f"({found['gradients_nonfinite']} of "
                f"{found['gradients_total']} variables non-finite).")
        else:
            parts.append("recomputing the batch gave finite values "
                         "throughout (the fault did not repeat).")
    return " ".join(parts)


def _finite_text(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True


class NonFiniteGuard(keras.callbacks.Callback):
    """Raises `NonFiniteError` at the first NaN/inf loss, gradient or
    validation metric, naming the step, the layer and the learning rate.

    Put it first in the callback list: the exception then reaches no other
    callback, so nothing records the faulty step or epoch. It attaches a
    `GradientTap` to the optimizer (or shares the one a `GradientRecorder`
    attached) and turns on its ``skip_nonfinite``: a step whose gradients
    are non-finite is not applied, so the weights stay those the step
    started from and the batch can be recomputed for the diagnosis. Under
    `mixed_float16` it also stops once Keras's loss scale falls below
    `MIN_LOSS_SCALE` (every step skipped; the tap, behind the loss
    scaling, never sees those gradients).

    Args:
        batch_fn: ``(phase, epoch, index) -> (x, y)``: the batch the step
            saw (``phase`` is ``"train"`` or ``"validation"``, epoch and
            index 0-based). `None`: no layer search. Defaults to `None`.
        seed: the tap's sample seed (pass the `GradientRecorder`'s, so
            both share one tap). Defaults to `0`.
        detach_at_end: detach the tap when `fit` ends. Defaults to `True`.
        start_step: training steps already done (a resumed run), so the
            step an error names counts from the run's start. Defaults to
            `0`.

    Example:

    ```python
    guard = NonFiniteGuard(lambda phase, epoch, i: (x[i*32:(i+1)*32],
                                                    y[i*32:(i+1)*32]))
    model.fit(x, y, batch_size=32, shuffle=False, callbacks=[guard])
    ```
    """

    def __init__(self, batch_fn: BatchFn | None = None, seed: int = 0,
                 detach_at_end: bool = True, start_step: int = 0):
        super().__init__()
        self.batch_fn = batch_fn
        self.seed = seed
        self.detach_at_end = detach_at_end
        self.tap = None
        self._scale = None  # the LossScaleOptimizer's scale variable
        self._step = start_step
        self._epoch = 0

    def on_train_begin(self, logs=None):
        from kerasft.backend.gradient_tap import GradientTap
        from kerasft.record import store
        from kerasft.record.recorder import tracked_variables

        before = getattr(self.model.optimizer, "_kerasft_gradient_tap", None)
        tap = GradientTap.attach(self.model.optimizer,
                                 tracked_variables(self.model),
                                 store.GRADIENT_SAMPLE, self.seed)
        if tap is not before:
            # No recorder asked for samples yet: record none (a
            # GradientRecorder later in the list schedules its own).
            tap.schedule(every=2**31 - 1, phase=0, last=-1)
        if tap is not before or not tap.skip_nonfinite:
            tap.skip_nonfinite = True
            # The train step is traced at its next call, with the tap.
            self.model.make_train_function(force=True)
        tap.reset_watch()
        self.tap = tap
        opt = self.model.optimizer
        self._scale = (opt.dynamic_scale if isinstance(
            opt, keras.optimizers.LossScaleOptimizer) else None)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        values = nonfinite_logs(logs)
        bad, index = self.tap.read_watch(self.model)
        if values or bad:
            self._fail("training", batch, values,
                       self.tap.names[index] if bad else None)
        if self._scale is not None:  # loss scaling: one scalar read
            from kerasft.backend.gradients import live_value

            scale = float(np.asarray(keras.ops.convert_to_numpy(
                live_value(self.model, self._scale))))
            if scale < MIN_LOSS_SCALE:
                self._fail("training", batch, values, None, loss_scale=scale)

    def on_test_batch_end(self, batch, logs=None):
        values = nonfinite_logs(logs)
        if values and self.tap is not None:  # validation inside fit
            self._fail("validation", batch,
                       {f"val_{k}": v for k, v in values.items()}, None)

    def on_epoch_end(self, epoch, logs=None):
        values = nonfinite_logs(logs)
        if values:  # e.g. a metric Keras computes only at the epoch's end
            self._fail("validation", None, values, None)

    def on_train_end(self, logs=None):
        if self.tap is not None and self.detach_at_end:
            self.tap.skip_nonfinite = False
            self.tap.detach()
            self.tap = None

    def _fail(self, phase: str, batch, values: dict, gradient,
              loss_scale: float | None = None) -> None:
        from kerasft.backend.gradients import sync_state
        from kerasft.record.scalar_recorder import learning_rate_of

        sync_state(self.model)  # JAX: the live weights, for the recompute
        params = self.params or {}
        fault = {
            "phase": phase,
            "epoch": self._epoch + 1,
            "batch": None if batch is None else batch + 1,
            "batches": params.get("steps") if phase == "training" else None,
            "step": self._step,
            "values": values,
            "gradient_watch": gradient,
            # the tap skipped it, or (loss_scale) Keras's loss scaling did
            "update_skipped": bool(gradient) or loss_scale is not None,
            "loss_scale": loss_scale,
            # After a skipped update, `iterations` is still that step's.
            "learning_rate": learning_rate_of(self.model.optimizer),
        }
        if self.batch_fn is not None and batch is not None:
            x, y = self.batch_fn("train" if phase == "training"
                                 else "validation", self._epoch, batch)
            try:
                fault["found"] = locate_nonfinite(
                    self.model, x, y, training=phase == "training",
                    gradients=phase == "training")
            except Exception as e:  # the fault itself must still be told
                log.exception("kerasft: the non-finite layer search failed")
                fault["found"] = {"error": f"{type(e).__name__}: {e}"}
        found = fault.get("found") or {}
        fault["layer"] = (found.get("weights") or found.get("layer")
                          or found.get("gradient") or gradient)
        # `fit` ends without `on_train_end`; the state is synced above, so
        # under JAX no later sync reads the tap's variables.
        self.on_train_end()
        raise NonFiniteError(describe(fault), fault)

"""Update ratio ||dW|| / ||W|| per variable over windows of N steps."""

from __future__ import annotations

import keras
import numpy as np

from kerasft import backend
from kerasft.record import store
from kerasft.record.recorder import to_numpy, tracked_variables


def _ratios(current, previous):
    """Per variable: ||current - previous|| and ||current||, in float32,
    with a fresh copy of `current` (the next window's start).

    One compiled function (TensorFlow, JAX) for all variables, so the
    weights stay on the device and only the (V,) norms cross to the host.
    The copy is explicit because torch updates its parameters in place.
    """
    ops = keras.ops
    deltas, norms, snapshot = [], [], []
    for now, before in zip(current, previous):
        now32 = ops.cast(now, "float32")
        d = now32 - ops.cast(before, "float32")
        deltas.append(ops.sqrt(ops.sum(d * d)))
        norms.append(ops.sqrt(ops.sum(now32 * now32)))
        snapshot.append(ops.copy(now))
    return ops.stack(deltas), ops.stack(norms), snapshot


class UpdateRatioRecorder(keras.callbacks.Callback):
    """Appends ||W_t - W_{t-N}|| / ||W_t|| per variable to ``update_ratios.csv``.

    The classic learning-rate check: around 1e-3 per step is healthy, far
    above means the rate is too high, far below too low. The recorded ratio
    is per window of `every_steps` steps divided by the window length, so it
    reads as a per-step ratio whatever N is. Variables that did not move
    (frozen) read 0.

    The window's starting weights are kept on the device (one copy of the
    model's weights) and the norms are reduced there: a recorded step copies
    only two numbers per variable to the host, never the weights.

    Args:
        directory: the store directory (``<run>/record``).
        every_steps: window length in steps. Defaults to `50`.

    Example:

    ```python
    model.fit(ds, epochs=2, callbacks=[UpdateRatioRecorder("run/record")])
    ```
    """

    def __init__(self, directory, every_steps: int = 50):
        super().__init__()
        self.directory = directory
        self.every_steps = every_steps
        self._step = 0
        self._table = None
        self._previous = None
        self._fn = None

    def _values(self):
        """The variables' live values, on the device."""
        from kerasft.backend.gradients import sync_state

        # Under JAX, fit keeps the live weights in its own state; this
        # writes them back into the variables (a no-op elsewhere).
        sync_state(self.model)
        return [v.value for v in self._variables]

    def on_train_begin(self, logs=None):
        self._variables = tracked_variables(self.model)
        if self._table is None:
            self._table = store.TableWriter(
                f"{self.directory}/update_ratios.csv",
                ["step", "epoch", *(v.path for v in self._variables)],
            )
        if self._fn is None:
            self._fn = backend.compile_function(_ratios)
        values = self._values()
        # Window start: a device copy (the delta against itself is unused).
        _, _, self._previous = self._fn(values, values)
        self._since = 0
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        self._since += 1
        if self._step % self.every_steps:
            return
        deltas, norms, self._previous = self._fn(self._values(),
                                                 self._previous)
        deltas = to_numpy(deltas).astype(np.float64)
        norms = to_numpy(norms).astype(np.float64)
        # float32 as the weights are (and as the table has always held)
        ratios = (deltas / np.maximum(norms, 1e-12) / self._since).astype(
            np.float32)
        row = {"step": self._step, "epoch": self._epoch + 1}
        row.update(zip((v.path for v in self._variables), ratios))
        self._table.write(row)
        self._since = 0

    def on_train_end(self, logs=None):
        self._previous = None  # frees the device copy between fits
        if self._table is not None:
            self._table.close()
            self._table = store.TableWriter(
                self._table.path, self._table.columns
            )

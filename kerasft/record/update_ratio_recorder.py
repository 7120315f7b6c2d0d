"""Update ratio ||dW|| / ||W|| per variable over windows of N steps."""

from __future__ import annotations

import numpy as np

from kerasft.record import store
from kerasft.record.recorder import to_numpy, tracked_variables

import keras


class UpdateRatioRecorder(keras.callbacks.Callback):
    """Appends ||W_t - W_{t-N}|| / ||W_t|| per variable to ``update_ratios.csv``.

    The classic learning-rate check: around 1e-3 per step is healthy, far
    above means the rate is too high, far below too low. The recorded ratio
    is per window of `every_steps` steps divided by the window length, so it
    reads as a per-step ratio whatever N is. Variables that did not move
    (frozen) read 0.

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

    def on_train_begin(self, logs=None):
        self._variables = tracked_variables(self.model)
        if self._table is None:
            self._table = store.TableWriter(
                f"{self.directory}/update_ratios.csv",
                ["step", "epoch", *(v.path for v in self._variables)],
            )
        self._previous = [to_numpy(v).copy() for v in self._variables]
        self._since = 0
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        self._since += 1
        if self._step % self.every_steps:
            return
        from kerasft.backend.gradients import sync_state

        sync_state(self.model)
        row = {"step": self._step, "epoch": self._epoch + 1}
        current = [to_numpy(v) for v in self._variables]
        for v, now, before in zip(self._variables, current, self._previous):
            norm = np.linalg.norm(now.ravel())
            delta = np.linalg.norm((now - before).ravel())
            row[v.path] = delta / max(norm, 1e-12) / self._since
        self._table.write(row)
        self._previous = [c.copy() for c in current]
        self._since = 0

    def on_train_end(self, logs=None):
        if self._table is not None:
            self._table.close()
            self._table = store.TableWriter(
                self._table.path, self._table.columns
            )

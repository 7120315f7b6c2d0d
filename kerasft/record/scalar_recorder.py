"""Per-step scalars: loss, metrics, learning rate, images/s."""

from __future__ import annotations

import time

import keras
import numpy as np

from kerasft.record import store


def learning_rate_of(optimizer) -> float:
    """The optimizer's learning rate now: its schedule at the optimizer's
    ``iterations`` (the step about to be applied), or the constant.

    Under JAX, call `kerasft.backend.gradients.sync_state` first inside
    `fit` (``iterations`` lags behind otherwise).
    """
    lr = optimizer.learning_rate
    if callable(lr):
        lr = lr(optimizer.iterations)
    return float(np.asarray(keras.ops.convert_to_numpy(lr)))


class ScalarRecorder(keras.callbacks.Callback):
    """Appends a row to ``scalars.csv`` every `every_steps` training steps.

    Columns: ``step`` (global, across phases), ``epoch``, ``loss`` and each
    metric as Keras reports them at that step (running means over the
    epoch so far), ``learning_rate`` and ``images_per_second`` (over the
    steps since the previous row).

    Args:
        directory: the store directory (``<run>/record``).
        every_steps: a row every this many steps. Defaults to `1`.
        batch_size: images per step, for images/s. Defaults to `None`.
        start_step: training steps done before the first `fit` (a resumed
            run's checkpoint); the step numbering continues from it.
            Defaults to `0`.

    Example:

    ```python
    model.fit(ds, callbacks=[ScalarRecorder("run/record", batch_size=32)])
    ```
    """

    def __init__(self, directory, every_steps: int = 1, batch_size=None,
                 start_step: int = 0):
        super().__init__()
        self.directory = directory
        self.every_steps = every_steps
        self.batch_size = batch_size
        self._step = start_step
        self._table = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._t = time.perf_counter()
        self._since = 0

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        self._since += 1
        if self._step % self.every_steps:
            return
        now = time.perf_counter()
        logs = logs or {}
        if self._table is None:
            metrics = [k for k in logs if k not in ("learning_rate",)]
            self._table = store.TableWriter(
                f"{self.directory}/scalars.csv",
                ["step", "epoch", *metrics, "learning_rate",
                 "images_per_second"],
            )
        row = {"step": self._step, "epoch": self._epoch + 1}
        row.update((k, float(np.asarray(v))) for k, v in logs.items())
        row["learning_rate"] = learning_rate_of(self.model.optimizer)
        if self.batch_size and now > self._t:
            row["images_per_second"] = self.batch_size * self._since / (now - self._t)
        self._t, self._since = now, 0
        self._table.write(row)

    def on_train_end(self, logs=None):
        if self._table is not None:
            self._table.close()
            self._table = None

"""Keeps ``status.json``'s heartbeat fresh while a run trains."""

from __future__ import annotations

import os
import time
from pathlib import Path

import keras

from kerasft.rundir import beat, kill_point, write_json


class Heartbeat(keras.callbacks.Callback):
    """Rewrites ``status.json`` with a new heartbeat every `every_seconds`.

    With the pid and host that `kerasft.rundir.running_status` puts in the
    status, a reader can tell a live run from one that was killed without
    a chance to say so (`kerasft.rundir.read_status`). The check after each
    step is one clock read; the file is written at most every
    `every_seconds` and at each epoch's end.

    Args:
        path: the run's ``status.json``.
        status: the status dict the run writes (updated in place).
        every_seconds: the longest gap between two writes while steps run.
            Defaults to `30`.

    Example:

    ```python
    status = running_status()
    model.fit(ds, callbacks=[Heartbeat("run/status.json", status)])
    ```
    """

    def __init__(self, path: str | os.PathLike, status: dict,
                 every_seconds: float = 30.0):
        super().__init__()
        self.path = Path(path)
        self.status = status
        self.every_seconds = every_seconds
        self._last = time.monotonic()
        self._epoch = 0

    def _write(self) -> None:
        beat(self.status)
        write_json(self.path, self.status)
        self._last = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        kill_point(f"batch:{self._epoch + 1}:{batch}")
        if time.monotonic() - self._last >= self.every_seconds:
            self._write()

    def on_test_batch_end(self, batch, logs=None):
        if time.monotonic() - self._last >= self.every_seconds:
            self._write()

    def on_epoch_end(self, epoch, logs=None):
        self._write()

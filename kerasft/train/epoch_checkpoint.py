"""Saves resumable checkpoints every N epochs, atomically."""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from kerasft.rundir import atomic_path, atomic_write, checkpoint_file, write_json


class EpochCheckpoint(keras.callbacks.Callback):
    """Writes a resumable checkpoint into `directory` every `every` epochs.

    A checkpoint is three files, each written under a temporary name and
    renamed into place, so a crash never leaves a truncated one behind:

    - ``epoch-NNN.weights.h5``: the model's variables without the
      optimizer's; load it with `model.load_weights(path)`. Every
      checkpoint keeps it.
    - ``epoch-NNN.optimizer.npz``: the optimizer's state (iterations,
      moment slots; `kerasft.backend.checkpoint.optimizer_state`). Only the
      latest checkpoint keeps it (Adam's is twice the weights' size).
    - ``epoch-NNN.json``, written last: ``epoch`` and ``step`` done, the
      two file names and `info`. While it is absent the checkpoint is
      incomplete and `kerasft train --resume` uses an earlier one.

    Place it after every other callback: Keras calls them in order, so the
    checkpoint of an epoch then comes after everything recorded for it, and
    a resume from it misses nothing. An epoch stopped early (``stop_training``,
    e.g. by `keras.callbacks.TerminateOnNaN`) or with a non-finite loss is
    not saved. The last epoch of each `fit` is always saved.

    Args:
        directory: where the files go (created if missing); a run's is
            ``<run>/checkpoints``.
        every: save every this many epochs. Defaults to `1`.
        last_epoch: 0-based epoch that is always saved (the end of a phase
            trained by several `fit` calls). Defaults to the last epoch of
            each `fit`.
        start_step: training steps done before this callback's first `fit`
            (earlier phases, or a resumed run's checkpoint). Defaults to `0`.
        info: more JSON-able fields for each checkpoint's record (the
            phase). Defaults to none.

    Example:

    ```python
    model.fit(x, y, epochs=4, callbacks=[EpochCheckpoint("ckpt", every=2)])
    ```
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        every: int = 1,
        last_epoch: int | None = None,
        start_step: int = 0,
        info: dict | None = None,
    ):
        super().__init__()
        self.directory = Path(directory)
        self.every = every
        self.last_epoch = last_epoch
        self.step = start_step
        self.info = dict(info or {})
        self.saved: list[Path] = []

    def on_train_begin(self, logs=None):
        self.directory.mkdir(parents=True, exist_ok=True)
        self._last_epoch = self.last_epoch
        if self._last_epoch is None:
            self._last_epoch = self.params.get("epochs", 0) - 1

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every and epoch != self._last_epoch:
            return
        loss = (logs or {}).get("loss", 0.0)
        if self.model.stop_training or not np.isfinite(float(loss)):
            return
        from kerasft import backend
        from kerasft.backend.checkpoint import optimizer_state, save_model_weights
        from kerasft.backend.gradients import sync_state

        sync_state(self.model)
        done = epoch + 1
        weights = checkpoint_file(self.directory, done, "weights.h5")
        with atomic_path(weights) as tmp:
            save_model_weights(self.model, tmp)
        optimizer = checkpoint_file(self.directory, done, "optimizer.npz")
        with atomic_write(optimizer, "wb") as f:
            np.savez(f, **optimizer_state(self.model.optimizer))
        write_json(checkpoint_file(self.directory, done, "json"), {
            "epoch": done,
            "step": self.step,
            "weights": weights.name,
            "optimizer": optimizer.name,
            "backend": backend.name(),
            **self.info,
        })
        # Earlier optimizer states: superseded by a complete newer one.
        for old in weights.parent.glob("epoch-*.optimizer.npz"):
            if old != optimizer:
                old.unlink()
        self.saved.append(weights)

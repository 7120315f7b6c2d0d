"""Saves the model's weights every N epochs, atomically."""

from __future__ import annotations

import os
from pathlib import Path

import keras
from keras.src.saving import saving_lib


class EpochCheckpoint(keras.callbacks.Callback):
    """Writes ``<directory>/epoch-NNN.weights.h5`` every `every` epochs.

    Unlike `keras.callbacks.ModelCheckpoint`, a file is written under a
    temporary name and renamed into place, so a crash never leaves a
    truncated checkpoint behind, and it holds the model's variables without
    the optimizer's state (a third of the size with Adam); load it with
    `model.load_weights(path)`. The last epoch of each `fit` is always
    saved.

    Args:
        directory: where the files go (created if missing).
        every: save every this many epochs. Defaults to `1`.
        last_epoch: 0-based epoch that is always saved (the end of a phase
            trained by several `fit` calls). Defaults to the last epoch of
            each `fit`.

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
    ):
        super().__init__()
        self.directory = Path(directory)
        self.every = every
        self.last_epoch = last_epoch
        self.saved: list[Path] = []

    def on_train_begin(self, logs=None):
        self.directory.mkdir(parents=True, exist_ok=True)
        self._last_epoch = self.last_epoch
        if self._last_epoch is None:
            self._last_epoch = self.params.get("epochs", 0) - 1

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every and epoch != self._last_epoch:
            return
        path = self.directory / f"epoch-{epoch + 1:03d}.weights.h5"
        tmp = self.directory / f".epoch-{epoch + 1:03d}.tmp.weights.h5"
        # Model variables only: with the optimizer's slots (Adam keeps two
        # per weight) a ResNet50 checkpoint triples to ~280 MB.
        saving_lib.save_weights_only(
            self.model, tmp, objects_to_skip=[self.model.optimizer]
        )
        os.replace(tmp, path)
        self.saved.append(path)

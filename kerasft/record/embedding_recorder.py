"""Penultimate features of a fixed probe set, per epoch."""

from __future__ import annotations

import keras
import numpy as np

from kerasft.record import store
from kerasft.record.recorder import Recorder, to_numpy


class EmbeddingRecorder(Recorder):
    """Records the pooled penultimate features of a probe set, with labels.

    Writes ``embeddings/epoch-NNNN.npz`` with ``features`` (P, D) float32
    and ``labels`` (P,). The model runs in inference mode.

    Args:
        directory: the store directory (``<run>/record``).
        x: probe images (preprocessed), a few hundred.
        y: their labels.
        layer: the feature layer. Defaults to `"head_pool"` (the input of
            the Dense head), else the second-to-last layer.
        batch_size: images per forward pass. Defaults to `64`.
        every_epochs: record every this many epochs. Defaults to `1`.

    Example:

    ```python
    rec = EmbeddingRecorder("run/record", x_val[:256], y_val[:256])
    ```
    """

    kind = "embeddings"

    def __init__(self, directory, x, y, layer=None, batch_size: int = 64,
                 every_epochs: int = 1):
        super().__init__(directory, every_epochs)
        self.x, self.y = np.asarray(x), np.asarray(y)
        self.layer = layer
        self.batch_size = batch_size
        self._feature_model = None

    def on_train_begin(self, logs=None):
        if self._feature_model is None:
            names = [l.name for l in self.model.layers]
            name = self.layer or ("head_pool" if "head_pool" in names
                                  else names[-2])
            self.layer = name
            self._feature_model = keras.Model(
                self.model.input, self.model.get_layer(name).output
            )
        super().on_train_begin(logs)

    def record(self, epoch: int) -> None:
        feats = [
            to_numpy(self._feature_model(self.x[i : i + self.batch_size],
                                         training=False))
            for i in range(0, len(self.x), self.batch_size)
        ]
        store.write_npz(
            self.kind_dir / store.record_name(epoch),
            features=np.concatenate(feats).astype(np.float32),
            labels=self.y.astype(np.int64),
        )

"""BatchNorm moving-statistics drift per BN layer."""

from __future__ import annotations

import keras
import numpy as np

from kerasft.record import store
from kerasft.record.recorder import Recorder, to_numpy


class BatchNormRecorder(Recorder):
    """Records how far each BN layer's moving mean and variance moved.

    Writes ``batchnorm/epoch-NNNN.npz`` with ``names`` (BN layer names),
    ``mean_drift`` and ``var_drift`` (||m_t - m_0|| / ||m_0||; NaN for a
    moving mean that started at 0, as from random init), and
    ``moving_mean_avg``/``moving_var_avg``. Frozen (inference-mode) BN
    layers read 0 drift: that is the point of freezing them.

    Args:
        directory: the store directory (``<run>/record``).
        every_epochs: record every this many epochs. Defaults to `1`.

    Example:

    ```python
    model.fit(ds, epochs=2, callbacks=[BatchNormRecorder("run/record")])
    ```
    """

    kind = "batchnorm"

    def __init__(self, directory, every_epochs: int = 1):
        super().__init__(directory, every_epochs)
        self._initial = None

    @staticmethod
    def _bn_layers(model: keras.Model) -> list:
        return [l for l in model.layers
                if isinstance(l, keras.layers.BatchNormalization)]

    def start_from(self, model: keras.Model) -> None:
        self._initial = [
            (to_numpy(l.moving_mean).copy(), to_numpy(l.moving_variance).copy())
            for l in self._bn_layers(model)
        ]

    def on_train_begin(self, logs=None):
        self._layers = self._bn_layers(self.model)
        if self._initial is None:
            self.start_from(self.model)
        super().on_train_begin(logs)

    def record(self, epoch: int) -> None:
        if not self._layers:
            return

        from kerasft.record.weight_recorder import relative_change as drift

        means = [to_numpy(l.moving_mean) for l in self._layers]
        vars_ = [to_numpy(l.moving_variance) for l in self._layers]
        store.write_npz(
            self.kind_dir / store.record_name(epoch),
            names=np.array([l.name for l in self._layers]),
            mean_drift=np.array(
                [drift(m, i[0]) for m, i in zip(means, self._initial)]),
            var_drift=np.array(
                [drift(v, i[1]) for v, i in zip(vars_, self._initial)]),
            moving_mean_avg=np.array([m.mean() for m in means]),
            moving_var_avg=np.array([v.mean() for v in vars_]),
        )

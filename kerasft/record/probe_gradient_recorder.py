"""Gradients on a fixed probe batch at each epoch end."""

from __future__ import annotations

import keras
import numpy as np

from kerasft.record import store
from kerasft.record.recorder import (
    Recorder,
    reduces_on_device,
    to_numpy,
    tracked_variables,
)
from kerasft.record.tensor_stats import TensorStats


class ProbeGradientRecorder(Recorder):
    """Records the loss gradient on the same probe batch every epoch.

    The model runs in inference mode and every tracked variable gets a
    gradient, frozen or not, so the numbers are the same kind at every
    epoch and on every backend; this is what makes gradients comparable
    across backends. Writes ``probe_gradients/epoch-NNNN.npz`` with
    ``names``, ``edges`` and ``counts`` (the store's bin rule), ``stats``,
    ``norms``
    and ``loss``.

    Args:
        directory: the store directory (``<run>/record``).
        x, y: the probe batch (preprocessed images, labels).
        every_epochs: record every this many epochs. Defaults to `1`.
        on_device: reduce the gradients on the device (`TensorStats`; only
            counts, statistics and norms cross to the host) instead of
            copying them to numpy. `None`: on an accelerator only.
            Defaults to `None`.

    Example:

    ```python
    rec = ProbeGradientRecorder("run/record", x_val[:32], y_val[:32])
    ```
    """

    kind = "probe_gradients"

    def __init__(self, directory, x, y, every_epochs: int = 1,
                 on_device: bool | None = None):
        super().__init__(directory, every_epochs)
        self.x, self.y = np.asarray(x), np.asarray(y)
        self.on_device = on_device

    def record(self, epoch: int) -> None:
        from kerasft.backend.gradients import loss_and_gradients

        on_device = reduces_on_device(self)
        variables = tracked_variables(self.model)
        loss, grads = loss_and_gradients(self.model, self.x, self.y, variables,
                                         as_numpy=not on_device)
        names = [v.path for v in variables]
        if on_device:
            stats = TensorStats.shared([v.shape for v in variables])
            out = {"names": np.array(names), **stats(grads)}
            ops = keras.ops
            out["norms"] = to_numpy(ops.stack(
                [ops.sqrt(ops.sum(ops.square(g))) for g in grads]))
        else:
            out = self.histograms(names, grads)
            out["norms"] = np.array([np.linalg.norm(g.ravel())
                                     for g in grads])
        out["loss"] = np.array(loss)
        store.write_npz(self.kind_dir / store.record_name(epoch), **out)

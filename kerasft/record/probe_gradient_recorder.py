"""Gradients on a fixed probe batch at each epoch end."""

from __future__ import annotations

import numpy as np

from kerasft.record import store
from kerasft.record.recorder import Recorder, tracked_variables


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

    Example:

    ```python
    rec = ProbeGradientRecorder("run/record", x_val[:32], y_val[:32])
    ```
    """

    kind = "probe_gradients"

    def __init__(self, directory, x, y, every_epochs: int = 1):
        super().__init__(directory, every_epochs)
        self.x, self.y = np.asarray(x), np.asarray(y)

    def record(self, epoch: int) -> None:
        from kerasft.backend.gradients import loss_and_gradients

        variables = tracked_variables(self.model)
        loss, grads = loss_and_gradients(self.model, self.x, self.y, variables)
        names = [v.path for v in variables]
        out = self.histograms(names, grads)
        out["norms"] = np.array([np.linalg.norm(g.ravel()) for g in grads])
        out["loss"] = np.array(loss)
        store.write_npz(self.kind_dir / store.record_name(epoch), **out)

"""Weight histograms, summary statistics and relative change per epoch."""

from __future__ import annotations

import numpy as np

from kerasft.record import store
from kerasft.record.recorder import Recorder, to_numpy, tracked_variables


def relative_change(now: np.ndarray, start: np.ndarray) -> float:
    """||now - start|| / ||start||; NaN where the tensor started at 0
    (biases, BN betas and moving means), for which it is undefined."""
    base = np.linalg.norm(start.ravel())
    if base == 0:
        return float("nan")
    return float(np.linalg.norm((now - start).ravel()) / base)


class WeightRecorder(Recorder):
    """Records every weight tensor's histogram, stats and drift from the start.

    Per epoch (and every `every_steps` steps if given) it writes
    ``weights/epoch-NNNN.npz`` with ``names`` (variable paths), ``counts``
    over bins fixed from the initial values, ``stats`` (`STAT_NAMES`) and
    ``rel_change`` = ||W_t - W_0|| / ||W_0|| (NaN for tensors that start at
    0, such as biases). Epoch 0 is the initial model.

    Args:
        directory: the store directory (``<run>/record``).
        every_epochs: record every this many epochs. Defaults to `1`.
        every_steps: also record every this many training steps (files
            ``weights/step-SSSSSSSS.npz``). Defaults to `None` (off).

    Example:

    ```python
    model.fit(ds, epochs=3, callbacks=[WeightRecorder("run/record")])
    kerasft.load_run("run").records["weights"][3]["rel_change"]
    ```
    """

    kind = "weights"

    def __init__(self, directory, every_epochs: int = 1, every_steps=None):
        super().__init__(directory, every_epochs)
        self.every_steps = every_steps
        self._initial = None
        self._step = 0

    def on_train_begin(self, logs=None):
        # W_0 is taken at the first fit; later fits (phases) keep it, so
        # pass the same recorder to every phase.
        if self._initial is None:
            self._variables = tracked_variables(self.model)
            self._initial = [to_numpy(v).copy() for v in self._variables]
        super().on_train_begin(logs)

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self.every_steps and self._step % self.every_steps == 0:
            from kerasft.backend.gradients import sync_state

            sync_state(self.model)
            self._write(self.kind_dir / store.record_name(step=self._step))

    def record(self, epoch: int) -> None:
        self._write(self.kind_dir / store.record_name(epoch))

    def _write(self, path) -> None:
        names = [v.path for v in self._variables]
        arrays = [to_numpy(v) for v in self._variables]
        out = self.histograms(names, arrays)
        out["rel_change"] = np.array(
            [relative_change(a, a0) for a, a0 in zip(arrays, self._initial)]
        )
        store.write_npz(path, **out)

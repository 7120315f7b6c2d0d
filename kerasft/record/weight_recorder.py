"""Weight histograms, summary statistics and relative change per epoch."""

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
    ``weights/epoch-NNNN.npz`` with ``names`` (variable paths), ``edges``
    and ``counts`` (bins from the record's own values, `store.bin_grid`:
    every finite entry inside), ``stats`` (`STAT_NAMES`) and
    ``rel_change`` = ||W_t - W_0|| / ||W_0|| (NaN for tensors that start at
    0, such as biases). Epoch 0 is the initial model.

    Args:
        directory: the store directory (``<run>/record``).
        every_epochs: record every this many epochs. Defaults to `1`.
        every_steps: also record every this many training steps (files
            ``weights/step-SSSSSSSS.npz``). Defaults to `None` (off).
        on_device: reduce on the device with `TensorStats` (only counts
            and statistics cross to the host) instead of copying the
            weights to numpy. `None`: on an accelerator only -- on a CPU
            the weights are already in host memory and numpy's
            single-pass histogram is faster (measured: 0.27 s vs 0.57 s
            for a 2.4M-entry kernel). Defaults to `None`.
        start_step: training steps done before the first `fit` (a resumed
            run's checkpoint); the step numbering continues from it.
            Defaults to `0`.

    Example:

    ```python
    model.fit(ds, epochs=3, callbacks=[WeightRecorder("run/record")])
    kerasft.load_run("run").records["weights"][3]["rel_change"]
    ```
    """

    kind = "weights"

    def __init__(self, directory, every_epochs: int = 1, every_steps=None,
                 on_device: bool | None = None, start_step: int = 0):
        super().__init__(directory, every_epochs)
        self.every_steps = every_steps
        self.on_device = on_device
        self._stats = None
        self._initial = None
        self._step = start_step

    def start_from(self, model: keras.Model) -> None:
        self._variables = tracked_variables(model)
        self._initial = [to_numpy(v).copy() for v in self._variables]
        if reduces_on_device(self):
            self._initial_device = [
                keras.ops.copy(v.value) for v in self._variables]
            self._initial_norm = np.array(
                [np.linalg.norm(a.ravel()) for a in self._initial])

    def on_train_begin(self, logs=None):
        # W_0 is taken at the first fit; later fits (phases) keep it, so
        # pass the same recorder to every phase.
        if self._initial is None:
            self.start_from(self.model)
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
        if self.on_device:
            store.write_npz(path, **self._reduce_on_device(names))
            return
        arrays = [to_numpy(v) for v in self._variables]
        out = self.histograms(names, arrays)
        out["rel_change"] = np.array(
            [relative_change(a, a0) for a, a0 in zip(arrays, self._initial)]
        )
        store.write_npz(path, **out)

    def _reduce_on_device(self, names) -> dict[str, np.ndarray]:
        if self._stats is None:
            self._stats = TensorStats.shared(
                [v.shape for v in self._variables])
        out = self._stats([v.value for v in self._variables],
                          initial=self._initial_device)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(self._initial_norm == 0, np.nan,
                           out.pop("delta") / self._initial_norm)
        return {"names": np.array(names), **out, "rel_change": rel}

"""The base class of the recorders: epoch bookkeeping and the store path."""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from kerasft.record import store


def tracked_variables(model: keras.Model) -> list:
    """The variables recorders follow: every weight except BN statistics.

    BatchNorm moving mean/variance are not learned by gradient descent;
    `BatchNormRecorder` follows them instead. Frozen layers' variables are
    included, so a variable keeps its place when a phase unfreezes it.
    """
    skip = set()
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            skip.update(id(v) for v in (layer.moving_mean, layer.moving_variance))
    return [v for v in model.weights if id(v) not in skip]


def reduces_on_device(recorder) -> bool:
    """Whether `recorder` reduces where the tensors live: its ``on_device``
    if given, else on an accelerator only (on a CPU the "device" is host
    memory, where numpy is as fast or faster). Settles ``on_device``."""
    if recorder.on_device is None:
        from kerasft import backend

        recorder.on_device = backend.on_accelerator()
    return recorder.on_device


def to_numpy(value) -> np.ndarray:
    """A tensor or variable as numpy, 16-bit floats widened to float32.

    Under a mixed-precision policy activations are bfloat16 or float16:
    numpy has no bfloat16 (torch's ``.numpy()`` refuses it), and float16
    sums overflow, so recorders read and reduce in float32. The cast runs
    on the device, before the copy to the host.
    """
    if keras.backend.standardize_dtype(value.dtype) in ("bfloat16", "float16"):
        value = keras.ops.cast(value, "float32")
    return np.asarray(keras.ops.convert_to_numpy(value))


class Recorder(keras.callbacks.Callback):
    """Writes one kind of record into a run store, per epoch.

    Subclasses implement `record(epoch)`; it runs once before the first
    training step (epoch 0, if the store has no epoch 0 yet) and after every
    `every_epochs`-th epoch. Later `fit` calls (phases) continue the
    numbering because Keras passes absolute epoch numbers.

    Args:
        directory: the store directory (``<run>/record``).
        every_epochs: record every this many epochs. Defaults to `1`.
    """

    kind = ""

    def __init__(self, directory: str | os.PathLike, every_epochs: int = 1):
        super().__init__()
        self.directory = Path(directory)
        self.every_epochs = every_epochs

    @property
    def kind_dir(self) -> Path:
        return self.directory / self.kind

    def has_epoch(self, epoch: int) -> bool:
        return (self.kind_dir / store.record_name(epoch)).exists()

    def on_train_begin(self, logs=None):
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.records_epoch_zero and not self.has_epoch(0):
            self.record(0)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_epochs == 0:
            from kerasft.backend.gradients import sync_state

            sync_state(self.model)
            self.record(epoch + 1)

    records_epoch_zero = True

    def start_from(self, model: keras.Model) -> None:
        """Takes the run's starting state (e.g. W_0) from `model` now.

        Recorders that compare with the start take it at their first
        `fit` by default. A resumed run's first `fit` starts from a
        checkpoint instead: it calls this with the model holding the
        initial weights first. Recorders without such state ignore it.
        """

    def record(self, epoch: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # helpers shared by the histogram kinds

    def histograms(self, names, arrays) -> dict[str, np.ndarray]:
        """``names``, ``edges``, ``counts``, ``stats`` and ``nonfinite`` of
        `arrays`; each histogram's edges follow the store's bin rule
        (`store.bin_grid`), so every finite entry lies inside its bins."""
        finite = [np.asarray(a)[np.isfinite(a)] for a in arrays]
        edges = np.stack([store.dyadic_edges(a) for a in finite])
        return {
            "names": np.array(names),
            "edges": edges,
            "counts": np.stack(
                [store.histogram(a, e) for a, e in zip(finite, edges)]
            ),
            "stats": np.stack([store.summary_stats(a) for a in finite]),
            "nonfinite": np.array(
                [np.size(a) - f.size for a, f in zip(arrays, finite)],
                dtype=np.int64),
        }

"""Probe-batch activations per block: histograms, stats, dead units."""

from __future__ import annotations

import re

import keras
import numpy as np

from kerasft.record import store
from kerasft.record.recorder import Recorder, reduces_on_device, to_numpy
from kerasft.record.tensor_stats import TensorStats

_BLOCK = re.compile(r"^(conv\d_block\d+_out|conv1_relu|pool1_pool|post_relu|head_pool)$")


def block_outputs(model: keras.Model) -> list[str]:
    """Names of the layers whose outputs are recorded: each residual block's
    output, the stem, and the pooled features (ResNet v1 and v2 names);
    for other models, every layer with a 4-D output plus the last one."""
    names = [l.name for l in model.layers if _BLOCK.match(l.name)]
    if names:
        return names
    return [l.name for l in model.layers[1:] if len(l.output.shape) == 4] + [
        model.layers[-1].name
    ]


class ActivationRecorder(Recorder):
    """Records block outputs on a fixed probe batch, in inference mode.

    Writes ``activations/epoch-NNNN.npz`` with ``names`` (layer names),
    ``edges`` and ``counts`` (the store's bin rule), ``stats``, and
    ``dead_fraction``: the share of channels whose output is (near) zero
    for every probe image and position.

    Args:
        directory: the store directory (``<run>/record``).
        x: the probe batch (preprocessed images).
        layers: layer names to record. Defaults to `block_outputs(model)`.
        every_epochs: record every this many epochs. Defaults to `1`.
        on_device: reduce each output on the device (`TensorStats`; only
            counts and statistics cross to the host) instead of copying the
            activations to numpy. `None`: on an accelerator only. Defaults
            to `None`.

    Example:

    ```python
    rec = ActivationRecorder("run/record", x_val[:32])
    model.fit(ds, epochs=2, callbacks=[rec])
    ```
    """

    kind = "activations"

    def __init__(self, directory, x, layers=None, every_epochs: int = 1,
                 on_device: bool | None = None):
        super().__init__(directory, every_epochs)
        self.x = np.asarray(x)
        self.layers = layers
        self.on_device = on_device
        self._probe_model = None
        self._stats = None

    def on_train_begin(self, logs=None):
        if self._probe_model is None:
            names = self.layers or block_outputs(self.model)
            self.layers = names
            self._probe_model = keras.Model(
                self.model.input,
                [self.model.get_layer(n).output for n in names],
            )
        super().on_train_begin(logs)

    def record(self, epoch: int) -> None:
        outs = self._probe_model(self.x, training=False)
        out = (self._reduce_on_device(outs) if reduces_on_device(self)
               else self._reduce_on_host(outs))
        store.write_npz(self.kind_dir / store.record_name(epoch), **out)

    def _reduce_on_host(self, outs) -> dict[str, np.ndarray]:
        arrays = [to_numpy(o) for o in outs]
        out = self.histograms(self.layers, arrays)
        out["dead_fraction"] = np.array([
            dead_fraction(np.abs(a.reshape(-1, a.shape[-1])).max(axis=0))
            for a in arrays])
        return out

    def _reduce_on_device(self, outs) -> dict[str, np.ndarray]:
        ops = keras.ops
        if self._stats is None:
            self._groups = group_by_size([o.shape for o in outs],
                                         GROUP_ENTRIES)
            self._stats = [TensorStats.shared([outs[i].shape for i in g])
                           for g in self._groups]
        parts = [stats([outs[i] for i in g])
                 for stats, g in zip(self._stats, self._groups)]
        out = {"names": np.array(self.layers)}
        for key in ("edges", "counts", "stats", "nonfinite"):
            out[key] = np.concatenate([p[key] for p in parts])
        out["dead_fraction"] = np.array([
            dead_fraction(to_numpy(ops.max(
                ops.abs(ops.cast(o, "float32")),
                axis=tuple(range(len(o.shape) - 1)))))
            for o in outs])
        return out


# Entries reduced together on the device: the outputs go to `TensorStats`
# in consecutive groups of at most this many (one output alone if larger),
# so the extra device memory is a few copies of one group, not of every
# output (ResNet50 at 224 px, 32 probe images: 211M entries), and JAX
# compiles one function per group, not per output.
GROUP_ENTRIES = 1 << 26


def group_by_size(shapes, limit: int = GROUP_ENTRIES) -> list[list[int]]:
    """Indices of `shapes`, in order, in groups of at most `limit` entries."""
    groups, total = [], limit + 1
    for i, shape in enumerate(shapes):
        n = int(np.prod(shape))
        if total + n > limit:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += n
    return groups


def dead_fraction(channel_max: np.ndarray) -> float:
    """The share of channels whose largest |output| is (near) zero."""
    return float(np.mean(channel_max <= store.DEAD_THRESHOLD))

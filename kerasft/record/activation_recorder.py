"""Probe-batch activations per block: histograms, stats, dead units."""

from __future__ import annotations

import re

import keras
import numpy as np

from kerasft.record import store
from kerasft.record.recorder import Recorder, to_numpy

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

    Example:

    ```python
    rec = ActivationRecorder("run/record", x_val[:32])
    model.fit(ds, epochs=2, callbacks=[rec])
    ```
    """

    kind = "activations"

    def __init__(self, directory, x, layers=None, every_epochs: int = 1):
        super().__init__(directory, every_epochs)
        self.x = np.asarray(x)
        self.layers = layers
        self._probe_model = None

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
        arrays = [to_numpy(o) for o in outs]
        out = self.histograms(self.layers, arrays)
        dead = []
        for a in arrays:
            flat = np.abs(a.reshape(-1, a.shape[-1]))
            dead.append(float(np.mean(flat.max(axis=0) <= store.DEAD_THRESHOLD)))
        out["dead_fraction"] = np.array(dead)
        store.write_npz(self.kind_dir / store.record_name(epoch), **out)

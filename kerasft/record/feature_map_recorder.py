"""First-layer filters and one probe image's feature maps, per epoch."""

from __future__ import annotations

import keras
import numpy as np

from kerasft.record import store
from kerasft.record.recorder import Recorder, to_numpy

# Depths shown: the stem, then the last block of each residual stage.
DEFAULT_DEPTHS = (
    "conv1_relu", "conv1_conv", "conv2_block3_out", "conv3_block4_out",
    "conv4_block6_out", "conv5_block3_out",
)


class FeatureMapRecorder(Recorder):
    """Records the first conv layer's kernels and feature maps of one image.

    Writes ``feature_maps/epoch-NNNN.npz`` with ``filters`` (the first
    Conv2D kernel, (kh, kw, in, out)), ``image`` (the probe image as uint8
    RGB, for display), and for each recorded depth ``maps/<layer>``
    (H, W, C') float32: the first `channels` channels of that layer's output
    on the image, in inference mode.

    Args:
        directory: the store directory (``<run>/record``).
        x: one preprocessed probe image (1, H, W, 3).
        image: the same image as uint8 RGB (H, W, 3), shown beside the maps.
        channels: channels kept per depth. Defaults to `16`.
        every_epochs: record every this many epochs. Defaults to `1`.
    """

    kind = "feature_maps"

    def __init__(self, directory, x, image, channels: int = 16,
                 every_epochs: int = 1):
        super().__init__(directory, every_epochs)
        self.x = np.asarray(x)[:1]
        self.image = np.asarray(image, dtype=np.uint8)
        self.channels = channels
        self._maps_model = None

    def on_train_begin(self, logs=None):
        if self._maps_model is None:
            names = {l.name for l in self.model.layers}
            # v2 ResNets have no conv1_relu; the pre-activation conv stands in
            self.layers = [n for n in DEFAULT_DEPTHS if n in names]
            if "conv1_relu" in self.layers and "conv1_conv" in self.layers:
                self.layers.remove("conv1_conv")
            self._maps_model = keras.Model(
                self.model.input,
                [self.model.get_layer(n).output for n in self.layers],
            )
            self._first_conv = next(
                l for l in self.model.layers
                if isinstance(l, keras.layers.Conv2D)
            )
        super().on_train_begin(logs)

    def record(self, epoch: int) -> None:
        outs = self._maps_model(self.x, training=False)
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        arrays = {
            f"maps/{n}": to_numpy(o)[0, ..., : self.channels].astype(np.float32)
            for n, o in zip(self.layers, outs)
        }
        store.write_npz(
            self.kind_dir / store.record_name(epoch),
            filters=to_numpy(self._first_conv.kernel).astype(np.float32),
            image=self.image,
            layers=np.array(self.layers),
            **arrays,
        )

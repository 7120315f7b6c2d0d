"""Grad-CAM and saliency maps of a few fixed probe images, at the start and end."""

from __future__ import annotations

import numpy as np

from kerasft.record import store
from kerasft.record.recorder import Recorder


class AttentionRecorder(Recorder):
    """Records where the model looks: Grad-CAM and saliency of probe images.

    Each map is for the image's *true* class, so the maps of two epochs
    answer the same question ("where is the evidence for this class?") and
    can be compared; the logits say what the model predicted. Writes
    ``attention/epoch-NNNN.npz`` with ``cam`` (N, h, w) float32 (Grad-CAM at
    `layer`, unnormalised), ``cam_linear`` (the same before its ReLU),
    ``saliency`` (N, H, W) float32 (max over channels
    of |d logit / d input|), ``logits`` (N, K), ``labels`` (N,), ``image``
    (N, H, W, 3) uint8 (for display) and ``layer`` (its name). The model
    runs in inference mode.

    Records epoch 0 (before the first step) and the last epoch, or every
    epoch with ``every_epoch=True``.

    Args:
        directory: the store directory (``<run>/record``).
        x: a few preprocessed probe images (N, H, W, 3).
        y: their labels.
        images: the same images as uint8 RGB (N, H, W, 3).
        layer: the Grad-CAM layer's name, or None for
            `kerasft.explain.default_layer`. Defaults to `None`.
        last_epoch: the training's last epoch (1-based), recorded at its
            end. Defaults to `None`: the ``epochs`` of each `fit` call.
        every_epoch: record after every epoch too. Defaults to `False`.

    Example:

    ```python
    rec = AttentionRecorder("run/record", x_val[:4], y_val[:4], images[:4])
    model.fit(x, y, epochs=5, callbacks=[rec])
    ```
    """

    kind = "attention"

    def __init__(self, directory, x, y, images, layer: str | None = None,
                 last_epoch: int | None = None, every_epoch: bool = False):
        super().__init__(directory, 1)
        self.x = np.asarray(x, dtype=np.float32)
        self.y = np.asarray(y, dtype=np.int64)
        self.images = np.asarray(images, dtype=np.uint8)
        self.layer = layer
        self.last_epoch = last_epoch
        self.every_epoch = every_epoch

    def on_train_begin(self, logs=None):
        from kerasft.explain.gradcam import resolve_layer

        # Fixed once, so every epoch's maps are of the same layer.
        self.layer = resolve_layer(self.model, self.layer).name
        super().on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        last = self.last_epoch or (self.params or {}).get("epochs")
        if self.every_epoch or epoch + 1 == last:
            super().on_epoch_end(epoch, logs)

    def record(self, epoch: int) -> None:
        from kerasft.explain.gradcam import grad_cam
        from kerasft.explain.saliency_map import saliency_from

        result = grad_cam(self.model, self.x, self.y, self.layer)
        store.write_npz(
            self.kind_dir / store.record_name(epoch),
            cam=result.maps,
            cam_linear=result.linear,
            saliency=saliency_from(result.input_grad),
            logits=result.logits,
            labels=self.y,
            image=self.images,
            layer=np.array(result.layer),
        )

"""Batches for `model.fit`: resized, preprocessed, in a seed-fixed order."""

from __future__ import annotations

import math

import keras
import numpy as np

from kerasft.data.images import Split


def preprocess_fn(arch: str):
    """The keras.applications `preprocess_input` matching a ResNet arch.

    v1 ResNets expect caffe-style input (BGR, ImageNet mean subtracted);
    v2 ResNets expect pixels scaled to [-1, 1]. Both run in numpy here, so
    every backend receives identical arrays.
    """
    if arch.endswith("v2"):
        return keras.applications.resnet_v2.preprocess_input
    return keras.applications.resnet.preprocess_input


class Batches(keras.utils.PyDataset):
    """Batches of (preprocessed float32 images, int32 labels) from a `Split`.

    The order of epoch `e` is a permutation drawn from numpy with the seed
    `(seed, e)`, and augmentation of batch `i` from `(seed, e, i)`, so the
    batches are the same on every backend and do not depend on how many
    batches were drawn before.

    With `epochs` set, one object serves several epochs: its length is
    `epochs * steps_per_epoch` and batch `k` belongs to epoch
    `start_epoch + k // steps_per_epoch`. Fit it with
    `steps_per_epoch=batches.steps_per_epoch`: Keras then keeps one iterator
    across epochs, and every batch is fixed by its index alone, whatever a
    backend prefetches (tf.data reads ahead across epoch boundaries, before
    any epoch callback runs). Without `epochs`, the object is an ordinary
    one-epoch `PyDataset` that reshuffles in `on_epoch_end`.

    Args:
        split: the images and labels.
        batch_size: images per batch.
        image_size: square side the images are resized to.
        arch: the model arch, which picks `preprocess_input`.
        seed: the run seed.
        shuffle: draw a new order each epoch. Defaults to `False`.
        max_steps: cap on batches per epoch. Defaults to `None` (one pass).
        flip: random horizontal flips. Defaults to `False`.
        crop_pad: pad-and-random-crop margin in pixels. Defaults to `0`.
        epochs: serve this many epochs in one pass. Defaults to `None`.
        start_epoch: the epoch number of the first batch. Defaults to `0`.

    Example:

    ```python
    train = Batches(splits.train, 32, 64, "resnet50", seed=0, shuffle=True)
    model.fit(train, epochs=2)
    ```
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        image_size: int,
        arch: str,
        seed: int,
        shuffle: bool = False,
        max_steps: int | None = None,
        flip: bool = False,
        crop_pad: int = 0,
        epochs: int | None = None,
        start_epoch: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.split = split
        self.batch_size = batch_size
        self.image_size = image_size
        self.preprocess = preprocess_fn(arch)
        self.seed = seed
        self.shuffle = shuffle
        self.max_steps = max_steps
        self.flip = flip
        self.crop_pad = crop_pad
        self.epochs = epochs
        self.start_epoch = start_epoch
        self.epoch = start_epoch
        self._order = self._order_for(start_epoch)

    def _order_for(self, epoch: int) -> np.ndarray:
        n = len(self.split)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, 11, epoch]).permutation(n)

    def set_epoch(self, epoch: int) -> None:
        """Selects the order of `epoch` (used when resuming or re-phasing)."""
        self.epoch = epoch
        self._order = self._order_for(epoch)

    def on_epoch_end(self) -> None:
        if self.epochs is None:  # multi-epoch objects are fixed by index
            self.set_epoch(self.epoch + 1)

    @property
    def steps_per_epoch(self) -> int:
        full = math.ceil(len(self.split) / self.batch_size)
        return full if self.max_steps is None else min(full, self.max_steps)

    @property
    def num_batches(self) -> int:
        return self.steps_per_epoch * (self.epochs or 1)

    def __len__(self) -> int:
        return self.num_batches

    def _locate(self, index: int) -> tuple[int, int]:
        """(epoch, batch within the epoch) of batch `index`."""
        if self.epochs is None:
            return self.epoch, index
        epoch = self.start_epoch + index // self.steps_per_epoch
        if epoch != self.epoch:
            self.set_epoch(epoch)
        return epoch, index % self.steps_per_epoch

    def indices(self, index: int) -> np.ndarray:
        """Dataset indices of batch `index`."""
        _, j = self._locate(index)
        start = j * self.batch_size
        return self._order[start : start + self.batch_size]

    def images_uint8(self, index: int) -> np.ndarray:
        """Batch `index` as resized, augmented uint8 images (for plots)."""
        epoch, j = self._locate(index)
        idx = self.indices(index)
        x = self.split.images.take(idx, self.image_size)
        if self.flip or self.crop_pad:
            x = self._augment(x, epoch, j)
        return x

    def _augment(self, x: np.ndarray, epoch: int, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 13, epoch, index])
        x = x.copy()
        if self.crop_pad:
            p, s = self.crop_pad, self.image_size
            padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), "reflect")
            offsets = rng.integers(0, 2 * p + 1, size=(len(x), 2))
            for k, (dy, dx) in enumerate(offsets):
                x[k] = padded[k, dy : dy + s, dx : dx + s]
        if self.flip:
            mask = rng.random(len(x)) < 0.5
            x[mask] = x[mask, :, ::-1]
        return x

    def __getitem__(self, index: int):
        if index >= self.num_batches:
            raise IndexError(index)
        x = self.images_uint8(index).astype(np.float32)
        y = self.split.labels[self.indices(index)].astype(np.int32)
        return self.preprocess(x), y

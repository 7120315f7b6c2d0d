"""Batches for `model.fit`: resized, preprocessed, in a seed-fixed order.

Batches are made on demand from images kept at native size (see
`kerasft.data.images`), by Keras's own `PyDataset` workers: with
`workers > 1` a thread pool builds the next batches ahead of the model, in
order. Each batch is a pure function of (seed, epoch, index), so the worker
count never changes what the model sees.
"""

from __future__ import annotations

import math
import os

import keras
import numpy as np

from kerasft.data.images import Split


# `data.workers: null` uses one thread per core, up to this many: past it a
# GPU is fed already (see README, "Data loading") and threads only add memory.
MAX_DEFAULT_WORKERS = 16


def default_workers() -> int:
    """Batch-building threads when `data.workers` is null: one per core."""
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS))


# keras.applications' caffe-mode ImageNet mean, in BGR order.
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)


def _caffe(x: np.ndarray) -> np.ndarray:
    """`keras.applications.resnet.preprocess_input`, into a contiguous array.

    RGB -> BGR and the mean subtracted, channel by channel from the images
    (uint8 or float) straight into a new contiguous float32 array: the same
    float32 arithmetic as Keras's function after a float32 conversion, bit
    for bit (a test checks it). Keras's own returns a channel-reversed view,
    which every backend then copies into a contiguous tensor, a slow strided
    copy of the whole float32 batch on the thread that feeds the model.
    """
    out = np.empty(x.shape, np.float32)
    for k in range(3):
        np.subtract(x[..., 2 - k], _CAFFE_MEAN_BGR[k], out=out[..., k],
                    dtype=np.float32)
    return out


def _tf(x: np.ndarray) -> np.ndarray:
    """`keras.applications.resnet_v2.preprocess_input` (pixels to [-1, 1]),
    bit for bit, into a new contiguous float32 array."""
    out = np.empty(x.shape, np.float32)
    np.divide(x, np.float32(127.5), out=out, dtype=np.float32)
    out -= np.float32(1.0)
    return out


def preprocess_fn(arch: str):
    """The preprocessing matching a ResNet arch, on uint8 or float images.

    v1 ResNets expect caffe-style input (BGR, ImageNet mean subtracted);
    v2 ResNets expect pixels scaled to [-1, 1], as keras.applications'
    `preprocess_input` does. Both run in numpy here, so every backend
    receives identical arrays; the result is a new contiguous float32 array.
    """
    return _tf if arch.endswith("v2") else _caffe


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
        workers: threads that build batches ahead of the model (Keras
            `PyDataset` workers; Pillow and numpy release the GIL while they
            decode, resize and preprocess). `1` builds each batch when the
            model asks for it. Defaults to `1`.
        max_queue_size: batches kept ready ahead of the model when
            `workers > 1`. Defaults to `None` (twice `workers`, at least 4).

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
        workers: int = 1,
        max_queue_size: int | None = None,
    ):
        super().__init__(
            workers=workers,
            use_multiprocessing=False,
            max_queue_size=max_queue_size or max(4, 2 * workers),
        )
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
        # epoch -> order. Workers read it concurrently; an entry is computed
        # from (seed, epoch) alone, so a race at worst computes it twice.
        self._orders: dict[int, np.ndarray] = {}

    def _order_for(self, epoch: int) -> np.ndarray:
        order = self._orders.get(epoch)
        if order is None:
            n = len(self.split)
            if self.shuffle:
                rng = np.random.default_rng([self.seed, 11, epoch])
                order = rng.permutation(n)
            else:
                order = np.arange(n)
            if len(self._orders) > 4:  # a multi-epoch object walks forward
                self._orders.clear()
            self._orders[epoch] = order
        return order

    def set_epoch(self, epoch: int) -> None:
        """Selects the order of `epoch` (used when resuming or re-phasing)."""
        self.epoch = epoch

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
        """(epoch, batch within the epoch) of batch `index`.

        Reads no mutable state but `self.epoch` of one-epoch objects, so
        worker threads can build batches of any index at once.
        """
        if self.epochs is None:
            return self.epoch, index
        epoch = self.start_epoch + index // self.steps_per_epoch
        return epoch, index % self.steps_per_epoch

    def _indices_at(self, epoch: int, j: int) -> np.ndarray:
        start = j * self.batch_size
        return self._order_for(epoch)[start : start + self.batch_size]

    def indices(self, index: int) -> np.ndarray:
        """Dataset indices of batch `index`."""
        return self._indices_at(*self._locate(index))

    def images_uint8(self, index: int) -> np.ndarray:
        """Batch `index` as resized, augmented uint8 images (for plots)."""
        return self._images_at(*self._locate(index))

    def _images_at(self, epoch: int, j: int) -> np.ndarray:
        idx = self._indices_at(epoch, j)
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

    def collect(self) -> tuple[np.ndarray, np.ndarray]:
        """Every batch, built by `workers` threads, joined in order.

        For small sets read outside `model.fit` (the probe set).

        Returns:
            (images, labels), as `__getitem__` makes them.
        """
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max(1, self.workers)) as pool:
            parts = list(pool.map(self.__getitem__, range(len(self))))
        return (np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]))

    def __getitem__(self, index: int):
        if index >= self.num_batches:
            raise IndexError(index)
        # One _locate per batch: a one-epoch object's epoch may move on
        # (on_epoch_end) while a worker is still inside this call.
        epoch, j = self._locate(index)
        x = self._images_at(epoch, j)
        y = self.split.labels[self._indices_at(epoch, j)].astype(np.int32)
        return self.preprocess(x), y

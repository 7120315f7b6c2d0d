"""Image sets kept at native size (or encoded) and resized batch by batch.

A set is never materialized at the model's input size: `ArrayImages` holds
uint8 pixels at their native resolution (CIFAR's 32x32 take 3 KB an image),
`EncodedImages` holds the encoded bytes of sets whose images differ in size
(as tensorflow-datasets stores them), and `FileImages` holds only paths.
`take` decodes and resizes just the images of one batch, so memory does not
grow with the set's size beyond its native storage. The decode and resize
run in Pillow, which releases the GIL, so `Batches` workers (threads) run
them in parallel.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np


def _resize_pil(img, size: int) -> np.ndarray:
    """One PIL image -> (size, size, 3) uint8, bilinear (the one resize)."""
    from PIL import Image

    if img.mode != "RGB":
        img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img)


def _decode_resized(sources: list, size: int) -> np.ndarray:
    """Encoded images (paths or file objects) -> (N, size, size, 3) uint8."""
    from PIL import Image

    out = np.empty((len(sources), size, size, 3), dtype=np.uint8)
    for k, source in enumerate(sources):
        with Image.open(source) as img:
            out[k] = _resize_pil(img, size)
    return out


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of uint8 images (N, H, W, 3) to (N, size, size, 3)."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    from PIL import Image

    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = _resize_pil(Image.fromarray(img), size)
    return out


def to_rgb_uint8(images: np.ndarray) -> np.ndarray:
    """Brings (N, H, W), (N, H, W, 1) or (N, H, W, 3) images to RGB uint8."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(
            "expected images of shape (N, H, W), (N, H, W, 1), (N, H, W, 3) "
            f"or (N, H, W, 4). Received: shape {images.shape}"
        )
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    elif images.shape[-1] == 4:
        images = images[..., :3]
    if images.dtype != np.uint8:
        hi = float(images.max()) if images.size else 1.0
        scale = 255.0 if hi <= 1.0 else 1.0
        images = np.clip(images * scale, 0, 255).round().astype(np.uint8)
    return images


class ArrayImages:
    """Images in memory as one uint8 array (N, H, W, 3) at native size.

    Args:
        images: the images at their native resolution.

    Example:

    ```python
    imgs = ArrayImages(np.zeros((60000, 32, 32, 3), np.uint8))
    imgs.take(np.arange(32), 224).shape  # (32, 224, 224, 3)
    ```
    """

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: np.ndarray) -> "ArrayImages":
        return ArrayImages(self.images[indices])

    def take(self, indices: np.ndarray, size: int) -> np.ndarray:
        """The images at `indices`, resized to `size`, as uint8."""
        return resize_uint8(self.images[indices], size)


class EncodedImages:
    """Images held as encoded bytes (PNG, JPEG, ...), decoded per batch.

    Args:
        blobs: one encoded image per entry.

    Example:

    ```python
    imgs = EncodedImages([png_bytes, jpeg_bytes])
    imgs.take(np.array([1]), 64).shape  # (1, 64, 64, 3)
    ```
    """

    def __init__(self, blobs: Sequence[bytes]):
        self.blobs = list(blobs)

    def __len__(self) -> int:
        return len(self.blobs)

    def subset(self, indices: np.ndarray) -> "EncodedImages":
        return EncodedImages([self.blobs[i] for i in indices])

    def take(self, indices: np.ndarray, size: int) -> np.ndarray:
        """The images at `indices`, decoded and resized to `size`."""
        return _decode_resized(
            [io.BytesIO(self.blobs[i]) for i in indices], size)


class FileImages:
    """Images read from files (any format PIL reads) when a batch needs them."""

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: np.ndarray) -> "FileImages":
        return FileImages([self.paths[i] for i in indices])

    def take(self, indices: np.ndarray, size: int) -> np.ndarray:
        """The images at `indices`, read and resized to `size`."""
        return _decode_resized([self.paths[i] for i in indices], size)


@dataclass
class Split:
    """One split: images plus integer labels."""

    images: ArrayImages | EncodedImages | FileImages
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> "Split":
        indices = np.asarray(indices)
        return Split(self.images.subset(indices), self.labels[indices])


@dataclass
class DataSplits:
    """Train, validation and test splits of one labelled image set.

    Attributes:
        train, validation, test: the splits (`validation` may be empty).
        class_names: one name per label, in label order.
        description: where the data came from, for the run record.
    """

    train: Split
    validation: Split | None
    test: Split
    class_names: list[str]
    description: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

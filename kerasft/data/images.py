"""Image sets held as uint8 arrays or as files read on demand."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

# Resize a whole in-memory set once when the result stays below this size;
# bigger sets are resized batch by batch.
_PRERESIZE_LIMIT_BYTES = 1 << 30


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of uint8 images (N, H, W, 3) to (N, size, size, 3)."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    from PIL import Image

    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = np.asarray(
            Image.fromarray(img).resize((size, size), Image.BILINEAR)
        )
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
    """Images already in memory as one uint8 array (N, H, W, 3)."""

    def __init__(self, images: np.ndarray):
        self.images = images
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: np.ndarray) -> "ArrayImages":
        return ArrayImages(self.images[indices])

    def take(self, indices: np.ndarray, size: int) -> np.ndarray:
        """The images at `indices`, resized to `size`, as uint8."""
        if size not in self._cache:
            n, h, w, c = self.images.shape
            if (h, w) == (size, size):
                self._cache[size] = self.images
            elif n * size * size * c <= _PRERESIZE_LIMIT_BYTES:
                self._cache[size] = resize_uint8(self.images, size)
        if size in self._cache:
            return self._cache[size][indices]
        return resize_uint8(self.images[indices], size)


class FileImages:
    """Images read from files (any format PIL reads) when a batch needs them."""

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: np.ndarray) -> "FileImages":
        return FileImages([self.paths[i] for i in indices])

    def take(self, indices: np.ndarray, size: int) -> np.ndarray:
        from PIL import Image

        out = np.empty((len(indices), size, size, 3), dtype=np.uint8)
        for k, i in enumerate(indices):
            with Image.open(self.paths[i]) as img:
                out[k] = np.asarray(
                    img.convert("RGB").resize((size, size), Image.BILINEAR)
                )
        return out


@dataclass
class Split:
    """One split: images plus integer labels."""

    images: ArrayImages | FileImages
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

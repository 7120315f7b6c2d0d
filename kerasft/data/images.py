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

from kerasft.errors import DataError


# Float pixels of a [0, 255] set: at least this share of values is above 1
# (natural images: ~99%; MNIST-like dark images: ~19%). Below it, values
# just above 1 are [0, 1] data that overshoots, not a [0, 255] set.
MIN_BYTE_SCALE_SHARE = 0.01
# Rows converted at a time, so checking and converting a float set never
# holds more than this many images in a temporary float copy.
_CHUNK = 1024


def _first_image(mask: np.ndarray) -> int:
    """The first image (axis 0) where `mask` holds."""
    return int(np.argmax(mask.reshape(len(mask), -1).any(axis=1)))


def _float_scale(images: np.ndarray, name: str) -> float:
    """255 for [0, 1] float pixels, 1 for [0, 255]; a DataError otherwise.

    Never clips, never drops: a value outside the documented ranges (or
    NaN/inf) stops the run naming the array and the image.
    """
    lo, hi, nonfinite, above_one, first_bad = np.inf, -np.inf, 0, 0, None
    for start in range(0, len(images), _CHUNK):
        part = images[start : start + _CHUNK]
        bad = ~np.isfinite(part)
        if bad.any():
            nonfinite += int(bad.sum())
            if first_bad is None:
                first_bad = start + _first_image(bad)
            continue
        lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
        above_one += int(np.count_nonzero(part > 1.0))
    if nonfinite:
        raise DataError(
            f"{name}: {nonfinite} pixel value(s) are NaN or infinite (first "
            f"in image {first_bad}). kerasft does not guess pixels: fix or "
            "remove those images."
        )
    if lo >= 0 and hi <= 1:
        return 255.0
    if lo >= 0 and hi <= 255:
        share = above_one / max(images.size, 1)
        if share < MIN_BYTE_SCALE_SHARE:
            idx = _first_image(images > 1.0)
            raise DataError(
                f"{name}: float pixels look like [0, 1] data, but "
                f"{above_one} value(s) ({share:.3%}) are above 1 (max "
                f"{hi:g}, first in image {idx}), and kerasft does not clip. "
                "Clip them yourself (np.clip(x, 0, 1)) if that is right, or "
                "give [0, 255] or uint8 images."
            )
        return 1.0
    raise DataError(
        f"{name}: float pixels must lie in [0, 1] or [0, 255]. Received "
        f"values in [{lo:g}, {hi:g}]. Rescale them first, e.g. (x + 1) / 2 "
        "for [-1, 1] data, or give uint8 images."
    )


def _from_16_bit(values: np.ndarray) -> np.ndarray:
    """16-bit pixels (65535 = white) -> uint8, rounded, never saturated."""
    return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(
        np.uint8)


def _int_to_uint8(images: np.ndarray, name: str) -> np.ndarray:
    """Integer pixels -> uint8: [0, 255] as is; 16-bit data scaled."""
    lo = int(images.min()) if images.size else 0
    hi = int(images.max()) if images.size else 0
    if lo >= 0 and hi <= 255:
        return images.astype(np.uint8)
    if images.dtype == np.uint16:
        return _from_16_bit(images)
    raise DataError(
        f"{name}: integer pixels must lie in [0, 255] (or be uint16 for "
        f"16-bit images). Received {images.dtype} values in [{lo}, {hi}]. "
        "Convert them to uint8 first."
    )


def to_rgb_uint8(images: np.ndarray, name: str = "images") -> np.ndarray:
    """Brings (N, H, W), (N, H, W, 1), (N, H, W, 3) or (N, H, W, 4) images to
    RGB uint8, by the rules of `DataConfig` (see kerasft/config.py).

    uint8 is kept; integers in [0, 255] are cast; uint16 beyond 255 is
    16-bit and scaled by 255/65535; floats in [0, 1] are scaled by 255 and
    floats in [0, 255] rounded. Anything else raises.

    Args:
        images: the pixel array.
        name: what the array is, for error messages (e.g. "x_train of
            numpy file data.npz"). Defaults to `"images"`.

    Raises:
        DataError: the shape, dtype or values break the rules; the message
            names `name`, what was received and the fix.
    """
    images = np.asarray(images)
    if images.dtype.kind not in "uif":
        raise DataError(
            f"{name}: expected numeric pixels (uint8, another integer type, "
            f"or floats). Received dtype {images.dtype}. Convert them to "
            "uint8 first."
        )
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise DataError(
            f"{name}: expected images of shape (N, H, W), (N, H, W, 1), "
            f"(N, H, W, 3) or (N, H, W, 4). Received: shape {images.shape}"
        )
    if 0 in images.shape[1:3]:
        raise DataError(
            f"{name}: images have no pixels. Received: shape {images.shape}"
        )
    if images.dtype == np.uint8:
        out = images
    elif images.dtype.kind == "f":
        scale = _float_scale(images, name)
        out = np.empty(images.shape, np.uint8)
        for start in range(0, len(images), _CHUNK):
            part = images[start : start + _CHUNK].astype(np.float64) * scale
            out[start : start + _CHUNK] = np.round(part)
    else:
        out = _int_to_uint8(images, name)
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    elif out.shape[-1] == 4:
        out = out[..., :3]
    return out


def rgb_image(img, name: str):
    """A decoded PIL image as RGB, with 16-bit and float modes scaled.

    ``convert("RGB")`` would clip 16-bit grey ("I;16", "I") and float
    ("F") pixels to 255 (a 16-bit PNG turns white); these go through the
    array rules of `to_rgb_uint8` instead. Every decode uses this.

    Args:
        img: an open PIL image.
        name: the file (or image) for error messages.
    """
    from PIL import Image

    if img.mode.startswith("I;16") or img.mode == "I":
        arr = np.asarray(img)
        if img.mode == "I":
            lo, hi = int(arr.min()), int(arr.max())
            if lo < 0 or hi > 65535:
                raise DataError(
                    f"{name}: 32-bit integer pixels in [{lo}, {hi}]; kerasft "
                    "reads 8- and 16-bit images. Convert the file to an "
                    "8- or 16-bit PNG."
                )
        return Image.fromarray(_from_16_bit(arr), "L").convert("RGB")
    if img.mode == "F":
        arr = to_rgb_uint8(np.asarray(img)[None], name)[0]
        return Image.fromarray(arr, "RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _resize_pil(img, size: int) -> np.ndarray:
    """One RGB PIL image -> (size, size, 3) uint8, bilinear (the one resize)."""
    from PIL import Image

    if img.mode != "RGB":
        img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img)


def _decode_resized(sources: list, names: list[str], size: int) -> np.ndarray:
    """Encoded images (paths or file objects) -> (N, size, size, 3) uint8."""
    from PIL import Image

    out = np.empty((len(sources), size, size, 3), dtype=np.uint8)
    for k, (source, name) in enumerate(zip(sources, names)):
        try:
            with Image.open(source) as img:
                out[k] = _resize_pil(rgb_image(img, name), size)
        except DataError:
            raise
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError...
            # Checked before the first step (kerasft.data.checks); a file
            # that broke since then still names itself.
            raise DataError(
                f"{name}: cannot decode this image ({type(e).__name__}: "
                f"{e}). It decoded when the run started; was it changed?"
            ) from None
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
        names: what to call each image in messages. Defaults to
            ``"encoded image #<index>"``.

    Example:

    ```python
    imgs = EncodedImages([png_bytes, jpeg_bytes])
    imgs.take(np.array([1]), 64).shape  # (1, 64, 64, 3)
    ```
    """

    def __init__(self, blobs: Sequence[bytes],
                 names: Sequence[str] | None = None):
        self.blobs = list(blobs)
        self.names = (list(names) if names is not None else
                      [f"encoded image #{i}" for i in range(len(self.blobs))])

    def __len__(self) -> int:
        return len(self.blobs)

    def subset(self, indices: np.ndarray) -> "EncodedImages":
        return EncodedImages([self.blobs[i] for i in indices],
                             [self.names[i] for i in indices])

    def source(self, i: int):
        """Image `i` as something `PIL.Image.open` reads."""
        return io.BytesIO(self.blobs[i])

    def take(self, indices: np.ndarray, size: int) -> np.ndarray:
        """The images at `indices`, decoded and resized to `size`."""
        return _decode_resized([self.source(i) for i in indices],
                               [self.names[i] for i in indices], size)


class FileImages:
    """Images read from files (any format PIL reads) when a batch needs them."""

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)
        self.names = self.paths

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: np.ndarray) -> "FileImages":
        return FileImages([self.paths[i] for i in indices])

    def source(self, i: int):
        """Image `i` as something `PIL.Image.open` reads."""
        return self.paths[i]

    def take(self, indices: np.ndarray, size: int) -> np.ndarray:
        """The images at `indices`, read and resized to `size`."""
        return _decode_resized([self.paths[i] for i in indices],
                               [self.paths[i] for i in indices], size)


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

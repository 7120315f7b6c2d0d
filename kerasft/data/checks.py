"""Checks of a data set before the first step: labels, and every image file.

A bad file found at the evaluation costs a whole training run; a label out
of range crashes torch at step 1 and trains jax on garbage. So labels are
checked as soon as they are read, and every encoded image the run will use
is decoded once, at native size, before the model is built: JPEGs through
Pillow's draft mode (decoded at 1/8 scale, which still reads every byte of
the stream, so truncated files fail), other formats fully. Nothing is kept:
memory stays at the set's native storage. Threads run the decodes (Pillow
releases the GIL), and large sets print progress.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from kerasft.data.images import EncodedImages, FileImages, Split, rgb_image
from kerasft.errors import DataError

# Sets at least this large print progress while their images are checked.
PROGRESS_MIN_IMAGES = 2000
# Seconds between progress lines.
PROGRESS_EVERY_S = 5.0
# Bad files named in one error message; the rest are counted.
MAX_NAMED = 5


def check_labels(
    labels, name: str, num_classes: int | None = None
) -> np.ndarray:
    """Integer class labels, checked; returns them as a 1-D int64 array.

    Accepted: a 1-D (or (N, 1)) array of integers, or of whole-number
    floats, all in [0, num_classes). Refused, with a message naming the
    problem and the fix: strings or objects, booleans, fractions, NaN,
    negative labels, labels beyond the class names, one-hot rows.

    Args:
        labels: the labels as read.
        name: what they are, for messages (e.g. "y_train of data.npz").
        num_classes: the number of class names, if known. Defaults to
            `None` (no upper bound beyond the labels themselves).

    Raises:
        DataError: the labels break a rule above.
    """
    y = np.asarray(labels)
    if y.dtype.kind in "USOV":
        example = y.reshape(-1)[0] if y.size else ""
        raise DataError(
            f"{name}: expected integer class labels 0..K-1. Received "
            f"{'strings' if y.dtype.kind in 'US' else 'objects'} (e.g. "
            f"{str(example)[:40]!r}). Map each class to an integer and "
            "pass the names as class_names."
        )
    if y.dtype.kind == "b":
        raise DataError(
            f"{name}: expected integer class labels 0..K-1. Received "
            "booleans. Convert them: y.astype(int)."
        )
    if y.dtype.kind not in "iuf":
        raise DataError(
            f"{name}: expected integer class labels. Received dtype "
            f"{y.dtype}."
        )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2 and y.shape[1] > 1:
        onehot = bool(np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all())
        raise DataError(
            f"{name}: expected one integer label per image (shape (N,)). "
            f"Received shape {y.shape}"
            + ("; these look like one-hot rows: pass y.argmax(axis=1)."
               if onehot else ".")
        )
    if y.ndim != 1:
        raise DataError(
            f"{name}: expected one integer label per image (shape (N,)). "
            f"Received shape {y.shape}."
        )
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{name}: expected integer class labels. Received float "
                f"labels with fractions or NaN ({int(bad.sum())} of "
                f"{len(y)}, e.g. {y[i].item()!r} at index {i}); kerasft "
                "does not round labels. Give integer labels."
            )
    if y.size and y.min() < 0:
        i = int(np.argmax(y < 0))
        raise DataError(
            f"{name}: class labels must be 0 or more. Received "
            f"{y[i].item()!r} at index {i} ({int((y < 0).sum())} negative "
            "labels)."
        )
    y = y.astype(np.int64)
    if num_classes is not None and y.size and y.max() >= num_classes:
        i = int(np.argmax(y >= num_classes))
        raise DataError(
            f"{name}: labels must be below the number of classes "
            f"({num_classes}). Received {int(y[i])} at index {i} "
            f"({int((y >= num_classes).sum())} such labels). Add the "
            "missing class names, or fix the labels."
        )
    return y


def _decode_check(images, i: int) -> str | None:
    """Decodes image `i` at native size; None if fine, else the reason."""
    from PIL import Image

    try:
        with Image.open(images.source(i)) as img:
            img.draft("RGB", (1, 1))  # JPEG: 1/8-scale decode, every byte
            img.load()
            rgb_image(img, images.names[i])
    except DataError as e:
        return _one_line(str(e).removeprefix(f"{images.names[i]}: "))
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError...
        return _one_line(f"{type(e).__name__}: {e}")
    return None


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def check_images(
    split: Split, what: str, on_bad: str = "fail", workers: int = 1
) -> Split:
    """Decodes every encoded image of `split` once; returns the split.

    In-memory arrays (`ArrayImages`) were checked when they were converted
    and pass through.

    Args:
        split: a split whose images may be files or encoded bytes.
        what: the split and set, for messages ("train split of ...").
        on_bad: `fail` raises naming the bad files; `skip` prints a
            warning naming each bad file and returns the split without
            them. Defaults to `"fail"`.
        workers: decoding threads. Defaults to `1`.

    Returns:
        The split, without the bad images under `skip`.

    Raises:
        DataError: bad images under `fail`, or none left under `skip`.
    """
    images = split.images
    if not isinstance(images, (FileImages, EncodedImages)) or not len(split):
        return split
    n = len(images)
    t0 = last = time.perf_counter()
    loud = n >= PROGRESS_MIN_IMAGES
    if loud:
        print(f"kerasft: checking the {n:,} images of the {what} (each is "
              "decoded once, at native size) ...", flush=True)
    reasons: list[str | None] = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for reason in pool.map(lambda i: _decode_check(images, i), range(n),
                               chunksize=64):
            reasons.append(reason)
            now = time.perf_counter()
            if loud and now - last >= PROGRESS_EVERY_S:
                last = now
                print(f"kerasft: checked {len(reasons):,}/{n:,} images "
                      f"({now - t0:.0f} s)", flush=True)
    bad = [i for i, r in enumerate(reasons) if r is not None]
    if loud:
        print(f"kerasft: checked {n:,} images in "
              f"{time.perf_counter() - t0:.1f} s, {len(bad)} unreadable",
              flush=True)
    if not bad:
        return split
    if on_bad == "skip":
        for i in bad:
            print(f"kerasft: warning: skipping {images.names[i]}: "
                  f"{reasons[i]} (data.on_bad_image: skip)", flush=True)
        kept = np.setdiff1d(np.arange(n), bad)
        if not len(kept):
            raise DataError(
                f"every one of the {n} images of the {what} is unreadable "
                f"(e.g. {images.names[bad[0]]}: {reasons[bad[0]]})."
            )
        return split.subset(kept)
    named = "; ".join(f"{images.names[i]} ({reasons[i]})"
                      for i in bad[:MAX_NAMED])
    more = f"; and {len(bad) - MAX_NAMED} more" if len(bad) > MAX_NAMED else ""
    raise DataError(
        f"{len(bad)} of the {n} images of the {what} cannot be decoded: "
        f"{named}{more}. Fix or remove them, or set data.on_bad_image: skip "
        "(--set data.on_bad_image=skip) to train without them."
    )

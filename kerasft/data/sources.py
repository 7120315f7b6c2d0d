"""Data sources: tensorflow-datasets, image folders, .npz arrays, built-ins.

Each source returns a `DataSplits` with uint8 RGB images and integer labels.
Where a set lacks a validation (or test) split, one is carved from the
training split by the run seed, stratified by class, so every backend gets
the same split. tensorflow-datasets is imported here and nowhere else.
"""

from __future__ import annotations

import os
import socket
import zipfile
from pathlib import Path

import numpy as np

from kerasft.config import DataConfig
from kerasft.data.checks import check_images, check_labels
from kerasft.data.batches import default_workers
from kerasft.data.images import (
    ArrayImages,
    DataSplits,
    EncodedImages,
    FileImages,
    Split,
    to_rgb_uint8,
)
from kerasft.errors import ConfigError, DataError, DownloadError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif"}
# Share of a set without a test split that is held out for testing.
TEST_FRACTION = 0.2


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int, salt: int
) -> tuple[np.ndarray, np.ndarray]:
    """Splits indices into (kept, held_out), `fraction` of each class held out.

    Args:
        labels: integer labels.
        fraction: share of each class to hold out.
        seed: the run seed.
        salt: separates independent splits made with the same seed.

    Returns:
        Two sorted index arrays.
    """
    rng = np.random.default_rng([seed, salt])
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n = int(round(fraction * len(idx)))
        held.append(idx[:n])
    held = np.sort(np.concatenate(held)) if held else np.array([], int)
    kept = np.setdiff1d(np.arange(len(labels)), held)
    return kept, held


def _cap(split: Split, limit: int | None, seed: int, salt: int) -> Split:
    if limit is None or len(split) <= limit:
        return split
    rng = np.random.default_rng([seed, salt])
    return split.subset(np.sort(rng.permutation(len(split))[:limit]))


def _carve(split: Split, fraction: float, seed: int, salt: int,
           description: str, what: str, fix: str) -> tuple[Split, Split]:
    """Holds out `fraction` of each class; refuses a split too small for it
    (a run needs a test split to report on)."""
    kept, held = stratified_split(split.labels, fraction, seed, salt)
    if len(held) == 0 or len(kept) == 0:
        raise DataError(
            f"{description}: {len(split)} images are too few to hold out "
            f"{what} ({fraction:.0%} of each class, rounded, would hold out "
            f"{'no image' if len(held) == 0 else 'every image'}). Give more "
            f"images (at least 3 of a class), or {fix}."
        )
    return split.subset(kept), split.subset(held)


def select_classes(
    wanted: list, class_names: list[str], train: Split,
    validation: Split | None, test: Split | None, description: str,
) -> tuple[Split, Split | None, Split | None, list[str], str]:
    """Keeps the images of the `wanted` classes, labelled 0..k-1.

    Args:
        wanted: class names (``data.classes``); a number is read as its
            name (``5`` is the class named ``"5"``).
        class_names: the set's names, in label order.
        train, validation, test: the splits (validation and test may be
            None).
        description: the set, for messages.

    Returns:
        ``(train, validation, test, names, note)``: the splits with new
        labels in the order of `wanted`, the kept classes' own names in
        that order, and a note for the data description.

    Raises:
        ConfigError: a name the set does not have.
    """
    index = {name: i for i, name in enumerate(class_names)}
    names = [str(c) for c in wanted]
    unknown = [n for n in names if n not in index]
    if unknown:
        shown = ", ".join(class_names[:20]) + (
            f" ... ({len(class_names)} in all)" if len(class_names) > 20
            else "")
        raise ConfigError(
            f"data.classes: {unknown[0]!r} is not a class of {description}. "
            f"Received: {wanted}. Its classes (by name) are: {shown}."
        )
    # old label -> new label; -1 for the classes left out
    relabel = np.full(len(class_names), -1, np.int64)
    relabel[[index[n] for n in names]] = np.arange(len(names))

    def keep(split: Split | None) -> Split | None:
        if split is None:
            return None
        new = relabel[split.labels]
        idx = np.flatnonzero(new >= 0)
        return Split(split.images.subset(idx), new[idx])

    note = (f"; classes {', '.join(names)} of {len(class_names)}, "
            f"relabelled 0-{len(names) - 1}")
    return keep(train), keep(validation), keep(test), names, note


def per_class_cap(split: Split, per_class: int, seed: int,
                  class_names: list[str], description: str) -> Split:
    """`per_class` images of each class, drawn by seed (``data.train_per_class``).

    Raises:
        ConfigError: a class with fewer training images than `per_class`.
    """
    counts = np.bincount(split.labels, minlength=len(class_names))
    short = int(np.argmin(counts))
    if counts[short] < per_class:
        raise ConfigError(
            f"data.train_per_class: {per_class} is more than the "
            f"{counts[short]} training images of class "
            f"{class_names[short]!r} in {description}. Give at most "
            f"{counts[short]}, or null for every image."
        )
    rng = np.random.default_rng([seed, 6])
    kept = []
    for c in range(len(class_names)):
        idx = np.flatnonzero(split.labels == c)
        kept.append(idx[rng.permutation(len(idx))[:per_class]])
    return split.subset(np.sort(np.concatenate(kept)))


def _finish(
    cfg: DataConfig,
    seed: int,
    train: Split,
    validation: Split | None,
    test: Split | None,
    class_names: list[str],
    description: str,
) -> DataSplits:
    source = description  # messages name the set, not the carving notes
    given = {"train": train, "validation": validation, "test": test}
    for name, split in given.items():
        if split is not None:
            check_labels(split.labels, f"{name} labels of {description}",
                         len(class_names))
    if len(train) == 0:
        raise DataError(f"the training split of {description} is empty.")
    if test is None and (cfg.classes is not None
                         or cfg.train_per_class is not None):
        # Carved from the whole set, before classes are picked and labels
        # capped: a run on other classes of the same set (a pretraining)
        # never trained on these test images, and the test split is every
        # test image of the chosen classes.
        train, test = _carve(
            train, TEST_FRACTION, seed, 1, description, "a test split",
            "give a test split (x_test/y_test, a test/ folder)")
        description += f"; test = {TEST_FRACTION:.0%} of the set, by seed"
    if cfg.classes is not None:
        train, validation, test, class_names, note = select_classes(
            cfg.classes, class_names, train, validation, test, source)
        description += note
    if cfg.train_per_class is not None:
        train = per_class_cap(train, cfg.train_per_class, seed, class_names,
                              source)
        description += (f"; {cfg.train_per_class} labelled images per class"
                        ", by seed")
    if len(np.unique(train.labels)) < 2:
        raise DataError(
            f"{source}: the training images hold a single class "
            f"({class_names[int(train.labels[0])]!r}); a classifier needs at "
            "least 2 classes."
        )
    if test is not None and len(test) == 0:
        raise DataError(f"the test split of {description} is empty; give "
                        "test images or leave the test split out (kerasft "
                        "then holds out a test split from train).")
    if test is None:
        train, test = _carve(
            train, TEST_FRACTION, seed, 1, description, "a test split",
            "give a test split (x_test/y_test, a test/ folder)")
        description += f"; test = {TEST_FRACTION:.0%} of the set, by seed"
    if validation is None and cfg.validation_fraction > 0:
        kept, held = stratified_split(
            train.labels, cfg.validation_fraction, seed, 2)
        if len(held) == 0:
            # Training runs without validation then (as with fraction 0).
            print(f"kerasft: warning: {len(train)} training images are too "
                  f"few to hold out {cfg.validation_fraction:.0%} of each "
                  "class for validation; training without a validation "
                  "split.", flush=True)
        train, validation = train.subset(kept), train.subset(held)
        description += (
            f"; validation = {cfg.validation_fraction:.0%} of train, by seed"
        )
    train = _cap(train, cfg.max_train_images, seed, 3)
    test = _cap(test, cfg.max_test_images, seed, 4)
    if validation is not None:
        validation = _cap(validation, cfg.max_test_images, seed, 5)
    # Every encoded image the run will use is decoded once now, so a bad
    # file stops the run before the model is built, not at the evaluation.
    workers = cfg.workers or default_workers()
    train = check_images(train, f"train split of {source}",
                         cfg.on_bad_image, workers)
    test = check_images(test, f"test split of {source}",
                        cfg.on_bad_image, workers)
    if validation is not None:
        validation = check_images(
            validation, f"validation split of {source}",
            cfg.on_bad_image, workers)
    return DataSplits(train, validation, test, class_names, description)


# ---------------------------------------------------------------- builtin


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """scikit-learn's 1,797 handwritten digits as RGB uint8 8x8 images."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError(
            "data.source builtin needs scikit-learn, which ships the digits "
            "images. Install it: pip install scikit-learn"
        ) from None
    digits = load_digits()
    # Pixel values are 0-16 ink levels; scale to 0-255 and invert so the
    # digits are dark on white like ordinary photographs of handwriting.
    gray = 255 - np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return to_rgb_uint8(gray), digits.target.astype(np.int64), [
        str(i) for i in range(10)
    ]


def _load_builtin(cfg: DataConfig, seed: int) -> DataSplits:
    images, labels, names = load_digits_arrays()
    split = Split(ArrayImages(images), labels)
    return _finish(
        cfg, seed, split, None, None, names,
        "scikit-learn digits (1,797 8x8 grayscale images, upscaled to RGB)",
    )


# ---------------------------------------------------------------- numpy


def splits_from_arrays(
    cfg: DataConfig,
    seed: int,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    class_names: list[str] | None = None,
    description: str = "numpy arrays",
) -> DataSplits:
    """Builds splits from in-memory arrays (the `numpy` source).

    Args:
        cfg: the data config (for validation fraction and caps).
        seed: the run seed.
        x_train, y_train: images (N, H, W[, C]) and integer labels.
        x_test, y_test: a test split; carved from train when absent.
        class_names: label names. Defaults to the label numbers.
        description: where the arrays came from.

    Returns:
        A `DataSplits`.
    """
    if (x_test is None) != (y_test is None):
        given, missing = ("x_test", "y_test") if y_test is None else (
            "y_test", "x_test")
        raise DataError(
            f"{description}: {given} is given without {missing}. Give both "
            "(a test split), or neither (kerasft then holds out a test "
            "split from train)."
        )
    x_train = to_rgb_uint8(x_train, f"x_train of {description}")
    x_test = (None if x_test is None else
              to_rgb_uint8(x_test, f"x_test of {description}"))
    known = None if class_names is None else len(class_names)
    y_train = check_labels(y_train, f"y_train of {description}", known)
    if len(y_train) != len(x_train):
        raise DataError(
            f"{description}: x_train has {len(x_train)} images but y_train "
            f"has {len(y_train)} labels; they must match."
        )
    if not len(y_train):
        raise DataError(f"{description}: x_train holds no images.")
    n_classes = int(y_train.max()) + 1
    test = None
    if x_test is not None:
        y_test = check_labels(y_test, f"y_test of {description}", known)
        if len(y_test) != len(x_test):
            raise DataError(
                f"{description}: x_test has {len(x_test)} images but y_test "
                f"has {len(y_test)} labels; they must match."
            )
        if len(y_test):
            n_classes = max(n_classes, int(y_test.max()) + 1)
        test = Split(ArrayImages(x_test), y_test)
    names = class_names or [str(i) for i in range(n_classes)]
    return _finish(
        cfg, seed, Split(ArrayImages(x_train), y_train), None, test,
        list(names), description,
    )


def _load_npz(cfg: DataConfig, seed: int) -> DataSplits:
    path = Path(os.path.expanduser(cfg.path or ""))
    if not path.is_file():
        raise ConfigError(
            f"data.path: expected a .npz file with x_train and y_train "
            f"(optionally x_test, y_test, class_names). Received: "
            f"{cfg.path!r} (no such file)"
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            files = list(getattr(f, "files", []))
            missing = {"x_train", "y_train"} - set(files)
            if missing:
                raise DataError(
                    f"{path}: expected arrays x_train and y_train. Missing: "
                    f"{', '.join(sorted(missing))}. Found: "
                    f"{', '.join(files) or 'none'}"
                )
            arrays = {k: f[k] for k in files}
    except DataError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise DataError(
                f"{path}: holds an object (pickled) array; kerasft loads no "
                "pickles. Save plain numeric arrays (np.savez(path, "
                "x_train=..., y_train=...)), class names as a string array."
            ) from None
        raise DataError(
            f"{path}: not a readable .npz file ({e}). Save the arrays with "
            "np.savez(path, x_train=..., y_train=...)."
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(
            f"{path}: not a readable .npz file ({type(e).__name__}: {e}). "
            "Save the arrays with np.savez(path, x_train=..., y_train=...)."
        ) from None
    names = arrays.get("class_names")
    if names is not None and names.ndim != 1:
        raise DataError(
            f"{path}: class_names must be a 1-D array of names. Received "
            f"shape {names.shape}."
        )
    return splits_from_arrays(
        cfg, seed, arrays["x_train"], arrays["y_train"],
        arrays.get("x_test"), arrays.get("y_test"),
        None if names is None else [str(n) for n in names],
        description=f"numpy file {path}",
    )


# ---------------------------------------------------------------- folder


def _scan_classes(root: Path) -> tuple[list[str], list[str], np.ndarray]:
    classes = sorted(
        d.name for d in root.iterdir()
        if d.is_dir() and not d.name.startswith(".")
    )
    paths, labels = [], []
    for label, name in enumerate(classes):
        for f in sorted((root / name).rglob("*")):
            if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file():
                paths.append(str(f))
                labels.append(label)
    return classes, paths, np.asarray(labels, dtype=np.int64)


def _load_folder(cfg: DataConfig, seed: int) -> DataSplits:
    root = Path(os.path.expanduser(cfg.path or ""))
    if not root.is_dir():
        raise ConfigError(
            "data.path: expected a folder with one sub-folder of images per "
            f"class. Received: {cfg.path!r} (no such folder)"
        )
    splits = {}
    if (root / "train").is_dir():
        for name in ("train", "validation", "test"):
            if (root / name).is_dir():
                splits[name] = _scan_classes(root / name)
    else:
        splits["train"] = _scan_classes(root)
    classes, paths, labels = splits["train"]
    if len(classes) < 2 or len(set(labels.tolist())) < 2:
        raise DataError(
            f"{root}: expected at least two class sub-folders holding images "
            f"({', '.join(sorted(IMAGE_EXTENSIONS))}). Found {len(classes)} "
            f"class folder(s) and {len(paths)} image(s) in "
            f"{len(set(labels.tolist()))} of them."
        )
    out = {}
    for name, (names, p, y) in splits.items():
        if names != classes:
            raise DataError(
                f"{root / name}: expected the same class folders as "
                f"{root / 'train'} ({', '.join(classes)}). Received: "
                f"{', '.join(names)}"
            )
        out[name] = Split(FileImages(p), y)
    return _finish(
        cfg, seed, out["train"], out.get("validation"), out.get("test"),
        classes, f"image folder {root} ({len(classes)} classes)",
    )


# ---------------------------------------------------------------- tfds


def network_available(host: str = "storage.googleapis.com") -> bool:
    """True if `host` answers on port 443 within 3 s (or a proxy is set).

    tensorflow-datasets retries a failing download for minutes; this check
    lets kerasft say "offline" within seconds instead.
    """
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy")):
        return True
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError(
            "data.source tfds needs tensorflow-datasets and tensorflow. "
            "Install them: pip install 'kerasft[tfds]' (or "
            "pip install tensorflow-datasets tensorflow-cpu)"
        ) from None
    return tfds


# Examples per read of a tfds split: big enough that the per-batch Python
# cost vanishes, small enough that a batch of encoded photos stays small.
_TFDS_READ_BATCH = 1024


def _tfds_split(tfds, builder, split: str) -> Split | None:
    """One tfds split at native size: uint8 pixels or encoded bytes.

    A set whose images share one shape (CIFAR-10's 32x32x3, MNIST's
    28x28x1) is decoded once, by tf.data in parallel, into one uint8 array
    of that shape. A set of differently sized images (tf_flowers, food101)
    keeps each image's encoded bytes (`SkipDecoding`) and decodes it per
    batch. Nothing is resized here: `Batches` resizes per batch.
    """
    image = builder.info.features["image"]
    fixed = all(d is not None for d in image.shape)
    decoders = None if fixed else {"image": tfds.decode.SkipDecoding()}
    ds = builder.as_dataset(
        split=split, shuffle_files=False, batch_size=_TFDS_READ_BATCH,
        decoders=decoders,
    )
    images, labels = [], []
    for ex in tfds.as_numpy(ds):
        images.append(ex["image"] if fixed else list(ex["image"]))
        labels.append(ex["label"])
    if not labels:
        return None
    labels = np.concatenate(labels).astype(np.int64)
    if not fixed:
        blobs = [b for part in images for b in part]
        return Split(EncodedImages(
            blobs, [f"{split} example #{i}" for i in range(len(blobs))]),
            labels)
    # Concatenate part by part into one array, freeing each part as it is
    # copied, so the peak stays near one copy of the native-size set.
    out = np.empty((len(labels), *images[0].shape[1:3], 3), np.uint8)
    start = 0
    while images:
        part = to_rgb_uint8(images.pop(0), f"{split} split")
        out[start : start + len(part)] = part
        start += len(part)
    return Split(ArrayImages(out), labels)


def _load_tfds(cfg: DataConfig, seed: int) -> DataSplits:
    tfds = _import_tfds()
    data_dir = os.path.expanduser(cfg.data_dir) if cfg.data_dir else None
    try:
        builder = tfds.builder(cfg.name, data_dir=data_dir)
    except Exception as e:  # tfds raises DatasetNotFoundError and others
        raise ConfigError(
            f"data.name: expected a tensorflow-datasets image classification "
            f"set (e.g. cifar10, mnist, tf_flowers). Received: {cfg.name!r} "
            f"({type(e).__name__}: {str(e).splitlines()[0][:160]})"
        ) from None
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise DataError(
            f"tensorflow-datasets set {cfg.name!r} has features "
            f"{', '.join(features.keys())}; kerasft needs 'image' and "
            "'label' (an image classification set)."
        )
    if not builder.is_prepared():
        where = builder.data_dir
        if not network_available():
            raise DownloadError(
                f"tensorflow-datasets set {cfg.name!r} is not prepared in "
                f"{where} and there is no network to download it. Run "
                f"`python -c \"import tensorflow_datasets as tfds; "
                f"tfds.load('{cfg.name}')\"` on a machine with network and "
                f"copy {where} here (or set data.data_dir), or use the "
                "offline set: --config configs/quickstart.yaml"
            )
        try:
            builder.download_and_prepare()
        except Exception as e:
            raise DownloadError(
                f"downloading tensorflow-datasets set {cfg.name!r} into "
                f"{where} failed: {type(e).__name__}: "
                f"{str(e).splitlines()[0][:200]}. Check the network, or use "
                "--config configs/quickstart.yaml to run offline."
            ) from None
    names = list(getattr(features["label"], "names", None) or [])
    if not names:
        names = [str(i) for i in range(features["label"].num_classes)]
    available = set(builder.info.splits.keys())

    def load(split_name):
        # tfds's mock data reports no splits; then any split name is served.
        if available and split_name.split("[")[0] not in available:
            raise ConfigError(
                f"data split {split_name!r} does not exist in "
                f"{cfg.name!r}. Available: {', '.join(sorted(available))}"
            )
        return _tfds_split(tfds, builder, split_name)

    print(f"kerasft: reading {cfg.name} from tensorflow-datasets ...")
    train = load(cfg.train_split)
    validation = load(cfg.validation_split) if cfg.validation_split else None
    test = load(cfg.test_split)
    if train is None:
        raise DataError(f"split {cfg.train_split!r} of {cfg.name!r} is empty.")
    return _finish(
        cfg, seed, train, validation, test, names,
        f"tensorflow-datasets {cfg.name} ({cfg.train_split}/{cfg.test_split})",
    )


def load_splits(cfg: DataConfig, seed: int) -> DataSplits:
    """Loads the configured source into train/validation/test splits.

    Args:
        cfg: the data section of the run config.
        seed: the run seed (carving splits and caps depend on it only).

    Returns:
        A `DataSplits`.

    Example:

    ```python
    splits = load_splits(DataConfig(source="builtin", name="digits"), 0)
    len(splits.train), splits.class_names
    ```
    """
    loaders = {
        "builtin": _load_builtin,
        "numpy": _load_npz,
        "folder": _load_folder,
        "tfds": _load_tfds,
    }
    return loaders[cfg.source](cfg, seed)

"""Data sources and batches: sizes, seed-fixed order, preprocessing."""

from __future__ import annotations

import numpy as np
import pytest

from kerasft.config import DataConfig
from kerasft.data import Batches, load_splits, splits_from_arrays
from kerasft.errors import ConfigError, DataError


def test_digits_splits_are_disjoint_stratified_and_seeded():
    cfg = DataConfig(source="builtin", name="digits", image_size=32)
    a = load_splits(cfg, seed=3)
    b = load_splits(cfg, seed=3)
    c = load_splits(cfg, seed=4)
    assert (len(a.train), len(a.validation), len(a.test)) == (1295, 143, 359)
    assert a.class_names == [str(i) for i in range(10)]
    np.testing.assert_array_equal(a.train.labels, b.train.labels)
    assert not np.array_equal(a.test.images.images, c.test.images.images)
    # every class is in every split, in about its share
    for split in (a.train, a.validation, a.test):
        assert set(np.unique(split.labels)) == set(range(10))
    img = a.train.images.images
    assert img.dtype == np.uint8 and img.shape[1:] == (8, 8, 3)


def test_batches_order_depends_only_on_seed_and_epoch():
    cfg = DataConfig(source="builtin", name="digits", image_size=32)
    split = load_splits(cfg, seed=0).train

    def first_labels(epoch, seed=0):
        b = Batches(split, 16, 32, "resnet50", seed, shuffle=True)
        b.set_epoch(epoch)
        return b[0][1]

    np.testing.assert_array_equal(first_labels(1), first_labels(1))
    assert not np.array_equal(first_labels(0), first_labels(1))
    assert not np.array_equal(first_labels(0), first_labels(0, seed=1))
    # a fresh object that walked through epochs agrees with set_epoch
    walker = Batches(split, 16, 32, "resnet50", 0, shuffle=True)
    walker.on_epoch_end()
    np.testing.assert_array_equal(walker[0][1], first_labels(1))


def test_batches_are_resized_and_preprocessed_like_keras_applications():
    import keras

    x = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), np.uint8)
    cfg = DataConfig(source="numpy", image_size=32, validation_fraction=0)
    splits = splits_from_arrays(cfg, 0, x, np.arange(5) % 2, x, np.arange(5) % 2)
    b = Batches(splits.test, 4, 32, "resnet50", 0)
    xb, yb = b[0]
    assert xb.shape == (4, 32, 32, 3) and xb.dtype == np.float32
    assert yb.dtype == np.int32 and len(b) == 2 and b[1][0].shape[0] == 1
    raw = b.images_uint8(0).astype(np.float32)
    # bit for bit what keras.applications gives, as a contiguous array (a
    # torch DataLoader or grain on torch refuses negative strides)
    assert xb.flags.c_contiguous
    np.testing.assert_array_equal(
        xb, keras.applications.resnet.preprocess_input(raw.copy()))
    v2 = Batches(splits.test, 4, 32, "resnet50v2", 0)[0][0]
    assert v2.flags.c_contiguous
    np.testing.assert_array_equal(
        v2, keras.applications.resnet_v2.preprocess_input(raw.copy()))


def test_max_steps_caps_an_epoch_and_augmentation_is_seeded():
    cfg = DataConfig(source="builtin", name="digits", image_size=32)
    split = load_splits(cfg, seed=0).train
    b = Batches(split, 8, 32, "resnet50", 0, shuffle=True, max_steps=3,
                flip=True, crop_pad=4)
    assert len(b) == 3
    again = Batches(split, 8, 32, "resnet50", 0, shuffle=True, max_steps=3,
                    flip=True, crop_pad=4)
    np.testing.assert_array_equal(b[2][0], again[2][0])
    plain = Batches(split, 8, 32, "resnet50", 0, shuffle=True, max_steps=3)
    assert not np.array_equal(b[2][0], plain[2][0])
    with pytest.raises(IndexError):
        b[3]


def _write_folder(root, classes, per_class=3, size=(12, 10)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (*size, 3), np.uint8)
            Image.fromarray(arr).save(root / name / f"{i}.png")


def test_image_folder_source(tmp_path):
    _write_folder(tmp_path / "imgs", ["cat", "dog", "eel"], per_class=10)
    cfg = DataConfig(source="folder", path=str(tmp_path / "imgs"),
                     image_size=32)
    s = load_splits(cfg, seed=0)
    assert s.class_names == ["cat", "dog", "eel"]
    assert len(s.train) + len(s.validation) + len(s.test) == 30
    x, y = Batches(s.train, 4, 32, "resnet50", 0)[0]
    assert x.shape == (4, 32, 32, 3)


def test_image_folder_with_train_and_test_subfolders(tmp_path):
    _write_folder(tmp_path / "d/train", ["a", "b"], per_class=5)
    _write_folder(tmp_path / "d/test", ["a", "b"], per_class=2)
    s = load_splits(DataConfig(source="folder", path=str(tmp_path / "d"),
                               image_size=32, validation_fraction=0), 0)
    assert (len(s.train), len(s.test)) == (10, 4)


def test_image_folder_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="no such folder"):
        load_splits(DataConfig(source="folder", path=str(tmp_path / "x")), 0)
    (tmp_path / "one").mkdir()
    with pytest.raises(DataError, match="at least two class"):
        load_splits(DataConfig(source="folder", path=str(tmp_path)), 0)


def test_npz_source(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz",
             x_train=rng.random((20, 9, 9)), y_train=np.arange(20) % 4,
             class_names=np.array(["w", "x", "y", "z"]))
    s = load_splits(DataConfig(source="numpy", path=str(tmp_path / "d.npz"),
                               image_size=32, validation_fraction=0), 0)
    assert s.class_names == ["w", "x", "y", "z"] and len(s.test) == 4
    np.savez(tmp_path / "bad.npz", x=np.zeros(3))
    with pytest.raises(DataError, match="x_train and y_train"):
        load_splits(DataConfig(source="numpy", path=str(tmp_path / "bad.npz")),
                    0)


def test_tfds_source_with_mock_data(tfds_mock):
    cfg = DataConfig(source="tfds", name="cifar10", image_size=32)
    with tfds_mock(num_examples=40):
        s = load_splits(cfg, seed=0)
    assert len(s.class_names) == 10  # mock data carries no label names
    # mock train and test hold the same 40 examples; validation is carved
    # from train (stratified by class, so its size depends on the labels)
    assert len(s.train) + len(s.validation) == 40 and len(s.test) == 40
    assert 1 <= len(s.validation) <= 8
    assert s.train.images.images.shape[1:] == (32, 32, 3)


def test_tfds_unknown_dataset_is_a_config_error():
    pytest.importorskip("tensorflow_datasets")
    cfg = DataConfig(source="tfds", name="no_such_set_xyz")
    with pytest.raises(ConfigError, match="data.name.*no_such_set_xyz"):
        load_splits(cfg, seed=0)


def test_tfds_offline_fails_fast_naming_the_set(tmp_path):
    import time

    pytest.importorskip("tensorflow_datasets")
    from kerasft.errors import DownloadError

    cfg = DataConfig(source="tfds", name="cifar10", data_dir=str(tmp_path))
    t = time.perf_counter()
    with pytest.raises(DownloadError) as e:
        load_splits(cfg, seed=0)
    assert time.perf_counter() - t < 30
    assert "cifar10" in str(e.value) and str(tmp_path) in str(e.value)
    assert "quickstart" in str(e.value)


def test_multi_epoch_batches_are_fixed_by_index_alone():
    """What kerasft fits: batch k is the same however it is reached."""
    cfg = DataConfig(source="builtin", name="digits", image_size=32)
    split = load_splits(cfg, seed=0).train
    many = Batches(split, 16, 32, "resnet50", 0, shuffle=True, max_steps=5,
                   epochs=3)
    assert len(many) == 15 and many.steps_per_epoch == 5
    # a later phase starting at epoch 2 sees what epoch 2 of the whole saw
    later = Batches(split, 16, 32, "resnet50", 0, shuffle=True, max_steps=5,
                    epochs=1, start_epoch=2)
    np.testing.assert_array_equal(later[3][1], many[13][1])
    # random access in any order (prefetching) gives the same batches
    backwards = [many[k][1] for k in reversed(range(15))][::-1]
    forwards = [Batches(split, 16, 32, "resnet50", 0, shuffle=True,
                        max_steps=5, epochs=3)[k][1] for k in range(15)]
    for a, b in zip(backwards, forwards):
        np.testing.assert_array_equal(a, b)
    many.on_epoch_end()  # Keras's epoch hooks do not move a fixed object
    np.testing.assert_array_equal(many[0][1], forwards[0])
    assert not np.array_equal(many[0][1], many[5][1])


def test_pixel_ranges_are_kept_or_scaled_never_clipped():
    from kerasft.data.images import to_rgb_uint8

    unit = np.array([0.0, 0.5, 1.0], np.float32).reshape(1, 1, 3)
    np.testing.assert_array_equal(to_rgb_uint8(unit)[0, 0, :, 0],
                                  [0, 128, 255])
    byte = np.array([0.0, 1.0, 254.6, 255.0]).reshape(1, 1, 4)
    np.testing.assert_array_equal(to_rgb_uint8(byte)[0, 0, :, 0],
                                  [0, 1, 255, 255])
    # uint16 beyond 255 is 16-bit: 65535 is white, mid-grey stays mid-grey
    deep = np.array([0, 32768, 65535], np.uint16).reshape(1, 1, 3)
    np.testing.assert_array_equal(to_rgb_uint8(deep)[0, 0, :, 0],
                                  [0, 128, 255])
    ints = np.array([0, 7, 255], np.int64).reshape(1, 1, 3)
    np.testing.assert_array_equal(to_rgb_uint8(ints)[0, 0, :, 0], [0, 7, 255])


def test_sixteen_bit_png_is_scaled_not_saturated(tmp_path):
    from PIL import Image

    ramp = np.linspace(0, 65535, 32 * 32).round().astype(np.uint16)
    for c in ("dark", "light"):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(5):
            img = Image.fromarray(ramp.reshape(32, 32))
            assert img.mode.startswith("I")  # 16-bit grey, as PIL reads it
            img.save(tmp_path / "d" / c / f"{i}.png")
    s = load_splits(DataConfig(source="folder", path=str(tmp_path / "d"),
                               image_size=32, validation_fraction=0), 0)
    x = s.train.images.take(np.arange(1), 32)[0, :, :, 0]
    expected = (ramp.astype(np.float64) / 257).reshape(32, 32)
    assert np.abs(x - expected).max() <= 1
    assert (x == 255).mean() < 0.01  # convert("RGB") made 97% of it 255


def test_on_bad_image_skip_names_each_file_and_drops_it(tmp_path, capsys):
    _write_folder(tmp_path / "imgs", ["cat", "dog"], per_class=10)
    (tmp_path / "imgs" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8junk")
    cfg = DataConfig(source="folder", path=str(tmp_path / "imgs"),
                     image_size=32, validation_fraction=0)
    with pytest.raises(DataError, match="broken.jpg.*on_bad_image"):
        load_splits(cfg, 0)
    cfg.on_bad_image = "skip"
    s = load_splits(cfg, 0)
    out = capsys.readouterr().out
    assert "warning: skipping" in out and "broken.jpg" in out
    paths = s.train.images.paths + s.test.images.paths
    assert len(paths) == 20 and not any("broken" in p for p in paths)


def _labelled_arrays(n_classes=4, per_class=12, n_test=3):
    """Images whose every pixel is 20 x their label, so a test can tell
    which class an image came from after relabelling."""
    y = np.repeat(np.arange(n_classes), per_class)
    yt = np.repeat(np.arange(n_classes), n_test)
    x = np.broadcast_to((y * 20).astype(np.uint8)[:, None, None, None],
                        (len(y), 8, 8, 3)).copy()
    xt = np.broadcast_to((yt * 20).astype(np.uint8)[:, None, None, None],
                         (len(yt), 8, 8, 3)).copy()
    return x, y, xt, yt


def _original_labels(split):
    return split.images.images[:, 0, 0, 0] // 20


def test_classes_are_picked_by_name_relabelled_in_listed_order():
    x, y, xt, yt = _labelled_arrays()
    cfg = DataConfig(source="numpy", image_size=32, validation_fraction=0.25,
                     classes=["c", "a"])
    s = splits_from_arrays(cfg, 0, x, y, xt, yt, ["a", "b", "c", "d"])
    # the set's own names, in the listed order; labels 0..k-1 follow it
    assert s.class_names == ["c", "a"] and s.num_classes == 2
    for split in (s.train, s.validation, s.test):
        np.testing.assert_array_equal(np.array([2, 0])[split.labels],
                                      _original_labels(split))
    # every image of the chosen classes is used: test all 2 x 3, and
    # train + validation all 2 x 12
    assert len(s.test) == 6 and len(s.train) + len(s.validation) == 24
    # a number names the class of that name (the digits are "0"-"9")
    s = splits_from_arrays(DataConfig(source="numpy", image_size=32,
                                      classes=[3, 1]), 0, x, y, xt, yt)
    assert s.class_names == ["3", "1"]


def test_train_per_class_is_seeded_and_counts_validation_too():
    x, y, xt, yt = _labelled_arrays()
    cfg = DataConfig(source="numpy", image_size=32, validation_fraction=0.25,
                     train_per_class=8)

    def picked(seed):
        s = splits_from_arrays(cfg, seed, x + np.arange(len(x))[
            :, None, None, None].astype(np.uint8) % 20, y, xt, yt)
        return s, np.sort(s.train.images.images[:, 0, 0, 0])

    s, a = picked(0)
    # 8 labelled images per class: 6 train, 2 validate; the test split is
    # untouched
    assert np.bincount(s.train.labels).tolist() == [6] * 4
    assert np.bincount(s.validation.labels).tolist() == [2] * 4
    assert len(s.test) == len(yt)
    np.testing.assert_array_equal(a, picked(0)[1])
    assert not np.array_equal(a, picked(1)[1])


def test_digits_subset_test_split_is_the_whole_sets_test_images():
    """The 5-9 run tests on exactly the 5-9 images that a run on all the
    digits (or on 0-4) holds out: pretraining never trained on them."""
    full = load_splits(DataConfig(source="builtin", name="digits",
                                  image_size=32), seed=5)
    sub = load_splits(DataConfig(source="builtin", name="digits",
                                 image_size=32, classes=[5, 6, 7, 8, 9],
                                 train_per_class=20), seed=5)
    keep = full.test.labels >= 5
    np.testing.assert_array_equal(sub.test.images.images,
                                  full.test.images.images[keep])
    np.testing.assert_array_equal(sub.test.labels, full.test.labels[keep] - 5)
    assert sub.class_names == ["5", "6", "7", "8", "9"]
    assert len(sub.train) + len(sub.validation) == 5 * 20
    assert "classes 5, 6, 7, 8, 9 of 10" in sub.description

"""Where the model looks: Grad-CAM, saliency, the attention recorder and
`kerasft explain`, on the backend tox chose.

The planted case: a "backbone" whose channel 0 is the image's red channel
and channel 1 its green one, pooled to an 8x8 map, and a head whose class 0
reads channel 0 only and class 1 channel 1 only. An image with a red square
in one corner and a green one in the opposite corner therefore has all the
evidence for class 0 in the red square's cells and all for class 1 in the
green one's: Grad-CAM must put each class's heat there and nowhere else,
whether the backbone is flat in the model or nested under the head.
"""

from __future__ import annotations

import numpy as np
import pytest

RED = (slice(0, 8), slice(0, 8))        # pixels; cells [0:2, 0:2] of 8x8
GREEN = (slice(24, 32), slice(24, 32))  # pixels; cells [6:8, 6:8]


def _planted(how: str):
    import keras

    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(2, 1, use_bias=False, name="colour")(inp)
    x = keras.layers.ReLU(name="evidence")(x)
    x = keras.layers.AveragePooling2D(4, name="cells")(x)
    head_pool = keras.layers.GlobalAveragePooling2D(name="pool")
    head = keras.layers.Dense(2, name="head")
    if how == "flat":
        model = keras.Model(inp, head(head_pool(x)))
    else:
        backbone = keras.Model(inp, x, name="backbone")
        if how == "sequential":
            model = keras.Sequential(
                [keras.Input((32, 32, 3)), backbone, head_pool, head])
        else:  # a functional model calling the backbone as one layer
            outer = keras.Input((32, 32, 3))
            model = keras.Model(outer, head(head_pool(backbone(outer))))
    kernel = np.zeros((1, 1, 3, 2), "float32")
    kernel[0, 0, 0, 0] = kernel[0, 0, 1, 1] = 1.0
    _layer(model, "colour").set_weights([kernel])
    _layer(model, "head").set_weights(
        [np.eye(2, dtype="float32"), np.zeros(2, "float32")])
    return model


def _layer(model, name):
    from kerasft.explain.layers import flat_layers

    return next(l for l in flat_layers(model) if l.name == name)


def _images():
    x = np.zeros((2, 32, 32, 3), "float32")
    x[(slice(None), *RED, 0)] = 1.0
    x[(slice(None), *GREEN, 1)] = 1.0
    return x


@pytest.mark.parametrize("how", ["flat", "sequential", "functional"])
def test_grad_cam_highlights_the_planted_region(how):
    from kerasft.explain import default_layer, grad_cam, saliency

    model = _planted(how)
    assert default_layer(model).name == "cells"  # the last map >= 4x4
    result = grad_cam(model, _images(), [0, 1])
    assert result.layer == "cells" and result.maps.shape == (2, 8, 8)
    red, green = result.maps
    # class 0: all its evidence in the red square's 2x2 cells, none elsewhere
    assert red[0:2, 0:2].min() > 0
    assert red.sum() == pytest.approx(red[0:2, 0:2].sum(), rel=1e-6)
    assert green[6:8, 6:8].min() > 0
    assert green.sum() == pytest.approx(green[6:8, 6:8].sum(), rel=1e-6)
    # saliency: only the pixels that carry the class's colour matter
    sal = saliency(model, _images(), [0, 1])
    assert sal.shape == (2, 32, 32)
    assert sal[0][RED].min() > 0 and sal[0].sum() == pytest.approx(
        sal[0][RED].sum(), rel=1e-6)
    assert sal[1][GREEN].min() > 0 and sal[1].sum() == pytest.approx(
        sal[1][GREEN].sum(), rel=1e-6)
    # and the model is left as it was: no layer keeps the interception
    assert all("call" not in vars(l) for l in model.layers)


def test_smoothgrad_is_seeded_and_stays_on_the_evidence():
    from kerasft.explain import saliency

    model = _planted("sequential")
    a = saliency(model, _images()[:1], 0, smooth=20, seed=3)
    b = saliency(model, _images()[:1], 0, smooth=20, seed=3)
    np.testing.assert_array_equal(a, b)
    c = saliency(model, _images()[:1], 0, smooth=20, seed=4)
    assert not np.array_equal(a, c)
    # noise opens the ReLU elsewhere too, but on average the red square's
    # pixels (where the red channel is always on) dominate
    outside = np.ones((32, 32), bool)
    outside[RED] = False
    assert a[0][RED].mean() > 1.5 * a[0][outside].mean()


def test_a_nested_resnet_gives_the_flat_models_maps():
    """The "Graph disconnected" case: a keras.applications backbone nested
    under a new head gives the same maps as the same layers laid flat."""
    import keras

    from kerasft.explain import default_layer, grad_cam

    resnet = keras.applications.ResNet50(
        weights=None, include_top=False, input_shape=(32, 32, 3))
    pool = keras.layers.GlobalAveragePooling2D()
    head = keras.layers.Dense(3)
    flat = keras.Model(resnet.input, head(pool(resnet.output)))
    nested = keras.Sequential([keras.Input((32, 32, 3)), resnet, pool, head])
    assert default_layer(flat).name == default_layer(nested).name == (
        "conv3_block4_out")  # 4x4 at 32 px; conv5 is 1x1
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    a = grad_cam(flat, x, [0, 2])
    b = grad_cam(nested, x, [0, 2])
    # (before the ReLU: the random head may leave a class no positive part)
    assert a.maps.shape == (2, 4, 4) and np.abs(a.linear).max() > 0
    scale = np.abs(a.linear).max()
    np.testing.assert_allclose(b.linear, a.linear, rtol=1e-5,
                               atol=1e-6 * scale)
    np.testing.assert_allclose(b.maps, a.maps, rtol=1e-5, atol=1e-6 * scale)
    np.testing.assert_allclose(b.input_grad, a.input_grad, rtol=1e-5,
                               atol=1e-9)


def test_a_class_index_out_of_range_is_an_error_on_every_backend():
    """TensorFlow's and JAX's one_hot give an all-zero row for it: the
    map would be silently blank instead."""
    from kerasft.explain import grad_cam, saliency

    model = _planted("flat")
    with pytest.raises(ValueError, match=r"in \[0, 2\).*\[0, 2\]"):
        grad_cam(model, _images(), [0, 2])
    with pytest.raises(ValueError, match="class indices"):
        saliency(model, _images(), [-1, 0])
    assert all("call" not in vars(l) for l in model.layers)


def test_a_mixed_bfloat16_model_whose_logits_are_bfloat16():
    import keras

    from kerasft.explain import grad_cam, saliency

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = _planted("sequential")
    finally:
        keras.config.set_dtype_policy(previous)
    logits = model(_images(), training=False)
    assert keras.backend.standardize_dtype(logits.dtype) == "bfloat16"
    red = grad_cam(model, _images(), [0, 1]).maps[0]
    assert red[0:2, 0:2].min() > 0
    assert red.sum() == pytest.approx(red[0:2, 0:2].sum(), rel=1e-3)
    sal = saliency(model, _images(), [0, 1])  # the input gradient only
    assert sal.dtype == np.float32 and sal[0][RED].min() > 0


def test_layers_by_name_and_the_errors():
    import keras

    from kerasft.errors import ConfigError
    from kerasft.explain import default_layer, find_layer, grad_cam

    model = _planted("sequential")
    assert find_layer(model, "evidence").name == "evidence"
    m = grad_cam(model, _images(), [0, 1], layer="evidence").maps
    assert m.shape == (2, 32, 32)
    with pytest.raises(ConfigError, match="no layer named 'nope'"):
        find_layer(model, "nope")
    # the nested backbone by its own name: its output, the same maps as
    # the backbone's last layer
    assert find_layer(model, "backbone") is model.layers[0]
    np.testing.assert_allclose(
        grad_cam(model, _images(), [0, 1], layer="backbone").maps,
        grad_cam(model, _images(), [0, 1], layer="cells").maps, rtol=1e-6)
    with pytest.raises(ConfigError, match="height, width"):
        find_layer(model, "pool")
    with pytest.raises(ConfigError, match="height, width"):
        find_layer(model, model.layers[0].layers[0].name)  # the input
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ConfigError, match="no layer with"):
        default_layer(dense)
    # ResNet50 at 224 px: the last stage, 7x7, as in the Grad-CAM paper
    big = keras.applications.ResNet50(weights=None, include_top=False,
                                      input_shape=(224, 224, 3))
    assert default_layer(big).name == "conv5_block3_out"


def test_attention_recorder_in_a_users_own_fit(tmp_path):
    """A plain Keras callback: epoch 0 and the last epoch, every call."""
    import keras

    from kerasft.explain import grad_cam
    from kerasft.record import AttentionRecorder

    model = _planted("functional")
    x = _images()
    images = (x * 255).astype("uint8")
    start = grad_cam(model, x, [0, 1]).maps
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    rec = AttentionRecorder(tmp_path / "record", x, [0, 1], images)
    model.fit(x, np.array([0, 1]), epochs=3, verbose=0, callbacks=[rec])
    kind = tmp_path / "record" / "attention"
    assert sorted(p.name for p in kind.iterdir()) == [
        "epoch-0000.npz", "epoch-0003.npz"]
    with np.load(kind / "epoch-0000.npz") as first:
        np.testing.assert_allclose(first["cam"], start, rtol=1e-6)
        np.testing.assert_array_equal(first["cam"],
                                      np.maximum(first["cam_linear"], 0))
        assert str(first["layer"]) == "cells"
        assert first["image"].dtype == np.uint8
        assert first["saliency"].shape == (2, 32, 32)
    # a second fit (Keras numbers its epochs from 0 again): epoch 0 is not
    # recorded twice, the second fit's last epoch is
    model.fit(x, np.array([0, 1]), epochs=1, verbose=0, callbacks=[rec])
    assert sorted(p.name for p in kind.iterdir()) == [
        "epoch-0000.npz", "epoch-0001.npz", "epoch-0003.npz"]
    with np.load(kind / "epoch-0000.npz") as first:
        np.testing.assert_allclose(first["cam"], start, rtol=1e-6)


def test_recorded_run_has_attention_maps_and_the_report_shows_them(
        recorded_run):
    import json

    from kerasft import load_run

    run = load_run(recorded_run)
    kind = run.records["attention"]
    assert kind.epochs == [0, 2]  # the start and the last epoch only
    first, last = kind[0], kind[2]
    assert str(first["layer"]) == "conv3_block4_out"
    assert first["cam"].shape == (4, 4, 4)
    assert first["image"].shape == (4, 32, 32, 3)
    probe = json.loads((recorded_run / "record" / "probe.json").read_text())
    np.testing.assert_array_equal(first["labels"], probe["labels"][:4])
    assert np.isfinite(last["cam"]).all() and last["cam"].max() > 0
    page = (recorded_run / "report" / "index.html").read_text()
    assert "conv3_block4_out" in page and "src='attention.png'" in page


def _png_with_broken_chunks(path):
    """A PNG whose IDAT length is wrong: Pillow opens it, then raises
    SyntaxError ("broken PNG file") while decoding."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(
        0, 256, (40, 40, 3), dtype=np.uint8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    assert data[37:41] == b"IDAT"
    data[33:37] = (100).to_bytes(4, "big")
    path.write_bytes(bytes(data))


def _png_claiming_20000_squared_pixels(path):
    """Only a header: Pillow refuses to open it (decompression bomb)."""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))


def test_read_image_names_every_file_it_cannot_read(tmp_path):
    from kerasft.errors import DataError
    from kerasft.explain.run import read_image

    _png_with_broken_chunks(tmp_path / "broken.png")
    _png_claiming_20000_squared_pixels(tmp_path / "bomb.png")
    (tmp_path / "folder.png").mkdir()
    for name, message in [("broken.png", "SyntaxError"),
                          ("bomb.png", "too large to decode"),
                          ("folder.png", "(a folder)")]:
        with pytest.raises(DataError, match=message) as e:
            read_image(tmp_path / name, 32)
        assert name in str(e.value) and "\n" not in str(e.value)


def test_class_by_name_or_by_number_when_the_run_has_no_names():
    from kerasft.errors import ConfigError
    from kerasft.explain.run import _class_index

    assert _class_index("cat", ["dog", "cat"]) == 1
    assert _class_index("3", []) == 3  # classes numbered, as in the figure
    with pytest.raises(ConfigError, match="one of the run's classes "
                       r"\(dog, cat\). Received: '1'"):
        _class_index("1", ["dog", "cat"])
    with pytest.raises(ConfigError, match="give a number"):
        _class_index("cat", [])


def test_figure_names_never_collide_nor_overwrite_an_image(tmp_path):
    from kerasft.errors import ConfigError
    from kerasft.explain.run import _figure_paths

    a, b = tmp_path / "a", tmp_path / "b"
    names = [p.name for p in _figure_paths(
        [a / "cat.png", a / "cat-2.png", b / "cat.jpg", b / "Cat.jpg"],
        tmp_path / "out")]
    assert names == ["cat.png", "cat-2.png", "cat-3.png", "Cat-4.png"]
    # --out the images' own folder: cat.png's figure would be cat.png
    with pytest.raises(ConfigError, match="overwrite an image"):
        _figure_paths([a / "cat.png"], a)
    assert [p.name for p in _figure_paths([a / "cat.jpg"], a)] == ["cat.png"]


@pytest.fixture(scope="module")
def user_images(tmp_path_factory):
    from PIL import Image
    from sklearn.datasets import load_digits

    d = tmp_path_factory.mktemp("images")
    digits = load_digits()
    three = (255 - digits.images[3] * 16).clip(0, 255).astype("uint8")
    Image.fromarray(three).resize((100, 80)).save(d / "three.png")
    Image.fromarray(np.stack([three] * 3, -1)).resize((50, 50)).save(
        d / "three.jpg", quality=90)
    (d / "notes.png").write_text("not an image\n")
    _png_with_broken_chunks(d / "broken.png")
    _png_claiming_20000_squared_pixels(d / "bomb.png")
    return d


def test_explain_a_png_and_a_jpeg(cli, recorded_run, user_images, tmp_path):
    from PIL import Image

    out = tmp_path / "explained"
    r = cli(["explain", recorded_run, user_images / "three.png",
             user_images / "three.jpg", "--out", out, "--class", "3"])
    assert r.code == 0, r
    assert sorted(p.name for p in out.iterdir()) == [
        "three-2.npz", "three-2.png", "three.npz", "three.png"]
    for stem in ("three", "three-2"):
        with Image.open(out / f"{stem}.png") as img:
            assert img.size[0] >= 800
            assert np.asarray(img.convert("L")).std() > 5
        with np.load(out / f"{stem}.npz") as a:
            assert a["image"].shape == (32, 32, 3)  # resized as in training
            assert a["cam"].shape == (4, 4) and np.isfinite(a["cam"]).all()
            assert a["saliency"].shape == (32, 32)
            assert int(a["explained"]) == 3
            assert a["probabilities"].sum() == pytest.approx(1, abs=1e-5)
    assert "maps for 3 at conv3_block4_out" in r.out
    assert r.out.count("predicted") == 2
    assert r.out.startswith("kerasft: explaining 2 image(s)")


@pytest.mark.parametrize("argv, message", [
    (["{images}/notes.png"], "is not an image"),
    (["{images}/missing.jpg"], "no such file"),
    (["{images}/three.png", "--class", "cat"], "--class: expected one of"),
    (["{images}/three.png", "--layer", "nope"], "no layer named 'nope'"),
    (["{images}/three.png", "--out", "{images}/three.jpg"], "which is a file"),
    (["{images}/broken.png"], "cannot be decoded"),
    (["{images}/bomb.png"], "too large to decode"),
    (["{images}"], "(a folder)"),
    (["{images}/three.png", "--out", "{images}/three.jpg/sub"],
     "which is a file, not a folder"),
    (["{images}/three.png", "--out", "{images}"], "overwrite an image"),
])
def test_explain_fails_clearly(cli, recorded_run, user_images, tmp_path,
                               argv, message):
    out = tmp_path / "explained"
    argv = [a.format(images=user_images) for a in argv]
    if "--out" not in argv:
        argv += ["--out", out]
    r = cli(["explain", recorded_run, *argv])
    assert r.code == 2, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.err
    assert message in lines[0] and "Traceback" not in r.err
    assert not out.exists() or not any(out.iterdir())


def test_a_mistyped_attention_layer_fails_before_the_run(cli, tmp_path):
    r = cli(["train", "-c", "quickstart",
             "--set", "record.attention_layer=conv9_out", "--out", tmp_path])
    assert r.code == 2, r
    assert "no layer named 'conv9_out'" in r.err
    assert not any(tmp_path.iterdir())


def test_cross_backend_map_checks_are_well_conditioned():
    """The tolerance checks compare Grad-CAM before its ReLU: a map that is
    negative almost everywhere keeps a round-off-sized positive part, and
    two backends 1e-7 apart would look 100% apart after the ReLU."""
    from kerasft.compare.tolerances import (
        ATTENTION_EPOCH0_DECORRELATION,
        PROBE_GRADIENT_EPOCH0_REL,
        map_differences,
    )

    a = -np.ones((1, 4, 4))
    a[0, 0, 0] = 3e-7
    b = a.copy()
    b[0, 0, 0] = -2e-7
    rel, dec = map_differences(np.maximum(a, 0), np.maximum(b, 0))
    assert rel[0] == 1.0  # after the ReLU: all of the positive part differs
    rel, dec = map_differences(a, b)
    assert rel[0] < PROBE_GRADIENT_EPOCH0_REL
    assert dec[0] < ATTENTION_EPOCH0_DECORRELATION
    # a 1x1 map has no correlation: its relative difference stands in
    rel, dec = map_differences(np.array([[[2.0]]]), np.array([[[2.0 + 2e-3]]]))
    assert dec[0] == rel[0] == pytest.approx(1e-3, rel=1e-3)
    # truly different maps fail both checks
    rng = np.random.default_rng(0)
    rel, dec = map_differences(rng.normal(size=(1, 4, 4)),
                               rng.normal(size=(1, 4, 4)))
    assert rel[0] > PROBE_GRADIENT_EPOCH0_REL
    assert dec[0] > ATTENTION_EPOCH0_DECORRELATION


def test_report_figure_says_what_it_cannot_draw(tmp_path):
    """A diverged run: its last maps are NaN and it stopped before its last
    epoch. The figure says both instead of drawing garbage."""
    import yaml

    from kerasft import load_run
    from kerasft.record.store import write_npz
    from kerasft.render.attention import render
    from kerasft.render.base import RenderOptions

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(
        {"train": {"epochs": 5}}))
    (tmp_path / "status.json").write_text('{"state": "failed"}')
    rng = np.random.default_rng(0)
    for epoch in (0, 2):
        linear = rng.normal(size=(2, 4, 4)).astype("float32")
        if epoch == 2:
            linear[:] = np.nan
        write_npz(tmp_path / "record" / "attention" / f"epoch-000{epoch}.npz",
                  cam=np.maximum(linear, 0), cam_linear=linear,
                  saliency=np.abs(rng.normal(size=(2, 32, 32))).astype(
                      "float32"),
                  logits=rng.normal(size=(2, 3)).astype("float32"),
                  labels=np.array([1, 2]),
                  image=rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8),
                  layer=np.array("conv3_block4_out"))
    (result,) = render(load_run(tmp_path), RenderOptions())
    assert any("maps of epoch 2 are not finite" in n for n in result.notes)
    assert any("last record is of epoch 2, not the run's last epoch (5)" in n
               for n in result.notes)
    texts = [t.get_text() for ax in result.figure.axes for t in ax.texts]
    assert texts.count("not finite") == 4  # 2 images x (Grad-CAM, saliency)

"""Initial weights drawn from numpy by (seed, variable path): the same seed
gives the same start on every backend (kerasft.model.init)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from conftest import REPO
from kerasft.config import ModelConfig, load_config
from kerasft.model import build_model
from kerasft.model.init import draw, draw_initial_weights, variable_rng
from kerasft.train.runner import weights_fingerprint

# The fingerprint (env.json `initial_weights_sha256`) of the quickstart's
# start: ResNet50, 10-class head, seed 1337. Every backend's suite checks
# this one value, so together they show torch, tensorflow and jax start
# from the same weights with no flag. It changes only if the drawing rule
# in kerasft/model/init.py (or numpy's PCG64 stream) changes.
QUICKSTART_START = (
    "55c1c78d4ae953dda0f26d322fa8eaa5cadaf33b3022a8ef01410010214e2951")


def _quickstart_model():
    cfg = load_config(REPO / "configs" / "quickstart.yaml")
    return build_model(cfg.model, 10, cfg.data.image_size, seed=cfg.seed)


def test_quickstart_start_is_one_value_on_every_backend():
    first = _quickstart_model()
    assert weights_fingerprint(first) == QUICKSTART_START
    # Keras's own random state (used by dropout, a user's layers) does not
    # move the start: a second build after drawing from it is identical.
    keras.random.normal((4,), seed=3)
    keras.layers.Dense(3).build((None, 2))
    second = _quickstart_model()
    for a, b in zip(first.weights, second.weights):
        assert a.path == b.path
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                      keras.ops.convert_to_numpy(b))


def test_each_variable_depends_on_the_seed_and_its_path_only():
    m = build_model(ModelConfig(weights="none"), 3, 32, seed=7)
    v = m.get_layer("conv3_block2_2_conv").kernel
    expected = draw(m.get_layer("conv3_block2_2_conv").kernel_initializer,
                    v.shape, variable_rng(7, v.path)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), expected)
    # another seed, another start; BatchNorm keeps its constant initializers
    other = build_model(ModelConfig(weights="none"), 3, 32, seed=8)
    assert not np.array_equal(
        keras.ops.convert_to_numpy(other.get_layer("conv3_block2_2_conv")
                                   .kernel), expected)
    bn = other.get_layer("conv3_block2_2_bn")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.gamma), 1.0)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(bn.moving_variance), 1.0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.beta), 0.0)


@pytest.mark.parametrize("init", [
    keras.initializers.GlorotUniform(), keras.initializers.GlorotNormal(),
    keras.initializers.HeNormal(), keras.initializers.HeUniform(),
    keras.initializers.LecunNormal(), keras.initializers.LecunUniform(),
    keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal"),
    keras.initializers.TruncatedNormal(0.1, 0.3),
    keras.initializers.RandomNormal(-0.2, 0.05),
    keras.initializers.RandomUniform(-0.3, 0.1),
], ids=lambda i: type(i).__name__)
def test_numpy_draws_have_the_keras_initializers_distribution(init):
    shape = (3, 3, 64, 96)
    ours = draw(init, shape, variable_rng(0, "x/kernel"))
    theirs = keras.ops.convert_to_numpy(init(shape, dtype="float32"))
    assert ours.shape == shape
    assert abs(ours.mean() - theirs.mean()) < 0.02 * theirs.std() + 1e-3
    assert ours.std() == pytest.approx(theirs.std(), rel=0.02)
    # the support Keras documents: the uniform limits, the truncation at 2
    # standard deviations. Checked against the formula, not against Keras's
    # draw: Keras's torch truncated normal keeps the first of 4 normal draws
    # when all 4 fall outside (p = 0.0455**4 per entry: in 55k entries, 1
    # in 4 tensors has one beyond 2 standard deviations).
    bounds = _support(init, shape)
    if bounds is not None:
        lo, hi = bounds
        assert lo <= ours.min() and ours.max() <= hi
        # and all of it: 55k draws come within 1% of either end
        assert ours.min() < lo + 0.01 * (hi - lo)
        assert ours.max() > hi - 0.01 * (hi - lo)


def _support(init, shape):
    """[lo, hi] of the values `init` draws for a conv kernel `shape`, from
    Keras's documentation of each initializer; None when unbounded."""
    if isinstance(init, keras.initializers.RandomUniform):
        return init.minval, init.maxval
    if isinstance(init, keras.initializers.TruncatedNormal):
        return init.mean - 2 * init.stddev, init.mean + 2 * init.stddev
    if isinstance(init, keras.initializers.VarianceScaling):
        field = shape[0] * shape[1]
        fan_in, fan_out = shape[2] * field, shape[3] * field
        fan = {"fan_in": fan_in, "fan_out": fan_out}.get(
            init.mode, (fan_in + fan_out) / 2)
        var = init.scale / fan
        if init.distribution == "uniform":
            return -np.sqrt(3 * var), np.sqrt(3 * var)
        if init.distribution == "truncated_normal":
            limit = 2 * np.sqrt(var) / 0.87962566103423978
            return -limit, limit
    return None


def test_initializers_kerasft_cannot_draw_keep_keras_and_are_named(caplog):
    assert draw(keras.initializers.Orthogonal(), (4, 4),
                variable_rng(0, "x")) is None
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(
        4, kernel_initializer="orthogonal", name="odd")(inp))
    with caplog.at_level("WARNING"):
        kept = draw_initial_weights(model, seed=1)
    assert kept == ["odd/kernel"]
    assert "odd/kernel" in caplog.text and "differ across backends" in caplog.text
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("odd").bias), 0.0)


def test_a_backbone_file_gets_the_seeded_head(tmp_path):
    """A backbone-only file (ImageNet's, or one saved from keras.applications)
    loads over the draw; the new head is the seed's, as with weights none."""
    bb = keras.applications.ResNet50(include_top=False, weights=None,
                                     input_shape=(32, 32, 3))
    bb.save_weights(tmp_path / "bb.weights.h5")
    m = build_model(ModelConfig(weights=str(tmp_path / "bb.weights.h5")),
                    4, 32, seed=11)
    scratch = build_model(ModelConfig(weights="none"), 4, 32, seed=11)
    np.testing.assert_array_equal(
        bb.get_layer("conv2_block1_1_conv").get_weights()[0],
        m.get_layer("conv2_block1_1_conv").get_weights()[0])
    for a, b in zip(m.get_layer("head").get_weights(),
                    scratch.get_layer("head").get_weights()):
        np.testing.assert_array_equal(a, b)

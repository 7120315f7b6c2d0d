"""Model building, weights sources and fine-tuning plans."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from kerasft.config import ModelConfig, PlanConfig, TrainConfig
from kerasft.errors import ConfigError, DownloadError
from kerasft.model import apply_phase, build_model, make_phases, stage_of
from kerasft.model import builder


@pytest.fixture(scope="module")
def model():
    return build_model(ModelConfig(weights="none", dropout=0.1), 7, 32)


def _weights(m, name):
    return [np.asarray(w) for w in m.get_layer(name).get_weights()]


def test_head_replaces_the_imagenet_top(model):
    assert model.output_shape == (None, 7)
    names = [l.name for l in model.layers]
    assert names[-3:] == ["head_pool", "head_dropout", "head"]
    assert "predictions" not in names and "conv5_block3_out" in names


def test_stage_names():
    assert stage_of("conv1_conv") == 1 and stage_of("pool1_pool") == 1
    assert stage_of("conv4_block6_2_bn") == 4
    assert stage_of("post_bn") == 5 and stage_of("head") == "head"
    assert stage_of("input_layer") is None


def test_head_plan_freezes_backbone_and_batchnorm(model):
    (phase,) = make_phases(PlanConfig(kind="head"), TrainConfig(epochs=2))
    counts = apply_phase(model, phase, "inference")
    trainable = {l.name for l in model.layers if l.trainable and l.weights}
    assert trainable == {"head"}
    assert counts["trainable"] == 2048 * 7 + 7


def test_phased_plan_unfreezes_top_stages_keeping_bn_in_inference(model):
    phases = make_phases(PlanConfig(kind="phased", head_epochs=1, unfreeze=2),
                         TrainConfig(epochs=3))
    assert [(p.name, p.epochs) for p in phases] == [("head", 1),
                                                     ("finetune", 2)]
    assert phases[1].lr_factor == 0.1
    apply_phase(model, phases[1], "inference")
    on = {l.name for l in model.layers if l.trainable and l.weights}
    assert "conv5_block3_3_conv" in on and "conv4_block1_1_conv" in on
    assert "conv3_block4_3_conv" not in on and "conv1_conv" not in on
    assert not any(n.endswith("_bn") for n in on)
    apply_phase(model, phases[1], "train")
    on = {l.name for l in model.layers if l.trainable and l.weights}
    assert "conv5_block3_3_bn" in on and "conv3_block1_1_bn" not in on


def test_bn_momentum_override():
    import keras

    m = build_model(ModelConfig(weights="none", bn_momentum=0.9), 3, 32)
    bns = [l for l in m.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and all(l.momentum == 0.9 for l in bns)


def test_weights_file_whole_model_and_backbone(model, tmp_path):
    import keras

    whole = tmp_path / "whole.weights.h5"
    model.save_weights(whole)
    m2 = build_model(ModelConfig(weights=str(whole), dropout=0.1), 7, 32)
    for name in ("conv1_conv", "conv4_block2_2_bn", "head"):
        for a, b in zip(_weights(model, name), _weights(m2, name)):
            np.testing.assert_array_equal(a, b)
    # A backbone-only file (e.g. saved from keras.applications) fits any head.
    bb = keras.applications.ResNet50(include_top=False, weights=None,
                                     input_shape=(32, 32, 3))
    bb.save_weights(tmp_path / "bb.weights.h5")
    m3 = build_model(ModelConfig(weights=str(tmp_path / "bb.weights.h5")),
                     4, 32)
    np.testing.assert_array_equal(_weights(bb, "conv2_block1_1_conv")[0],
                                  _weights(m3, "conv2_block1_1_conv")[0])


def test_weights_file_that_does_not_fit_is_a_config_error(tmp_path):
    import keras

    other = keras.applications.ResNet50V2(include_top=False, weights=None,
                                          input_shape=(32, 32, 3))
    other.save_weights(tmp_path / "v2.weights.h5")
    with pytest.raises(ConfigError, match="v2.weights.h5"):
        build_model(ModelConfig(weights=str(tmp_path / "v2.weights.h5")), 3, 32)


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    from keras.src.backend import config as keras_config

    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path / "kh"))
    (tmp_path / "kh" / "models").mkdir(parents=True)
    return tmp_path / "kh"


def test_imagenet_offline_names_file_place_and_alternatives(keras_home):
    import time

    t = time.perf_counter()
    with pytest.raises(DownloadError) as e:
        build_model(ModelConfig(weights="imagenet"), 10, 32)
    assert time.perf_counter() - t < 30
    msg = str(e.value)
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in msg
    assert str(keras_home / "models") in msg
    assert "--weights none" in msg and "--weights PATH" in msg


def _standin_imagenet_file(path):
    """A weights=None ResNet50 saved in the legacy format of Keras's file."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    bb = keras.applications.ResNet50(include_top=False, weights=None,
                                     input_shape=(32, 32, 3))
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, bb)
    return bb


def test_imagenet_weights_load_from_where_keras_caches_them(
    keras_home, monkeypatch
):
    """A stand-in file in Keras's cache, with its checksum registered."""
    from keras.src.applications import resnet

    path = keras_home / "models" / builder.imagenet_weights_file("resnet50")
    standin = _standin_imagenet_file(path)
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    top, _ = resnet.WEIGHTS_HASHES["resnet50"]
    monkeypatch.setitem(resnet.WEIGHTS_HASHES, "resnet50", (top, md5))
    m = build_model(ModelConfig(weights="imagenet"), 10, 32)
    for name in ("conv1_conv", "conv5_block3_3_bn"):
        for a, b in zip(_weights(standin, name), _weights(m, name)):
            np.testing.assert_array_equal(a, b)


def test_legacy_imagenet_format_file_through_weights_path(tmp_path):
    standin = _standin_imagenet_file(tmp_path / "resnet50_notop.h5")
    m = build_model(ModelConfig(weights=str(tmp_path / "resnet50_notop.h5")),
                    10, 32)
    np.testing.assert_array_equal(_weights(standin, "conv3_block1_1_conv")[0],
                                  _weights(m, "conv3_block1_1_conv")[0])

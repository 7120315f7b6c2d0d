"""loss_and_gradients / sync_state on the backend named by KERAS_BACKEND."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasft.backend import seed_everything
from kerasft.backend.gradients import loss_and_gradients, sync_state


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def test_dense_matches_the_closed_form():
    seed_everything(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 5)).astype("float32")
    y = rng.integers(0, 3, size=8)
    w, b = (np.asarray(v) for v in model.layers[0].weights)

    loss, (dw, db) = loss_and_gradients(model, x, y, model.layers[0].weights)

    p = _softmax(x @ w + b)
    onehot = np.eye(3, dtype="float32")[y]
    expected_loss = -np.mean(np.log(p[np.arange(8), y]))
    assert isinstance(loss, float)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5, atol=1e-6)
    assert dw.dtype == np.float32 and dw.shape == (5, 3)
    assert db.dtype == np.float32 and db.shape == (3,)
    np.testing.assert_allclose(dw, x.T @ (p - onehot) / 8, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(db, (p - onehot).mean(0), rtol=1e-5, atol=1e-6)


def _conv_model() -> keras.Model:
    """Conv -> BN -> tanh -> pool -> dropout -> dense, conv and BN frozen."""
    seed_everything(1)
    model = keras.Sequential([
        keras.Input((6, 6, 2)),
        keras.layers.Conv2D(3, 3, name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        # tanh, not relu: smooth, so the finite difference is meaningful.
        keras.layers.Activation("tanh"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(4, name="head"),
    ])
    bn = model.get_layer("bn")
    rng = np.random.default_rng(1)
    # Non-default moving statistics, so "unchanged" is not trivially true and
    # inference mode (which uses them) is distinguishable from training mode.
    bn.moving_mean.assign(rng.normal(size=3).astype("float32") * 0.1)
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, size=3).astype("float32"))
    model.get_layer("conv").trainable = False
    bn.trainable = False
    return model


@pytest.fixture
def conv_case():
    model = _conv_model()
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 4, size=6)
    conv, bn, head = (model.get_layer(n) for n in ("conv", "bn", "head"))
    variables = [
        conv.kernel, conv.bias, bn.gamma, bn.beta,
        bn.moving_mean, bn.moving_variance, head.kernel, head.bias,
    ]
    return model, x, y, variables


def _snapshot(model):
    return [np.array(v) for v in model.variables]


def test_frozen_layers_get_gradients_and_nothing_changes(conv_case, backend_name):
    model, x, y, variables = conv_case
    before = _snapshot(model)
    flags = [v.trainable for v in variables]
    layer_flags = [layer.trainable for layer in model.layers]

    loss1, grads1 = loss_and_gradients(model, x, y, variables)
    loss2, grads2 = loss_and_gradients(model, x, y, variables)

    assert np.isfinite(loss1)
    assert [g.shape for g in grads1] == [tuple(v.shape) for v in variables]
    assert all(g.dtype == np.float32 for g in grads1)
    conv_kernel_grad = grads1[0]
    assert np.all(np.isfinite(conv_kernel_grad))
    assert np.any(conv_kernel_grad != 0)
    # Inference mode: dropout off, BN on moving stats -> deterministic.
    assert loss1 == loss2
    for g1, g2 in zip(grads1, grads2):
        np.testing.assert_array_equal(g1, g2)
    # No value (BN moving statistics included), no flag changed.
    for b, a in zip(before, _snapshot(model)):
        np.testing.assert_array_equal(b, a)
    assert [v.trainable for v in variables] == flags
    assert [layer.trainable for layer in model.layers] == layer_flags
    if backend_name == "torch":
        # The torch path enables requires_grad temporarily; it must be back.
        assert [v.value.requires_grad for v in variables] == flags


def test_loss_is_the_inference_loss(conv_case):
    model, x, y, _ = conv_case
    loss, grads = loss_and_gradients(model, x, y, [])
    logits = keras.ops.convert_to_numpy(model(x, training=False))
    p = _softmax(logits.astype("float64"))
    expected = -np.mean(np.log(p[np.arange(len(y)), y]))
    assert grads == []
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_frozen_kernel_gradient_matches_finite_difference(conv_case):
    model, x, y, variables = conv_case
    kernel = variables[0]
    _, (grad,) = loss_and_gradients(model, x, y, [kernel])
    original = np.array(kernel)
    eps = 1e-2
    # The two entries with the largest gradient: well above the float32
    # noise of a difference quotient.
    picks = np.argsort(np.abs(grad).ravel())[-2:]
    try:
        for flat in picks:
            idx = np.unravel_index(flat, original.shape)
            losses = []
            for sign in (1, -1):
                w = original.copy()
                w[idx] += sign * eps
                kernel.assign(w)
                losses.append(loss_and_gradients(model, x, y, [])[0])
            numeric = (losses[0] - losses[1]) / (2 * eps)
            np.testing.assert_allclose(grad[idx], numeric, rtol=5e-2, atol=1e-4)
    finally:
        kernel.assign(original)


def test_repeated_variables_get_the_same_gradient(conv_case):
    model, x, y, variables = conv_case
    _, grads = loss_and_gradients(
        model, x, y, [variables[0], variables[6], variables[0]]
    )
    np.testing.assert_array_equal(grads[0], grads[2])
    _, (alone,) = loss_and_gradients(model, x, y, [variables[0]])
    np.testing.assert_allclose(grads[0], alone, rtol=1e-6, atol=1e-7)


def test_sync_state_is_safe_outside_fit(conv_case):
    model, *_ = conv_case
    before = _snapshot(model)
    sync_state(model)
    sync_state(object())  # not a model: ignored
    for b, a in zip(before, _snapshot(model)):
        np.testing.assert_array_equal(b, a)


def test_mid_fit_weights_and_gradients_are_current():
    """Under JAX, fit purges the keras.Variables' values until a sync.

    Reading them mid-epoch without `sync_state` gives placeholders, so both
    the weights read after `sync_state` and the loss computed mid-fit must
    match one plain SGD step from the initial weights.
    """
    seed_everything(3)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 5)).astype("float32")
    y = rng.integers(0, 3, size=16)
    dense = model.layers[0]
    w0, b0 = np.array(dense.kernel), np.array(dense.bias)
    _, (gw, gb) = loss_and_gradients(model, x[:8], y[:8], dense.weights)
    w1, b1 = w0 - 0.5 * gw, b0 - 0.5 * gb
    seen = {}

    class Probe(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            # `model`, not `self.model`: Keras's Callback.model property
            # syncs JAX state itself, which would hide a missing sync here.
            if batch == 0:
                # No explicit sync first: loss_and_gradients must do it.
                seen["loss"], _ = loss_and_gradients(
                    model, x[8:], y[8:], dense.weights
                )
                sync_state(model)
                seen["w"] = np.array(dense.kernel)
                seen["b"] = np.array(dense.bias)

    model.fit(
        x, y, batch_size=8, epochs=1, shuffle=False, verbose=0,
        callbacks=[Probe()],
    )
    np.testing.assert_allclose(seen["w"], w1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(seen["b"], b1, rtol=1e-5, atol=1e-6)
    p = _softmax(x[8:] @ w1 + b1)
    expected = -np.mean(np.log(p[np.arange(8), y[8:]]))
    np.testing.assert_allclose(seen["loss"], expected, rtol=1e-5, atol=1e-6)

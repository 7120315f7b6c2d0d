"""Recorders: every kind in the store, right shapes, finite, crash-safe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, TINY


def test_store_holds_every_kind_shaped_and_finite(recorded_run):
    from kerasft import load_run
    from kerasft.record.store import NUM_BINS, STAT_NAMES

    run = load_run(recorded_run)
    # per-epoch records; update ratios and scalars are tables
    assert set(run.records) == {"weights", "gradients", "activations",
                                "embeddings", "probe_gradients", "batchnorm",
                                "feature_maps", "attention"}
    assert set(run.tables) == {"scalars", "grad_norms", "update_ratios"}
    w = run.records["weights"]
    assert w.epochs == [0, 1, 2]
    n_vars = len(w[0]["names"])
    assert n_vars > 200  # every ResNet50 kernel, bias, gamma, beta + head
    for kind in ("weights", "activations", "probe_gradients", "gradients"):
        rec = run.records[kind]
        for e in rec.epochs:
            r = rec[e]
            v = len(r["names"])
            assert r["counts"].shape == (v, NUM_BINS + 2), kind
            assert r["edges"].shape == (v, NUM_BINS + 1), kind
            assert r["stats"].shape == (v, len(STAT_NAMES)), kind
            assert np.isfinite(r["stats"]).all(), kind
            assert (r["counts"].sum(axis=1) > 0).all(), kind
        assert not (rec.directory / "bins.npz").exists()  # format 2
    assert run.records["gradients"].epochs == [1, 2]
    kernels = np.array([str(n).endswith("/kernel") for n in w[0]["names"]])
    assert np.isfinite(w[2]["rel_change"][kernels]).all()
    assert w[0]["rel_change"][kernels].max() == 0
    assert w[2]["rel_change"][kernels].max() > 0
    # undefined (NaN), not 1e12, for tensors that start at zero
    assert np.isnan(w[2]["rel_change"][list(w[0]["names"]).index(
        "head/bias")])

    act = run.records["activations"][2]
    assert "conv5_block3_out" in act["names"] and "head_pool" in act["names"]
    assert ((act["dead_fraction"] >= 0) & (act["dead_fraction"] <= 1)).all()

    emb = run.records["embeddings"]
    assert emb.epochs == [0, 1, 2]
    assert emb[2]["features"].shape == (12, 2048)
    assert np.isfinite(emb[2]["features"]).all()
    assert list(emb[2]["labels"]) == run.probe["labels"][:12]
    assert len(run.probe["indices"]) == 12 and run.probe["split"] == "validation"

    pg = run.records["probe_gradients"]
    assert pg.epochs == [0, 1, 2]
    # every variable gets a probe gradient, frozen or not
    assert len(pg[0]["names"]) == n_vars and (pg[0]["norms"] > 0).any()

    bn = run.records["batchnorm"]
    assert len(bn[2]["names"]) == 53
    # head phase: BN frozen; fine-tune phase trains conv4/conv5 BN only
    # random init: moving means start at 0 (drift undefined), variances at 1
    assert np.isnan(bn[1]["mean_drift"]).all()
    assert np.nanmax(bn[1]["var_drift"]) == 0
    moved = dict(zip(bn[2]["names"], bn[2]["var_drift"]))
    assert moved["conv5_block1_1_bn"] > 0 and moved["conv2_block1_1_bn"] == 0

    fm = run.records["feature_maps"][2]
    assert fm["filters"].shape == (7, 7, 3, 64)
    assert fm["image"].shape == (32, 32, 3) and fm["image"].dtype == np.uint8
    assert fm["maps/conv1_relu"].shape == (16, 16, 16)
    assert fm["maps/conv5_block3_out"].shape == (1, 1, 16)

    steps = run.tables["scalars"]
    assert list(steps["step"]) == [1, 2, 3, 4]
    for col in ("loss", "accuracy", "learning_rate", "images_per_second"):
        assert np.isfinite(steps[col]).all(), col
    gn = run.tables["grad_norms"]
    assert list(gn["step"]) == [1, 2, 3, 4]
    # head phase: only the head has gradients; conv5 joins in phase 2
    assert np.isfinite(gn["head/kernel"]).all()
    assert np.isnan(gn["conv5_block3_3_conv/kernel"][:2]).all()
    assert np.isfinite(gn["conv5_block3_3_conv/kernel"][2:]).all()
    assert np.isnan(gn["conv1_conv/kernel"]).all()
    ur = run.tables["update_ratios"]
    assert (ur["head/kernel"] > 0).all() and (ur["conv1_conv/kernel"] == 0).all()


def test_epoch0_weight_histogram_matches_the_saved_initial_weights(
    recorded_run,
):
    """Independent check: load initial.weights.h5, histogram with numpy."""
    import keras

    from kerasft import load_run

    run = load_run(recorded_run)
    model = keras.saving.load_model(recorded_run / "model.keras")
    model.load_weights(recorded_run / "initial.weights.h5")
    by_path = {v.path: np.asarray(keras.ops.convert_to_numpy(v))
               for v in model.weights}
    rec = run.records["weights"][0]
    checked = 0
    for name, counts, e in zip(rec["names"], rec["counts"], rec["edges"]):
        values = by_path[str(name)].ravel()
        # the bin rule holds every value: nothing falls outside
        expected = np.histogram(values, bins=e)[0]
        np.testing.assert_array_equal(counts[1:-1], expected)
        assert counts[0] == counts[-1] == 0
        assert values.min() >= e[0] and values.max() <= e[-1]
        checked += 1
    assert checked == len(rec["names"])


def test_tensorboard_reads_the_exported_histograms(recorded_run):
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator,
    )

    acc = EventAccumulator(str(recorded_run / "tensorboard"),
                           size_guidance={"histograms": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert "weights/head/kernel" in tags["histograms"]
    assert [e.step for e in acc.Histograms("weights/head/kernel")] == [0, 1, 2]
    assert "epoch/val_loss" in tags["scalars"]
    assert "grad_norm/head/kernel" in tags["scalars"]


def test_gradient_norms_are_the_gradients_sgd_applied(tmp_path):
    """With plain SGD, W_t - W_(t-1) = -lr * g_t: the tap's norms must match.

    Every second step is recorded (rows at steps 2, 4, ...), plus each
    epoch's last step (5 and 10) for the epoch's gradient histogram.
    """
    import keras

    from kerasft import load_run
    from kerasft.backend.gradients import sync_state
    from kerasft.record import GradientRecorder

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 3, 40)
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, name="conv"),
        keras.layers.GlobalAveragePooling2D(name="pool"),
        keras.layers.Dense(3, name="head"),
    ])
    lr = 0.5
    model.compile(keras.optimizers.SGD(lr),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    n_opt_vars = None
    snapshots = []

    class Snap(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            snapshots.append(self.weights())

        def on_train_batch_end(self, batch, logs=None):
            sync_state(self.model)
            snapshots.append(self.weights())

        def weights(self):
            return {v.path: np.asarray(keras.ops.convert_to_numpy(v)).copy()
                    for v in self.model.trainable_weights}

    def step_norm(t, name):
        return np.linalg.norm(
            (snapshots[t][name] - snapshots[t - 1][name]).ravel()) / lr

    model.optimizer.build(model.trainable_variables)
    n_opt_vars = len(model.optimizer.variables)
    store = tmp_path / "record"
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False,
              callbacks=[GradientRecorder(store, every_steps=2), Snap()])
    run = load_run(tmp_path)
    gn = run.tables["grad_norms"]
    assert list(gn["step"]) == [2, 4, 6, 8, 10]
    names = [c for c in gn if c not in ("step", "epoch")]
    assert len(names) == 4 and any(n.endswith("conv/kernel") for n in names)
    for row, t in enumerate(gn["step"].astype(int)):
        for name in names:
            np.testing.assert_allclose(gn[name][row], step_norm(t, name),
                                       rtol=1e-4)
    # each epoch's gradient record comes from its last step, recorded or not
    for epoch, last in ((1, 5), (2, 10)):
        g = run.records["gradients"][epoch]
        assert int(g["step"]) == last
        np.testing.assert_allclose(
            g["stats"][:, 4], [step_norm(last, str(n)) for n in g["names"]],
            rtol=1e-4)
        # its sample is the whole gradient for these small tensors
        grad = {n: (snapshots[last][n] - snapshots[last - 1][n]) / -lr
                for n in snapshots[last]}
        for name, counts, stats in zip(g["names"], g["counts"], g["stats"]):
            assert counts.sum() == grad[str(name)].size
            np.testing.assert_allclose(stats[2:4], [grad[str(name)].min(),
                                       grad[str(name)].max()], rtol=1e-4,
                                       atol=1e-7)
    # the tap is gone after fit: the optimizer holds only its own state
    assert not hasattr(model.optimizer, "_kerasft_gradient_tap")
    assert len(model.optimizer.variables) == n_opt_vars


@pytest.mark.slow  # CI time; test_resume kills during a checkpoint write,
# then checks the store loads and resumes, in every env
def test_kill_9_leaves_a_readable_store(tmp_path):
    """SIGKILL mid-run: every finished epoch stays readable."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "kerasft", "train", "-c", "quickstart",
           "--epochs", "30", *TINY, "--set", "record.every_steps=1",
           "--set", "record.embedding_size=16", "--set",
           "record.probe_size=8", "--set", "record.tensorboard=false",
           "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        # generous: a loaded CI machine can take minutes for 3 epochs
        deadline = time.time() + 900
        target = None
        while time.time() < deadline and proc.poll() is None:
            runs = [p for p in tmp_path.iterdir() if p.is_dir()]
            if runs and (runs[0] / "record/weights/epoch-0003.npz").exists():
                target = runs[0]
                break
            time.sleep(0.2)
        assert target is not None, "training did not reach epoch 3"
        time.sleep(0.7)  # land somewhere inside a later step or write
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    from kerasft import load_run

    run = load_run(target)
    # it never got to finish; its process is gone, so it reads interrupted
    assert run.status["state"] == "interrupted"
    done = run.records["weights"].epochs
    assert done[:4] == [0, 1, 2, 3]
    for kind, rec in run.records.items():
        for e in rec.epochs:  # every file that exists loads whole
            assert rec[e], kind
    epochs_in_csv = [int(e) for e in run.metrics["epoch"]]
    assert epochs_in_csv[:3] == [1, 2, 3]
    for name, table in run.tables.items():
        lengths = {len(v) for v in table.values()}
        assert len(lengths) == 1 and lengths.pop() >= 3, name
    leftovers = [p.name for p in target.rglob(".tmp-*")]
    # a temporary file may be left by the kill, but the reader ignores it
    # (and the next resume or render removes it)
    assert len(leftovers) <= 1, leftovers


def test_gradient_recorder_joins_a_model_that_already_trained(tmp_path):
    """A step compiled by an earlier fit must not leave the tap out."""
    import keras

    from kerasft import load_run
    from kerasft.record import GradientRecorder

    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 6)).astype("float32")
    y = rng.integers(0, 2, 16)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.1),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0,
              callbacks=[GradientRecorder(tmp_path / "record", every_steps=1)])
    gn = load_run(tmp_path).tables["grad_norms"]
    cols = [c for c in gn if c not in ("step", "epoch")]
    assert len(cols) == 2 and all(np.isfinite(gn[c]).all() for c in cols)


def test_device_histograms_equal_numpy_and_count_nonfinite():
    """TensorStats (on the device) == store.histogram/summary_stats (numpy),
    including values exactly on bin edges, outside the bins and NaN/inf."""
    import keras

    from kerasft.record import store
    from kerasft.record.tensor_stats import TensorStats

    rng = np.random.default_rng(0)
    first = [rng.normal(size=(3, 3, 4, 8)).astype("float32"),
             rng.normal(size=(store.QUANTILE_SAMPLE + 999,)).astype("float32"),
             np.zeros(7, "float32")]
    edges = np.stack([store.fixed_edges(a) for a in first])
    later = [a * 3 for a in first]
    later[0].flat[:65] = edges[0].astype("float32")  # on (rounded) edges
    later[0].flat[65:68] = [np.nan, np.inf, -np.inf]
    later[2][:] = np.nan
    stats = TensorStats([a.shape for a in first])
    for arrays, given in ((first, edges), (later, edges), (later, None)):
        # given edges (values outside them too), and the bin rule's own
        out = stats([keras.ops.convert_to_tensor(a) for a in arrays],
                    initial=[keras.ops.convert_to_tensor(a) for a in first],
                    edges=given)
        for i, a in enumerate(arrays):
            finite = a.ravel()[np.isfinite(a.ravel())]
            want = edges[i] if given is not None else store.dyadic_edges(a)
            np.testing.assert_array_equal(out["edges"][i], want)
            np.testing.assert_array_equal(out["counts"][i],
                                          store.histogram(finite, want))
            assert out["nonfinite"][i] == a.size - finite.size
            expected = (store.summary_stats(finite) if finite.size
                        else np.full(len(store.STAT_NAMES), np.nan))
            np.testing.assert_allclose(out["stats"][i], expected, rtol=1e-5,
                                       atol=1e-6)
    assert list(out["nonfinite"]) == [3, 0, 7]
    assert out["counts"][0].sum() == first[0].size - 3
    np.testing.assert_allclose(
        out["delta"][1], np.linalg.norm(2 * first[1]), rtol=1e-5)


def test_weight_recorder_on_device_writes_what_the_numpy_path_writes(
        tmp_path):
    import keras

    from kerasft import load_run
    from kerasft.record import WeightRecorder

    rng = np.random.default_rng(2)
    x = rng.normal(size=(16, 6)).astype("float32")
    y = rng.integers(0, 2, 16)
    records = {}
    for on_device in (False, True):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4),
                                  keras.layers.Dense(2)])
        model.compile(keras.optimizers.SGD(0.1),
                      keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True))
        d = tmp_path / str(on_device)
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False,
                  callbacks=[WeightRecorder(d / "record",
                                            on_device=on_device)])
        records[on_device] = load_run(d).records["weights"]
    for e in (0, 1, 2):
        a, b = records[False][e], records[True][e]
        np.testing.assert_array_equal(a["edges"], b["edges"])
        np.testing.assert_array_equal(a["counts"], b["counts"])
        np.testing.assert_array_equal(a["nonfinite"], b["nonfinite"])
        np.testing.assert_allclose(a["stats"], b["stats"], rtol=1e-5,
                                   atol=1e-7)
        np.testing.assert_allclose(a["rel_change"], b["rel_change"],
                                   rtol=1e-5, equal_nan=True)


@pytest.mark.parametrize("on_device", [True, False])
def test_update_ratios_equal_numpy_on_host_snapshots(tmp_path, on_device):
    """The ratios (reduced on the device, or in numpy) == ||W_t - W_(t-N)|| / ||W_t|| / N computed
    in numpy from weights copied to the host at every step, across two
    fits (a new window starts at each fit); a frozen layer reads 0."""
    import keras

    from kerasft import load_run
    from kerasft.backend.gradients import sync_state
    from kerasft.record import UpdateRatioRecorder

    rng = np.random.default_rng(3)
    x = rng.normal(size=(48, 6)).astype("float32")
    y = rng.integers(0, 3, 48)
    model = keras.Sequential([
        keras.Input((6,)), keras.layers.Dense(5, name="hidden"),
        keras.layers.Dense(3, name="head")])
    model.get_layer("hidden").trainable = False
    model.compile(keras.optimizers.SGD(0.3, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    snapshots = []

    class Snap(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.on_train_batch_end(None)

        def on_train_batch_end(self, batch, logs=None):
            sync_state(self.model)
            snapshots.append({
                v.path: np.asarray(keras.ops.convert_to_numpy(v)).copy()
                for v in self.model.weights})

    recorder = UpdateRatioRecorder(tmp_path / "record", every_steps=4,
                                   on_device=on_device)
    for _ in range(2):  # 6 steps per fit: windows end at steps 4, 8, 12
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False,
                  callbacks=[recorder, Snap()])
    # snapshot index of step t: fit 1 holds 0..6, fit 2 starts again at 7
    at = {t: t if t <= 6 else t + 1 for t in range(13)}
    window_start = {4: 0, 8: 7, 12: at[8]}  # step 8: began with fit 2
    since = {4: 4, 8: 2, 12: 4}
    ur = load_run(tmp_path).tables["update_ratios"]
    assert list(ur["step"]) == [4, 8, 12]
    names = [c for c in ur if c not in ("step", "epoch")]
    assert len(names) == 4
    for row, t in enumerate((4, 8, 12)):
        now, before = snapshots[at[t]], snapshots[window_start[t]]
        for name in names:
            expected = (np.linalg.norm(now[name] - before[name])
                        / max(np.linalg.norm(now[name]), 1e-12) / since[t])
            np.testing.assert_allclose(ur[name][row], expected, rtol=1e-4,
                                       atol=1e-9)
    column = {n.split("/", 1)[-1]: n for n in names}  # "<model>/head/kernel"
    assert (ur[column["head/kernel"]] > 0).all()
    assert (ur[column["hidden/kernel"]] == 0).all()


def test_recorders_in_a_users_fit_leave_no_tap_in_the_saved_model(tmp_path):
    """After `fit` with the recorders, the optimizer (and a saved model)
    holds only its own state, and the model trains on without them."""
    import keras

    from kerasft.record import (
        BatchNormRecorder,
        GradientRecorder,
        ScalarRecorder,
        UpdateRatioRecorder,
        WeightRecorder,
    )

    rng = np.random.default_rng(2)
    x = rng.normal(size=(24, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 3, 24)

    def make():
        model = keras.Sequential([
            keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
        model.compile(keras.optimizers.Adam(1e-2),
                      keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True))
        return model

    plain = make()
    plain.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model = make()
    store = tmp_path / "record"
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[
        WeightRecorder(store), GradientRecorder(store, every_steps=1),
        UpdateRatioRecorder(store, every_steps=1), BatchNormRecorder(store),
        ScalarRecorder(store, 1, 8)])
    assert not hasattr(model.optimizer, "_kerasft_gradient_tap")
    assert "apply" not in vars(model.optimizer)  # the class's own method
    assert len(model.optimizer.variables) == len(plain.optimizer.variables)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert len(loaded.optimizer.variables) == len(plain.optimizer.variables)
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert model.evaluate(x, y, verbose=0) != before


def _small_conv_model():
    """A seeded functional conv net (logits), one output channel dead."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(6, 3, activation="relu", name="c1")(inputs)
    h = keras.layers.Conv2D(4, 3, activation="relu", name="c2",
                            bias_initializer=keras.initializers.Constant(
                                [-50.0, 0, 0, 0]))(h)  # a dead channel
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(2, name="dense")(h))
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    return model


def _both_ways(tmp_path, kind, recorder, epochs, seed):
    """`kind`'s records from a fresh `_small_conv_model` fitted `epochs`
    epochs with ``recorder(directory, x, y, on_device)``, reduced in numpy
    and on the device: the bins, counts and non-finite counts must be
    equal, every record; returns the two runs' records, epoch by epoch
    (numpy's, the device's)."""
    from kerasft import load_run

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(12, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 2, 12)
    records = {}
    for on_device in (False, True):
        model = _small_conv_model()
        d = tmp_path / str(on_device)
        model.fit(x, y, batch_size=6, epochs=epochs, verbose=0,
                  shuffle=False,
                  callbacks=[recorder(d / "record", x[:5], y[:5], on_device)])
        records[on_device] = load_run(d).records[kind]
    host, device = ([records[on][e] for e in range(epochs + 1)]
                    for on in (False, True))
    for a, b in zip(host, device):
        for key in ("names", "edges", "counts", "nonfinite"):
            np.testing.assert_array_equal(a[key], b[key])
    return host, device


def test_probe_gradients_on_device_write_what_the_numpy_path_writes(
        tmp_path):
    """Probe-batch gradients reduced on the device (the default on a GPU)
    give the numpy path's record, twice over one fit (the compiled JAX
    gradient is reused and sees the moved weights)."""
    from kerasft.record import ProbeGradientRecorder

    host, device = _both_ways(
        tmp_path, "probe_gradients",
        lambda d, x, y, on: ProbeGradientRecorder(d, x, y, on_device=on),
        epochs=2, seed=5)
    for a, b in zip(host, device):
        for key in ("stats", "norms", "loss"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-7)
    assert device[2]["loss"] != device[0]["loss"]
    assert not np.array_equal(device[2]["counts"], device[0]["counts"])


def test_activation_recorder_on_device_writes_what_the_numpy_path_writes(
        tmp_path, monkeypatch):
    """Block outputs reduced on the device (`TensorStats`, the default on
    a GPU, here in three groups) give the numpy path's record: the same
    bins and counts, the same dead channels, statistics to float32
    round-off."""
    from kerasft.record import ActivationRecorder, activation_recorder

    monkeypatch.setattr(activation_recorder, "GROUP_ENTRIES", 200)
    host, device = _both_ways(
        tmp_path, "activations",
        lambda d, x, y, on: ActivationRecorder(d, x, on_device=on),
        epochs=1, seed=4)
    for a, b in zip(host, device):
        assert list(a["names"]) == ["c1", "c2", "dense"]
        np.testing.assert_array_equal(a["dead_fraction"], b["dead_fraction"])
        np.testing.assert_allclose(a["stats"], b["stats"], rtol=1e-5,
                                   atol=1e-6)
    assert device[1]["dead_fraction"][1] >= 0.25
    assert activation_recorder.group_by_size(
        [(5, 6, 6, 6), (5, 4, 4, 4), (5, 2)], 200) == [[0], [1], [2]]


def test_activation_groups_keep_order_and_bound_size():
    from kerasft.record.activation_recorder import group_by_size

    shapes = [(4, 5), (10,), (3,), (30,), (2, 2)]
    assert group_by_size(shapes, limit=32) == [[0, 1], [2], [3], [4]]
    assert group_by_size(shapes, limit=10 ** 6) == [[0, 1, 2, 3, 4]]
    assert group_by_size([(50,)], limit=8) == [[0]]


def test_tensor_stats_are_shared_per_shapes_and_the_oldest_dropped():
    from kerasft.record import tensor_stats

    first = tensor_stats.TensorStats.shared([(3, 4), (5,)])
    assert tensor_stats.TensorStats.shared([(3, 4), [5]]) is first
    assert tensor_stats.TensorStats.shared([(3, 4)]) is not first
    for n in range(tensor_stats._SHARED_MAX):
        tensor_stats.TensorStats.shared([(n + 7,)])
    assert tensor_stats.TensorStats.shared([(3, 4), (5,)]) is not first
    assert len(tensor_stats._SHARED) == tensor_stats._SHARED_MAX

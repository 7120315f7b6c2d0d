"""Mixed precision: `--precision`, recorders on 16-bit tensors, loss scaling.

The backend comes from KERAS_BACKEND. One tiny quickstart run per policy is
shared by the tests of that policy (module-scoped fixtures).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import REPO, SLOW_OFF_TORCH, TINY, only_run_dir, run_cli
from test_report import FIGURES, _check_png

RUN_ARGS = [
    "train", "-c", "quickstart", "--epochs", "1", *TINY,
    "--set", "record.every_steps=1", "--set", "record.embedding_size=12",
    "--set", "record.probe_size=8", "--set", "train.verbose=0",
]


def _train(parent, precision, *extra):
    out = parent / precision
    old = os.getcwd()
    os.chdir(REPO)
    try:
        r = run_cli([*RUN_ARGS, "--precision", precision, *extra,
                     "--out", out])
    finally:
        os.chdir(old)
    assert r.code == 0, r
    return only_run_dir(out)


@pytest.fixture(scope="module")
def bf16_run(module_tmp):
    return _train(module_tmp, "mixed_bfloat16")


def _tiny_model(policy):
    import keras

    from kerasft.model.builder import dtype_policy

    with dtype_policy(policy):
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        outputs = keras.layers.Dense(3, name="head", dtype="float32")(x)
        return keras.Model(inputs, outputs)


# ---------------------------------------------------------------- config


def test_unknown_precision_is_a_config_error(cli):
    r = cli(["train", "-c", "quickstart", "--precision", "float8"])
    assert r.code == 2, r
    assert "train.precision" in r.err and "'float8'" in r.err
    assert "mixed_bfloat16" in r.err and "Traceback" not in r.err


def test_bad_jit_compile_is_a_config_error(cli):
    r = cli(["train", "-c", "quickstart", "--set", "train.jit_compile=fast"])
    assert r.code == 2, r
    assert "train.jit_compile" in r.err and "'fast'" in r.err


def test_torch_compile_is_explained_before_training(cli, backend_name,
                                                    tmp_path):
    """`train.jit_compile: true` prints, before the data is even read,
    what torch.compile does to Keras's torch step; other backends and
    `auto` print nothing about it."""
    missing = tmp_path / "no-such-folder"
    for jit in ("true", "auto"):
        r = cli(["train", "-c", "quickstart", "--set", f"train.jit_compile={jit}",
                 "--set", "data.source=folder", "--set", f"data.path={missing}",
                 "--out", tmp_path / "runs"])
        assert r.code == 2 and str(missing) in r.err, r  # failed on the data
        said = "torch.compile" in r.out and "backward()" in r.out
        assert said == (jit == "true" and backend_name == "torch"), r.out
    assert not (tmp_path / "runs").exists()


def test_the_policy_does_not_leak_out_of_model_building():
    import keras

    from kerasft.config import ModelConfig
    from kerasft.model import build_model

    before = keras.config.dtype_policy().name
    model = build_model(ModelConfig(weights="none"), 3, 32,
                        precision="mixed_bfloat16")
    assert keras.config.dtype_policy().name == before == "float32"
    assert model.dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("conv1_conv").compute_dtype == "bfloat16"
    # Variables stay float32; the logits are float32 for a stable loss.
    assert {v.dtype for v in model.weights} == {"float32"}
    assert model.get_layer("head").compute_dtype == "float32"
    assert keras.backend.standardize_dtype(model.output.dtype) == "float32"


# ----------------------------------------------------- mixed_bfloat16 run


def test_bf16_run_records_its_precision(bf16_run, backend_name):
    from kerasft import load_run

    env = load_run(bf16_run).env
    assert env["precision"] == env["dtype_policy"] == "mixed_bfloat16"
    assert env["compute_dtype"] == "bfloat16"
    assert env["variable_dtype"] == "float32"
    assert env["loss_scaling"] is False
    # jit_compile: auto, as Keras resolved it: torch eager, jax XLA,
    # tensorflow XLA only with a GPU.
    if backend_name == "tensorflow":
        assert env["jit_compile"] == ("GPU" in env["device"])
    else:
        assert env["jit_compile"] == (backend_name == "jax")


def test_bf16_run_writes_every_record_kind_finite(bf16_run):
    from kerasft.record import store

    record = bf16_run / "record"
    for kind in store.KINDS:
        files = sorted((record / kind).glob("epoch-*.npz"))
        assert files, kind
        with np.load(files[-1]) as data:
            for key in data.files:
                a = data[key]
                if a.dtype.kind != "f":
                    continue
                if kind in ("weights", "batchnorm") and key in (
                        "rel_change", "mean_drift"):
                    continue  # NaN by definition for zero-start tensors
                assert np.isfinite(a).all(), (kind, key)
                # float32 statistics of float32 values, never 16-bit
                assert a.dtype in (np.float32, np.float64), (kind, key)
    for table in store.TABLES:
        rows = (record / f"{table}.csv").read_text().splitlines()
        assert len(rows) >= 3, table  # header + one row per step


def test_bf16_weights_are_float32_statistics(bf16_run):
    with np.load(bf16_run / "record" / "weights" / "epoch-0001.npz") as w, \
            np.load(bf16_run / "record" / "weights" / "epoch-0000.npz") as w0:
        assert w["stats"].dtype == np.float64
        # Training moved the float32 master weights by less than bfloat16's
        # resolution would allow if they were stored in 16 bits: a
        # bfloat16 copy could not hold an update of ~1e-3 relative size
        # on most tensors, so some relative changes are tiny but non-zero.
        moved = w["rel_change"][np.isfinite(w["rel_change"])]
        assert (moved > 0).any()
        assert w["counts"].sum() == w0["counts"].sum()


def test_bf16_run_renders_every_figure(bf16_run):
    report = bf16_run / "report"
    page = (report / "index.html").read_text()
    for key in FIGURES:
        _check_png(report / f"{key}.png")
        assert f"src='{key}.png'" in page, key
    assert "figure module" not in page


# ------------------------------------------------------------ loss scaling


def test_gradient_tap_records_unscaled_gradients_under_loss_scaling():
    """Under mixed_float16 the recorded norms are those of the real
    gradients, not of the scaled loss's (x 32768), on every backend."""
    import keras

    from kerasft.backend.gradient_tap import GradientTap

    x = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype("float32")
    y = np.arange(16) % 3
    norms = {}
    for policy in ("float32", "mixed_float16"):
        keras.utils.set_random_seed(1)
        model = _tiny_model(policy)
        if policy == "mixed_float16":
            model.set_weights(weights)
        weights = model.get_weights()
        model.compile(
            optimizer=keras.optimizers.SGD(0.01),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        scaled = isinstance(model.optimizer,
                            keras.optimizers.LossScaleOptimizer)
        assert scaled == (policy == "mixed_float16")
        tap = GradientTap.attach(model.optimizer, model.trainable_variables)
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
        norms[policy] = tap.read_norms()
        tap.detach()  # as before model.save: the optimizer's own state only
        assert not any(v is tap.norms for v in model.optimizer.variables)
    assert np.isfinite(norms["mixed_float16"]).all(), norms
    np.testing.assert_allclose(norms["mixed_float16"], norms["float32"],
                               rtol=0.05)


@SLOW_OFF_TORCH
def test_float16_run_trains_with_loss_scaling(tmp_path):
    """mixed_float16 runs on CPU on every backend (torch, tensorflow and
    jax all have float16 kernels there): Keras's LossScaleOptimizer is in
    effect, and the recorded gradient norms are the unscaled ones."""
    import keras

    # only what this test reads: weights and the gradient recorders
    run = _train(tmp_path, "mixed_float16", "--no-report",
                 *[a for k in ("update_ratios", "activations",
                               "embeddings", "batchnorm", "feature_maps",
                               "tensorboard")
                   for a in ("--set", f"record.{k}=false")])
    from kerasft import load_run

    env = load_run(run).env
    assert env["dtype_policy"] == "mixed_float16"
    assert env["loss_scaling"] is True
    # The saved model loads (the tap was detached first), weights float32.
    # Keras restores the optimizer without its LossScaleOptimizer wrapper
    # (compile's config holds the unwrapped one), so only weights count.
    model = keras.saving.load_model(run / "model.keras", compile=False)
    assert {v.dtype for v in model.weights} == {"float32"}
    rows = (run / "record" / "grad_norms.csv").read_text().splitlines()[1:]
    assert len(rows) == 2  # one row per step, recorded or skipped
    values = np.array([float(x) for r in rows for x in r.split(",")[2:] if x])
    if values.size:
        # Norms of the scaled loss would be ~32768x the real ones; the
        # probe batch's (unscaled, float32) gradient norms are the yardstick.
        with np.load(run / "record" / "probe_gradients" /
                     "epoch-0001.npz") as p:
            probe = float(np.nanmax(p["norms"]))
        assert np.isfinite(values).all()
        assert values.max() < 100 * probe, (values.max(), probe)
    else:
        # Every step overflowed at the initial scale (2**15) and was
        # skipped, as loss scaling must: the weights did not move.
        with np.load(run / "record" / "weights" / "epoch-0001.npz") as w:
            moved = w["rel_change"][np.isfinite(w["rel_change"])]
        assert (moved == 0).all()


# ------------------------------------------------------------- tolerances


class _Run:
    def __init__(self, precision=None):
        train = {} if precision is None else {"precision": precision}
        self.config = {"train": train}


@pytest.mark.parametrize("a, b, tier", [
    ("float32", "float32", "number for number"),
    (None, "float32", "number for number"),  # a run from before train.precision
    ("mixed_bfloat16", "float32", "mixed precision"),
    ("float32", "mixed_float16", "mixed precision"),
    ("mixed_bfloat16", "mixed_bfloat16", "mixed precision"),
])
def test_parity_tier_follows_the_runs_precision(a, b, tier):
    from kerasft.compare import tolerances

    chosen = tolerances.tier_for(_Run(a), _Run(b))
    assert chosen.name == tier
    if tier != "number for number":
        assert chosen.activation_epoch0_rel > (
            tolerances.FLOAT32.activation_epoch0_rel)
        assert chosen.loss_after_epoch_rel > (
            tolerances.FLOAT32.loss_after_epoch_rel)


def test_parity_checks_use_the_mixed_tier_for_a_mixed_run():
    """A loss difference normal for bfloat16 fails the float32 tier and
    passes the mixed one, chosen from the runs' configs alone."""
    from kerasft.compare import parity_checks

    def run(precision, loss):
        r = _Run(precision)
        r.records, r.metrics = {}, {"loss": np.array([loss])}
        return r

    f32 = parity_checks(run("float32", 2.0), run("float32", 2.01))
    mixed = parity_checks(run("float32", 2.0), run("mixed_bfloat16", 2.01))
    assert [(c.name, c.ok, c.tier) for c in f32] == [
        ("epoch-1 loss rel. diff", False, "number for number")]
    assert [(c.name, c.ok, c.tier) for c in mixed] == [
        ("epoch-1 loss rel. diff", True, "mixed precision")]

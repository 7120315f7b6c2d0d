"""The non-finite guard: a NaN/inf stops the run at its step, names the
step, the layer and the learning rate; the run is `failed`, its report
renders with the error, and every JSON file stays strict."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from conftest import TINY, only_run_dir

# The first layers of a keras.applications ResNet50, input to output.
_STEM = ("conv1_pad", "conv1_conv")


def _strict(text: str):
    def refuse(word):
        raise ValueError(f"non-strict JSON constant {word}")

    return json.loads(text, parse_constant=refuse)


def _assert_failed_run(run, err: str, report: bool = True) -> dict:
    """Checks what every non-finite failure must leave; returns the fault."""
    for path in run.rglob("*.json"):
        _strict(path.read_text())  # no NaN / Infinity anywhere
    status = _strict((run / "status.json").read_text())
    assert status["state"] == "failed"
    fault = status["fault"]
    assert status["error"].startswith("training stopped: ")
    assert f"epoch {fault['epoch']}" in err and f"batch {fault['batch']}" in err
    assert fault["layer"] and fault["layer"] in err
    assert "learning rate" in err
    # only complete, finite epochs were written
    rows = []
    if (run / "metrics.csv").exists():
        rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert len(rows) == status["epochs_done"] == fault["epoch"] - 1
    for row in rows:
        assert all(math.isfinite(float(row[k]))
                   for k in ("loss", "val_loss"))
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1
    if report:
        assert "Report: " in errors[0]
        page = (run / "report" / "index.html").read_text()
        assert "This run failed" in page and fault["layer"] in page
        assert "under-fitting" not in page
        assert "raise the learning rate" not in page
    return fault


def test_absurd_learning_rate_stops_at_its_step(cli, tmp_path):
    r = cli(["train", "-c", "quickstart", "--epochs", "1", *TINY,
             "--lr", "1e12", "--set", "optimizer.schedule=constant",
             "--set", "record.enabled=false", "--out", tmp_path])
    assert r.code == 1, r
    run = only_run_dir(tmp_path)
    fault = _assert_failed_run(run, r.err)
    # Adam's first step moves every weight by ~lr: the second step's
    # forward overflows, at the latest.
    assert fault["phase"] == "training" and fault["step"] <= 2
    assert fault["learning_rate"] == pytest.approx(1e12)
    found = fault["found"]
    assert found["training"] and not found["input"]
    assert found["weights"] is None  # the faulty update was not applied
    assert found["layer"] == fault["layer"]
    # The diagnosis (the report's first block): diverged, naming the
    # guard's layer and step, and nothing else (a planted LR x1e15).
    from kerasft.record.store import load_run
    from kerasft.render.diagnose import diagnose, problems

    (finding,) = problems(diagnose(load_run(run)))
    assert finding.id == "diverged", finding
    assert f"layer {fault['layer']}" in finding.evidence[0].text()
    page = (run / "report" / "index.html").read_text()
    # after the error box, first in the Diagnosis block, before the summary
    block = page.index("id='diagnosis'")
    assert block < page.index("data-finding='diverged'") < \
        page.index("class='kv'", block)


def test_poisoned_training_batch_names_step_and_input(cli, tmp_path,
                                                      monkeypatch):
    """One NaN pixel in one batch, as a broken decoder would deliver it
    (input validation, which refuses NaN files, never sees it)."""
    from kerasft.data.batches import Batches

    real = Batches.__getitem__

    def getitem(self, i):
        x, y = real(self, i)
        if self.shuffle and self._locate(i) == (1, 1):  # epoch 2, batch 2
            x = x.copy()
            x[0, 5, 7, 1] = np.nan
        return x, y

    monkeypatch.setattr(Batches, "__getitem__", getitem)
    r = cli(["train", "-c", "quickstart", "--epochs", "2", *TINY,
             "--set", "record.enabled=false", "--out", tmp_path])
    assert r.code == 1, r
    run = only_run_dir(tmp_path)
    fault = _assert_failed_run(run, r.err)
    assert (fault["phase"], fault["epoch"], fault["batch"], fault["step"]) == (
        "training", 2, 2, 4)
    assert fault["found"]["input"] == 1 and fault["layer"] in _STEM
    assert fault["update_skipped"]
    # epoch 1 is complete and finite, and kept (a complete, resumable
    # checkpoint: weights, optimizer state, and its .json written last);
    # the faulty epoch 2 leaves none
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "epoch-001.json", "epoch-001.optimizer.npz", "epoch-001.weights.h5"]
    assert "non-finite entries" in r.err


def _tiny_model(keras, seed_everything, jit_compile="auto"):
    seed_everything(3)
    inputs = keras.Input((4,))
    h = keras.layers.Dense(3, name="dense_a")(inputs)
    h = keras.layers.Lambda(lambda t: keras.ops.sqrt(keras.ops.abs(t)),
                            name="sqrt_abs")(h)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
    # dense_a's bias starts at 0 and would move at step 1: pin it
    model.get_layer("dense_a").bias.trainable = False
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True), jit_compile=jit_compile)
    return model


def _jit_compile(param, backend_name):
    """`jit_compile=True` is tested on torch (torch.compile); elsewhere it is
    the default already (jax) or the same path (tensorflow)."""
    if param and backend_name != "torch":
        pytest.skip("torch.compile: torch only")
    return True if param else "auto"


def test_poisoned_validation_batch_stops_in_validation():
    """A NaN in the second validation batch: the run stops in validation,
    at that batch, and the layer search runs in inference mode."""
    import keras

    from kerasft.backend import seed_everything
    from kerasft.errors import NonFiniteError
    from kerasft.train.nonfinite_guard import NonFiniteGuard

    model = _tiny_model(keras, seed_everything)
    x = np.ones((8, 4), "float32")
    y = np.array([0, 1] * 4)
    xv = x.copy()
    xv[5, 2] = np.inf

    def batch(phase, epoch, i):
        a = xv if phase == "validation" else x
        return a[4 * i:4 * i + 4], y[4 * i:4 * i + 4]

    with pytest.raises(NonFiniteError) as info:
        model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0,
                  validation_data=(xv, y),
                  callbacks=[NonFiniteGuard(batch)])
    fault = info.value.fault
    assert (fault["phase"], fault["epoch"], fault["batch"]) == (
        "validation", 1, 2)
    assert "val_loss" in fault["values"]
    found = fault["found"]
    assert not found["training"] and found["input"] == 1
    assert fault["layer"] == "dense_a"
    assert "epoch 1, validation batch 2" in str(info.value)


@pytest.mark.parametrize("jit", [False, True], ids=["default", "torch.compile"])
def test_nonfinite_gradient_with_finite_loss_is_not_applied(jit,
                                                            backend_name):
    """sqrt at 0: a finite forward and loss, a NaN gradient. The guard
    stops at that step, names the variable, and the update never lands
    (under torch.compile too)."""
    import keras

    from kerasft.backend import seed_everything
    from kerasft.errors import NonFiniteError
    from kerasft.train.nonfinite_guard import NonFiniteGuard

    jit_compile = _jit_compile(jit, backend_name)

    def build():
        return _tiny_model(keras, seed_everything, jit_compile)

    x = np.ones((8, 4), "float32")
    x[4:] = 0.0  # batch 2: dense_a's output is its bias, 0
    y = np.array([0, 1] * 4)
    # the weights after step 1 alone, from the same start
    reference = build()
    reference.fit(x[:4], y[:4], batch_size=4, epochs=1, shuffle=False,
                  verbose=0)
    model = build()

    def batch(phase, epoch, i):
        return x[4 * i:4 * i + 4], y[4 * i:4 * i + 4]

    with pytest.raises(NonFiniteError) as info:
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0,
                  callbacks=[NonFiniteGuard(batch)])
    fault = info.value.fault
    assert (fault["epoch"], fault["batch"], fault["step"]) == (1, 2, 2)
    assert fault["values"] == {}  # the loss stayed finite
    assert fault["gradient_watch"] == "dense_a/kernel"
    assert fault["found"]["layer"] is None and fault["layer"] == (
        "dense_a/kernel")
    assert "dense_a/kernel" in str(info.value)
    # step 1 was applied, step 2 (NaN gradient) was not
    for got, want in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert not hasattr(model.optimizer, "_kerasft_gradient_tap")


def test_loss_scaling_that_skips_every_step_is_stopped():
    """mixed_float16: a gradient that is NaN at every scale. Keras's loss
    scaling skips each step and halves its scale, and the tap behind it
    never sees the gradients; the guard stops when the scale falls below 1
    (step 16 from 2**15), and no update ever landed."""
    import keras

    from kerasft.backend import seed_everything
    from kerasft.errors import NonFiniteError
    from kerasft.model.builder import dtype_policy
    from kerasft.train.nonfinite_guard import NonFiniteGuard

    with dtype_policy("mixed_float16"):
        model = _tiny_model(keras, seed_everything)
    start = [np.array(w) for w in model.get_weights()]
    x = np.zeros((80, 4), "float32")  # dense_a's output is 0 at every step
    y = np.array([0, 1] * 40)

    def batch(phase, epoch, i):
        return x[4 * i:4 * i + 4], y[4 * i:4 * i + 4]

    with pytest.raises(NonFiniteError) as info:
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0,
                  callbacks=[NonFiniteGuard(batch)])
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    fault = info.value.fault
    assert (fault["step"], fault["loss_scale"]) == (16, 0.5)
    assert fault["values"] == {} and fault["update_skipped"]
    assert "loss scaling" in str(info.value) and "0.5" in str(info.value)
    assert fault["layer"] == "dense_a/kernel"  # the recompute found it
    for got, want in zip(model.get_weights(), start):
        np.testing.assert_array_equal(got, want)
    # the report's error box gives the scale
    from kerasft.render.html import _error_box

    box = _error_box({"state": "failed", "error": str(info.value),
                      "fault": fault})
    assert "loss scale (mixed_float16)</td><td>0.5<" in box


def test_torch_compile_records_the_eager_gradients_and_compiles_once(
        backend_name):
    """`train.jit_compile: true` on torch: the gradient tap records the same
    norms at the same steps as eager torch, and its step count does not
    make dynamo compile the update again at every step."""
    _jit_compile(True, backend_name)  # torch only
    import keras
    from torch._dynamo.utils import counters

    from kerasft.backend import seed_everything
    from kerasft.backend.gradient_tap import GradientTap

    rng = np.random.default_rng(0)
    x = rng.random((24, 4), dtype=np.float32) + 0.5  # sqrt(|t|) away from 0
    y = rng.integers(0, 2, 24)
    taps = {}
    for jit in ("auto", True):
        model = _tiny_model(keras, seed_everything, jit)
        tap = taps[jit] = GradientTap.attach(model.optimizer,
                                             model.trainable_variables)
        tap.schedule(every=4)
        graphs = []
        for _ in range(2):  # 6 steps an epoch: 1 recorded, 5 not
            model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
            graphs.append(counters["stats"]["unique_graphs"])
        if jit is True:
            assert graphs[0] > 0  # it did compile
            assert graphs[1] == graphs[0], graphs  # no new graph in epoch 2
    eager, compiled = taps["auto"], taps[True]
    assert compiled.recorded_count() == eager.recorded_count() == 12
    np.testing.assert_allclose(compiled.read_norms(), eager.read_norms(),
                               rtol=1e-5)


@pytest.mark.parametrize("fused", [True, False], ids=["gpu-fused",
                                                     "cpu-sums"])
def test_torch_gradient_check_flags_exactly_the_nonfinite_ones(
        fused, backend_name):
    """Both of torch's reductions (the fused L1 norm a GPU uses, the sums a
    CPU uses) flag a gradient exactly when it holds a NaN or inf, including
    +inf and -inf in one tensor, whose sum is NaN."""
    if backend_name != "torch":
        pytest.skip("the torch reduction")
    import torch

    from kerasft.backend.gradient_tap import _nonfinite_torch

    big = np.float32(3e38)
    grads = [
        torch.ones(5, 3),
        torch.tensor([1.0, float("nan"), 2.0]),
        torch.tensor([[float("inf"), 1.0], [0.0, -float("inf")]]),
        torch.tensor([-float("inf"), 0.0]),
        torch.tensor([big, -big / 2]),  # large but finite; sum 1.5e38
        torch.zeros(()),
        # float16 beyond its max (65504) when summed: reduced in float32
        torch.tensor([60000.0, 60000.0], dtype=torch.float16),
        torch.tensor([1.0, float("inf")], dtype=torch.float16),
    ]
    flags = _nonfinite_torch(grads, fused=fused)
    want = [False, True, True, True, False, False, False, True]
    if fused:  # the L1 norm does not cancel: 4.5e38 overflows
        want[4] = True
    assert flags.tolist() == want


def test_json_files_are_strict(tmp_path):
    from kerasft.rundir import read_json, write_json

    write_json(tmp_path / "m.json",
               {"loss": float("inf"), "acc": np.float32(0.5),
                "v": [np.nan, -np.inf, 1], "n": np.int64(3)})
    data = _strict((tmp_path / "m.json").read_text())
    assert data == {"loss": "inf", "acc": 0.5, "v": ["nan", "-inf", 1],
                    "n": 3}
    assert math.isinf(float(read_json(tmp_path / "m.json")["loss"]))


def test_exploded_loss_gets_no_fitting_advice():
    from types import SimpleNamespace

    from kerasft.render.diagnose import diagnose

    run = SimpleNamespace(metrics={
        "epoch": np.array([1.0, 2.0]), "loss": np.array([2.3, 7.7e31]),
        "accuracy": np.array([0.1, 0.1]), "val_loss": np.array([3.0, 1e30]),
    })
    findings = diagnose(run)
    assert [f.id for f in findings if f.severity != "info"] == ["diverged"]
    assert findings[0].message.startswith("diverged: the training loss "
                                          "exploded")
    assert not any("raise the learning rate" in f.text() for f in findings)

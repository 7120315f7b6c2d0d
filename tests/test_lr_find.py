"""The LR range test: its rule, the model left untouched, the CLI and
`train --lr auto` recording the rate, its plot and the report's figure."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY, only_run_dir, run_cli
from kerasft.errors import ConfigError
from kerasft.train.lr_find import learning_rates, lr_find, smooth, suggest

# ------------------------------------------------------------- the rule


def _curve(losses, start=1e-6, end=1.0):
    lrs = learning_rates(start, end, len(losses))
    return lrs, smooth(lrs, losses)


def test_suggestion_is_the_steepest_descent_inside_the_range():
    x = np.linspace(-6, 0, 60)
    # flat, a fall centred at 1e-3, a minimum near 1e-2, then divergence
    losses = 2.3 - 1.5 / (1 + np.exp(-(x + 3) * 3)) + np.exp((x + 1) * 4) * 0.05
    lrs, s = _curve(losses)
    lr, note = suggest(lrs, s, "diverged")
    assert lrs[0] <= lr <= lrs[-1]
    assert 10 ** -3.5 < lr < 10 ** -2.5, note
    assert note.startswith("steepest descent")


@pytest.mark.parametrize("losses, stopped, words", [
    (np.full(40, 2.3) + 0.01 * np.sin(np.arange(40)), "diverged", "flat"),
    (np.linspace(2.3, 9.0, 40), "diverged", "only rose"),
    (np.linspace(2.3, 1.0, 40), "end of range", "still falling"),
    (np.array([2.3, 2.0, 1.5, 1.2, 5.0]), "diverged", "too few points"),
])
def test_degenerate_curves_give_no_suggestion(losses, stopped, words):
    lrs, s = _curve(losses)
    lr, note = suggest(lrs, s, stopped)
    assert lr is None
    assert note.startswith("no suggestion") and words in note


def test_nonfinite_losses_are_left_out_of_the_smoothing():
    s = smooth([1e-3, 1e-2, 1e-1], [1.0, 2.0, float("nan")])
    assert np.isfinite(s[:2]).all() and np.isnan(s[2])


# ------------------------------------------------ the model is restored


def _small_model(keras):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True),
                  metrics=["accuracy"])
    return model


def _values(variables, keras):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def test_lr_find_leaves_model_and_optimizer_as_they_were():
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 3)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) > 0).astype("int32") + (x[:, 0, 0, 0] > 1)
    model = _small_model(keras)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # Adam has state
    variables = [*model.variables, *model.optimizer.variables,
                 *model.metrics_variables]
    before = _values(variables, keras)
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    seen = []

    def progress(i, lr, loss):  # the test really trains and moves BN stats
        seen.append((lr, loss, _values(model.get_layer("bn").non_trainable_weights, keras)))

    result = lr_find(model, batches, steps=40, start_lr=1e-5, end_lr=1e4,
                     progress=progress)
    after = _values(variables, keras)
    assert len(result.losses) >= 5
    assert not np.allclose(seen[-1][2][0], before[[v.path for v in variables].index(
        model.get_layer("bn").non_trainable_weights[0].path)])
    for v, b, a in zip(variables, before, after):
        assert np.array_equal(b, a, equal_nan=True), v.path
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(1e-3)
    lrs = result.learning_rates
    assert lrs[0] == pytest.approx(1e-5) and all(np.diff(lrs) > 0)
    if result.suggestion is not None:
        assert lrs[0] <= result.suggestion <= lrs[-1]
    else:
        assert result.note.startswith("no suggestion")
    # the test stopped on the way up (divergence or a non-finite loss)
    assert len(result.losses) < 40, result.stopped


def test_lr_find_refuses_a_schedule():
    import keras

    model = _small_model(keras)
    model.compile(optimizer=keras.optimizers.SGD(
        keras.optimizers.schedules.CosineDecay(0.1, 10)), loss="mse")
    with pytest.raises(ConfigError, match="CosineDecay"):
        lr_find(model, [(np.zeros((2, 8, 8, 3)), np.zeros((2, 3)))], steps=3)


# ------------------------------------------------------------ the CLI

AUTO = [*TINY, "--set", "record.enabled=false", "--set", "lr_find.steps=20",
        "--set", "lr_find.start_lr=1e-5", "--set", "lr_find.end_lr=10"]


def test_train_lr_auto_records_rate_plot_and_report(cli, tmp_path):
    r = cli(["train", "-c", "quickstart", "--epochs", "1", "--plan", "head",
             "--lr", "auto", *AUTO, "--out", tmp_path])
    assert r.code == 0, r
    run = only_run_dir(tmp_path)
    found = json.loads((run / "lr_find" / "phase-1-head.json").read_text())
    phases = json.loads((run / "phases.json").read_text())
    assert phases[0]["lr_find"] == "lr_find/phase-1-head.json"
    assert phases[0]["learning_rate"] == found["suggestion"]
    lrs = found["learning_rates"]
    assert lrs[0] <= found["suggestion"] <= lrs[-1]
    assert found["info"]["phase"] == "head" and "initial weights" in found["info"]["weights"]
    assert (run / "lr_find" / "phase-1-head.png").stat().st_size > 10_000
    assert f"{found['suggestion']:.3g}" in r.out
    page = (run / "report" / "index.html").read_text()
    assert "lr_find-1.png" in page and (run / "report" / "lr_find-1.png").exists()
    assert f"Chosen: {found['suggestion']:.3g}" in page
    assert json.loads((run / "status.json").read_text())["state"] == "completed"


def test_lr_find_cli_later_phase_says_which_weights(cli, tmp_path):
    r = cli(["lr-find", "-c", "quickstart", "--plan", "phased", "--epochs",
             "2", "--phase", "2", "--set", "plan.unfreeze=1", *TINY,
             "--steps", "8", "--out", tmp_path])
    assert r.code == 0, r
    data = json.loads((tmp_path / "phase-2-finetune.json").read_text())
    assert (tmp_path / "phase-2-finetune.png").exists()
    assert data["info"]["stages"] == [5]
    assert "not those phase 1 would leave" in data["info"]["weights"]
    assert "not those phase 1 would leave" in r.out
    assert len(data["losses"]) <= 8
    if data["suggestion"] is None:
        assert data["note"] in r.out
    else:
        assert data["learning_rates"][0] <= data["suggestion"] <= data["learning_rates"][-1]


@pytest.mark.parametrize("argv, words", [
    (["train", "--lr", "abc"], ["--lr", "'abc'", "auto"]),
    (["train", "--lr", "-1"], ["optimizer.learning_rate", "-1"]),
    (["train", "--set", "optimizer.learning_rate=fast"],
     ["optimizer.learning_rate", "'fast'", "auto"]),
    (["lr-find", "--plan", "phased", "--epochs", "2", "--phase", "3"],
     ["--phase", "1 to 2", "3"]),
    (["lr-find", "--steps", "1"], ["lr_find.steps", "1"]),
    (["lr-find", "--from", "no/such/run"], ["--from", "no/such/run"]),
])
def test_bad_lr_flags_are_one_line_errors(cli, tmp_path, argv, words):
    r = run_cli([*argv[:1], "-c", "quickstart", *argv[1:],
                 "--out", tmp_path / "out"])
    assert r.code == 2, r
    assert r.err.startswith("Error: ") and r.err.count("\n") == 1, r.err
    for w in words:
        assert w in r.err
    assert not (tmp_path / "out").exists()

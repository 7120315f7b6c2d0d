"""Discriminative learning rates: per-stage multipliers of the phase's rate.

The backend comes from KERAS_BACKEND (tox runs this on torch, tensorflow
and jax). The update-size tests run one real training step
(`train_on_batch`, i.e. each backend's own compiled train step) on a tiny
model whose layers carry ResNet stage names, from the same weights and
batch with and without the multipliers, and compare each variable's update
``w_after - w_before``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import only_run_dir
from kerasft.config import OptimizerConfig, PlanConfig, config_from_dict
from kerasft.errors import ConfigError

# One layer per stage kind the multipliers tell apart (conv1 = the stem).
LAYERS = ("conv1_conv", "conv3_block1_1_conv", "conv5_block2_3_conv", "head")
DECAY = 0.5  # head x1, conv5 x0.5, conv3 x0.125, conv1 x0.03125


def _tiny_model():
    import keras

    inputs = keras.Input((6,))
    x = inputs
    for name in LAYERS[:-1]:
        x = keras.layers.Dense(5, activation="tanh", name=name)(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    return keras.Model(inputs, outputs)


def _batch():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(16, 6)).astype("float32"),
            rng.normal(size=(16, 3)).astype("float32"))


def _phase(lr_factor=1.0, decay=DECAY):
    from kerasft.model.plan import Phase, stage_multipliers

    plan = PlanConfig(kind="full", lr_decay_per_stage=decay)
    return Phase("full", 1, frozenset(range(1, 6)), lr_factor,
                 stage_multipliers(plan))


def _one_step(weights, opt_cfg, phase, total_steps=1, start_iteration=0,
              loss_scale=False, tap=False):
    """Per-variable update of one train step of `phase`'s optimizer (as
    `kerasft train` makes it); the tap's gradient norms."""
    import keras

    from kerasft.backend.gradient_tap import GradientTap
    from kerasft.backend.lr_multipliers import lr_multipliers, set_lr_multipliers
    from kerasft.train.runner import phase_optimizer

    model = _tiny_model()
    model.set_weights(weights)
    optimizer = phase_optimizer(opt_cfg, phase, model, total_steps)
    if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        multipliers = lr_multipliers(optimizer)
        if multipliers:
            # Set again: a new map replaces the old (no double scaling).
            set_lr_multipliers(optimizer, dict.fromkeys(multipliers, 7.0))
            set_lr_multipliers(optimizer, multipliers)
    model.compile(optimizer=optimizer, loss="mse")
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(start_iteration)
    grad_tap = (GradientTap.attach(model.optimizer, model.trainable_variables)
                if tap else None)
    before = {v.path: np.array(v, dtype=np.float64)
              for v in model.trainable_variables}
    model.train_on_batch(*_batch())
    updates = {v.path: np.array(v, dtype=np.float64) - before[v.path]
               for v in model.trainable_variables}
    norms = (dict(zip(grad_tap.names, grad_tap.read_norms()))
             if grad_tap else None)
    return updates, norms


def _max_relative_error(scaled, base, multipliers):
    """Largest relative deviation of ``scaled`` from ``multiplier x base``
    over variables, by norm and entry-wise (relative to the update's
    largest entry)."""
    worst = 0.0
    for path, d in scaled.items():
        expected = multipliers[path] * base[path]
        assert np.abs(expected).max() > 0, path  # the step moved it
        by_norm = abs(np.linalg.norm(d) / np.linalg.norm(expected) - 1)
        by_entry = np.abs(d - expected).max() / np.abs(expected).max()
        worst = max(worst, by_norm, by_entry)
    return worst


@pytest.fixture(scope="module")
def setup():
    import keras

    from kerasft.model.plan import variable_lr_multipliers

    keras.utils.set_random_seed(3)
    model = _tiny_model()
    return model.get_weights(), variable_lr_multipliers(model, _phase())


CASES = {
    # plain SGD: the update is -lr x multiplier x gradient
    "sgd": dict(name="sgd", learning_rate=0.2, momentum=0.0),
    "sgd_momentum": dict(name="sgd", learning_rate=0.2, momentum=0.9),
    # Adam's step does not depend on the gradient's scale: only a scaled
    # learning rate can scale it
    "adam": dict(name="adam", learning_rate=0.01),
    # decoupled weight decay is part of the step and scales with it
    "adamw": dict(name="adamw", learning_rate=0.01, weight_decay=0.5),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_stage_moves_by_its_multiplier(setup, case):
    weights, multipliers = setup
    assert sorted(set(multipliers.values())) == [DECAY**5, DECAY**3, DECAY, 1]
    cfg = OptimizerConfig(**CASES[case])
    scaled, _ = _one_step(weights, cfg, _phase())
    base, _ = _one_step(weights, cfg, _phase(decay=None))
    error = _max_relative_error(scaled, base, multipliers)
    print(f"{case}: max relative error {error:.2e}")
    assert error < 1e-3


def test_multipliers_compose_with_schedule_tap_and_loss_scaling(setup):
    """Plain SGD, cosine schedule part-way through, the phase's lr_factor,
    a `GradientTap` and a `LossScaleOptimizer`: each stage's update is
    base rate x lr_factor x schedule x multiplier x its gradient."""
    weights, multipliers = setup
    cfg = OptimizerConfig(name="sgd", learning_rate=0.4, momentum=0.0,
                          schedule="cosine")
    kwargs = dict(total_steps=4, start_iteration=1, loss_scale=True,
                  tap=True)
    scaled, norms = _one_step(weights, cfg, _phase(0.5), **kwargs)
    base, _ = _one_step(weights, cfg, _phase(0.5, decay=None), **kwargs)
    assert _max_relative_error(scaled, base, multipliers) < 1e-3
    rate = 0.4 * 0.5 * 0.5 * (1 + math.cos(math.pi * 1 / 4))
    for path, d in scaled.items():
        expected = rate * multipliers[path] * norms[path]
        assert np.linalg.norm(d) == pytest.approx(expected, rel=1e-3), path


def test_checkpointed_optimizer_state_resumes_the_same_steps(setup):
    """A checkpoint of a scaled optimizer holds the optimizer's own state
    (the scaling adds no variable), and a resumed step equals the step the
    run would have taken."""
    import keras

    from kerasft.backend.checkpoint import optimizer_state, restore_optimizer
    from kerasft.train.runner import phase_optimizer

    weights, _ = setup
    cfg = OptimizerConfig(name="adam", learning_rate=0.01)

    def compiled(w, phase):
        model = _tiny_model()
        model.set_weights(w)
        model.compile(optimizer=phase_optimizer(cfg, phase, model, 2),
                      loss="mse")
        return model

    continued = compiled(weights, _phase())
    for _ in range(2):
        continued.train_on_batch(*_batch())
    first = compiled(weights, _phase())
    first.train_on_batch(*_batch())
    state = optimizer_state(first.optimizer)
    plain = compiled(weights, _phase(decay=None))
    plain.train_on_batch(*_batch())
    assert sorted(state) == sorted(optimizer_state(plain.optimizer))
    resumed = compiled(first.get_weights(), _phase())
    restore_optimizer(resumed.optimizer, resumed.trainable_variables, state)
    resumed.train_on_batch(*_batch())
    for a, b in zip(continued.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert keras.ops.convert_to_numpy(resumed.optimizer.iterations) == 2


# ---------------------------------------------------------------- config


def _cfg(**plan):
    return config_from_dict({"plan": {"kind": "full", **plan}})


def test_decay_gives_each_stage_a_power_of_it():
    from kerasft.model.plan import make_phases, stage_multipliers

    cfg = _cfg(lr_decay_per_stage=0.3)
    m = stage_multipliers(cfg.plan)
    assert m == pytest.approx({"head": 1, "conv5": 0.3, "conv4": 0.09,
                               "conv3": 0.027, "conv2": 0.0081,
                               "conv1": 0.00243})
    cfg = config_from_dict(
        {"plan": {"kind": "phased", "unfreeze": 2, "finetune_lr_factor": 0.1,
                  "lr_multipliers": {"conv5": 0.5, "conv4": 0.1}},
         "optimizer": {"learning_rate": 0.01}},
        ["plan.lr_multipliers.conv4=0.2"])
    head, finetune = make_phases(cfg.plan, cfg.train)
    assert head.stage_learning_rates(0.01) == {"head": 0.01}
    assert finetune.stage_learning_rates(0.01) == pytest.approx(
        {"head": 1e-3, "conv5": 5e-4, "conv4": 2e-4})
    assert "conv4 x0.2" in finetune.describe()


@pytest.mark.parametrize("plan, words", [
    ({"lr_decay_per_stage": -0.3}, ["plan.lr_decay_per_stage", "-0.3",
                                    "(0, 1]"]),
    ({"lr_decay_per_stage": 0}, ["plan.lr_decay_per_stage", "Received: 0"]),
    ({"lr_decay_per_stage": 3}, ["plan.lr_decay_per_stage", "Received: 3",
                                 "plan.lr_multipliers"]),
    ({"lr_decay_per_stage": "fast"}, ["plan.lr_decay_per_stage", "'fast'",
                                      "float"]),
    ({"lr_multipliers": 0.3}, ["plan.lr_multipliers", "mapping", "0.3"]),
    ({"lr_multipliers": {"conv6": 1, "conv1": 1, "conv2": 1, "conv3": 1,
                         "conv4": 1, "conv5": 1}},
     ["plan.lr_multipliers", "conv6", "head, conv5"]),
    ({"lr_multipliers": {"conv5": 0, "conv4": 1, "conv3": 1, "conv2": 1,
                         "conv1": 1}},
     ["plan.lr_multipliers.conv5", "Received: 0", "> 0"]),
    ({"lr_multipliers": {"conv5": "x", "conv4": 1}},
     ["plan.lr_multipliers.conv5", "'x'", "float"]),
    ({"lr_multipliers": {"conv5": 0.5}},
     ["plan.lr_multipliers", "conv4, conv3, conv2, conv1", "not listed"]),
    ({"lr_decay_per_stage": 0.3, "lr_multipliers": {"conv5": 1}},
     ["plan.lr_decay_per_stage", "plan.lr_multipliers", "not both"]),
])
def test_bad_multipliers_are_one_line_config_errors(plan, words):
    with pytest.raises(ConfigError) as e:
        _cfg(**plan)
    message = str(e.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_bad_multiplier_from_the_cli_exits_2(cli):
    r = cli(["train", "-c", "quickstart",
             "--set", "plan.lr_multipliers.conv7=0.1"])
    assert r.code == 2, r
    assert "plan.lr_multipliers" in r.err and "conv7" in r.err
    assert "Traceback" not in r.err


# ---------------------------------------------------------------- a run


def test_train_records_stage_rates_and_applies_them(cli, tmp_path):
    """A phased run: phases.json holds each phase's per-stage rates, and a
    stage at a vanishing multiplier keeps its kernels while its neighbour's
    move (the biases start at 0, where even 1e-30 x a step shows)."""
    from test_train import _Weights

    r = cli(["train", "-c", "quickstart", "--epochs", "2",
             "--steps-per-epoch", "1", "--batch-size", "4",
             "--max-train-images", "24", "--max-test-images", "8",
             "--set", "data.validation_fraction=0.2",
             "--plan", "phased", "--set", "plan.head_epochs=1",
             "--set", "plan.unfreeze=2",
             "--set", "plan.lr_multipliers={conv5: 1, conv4: 1.0e-30}",
             "--optimizer", "sgd", "--lr", "0.05",
             "--set", "optimizer.schedule=constant",
             "--set", "record.enabled=false", "--no-report",
             "--out", tmp_path])
    assert r.code == 0, r
    assert "conv4 x1e-30" in r.out
    run = only_run_dir(tmp_path)
    phases = json.loads((run / "phases.json").read_text())
    assert phases[0]["learning_rates"] == {"head": 0.05}
    assert phases[1]["learning_rates"] == pytest.approx(
        {"head": 0.005, "conv5": 0.005, "conv4": 5e-33})
    assert phases[1]["lr_multipliers"]["conv3"] == 1.0  # frozen: unused
    read = _Weights(run)
    e1 = run / "checkpoints/epoch-001.weights.h5"
    e2 = run / "checkpoints/epoch-002.weights.h5"

    def same(layer):
        return np.array_equal(read(e1, layer)[0], read(e2, layer)[0])

    assert not same("conv5_block3_3_conv") and not same("head")
    assert same("conv4_block6_3_conv")


# ---------------------------------------------------------------- figures


def _discriminative_run(path):
    """The synthetic run of the structure tests, its fine-tune phase at
    decay 0.3, with an update-ratio table (stage s moves 0.3**(5-s) as
    much as the head)."""
    from test_render_structure_predictions import LAYERS, _phases, make_run

    make_run(path)
    multipliers = {"head": 1.0, "conv5": 0.3, "conv4": 0.09, "conv3": 0.027,
                   "conv2": 0.0081, "conv1": 0.00243}
    phases = _phases()
    for phase, rate, trained in ((phases[0], 0.01, ["head"]),
                                 (phases[1], 0.001, ["head", "conv5",
                                                     "conv4"])):
        phase["lr_multipliers"] = multipliers
        phase["learning_rates"] = {n: rate * multipliers[n] for n in trained}
    (path / "phases.json").write_text(json.dumps(phases))
    kernels = [f"{layer['name']}/kernel" for layer in LAYERS
               if not layer["batchnorm"]]
    lines = ["step,epoch," + ",".join(kernels)]
    for step in range(1, 13):
        epoch = (step - 1) // 4 + 1
        row = []
        for k in kernels:
            name = "head" if k.startswith("head") else k[:5]
            trains = name == "head" or (epoch >= 3 and name in ("conv4",
                                                                "conv5"))
            row.append(2e-3 * multipliers[name] if trains else 0.0)
        lines.append(f"{step},{epoch}," + ",".join(map(str, row)))
    (path / "record" / "update_ratios.csv").write_text("\n".join(lines) + "\n")
    return path


def test_figures_show_each_stages_rate(tmp_path):
    from kerasft.record.store import load_run
    from kerasft.render import gradients, structure
    from kerasft.render.base import RenderOptions

    run = load_run(_discriminative_run(tmp_path / "run"))
    [result] = structure.render(run, RenderOptions())
    cells = [t.get_text() for t in result.figure.axes[0].texts]
    assert any(t.endswith("lr 3.0e-04 (×0.3)") for t in cells), cells
    assert any(t.endswith("lr 9.0e-05 (×0.09)") for t in cells), cells
    assert any(t.endswith("lr 1.0e-02") for t in cells), cells  # head x1
    assert not any("lr" in t for t in cells if t.startswith("frozen"))

    figure = gradients.update_ratios(run, RenderOptions())
    labels = figure.figure.axes[0].get_legend_handles_labels()[1]
    assert labels[:3] == ["head median (lr ×1)", "conv5 median (lr ×0.3)",
                          "conv4 median (lr ×0.09)"]
    note = figure.caption  # measured per stage: in the caption, no warning
    assert "conv5 ×0.3: 6.0e-04" in note and "conv4 ×0.09: 1.8e-04" in note
    assert not figure.notes

    # Without multipliers the figure is as before: no stage lines.
    phases = json.loads((run.path / "phases.json").read_text())
    for phase in phases:
        phase["lr_multipliers"] = dict.fromkeys(phase["lr_multipliers"], 1.0)
    (run.path / "phases.json").write_text(json.dumps(phases))
    plain = gradients.update_ratios(load_run(run.path), RenderOptions())
    labels = plain.figure.axes[0].get_legend_handles_labels()[1]
    assert labels == ["median of trainable kernels"]

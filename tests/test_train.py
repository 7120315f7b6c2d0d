"""`kerasft train` end to end on the active backend (tiny runs)."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import yaml

from conftest import TINY, only_run_dir
from test_init import QUICKSTART_START


class _Weights:
    """Reads layers' weights from a run's weights files, by layer name.

    Keras's .weights.h5 keys variables by generic names (``conv2d_9``), so
    each file is loaded into the run's own model to read it by layer name.
    """

    def __init__(self, run):
        import keras

        self.model = keras.saving.load_model(run / "model.keras")

    def __call__(self, path, layer):
        self.model.load_weights(path)
        return [np.asarray(w) for w in self.model.get_layer(layer).get_weights()]


def test_quickstart_tiny_end_to_end(recorded, backend_name):
    """What `kerasft train -c quickstart` leaves behind (the suite's shared
    tiny run: 2 epochs, head then fine-tune, every recorder, the report)."""
    run, r = recorded
    assert re.fullmatch(rf"\d{{8}}-\d{{6}}-quickstart-{backend_name}", run.name)
    assert "test accuracy" in r.out and str(run) in r.out

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["train"]["epochs"] == 2 and cfg["data"]["batch_size"] == 8
    env = json.loads((run / "env.json").read_text())
    assert env["backend"] == backend_name and env["seed"] == 1337
    assert {"keras", "framework", "python", "device"} <= env.keys()
    # no flag: the seed alone gives the start every backend gets
    assert env["initial_weights_sha256"] == QUICKSTART_START
    assert env["initial_weights_drawn"].startswith("every variable: numpy")
    assert json.loads((run / "status.json").read_text())["state"] == "completed"

    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for row in rows:
        for key in ("loss", "accuracy", "val_loss", "val_accuracy",
                    "learning_rate", "images_per_second"):
            assert np.isfinite(float(row[key])), key
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    # weights every epoch, the optimizer state of the latest only
    assert ckpts == ["epoch-001.json", "epoch-001.weights.h5",
                     "epoch-002.json", "epoch-002.optimizer.npz",
                     "epoch-002.weights.h5"]
    status = json.loads((run / "status.json").read_text())
    assert status["pid"] and status["host"] and status["heartbeat"]

    test = json.loads((run / "test_metrics.json").read_text())
    assert 0.0 <= test["test"]["accuracy"] <= 1.0 and test["test_images"] == 16
    assert "accuracy" in test["train_inference_mode"]
    assert (run / "report" / "index.html").is_file()

    weights = _Weights(run)
    assert weights.model.output_shape == (None, 10)
    final = np.asarray(weights.model.get_layer("head").kernel)
    # the checkpoint of the last epoch holds the final weights
    np.testing.assert_array_equal(
        weights(run / "checkpoints/epoch-002.weights.h5", "head")[0], final)


def _occupy_run_names(parent, name, backend, seconds=600):
    """Creates the run directories a run started in the next `seconds`
    would be named, each holding a file that must survive."""
    import time

    now = time.time()
    taken = []
    for s in range(-1, seconds):
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now + s))
        d = parent / f"{stamp}-{name}-{backend}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "mine.txt").write_text("not kerasft's")
        taken.append(d)
    return taken


def test_phased_plan_moves_only_what_it_unfreezes(cli, tmp_path,
                                                  backend_name):
    # Every name this run could get is taken already: it must make its
    # own directory and never write into another's.
    taken = _occupy_run_names(tmp_path, "quickstart", backend_name)
    r = cli(["train", "-c", "quickstart", "--epochs", "2", *TINY,
             "--plan", "phased", "--set", "plan.head_epochs=1",
             "--set", "plan.unfreeze=1", "--set", "plan.batchnorm=inference",
             "--optimizer", "sgd", "--lr", "0.05",
             "--set", "optimizer.schedule=constant",
             "--no-report", "--set", "record.enabled=false",
             "--out", tmp_path])
    assert r.code == 0, r
    (run,) = set(p for p in tmp_path.iterdir() if p.is_dir()) - set(taken)
    assert re.fullmatch(r".*-quickstart-\w+-2", run.name), run.name
    assert all([p.name for p in d.iterdir()] == ["mine.txt"] for d in taken)
    phases = json.loads((run / "phases.json").read_text())
    assert [p["name"] for p in phases] == ["head", "finetune"]
    assert phases[0]["params"]["trainable"] < phases[1]["params"]["trainable"]
    init = run / "initial.weights.h5"
    e1 = run / "checkpoints/epoch-001.weights.h5"
    e2 = run / "checkpoints/epoch-002.weights.h5"

    read = _Weights(run)

    def same(layer, a, b):
        return all(np.array_equal(x, y)
                   for x, y in zip(read(a, layer), read(b, layer)))

    # head phase: only the head moved
    assert not same("head", init, e1)
    assert same("conv5_block3_3_conv", init, e1)
    # fine-tune phase (unfreeze=1): conv5 moved, conv4 did not
    assert not same("conv5_block3_3_conv", e1, e2)
    assert same("conv4_block6_3_conv", e1, e2)
    # BatchNorm in inference mode: moving statistics never changed
    assert same("conv5_block3_3_bn", init, e2)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["phase"] for r in rows] == ["head", "finetune"]
    assert float(rows[1]["learning_rate"]) == pytest.approx(0.005)


def test_tfds_path_end_to_end_with_mock_data(cli, tmp_path, tfds_mock):
    with tfds_mock(num_examples=24):
        r = cli(["train", "-c", "cifar10_resnet50", "--weights", "none",
                 "--image-size", "32", "--epochs", "2", *TINY,
                 "--set", "plan.head_epochs=1",
                 # the recorders do not depend on the data source
                 "--set", "record.enabled=false",
                 "--out", tmp_path])
    assert r.code == 0, r
    run = only_run_dir(tmp_path)
    data = json.loads((run / "data.json").read_text())
    assert len(data["class_names"]) == 10
    assert "tensorflow-datasets cifar10" in data["description"]
    # the report names the classes tfds gave (CIFAR-10's)
    page = (run / "report" / "index.html").read_text()
    assert "tensorflow-datasets cifar10" in page


def test_default_config_offline_stops_fast_with_download_error(
    cli, tmp_path
):
    import time

    t = time.perf_counter()
    r = cli(["train", "--set", f"data.data_dir={tmp_path / 'tfds'}",
             "--out", tmp_path / "runs"])
    assert time.perf_counter() - t < 60
    assert r.code == 2, r
    assert r.err.startswith("Error: ") and "Traceback" not in r.err
    assert "cifar10" in r.err and "quickstart" in r.err
    assert not (tmp_path / "runs").exists() or not any(
        (tmp_path / "runs").iterdir())


@pytest.mark.slow
def test_full_quickstart_beats_chance_clearly(cli, tmp_path):
    """The whole offline quickstart (about 2 minutes on 2 CPU cores)."""
    r = cli(["train", "-c", "quickstart", "--out", tmp_path])
    assert r.code == 0, r
    test = json.loads((only_run_dir(tmp_path) / "test_metrics.json").read_text())
    assert test["test"]["accuracy"] > 0.7  # chance is 0.1
    assert test["train_inference_mode"]["accuracy"] > 0.7


def test_weights_from_a_run_dir_load_its_final_backbone_and_a_new_head(
        cli, recorded_run, tmp_path):
    """Transfer (`--weights RUN_DIR`): the shared run's final weights
    (model.keras) become the new run's backbone; the head is new even
    though the class counts match; env.json says what was loaded."""
    r = cli(["train", "-c", "quickstart", *TINY, "--epochs", "1",
             "--weights", recorded_run, "--set", "record.enabled=false",
             "--no-report", "--out", tmp_path])
    assert r.code == 0, r
    run = only_run_dir(tmp_path)
    assert f"the backbone of {recorded_run.resolve()}" in r.out
    env = json.loads((run / "env.json").read_text())
    assert env["initial_weights_loaded"] == "backbone"
    assert env["initial_weights_run"] == str(recorded_run.resolve())
    assert env["initial_weights_file"] == str(
        recorded_run.resolve() / "model.keras")
    read = _Weights(recorded_run)  # holds the shared run's final weights
    final = {l.name: [np.asarray(w) for w in l.get_weights()]
             for l in read.model.layers if l.weights}
    start = read.model  # now filled with the new run's initial weights
    start.load_weights(run / "initial.weights.h5")
    backbone = [n for n in final if n != "head"]
    assert len(backbone) > 100
    for name in backbone:
        for a, b in zip(final[name], start.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, np.asarray(b), err_msg=name)
    for a, b in zip(final["head"], start.get_layer("head").get_weights()):
        assert not np.array_equal(a, np.asarray(b))
    # the new head is the seed's: the head a weights-none run of the same
    # seed starts with (kerasft.model.init), on every backend
    from test_init import _quickstart_model

    fresh = _quickstart_model().get_layer("head").get_weights()
    for a, b in zip(fresh, start.get_layer("head").get_weights()):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

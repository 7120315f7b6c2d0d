"""Cross-backend parity: one tiny config on torch, tensorflow and jax.

All three runs get the same command line, with no flag for the start: the
seed alone gives the same initial weights on every backend (numpy draws,
kerasft.model.init). Every tolerance in kerasft.compare.tolerances must
hold for both pairs. Runs in its own tox env (`tox -e parity`), each backend
in a subprocess of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import REPO, only_run_dir

pytestmark = pytest.mark.parity

ARGS = [
    "-c", "quickstart", "--epochs", "1", "--steps-per-epoch", "4",
    "--batch-size", "16", "--max-train-images", "128",
    "--max-test-images", "32", "--optimizer", "sgd", "--plan", "full",
    "--set", "plan.batchnorm=inference", "--lr", "0.001",
    "--set", "optimizer.momentum=0.0", "--set", "optimizer.schedule=constant",
    # Bounded steps keep the run out of the chaotic regime (see
    # kerasft/compare/tolerances.py): without clipping, a 1e-6 change of the
    # start moved the validation loss by 4.1e-2 after 4 steps; with it, 2.1e-7.
    "--set", "optimizer.clipnorm=1.0",
    "--set", "record.every_steps=1", "--set", "record.embedding_size=32",
    "--set", "record.probe_size=16", "--set", "train.verbose=0",
    "--deterministic", "--no-report",
]
BACKENDS = ("torch", "tensorflow", "jax")


def _train(backend, out, extra=()):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    r = subprocess.run(
        [sys.executable, "-m", "kerasft", "train", *ARGS, *extra,
         "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return only_run_dir(out)


@pytest.fixture(scope="module")
def runs(module_tmp):
    return {b: _train(b, module_tmp / b) for b in BACKENDS}


def test_all_three_start_from_the_same_weights_with_no_flag(runs):
    import json

    from kerasft import load_run
    from kerasft.compare.metrics import checkpoint_variables, read_checkpoint

    prints = {b: load_run(p).env["initial_weights_sha256"]
              for b, p in runs.items()}
    assert len(set(prints.values())) == 1, prints
    assert {load_run(p).env["backend"] for p in runs.values()} == set(BACKENDS)
    # and every variable, number for number, from each run's saved start
    layers = json.loads((runs["torch"] / "layers.json").read_text())
    mapping = checkpoint_variables(runs["torch"], layers)
    starts = {b: read_checkpoint(p / "initial.weights.h5", mapping)
              for b, p in runs.items()}
    assert len(starts["torch"]) == len(mapping) > 300
    for b in BACKENDS[1:]:
        assert starts[b].keys() == starts["torch"].keys()
        for path, values in starts["torch"].items():
            np.testing.assert_array_equal(starts[b][path], values,
                                          err_msg=f"{b} {path}")


@pytest.mark.parametrize("other", BACKENDS[1:])
def test_every_tolerance_holds(runs, other):
    from kerasft import load_run
    from kerasft.compare import parity_checks

    checks = parity_checks(load_run(runs["torch"]), load_run(runs[other]))
    names = {c.name for c in checks}
    assert "epoch-0 weight histogram count difference" in names
    assert "epoch-0 probe activation l2 rel. diff" in names
    assert "epoch-0 probe gradient norm rel. diff" in names
    assert "epoch-1 loss rel. diff" in names
    assert "epoch-1 weight histogram distance (bins)" in names
    # where the model looks, from the same start: Grad-CAM and saliency
    assert "epoch-0 Grad-CAM max diff / map max" in names
    assert "epoch-0 Grad-CAM 1 - correlation" in names
    assert "epoch-0 saliency max diff / map max" in names
    for c in checks:  # the measured values, for the log (pytest -s)
        print(f"torch vs {other}: {c}")
    failures = [str(c) for c in checks if not c.ok]
    assert not failures, "\n".join(failures)


def test_explain_gives_the_same_maps_on_every_backend(runs, tmp_path):
    """One model file (the torch run's), explained by each backend."""
    from PIL import Image

    from kerasft.compare.tolerances import (
        ATTENTION_EPOCH0_DECORRELATION,
        PROBE_GRADIENT_EPOCH0_REL,
        map_differences,
    )

    image = tmp_path / "digit.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
        image)
    maps = {}
    for b in BACKENDS:
        env = dict(os.environ, KERAS_BACKEND=b, TF_CPP_MIN_LOG_LEVEL="2")
        r = subprocess.run(
            [sys.executable, "-m", "kerasft", "explain", str(runs["torch"]),
             str(image), "--out", str(tmp_path / b)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        with np.load(tmp_path / b / "digit.npz") as a:
            maps[b] = {k: a[k] for k in ("cam", "cam_linear", "saliency",
                                         "probabilities")}
    assert np.abs(maps["torch"]["cam_linear"]).max() > 0
    for b in BACKENDS[1:]:
        # Grad-CAM before its ReLU: see map_differences
        for key in ("cam_linear", "saliency"):
            rel, decorrelation = map_differences(maps["torch"][key][None],
                                                 maps[b][key][None])
            print(f"explain {key} torch vs {b}: max diff / max {rel[0]:.2e}, "
                  f"1 - correlation {decorrelation[0]:.2e}")
            assert rel[0] <= PROBE_GRADIENT_EPOCH0_REL, (b, key, rel)
            assert decorrelation[0] <= ATTENTION_EPOCH0_DECORRELATION
        np.testing.assert_allclose(maps[b]["probabilities"],
                                   maps["torch"]["probabilities"], atol=1e-5)


def test_compare_writes_figures_table_and_checks(runs, tmp_path):
    from conftest import run_cli

    out = tmp_path / "cmp"
    r = run_cli(["compare", *(runs[b] for b in BACKENDS), "--out", out])
    assert r.code == 0, r
    assert r.out.count("14/14 tolerance checks pass") == 2
    for key in ("compare_curves", "compare_hist_distance",
                "compare_weight_diff", "compare_probe", "compare_embeddings"):
        assert (out / f"{key}.png").stat().st_size > 10_000, key
    page = (out / "index.html").read_text()
    assert "Largest divergences" in page and "Tolerance checks" in page
    assert "FAILS" not in page
    import json

    table = json.loads((out / "divergences.json").read_text())
    assert table["divergences"] and table["checks"]


def test_compare_skips_what_another_model_or_start_cannot_share(
    runs, tmp_path
):
    from conftest import run_cli

    other = tmp_path / "other-run"
    shutil.copytree(runs["jax"], other)
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    cfg["model"]["arch"] = "resnet101"
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = run_cli(["compare", runs["torch"], other, "--out", tmp_path / "c1"])
    assert r.code == 0, r
    assert "different architectures (model.arch resnet50 vs resnet101" in r.out
    assert (tmp_path / "c1" / "compare_curves.png").is_file()

    moved = tmp_path / "moved-start"
    shutil.copytree(runs["jax"], moved)
    env = (moved / "env.json").read_text().replace(
        '"initial_weights_sha256": "', '"initial_weights_sha256": "0')
    (moved / "env.json").write_text(env)
    r = run_cli(["compare", runs["torch"], moved, "--out", tmp_path / "c2"])
    assert r.code == 0 and "started from different weights" in r.out, r
    assert "skipped Weight-histogram distance" in r.out

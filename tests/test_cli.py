"""The command line itself: version, help, python -m."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import kerasft
from conftest import REPO


def test_version(cli):
    r = cli(["--version"])
    assert r.code == 0 and r.out.strip() == f"kerasft {kerasft.__version__}"


def test_help_lists_train(cli):
    r = cli(["--help"])
    assert r.code == 0 and "train" in r.out


def test_train_help_lists_config_and_shorthands(cli):
    r = cli(["train", "--help"])
    assert r.code == 0
    for flag in ("--config", "--set", "--out", "--backend", "--epochs",
                 "--weights"):
        assert flag in r.out


def test_no_command_prints_help_and_exits_2(cli):
    r = cli([])
    assert r.code == 2 and "usage" in r.out


def test_python_dash_m_works_without_importing_keras():
    out = subprocess.run(
        [sys.executable, "-m", "kerasft", "--version"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0 and "kerasft" in out.stdout
    probe = subprocess.run(
        [sys.executable, "-c",
         "import kerasft, sys; print('keras' in sys.modules)"],
        capture_output=True, text=True, timeout=60,
    )
    assert probe.stdout.strip() == "False"


# TensorFlow's C++ start-up lines (absl, oneDNN, cpu_feature_guard).
_TF_NOISE = re.compile(
    r"absl::InitializeLog|oneDNN custom operations|cpu_feature_guard|"
    r"^[IWE]0000 |TF_ENABLE_ONEDNN_OPTS|tensorflow/core", re.M)


def test_saving_a_model_on_torch_or_jax_loads_no_tensorflow(tmp_path):
    """Keras's `model.save` imported TensorFlow (and its C++ start-up
    lines) on every torch and jax run; the CLI stops that."""
    import keras

    if keras.backend.backend() == "tensorflow":
        pytest.skip("about the torch and jax backends")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = (
        "import sys, keras; from kerasft import backend;"
        " backend.keep_tensorflow_unloaded();"
        " m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]);"
        " m.compile('adam', 'mse'); m.fit(keras.ops.ones((4, 3)),"
        " keras.ops.ones((4, 2)), verbose=0);"
        f" m.save({str(tmp_path / 'm.keras')!r});"
        " print('tensorflow loaded:', 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=300, cwd=REPO, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "tensorflow loaded: False" in out.stdout
    assert not _TF_NOISE.search(out.stderr), out.stderr[-2000:]
    assert (tmp_path / "m.keras").is_file()


@pytest.mark.slow
def test_torch_and_jax_runs_print_no_tensorflow_lines(tmp_path):
    """A quickstart on torch or jax never loads TensorFlow, so its C++
    start-up lines cannot bury kerasft's own."""
    import keras

    if keras.backend.backend() == "tensorflow":
        pytest.skip("about the torch and jax backends")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = ("import sys; from kerasft.cli import main; rc = main(sys.argv[1:]);"
            " print('tensorflow loaded:', 'tensorflow' in sys.modules);"
            " sys.exit(rc)")
    out = subprocess.run(
        [sys.executable, "-c", code, "train", "-c", "quickstart",
         "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "4",
         "--max-train-images", "24", "--max-test-images", "8",
         "--set", "data.validation_fraction=0.2", "--no-report",
         "--set", "record.probe_size=4", "--set", "record.embedding_size=4",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "tensorflow loaded: False" in out.stdout
    assert not _TF_NOISE.search(out.stderr), out.stderr[-2000:]

"""The command line itself: version, help, python -m."""

from __future__ import annotations

import subprocess
import sys

import kerasft


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

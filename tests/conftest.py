"""Shared test harness.

The backend comes from KERAS_BACKEND (tox sets it per env). Every test runs
with the network blocked: sockets may only reach loopback, so nothing can be
downloaded and the offline code paths are the ones exercised.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent

# A tiny quickstart: 2 steps per epoch, few images, so one run is seconds.
TINY = [
    "--steps-per-epoch", "2",
    "--batch-size", "8",
    "--max-train-images", "64",
    "--max-test-images", "16",
    "--set", "data.validation_fraction=0.05",
]

# The default suite runs every test on every backend, except a few long
# end-to-end runs whose backend-specific part (the recorders' numbers, the
# optimizer under loss scaling) the parity test and cheaper tests already
# check on every backend: those run on torch (the fastest here) by default
# and on tensorflow and jax under `-m slow`. CI's 90-minute limit is why.
SLOW_OFF_TORCH = pytest.mark.slow if os.environ.get(
    "KERAS_BACKEND", "tensorflow") != "torch" else (lambda test: test)

_real_connect = socket.socket.connect


def _guarded_connect(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and (
        host.startswith("127.") or host in ("::1", "localhost")
        or self.family == socket.AF_UNIX
    ):
        return _real_connect(self, address)
    raise OSError(f"network disabled in tests (tried {address!r})")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(
        socket, "create_connection",
        lambda *a, **k: (_ for _ in ()).throw(
            OSError("network disabled in tests")
        ),
    )


@pytest.fixture
def tfds_mock(monkeypatch):
    """tfds.testing.mock_data, with kerasft's network check passed.

    mock_data turns tfds's download into a no-op, but kerasft checks for a
    network before it lets tfds download (tfds would retry for minutes
    offline). Sockets stay blocked by `no_network`, so nothing can leak.
    """
    tfds = pytest.importorskip("tensorflow_datasets")
    from kerasft.data import sources

    monkeypatch.setattr(sources, "network_available", lambda *a: True)
    return tfds.testing.mock_data


@pytest.fixture
def backend_name() -> str:
    import keras

    return keras.backend.backend()


@pytest.fixture
def in_repo(monkeypatch):
    """Runs the test from the repository root (so configs/ resolves)."""
    monkeypatch.chdir(REPO)


class CliResult:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def __repr__(self):
        return f"CliResult(code={self.code}, err={self.err[-500:]!r})"


def run_cli(argv: list[str]) -> CliResult:
    """Runs `kerasft` in-process with real argv; captures its output."""
    from kerasft.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse's --help/--version/usage
            code = e.code if isinstance(e.code, int) else 2
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli(in_repo):
    return run_cli


def only_run_dir(parent: Path) -> Path:
    runs = [p for p in parent.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory, request):
    """A folder for one test module's shared runs, deleted after the
    module's last test unless one of its tests failed.

    pytest deletes a passed test's `tmp_path` at once
    (`tmp_path_retention_policy`), but folders from `tmp_path_factory` live
    until the session ends; at ~0.7 GB a run directory, the module-scoped
    runs of a whole suite would pile up on a CI disk.
    """
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    failed = request.session.testsfailed
    yield path
    if request.session.testsfailed == failed:
        shutil.rmtree(path)


@pytest.fixture(scope="session")
def recorded(tmp_path_factory):
    """One tiny phased quickstart run with every recorder and the report,
    as `(run directory, CliResult)`.

    Shared by the end-to-end, recorder, report and compare tests: 2 epochs
    of 2 steps, epoch 1 head only, epoch 2 with conv4-conv5 unfrozen and
    BatchNorm training. One run, so the suite trains ResNet50 once for all
    of them.
    """
    out = tmp_path_factory.mktemp("runs")
    old = os.getcwd()
    os.chdir(REPO)
    try:
        r = run_cli(["train", "-c", "quickstart", "--epochs", "2", *TINY,
                     "--plan", "phased", "--set", "plan.head_epochs=1",
                     "--set", "plan.batchnorm=train",
                     "--set", "record.every_steps=1",
                     "--set", "record.embedding_size=12",
                     "--set", "record.probe_size=8", "--out", out])
    finally:
        os.chdir(old)
    assert r.code == 0, r
    return only_run_dir(out), r


@pytest.fixture(scope="session")
def recorded_run(recorded):
    """The run directory of `recorded`."""
    return recorded[0]

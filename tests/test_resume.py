"""`kerasft train --resume`, status liveness, atomic files, SIGTERM.

The resume tests kill a real training run with SIGKILL at a chosen moment
(``KERASFT_TEST_KILL_AT``, `kerasft.rundir.kill_point`), resume it, and
compare it with one uninterrupted run of the same config on the same
backend: same store, every epoch once, same final weights.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, TINY, only_run_dir

# Three epochs: a head-only phase (epoch 1), then a fine-tuning phase
# (epochs 2-3) with BatchNorm training and Adam on a cosine schedule. Only
# the recorders that keep state across epochs (step counts, W_0, BatchNorm
# statistics at the start, gradient and update-ratio tables) are on.
RESUME_ARGS = [
    "-c", "quickstart", "--epochs", "3", *TINY, "--deterministic",
    "--no-report", "--plan", "phased", "--set", "plan.head_epochs=1",
    "--set", "plan.batchnorm=train", "--set", "plan.unfreeze=1",
    "--set", "record.every_steps=1", "--set", "record.activations=false",
    "--set", "record.embeddings=false", "--set", "record.probe_gradients=false",
    "--set", "record.feature_maps=false", "--set", "record.tensorboard=false",
]

# Largest |difference| allowed between the final weights of a resumed run
# and of the uninterrupted run (same backend, --deterministic). Measured
# on CPU: 0 on torch, tensorflow and jax (bit for bit); the margin is for
# machines whose kernels reorder float sums between processes.
WEIGHTS_ATOL = 1e-6


def _train(out: Path, *extra: str, env: dict | None = None,
           timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "kerasft", "train", *extra]
    return subprocess.run(
        cmd, cwd=REPO, env=dict(os.environ, **(env or {})),
        capture_output=True, text=True, timeout=timeout)


def _h5_arrays(path: Path) -> dict[str, np.ndarray]:
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return out


@pytest.fixture(scope="module")
def reference_run(module_tmp):
    """The uninterrupted run every resumed one is compared with."""
    out = module_tmp / "reference"
    r = _train(out, *RESUME_ARGS, "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    return only_run_dir(out)


KILLS = {
    # the optimizer state of epoch 3 is written, not yet renamed: resume
    # from epoch 2, inside the fine-tuning phase (optimizer restored)
    "checkpoint-write": "write:*/checkpoints/epoch-003.optimizer.npz",
    # after the first step of epoch 2: resume from epoch 1, at the start of
    # the fine-tuning phase (a new optimizer, as in the first attempt)
    "mid-epoch": "batch:2:0",
    # epoch 3's weight histograms are written, not yet renamed: resume
    # from epoch 2 with epoch 3's other records already in the store
    "recorder-write": "write:*/record/weights/epoch-0003.npz",
}


def _kill_and_resume(tmp_path: Path, reference: Path, moment: str) -> None:
    from kerasft import load_run

    out = tmp_path / "runs"
    killed = _train(out, *RESUME_ARGS, "--out", out,
                    env={"KERASFT_TEST_KILL_AT": KILLS[moment]})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run_dir = only_run_dir(out)
    status = load_run(run_dir).status
    assert status["state"] == "interrupted"
    assert f"pid {status['pid']}" in status["note"]  # says why
    assert json.loads((run_dir / "status.json").read_text())["state"] == (
        "running")  # the file itself is left as the killed run wrote it

    r = _train(out, "--resume", run_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert f"resuming {run_dir}" in r.stdout

    ref, run = load_run(reference), load_run(run_dir)
    assert run.status["state"] == "completed"
    assert [int(e) for e in run.metrics["epoch"]] == [1, 2, 3]
    assert list(run.metrics["phase"]) == ["head", "finetune", "finetune"]
    # every kind and table: each epoch and step once, as in one go
    assert set(run.records) == set(ref.records)
    for kind, rec in ref.records.items():
        assert run.records[kind].epochs == rec.epochs, kind
        for e in rec.epochs:
            np.testing.assert_allclose(
                run.records[kind][e].get("stats", 0), rec[e].get("stats", 0),
                rtol=1e-5, atol=1e-6, err_msg=f"{kind} epoch {e}")
    np.testing.assert_allclose(  # relative to W_0: the start was restored
        run.records["weights"][3]["rel_change"],
        ref.records["weights"][3]["rel_change"], rtol=1e-5, atol=1e-7)
    assert set(run.tables) == set(ref.tables)
    for name, table in ref.tables.items():
        for column in ("step", "epoch"):
            np.testing.assert_array_equal(
                run.tables[name][column], table[column], err_msg=name)
    np.testing.assert_allclose(run.tables["scalars"]["loss"],
                               ref.tables["scalars"]["loss"], rtol=1e-5)
    # the final weights, variable by variable
    a = _h5_arrays(run_dir / "checkpoints/epoch-003.weights.h5")
    b = _h5_arrays(reference / "checkpoints/epoch-003.weights.h5")
    assert a.keys() == b.keys() and len(a) > 300
    worst = max(float(np.max(np.abs(a[k] - b[k]), initial=0)) for k in a)
    print(f"resume after {moment}: max |w_resumed - w_reference| = {worst:g}")
    assert worst <= WEIGHTS_ATOL
    # nothing left behind by the kill
    assert not [p for p in run_dir.rglob(".tmp-*")]
    env = json.loads((run_dir / "env.json").read_text())
    assert len(env["resumes"]) == 1
    assert (run_dir / "model.keras").exists()


def test_resume_after_kill_during_checkpoint_write(tmp_path, reference_run):
    _kill_and_resume(tmp_path, reference_run, "checkpoint-write")


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["mid-epoch", "recorder-write"])
def test_resume_after_kill(tmp_path, reference_run, moment):
    _kill_and_resume(tmp_path, reference_run, moment)


@pytest.mark.slow  # a whole start-up per backend (~1-2 min); CI time
def test_sigterm_marks_the_run_interrupted(tmp_path, cli):
    out = tmp_path / "runs"
    r = _train(out, "-c", "quickstart", "--epochs", "1", *TINY, "--out", out,
               "--set", "record.enabled=false", "--no-report",
               env={"KERASFT_TEST_KILL_AT": "batch:1:0",
                    "KERASFT_TEST_KILL_SIGNAL": "TERM"})
    assert r.returncode == 128 + signal.SIGTERM, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert "terminated (SIGTERM)" in r.stderr and "--resume" in r.stderr
    run_dir = only_run_dir(out)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "interrupted"
    assert status["pid"] and status["host"] and status["heartbeat"]
    # killed in its first epoch: nothing to resume from
    again = cli(["train", "--resume", run_dir])
    assert again.code == 2
    assert "no complete checkpoint" in again.err and str(run_dir) in again.err


# ---------------------------------------------------------------- errors


def _fake_run(path: Path, backend: str, state: str = "interrupted",
              checkpoint: bool = True, **status) -> Path:
    """A run directory with a config, a status and (empty) checkpoint files:
    enough for the checks that come before any training."""
    from kerasft.config import load_config, save_config

    path.mkdir(parents=True)
    save_config(load_config(REPO / "configs/quickstart.yaml",
                            ["train.epochs=3"]), path / "config.yaml")
    (path / "env.json").write_text(json.dumps({"backend": backend}))
    (path / "status.json").write_text(
        json.dumps({"state": state, "epochs_done": 1, **status}))
    if checkpoint:
        folder = path / "checkpoints"
        folder.mkdir()
        (folder / "epoch-001.weights.h5").write_bytes(b"")
        (folder / "epoch-001.optimizer.npz").write_bytes(b"")
        (folder / "epoch-001.json").write_text(json.dumps({
            "epoch": 1, "step": 4, "weights": "epoch-001.weights.h5",
            "optimizer": "epoch-001.optimizer.npz", "phase_index": 0}))
    return path


@pytest.mark.parametrize("case, extra, expected", [
    ("missing", [], "no such directory"),
    ("completed", [], "completed"),
    ("no-checkpoint", [], "no complete checkpoint"),
    ("live", [], "is still running"),
    ("mismatch", ["--batch-size", "16"], "data.batch_size differs"),
    ("too-few-epochs", ["--epochs", "1"], None),
    ("with-out", ["--out", "elsewhere"], "--out cannot be used"),
])
def test_resume_refuses_with_one_line(cli, tmp_path, backend_name, case,
                                      extra, expected):
    run = tmp_path / "run"
    if case == "completed":
        _fake_run(run, backend_name, "completed")
    elif case == "no-checkpoint":
        _fake_run(run, backend_name, checkpoint=False)
    elif case == "live":
        _fake_run(run, backend_name, "running", pid=os.getpid(),
                  host=socket.gethostname())
    elif case == "too-few-epochs":
        # a checkpoint after epoch 2: fewer epochs than that cannot resume
        _fake_run(run, backend_name)
        meta = run / "checkpoints/epoch-001.json"
        meta.write_text(meta.read_text().replace('"epoch": 1', '"epoch": 2'))
        expected = "less than the 2 epochs"
    elif case != "missing":
        _fake_run(run, backend_name)
    r = cli(["train", "--resume", run, *extra])
    assert r.code == 2, r
    assert r.err.startswith("Error: ") and r.err.count("\n") == 1, r.err
    assert "Traceback" not in r.err
    assert expected in r.err, r.err
    if case == "mismatch":
        assert "run: 32" in r.err and "now: 16" in r.err


def test_resume_refuses_another_backend(cli, tmp_path, backend_name):
    other = "jax" if backend_name != "jax" else "torch"
    run = _fake_run(tmp_path / "run", other)
    r = cli(["train", "--resume", run])
    assert r.code == 2 and r.err.count("\n") == 1
    assert f"trained on the {other} backend" in r.err
    assert f"--backend {other}" in r.err


# ---------------------------------------------------------------- files


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_status_of_a_dead_run_reads_interrupted(tmp_path):
    from kerasft.rundir import read_status, running_status

    live = running_status()
    (tmp_path / "status.json").write_text(json.dumps(live))
    assert read_status(tmp_path)["state"] == "running"  # this process

    dead = {**live, "pid": _dead_pid()}
    (tmp_path / "status.json").write_text(json.dumps(dead))
    status = read_status(tmp_path)
    assert status["state"] == "interrupted"
    assert f"pid {dead['pid']}" in status["note"] and "gone" in status["note"]

    # another host: only the heartbeat can tell
    away = {**live, "host": "elsewhere.example", "pid": 1}
    (tmp_path / "status.json").write_text(json.dumps(away))
    assert read_status(tmp_path)["state"] == "running"
    away["heartbeat_unix"] = time.time() - 2 * 3600
    (tmp_path / "status.json").write_text(json.dumps(away))
    status = read_status(tmp_path)
    assert status["state"] == "interrupted"
    assert "elsewhere.example" in status["note"] and "120 min" in status["note"]


def test_leftovers_of_dead_writers_are_cleaned(tmp_path):
    from kerasft.rundir import clean_leftovers

    dead = _dead_pid()
    (tmp_path / "checkpoints").mkdir()
    stale = [tmp_path / f".tmp-{dead}-initial.weights.h5",
             tmp_path / "checkpoints" / f".tmp-{dead}-epoch-002.weights.h5",
             tmp_path / f".tmp-{os.getpid()}-status.json"]
    live = tmp_path / ".tmp-1-status.json"  # pid 1 is alive
    for p in [*stale, live]:
        p.write_text("half")
    report = tmp_path / f".report.tmp-{dead}"
    report.mkdir()
    (report / "curves.png").write_bytes(b"")
    kept = tmp_path / "metrics.csv"
    kept.write_text("epoch\n1\n")
    removed = clean_leftovers(tmp_path)
    assert sorted(removed) == sorted([*stale, report])
    assert live.exists() and kept.exists() and not report.exists()


def test_atomic_write_keeps_the_old_file_on_error(tmp_path):
    from kerasft.rundir import atomic_write, write_json

    path = tmp_path / "data.json"
    write_json(path, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write('{"a": ')
            raise RuntimeError("disk full")
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]


def test_truncate_table_keeps_whole_rows_up_to_the_epoch(tmp_path):
    from kerasft.record.store import read_table, truncate_table

    path = tmp_path / "scalars.csv"
    path.write_bytes(b"step,epoch,loss\r\n1,1,2.5\r\n2,1,2.4\r\n3,2,2.3\r\n"
                     b"4,2,2.2\r\n5,3,2.1\r\n6,3")  # torn last line
    assert truncate_table(path, 2) == 2
    assert path.read_bytes() == (b"step,epoch,loss\r\n1,1,2.5\r\n2,1,2.4\r\n"
                                 b"3,2,2.3\r\n4,2,2.2\r\n")
    assert list(read_table(path)["step"]) == [1, 2, 3, 4]

"""Continuing a run from its last complete checkpoint (`kerasft train --resume`).

A resumed run is the same run: same directory, same store, same numbers as
if it had never stopped (within round-off; bit for bit where the backend is
deterministic). It restarts at the checkpoint's epoch boundary with

- the model's variables from ``checkpoints/epoch-NNN.weights.h5``;
- the optimizer's whole state (iteration count, hence the learning-rate
  schedule's position, and its slots) from ``epoch-NNN.optimizer.npz``,
  when the checkpoint falls inside a phase (a new phase starts with a new
  optimizer, as it did in the first attempt);
- the phase and epoch, and with the epoch the data order (batch ``i`` of
  epoch ``e`` is a function of (seed, e, i) alone);
- the recorders' state: the global step count from the checkpoint, and the
  starting values they compare with (W_0, BatchNorm statistics) from
  ``initial.weights.h5``.

Everything recorded after the checkpoint (records, table rows, partial
test outputs, a half-built report) is dropped first, so every epoch is
recorded exactly once. The checks that need no framework (the run can be
resumed at all) are `kerasft.rundir.resumable`.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasft.config import RunConfig, load_config, save_config
from kerasft.errors import ConfigError
from kerasft.record.store import drop_records_after, read_table, truncate_table
from kerasft.rundir import (
    clean_leftovers,
    read_json,
    resumable,
    running_status,
    write_json,
)

# Config keys a resume may change: more epochs extend the run (the last
# phase, and with it a cosine schedule's length); workers and verbosity do
# not change what is computed.
RESUMABLE_KEYS = ("train.epochs", "data.workers", "train.verbose")

# What the end of a run writes: dropped on resume, written again.
_END_OUTPUTS = ("test_metrics.json", "test_predictions.npz", "model.keras",
                "report", "tensorboard")


@dataclass
class Resume:
    """Where a resumed run starts.

    Attributes:
        run_dir: the run directory.
        checkpoint: the checkpoint record (`kerasft.rundir.latest_checkpoint`).
        epoch: epochs done (the checkpoint's).
        step: training steps done.
        phase_index: the phase the run continues in.
        phase_records: ``phases.json`` entries of the phases before it.
        history: the last finished epoch's metrics (``metrics.csv``).
        note: why a status that said "running" was taken as interrupted.
    """

    run_dir: Path
    checkpoint: dict
    epoch: int
    step: int
    phase_index: int = 0
    phase_records: list = field(default_factory=list)
    history: dict = field(default_factory=dict)
    note: str | None = None

    @property
    def folder(self) -> Path:
        return self.run_dir / "checkpoints"


def _flatten(data, prefix=""):
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _flatten(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], data


def config_differences(saved: RunConfig, new: RunConfig) -> list[tuple]:
    """``(key, saved value, new value)`` for each key that differs."""
    a, b = dict(_flatten(saved.to_dict())), dict(_flatten(new.to_dict()))
    return [(k, a.get(k), b.get(k)) for k in a if a.get(k) != b.get(k)]


def check(run_dir: str | os.PathLike, cfg: RunConfig) -> Resume:
    """Checks that `run_dir` can be resumed with `cfg`; changes nothing.

    Args:
        run_dir: the run directory.
        cfg: the config to continue with: the run's ``config.yaml``, with
            at most `RESUMABLE_KEYS` changed (``train.epochs`` not below
            the epochs done).

    Returns:
        A `Resume`.

    Raises:
        RunDirError: see `kerasft.rundir.resumable`.
        ConfigError: `cfg` differs from the run's config elsewhere, or has
            fewer epochs than the checkpoint.
    """
    run_dir = Path(run_dir)
    status, checkpoint = resumable(run_dir)
    saved = load_config(run_dir / "config.yaml")
    for key, old, new in config_differences(saved, cfg):
        if key not in RESUMABLE_KEYS:
            raise ConfigError(
                f"--resume: {key} differs from the run's config.yaml (run: "
                f"{old!r}, now: {new!r}); a resume continues the same run, "
                f"so only {', '.join(RESUMABLE_KEYS)} may change. Drop the "
                "override, or start a new run."
            )
    epoch = int(checkpoint["epoch"])
    if cfg.train.epochs < epoch:
        raise ConfigError(
            f"--resume: train.epochs={cfg.train.epochs} is less than the "
            f"{epoch} epochs the checkpoint holds. Expected at least {epoch}."
        )
    return Resume(run_dir, checkpoint, epoch, int(checkpoint["step"]),
                  note=status.get("note"))


def reopen(resume: Resume, cfg: RunConfig, phases: list) -> tuple[dict, dict]:
    """Makes the run directory ready to continue; returns (status, env).

    Removes leftovers of the killed process, everything recorded after the
    checkpoint and the end-of-run outputs; marks the run running again
    (this process's pid) and notes the resume in ``env.json``.

    Args:
        resume: from `check`.
        cfg: the config to continue with (saved, as ``train.epochs`` may
            have grown).
        phases: the plan's phases (`kerasft.model.make_phases`).
    """
    run_dir = resume.run_dir
    clean_leftovers(run_dir)
    e = resume.epoch
    drop_records_after(run_dir / "record", e, resume.step)
    truncate_table(run_dir / "metrics.csv", e)
    for p in resume.folder.glob("epoch-*"):
        number = p.name.split(".", 1)[0].split("-", 1)[1]
        if number.isdigit() and int(number) > e:
            p.unlink()  # an unfinished checkpoint of a later epoch
    for name in _END_OUTPUTS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    save_config(cfg, run_dir / "config.yaml")

    # The phase holding epoch e + 1; the last one when every epoch is done
    # (the model is compiled in it for the test evaluation).
    first = 0
    resume.phase_index = len(phases) - 1
    for index, phase in enumerate(phases):
        if first + phase.epochs > e:
            resume.phase_index = index
            break
        first += phase.epochs
    records = read_json(run_dir / "phases.json") if (
        run_dir / "phases.json").exists() else []
    resume.phase_records = records[:resume.phase_index]
    metrics = read_table(run_dir / "metrics.csv")
    if metrics and len(metrics.get("epoch", [])):
        resume.history = {
            k: float(v[-1]) for k, v in metrics.items()
            if k not in ("epoch", "phase", "train_seconds")
            and v.dtype.kind == "f"
        }

    status = read_json(run_dir / "status.json")
    resumed = status.get("resumed_at_epochs", []) + [e]
    status = running_status(epochs_done=e)
    status["resumed_at_epochs"] = resumed
    write_json(run_dir / "status.json", status)
    env = read_json(run_dir / "env.json")
    env.setdefault("resumes", []).append({
        "at_epoch": e,
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pid": os.getpid(),
    })
    write_json(run_dir / "env.json", env)
    return status, env


def restore_model(resume: Resume, model, recorders: list) -> None:
    """Loads the run's starting state into the recorders, then the
    checkpoint's weights into `model`."""
    from kerasft.record.recorder import Recorder

    model.load_weights(resume.run_dir / "initial.weights.h5")
    for r in recorders:
        if isinstance(r, Recorder):
            r.start_from(model)
    model.load_weights(resume.folder / resume.checkpoint["weights"])


def restore_optimizer(resume: Resume, model) -> None:
    """Loads the checkpoint's optimizer state into the compiled `model`'s
    optimizer; for a checkpoint inside a phase (`Resume.phase_index`)."""
    from kerasft.backend.checkpoint import restore_optimizer as load

    saved_phase = resume.checkpoint.get("phase_index")
    if saved_phase != resume.phase_index:
        raise ConfigError(
            f"--resume: the checkpoint of epoch {resume.epoch} belongs to "
            f"phase {saved_phase}, but the plan continues in phase "
            f"{resume.phase_index}. The plan must not change on resume."
        )
    with np.load(resume.folder / resume.checkpoint["optimizer"],
                 allow_pickle=False) as f:
        state = {k: f[k] for k in f.files}
    load(model.optimizer, model.trainable_variables, state)

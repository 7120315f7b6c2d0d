"""The run directory: one folder per run, self-describing, never overwritten.

Layout (format version 1)::

    runs/<YYYYmmdd-HHMMSS>-<name>-<backend>/
        config.yaml           resolved config (loadable with --config)
        env.json              backend, versions, device, seed, command
                              (and one entry per resume)
        status.json           running | completed | failed | interrupted;
                              epochs done, pid, host, heartbeat
        data.json             data source, split sizes, class names
        phases.json           the fine-tuning plan as run, with param counts
                              and per-stage learning rates
        initial.weights.h5    weights before the first step (for --init-from)
        metrics.csv           one row per epoch
        checkpoints/epoch-NNN.weights.h5    model weights
        checkpoints/epoch-NNN.optimizer.npz optimizer state (latest only)
        checkpoints/epoch-NNN.json          written last: the checkpoint is
                                            complete (resumable) when it exists
        model.keras           the final model
        test_metrics.json     test loss/accuracy (and inference-mode train
                              accuracy, to expose BatchNorm lag)

Every file is written under a temporary name in its own folder
(`temporary_name`: ``.tmp-<pid>-<name>``) and renamed into place, so a reader
never sees half a file; `clean_leftovers` removes what a killed process left.
Append-only CSV tables are the exception: each row is one write, and the
reader drops a torn last line. JSON files are strict (RFC 8259): a float
that is not finite is written as the string ``"nan"``, ``"inf"`` or
``"-inf"`` (which `float()` reads back), never as ``NaN``/``Infinity``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import math
import os
import re
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any, Iterator

from kerasft.errors import RunDirError

import numpy as np

FORMAT_VERSION = 1

# A run whose status says "running" on another host is taken for dead when
# its heartbeat is older than this (same host: its pid is checked instead).
# Generous: the final evaluation of a large test set beats no heartbeat.
STALE_HEARTBEAT_SECONDS = 30 * 60

_TMP_PREFIX = ".tmp-"
# Leftovers of killed writers: `.tmp-<pid>-<name>` files anywhere in the run,
# and the report's `.report.tmp-<pid>` / `.report.old-<pid>` folders.
_LEFTOVER = re.compile(r"^(?:\.tmp-(\d+)-.+|\.report\.(?:tmp|old)-(\d+))$")


# ------------------------------------------------------------ atomic files


def temporary_name(path: str | os.PathLike, name: str | None = None) -> Path:
    """Where `path` is written before it is renamed into place.

    Same folder (so the rename is atomic), hidden, tagged with this pid (so
    `clean_leftovers` can tell a dead writer's file from a live one), and
    ending like `path` (Keras insists on ``.weights.h5`` and ``.keras``)
    unless `name` is given.
    """
    path = Path(path)
    return path.with_name(f"{_TMP_PREFIX}{os.getpid()}-{name or path.name}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike,
                name: str | None = None) -> Iterator[Path]:
    """A temporary path to write `path` through; renamed into place on exit.

    For writers that want a file name (``model.save_weights``). On an
    exception the temporary file is removed and `path` is left as it was.
    `name`: the temporary file's name after its prefix, for readers that
    must not see it (TensorBoard reads any name holding "tfevents").

    Example:

    ```python
    with atomic_path(run_dir / "initial.weights.h5") as tmp:
        model.save_weights(tmp)
    ```
    """
    path = Path(path)
    tmp = temporary_name(path, name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        kill_point(f"write:{path}")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w",
                 name: str | None = None) -> Iterator[Any]:
    """An open file that becomes `path` whole, or not at all.

    Args:
        path: the final file.
        mode: ``"w"`` (text, UTF-8) or ``"wb"``. Defaults to `"w"`.
        name: see `atomic_path`. Defaults to `None`.

    Example:

    ```python
    with atomic_write(run_dir / "notes.txt") as f:
        f.write("...")
    ```
    """
    with atomic_path(path, name) as tmp:
        kwargs = {"encoding": "utf-8", "newline": ""} if "b" not in mode else {}
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()


def strict_json_value(data: Any) -> Any:
    """`data` with every non-finite float as a string, numpy scalars as
    Python ones, arrays and tuples as lists.

    The one rule for kerasft's JSON files: Python's `json` writes NaN and
    inf as the bare words ``NaN``/``Infinity``, which strict parsers (and
    other languages) refuse. A string keeps the value visible and readable
    with `float()`; a number that is finite stays a number.

    Args:
        data: nested dicts/lists of JSON-able values.

    Returns:
        The same structure, safe for ``json.dumps(..., allow_nan=False)``.

    Example:

    ```python
    strict_json_value({"loss": float("inf"), "acc": np.float32(0.5)})
    # {'loss': 'inf', 'acc': 0.5}
    ```
    """
    if isinstance(data, dict):
        return {k: strict_json_value(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [strict_json_value(v) for v in data]
    if isinstance(data, np.ndarray):
        return strict_json_value(data.tolist())
    if isinstance(data, (bool, np.bool_)):
        return bool(data)
    if isinstance(data, np.integer):
        return int(data)
    if isinstance(data, (float, np.floating)):
        value = float(data)
        if math.isfinite(value):
            return value
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return data


def dumps_json(data: Any) -> str:
    """Strict JSON text of `data` (see `strict_json_value`), indented."""
    return json.dumps(strict_json_value(data), indent=2, sort_keys=False,
                      default=str, allow_nan=False)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Writes strict JSON atomically (temporary file, fsync, rename)."""
    text = dumps_json(data)
    with atomic_write(path) as f:
        f.write(text)
        f.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def kill_point(event: str) -> None:
    """Test hook: kills this process at a named moment.

    When the environment variable ``KERASFT_TEST_KILL_AT`` holds a shell
    pattern that matches `event`, the process sends itself
    ``KERASFT_TEST_KILL_SIGNAL`` (``KILL`` unless set, e.g. ``TERM``).
    Events: ``write:<final path>`` once a file's temporary copy is complete
    and before its rename, and ``batch:<epoch>:<batch>`` (1-based epoch,
    0-based batch) after each training step. This is the one place that
    reads the variable; unset, it costs one dictionary lookup.
    """
    pattern = os.environ.get("KERASFT_TEST_KILL_AT")
    if pattern and fnmatch.fnmatchcase(event, pattern):
        name = os.environ.get("KERASFT_TEST_KILL_SIGNAL", "KILL")
        os.kill(os.getpid(), getattr(signal, f"SIG{name}"))


def _process_alive(pid: int) -> bool:
    """Whether `pid` runs on this host (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: a killed child its parent has not reaped yet
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rfind(")") + 2] != "Z"
    except (OSError, IndexError):
        return True


def clean_leftovers(run_dir: str | os.PathLike) -> list[Path]:
    """Removes what killed writers left in a run directory.

    Temporary files (`temporary_name`) and half-built report folders whose
    process is gone, or is this one (which has nothing in flight when it
    starts), anywhere in the run. A live writer's files stay.

    Returns:
        The paths removed.
    """
    removed = []
    for path in sorted(Path(run_dir).rglob(".*"), reverse=True):
        m = _LEFTOVER.match(path.name)
        if not m:
            continue
        pid = int(m.group(1) or m.group(2))
        if pid != os.getpid() and _process_alive(pid):
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(path)
    return removed


# ------------------------------------------------------------ status


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def running_status(epochs_done: int = 0) -> dict:
    """A fresh ``status.json`` for a run this process is training.

    ``pid`` and ``host`` name the process; ``heartbeat`` (local time, ISO
    8601) and ``heartbeat_unix`` are refreshed during training (see
    `kerasft.train.Heartbeat`), so a reader can tell a dead run from a live
    one (`read_status`).
    """
    status = {
        "state": "running",
        "epochs_done": epochs_done,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": _now(),
    }
    beat(status)
    return status


def beat(status: dict) -> None:
    """Stamps `status` with the current time as its heartbeat."""
    status["heartbeat"] = _now()
    status["heartbeat_unix"] = round(time.time(), 1)


def _stale_reason(status: dict) -> str | None:
    """Why a "running" status is not true any more (None: it may be)."""
    pid, host = status.get("pid"), status.get("host")
    if pid is None:
        return None  # written before pids were recorded: cannot tell
    if host == socket.gethostname():
        if _process_alive(int(pid)):
            return None
        return (f"status.json says running, but its process (pid {pid} on "
                f"{host}) is gone: the run was interrupted")
    age = time.time() - float(status.get("heartbeat_unix", 0))
    if age < STALE_HEARTBEAT_SECONDS:
        return None
    return (f"status.json says running on host {host}, but its last "
            f"heartbeat is {age / 60:.0f} min old: the run was interrupted")


def read_status(run_dir: str | os.PathLike) -> dict:
    """A run's ``status.json``, with a dead "running" run marked interrupted.

    A run killed without a chance to write (``kill -9``, a crash, a lost
    machine) still says "running". When its process is gone (same host) or
    its heartbeat is older than `STALE_HEARTBEAT_SECONDS` (another host),
    the returned state is ``interrupted`` and ``note`` says why. The file
    itself is not changed. Missing file: ``{}``.
    """
    path = Path(run_dir) / "status.json"
    if not path.exists():
        return {}
    status = read_json(path)
    if status.get("state") == "running":
        why = _stale_reason(status)
        if why:
            status = {**status, "state": "interrupted", "note": why}
    return status


# ------------------------------------------------------------ checkpoints


def checkpoint_file(folder: str | os.PathLike, epoch: int, kind: str) -> Path:
    """``<folder>/epoch-NNN.<kind>`` (kind: ``weights.h5``, ``optimizer.npz``
    or ``json``); a run's folder is ``<run>/checkpoints``."""
    return Path(folder) / f"epoch-{epoch:03d}.{kind}"


def latest_checkpoint(folder: str | os.PathLike) -> dict | None:
    """The newest complete checkpoint's record in `folder`, or None.

    A checkpoint is complete when its ``epoch-NNN.json`` exists (written
    last, by `kerasft.train.EpochCheckpoint`) and the weights and optimizer
    files it names do. The record holds ``epoch`` (epochs done), ``step``
    (training steps done), ``phase_index``, ``phase`` and the two file
    names.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = []
    for p in folder.glob("epoch-*.json"):
        m = re.fullmatch(r"epoch-(\d+)\.json", p.name)
        if m:
            found.append((int(m.group(1)), p))
    for _, p in sorted(found, reverse=True):
        meta = read_json(p)
        files = [meta.get("weights"), meta.get("optimizer")]
        if all(f and (folder / f).is_file() for f in files):
            return meta
    return None


def resumable(run_dir: str | os.PathLike) -> tuple[dict, dict]:
    """Checks that a run can be resumed; returns (status, checkpoint).

    Raises:
        RunDirError: no such run directory, a run that completed or is
            still running, or no complete checkpoint. The message names the
            run and what to do.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(
            f"--resume: expected a kerasft run directory. Received: "
            f"{str(run_dir)!r} (no such directory)"
        )
    if not (path / "config.yaml").is_file():
        raise RunDirError(
            f"--resume: expected a kerasft run directory (with config.yaml). "
            f"Received: {str(run_dir)!r}"
        )
    status = read_status(path)
    state = status.get("state")
    if state == "completed":
        raise RunDirError(
            f"--resume: {path} completed ({status.get('epochs_done')} "
            "epochs); there is nothing to resume. Start a new run instead."
        )
    if state == "running":
        raise RunDirError(
            f"--resume: {path} is still running (pid {status.get('pid')} on "
            f"{status.get('host')}, heartbeat {status.get('heartbeat')}). "
            "Stop it first, or wait for it to finish."
        )
    checkpoint = latest_checkpoint(path / "checkpoints")
    if checkpoint is None:
        raise RunDirError(
            f"--resume: {path} has no complete checkpoint (checkpoints/"
            "epoch-NNN.json with its weights and optimizer state): it "
            "stopped before its first checkpoint. Start a new run instead."
        )
    return status, checkpoint


# ------------------------------------------------------------ creation


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "run"


def check_parent(parent: str | os.PathLike, flag: str = "--out") -> Path:
    """Checks that run directories can be made under `parent`; returns it.

    Run before any data or model is loaded, so a typo in ``--out`` costs
    seconds, not a whole load: the nearest existing folder on the path
    must be a folder (not a regular file) that this user can write to.
    Nothing is created.

    Raises:
        RunDirError: naming `flag`, the path and the part that is wrong.
    """
    from kerasft.errors import RunDirError

    parent = Path(os.path.expanduser(str(parent)))
    for existing in (parent, *parent.parents):
        if not existing.exists():
            continue
        if not existing.is_dir():
            raise RunDirError(
                f"{flag}: expected a folder to create run directories in. "
                f"Received: {str(parent)!r} ({str(existing)!r} is a file, "
                "not a folder). Choose another folder."
            )
        if not os.access(existing, os.W_OK | os.X_OK):
            raise RunDirError(
                f"{flag}: expected a folder you can write to. Received: "
                f"{str(parent)!r} ({str(existing)!r} is not writable). "
                "Choose another folder."
            )
        break
    return parent


def create_run_dir(parent: str | os.PathLike, name: str, backend: str) -> Path:
    """Creates a new, empty run directory under `parent`.

    The name is ``<date-time>-<name>-<backend>``; if it exists, ``-2``,
    ``-3`` ... is appended. An existing directory is never reused.
    """
    parent = check_parent(parent, "out")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return unique_dir(parent, f"{stamp}-{_slug(name)}-{backend}")


def unique_dir(parent: str | os.PathLike, base: str) -> Path:
    """Creates ``parent/base``, or ``base-2``, ``base-3`` ... if it exists.

    `mkdir` either creates the directory or fails, so two processes started
    in the same second never get the same one.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, 1000):
        path = parent / (base if i == 1 else f"{base}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new directory {base} in {parent}")


# ------------------------------------------------------------ final weights

# What a finished run leaves as its final weights (see the layout above).
FINAL_MODEL = "model.keras"


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is a kerasft run directory (it holds config.yaml)."""
    return (Path(path) / "config.yaml").is_file()


def final_weights(path: str | os.PathLike, key: str = "model.weights",
                  arch: str | None = None) -> Path:
    """The final trained weights (``model.keras``) of a finished run.

    `path` is a run directory, or a folder of run directories (what
    ``--out`` was given): then its newest run, by the date-time that
    starts each run directory's name. A run that did not complete (still
    running, failed, interrupted) has no final weights: an error says so,
    rather than falling back to an older run or a checkpoint.

    Args:
        path: a run directory or a folder of them.
        key: the config key or flag named in errors. Defaults to
            `"model.weights"`.
        arch: the architecture the weights must fit; a run of another one
            is refused. Defaults to `None` (not checked).

    Returns:
        The path of the run's ``model.keras``.

    Raises:
        RunDirError: not a run directory (nor a folder of them), a run
            that did not finish, or a run of another architecture.

    Example:

    ```python
    final_weights("runs/digits-pretrain")  # .../<newest run>/model.keras
    ```
    """
    import yaml

    given = Path(os.path.expanduser(str(path)))
    run = given
    if not is_run_dir(given):
        runs = sorted(p for p in given.iterdir() if is_run_dir(p)) \
            if given.is_dir() else []
        if not runs:
            raise RunDirError(
                f"{key}: expected a finished kerasft run directory (with "
                f"config.yaml and {FINAL_MODEL}) or a folder of them. "
                f"Received: {str(path)!r} (a folder without a run in it)"
            )
        run = runs[-1]
    status = read_status(run)
    model = run / FINAL_MODEL
    if status.get("state") != "completed" or not model.is_file():
        state = status.get("state", "no status.json")
        where = "" if run == given else f" (the newest run in {given})"
        raise RunDirError(
            f"{key}: {run}{where} did not finish (status: {state}, "
            f"{status.get('epochs_done', 0)} epoch(s) done), so it has no "
            f"final weights ({FINAL_MODEL}). Resume it (kerasft train "
            f"--resume {run}), or give a run that completed."
        )
    if arch is not None:
        with open(run / "config.yaml", encoding="utf-8") as f:
            ran = ((yaml.safe_load(f) or {}).get("model") or {}).get("arch")
        if ran != arch:
            raise RunDirError(
                f"{key}: {run} trained a {ran}, whose weights do not fit "
                f"model.arch {arch}. Received: {str(path)!r}. Set "
                f"model.arch: {ran} (--arch {ran}) or give a {arch} run."
            )
    return model.resolve()

"""The run directory: one folder per run, self-describing, never overwritten.

Layout (format version 1)::

    runs/<YYYYmmdd-HHMMSS>-<name>-<backend>/
        config.yaml           resolved config (loadable with --config)
        env.json              backend, versions, device, seed, command
        status.json           running | completed | failed | interrupted
        data.json             data source, split sizes, class names
        phases.json           the fine-tuning plan as run, with param counts
        initial.weights.h5    weights before the first step (for --init-from)
        metrics.csv           one row per epoch
        checkpoints/epoch-NNN.weights.h5
        model.keras           the final model
        test_metrics.json     test loss/accuracy (and inference-mode train
                              accuracy, to expose BatchNorm lag)

Every JSON file is written to a temporary name and renamed into place, so a
reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Writes JSON atomically (temporary file, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


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
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{_slug(name)}-{backend}"
    for i in range(1, 1000):
        path = parent / (base if i == 1 else f"{base}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run directory in {parent}")

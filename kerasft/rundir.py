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


def create_run_dir(parent: str | os.PathLike, name: str, backend: str) -> Path:
    """Creates a new, empty run directory under `parent`.

    The name is ``<date-time>-<name>-<backend>``; if it exists, ``-2``,
    ``-3`` ... is appended. An existing directory is never reused.
    """
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

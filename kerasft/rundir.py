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
reader never sees half a file. JSON files are strict (RFC 8259): a float
that is not finite is written as the string ``"nan"``, ``"inf"`` or
``"-inf"`` (which `float()` reads back), never as ``NaN``/``Infinity``.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1


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
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    text = dumps_json(data)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
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
    parent = Path(parent)
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

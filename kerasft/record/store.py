"""The run store: backend-neutral files under ``<run>/record/``.

Format version 1 (readable with numpy and the csv module alone; no pickle)::

    record/
      <kind>/epoch-NNNN.npz     one file per recorded epoch (0 = before the
                                first step); arrays described below
      <kind>/step-SSSSSSSS.npz  the same, at a training step (when asked)
      <kind>/bins.npz           fixed histogram bin edges: ``names`` (V,),
                                ``edges`` (V, B+1); set once, from the
                                first values recorded, never changed
      <table>.csv               step-level tables (header + one row a record)
      probe.json                the probe set: split, indices, labels, seed

Kinds (`KINDS`) and their arrays: every histogram kind holds ``names`` (V,)
(Keras variable or layer paths), ``counts`` (V, B+2) int64 -- under-flow,
B bins, over-flow, of the finite values -- ``stats`` (V, len(STAT_NAMES))
over the finite values (NaN where none is finite) and ``nonfinite`` (V,)
int64, the number of NaN/inf entries (records written before it existed
lack it: read it with ``rec.get("nonfinite")``); plus:

- ``weights``: ``rel_change`` (V,) = ||W_t - W_0|| / ||W_0|| (NaN where
  W_0 = 0, e.g. biases).
- ``gradients``: gradients of the last training step of the epoch, from a
  fixed seeded sample of at most `GRADIENT_SAMPLE` entries per variable;
  ``step`` the global step they come from. The epoch's last step is always
  recorded; if the epoch's length is unknown or it stopped early, the
  sample is from the last recorded step (every ``record.every_steps``).
- ``activations``: probe-batch block outputs; ``dead_fraction`` (V,) share
  of units whose absolute output is below `DEAD_THRESHOLD` on every probe
  image.
- ``probe_gradients``: full gradients on the probe batch; ``norms`` (V,).
- ``embeddings``: ``features`` (P, D) float32 and ``labels`` (P,) int64.
- ``batchnorm``: ``names`` (L,), ``mean_drift`` and ``var_drift`` (L,):
  ||m_t - m_0|| / ||m_0|| of moving mean and variance, and
  ``moving_mean_avg``/``moving_var_avg`` (L,).
- ``feature_maps``: ``filters`` (the first conv kernel), ``image`` (uint8
  probe image), ``layers`` and ``maps/<layer>`` (H, W, C') float32.

Tables: ``scalars.csv`` (step, epoch, loss, metrics, learning_rate,
images_per_second), ``grad_norms.csv`` and ``update_ratios.csv`` (step,
epoch, one column per variable path).

Crash safety: an ``.npz`` is written to a hidden temporary name, fsynced and
renamed (`kerasft.rundir.atomic_write`), so it is either whole or absent. A CSV row is written with a
single ``write`` and flushed; a reader drops a last line that lacks its
newline or its fields (what a ``kill -9`` mid-write can leave).

Resuming: a resumed run first drops what was recorded after its checkpoint
(`drop_records_after`), then appends; every epoch is recorded once.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path
from typing import Iterable

import numpy as np

from kerasft.rundir import atomic_write, read_status

STORE_FORMAT_VERSION = 1
KINDS = (
    "weights",
    "gradients",
    "activations",
    "probe_gradients",
    "embeddings",
    "batchnorm",
    "feature_maps",
)
TABLES = ("scalars", "grad_norms", "update_ratios")
STAT_NAMES = (
    "mean", "std", "min", "max", "l2", "q01", "q25", "q50", "q75", "q99",
)
NUM_BINS = 64
GRADIENT_SAMPLE = 4096
DEAD_THRESHOLD = 1e-6
QUANTILE_SAMPLE = 1 << 16

_FILE = re.compile(r"^(epoch|step)-(\d+)\.npz$")


# ------------------------------------------------------------------ maths


def summary_stats(values: np.ndarray) -> np.ndarray:
    """`STAT_NAMES` of one flattened array, as float64.

    Mean, std, min, max and l2 are exact. Quantiles of a tensor with more
    than `QUANTILE_SAMPLE` entries come from an evenly strided sample of
    that many entries: exact quantiles of a ResNet50's 25M weights cost
    seconds per epoch, the sample's differ in the third digit at most.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return np.full(len(STAT_NAMES), np.nan)
    sample = v if v.size <= QUANTILE_SAMPLE else v[
        np.linspace(0, v.size - 1, QUANTILE_SAMPLE).astype(np.int64)]
    q = np.quantile(sample, [0.01, 0.25, 0.5, 0.75, 0.99])
    return np.array(
        [v.mean(), v.std(), v.min(), v.max(), np.sqrt(np.dot(v, v)), *q]
    )


def fixed_edges(values: np.ndarray, bins: int = NUM_BINS) -> np.ndarray:
    """Bin edges for a tensor, fixed once from its first values.

    The range is the values' [min, max] widened by 50% of its width on each
    side (training moves weights outward), or +-max(|v|, 1e-3)/2 around a
    constant tensor (biases start at 0, BatchNorm gammas at 1). Values that
    later fall outside go to the under-/over-flow counts.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    width = hi - lo
    if width <= 0 or not np.isfinite(width):
        half = max(abs(lo), 1e-3) / 2
        lo, hi = lo - half, hi + half
    else:
        lo, hi = lo - 0.5 * width, hi + 0.5 * width
    return np.linspace(lo, hi, bins + 1)


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts (B+2,): under-flow, one per bin of `edges`, over-flow.

    NaN values are not counted anywhere (they show in the stats).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    inner = np.histogram(v, bins=edges)[0]
    return np.concatenate(
        [[np.sum(v < edges[0])], inner, [np.sum(v > edges[-1])]]
    ).astype(np.int64)


# ------------------------------------------------------------------ writing


def write_npz(path: str | os.PathLike, **arrays) -> None:
    """Writes an .npz atomically: temporary name, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)


def record_name(epoch: int | None = None, step: int | None = None) -> str:
    if step is not None:
        return f"step-{step:08d}.npz"
    return f"epoch-{epoch:04d}.npz"


class TableWriter:
    """Appends rows with fixed columns to a CSV table, one write per row.

    Args:
        path: the CSV file. An existing file is appended to (its header is
            kept; later phases of one run share it).
        columns: the column names.
    """

    def __init__(self, path: str | os.PathLike, columns: Iterable[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.columns = list(columns)
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, newline="", encoding="utf-8") as f:
                self.columns = next(csv.reader(f))
            self._file = open(self.path, "a", encoding="utf-8", newline="")
        else:
            self._file = open(self.path, "w", encoding="utf-8", newline="")
            self._write_row(self.columns)

    def _write_row(self, values) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(values)
        self._file.write(buf.getvalue())
        self._file.flush()

    def write(self, row: dict) -> None:
        self._write_row(["" if row.get(c) is None else row.get(c)
                         for c in self.columns])

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


# ------------------------------------------------------------------ resuming


def truncate_table(path: str | os.PathLike, epoch: int) -> int:
    """Keeps a CSV table's rows of epochs up to `epoch`, for a resumed run.

    The header and every whole row whose ``epoch`` column is at most
    `epoch` stay as they were, byte for byte; later rows and a torn last
    line go. The file is rewritten atomically. A missing file is left
    missing.

    Returns:
        The number of lines dropped.
    """
    path = Path(path)
    if not path.exists():
        return 0
    with open(path, encoding="utf-8", newline="") as f:  # keep "\r\n"
        lines = f.read().splitlines(keepends=True)
    if not lines or not lines[0].endswith("\n"):
        path.unlink()  # not even a whole header
        return len(lines)
    header = next(csv.reader([lines[0]]))
    column = header.index("epoch")
    keep = [lines[0]]
    for line in lines[1:]:
        row = next(csv.reader([line]), [])
        if (line.endswith("\n") and len(row) == len(header)
                and float(row[column]) <= epoch):
            keep.append(line)
    if len(keep) < len(lines):
        with atomic_write(path) as f:
            f.write("".join(keep))
    return len(lines) - len(keep)


def drop_records_after(directory: str | os.PathLike, epoch: int,
                       step: int) -> list[Path]:
    """Removes a store's records made after a checkpoint, for a resume.

    Per-epoch records of epochs after `epoch`, per-step records of steps
    after `step`, and table rows of epochs after `epoch` (`truncate_table`)
    go, so the resumed run appends each epoch exactly once. Bin edges stay:
    set from the first values, they are what the rerun sets again.

    Args:
        directory: the store directory (``<run>/record``).
        epoch: epochs done at the checkpoint.
        step: training steps done at the checkpoint.

    Returns:
        The record files removed.
    """
    directory = Path(directory)
    removed = []
    for kind in KINDS:
        for p in sorted((directory / kind).glob("*.npz")):
            m = _FILE.match(p.name)
            if m and int(m.group(2)) > (epoch if m.group(1) == "epoch"
                                        else step):
                p.unlink()
                removed.append(p)
    for table in TABLES:
        truncate_table(directory / f"{table}.csv", epoch)
    return removed


# ------------------------------------------------------------------ reading


def read_table(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a store CSV table into ``{column: float array}``.

    A torn last line (no newline, or too few fields) is dropped. Empty
    cells become NaN; non-numeric columns stay strings.
    """
    path = Path(path)
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return {}
    header, body = rows[0], [r for r in rows[1:] if len(r) == len(rows[0])]
    out = {}
    for i, name in enumerate(header):
        col = [r[i] for r in body]
        try:
            out[name] = np.array(
                [float(c) if c != "" else np.nan for c in col], dtype=np.float64
            )
        except ValueError:
            out[name] = np.array(col, dtype=str)
    return out


class Kind:
    """The records of one kind: ``kind.epochs``, ``kind[epoch]``, ``kind.bins``.

    Records load lazily; each is a dict of numpy arrays.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self._files = {"epoch": {}, "step": {}}
        for p in sorted(directory.glob("*.npz")):
            m = _FILE.match(p.name)
            if m:
                self._files[m.group(1)][int(m.group(2))] = p

    @property
    def epochs(self) -> list[int]:
        return sorted(self._files["epoch"])

    @property
    def steps(self) -> list[int]:
        return sorted(self._files["step"])

    def __getitem__(self, epoch: int) -> dict[str, np.ndarray]:
        return _load_npz(self._files["epoch"][epoch])

    def at_step(self, step: int) -> dict[str, np.ndarray]:
        return _load_npz(self._files["step"][step])

    def __len__(self) -> int:
        return len(self._files["epoch"])

    @property
    def bins(self) -> dict[str, np.ndarray]:
        path = self.directory / "bins.npz"
        return _load_npz(path) if path.exists() else {}

    def __repr__(self) -> str:
        return f"Kind({self.directory.name}, epochs={self.epochs})"


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


class Run:
    """A run directory opened for reading (see `load_run`).

    Attributes:
        path: the run directory.
        config, env, status, data, phases, test: its JSON/YAML records
            (empty dicts where absent).
        metrics: ``metrics.csv`` as ``{column: array}``.
        records: ``{kind: Kind}`` for each kind present in the store.
        tables: ``{table: {column: array}}`` for each table present.
        probe: the probe set record.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            from kerasft.errors import RunDirError

            raise RunDirError(
                f"expected a kerasft run directory. Received: {str(path)!r} "
                "(no such directory)"
            )
        self.config = self._yaml("config.yaml")
        self.env = self._json("env.json")
        # a dead "running" run reads as interrupted, with a note why
        self.status = read_status(self.path)
        self.data = self._json("data.json")
        self.phases = self._json("phases.json") or []
        self.test = self._json("test_metrics.json")
        self.metrics = read_table(self.path / "metrics.csv")
        store = self.path / "record"
        self.records = {
            k: Kind(store / k) for k in KINDS if (store / k).is_dir()
        }
        self.tables = {
            t: read_table(store / f"{t}.csv")
            for t in TABLES
            if (store / f"{t}.csv").exists()
        }
        self.probe = self._json("record/probe.json")

    def _json(self, name: str):
        p = self.path / name
        if not p.exists():
            return {}
        with open(p, encoding="utf-8") as f:
            return json.load(f)

    def _yaml(self, name: str):
        p = self.path / name
        if not p.exists():
            return {}
        import yaml

        return yaml.safe_load(p.read_text(encoding="utf-8")) or {}

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, kinds={sorted(self.records)})"


def load_run(path: str | os.PathLike) -> Run:
    """Opens a run directory for reading; needs numpy only (no backend).

    Example:

    ```python
    run = kerasft.load_run("runs/20261125-120000-quickstart-torch")
    w = run.records["weights"]
    w[0]["counts"].shape, w.bins["edges"].shape, run.tables["grad_norms"]
    ```
    """
    return Run(path)

"""The run store: backend-neutral files under ``<run>/record/``.

Format version 2 (readable with numpy and the csv module alone; no pickle)::

    record/
      <kind>/epoch-NNNN.npz     one file per recorded epoch (0 = before the
                                first step); arrays described below
      <kind>/step-SSSSSSSS.npz  the same, at a training step (when asked)
      <table>.csv               step-level tables (header + one row a record)
      probe.json                the probe set: split, indices, labels, seed

The bin rule (`bin_grid`): every histogram carries its own ``edges`` (V,
B+1), chosen from the finite values it counts, so every finite value lies
inside its bins (the under-/over-flow counts stay 0) whatever the tensor
does: start at 0 (biases, BatchNorm beta), start constant (gamma = 1),
grow, or shrink by decades (gradients). The edges lie on a dyadic grid: the
bin width is a power of two, 2**exp, every edge is an integer multiple of
it, and the width is the smallest such power for which the B bins cover
the values' [min, max] (at most 2**-RESOLUTION_BITS of the values'
magnitude finer, so a constant tensor gets bins too). Two such grids are
nested (a bin of the coarser one is a whole number of bins of the finer
one), so any two histograms of a tensor -- two epochs of a run, or the
same epoch of a torch and a jax run -- are put on one common grid exactly
by adding up adjacent bins (`common_histograms`). Two runs given the same
values choose the same edges: the grid depends on min and max alone.

Format version 1 (runs recorded before this rule) fixed each tensor's edges
once, from its first values, in ``<kind>/bins.npz`` (``names`` (V,),
``edges`` (V, B+1)); such runs still load and render (`Kind.edges_of`
falls back to ``bins.npz``), but cannot be compared with format-2 runs.

Kinds (`KINDS`) and their arrays: every histogram kind holds ``names`` (V,)
(Keras variable or layer paths), ``counts`` (V, B+2) int64 -- under-flow,
B bins, over-flow, of the finite values -- ``stats`` (V, len(STAT_NAMES))
over the finite values (NaN where none is finite) and ``nonfinite`` (V,)
int64, the number of NaN/inf entries (records written before it existed
lack it: read it with ``rec.get("nonfinite")``); plus:

``edges`` (V, B+1) float64 are the record's bin edges (the bin rule
above).

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
- ``attention``: for a few probe images, each for its true class:
  ``cam`` (N, h, w) float32 Grad-CAM at ``layer`` (unnormalised),
  ``cam_linear`` (N, h, w) the same before its ReLU,
  ``saliency`` (N, H, W) float32 max-over-channels |d logit / d input|,
  ``logits`` (N, K), ``labels`` (N,), ``image`` (N, H, W, 3) uint8.
  Epoch 0 and the last epoch only (``record.attention_every_epoch`` for all).

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
import math
import os
import re
from pathlib import Path
from typing import Iterable

import numpy as np

from kerasft.rundir import atomic_write, read_status

STORE_FORMAT_VERSION = 2
KINDS = (
    "weights",
    "gradients",
    "activations",
    "probe_gradients",
    "embeddings",
    "batchnorm",
    "feature_maps",
    "attention",
)
TABLES = ("scalars", "grad_norms", "update_ratios")
STAT_NAMES = (
    "mean", "std", "min", "max", "l2", "q01", "q25", "q50", "q75", "q99",
)
NUM_BINS = 64
# The finest bin width of the bin rule, relative to the values' magnitude:
# 2**-20 of it (float32 resolves 2**-23), so the 64 bins of a constant
# tensor span ~6e-5 of its value and an all-zero tensor gets
# `ZERO_BIN_EXP`.
RESOLUTION_BITS = 20
ZERO_BIN_EXP = -40
GRADIENT_SAMPLE = 4096
DEAD_THRESHOLD = 1e-6
QUANTILE_SAMPLE = 1 << 16

_FILE = re.compile(r"^(epoch|step)-(\d+)\.npz$")


# ------------------------------------------------------------------ maths


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax of (N, K) logits, in float64 (stable: the row max is
    subtracted first)."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


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


def bin_grid(lo: float, hi: float, bins: int = NUM_BINS) -> tuple[int, int]:
    """The bin rule: the dyadic grid of `bins` bins that holds [lo, hi].

    Args:
        lo: the smallest finite value to hold.
        hi: the largest finite value to hold (`lo` and `hi` non-finite, as
            for a tensor with no finite value: an all-zero grid).
        bins: the number of bins. Defaults to `NUM_BINS`.

    Returns:
        ``(exp, start)``: the edges are ``(start + k) * 2**exp`` for
        ``k = 0 .. bins``. The width 2**exp is the smallest power of two
        for which the bins cover [lo, hi], and at least
        2**-RESOLUTION_BITS of max(|lo|, |hi|); the values sit in the middle
        of the bins (equal margins of empty bins on both sides).

    Example:

    ```python
    bin_grid(0.0, 0.0)       # (-40, -31): an all-zero bias, 0 in bin 31
    bin_grid(1.0, 1.0)       # (-20, 1048545): a gamma at 1, width 2**-20
    bin_grid(-0.08, 0.11)    # (-8, -28): width 1/256, edges -28/256 .. 36/256
    ```
    """
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo = hi = 0.0
    lo, hi = min(lo, hi), max(lo, hi)
    magnitude = max(abs(lo), abs(hi))
    if magnitude == 0:
        exp = ZERO_BIN_EXP
    else:
        exp = math.frexp(magnitude)[1] - 1 - RESOLUTION_BITS
        if hi > lo:
            # within one step of the answer; the loop below settles it
            exp = max(exp, math.frexp((hi - lo) / bins)[1] - 2)
    # ldexp scales by a power of two exactly, so the bin of each value is
    # found without round-off.
    while (math.floor(math.ldexp(hi, -exp)) - math.floor(math.ldexp(lo, -exp))
           + 1 > bins):
        exp += 1
    first = math.floor(math.ldexp(lo, -exp))
    used = math.floor(math.ldexp(hi, -exp)) - first + 1
    return exp, first - (bins - used) // 2


def grid_edges(exp: int, start: int, bins: int = NUM_BINS) -> np.ndarray:
    """The (bins + 1,) float64 edges of the grid ``(exp, start)``."""
    return np.ldexp(np.arange(start, start + bins + 1, dtype=np.float64), exp)


def dyadic_edges(values: np.ndarray, bins: int = NUM_BINS) -> np.ndarray:
    """The bin rule's edges for the finite entries of `values`."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    return grid_edges(*bin_grid(lo, hi, bins), bins)


def grid_of(edges: np.ndarray) -> tuple[int, int] | None:
    """``(exp, start)`` of dyadic `edges`; None for other edges (format 1)."""
    edges = np.asarray(edges, dtype=np.float64)
    width = edges[1] - edges[0] if len(edges) > 1 else 0.0
    if not (np.isfinite(width) and width > 0):
        return None
    mantissa, e = math.frexp(float(width))
    if mantissa != 0.5:
        return None
    exp = e - 1
    start = math.ldexp(float(edges[0]), -exp)
    if start != math.floor(start):
        return None
    grid = (exp, int(start))
    if not np.array_equal(grid_edges(*grid, len(edges) - 1), edges):
        return None
    return grid


def common_grid(grids: Iterable[tuple[int, int]],
                bins: int = NUM_BINS) -> tuple[int, int]:
    """The finest dyadic grid of `bins` bins holding every bin of `grids`."""
    grids = list(grids)
    exp = max(e for e, _ in grids)
    while True:
        # a bin [s, s + 1) * 2**e lies in coarse bin s >> (exp - e): shifts
        # floor, so negative positions land in the right bin too.
        lo = min(s >> (exp - e) for e, s in grids)
        hi = max(((s + bins - 1) >> (exp - e)) + 1 for e, s in grids)
        if hi - lo <= bins:
            return exp, lo - (bins - (hi - lo)) // 2
        exp += 1


def rebin(counts: np.ndarray, grid: tuple[int, int],
          target: tuple[int, int]) -> np.ndarray:
    """Counts (B+2,) on `grid` moved to the coarser or equal `target` grid.

    Exact for the B bins (each lands whole in one target bin); under- and
    over-flow stay under- and over-flow (the bin rule leaves them empty).
    """
    counts = np.asarray(counts)
    bins = len(counts) - 2
    (e, s), (te, ts) = grid, target
    if te < e:
        raise ValueError(f"rebin: target grid {target} is finer than {grid}")
    index = (np.arange(s, s + bins, dtype=np.int64) >> min(te - e, 62)) - ts
    if index.min() < 0 or index.max() >= bins:
        raise ValueError(f"rebin: grid {grid} does not fit in {target}")
    out = np.zeros_like(counts)
    np.add.at(out, index + 1, counts[1:-1])
    out[0], out[-1] = counts[0], counts[-1]
    return out


def common_histograms(
    edges: list[np.ndarray], counts: list[np.ndarray], what: str = "histograms"
) -> tuple[np.ndarray, np.ndarray]:
    """Several histograms of one tensor put on one set of bins.

    Args:
        edges: each histogram's (B+1,) edges.
        counts: each histogram's (B+2,) counts (under-flow, B, over-flow).
        what: names the histograms in the error message.

    Returns:
        ``(edges (B+1,), counts (N, B+2))``: unchanged when all share their
        edges (always so in format 1), else on the common dyadic grid.

    Raises:
        RunDirError: edges that differ and are not dyadic cannot be
            reconciled (a format-1 store against a format-2 one).
    """
    first = np.asarray(edges[0], dtype=np.float64)
    if all(np.array_equal(first, e) for e in edges[1:]):
        return first, np.stack([np.asarray(c) for c in counts])
    grids = [grid_of(e) for e in edges]
    if any(g is None for g in grids):
        from kerasft.errors import RunDirError

        raise RunDirError(
            f"{what}: recorded on different bins that are not on the dyadic "
            "grid (a store of format 1, whose bins were fixed from the "
            "initial values, against one of format 2?). Received bin "
            f"widths {sorted({float(e[1] - e[0]) for e in edges})}. Compare "
            "runs recorded by the same kerasft version."
        )
    bins = len(first) - 1
    target = common_grid(grids, bins)
    return grid_edges(*target, bins), np.stack(
        [rebin(c, g, target) for c, g in zip(counts, grids)])


def fixed_edges(values: np.ndarray, bins: int = NUM_BINS) -> np.ndarray:
    """The format-1 bin rule, kept to write and test format-1 stores.

    The range is the values' [min, max] widened by 50% of its width on each
    side, or +-max(|v|, 1e-3)/2 around a constant tensor. Values that later
    fall outside go to the under-/over-flow counts (format 2 replaced this
    with `bin_grid`: for tensors that start at 0 these bins spanned
    +-0.0005 and most entries soon fell outside).
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
        """Format 1's fixed edges (``bins.npz``); {} in format-2 stores."""
        path = self.directory / "bins.npz"
        return _load_npz(path) if path.exists() else {}

    def edges_of(self, record: dict[str, np.ndarray]) -> np.ndarray:
        """The (V, B+1) bin edges of one record's histograms.

        Format 2 keeps them in the record; format 1 in ``bins.npz`` (rows
        of names it lacks are NaN).

        Raises:
            RunDirError: the record has counts but no edges anywhere.
        """
        if "edges" in record:
            return record["edges"]
        bins = self.bins
        if "edges" not in bins:
            from kerasft.errors import RunDirError

            raise RunDirError(
                f"{self.directory}: histogram records without bin edges "
                "(no 'edges' array and no bins.npz); the store is damaged "
                "or was not written by kerasft."
            )
        known = dict(zip(bins["names"].astype(str).tolist(), bins["edges"]))
        blank = np.full(bins["edges"].shape[1], np.nan)
        return np.stack([known.get(str(n), blank) for n in record["names"]])

    def series(self, name: str) -> tuple[list[int], np.ndarray, np.ndarray]:
        """One tensor's histograms over the recorded epochs, on one grid.

        Returns:
            ``(epochs, edges (B+1,), counts (E, B+2))`` (see
            `common_histograms`); ``([], empty, empty)`` if never recorded.
        """
        epochs, edges, counts = [], [], []
        for epoch in self.epochs:
            record = self[epoch]
            where = np.flatnonzero(record["names"].astype(str) == name)
            if where.size:
                e = self.edges_of(record)[where[0]]
                if not np.all(np.isfinite(e)):
                    continue
                epochs.append(epoch)
                edges.append(e)
                counts.append(record["counts"][where[0]])
        if not epochs:
            return [], np.zeros(0), np.zeros((0, 0))
        e, c = common_histograms(edges, counts,
                                 f"{self.directory.name} {name}")
        return epochs, e, c

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
    w[0]["counts"].shape, w[0]["edges"].shape, run.tables["grad_norms"]
    w.series("conv1_conv/kernel")  # every epoch on one common grid
    ```
    """
    return Run(path)

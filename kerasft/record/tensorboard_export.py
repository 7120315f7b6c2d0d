"""Exports a run store to TensorBoard event files, without any framework.

The run store (`kerasft.record.store`) is written the same way on every
Keras backend, so exporting from it -- instead of from a backend's own
summary writer -- gives the same TensorBoard view for TensorFlow, JAX and
PyTorch runs, and works on a machine that has none of them installed.

Only the ``tensorboard`` package is used: its protocol buffers and its
TFRecord `RecordWriter`. Not its `EventFileWriter`: that one opens files
through ``tensorboard.compat.tf``, which imports TensorFlow whenever it is
installed (seconds of start-up, and a framework this module promises not to
load).
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from kerasft.errors import KerasftError
from kerasft.record.store import STAT_NAMES, Run, load_run
from kerasft.rundir import atomic_write

# Kinds whose records hold fixed-bin ``counts`` (see the store's docstring).
HISTOGRAM_KINDS = ("weights", "gradients", "activations", "probe_gradients")

# Per-name scalar arrays of a kind's epoch records, and their tag prefixes.
RECORD_SCALARS = {
    "weights": {"rel_change": "weights_rel_change"},
    "activations": {"dead_fraction": "activations_dead_fraction"},
    "probe_gradients": {"norms": "probe_gradients_norm"},
    "batchnorm": {
        "mean_drift": "batchnorm_mean_drift",
        "var_drift": "batchnorm_var_drift",
    },
}

# Step-level store tables and their tag prefixes.
TABLE_PREFIXES = {
    "scalars": "step",
    "grad_norms": "grad_norm",
    "update_ratios": "update_ratio",
}

# Event files this module writes end with this suffix, so a re-export can
# find and replace exactly its own files and leave any others in the logdir
# (say, a Keras TensorBoard callback's) alone. TensorBoard only requires
# "tfevents" in the name.
EVENT_SUFFIX = ".kerasft"

_INSTALL_HINT = (
    "expected the `tensorboard` package to export a run to TensorBoard. "
    "Received: it cannot be imported ({error}). Install it with "
    "`pip install tensorboard`."
)


def export_tensorboard(
    run_dir: str | os.PathLike, logdir: str | os.PathLike | None = None
) -> Path:
    """Writes a run's store as TensorBoard scalars and histograms.

    Reads the run with `load_run` (numpy only) and writes one event file.
    Tags written:

    - ``epoch/<column>``: each numeric column of ``metrics.csv``
      (``epoch/loss``, ``epoch/val_accuracy``, ``epoch/learning_rate``...),
      at step = the ``epoch`` column (1-based: the epochs done).
    - ``step/<column>``, ``grad_norm/<variable>``,
      ``update_ratio/<variable>``: each column of ``record/scalars.csv``,
      ``grad_norms.csv`` and ``update_ratios.csv``, at step = their ``step``
      column.
    - ``<kind>/<name>``: one histogram per name and recorded epoch for the
      kinds ``weights``, ``gradients``, ``activations`` and
      ``probe_gradients``, at step = the epoch (0 = before training, so it
      lines up with ``epoch/...``). Built from the stored fixed-bin counts;
      the under- and over-flow counts go into one bin-width bin just outside
      the edges. ``min``/``max``/``sum``/``sum_squares`` come from the stored
      stats.
    - ``weights_rel_change/<name>``, ``batchnorm_mean_drift/<layer>``,
      ``batchnorm_var_drift/<layer>``, ``activations_dead_fraction/<name>``
      and ``probe_gradients_norm/<name>``: per-epoch scalars of the records.

    Non-finite scalars are left out: an empty CSV cell reads back as NaN,
    and TensorBoard cannot chart NaN or inf. Step-level records
    (``step-*.npz``) and ``embeddings`` are not exported.

    Exporting again replaces the event files this function wrote before in
    ``logdir`` (names ending in ``.kerasft``), so nothing is duplicated.
    The new file is complete before the old ones are removed.

    Args:
        run_dir: the run directory.
        logdir: where to write the event file. Defaults to `None`:
            ``<run_dir>/tensorboard``, so ``tensorboard --logdir runs/``
            lists every exported run.

    Returns:
        The log directory.

    Raises:
        KerasftError: the ``tensorboard`` package is not installed.
        RunDirError: `run_dir` is not a directory.

    Example:

    ```python
    from kerasft.record.tensorboard_export import export_tensorboard

    logdir = export_tensorboard("runs/20261125-120000-quickstart-torch")
    # then: tensorboard --logdir runs/
    ```
    """
    # Imported here so the rest of kerasft works without tensorboard.
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter
    except ImportError as error:
        raise KerasftError(_INSTALL_HINT.format(error=error)) from error

    run = load_run(run_dir)
    logdir = Path(logdir) if logdir is not None else run.path / "tensorboard"

    values: list[tuple[int, Any]] = []
    for step, tag, value in _scalars(run):
        values.append(
            (step, summary_pb2.Summary.Value(tag=tag, simple_value=value))
        )
    for step, tag, fields in _histograms(run):
        histo = summary_pb2.HistogramProto(**fields)
        values.append((step, summary_pb2.Summary.Value(tag=tag, histo=histo)))
    # One event per step, in step order: some TensorBoard loaders treat a
    # step going backwards as a restart and drop the data after it.
    values.sort(key=lambda item: item[0])  # stable: keeps tag order

    logdir.mkdir(parents=True, exist_ok=True)
    wall_time = time.time()
    name = "events.out.tfevents.%010d.%s.%d%s" % (
        wall_time, socket.gethostname(), os.getpid(), EVENT_SUFFIX,
    )
    # Written under a name TensorBoard ignores (no "tfevents"), then
    # renamed: a failed export leaves the previous one whole and a running
    # TensorBoard never reads half a file.
    with atomic_write(logdir / name, "wb", name="kerasft-export") as f:
        writer = RecordWriter(f)
        header = event_pb2.Event(
            wall_time=wall_time,
            file_version="brain.Event:2",
            source_metadata=event_pb2.SourceMetadata(writer="kerasft"),
        )
        writer.write(header.SerializeToString())
        for step, group in _by_step(values):
            event = event_pb2.Event(
                wall_time=wall_time,
                step=step,
                summary=summary_pb2.Summary(value=group),
            )
            writer.write(event.SerializeToString())
    for old in logdir.glob(f"events.out.tfevents.*{EVENT_SUFFIX}"):
        if old.name != name:
            old.unlink()
    return logdir


# ------------------------------------------------------------------ scalars


def _scalars(run: Run) -> Iterator[tuple[int, str, float]]:
    """(step, tag, value) for every scalar of the run."""
    metrics = run.metrics
    if metrics:
        n = len(next(iter(metrics.values())))
        # The 1-based epoch column is the number of epochs done, the same
        # axis as the records' epoch numbers (0 = before training).
        steps = metrics.get("epoch", np.arange(1, n + 1, dtype=np.float64))
        yield from _columns(metrics, steps, "epoch", skip=("epoch",))

    for table, prefix in TABLE_PREFIXES.items():
        columns = run.tables.get(table)
        if not columns or "step" not in columns:
            continue
        yield from _columns(
            columns, columns["step"], prefix, skip=("step", "epoch")
        )

    for kind, arrays in RECORD_SCALARS.items():
        records = run.records.get(kind)
        if records is None:
            continue
        for epoch in records.epochs:
            record = records[epoch]
            names = [str(n) for n in record.get("names", ())]
            for key, prefix in arrays.items():
                if key not in record:
                    continue
                for name, value in zip(names, np.ravel(record[key])):
                    if np.isfinite(value):
                        yield epoch, f"{prefix}/{name}", float(value)


def _columns(
    columns: dict[str, np.ndarray],
    steps: np.ndarray,
    prefix: str,
    skip: tuple[str, ...],
) -> Iterator[tuple[int, str, float]]:
    """Scalars of the numeric columns of a table, at the given steps."""
    if steps.dtype.kind not in "fiu":
        return
    for column, data in columns.items():
        # String columns (metrics.csv's ``phase``) have no chart.
        if column in skip or data.dtype.kind not in "fiu":
            continue
        for step, value in zip(steps, data):
            if np.isfinite(step) and np.isfinite(value):
                yield int(step), f"{prefix}/{column}", float(value)


# ------------------------------------------------------------------ histograms


def _histograms(run: Run) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(epoch, tag, HistogramProto fields) for each histogram record."""
    for kind in HISTOGRAM_KINDS:
        records = run.records.get(kind)
        if records is None or not records.epochs:
            continue
        missing: set[str] = set()
        for epoch in records.epochs:
            record = records[epoch]
            if "counts" not in record:
                continue
            names = [str(n) for n in record["names"]]
            stats = record.get("stats")
            all_edges = records.edges_of(record)
            for i, name in enumerate(names):
                edges = all_edges[i]
                counts = record["counts"][i]
                if (not np.all(np.isfinite(edges))
                        or len(counts) != len(edges) + 1):
                    missing.add(name)
                    continue
                row = stats[i] if stats is not None else None
                yield epoch, f"{kind}/{name}", _histogram_fields(
                    counts, edges, row
                )
        if missing:
            # A format-1 store keeps the edges in bins.npz; a name without
            # them (or with a different bin count) cannot be placed.
            warnings.warn(
                f"{kind}: no matching bin edges for "
                f"{len(missing)} name(s), e.g. {sorted(missing)[0]!r}; "
                "their histograms are not exported.",
                stacklevel=3,
            )


def _stat(row: np.ndarray | None, name: str) -> float:
    """One stored stat, or NaN when the record has no such column."""
    if row is None:
        return float("nan")
    i = STAT_NAMES.index(name)
    return float(row[i]) if i < len(row) else float("nan")


def _histogram_fields(
    counts: np.ndarray, edges: np.ndarray, stats: np.ndarray | None
) -> dict[str, Any]:
    """HistogramProto fields from store counts (B+2,) and edges (B+1,).

    TensorBoard's bucket ``i`` spans ``(bucket_limit[i-1], bucket_limit[i]]``
    and the first one reaches down to -inf. So the buckets are: an empty
    one ending one bin width below the first edge (it fixes the left edge
    of the next), the under-flow bucket, the B stored bins, and the
    over-flow bucket ending one bin width above the last edge.
    """
    counts = np.asarray(counts, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    widths = np.diff(edges)
    lo_width = widths[0] if len(widths) and widths[0] > 0 else 1e-3
    hi_width = widths[-1] if len(widths) and widths[-1] > 0 else 1e-3
    limits = np.concatenate(
        [[edges[0] - lo_width], edges, [edges[-1] + hi_width]]
    )
    buckets = np.concatenate([[0.0], counts])
    num = float(counts.sum())

    nonempty = np.flatnonzero(buckets)
    if nonempty.size == 0:
        return dict(
            min=0.0, max=0.0, num=0.0, sum=0.0, sum_squares=0.0,
            bucket_limit=limits.tolist(), bucket=buckets.tolist(),
        )
    first, last = nonempty[0], nonempty[-1]
    # Left edge of each bucket (the first, always empty, gets a width too).
    lefts = np.concatenate([[limits[0] - lo_width], limits[:-1]])

    # TensorBoard draws the first non-empty bucket from `min` and the last
    # one up to `max`; clamping keeps those buckets from running backwards
    # if the stats and the counts disagree (NaN stats, sampled values).
    lo, hi = _stat(stats, "min"), _stat(stats, "max")
    lo = min(lo, limits[first]) if np.isfinite(lo) else lefts[first]
    hi = max(hi, lefts[last]) if np.isfinite(hi) else limits[last]

    mean, std = _stat(stats, "mean"), _stat(stats, "std")
    l2 = _stat(stats, "l2")
    centres = (lefts + limits) / 2
    total = mean * num if np.isfinite(mean) else float(buckets @ centres)
    # num * (mean^2 + std^2) is l2^2 when the counts cover the whole tensor
    # and stays right when they cover a sample of it (gradients).
    if np.isfinite(mean) and np.isfinite(std):
        squares = num * (mean * mean + std * std)
    elif np.isfinite(l2):
        squares = l2 * l2
    else:
        squares = float(buckets @ (centres * centres))
    return dict(
        min=float(lo), max=float(hi), num=num, sum=float(total),
        sum_squares=float(squares),
        bucket_limit=limits.tolist(), bucket=buckets.tolist(),
    )


def _by_step(values: list[tuple[int, Any]]) -> Iterator[tuple[int, list]]:
    """Groups sorted (step, value) pairs into (step, [values])."""
    group: list = []
    current: int | None = None
    for step, value in values:
        if step != current and group:
            yield current, group
            group = []
        current = step
        group.append(value)
    if group:
        yield current, group

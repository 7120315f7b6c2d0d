"""export_tensorboard: a synthetic run store read back by TensorBoard itself.

No model is trained: the store is written with the store's own helpers, so
these tests take about a second on any backend.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kerasft.errors import KerasftError
from kerasft.record.store import (
    STAT_NAMES,
    TableWriter,
    fixed_edges,
    histogram,
    summary_stats,
    write_npz,
)
from kerasft.record.tensorboard_export import export_tensorboard

REPO = Path(__file__).resolve().parent.parent
VARIABLES = {"dense/kernel": (6, 4), "dense/bias": (4,)}
WEIGHT_EPOCHS = [0, 1, 2]
GRADIENT_EPOCHS = [1, 2]  # gradients exist only after a training step
METRICS = [
    {"epoch": 1, "phase": "head", "loss": 1.5, "accuracy": 0.4,
     "val_loss": 1.6, "val_accuracy": 0.35, "learning_rate": 0.01},
    {"epoch": 2, "phase": "head", "loss": 1.1, "accuracy": 0.6,
     "val_loss": 1.2, "val_accuracy": 0.55, "learning_rate": 0.005},
]
STEP_ROWS = [
    {"step": 1, "epoch": 1, "loss": 2.0, "learning_rate": 0.01,
     "images_per_second": 100.0},
    {"step": 2, "epoch": 1, "loss": 1.8, "learning_rate": 0.01,
     "images_per_second": None},  # an empty cell: left out
    {"step": 3, "epoch": 2, "loss": 1.2, "learning_rate": 0.005,
     "images_per_second": 120.0},
]


def _write_kind(store: Path, kind: str, per_epoch: dict[int, dict]) -> None:
    """Writes bins.npz (from the first epoch) and one npz per epoch."""
    names = list(VARIABLES)
    first = per_epoch[min(per_epoch)]
    edges = np.stack([fixed_edges(first[n]) for n in names])
    write_npz(store / kind / "bins.npz", names=np.array(names), edges=edges)
    for epoch, values in per_epoch.items():
        arrays = dict(
            names=np.array(names),
            counts=np.stack(
                [histogram(values[n], e) for n, e in zip(names, edges)]
            ),
            stats=np.stack([summary_stats(values[n]) for n in names]),
        )
        if kind == "weights":
            arrays["rel_change"] = np.array([0.1 * epoch, np.nan])
        write_npz(store / kind / f"epoch-{epoch:04d}.npz", **arrays)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "synthetic-run"
    store = run / "record"
    rng = np.random.default_rng(0)
    weights = {
        e: {n: rng.normal(0, 1 + e, s) for n, s in VARIABLES.items()}
        for e in WEIGHT_EPOCHS
    }
    # Epoch 2 gradients fall far outside epoch 1's range: under/over-flow.
    grads = {
        e: {n: rng.normal(0, 10.0**e, s) for n, s in VARIABLES.items()}
        for e in GRADIENT_EPOCHS
    }
    _write_kind(store, "weights", weights)
    _write_kind(store, "gradients", grads)
    for e in WEIGHT_EPOCHS:
        write_npz(
            store / "batchnorm" / f"epoch-{e:04d}.npz",
            names=np.array(["bn1"]),
            mean_drift=np.array([0.2 * e]),
            var_drift=np.array([0.3 * e]),
            moving_mean_avg=np.array([0.0]),
            moving_var_avg=np.array([1.0]),
        )

    table = TableWriter(store / "scalars.csv", list(STEP_ROWS[0]))
    for row in STEP_ROWS:
        table.write(row)
    table.close()
    table = TableWriter(
        store / "grad_norms.csv", ["step", "epoch", *VARIABLES]
    )
    for step in (1, 2, 3):
        table.write({"step": step, "epoch": 1 + step // 3,
                     "dense/kernel": step * 1.5, "dense/bias": step * 0.5})
    table.close()

    with open(run / "metrics.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(METRICS[0]))
        writer.writeheader()
        writer.writerows(METRICS)
    return run


def _accumulator(logdir: Path):
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator,
    )

    acc = EventAccumulator(
        str(logdir), size_guidance={"histograms": 0, "scalars": 0}
    )
    acc.Reload()
    return acc


def _scalars(acc, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in acc.Scalars(tag)}


def test_histograms_match_the_store(run_dir: Path):
    from kerasft.record.store import load_run

    logdir = export_tensorboard(run_dir)
    assert logdir == run_dir / "tensorboard"
    acc = _accumulator(logdir)
    run = load_run(run_dir)
    lo, hi = STAT_NAMES.index("min"), STAT_NAMES.index("max")
    l2 = STAT_NAMES.index("l2")
    for kind, epochs in (("weights", WEIGHT_EPOCHS),
                         ("gradients", GRADIENT_EPOCHS)):
        for i, name in enumerate(VARIABLES):
            events = acc.Histograms(f"{kind}/{name}")
            assert [e.step for e in events] == epochs
            for event in events:
                record = run.records[kind][event.step]
                h = event.histogram_value
                stored = int(record["counts"][i].sum())
                assert sum(h.bucket) == stored == h.num
                assert h.min == pytest.approx(record["stats"][i][lo])
                assert h.max == pytest.approx(record["stats"][i][hi])
                assert h.sum_squares == pytest.approx(
                    record["stats"][i][l2] ** 2
                )
                # The under-/over-flow buckets sit one bin width outside.
                edges = run.records[kind].bins["edges"][i]
                width = edges[1] - edges[0]
                assert h.bucket_limit[0] == pytest.approx(edges[0] - width)
                assert h.bucket_limit[-1] == pytest.approx(edges[-1] + width)
                assert h.bucket[1] == record["counts"][i][0]
                assert h.bucket[-1] == record["counts"][i][-1]
    # The synthetic epoch-2 gradients do overflow epoch 1's edges.
    last = acc.Histograms("gradients/dense/kernel")[-1].histogram_value
    assert last.bucket[1] > 0 and last.bucket[-1] > 0


def test_scalars_match_the_tables(run_dir: Path):
    acc = _accumulator(export_tensorboard(run_dir))
    for column in ("loss", "accuracy", "val_loss", "val_accuracy",
                   "learning_rate"):
        assert _scalars(acc, f"epoch/{column}") == pytest.approx(
            {m["epoch"]: m[column] for m in METRICS}
        )
    tags = acc.Tags()["scalars"]
    assert "epoch/phase" not in tags and "epoch/epoch" not in tags
    assert "step/step" not in tags and "step/epoch" not in tags

    assert _scalars(acc, "step/loss") == pytest.approx(
        {1: 2.0, 2: 1.8, 3: 1.2}
    )
    assert _scalars(acc, "step/images_per_second") == pytest.approx(
        {1: 100.0, 3: 120.0}
    )
    assert _scalars(acc, "grad_norm/dense/kernel") == pytest.approx(
        {1: 1.5, 2: 3.0, 3: 4.5}
    )
    assert _scalars(acc, "weights_rel_change/dense/kernel") == pytest.approx(
        {0: 0.0, 1: 0.1, 2: 0.2}
    )
    assert "weights_rel_change/dense/bias" not in tags  # NaN: left out
    assert _scalars(acc, "batchnorm_mean_drift/bn1") == pytest.approx(
        {0: 0.0, 1: 0.2, 2: 0.4}
    )
    assert _scalars(acc, "batchnorm_var_drift/bn1") == pytest.approx(
        {0: 0.0, 1: 0.3, 2: 0.6}
    )


def test_reexport_replaces_its_own_file(run_dir: Path, tmp_path: Path):
    logdir = tmp_path / "elsewhere"
    foreign = logdir / "events.out.tfevents.1.other-writer"
    logdir.mkdir()
    foreign.write_bytes(b"")
    export_tensorboard(run_dir, logdir)
    export_tensorboard(run_dir, logdir)
    assert foreign.exists()  # not ours: kept
    ours = sorted(logdir.glob("events.out.tfevents.*.kerasft"))
    assert len(ours) == 1
    assert not list(logdir.glob(".*tmp"))
    acc = _accumulator(logdir)
    assert len(acc.Histograms("weights/dense/kernel")) == len(WEIGHT_EPOCHS)
    assert len(acc.Scalars("step/loss")) == len(STEP_ROWS)


def test_missing_tensorboard_is_a_kerasft_error(run_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard.compat.proto", None)
    with pytest.raises(KerasftError, match="pip install tensorboard"):
        export_tensorboard(run_dir)


def test_exports_without_importing_a_framework(run_dir: Path):
    # The export must work where no framework is installed. The
    # `kerasft.record` package re-exports the Keras recorders, so its
    # __init__ is stood in for by a bare package: what is checked is what
    # the export and the store modules import themselves.
    code = (
        "import sys, types\n"
        "import kerasft\n"
        "pkg = types.ModuleType('kerasft.record')\n"
        "pkg.__path__ = [kerasft.__path__[0] + '/record']\n"
        "sys.modules['kerasft.record'] = pkg\n"
        "from kerasft.record.tensorboard_export import export_tensorboard\n"
        f"export_tensorboard({str(run_dir)!r})\n"
        "loaded = [m for m in ('tensorflow', 'torch', 'jax', 'keras')"
        " if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)

"""Weights, gradients and BatchNorm figures, on a small synthetic run store."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.figure import Figure

from kerasft.record.store import (
    STAT_NAMES,
    TableWriter,
    fixed_edges,
    histogram,
    load_run,
    record_name,
    summary_stats,
    write_npz,
)
from kerasft.render import batchnorm, gradients, weights
from kerasft.render.base import RenderOptions

N_KERNELS = 16
KERNELS = [f"conv{i}_block1_conv/kernel" for i in range(N_KERNELS - 1)] + [
    "head/kernel"]
VARIABLES = [v for k in KERNELS for v in (k, k.replace("kernel", "bias"))]
BN_LAYERS = [f"conv{i}_block1_bn" for i in range(6)]
PHASES = [
    {"name": "head", "first_epoch": 1, "epochs": 1, "stages": []},
    {"name": "finetune", "first_epoch": 2, "epochs": 2, "stages": [1, 2]},
]


def _trainable(name: str, epoch: int) -> bool:
    """Head-only in epoch 1, then everything (a phased plan)."""
    return name.startswith("head") or epoch >= 2


def build_run(path, epochs: int = 3, bn_start_zero: bool = False):
    """A run directory written with the store's own writers."""
    rng = np.random.default_rng(0)
    store = path / "record"
    (path / "phases.json").write_text(json.dumps(PHASES))

    initial = {v: rng.normal(0, 0.05, 200) if v.endswith("kernel")
               else np.zeros(10) for v in VARIABLES}
    edges = np.array([fixed_edges(initial[v]) for v in VARIABLES])
    write_npz(store / "weights" / "bins.npz", names=np.array(VARIABLES),
              edges=edges)
    current = {v: a.copy() for v, a in initial.items()}
    for epoch in range(epochs + 1):
        if epoch:
            for v in VARIABLES:
                if _trainable(v, epoch):
                    current[v] = current[v] + rng.normal(0, 0.01, current[v].size)
        write_npz(
            store / "weights" / record_name(epoch),
            names=np.array(VARIABLES),
            counts=np.array([histogram(current[v], e)
                             for v, e in zip(VARIABLES, edges)]),
            stats=np.array([summary_stats(current[v]) for v in VARIABLES]),
            rel_change=np.array([
                np.linalg.norm(current[v] - initial[v])
                / max(np.linalg.norm(initial[v]), 1e-12) for v in VARIABLES]),
        )

    grad_edges = np.array([fixed_edges(rng.normal(0, 1, 50)) for _ in VARIABLES])
    write_npz(store / "gradients" / "bins.npz", names=np.array(VARIABLES),
              edges=grad_edges)
    for epoch in range(1, epochs + 1):
        live = [i for i, v in enumerate(VARIABLES) if _trainable(v, epoch)]
        samples = [rng.normal(0, 1, 50) for _ in live]
        write_npz(
            store / "gradients" / record_name(epoch),
            names=np.array([VARIABLES[i] for i in live]),
            counts=np.array([histogram(s, grad_edges[i])
                             for s, i in zip(samples, live)]),
            stats=np.array([summary_stats(s) for s in samples]),
            step=np.array(epoch * 20),
        )

    norms = TableWriter(store / "grad_norms.csv", ["step", "epoch", *VARIABLES])
    ratios = TableWriter(store / "update_ratios.csv",
                         ["step", "epoch", *VARIABLES])
    for step in range(5, epochs * 20 + 1, 5):
        epoch = (step - 1) // 20 + 1
        norms.write({"step": step, "epoch": epoch, **{
            v: (float(rng.uniform(1, 10)) if _trainable(v, epoch) else None)
            for v in VARIABLES}})
        ratios.write({"step": step, "epoch": epoch, **{
            v: (float(rng.uniform(5e-4, 2e-3)) if _trainable(v, epoch) else 0.0)
            for v in VARIABLES}})
    norms.close()
    ratios.close()

    start = 0.0 if bn_start_zero else 0.5
    for epoch in range(epochs + 1):
        moved = 0.0 if epoch < 2 else 0.1 * epoch
        drift = np.full(len(BN_LAYERS), moved / start if start else moved * 1e12)
        write_npz(
            store / "batchnorm" / record_name(epoch),
            names=np.array(BN_LAYERS),
            mean_drift=drift,
            var_drift=np.full(len(BN_LAYERS), moved),
            moving_mean_avg=np.full(len(BN_LAYERS), start + moved),
            moving_var_avg=np.full(len(BN_LAYERS), 1.0 + moved),
        )
    return load_run(path)


@pytest.fixture
def run(tmp_path):
    return build_run(tmp_path)


def _table(values: dict, steps=(5, 10, 15, 20)) -> dict:
    n = len(steps)
    out = {"step": np.array(steps, dtype=float),
           "epoch": np.ones(n)}
    for name, v in values.items():
        out[name] = np.broadcast_to(np.asarray(v, dtype=float), (n,)).copy()
    return out


# ------------------------------------------------------------------ figures


@pytest.mark.parametrize("module, keys, section", [
    (weights, ["weight_histograms", "layer_change"], "weights"),
    (gradients, ["grad_norms", "update_ratios"], "gradients"),
    (batchnorm, ["batchnorm_drift"], "batchnorm"),
])
def test_figures_have_their_keys(run, module, keys, section):
    results = module.render(run, RenderOptions())
    assert [r.key for r in results] == keys
    for r in results:
        assert r.section == section
        assert isinstance(r.figure, Figure)
        assert r.title and r.caption
        assert isinstance(r.notes, list)


def test_log_axes_show_plain_numbers_not_mathtext_source(run):
    # Figures are drawn with mathtext off (user strings may hold "$"), so a
    # default log axis would print "$\\mathdefault{10^{-3}}$" as its labels.
    from kerasft.render.base import plain_text

    with plain_text():
        # the weights figures' log colour bars too
        for r in [*gradients.render(run, RenderOptions()),
                  *weights.render(run, RenderOptions())]:
            r.figure.canvas.draw()
            for ax in r.figure.axes:
                if ax.get_yscale() != "log":
                    continue
                labels = [t.get_text() for t in ax.get_yticklabels()
                          if t.get_visible() and t.get_text()]
                assert labels, r.key
                assert not any("$" in t or "mathdefault" in t
                               for t in labels), (r.key, labels)
                float(labels[0].replace("\u2212", "-"))  # a plain number


@pytest.mark.parametrize("module", [weights, gradients, batchnorm])
def test_missing_records_give_no_figure(tmp_path, module):
    (tmp_path / "record").mkdir()
    assert module.render(load_run(tmp_path), RenderOptions()) == []


def test_one_epoch_run_renders(tmp_path):
    run = build_run(tmp_path, epochs=1)
    keys = [r.key for m in (weights, gradients, batchnorm)
            for r in m.render(run, RenderOptions())]
    assert keys == ["weight_histograms", "layer_change", "grad_norms",
                    "update_ratios", "batchnorm_drift"]


def test_histogram_panels_follow_the_selection(run):
    def panels(options):
        fig = weights.weight_histograms(run, options).figure
        return [ax.get_title() for ax in fig.axes if ax.get_title()]

    few = panels(RenderOptions(max_layers=4))
    assert len(few) == 4
    assert few[0] == "conv0_b1_conv" and few[-1] == "head"
    assert len(panels(RenderOptions(max_layers=4, all_layers=True))) == N_KERNELS


# ------------------------------------------------------------------ weights


def test_change_matrix_has_frozen_zeros(run):
    kind = run.records["weights"]
    names = weights._kernel_names(kind)
    matrix, epochs = weights.change_matrix(kind, names)
    assert names == KERNELS
    assert epochs == [1, 2, 3]  # epoch 0 is 0 by definition, left out
    assert np.all(matrix[:-1, 0] == 0)  # frozen in the head phase
    assert matrix[-1, 0] > 0 and np.all(matrix[:, 1:] > 0)


# ------------------------------------------------------------------ gradients


def _lr_findings(table: dict, kind: str = "update_ratios") -> list[str]:
    from types import SimpleNamespace

    from kerasft.render.diagnose import diagnose

    return [f.id for f in diagnose(SimpleNamespace(tables={kind: table}))
            if f.severity != "info"]


def test_update_ratio_verdicts():
    assert _lr_findings(_table({"a/kernel": 5e-1, "b/kernel": 3e-1})) == [
        "lr_too_high"]
    assert _lr_findings(_table({"a/kernel": 1e-3, "b/kernel": 2e-3})) == []
    assert _lr_findings(_table({"a/kernel": 1e-6, "b/kernel": 3e-6})) == [
        "lr_too_low"]
    # Frozen layers read 0 and must not drag the median down to "too low".
    table = _table({"a/kernel": 0.0, "b/kernel": 0.0, "c/kernel": np.nan,
                    "d/kernel": 1e-3, "a/bias": 1.0})
    assert _lr_findings(table) == []
    # Healthy, then decayed towards 0 by the schedule: no "too low".
    assert _lr_findings(_table({"a/kernel": [1e-3, 5e-4, 1e-5, 1e-7]})) == []


def test_row_medians_skip_non_positive():
    table = _table({"a/kernel": [0.0, 1e-3], "b/kernel": [np.nan, 3e-3],
                    "c/kernel": [0.0, 2e-3]}, steps=(5, 10))
    medians = gradients.row_medians(table, ["a/kernel", "b/kernel", "c/kernel"])
    assert np.isnan(medians[0])
    assert medians[1] == pytest.approx(2e-3)


def test_phase_start_steps_between_recorded_rows(run):
    table = run.tables["grad_norms"]
    assert gradients.phase_start_steps(run.phases, table) == [(22.5, "finetune")]
    assert gradients.phase_start_steps([], table) == []


def test_gradient_depth_and_overflow_findings():
    healthy = _table({f"l{i}/kernel": 1.0 for i in range(6)})
    assert _lr_findings(healthy, "grad_norms") == []
    vanishing = _table({f"l{i}/kernel": 10.0 ** (i - 6) if i < 2 else 1.0
                        for i in range(6)})
    assert _lr_findings(vanishing, "grad_norms") == ["vanishing_gradients"]
    overflow = _table({"a/kernel": [1.0, np.inf, 1.0, 1.0]})
    assert _lr_findings(overflow, "grad_norms") == ["diverged"]


def test_grad_norms_with_only_nan_columns(run):
    # A table where every variable is frozen (all cells empty) still draws.
    table = run.tables["grad_norms"]
    for name in list(table):
        if name not in ("step", "epoch"):
            table[name] = np.full_like(table[name], np.nan)
    result = gradients.grad_norms(run, RenderOptions())
    assert result.key == "grad_norms" and result.notes == []


def test_epoch_end_l2_is_drawn_by_depth(run):
    fig = gradients.grad_norms(run, RenderOptions()).figure
    bottom = next(ax for ax in fig.axes if "end of each epoch" in ax.get_title())
    lines = {l.get_label(): l for l in bottom.get_lines()}
    first = lines["epoch 1"]
    # Epoch 1 had gradients for the head only: one point, at the last depth.
    assert list(first.get_xdata()) == [N_KERNELS - 1]
    l2 = run.records["gradients"][1]["stats"][0, STAT_NAMES.index("l2")]
    assert first.get_ydata()[0] == pytest.approx(l2)


# ------------------------------------------------------------------ batchnorm


def test_batchnorm_drift_large_drift_note(run):
    data = batchnorm.drift_matrices(run.records["batchnorm"])
    assert data["epochs"] == [1, 2, 3]
    assert np.all(data["mean"][:, 0] == 0)
    assert not data["mean_undefined"].any()
    from kerasft.render.diagnose import diagnose

    (drift,) = [f for f in diagnose(run) if f.id == "bn_drift"]
    assert "plan.batchnorm: inference" in drift.action


def test_batchnorm_zero_start_is_undefined_not_a_warning(tmp_path):
    run = build_run(tmp_path, bn_start_zero=True)
    data = batchnorm.drift_matrices(run.records["batchnorm"])
    assert data["mean_undefined"][:, 1:].all()
    assert not data["mean_undefined"][:, 0].any()  # frozen 0 stays frozen
    # Placeholder statistics of a random init drift by design.
    from kerasft.render.diagnose import diagnose

    assert "bn_drift" not in [f.id for f in diagnose(run)]
    result = batchnorm.render(run, RenderOptions())[0]
    assert "random initialisation" in result.caption

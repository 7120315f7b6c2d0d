"""`kerasft compare`: two or more runs -> side-by-side figures + one page.

The first run is the reference. Any runs can be compared; each view shows
the runs it can compare and says which it skipped and why
(`kerasft.compare.rules` holds the rules):

* every run: curves overlaid, test metrics and timing, a per-run table
  (`kerasft.compare.summary`), the probe embeddings' k-NN accuracy;
* runs with the reference's layers: per-layer relative weight change from
  each run's own start, per-stage change, weight quantiles over epochs,
  embeddings in one basis;
* runs with the reference's start and maths: weight-histogram distances
  (on the pair's common bins; not between a format-1 and a format-2
  store), checkpoint weight differences, probe differences, the table of
  largest divergences and the tolerance checks.

The result (`Comparison`) lists every view as present or skipped with
its reason; ``comparison.json`` and the page (its "Skipped views"
section) say the same. A run compared with itself gets a note.
"""

from __future__ import annotations

import html
import math
import os
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasft.compare.metrics import (
    checkpoint_variables,
    first_divergence,
    histogram_distances,
    read_checkpoint,
    relative_difference,
    stat,
)
from kerasft.compare.rules import (
    fingerprint,
    histogram_difference,
    layer_difference,
    start_difference,
)
from kerasft.compare.summary import summarize
from kerasft.compare.tolerances import parity_checks, tier_for
from kerasft.errors import ConfigError, RunDirError
from kerasft.record.store import load_run
from kerasft.render.base import (
    DPI,
    kernels_only,
    log_colorbar,
    log_scale,
    new_figure,
    phase_lines,
    plain_text,
    select_layers,
    short_name,
)
from kerasft.rundir import atomic_write, unique_dir, write_json

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
          "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
# A per-layer relative difference above this counts as "diverged" when the
# table looks for the layer where divergence starts.
DIVERGENCE_THRESHOLD = 1e-3
# Kernels drawn in the weight-quantile figure (spread input to output).
STATS_LAYERS = 8
# Stages in input-to-output order (layers.json's `stage`, kerasft.model.stage_of).
STAGE_ORDER = (1, 2, 3, 4, 5, "head")
FROZEN_COLOUR = "#d9d9d9"


@dataclass
class View:
    """One view of a comparison: a figure or a table of the page.

    Attributes:
        key: its name (the figure's file stem, ``compare_<key>.png``).
        title: its heading on the page.
        present: whether it was drawn.
        reason: why it is absent; for a present view, which runs it
            leaves out and why (None when it shows every run).
        figure: the PNG, for a present figure.
    """

    key: str
    title: str
    present: bool
    reason: str | None = None
    figure: Path | None = None

    def to_dict(self) -> dict:
        return {"key": self.key, "title": self.title, "present": self.present,
                "reason": self.reason,
                "figure": None if self.figure is None else self.figure.name}


@dataclass
class Comparison:
    """What `compare_runs` made.

    Attributes:
        index: the page (``index.html``).
        figures: the PNGs written.
        warnings: notes for the user (a run compared with itself).
        divergences: the largest per-layer divergences (same-start pairs).
        checks: ``{"ref vs other": [check dicts]}`` for same-start pairs.
        views: every view by key, present or skipped with its reason.
        runs: per run, ``{"label", "path", "summary"}`` (`summarize`).
        unchecked: ``{"ref vs other": reason}`` for the pairs whose
            tolerance checks were skipped (different start or maths).
    """

    index: Path
    figures: list[Path]
    warnings: list[str]
    divergences: list[dict]
    checks: dict
    views: dict[str, View] = field(default_factory=dict)
    runs: list[dict] = field(default_factory=list)
    unchecked: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        """``"pair: check"`` for every tolerance check that failed."""
        return [f"{pair}: {c['name']}" for pair, rows in self.checks.items()
                for c in rows if not c["ok"]]

    @property
    def skipped(self) -> dict[str, str]:
        """``{key: reason}`` of the views that were not drawn."""
        return {k: v.reason for k, v in self.views.items() if not v.present}


def grouped_reasons(views: dict[str, View], present: bool = False
                    ) -> list[tuple[list[str], str]]:
    """``(titles, reason)`` of the skipped views (or, with `present`, of
    the views drawn without some runs), one entry per reason: a different
    start skips five views for one reason, said once."""
    groups: dict[str, list[str]] = {}
    for v in views.values():
        if v.present == present and v.reason:
            groups.setdefault(v.reason, []).append(v.title)
    return [(titles, reason) for reason, titles in groups.items()]


# ------------------------------------------------------------------ labels


def _stamp(run) -> str:
    """``HH:MM:SS`` of a run directory named ``YYYYmmdd-HHMMSS-...``, or
    the directory's name."""
    name = run.path.name
    stamp = name[9:15] if len(name) > 15 and name[8] == "-" else name
    if stamp.isdigit():
        stamp = f"{stamp[:2]}:{stamp[2:4]}:{stamp[4:]}"
    return stamp


def _fmt_lr(lr) -> str:
    return "?" if lr is None else f"{lr:g}"


def default_labels(runs, summaries: list[dict]) -> list[str]:
    """Legend labels that tell the runs apart: the architecture, plan,
    learning rate and seed where they differ across the runs, the backend
    where it differs or nothing else does, then the start time (and a
    number) where labels would still collide."""
    fields = (
        ("arch", lambda s: s["arch"]),
        ("plan", lambda s: s["plan"]),
        ("lr", lambda s: f"lr={_fmt_lr(s['learning_rate'])}"),
        ("seed", lambda s: f"seed={s['seed']}"),
    )
    varying = [f for f in fields
               if len({f[1](s) for s in summaries}) > 1]
    backends = {s["backend"] for s in summaries}
    parts = [[] for _ in runs]
    if len(backends) > 1 or not varying:
        for p, s in zip(parts, summaries):
            p.append(str(s["backend"]))
    for _, value in varying:
        for p, s in zip(parts, summaries):
            p.append(str(value(s)))
    labels = [" ".join(p) for p in parts]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} ({_stamp(r)})" for lab, r in zip(labels, runs)]
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if seen[lab] == 1 else f"{lab} #{seen[lab]}")
    return out


def _check_labels(labels, n: int) -> list[str]:
    labels = [str(x) for x in labels]
    if len(labels) != n or len(set(labels)) != n or not all(labels):
        raise ConfigError(
            f"compare: expected {n} distinct, non-empty labels, one per run "
            f"directory. Received: {labels!r}")
    return labels


# ------------------------------------------------------------------ notes


def _same_run(a, b) -> str | None:
    """How runs `a` and `b` are one run (same directory, or a copy with the
    same run id, the directory name), or None."""
    if a.path.resolve() == b.path.resolve():
        return "the same directory"
    if a.path.name == b.path.name:
        return f"the same run id {a.path.name}, in two places"
    return None


def _warnings(runs) -> list[str]:
    ref = runs[0]
    out = []
    for r in runs[1:]:
        same = _same_run(ref, r)
        if same:
            out.append(
                f"{r.path.name} is the same run as {ref.path.name} ({same}): "
                "every difference is 0 by construction and the checks say "
                "nothing about backends")
    return out


# ------------------------------------------------------------------ helpers


def _integer_epochs(ax, epochs) -> None:
    """Integer epoch ticks; one or two epochs get half an epoch of margin
    (matplotlib's default margin around one point is 0.95 to 1.05)."""
    from matplotlib.ticker import MaxNLocator

    epochs = [int(e) for e in epochs if np.isfinite(e)]
    if not epochs:
        return
    lo, hi = min(epochs), max(epochs)
    if hi - lo < 4:
        ax.set_xlim(lo - 0.5, hi + 0.5)
        ax.set_xticks(range(lo, hi + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _title(fig, text: str, width_in: float, size: float = 12) -> None:
    """A figure title wrapped to the figure's width, so no end is cut off
    (about 0.55 em per character)."""
    chars = max(20, int(width_in * 72 / (0.55 * size)))
    fig.suptitle(textwrap.fill(text, chars), fontsize=size)


def _has(kind: str):
    def test(run) -> bool:
        k = run.records.get(kind)
        return k is not None and bool(k.epochs)
    return test


def _kernels(run) -> list[str]:
    kind = run.records["weights"]
    names = [str(n) for n in kind[kind.epochs[0]]["names"]]
    return [names[i] for i in kernels_only(names)]


# ------------------------------------------------------------ any runs


def _curves(runs, names):
    fig = new_figure(15, 4.2)
    axes = fig.subplots(1, 3)
    for i, (r, name) in enumerate(zip(runs, names)):
        m, c = r.metrics, COLORS[i % len(COLORS)]
        # the first run is drawn biggest, so identical curves stay visible
        size, width = 9 - 2.5 * i, 3.2 - 0.9 * i
        steps = r.tables.get("scalars", {})
        if "loss" in steps:
            # markers where a line would be too short to see
            axes[0].plot(steps["step"], steps["loss"],
                         "-" if len(steps["loss"]) > 2 else "-o", color=c,
                         lw=max(width, 0.8), ms=max(size, 3), label=name,
                         alpha=0.8)
        ep = m.get("epoch", [])
        for ax, key in zip(axes[1:], ("loss", "accuracy")):
            if key in m:
                ax.plot(ep, m[key], "-o", color=c, ms=max(size, 3),
                        lw=max(width, 0.8), label=f"{name} train")
            if f"val_{key}" in m:
                ax.plot(ep, m[f"val_{key}"], "--s", color=c, ms=max(size, 3),
                        alpha=0.7, label=f"{name} validation")
    axes[0].set_xlabel("training step")
    axes[0].set_ylabel("loss (running mean within the epoch)")
    axes[0].set_title("training loss per step")
    all_epochs = [e for r in runs for e in r.metrics.get("epoch", [])]
    for ax, key in zip(axes[1:], ("loss", "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(f"{key} per epoch (solid: train, dashed: validation)")
        _integer_epochs(ax, all_epochs)
    for ax in axes:
        ax.grid(alpha=0.3)
    for ax, size in ((axes[0], 8), (axes[2], 7)):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=size)
    _title(fig, "Runs overlaid (the reference drawn widest): curves on top "
           "of each other mean the runs agree", 15)
    return fig


def _bar_value(ax, x, v, fmt: str) -> None:
    ax.text(x, v, fmt.format(v), ha="center", va="bottom", fontsize=7)


def _metrics(summaries, names):
    """Test metrics and timing, one colour per run."""
    measures = (("test", "test_accuracy"),
                ("best validation", "best_val_accuracy"),
                ("train, inference mode", "train_inference_accuracy"),
                ("5-NN, probe embeddings", "knn_accuracy"))
    n = len(summaries)
    fig = new_figure(15, 4.6)
    axes = fig.subplots(1, 3, width_ratios=(2.2, 1, 1))
    width = 0.8 / n
    for i, (s, name) in enumerate(zip(summaries, names)):
        c = COLORS[i % len(COLORS)]
        xs = np.arange(len(measures)) + (i - (n - 1) / 2) * width
        for j, (x, (_, key)) in enumerate(zip(xs, measures)):
            v = s[key]
            if v is None:
                axes[0].text(x, 0.01, "n/a", rotation=90, ha="center",
                             va="bottom", fontsize=7, color=c)
                continue
            axes[0].bar(x, v, width, color=c)
            _bar_value(axes[0], x, v, "{:.2f}")
    axes[0].set_xticks(range(len(measures)),
                       [textwrap.fill(m[0], 16) for m in measures])
    axes[0].set_ylim(0, 1.25)  # room for the legend above a bar at 1
    axes[0].set_ylabel("accuracy")
    axes[0].set_title("accuracy (n/a: not recorded)")
    from matplotlib.patches import Patch

    axes[0].legend(handles=[Patch(fc=COLORS[i % len(COLORS)], label=name)
                            for i, name in enumerate(names)],
                   fontsize=8, loc="upper left", ncols=min(n, 3))
    short = [textwrap.fill(name, 16) for name in names]
    xs = np.arange(n)
    for ax, keys, title, ylabel in (
        (axes[1], (("images_per_second", None),), "training speed",
         "images / s (training steps)"),
        (axes[2], (("wall_seconds", None), ("train_seconds", "//")),
         "time", "seconds"),
    ):
        w = 0.8 / len(keys)
        for k, (key, hatch) in enumerate(keys):
            for i, s in enumerate(summaries):
                x = i + (k - (len(keys) - 1) / 2) * w
                v = s[key]
                if v is None:
                    ax.text(x, 0, "n/a", rotation=90, ha="center",
                            va="bottom", fontsize=7)
                    continue
                ax.bar(x, v, w, color=COLORS[i % len(COLORS)], hatch=hatch,
                       edgecolor="white" if hatch else None,
                       alpha=0.6 if hatch else 1.0)
                _bar_value(ax, x, v, "{:.3g}")
        ax.set_xticks(xs, short, fontsize=7)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
    axes[2].legend(handles=[Patch(fc="0.4", label="wall time (whole run)"),
                            Patch(fc="0.4", hatch="//", alpha=0.6,
                                  ec="white", label="training steps")],
                   fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
    _title(fig, "Test metrics and timing per run (wall time n/a: a run "
           "resumed or not finished)", 15)
    return fig


def knn_series(run) -> tuple[list[int], list[float]]:
    """Epochs and the probe embeddings' 5-NN accuracy at each (the
    report's number, `kerasft.render.embeddings.embedding_panels`)."""
    from kerasft.render.base import RenderOptions
    from kerasft.render.embeddings import embedding_panels

    data = embedding_panels(run, RenderOptions(embeddings_every_epoch=True))
    panels = data.get("panels") or []
    return ([int(p["epoch"]) for p in panels],
            [float(p["knn_full"]) for p in panels])


def _knn(runs, names):
    from kerasft.render.embeddings import K_NEIGHBOURS

    fig = new_figure(7, 4.2)
    ax = fig.subplots()
    epochs = []
    for i, (r, name) in enumerate(zip(runs, names)):
        e, acc = knn_series(r)
        epochs += e
        ax.plot(e, acc, "-o", color=COLORS[i % len(COLORS)],
                lw=max(2.8 - 0.6 * i, 1), ms=max(8 - 1.5 * i, 3), label=name)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("epoch (0 = start)")
    ax.set_ylabel(f"leave-one-out {K_NEIGHBOURS}-NN accuracy")
    _integer_epochs(ax, epochs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _title(fig, "How well the probe set's features separate the classes: "
           f"{K_NEIGHBOURS}-nearest-neighbour accuracy of the penultimate "
           "features, per recorded epoch", 7, 11)
    return fig


# ----------------------------------------------------- same layers


def _layer_change(runs, names):
    """Relative weight change from each run's own start, side by side."""
    from matplotlib import colors
    from matplotlib.patches import Patch

    from kerasft.render.weights import change_matrix, stage_lines

    kernels = _kernels(runs[0])
    mats = [change_matrix(r.records["weights"], kernels) for r in runs]
    positive = np.concatenate([m[np.isfinite(m) & (m > 0)] for m, _ in mats])
    vmin = float(positive.min()) if positive.size else 1e-4
    vmax = float(positive.max()) if positive.size else 1.0
    if vmax <= vmin:
        vmin, vmax = vmin / 10, vmax * 10
    norm = colors.LogNorm(vmin=vmin, vmax=vmax)
    n = len(kernels)
    width = 2.2 + 2.8 * len(runs)
    fig = new_figure(width, min(3 + 0.13 * n, 11))
    axes = np.atleast_1d(fig.subplots(1, len(runs), sharey=True))
    image = None
    for ax, r, name, (matrix, epochs) in zip(axes, runs, names, mats):
        extent = (epochs[0] - 0.5, epochs[-1] + 0.5, n - 0.5, -0.5)
        ax.imshow(np.where(matrix == 0, 1.0, np.nan), aspect="auto",
                  interpolation="nearest", extent=extent,
                  cmap=colors.ListedColormap([FROZEN_COLOUR]))
        image = ax.imshow(
            np.ma.masked_invalid(np.where(matrix > 0, matrix, np.nan)),
            aspect="auto", interpolation="nearest", extent=extent,
            cmap="viridis", norm=norm)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        _integer_epochs(ax, epochs)
        ax.set_xlim(extent[0], extent[1])
        ax.set_xlabel("epoch")
        ax.set_title(textwrap.fill(name, 28), fontsize=9)
        stage_lines(ax, kernels)
        phase_lines(ax, r.phases, epochs, "tab:red")
    step = max(1, math.ceil(n / 30))
    rows = list(range(0, n, step))
    if rows[-1] != n - 1:
        rows.append(n - 1)
    axes[0].set_yticks(rows, [short_name(kernels[i]).removesuffix("/kernel")
                              for i in rows], fontsize=7)
    axes[0].set_ylabel("kernel variable (input at top, output at bottom)")
    bar = fig.colorbar(image, ax=list(axes), pad=0.01, fraction=0.04,
                       aspect=40)
    bar.set_label("||W_t - W_0|| / ||W_0|| (log), each run from its own start")
    log_colorbar(bar)
    fig.legend(handles=[Patch(fc=FROZEN_COLOUR, ec="0.5",
                              label="0: did not move (frozen)")],
               loc="outside lower center", fontsize=8)
    _title(fig, "Which layers moved, per run: relative weight change from "
           "each run's own start (one colour scale for all)", width)
    return fig


def stage_change(run, stage_of: dict) -> tuple[int | None, dict]:
    """How far each stage's kernels moved from the run's start by its last
    recorded epoch: ``sqrt(sum ||W_T - W_0||^2 / sum ||W_0||^2)`` over the
    stage's kernel variables (``rel_change`` times the epoch-0 L2 norm).

    Args:
        run: a loaded run with ``weights`` records, epoch 0 included.
        stage_of: layer name -> stage (``layers.json``).

    Returns:
        ``(last epoch, {stage: change})``; ``(None, {})`` without an
        epoch-0 record.
    """
    kind = run.records["weights"]
    if 0 not in kind.epochs or len(kind.epochs) < 2:
        return None, {}
    first, last = kind[0], kind[kind.epochs[-1]]
    norm0 = dict(zip((str(n) for n in first["names"]), stat(first, "l2")))
    num: dict = {}
    den: dict = {}
    for name, rel in zip(last["names"], last["rel_change"]):
        name = str(name)
        stage = stage_of.get(name.split("/")[0])
        n0 = norm0.get(name)
        if (not name.endswith("/kernel") or stage is None or n0 is None
                or not np.isfinite(rel)):
            continue
        num[stage] = num.get(stage, 0.0) + (rel * n0) ** 2
        den[stage] = den.get(stage, 0.0) + n0 ** 2
    return kind.epochs[-1], {s: math.sqrt(num[s] / den[s]) for s in num
                             if den[s] > 0}


def _stage_change(runs, names, stage_of):
    from kerasft.config import stage_name

    data = [stage_change(r, stage_of) for r in runs]
    stages = [s for s in STAGE_ORDER if any(s in d for _, d in data)]
    if not stages:
        return None, {}
    values = [v for _, d in data for v in d.values() if v > 0]
    floor = min(values) / 3 if values else 1e-6
    fig = new_figure(max(7, 1.3 * len(stages) * max(1, len(runs) / 2)), 4.4)
    ax = fig.subplots()
    width = 0.8 / len(runs)
    for i, (name, (epoch, d)) in enumerate(zip(names, data)):
        c = COLORS[i % len(COLORS)]
        for j, s in enumerate(stages):
            x = j + (i - (len(runs) - 1) / 2) * width
            v = d.get(s)
            if v is None:
                ax.text(x, floor, "n/a", rotation=90, ha="center",
                        va="bottom", fontsize=7, color=c)
            elif v == 0:
                ax.bar(x, floor, width, color=FROZEN_COLOUR, edgecolor=c)
                ax.text(x, floor, "0", ha="center", va="bottom", fontsize=7)
            else:
                ax.bar(x, v, width, color=c)
    log_scale(ax)
    ax.set_xticks(range(len(stages)), [stage_name(s) for s in stages])
    ax.set_xlabel("stage (input -> output)")
    ax.set_ylabel("||W_T - W_0|| / ||W_0|| of the stage's kernels (log)")
    ax.grid(alpha=0.3, axis="y")
    from matplotlib.patches import Patch

    ax.legend(handles=[
        Patch(fc=COLORS[i % len(COLORS)],
              label=f"{name} (epoch {epoch})" if d else
              f"{name} (no epoch-0 weight record)")
        for i, (name, (epoch, d)) in enumerate(zip(names, data))],
        fontsize=8)
    _title(fig, "How far each stage moved from its run's start, at the run's "
           "last epoch (grey: 0, did not move)", fig.get_figwidth(), 11)
    out = {name: {"epoch": e, "change": {stage_name(s): v
                                         for s, v in d.items()}}
           for name, (e, d) in zip(names, data)}
    return fig, out


def _quantiles(kind, name: str):
    """Epochs and the (5, epochs) q01/q25/q50/q75/q99 of one variable,
    each minus its epoch-0 value, in units of the epoch-0 std (None
    without an epoch-0 record or with a zero std)."""
    epochs, cols, std0 = [], [], None
    for e in kind.epochs:
        rec = kind[e]
        rows = np.flatnonzero(rec["names"].astype(str) == name)
        if not rows.size:
            continue
        if e == 0:
            std0 = float(stat(rec, "std")[rows[0]])
        epochs.append(e)
        cols.append([stat(rec, q)[rows[0]]
                     for q in ("q01", "q25", "q50", "q75", "q99")])
    if not epochs or epochs[0] != 0 or not std0:
        return [], None
    q = np.array(cols).T
    return epochs, (q - q[:, :1]) / std0


def _weight_stats(runs, names):
    kernels = _kernels(runs[0])
    chosen = [kernels[i] for i in select_layers(kernels, STATS_LAYERS)]
    ncols = min(4, len(chosen))
    nrows = math.ceil(len(chosen) / ncols)
    fig = new_figure(3.4 * ncols + 0.5, 2.7 * nrows + 1.5)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    epochs = []
    for ax, kernel in zip(axes, chosen):
        for i, r in enumerate(runs):
            c = COLORS[i % len(COLORS)]
            e, q = _quantiles(r.records["weights"], kernel)
            if not e:
                continue
            epochs += e
            # the reference widest, so identical runs stay visible
            lw = max(3.0 - 0.8 * i, 0.9)
            ax.fill_between(e, q[1], q[3], color=c, alpha=0.15, lw=0)
            ax.plot(e, q[2], "-o", color=c, lw=lw, ms=lw + 1)
            ax.plot(e, q[0], ":", color=c, lw=lw / 2)
            ax.plot(e, q[4], ":", color=c, lw=lw / 2)
        ax.axhline(0, color="0.5", lw=0.6)
        ax.set_title(short_name(kernel).removesuffix("/kernel"), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes:
        _integer_epochs(ax, epochs)
    for ax in axes[len(chosen):]:
        ax.set_axis_off()
    for ax in axes[(nrows - 1) * ncols:]:
        ax.set_xlabel("epoch (0 = start)", fontsize=8)
    for ax in axes[::ncols]:
        ax.set_ylabel("(q_t - q_0) / std_0", fontsize=8)
    from matplotlib.lines import Line2D

    fig.legend(handles=[Line2D([], [], color=COLORS[i % len(COLORS)], lw=2,
                               label=name) for i, name in enumerate(names)],
               loc="outside lower center", ncols=min(len(names), 4),
               fontsize=8)
    _title(fig, "How each layer's weight quantiles moved from the run's own "
           "start, in units of the start's std: median (line), 25-75% "
           "(band), 1% and 99% (dotted); flat at 0 = did not move. "
           f"{len(chosen)} of {len(kernels)} kernels, input to output",
           3.4 * ncols + 0.5, 11)
    return fig


def _embeddings(runs, names):
    from kerasft.render.embeddings import fixed_basis, project

    kinds = [r.records["embeddings"] for r in runs]
    ref_last = kinds[0][kinds[0].epochs[-1]]
    mean, comps = fixed_basis(ref_last["features"])
    fig = new_figure(4.2 * len(runs), 4.6)
    axes = np.atleast_1d(fig.subplots(1, len(runs), sharex=True, sharey=True))
    for ax, name, k in zip(axes, names, kinds):
        rec = k[k.epochs[-1]]
        xy = project(rec["features"], mean, comps)
        ax.scatter(xy[:, 0], xy[:, 1], c=rec["labels"], cmap="tab10", s=10)
        ax.set_title(f"{textwrap.fill(name, 32)}\nepoch {k.epochs[-1]}",
                     fontsize=8)
        ax.set_xlabel("PC1 (reference basis)")
    axes[0].set_ylabel("PC2 (reference basis)")
    _title(fig, "Probe-set embeddings at each run's last epoch, in one basis "
           "(PCA of the reference's last epoch): from one start, the same "
           "picture means the same features", 4.2 * len(runs))
    return fig


# --------------------------------------------- same start and maths


def _per_layer(runs, names, kind, fn, names_key="names"):
    """{pair label: (names, epochs, matrix[layer, epoch])} of fn(rec_a, rec_b)."""
    ref = runs[0]
    out = {}
    ka = ref.records.get(kind)
    for r, name in zip(runs[1:], names[1:]):
        kb = r.records.get(kind)
        if ka is None or kb is None:
            continue
        epochs = [e for e in ka.epochs if e in kb.epochs]
        if not epochs:
            continue
        layers = list(ka[epochs[0]][names_key])
        mat = np.stack([fn(ka[e], kb[e], ka, kb) for e in epochs], axis=1)
        out[name] = (layers, epochs, mat)
    return out


def _rel_stat(name):
    def fn(a, b, kind_a, kind_b):
        x, y = stat(a, name), stat(b, name)
        return np.abs(x - y) / np.maximum(np.abs(x), 1e-12)
    return fn


def _checkpoint_diffs(runs, names):
    """Relative difference of every kernel per checkpointed epoch."""
    from kerasft.render.structure import read_layers

    ref = runs[0]
    layers = read_layers(ref.path / "layers.json")
    if not layers or not any(
            (ref.path / "checkpoints").glob("epoch-*.weights.h5")):
        return {}
    mapping = checkpoint_variables(ref.path, layers)
    mapping = {k: v for k, v in mapping.items() if k.endswith("/kernel")}
    out = {}
    for r, name in zip(runs[1:], names[1:]):
        ca = sorted((ref.path / "checkpoints").glob("epoch-*.weights.h5"))
        epochs, cols = [], []
        for path in ca:
            other = r.path / "checkpoints" / path.name
            if not other.exists():
                continue
            wa = read_checkpoint(path, mapping)
            wb = read_checkpoint(other, mapping)
            cols.append([relative_difference(wa[k], wb[k]) if k in wa and k in wb
                         else np.nan for k in mapping])
            epochs.append(int(path.name[6:9]))
        if epochs:
            out[name] = (list(mapping), epochs, np.array(cols).T)
    return out


def _heatmaps(data, title, cbar, log=True):
    if not data:
        return None
    n = len(data)
    fig = new_figure(5.5 * n + 1, 7)
    axes = np.atleast_1d(fig.subplots(1, n))
    from matplotlib.colors import LogNorm

    for ax, (label, (names, epochs, mat)) in zip(axes, data.items()):
        m = np.where(np.isfinite(mat), mat, np.nan)
        positive = m[np.isfinite(m) & (m > 0)]
        norm = None
        if not positive.size:
            # identical everywhere: say so instead of a meaningless scale
            from matplotlib.colors import Normalize

            norm = Normalize(vmin=0, vmax=1)
            ax.text(0.5, 0.5, "0 everywhere:\nidentical", ha="center",
                    va="center", transform=ax.transAxes, fontsize=14,
                    color="white", weight="bold")
        elif log:
            lo = max(positive.min(), 1e-9)
            norm = LogNorm(vmin=lo, vmax=max(positive.max(), lo * 10))
            m = np.where(m > 0, m, lo)  # exact agreement drawn at the floor
        im = ax.imshow(m, aspect="auto", interpolation="nearest", norm=norm,
                       cmap="magma")
        ax.set_xticks(range(len(epochs)), [str(e) for e in epochs])
        step = max(1, len(names) // 25)
        ax.set_yticks(range(0, len(names), step),
                      [str(names[i]).replace("_block", "_b")
                       for i in range(0, len(names), step)], fontsize=6)
        ax.set_xlabel("epoch")
        ax.set_title(f"reference vs {label}", fontsize=9)
        bar = fig.colorbar(im, ax=ax, label=cbar)
        if isinstance(norm, LogNorm):
            log_colorbar(bar)
    _title(fig, title, 5.5 * n + 1)
    return fig


def _probe_lines(runs, names, tier):
    fig = new_figure(12, 4.5)
    axes = fig.subplots(1, 2)
    ref = runs[0]
    drew = False
    for i, (r, name) in enumerate(zip(runs[1:], names[1:]), start=1):
        c = COLORS[i % len(COLORS)]
        for ax, kind, value in (
            (axes[0], "activations", lambda a, b: np.abs(stat(a, "l2") - stat(b, "l2")) / np.maximum(stat(a, "l2"), 1e-12)),
            (axes[1], "probe_gradients", lambda a, b: np.abs(a["norms"] - b["norms"]) / np.maximum(a["norms"], 1e-12)),
        ):
            ka, kb = ref.records.get(kind), r.records.get(kind)
            if ka is None or kb is None:
                continue
            epochs = [e for e in ka.epochs if e in kb.epochs]
            for e, style in ((epochs[0], "-"), (epochs[-1], ":")):
                v = value(ka[e], kb[e])
                ax.plot(np.maximum(v, 1e-12), style, color=c,
                        label=f"{name}, epoch {e}")
                drew = True
    axes[0].set_title("probe activations: rel. diff of each block's L2 norm")
    axes[1].set_title("probe gradients: rel. diff of each layer's gradient norm")
    for ax, tol in zip(axes, (tier.activation_epoch0_rel,
                              tier.probe_gradient_epoch0_rel)):
        log_scale(ax)
        ax.axhline(tol, color="k", lw=0.8, ls="--")
        ax.text(0, tol * 1.3, f"epoch-0 tolerance {tol:g} ({tier.name} tier)",
                fontsize=8)
        ax.set_xlabel("layer depth (input -> output)")
        ax.set_ylabel("relative difference vs reference (log)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    _title(fig, "Same probe batch through each run: differences per layer "
           "(exact agreement drawn at 1e-12)", 12)
    return fig if drew else None


def _divergence_table(named: dict[str, dict]) -> list[dict]:
    rows = []
    for metric, data in named.items():
        for pair, (names, epochs, mat) in data.items():
            m = np.where(np.isfinite(mat), mat, -np.inf)
            order = np.argsort(m, axis=None)[::-1][:5]
            start = None
            for j, e in enumerate(epochs):
                first = first_divergence(names, mat[:, j], DIVERGENCE_THRESHOLD)
                if first is not None:
                    start = f"{first} (epoch {e})"
                    break
            for flat in order:
                i, j = np.unravel_index(flat, mat.shape)
                if not np.isfinite(mat[i, j]):
                    continue
                rows.append({"metric": metric, "pair": pair,
                             "layer": str(names[i]), "epoch": int(epochs[j]),
                             "value": float(mat[i, j]),
                             "divergence_starts": start or "nowhere"})
    rows.sort(key=lambda r: -r["value"])
    return rows


# ------------------------------------------------------------ the views


class _Views:
    """Saves figures and records every view, present or skipped."""

    def __init__(self, out: Path):
        self.out, self.views, self.paths = out, {}, []

    def add(self, key: str, title: str, fig, why_not: str,
            left_out: dict[str, str] | None = None) -> None:
        """Records view `key`: its figure (saved) or `why_not`; `left_out`
        names the runs a present view leaves out, with the reason."""
        if fig is None:
            self.views[key] = View(key, title, False, why_not)
            return
        partly = _join(left_out or {})
        path = self.out / f"compare_{key}.png"
        fig.savefig(path, dpi=DPI)
        self.paths.append(path)
        self.views[key] = View(key, title, True,
                               f"not shown for {partly}" if partly else None,
                               path)

    def table(self, key: str, title: str, present: bool, reason: str | None):
        self.views[key] = View(key, title, present, reason)


def _lacking(runs, names, test, what: str) -> dict[str, str]:
    return {n: what for r, n in zip(runs, names) if not test(r)}


def _join(skips: dict[str, str]) -> str:
    return "; ".join(f"{k}: {v}" for k, v in skips.items())


@plain_text()
def compare_runs(
    run_dirs: list[str | os.PathLike], out: str | os.PathLike | None = None,
    labels: list[str] | None = None,
) -> Comparison:
    """Compares runs (the first is the reference) and writes the report.

    Any runs can be compared; each view shows the runs it can compare and
    says which it skipped and why (see the module docstring and
    `kerasft.compare.rules`).

    Args:
        run_dirs: two or more run directories.
        out: output folder. Defaults to ``compare-<date-time>`` beside the
            first run.
        labels: one legend label per run (distinct). Defaults to
            `default_labels` (what differs across the runs: architecture,
            plan, learning rate, seed, backend).

    Returns:
        A `Comparison`.

    Example:

    ```python
    result = compare_runs([run_a, run_b], labels=["head", "full"])
    result.views["layer_change"].present, result.skipped
    ```
    """
    if len(run_dirs) < 2:
        raise RunDirError("kerasft compare needs at least two run directories. "
                          f"Received: {[str(d) for d in run_dirs]!r}")
    runs = []
    for d in run_dirs:
        if not (Path(d) / "config.yaml").exists():
            raise RunDirError(
                f"expected a kerasft run directory (with config.yaml). "
                f"Received: {str(d)!r}"
            )
        runs.append(load_run(d))
    summaries = [summarize(r) for r in runs]
    names = (_check_labels(labels, len(runs)) if labels is not None
             else default_labels(runs, summaries))
    warnings = _warnings(runs)
    t0 = time.perf_counter()
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
    else:
        # a folder of its own per invocation, even within one second
        out = unique_dir(Path(run_dirs[0]).parent,
                         "compare-" + time.strftime("%Y%m%d-%H%M%S"))
    ref = runs[0]
    views = _Views(out)

    # ---- any runs
    views.add("curves", "Loss and accuracy overlaid", _curves(runs, names),
              "")
    views.add("metrics", "Test metrics and timing",
              _metrics(summaries, names), "")
    views.table("summary", "Runs side by side", True, None)
    has_emb = _has("embeddings")
    emb_runs = [(r, n) for r, n in zip(runs, names) if has_emb(r)]
    views.add("knn", "Embeddings: k-NN accuracy per run",
              _knn(*zip(*emb_runs)) if emb_runs else None,
              "no run recorded embeddings (record.embeddings)",
              _lacking(runs, names, has_emb, "no embedding records"))

    # ---- runs with the reference's layers
    layer_skip = {n: why for r, n in zip(runs[1:], names[1:])
                  if (why := layer_difference(ref, r))}
    same = [(r, n) for r, n in zip(runs, names) if n not in layer_skip]
    has_w = _has("weights")
    with_w = [(r, n) for r, n in same if has_w(r)]
    no_w = _lacking(runs, names, has_w, "no weight records")
    layer_why = ("no other run has the reference's layers: "
                 + _join(layer_skip)) if len(same) < 2 else ""
    w_why = layer_why or ("fewer than two runs with the reference's layers "
                          "recorded weights (record.weights): "
                          + _join(no_w))
    drawable = len(same) >= 2 and len(with_w) >= 2 and has_w(ref)
    views.add("layer_change", "Which layers moved, per run",
              _layer_change(*zip(*with_w)) if drawable else None,
              w_why, layer_skip | {n: v for n, v in no_w.items()
                                   if n not in layer_skip})
    from kerasft.render.structure import read_layers

    stage_of = {row.get("name"): row.get("stage")
                for row in read_layers(ref.path / "layers.json")
                if isinstance(row, dict)}
    stage_fig, stages = (_stage_change(*zip(*with_w), stage_of)
                         if drawable and stage_of else (None, {}))
    views.add("stage_change", "Weight change per stage", stage_fig,
              w_why if not drawable else
              "the reference has no layers.json (stages unknown)",
              layer_skip | {n: v for n, v in no_w.items()
                            if n not in layer_skip})
    views.add("weight_stats", "Weight quantiles over epochs, per layer",
              _weight_stats(*zip(*with_w)) if drawable else None, w_why,
              layer_skip | {n: v for n, v in no_w.items()
                            if n not in layer_skip})
    with_e = [(r, n) for r, n in same if has_emb(r)]
    views.add("embeddings", "Embeddings side by side",
              _embeddings(*zip(*with_e))
              if len(same) >= 2 and len(with_e) >= 2 and has_emb(ref)
              else None,
              layer_why or ("fewer than two runs with the reference's layers "
                            "recorded embeddings (record.embeddings)"),
              layer_skip | {n: "no embedding records" for r, n in same
                            if not has_emb(r)})

    # ---- runs with the reference's start and maths
    start_skip = {n: why for r, n in zip(runs[1:], names[1:])
                  if (why := start_difference(ref, r))}
    pairs = [(r, n) for r, n in zip(runs, names) if n not in start_skip]
    unchecked = {f"{names[0]} vs {n}": why for n, why in start_skip.items()}
    start_why = ("no run shares the reference's start and maths (needed to "
                 "compare number for number): " + _join(start_skip))
    hist_skip = {n: why for r, n in pairs[1:]
                 if (why := histogram_difference(ref, r))}
    hist_pairs = [(r, n) for r, n in pairs if n not in hist_skip]
    prs, pns = (list(x) for x in zip(*pairs))
    hist = (_per_layer([r for r, _ in hist_pairs], [n for _, n in hist_pairs],
                       "weights", lambda a, b, ka, kb:
                       histogram_distances(a, b, ka, kb))
            if len(hist_pairs) >= 2 else {})
    ckpt = _checkpoint_diffs(prs, pns) if len(pairs) >= 2 else {}
    acts = (_per_layer(prs, pns, "activations", _rel_stat("l2"))
            if len(pairs) >= 2 else {})
    grads = (_per_layer(prs, pns, "probe_gradients",
                        lambda a, b, ka, kb: np.abs(a["norms"] - b["norms"])
                        / np.maximum(a["norms"], 1e-12))
             if len(pairs) >= 2 else {})
    def nothing(what: str) -> str:
        return start_why if len(pairs) < 2 else f"nothing to compare: {what}"

    if len(pairs) >= 2 and len(hist_pairs) < 2:
        hist_why = "no pair's histograms can share bins: " + _join(hist_skip)
    else:
        hist_why = nothing("no weight records in the pairs")
    views.add("hist_distance", "Weight-histogram distance", _heatmaps(
        hist, "Weight-histogram distance per layer (1-D Wasserstein on the "
        "two runs' common bins, in bin widths; 0 = identical)",
        "distance (bins)"), hist_why, start_skip | hist_skip)
    views.add("weight_diff", "Weight difference per layer", _heatmaps(
        ckpt, "Relative difference of the weights, ||W_ref - W|| / "
        "||W_ref||, per kernel and checkpoint", "relative difference"),
        nothing("no common per-epoch checkpoints"), start_skip)
    views.add("probe", "Probe activations and probe gradients",
              _probe_lines(prs, pns, tier_for(prs[0], prs[1]))
              if len(pairs) >= 2 else None,
              nothing("no probe activation or gradient records"), start_skip)
    table = _divergence_table({
        "weight histogram distance (bins)": hist,
        "weight rel. diff": ckpt,
        "probe activation rel. diff": acts,
        "probe gradient norm rel. diff": grads,
    })
    partly = f"not shown for {_join(start_skip)}" if start_skip else None
    views.table("divergences", "Largest divergences", bool(table),
                partly if table else nothing("no per-layer records in common"))
    checks = {f"{pns[0]} vs {n}":
              [c.__dict__ | {"ok": c.ok}
               for c in parity_checks(ref, r, n not in hist_skip)]
              for r, n in pairs[1:]}
    views.table("checks", "Tolerance checks", bool(checks),
                partly if checks else start_why)

    write_json(out / "divergences.json",
               {"divergences": table, "checks": checks, "warnings": warnings})
    run_rows = [{"label": n, "path": str(r.path), "summary": s,
                 "initial_weights_sha256": fingerprint(r)}
                for r, n, s in zip(runs, names, summaries)]
    write_json(out / "comparison.json", {
        "reference": names[0],
        "runs": run_rows,
        "views": {k: v.to_dict() for k, v in views.views.items()},
        "unchecked": unchecked,
        "stage_change": stages,
        "warnings": warnings,
    })
    page = _page(run_rows, views.views, table, checks, warnings,
                 time.perf_counter() - t0)
    with atomic_write(out / "index.html") as f:
        f.write(page)
    return Comparison(out / "index.html", views.paths, warnings, table,
                      checks, views.views, run_rows, unchecked)


# ------------------------------------------------------------ the page

# (heading, summary key, format) of the page's run table.
_COLUMNS = (
    ("plan", "plan", "{}"), ("arch", "arch", "{}"),
    ("learning rate", "learning_rate", "{:g}"), ("seed", "seed", "{}"),
    ("backend", "backend", "{}"),
    ("trainable params", "trainable_params", "{:,}"),
    ("epochs", "epochs", "{}"), ("wall time (s)", "wall_seconds", "{:.1f}"),
    ("img/s", "images_per_second", "{:.3g}"),
    ("best val acc (epoch)", ("best_val_accuracy", "best_val_epoch"),
     "{:.2%} ({})"),
    ("test acc", "test_accuracy", "{:.2%}"),
    ("train acc, inference mode", "train_inference_accuracy", "{:.2%}"),
    ("5-NN acc (epoch)", ("knn_accuracy", "knn_epoch"), "{:.2f} ({})"),
)


def _cell(summary: dict, key, fmt: str) -> str:
    keys = key if isinstance(key, tuple) else (key,)
    values = [summary.get(k) for k in keys]
    if values[0] is None:
        return "n/a"
    return fmt.format(*values)


def _page(run_rows, views, table, checks, warnings, seconds) -> str:
    e = lambda v: html.escape(str(v), quote=True)  # noqa: E731
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>kerasft compare</title><style>body{font:15px/1.45 sans-serif;"
        "max-width:1150px;margin:0 auto;padding:0 18px 60px}table{border-"
        "collapse:collapse;font-size:13px}td,th{padding:2px 10px;border-bottom:"
        "1px solid #ddd;text-align:left}.warn{background:#fff4e0;padding:6px "
        "10px;border-left:4px solid #e69500;margin:4px 0}.bad{color:#b00020;"
        "font-weight:600}img{max-width:100%}.skip li{margin:3px 0}</style>"
        "</head><body>",
        f"<h1>kerasft compare: {len(run_rows)} runs</h1>",
        f"<p>rendered in {seconds:.1f} s; reference: "
        f"{e(run_rows[0]['label'])}</p>",
        f"<h2>{e(views['summary'].title)}</h2>",
        "<table><tr><th>label</th><th>run</th>"
        + "".join(f"<th>{e(c[0])}</th>" for c in _COLUMNS)
        + "<th>initial weights</th></tr>",
    ]
    for row in run_rows:
        s = row["summary"]
        parts.append(
            f"<tr><td>{e(row['label'])}</td><td>{e(s['run'])}</td>"
            + "".join(f"<td>{e(_cell(s, k, f))}</td>" for _, k, f in _COLUMNS)
            + f"<td>{e(str(row['initial_weights_sha256'] or 'n/a')[:12])}"
            "</td></tr>")
    parts.append("</table>")
    parts += [f"<div class='warn'>{e(w)}</div>" for w in warnings]
    skipped, partly = grouped_reasons(views), grouped_reasons(views, True)
    if skipped or partly:
        parts.append("<h2>Skipped views</h2><ul class='skip'>")
        parts += [f"<li><b>{e(', '.join(titles))}</b>: skipped: {e(reason)}"
                  "</li>" for titles, reason in skipped]
        parts += [f"<li><b>{e(', '.join(titles))}</b>: {e(reason)}</li>"
                  for titles, reason in partly]
        parts.append("</ul>")
    if checks:
        parts.append("<h2>Tolerance checks</h2>")
    for pair, rows in checks.items():
        if rows:
            bad = sum(not c["ok"] for c in rows)
            verdict = (f"<span class='bad'>FAILED: {bad} of {len(rows)} "
                       "checks</span>" if bad else
                       f"all {len(rows)} checks pass")
            parts.append(f"<p><b>{e(pair)}</b>: {verdict}; tier "
                         f"<b>{e(rows[0]['tier'])}</b>, because "
                         f"{e(rows[0]['reason'])}.</p>")
    if any(checks.values()):
        parts.append("<table><tr><th>pair</th><th>check"
                     "</th><th>worst value</th><th>tolerance</th><th>where"
                     "</th><th></th></tr>")
        for pair, rows in checks.items():
            for c in rows:
                cls = "" if c["ok"] else " class='bad'"
                parts.append(
                    f"<tr><td>{e(pair)}</td><td>{e(c['name'])}</td><td>"
                    f"{c['value']:.3g}</td><td>{c['tolerance']:g}</td><td>"
                    f"{e(c['where'])}</td><td{cls}>"
                    f"{'ok' if c['ok'] else 'FAILS'}</td></tr>")
        parts.append("</table>")
    if table:
        parts.append("<h2>Largest divergences</h2><table><tr><th>metric"
                     "</th><th>pair</th><th>layer</th><th>epoch</th><th>value"
                     "</th><th>divergence starts at</th></tr>")
        for row in table[:20]:
            parts.append(
                f"<tr><td>{e(row['metric'])}</td><td>{e(row['pair'])}</td>"
                f"<td>{e(row['layer'])}</td><td>{row['epoch']}</td><td>"
                f"{row['value']:.3g}</td><td>{e(row['divergence_starts'])}"
                "</td></tr>")
        parts.append("</table>")
    for v in views.values():
        if v.present and v.figure is not None:
            parts.append(f"<h2>{e(v.title)}</h2><img src='{e(v.figure.name)}' "
                         f"alt='{e(v.title)}'>")
    parts.append("</body></html>")
    return "\n".join(parts)

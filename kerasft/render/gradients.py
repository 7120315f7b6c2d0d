"""Are the gradients and the learning rate healthy?

Two figures from the step tables the gradient and update-ratio recorders
write (`kerasft.record.GradientRecorder`, `UpdateRatioRecorder`):

- ``grad_norms``: per-layer gradient L2 norm over training steps (log
  scale, layers coloured by depth, phase starts marked), plus the norm per
  layer by depth at each recorded epoch end.
- ``update_ratios``: ||dW|| / ||W|| per step against the 1e-3 rule of
  thumb (the learning-rate verdict is `kerasft.render.diagnose`'s).

Empty cells (NaN) in the tables are steps without a gradient (frozen
variables) and zeros in ``update_ratios`` are variables that did not move;
both are left out of log-scaled plots instead of breaking them.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps, colors
from matplotlib.cm import ScalarMappable

from kerasft.record.store import STAT_NAMES
from kerasft.render.diagnose import (
    MIN_STEP_POINTS,
    RATIO_HIGH,
    RATIO_LOW,
    RATIO_TARGET,
    recorded_interval,
)
from kerasft.render.base import (
    draw_each,
    FigureResult,
    RenderOptions,
    kernels_only,
    log_scale,
    new_figure,
    select_layers,
    short_name,
)

SECTION = "gradients"
DEPTH_CMAP = "viridis"
_NON_VARIABLE = ("step", "epoch")


def render(run, options: RenderOptions | None = None) -> list[FigureResult]:
    """The ``gradients`` section's figures ([] when nothing was recorded).

    Args:
        run: a loaded run (`kerasft.load_run`).
        options: what to draw. Defaults to `RenderOptions()`.

    Returns:
        ``grad_norms`` and ``update_ratios`` figures, each only when its
        table (or, for the first, the epoch-end gradient records) exists.
    """
    options = options or RenderOptions()
    return draw_each((grad_norms, update_ratios), run, options)


# ------------------------------------------------------------------ numbers


def variable_columns(table: dict) -> list[str]:
    """The table's variable columns (all but step and epoch), in model order."""
    return [c for c in table if c not in _NON_VARIABLE]


def kernel_columns(table: dict) -> list[str]:
    """Kernel columns of a step table, or every variable column if none is one."""
    columns = variable_columns(table)
    kernels = [columns[i] for i in kernels_only(columns)]
    return kernels or columns


def phase_start_steps(phases, table: dict) -> list[tuple[float, str]]:
    """Where each phase after the first begins, on the table's step axis.

    A phase starts with its ``first_epoch``; the boundary sits halfway
    between the last recorded step before that epoch and the first step
    in it (rows are only every N steps).

    Args:
        phases: ``run.phases`` (dicts with ``first_epoch`` and ``name``).
        table: a step table with ``step`` and ``epoch`` columns.

    Returns:
        ``(step, phase name)`` pairs, in order.
    """
    steps = np.asarray(table.get("step", []), dtype=np.float64)
    epochs = np.asarray(table.get("epoch", []), dtype=np.float64)
    if steps.size == 0 or epochs.size != steps.size:
        return []
    out = []
    for phase in phases or []:
        first = phase.get("first_epoch")
        if first is None:
            continue
        inside = np.flatnonzero(epochs >= first)
        before = np.flatnonzero(epochs < first)
        if inside.size == 0 or before.size == 0:
            continue  # the run's first phase, or one that never ran
        at = 0.5 * (steps[before[-1]] + steps[inside[0]])
        out.append((float(at), str(phase.get("name", ""))))
    return out


def row_medians(table: dict, columns: list[str]) -> np.ndarray:
    """Per row, the median over `columns` of the finite values above 0.

    Rows where no column qualifies (everything frozen) are NaN.
    """
    if not columns:
        return np.zeros(0)
    values = np.array([np.asarray(table[c], dtype=np.float64)
                       for c in columns])
    values = np.where(np.isfinite(values) & (values > 0), values, np.nan)
    out = np.full(values.shape[1], np.nan)
    for j in range(values.shape[1]):
        col = values[:, j]
        col = col[np.isfinite(col)]
        if col.size:
            out[j] = np.median(col)
    return out


# ------------------------------------------------------------------ figures


def grad_norms(run, options: RenderOptions) -> FigureResult | None:
    """Gradient norms per layer over steps, and per layer at epoch ends."""
    table = run.tables.get("grad_norms") or {}
    kind = run.records.get("gradients")
    # A table with its header but too few rows still gets its panel, which
    # says so: a view that silently vanishes hides the recording interval.
    have_table = bool(variable_columns(table))
    have_records = kind is not None and bool(kind.epochs)
    if not have_table and not have_records:
        return None

    panels = int(bool(have_table)) + int(have_records)
    fig = new_figure(10, 4.2 * panels + 0.4)
    axes = list(np.atleast_1d(fig.subplots(panels, 1)))
    if have_table:
        ax = axes.pop(0)
        kernels = kernel_columns(table)
        _step_lines(ax, table, kernels, options)
        _mark_phases(ax, phase_start_steps(run.phases, table))
        ax.set_ylabel("gradient L2 norm (log)")
        ax.set_title("Gradient norm per layer over training steps "
                     "(gaps: frozen, no gradient)", fontsize=10)
    if have_records:
        _epoch_end_panel(axes.pop(0), run, kind, table)
    title = ("Gradient norms: look for layers whose gradients explode, "
             "vanish, or stop (frozen)")
    fig.suptitle(title, fontsize=12)
    caption = (
        "Top: each line is one conv or dense kernel, coloured from input "
        "(dark) to output (yellow); dashed red lines mark a new phase of the "
        "plan. Healthy training shows norms within a few decades of each "
        "other, roughly flat or slowly falling. Bottom: the norm per layer at "
        "each epoch's last step, by depth."
    )
    return FigureResult("grad_norms", SECTION, title, caption, fig)


def update_ratios(run, options: RenderOptions) -> FigureResult | None:
    """Update ratio per layer over steps against the 1e-3 rule of thumb."""
    table = run.tables.get("update_ratios") or {}
    if not variable_columns(table):
        return None
    fig = new_figure(10, 5.2)
    ax = fig.subplots()
    kernels = kernel_columns(table)
    ax.axhspan(RATIO_LOW, RATIO_HIGH, color="tab:green", alpha=0.10, lw=0)
    ax.axhline(RATIO_TARGET, color="tab:green", lw=1.2, ls=":")
    ax.text(0.995, RATIO_TARGET, "1e-3 rule of thumb ",
            transform=ax.get_yaxis_transform(), ha="right", va="bottom",
            fontsize=8, color="darkgreen")
    drawn = _step_lines(ax, table, kernels, options)
    medians = row_medians(table, kernels)
    stage_notes = _stage_median_lines(ax, run, table, kernels)
    if np.any(np.isfinite(medians)):
        ax.plot(table["step"], medians, color="black", lw=2.0, ls="--",
                label="median of trainable kernels")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize=8, framealpha=0.9)
    _mark_phases(ax, phase_start_steps(run.phases, table))
    ax.set_ylabel("||dW|| / ||W|| per step (log)")
    if not drawn and len(table["step"]):
        ax.text(0.5, 0.5, "no variable moved (all frozen)",
                transform=ax.transAxes, ha="center", va="center")
    title = ("Update ratio ||dW||/||W||: healthy near 1e-3 (green band "
             "1e-4..1e-2); far above = learning rate too high, far below = "
             "too low" + _too_few_note(ax, run, table))
    ax.set_title(title, fontsize=10)
    caption = (
        "Per-step relative change of each conv or dense kernel, coloured from "
        "input (dark) to output (yellow); frozen layers (ratio 0) are left "
        "out. A decaying schedule drives the ratios down at the end by design."
    )
    if stage_notes:  # what was measured per stage: a caption, not a warning
        caption += (" Discriminative learning rates: the thick lines are "
                    "each stage's median, labelled with its multiplier of "
                    "the phase's rate. " + " ".join(stage_notes))
    return FigureResult("update_ratios", SECTION, title, caption, fig)


# ------------------------------------------------------------------ drawing


def stage_multipliers(phases) -> dict[str, float]:
    """The discriminative learning-rate multipliers of a run, per stage
    that trains, from ``phases.json`` (``{}``: every stage at its phase's
    rate, or a run that recorded none). A later phase's value wins."""
    out: dict[str, float] = {}
    for phase in phases or []:
        given = phase.get("lr_multipliers") or {}
        for name in phase.get("learning_rates") or {}:
            if isinstance(given.get(name), (int, float)):
                out[name] = float(given[name])
    return out if any(m != 1 for m in out.values()) else {}


def _stage_median_lines(ax, run, table: dict, kernels: list[str]) -> list[str]:
    """Under discriminative learning rates: one thick median line per
    stage, labelled with its multiplier; returns a note with each stage's
    last median. Stages come from ``layers.json``."""
    from matplotlib import patheffects

    from kerasft.config import STAGE_NAMES, stage_name
    from kerasft.render.structure import read_layers

    multipliers = stage_multipliers(run.phases)
    if not multipliers:
        return []
    stage_of = {layer.get("name"): layer.get("stage")
                for layer in read_layers(run.path / "layers.json")
                if isinstance(layer, dict)}
    columns: dict[str, list[str]] = {}
    for c in kernels:
        stage = stage_of.get(c.rsplit("/", 1)[0])
        if stage is not None and stage_name(stage) in multipliers:
            columns.setdefault(stage_name(stage), []).append(c)
    last = []
    # Head first, then down the backbone: the order of the multipliers.
    for k, name in enumerate(n for n in STAGE_NAMES if n in columns):
        medians = row_medians(table, columns[name])
        finite = np.flatnonzero(np.isfinite(medians))
        if finite.size == 0:
            continue
        m = multipliers[name]
        ax.plot(table["step"], medians, color=f"C{k}", lw=2.4,
                marker="o" if finite.size < 3 else None,
                path_effects=[patheffects.withStroke(linewidth=4,
                                                     foreground="white")],
                label=f"{name} median (lr ×{m:.3g})")
        last.append(f"{name} ×{m:.3g}: {medians[finite[-1]]:.1e}")
    if not last:
        return []
    return ["Discriminative learning rates (multiplier of the phase's rate: "
            "median update ratio at the stage's last recorded step): "
            + ", ".join(last) + "."]


def _too_few_note(ax, run, table: dict) -> str:
    """A title suffix (and, without rows, a line across the axes) saying
    that a step table has too few points, and why."""
    n = len(table.get("step", []))
    if n >= MIN_STEP_POINTS:
        return ""
    every = recorded_interval(run)
    text = (f"not enough points (n={n}, need {MIN_STEP_POINTS}): one row "
            f"every {every} step(s)")
    if n == 0:
        ax.text(0.5, 0.5, text + "; the run was shorter",
                transform=ax.transAxes, ha="center", va="center",
                fontsize=10, color="tab:red")
    return f"\n{text}"


def _step_lines(ax, table: dict, kernels: list[str], options: RenderOptions) -> int:
    """Draws a log-scaled line per selected kernel, coloured by depth.

    Returns:
        The number of lines that had something to draw.
    """
    chosen = select_layers(kernels, options.max_layers, options.all_layers)
    cmap = colormaps[DEPTH_CMAP]
    norm = colors.Normalize(0, max(len(kernels) - 1, 1))
    steps = np.asarray(table["step"], dtype=np.float64)
    drawn = 0
    for i in chosen:
        y = np.asarray(table[kernels[i]], dtype=np.float64)
        # Log scales cannot show 0 (frozen) or negative values: gaps instead.
        y = np.where(np.isfinite(y) & (y > 0), y, np.nan)
        if not np.any(np.isfinite(y)):
            continue
        drawn += 1
        # A lone point between gaps would be invisible as a line.
        marker = "." if np.sum(np.isfinite(y)) < 3 else None
        ax.plot(steps, y, color=cmap(norm(i)), lw=1.0, marker=marker,
                alpha=0.9)
    log_scale(ax)
    ax.set_xlabel("training step")
    ax.grid(True, which="major", alpha=0.3)
    if steps.size:
        ax.set_xlim(steps.min(), steps.max())
    _depth_colorbar(ax, kernels, [kernels[i] for i in chosen])
    return drawn


def _depth_colorbar(ax, kernels: list[str], chosen: list[str]) -> None:
    """Colourbar from input to output, ticked with a few layer names."""
    figure = ax.get_figure()
    cmap = colormaps[DEPTH_CMAP]
    norm = colors.Normalize(0, max(len(kernels) - 1, 1))
    bar = figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax,
                          pad=0.01, aspect=30)
    index = [kernels.index(c) for c in chosen]
    ticks = index if len(index) <= 12 else [
        index[k] for k in np.linspace(0, len(index) - 1, 12).round().astype(int)]
    bar.set_ticks(ticks)
    bar.set_ticklabels([short_name(kernels[i]).removesuffix("/kernel")
                        for i in ticks], fontsize=7)
    bar.ax.invert_yaxis()  # input at the top, as in the other depth plots
    bar.set_label("layer depth (input -> output)", fontsize=8)


def _mark_phases(ax, boundaries: list[tuple[float, str]]) -> None:
    """Dashed vertical lines where a phase starts, named at the top."""
    for step, name in boundaries:
        ax.axvline(step, color="tab:red", lw=1.3, ls="--")
        ax.text(step, 0.99, f" {name} ->", transform=ax.get_xaxis_transform(),
                ha="left", va="top", fontsize=8, color="tab:red",
                bbox=dict(fc="white", ec="none", alpha=0.8, pad=1))


def _epoch_end_panel(ax, run, kind, table: dict) -> None:
    """Gradient L2 norm per kernel by depth, one line per recorded epoch."""
    l2 = STAT_NAMES.index("l2")
    epochs = list(kind.epochs)
    if len(epochs) > 6:
        # A readable handful: first, last and evenly between.
        epochs = [epochs[k] for k in sorted(set(
            np.linspace(0, len(epochs) - 1, 6).round().astype(int)))]
    # Depth order: the table's columns list every tracked variable in model
    # order; epoch records only hold the variables that had a gradient.
    order = kernel_columns(table) if table else []
    records = {e: kind[e] for e in epochs}
    if not order:
        seen = []
        for record in records.values():
            for n in record["names"].astype(str):
                if n not in seen:
                    seen.append(n)
        order = [seen[i] for i in kernels_only(seen)] or seen
    position = {n: i for i, n in enumerate(order)}
    cmap = colormaps["plasma"]
    for k, epoch in enumerate(epochs):
        record = records[epoch]
        x, y = [], []
        for n, v in zip(record["names"].astype(str), record["stats"][:, l2]):
            if n in position and np.isfinite(v) and v > 0:
                x.append(position[n])
                y.append(v)
        if not x:
            continue
        sort = np.argsort(x)
        colour = cmap(0.85 * k / max(len(epochs) - 1, 1))
        ax.plot(np.array(x)[sort], np.array(y)[sort], marker="o", ms=3,
                lw=1.2, color=colour, label=f"epoch {epoch}")
    log_scale(ax)
    ax.set_xlim(-0.5, len(order) - 0.5)
    ax.set_ylabel("gradient L2 norm (log)")
    ax.set_xlabel("layer depth (input -> output); ticks mark where a stage starts")
    ticks, labels = [], []
    for i, n in enumerate(order):
        group = n.split("/")[0].split("_block")[0].split("_")[0]
        if not labels or labels[-1] != group:
            ticks.append(i)
            labels.append(group)
    ax.set_xticks(ticks)
    # Neighbouring stage starts (conv1 has one kernel) would overlap: every
    # other label goes one line lower.
    ax.set_xticklabels([("\n" if k % 2 else "") + label
                        for k, label in enumerate(labels)], fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, ncol=min(len(epochs), 6), loc="best",
                  title="gradient at the last step of", title_fontsize=8)
    ax.set_title("Gradient norm per layer at the end of each epoch "
                 "(missing layers had no gradient: frozen)", fontsize=10)

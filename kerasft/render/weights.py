"""Which layers moved: weight histograms over epochs and relative change.

Two figures from the ``weights`` records (`kerasft.record.WeightRecorder`):

- ``weight_histograms``: one small heat map per selected kernel variable,
  epoch on x, weight value on y, colour = share of the tensor's entries in
  each bin. Each record has its own bins (the store's bin rule: every
  entry inside); the epochs of one panel are drawn on their common grid.
- ``layer_change``: ||W_t - W_0|| / ||W_0|| for every kernel variable
  (input to output) and epoch, on a log colour scale; variables that never
  moved (frozen) get their own colour instead of breaking the scale.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib import colormaps, colors, ticker
from matplotlib.patches import Patch

from kerasft.render.base import (
    phase_lines,
    draw_each,
    BIN_RULE_NOTE,
    FigureResult,
    RenderOptions,
    kernels_only,
    log_colorbar,
    new_figure,
    select_layers,
    short_name,
)

SECTION = "weights"
# Colour of cells that are exactly 0 (frozen) on a log-scaled heat map.
FROZEN_COLOUR = "#d9d9d9"
# Smallest share of a tensor shown on the histogram colour scale: one entry
# in 100k; emptier bins are blank rather than stretching the scale.
MIN_FRACTION = 1e-5


def render(run, options: RenderOptions | None = None) -> list[FigureResult]:
    """The ``weights`` section's figures, or [] when weights were not recorded.

    Args:
        run: a loaded run (`kerasft.load_run`).
        options: what to draw. Defaults to `RenderOptions()`.

    Returns:
        ``weight_histograms`` and ``layer_change`` figures (each only when
        its data is there).
    """
    options = options or RenderOptions()
    kind = run.records.get("weights")
    if kind is None or not kind.epochs:
        return []
    return draw_each((weight_histograms, layer_change), run, options)


# ------------------------------------------------------------------ data


def _kernel_names(kind) -> list[str]:
    """Kernel variable paths of the first weights record, in model order."""
    names = [str(n) for n in kind[kind.epochs[0]]["names"]]
    return [names[i] for i in kernels_only(names)]


def change_matrix(kind, names: list[str]) -> tuple[np.ndarray, list[int]]:
    """``rel_change`` as a (len(names), epochs) array, NaN where absent.

    Epoch 0 is left out when later epochs exist: it is 0 by definition.
    """
    epochs = [e for e in kind.epochs if e > 0] or list(kind.epochs)
    matrix = np.full((len(names), len(epochs)), np.nan)
    row = {n: i for i, n in enumerate(names)}
    for j, epoch in enumerate(epochs):
        record = kind[epoch]
        if "rel_change" not in record:
            continue
        for n, v in zip(record["names"], record["rel_change"]):
            i = row.get(str(n))
            if i is not None:
                matrix[i, j] = v
    return matrix, epochs


def histogram_stack(kind, name: str) -> tuple[np.ndarray, list[int], np.ndarray]:
    """Counts of one variable over epochs on one grid: (epochs, B+2) with
    under/overflow kept, the epochs, and the (B+1,) edges."""
    epochs, edges, counts = kind.series(name)
    return np.asarray(counts, dtype=np.float64), epochs, edges


# ------------------------------------------------------------------ figures


def weight_histograms(run, options: RenderOptions) -> FigureResult | None:
    """Small multiples of weight histograms over epochs, one per kernel."""
    kind = run.records["weights"]
    kernels = _kernel_names(kind)
    if not kernels:
        return None
    chosen = [kernels[i] for i in select_layers(
        kernels, options.max_layers, options.all_layers)]

    # Four columns for the default dozen; more (smaller) ones when all
    # layers are asked for, so the figure stays a page or two tall.
    ncols = min(4 if len(chosen) <= 16 else 6, len(chosen))
    nrows = math.ceil(len(chosen) / ncols)
    panel = 2.6 if ncols <= 4 else 1.75
    fig = new_figure(panel * ncols + 1.0, 0.85 * panel * nrows + 0.9)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    norm = colors.LogNorm(vmin=MIN_FRACTION, vmax=1.0)
    cmap = colormaps["magma_r"].with_extremes(under="white", bad="white")
    image = None
    flagged = []
    for ax, name in zip(axes, chosen):
        counts, epochs, edges = histogram_stack(kind, name)
        if counts.size == 0:
            ax.set_axis_off()
            continue
        totals = np.maximum(counts.sum(axis=1, keepdims=True), 1)
        share = counts / totals
        inner = share[:, 1:-1].T  # (B, epochs): value on y, epoch on x
        x0, x1 = epochs[0] - 0.5, epochs[-1] + 0.5
        image = ax.imshow(
            np.ma.masked_less(inner, MIN_FRACTION), origin="lower",
            aspect="auto", interpolation="nearest", cmap=cmap, norm=norm,
            extent=(x0, x1, edges[0], edges[-1]),
        )
        ax.set_title(short_name(name).removesuffix("/kernel"), fontsize=9)
        if len(epochs) == 1:
            ax.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
        ax.set_xticks(epochs if len(epochs) <= 12 else
                      epochs[:: math.ceil(len(epochs) / 12)])
        ax.tick_params(labelsize=7)
        # Plain tick labels: a "1e-2" offset text collides with the title.
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.2g"))
        # Entries outside the bins (format-1 stores only) are invisible in
        # the image; say how many at the last epoch.
        under, over = share[-1, 0], share[-1, -1]
        if under > 0 or over > 0:
            flagged.append(name)
            ax.text(
                0.02, 0.98, f"out of range: {under:.1%} below, {over:.1%} above",
                transform=ax.transAxes, va="top", ha="left", fontsize=6.5,
                color="tab:red", bbox=dict(fc="white", ec="none", alpha=0.8),
            )
    for ax in axes[len(chosen):]:
        ax.set_axis_off()
    for ax in axes[(nrows - 1) * ncols:]:
        ax.set_xlabel("epoch (0 = initial)", fontsize=8)
    for ax in axes[::ncols]:
        ax.set_ylabel("weight value", fontsize=8)
    title = "Weight distributions over epochs (every entry inside its bins)"
    fig.suptitle(title, fontsize=12)
    if image is not None:
        bar = fig.colorbar(image, ax=list(axes), shrink=0.6, pad=0.01,
                           extend="min")
        bar.set_label("share of the tensor's entries in the bin (log)")
        log_colorbar(bar)
    shown = "every kernel variable" if len(chosen) == len(kernels) else (
        f"{len(chosen)} of {len(kernels)} kernel variables, spread input to "
        "output")
    caption = (
        f"{shown}. A histogram that widens or shifts is a layer that learned "
        "a lot; one that stays put did not move (frozen or a tiny learning "
        f"rate). {BIN_RULE_NOTE}"
    )
    notes = []
    if flagged:
        notes.append(
            f"{len(flagged)} shown kernel(s) have weights outside their "
            f"histogram bins at the last epoch (e.g. {short_name(flagged[0])}):"
            " a store of format 1, whose bins were fixed from the initial "
            "weights; the share outside is in red."
        )
    return FigureResult("weight_histograms", SECTION, title, caption, fig, notes)


def layer_change(run, options: RenderOptions) -> FigureResult | None:
    """Heat map of relative weight change per kernel variable and epoch."""
    kind = run.records["weights"]
    names = _kernel_names(kind)
    if not names:
        return None
    matrix, epochs = change_matrix(kind, names)
    if not epochs:
        return None

    n = len(names)
    fig = new_figure(10, min(2.5 + 0.13 * n, 11))
    ax = fig.subplots()
    positive = matrix[np.isfinite(matrix) & (matrix > 0)]
    vmin = float(positive.min()) if positive.size else 1e-4
    vmax = float(positive.max()) if positive.size else 1.0
    if vmax <= vmin:
        vmin, vmax = vmin / 10, vmax * 10
    extent = (epochs[0] - 0.5, epochs[-1] + 0.5, n - 0.5, -0.5)
    # Zeros are drawn in grey underneath: on a log scale they would vanish.
    frozen = np.where(matrix == 0, 1.0, np.nan)
    ax.imshow(frozen, aspect="auto", interpolation="nearest", extent=extent,
              cmap=colors.ListedColormap([FROZEN_COLOUR]))
    image = ax.imshow(
        np.ma.masked_invalid(np.where(matrix > 0, matrix, np.nan)),
        aspect="auto", interpolation="nearest", extent=extent, cmap="viridis",
        norm=colors.LogNorm(vmin=vmin, vmax=vmax),
    )
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xticks(epochs if len(epochs) <= 20 else
                  epochs[:: math.ceil(len(epochs) / 20)])
    ax.set_xlabel("epoch")
    step = max(1, math.ceil(n / 30))
    rows = list(range(0, n, step))
    if rows[-1] != n - 1:
        rows.append(n - 1)
    ax.set_yticks(rows)
    ax.set_yticklabels([short_name(names[i]).removesuffix("/kernel")
                        for i in rows], fontsize=7)
    ax.set_ylabel("kernel variable (input at top, output at bottom)")
    stage_lines(ax, names)
    phase_lines(ax, run.phases, epochs, "tab:red")
    bar = fig.colorbar(image, ax=ax, pad=0.01)
    bar.set_label("||W_t - W_0|| / ||W_0|| (log)")
    log_colorbar(bar)
    fig.legend(handles=[Patch(fc=FROZEN_COLOUR, ec="0.5",
                              label="frozen: 0 (did not move)")],
               loc="outside lower center", fontsize=8)
    title = ("Which layers moved? Relative weight change from the start "
             "(frozen stages stay at 0)")
    ax.set_title(title)
    caption = (
        "Each row is a conv or dense kernel, input to output; colour is how "
        "far it moved from its initial value. Frozen layers stay grey; in "
        "fine-tuning the layers near the output usually move most."
    )
    return FigureResult("layer_change", SECTION, title, caption, fig,
                        [])


def _stage_group(name: str) -> str:
    """``conv3_block2_1_conv/kernel`` -> ``conv3``; ``head/kernel`` -> ``head``."""
    return name.split("/")[0].split("_block")[0].split("_")[0]


def stage_lines(ax, names: list[str]) -> None:
    """Thin horizontal lines where the stage (name prefix) changes."""
    groups = [_stage_group(n) for n in names]
    for i in range(1, len(groups)):
        if groups[i] != groups[i - 1]:
            ax.axhline(i - 0.5, color="white", lw=0.8, alpha=0.9)

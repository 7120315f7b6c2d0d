"""Activations on the probe batch: histograms over time and dead units.

Two figures from the ``activations`` records (block outputs on a fixed
probe batch, in inference mode):

- ``activation_histograms``: the "colorful dimension" plot popularised by
  fastai -- per block, the activation histogram of every recorded epoch as
  one column of a heat map, on the epochs' common bins (each record holds
  all its values; see `kerasft.record.store.bin_grid`). Distributions that
  collapse onto 0, or grow beyond their epoch-0 range, show at a glance.
- ``dead_units``: the share of channels that output (near) zero for every
  probe image, per block, at the first and the last recorded epoch.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.lines import Line2D

from kerasft.record.store import STAT_NAMES, fixed_edges
from kerasft.render.base import (
    BIN_RULE_NOTE,
    FigureResult,
    RenderOptions,
    new_figure,
    select_layers,
    short_name,
)

SECTION = "activations"


def zero_bin(edges: np.ndarray) -> int | None:
    """Index (into the inner bins) of the bin holding 0, or None.

    Post-ReLU outputs put their exact zeros here, together with the small
    positive values that share the bin.
    """
    edges = np.asarray(edges, dtype=np.float64)
    if not (edges[0] <= 0.0 <= edges[-1]):
        return None
    return int(min(np.searchsorted(edges, 0.0, side="right") - 1,
                   len(edges) - 2))


def histogram_series(run, names: list[str]) -> dict[str, dict]:
    """Per block: the histogram of every recorded epoch, ready to draw.

    Args:
        run: a loaded run with ``activations`` records.
        names: the blocks wanted.

    Returns:
        ``{name: {"epochs", "edges", "counts" (B, E), "zero_share" (E,),
        "under_share", "over_share", "outside_share" (E,), "q99" (E,),
        "finite" (E,) bool}}`` for each name recorded; shares are of all
        finite values. Under/over: below/above the epoch-0 range widened by
        half its width each side (format 1: outside the bins fixed there).
    """
    kind = run.records["activations"]
    if not kind.epochs:
        return {}
    q99 = STAT_NAMES.index("q99")
    lo_i, hi_i = STAT_NAMES.index("min"), STAT_NAMES.index("max")
    legacy = bool(kind.bins)  # format 1: bins fixed at epoch 0
    stats_of: dict[str, dict] = {n: {} for n in names}
    for epoch in kind.epochs:
        rec = kind[epoch]
        row_of = {str(n): i for i, n in enumerate(rec["names"])}
        for n in names:
            if n in row_of:
                stats_of[n][epoch] = rec["stats"][row_of[n]]
    out: dict[str, dict] = {}
    for n in names:
        epochs, edges, counts = kind.series(n)
        if not epochs:
            continue
        counts = counts.astype(np.float64)
        total = np.maximum(counts.sum(axis=1), 1.0)
        z = zero_bin(edges)
        stats = np.asarray([stats_of[n][e] for e in epochs], dtype=np.float64)
        under, over = counts[:, 0], counts[:, -1]
        if not legacy:
            # Every value is inside its bins: measure growth against the
            # epoch-0 range, widened as format 1 widened its fixed bins,
            # counting whole bins beyond it (a lower bound).
            ref = fixed_edges(stats[0, [lo_i, hi_i]]) if np.all(
                np.isfinite(stats[0, [lo_i, hi_i]])) else edges
            under = under + counts[:, 1:-1][:, edges[1:] <= ref[0]].sum(axis=1)
            over = over + counts[:, 1:-1][:, edges[:-1] >= ref[-1]].sum(axis=1)
        out[n] = {
            "epochs": epochs, "edges": edges, "counts": counts[:, 1:-1].T,
            "zero_share": (counts[:, 1 + z] / total if z is not None
                           else np.zeros(len(epochs))),
            "under_share": under / total, "over_share": over / total,
            "outside_share": (under + over) / total,
            "q99": stats[:, q99],
            "finite": np.all(np.isfinite(stats), axis=1),
        }
    return out


def _epoch_edges(epochs) -> np.ndarray:
    """Cell edges around each epoch (epochs may be unevenly spaced)."""
    e = np.asarray(epochs, dtype=np.float64)
    if len(e) == 1:
        return np.array([e[0] - 0.5, e[0] + 0.5])
    mid = (e[:-1] + e[1:]) / 2
    return np.concatenate([[e[0] - (mid[0] - e[0])], mid,
                           [e[-1] + (e[-1] - mid[-1])]])


def _names(names: list[str], limit: int = 3) -> str:
    more = len(names) - limit
    return ", ".join(names[:limit]) + (f" and {more} more" if more > 0 else "")


def _histograms_figure(series: dict[str, dict]) -> FigureResult:
    names = list(series)
    n = len(names)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = new_figure(3.3 * cols + 1.0, 3.1 * rows + 0.6)
    gs = fig.add_gridspec(2 * rows, cols, height_ratios=[3.2, 1.0] * rows)
    norm = Normalize(0.0, 1.0)
    mesh = None
    heat_axes = []
    for k, name in enumerate(names):
        s = series[name]
        r, c = divmod(k, cols)
        ax = fig.add_subplot(gs[2 * r, c])
        strip = fig.add_subplot(gs[2 * r + 1, c], sharex=ax)
        heat_axes += [ax, strip]
        counts, edges = s["counts"], s["edges"]
        logc = np.log1p(counts)
        z = zero_bin(edges)
        # The 0 bin of a post-ReLU block holds most of the mass; scaling the
        # colours to the other bins keeps the non-zero part visible (the 0
        # bin then saturates, and the strip below gives its share).
        rest = np.delete(logc, z, axis=0) if z is not None else logc
        vmax = rest.max() if rest.size and rest.max() > 0 else logc.max()
        shown = logc / vmax if vmax > 0 else logc
        # Crop to the bins ever used: a common grid may span more than the
        # range, and post-ReLU blocks leave the negative half empty.
        used = np.flatnonzero(counts.sum(axis=1) > 0)
        lo, hi = (used[0], used[-1]) if used.size else (0, len(edges) - 2)
        lo, hi = max(lo - 1, 0), min(hi + 1, len(edges) - 2)
        xe = _epoch_edges(s["epochs"])
        mesh = ax.pcolormesh(xe, edges[lo:hi + 2], shown[lo:hi + 1],
                             cmap="magma", norm=norm, shading="flat",
                             rasterized=True)
        ax.plot(s["epochs"], s["q99"], color="#5ad1ff", lw=1.2, ls="--",
                marker=".", label="99th percentile")
        ax.set_ylim(edges[lo], edges[hi + 1])
        # Values beyond the epoch-0 range (widened by half): mark their
        # share at the panel's edge.
        for e, over, under in zip(s["epochs"], s["over_share"],
                                  s["under_share"]):
            if over >= 0.005:
                ax.text(e, edges[hi + 1], f"▲{100 * over:.0f}%",
                        color="#ff4d4d", fontsize=7, ha="center", va="top",
                        fontweight="bold")
            if under >= 0.005:
                ax.text(e, edges[lo], f"▼{100 * under:.0f}%",
                        color="#ff4d4d", fontsize=7, ha="center",
                        va="bottom", fontweight="bold")
        zs = 100 * s["zero_share"]
        title = f"{short_name(name)}\nin 0 bin: {zs[0]:.0f}% → {zs[-1]:.0f}%"
        out = 100 * s["outside_share"][-1]
        if out >= 0.5:
            title += f", out of range {out:.0f}%"
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelbottom=False, labelsize=8)
        if c == 0:
            ax.set_ylabel("activation value", fontsize=8)
        strip.fill_between(s["epochs"], zs, color="#888888", alpha=0.35,
                           step=None)
        strip.plot(s["epochs"], zs, color="#333333", marker=".", lw=1)
        strip.set_ylim(0, 100)
        strip.set_yticks([0, 50, 100])
        strip.tick_params(labelsize=7)
        strip.set_xlim(xe[0], xe[-1])
        strip.set_xticks(s["epochs"] if len(s["epochs"]) <= 12 else
                         np.unique(np.linspace(s["epochs"][0],
                                               s["epochs"][-1], 7).round()))
        if c == 0:
            strip.set_ylabel("% in 0 bin", fontsize=8)
        if r == rows - 1 or k + cols >= n:
            strip.set_xlabel("epoch", fontsize=8)
    # A figure legend, not one in a panel, where it would hide data.
    handles = [Line2D([], [], color="#5ad1ff", lw=1.2, ls="--", marker=".",
                      label="99th percentile of the values"),
               Line2D([], [], color="#ff4d4d", ls="none", marker="^",
                      label="share above (▲) / below (▼) the epoch-0 range "
                      "widened by half")]
    fig.legend(handles=handles, loc="outside lower center", ncols=2,
               fontsize=8, frameon=False)
    cb = fig.colorbar(mesh, ax=heat_axes, shrink=0.6, pad=0.01, aspect=40)
    cb.set_label("log(1 + count) / panel max\n(0 bin excluded)", fontsize=9)
    fig.suptitle(
        "Activation histograms on the probe batch over training (every value "
        "inside the bins)\nlook for mass piling into the 0 bin (collapse, "
        "dying ReLUs) or growing far beyond the epoch-0 range (explosion)",
        fontsize=11)
    return FigureResult(
        key="activation_histograms",
        section=SECTION,
        title="Activation histograms over time",
        caption=(
            "Each panel is one block: a column per recorded epoch, rows are "
            "the histogram bins, colour is "
            "log(1 + count) scaled to the bins other than the one holding 0 "
            "(so that bin may saturate). The dashed line is the 99th "
            "percentile; red ▲/▼ marks give the share of values above/below "
            "the epoch-0 range widened by half its width on each side; the "
            "strip below each panel is the share of values "
            "in the bin holding 0 (exact zeros of a ReLU plus small values). "
            "A block whose mass ends in the 0 bin has collapsed or shrunk far "
            "below its epoch-0 scale; mass leaving the top of the range "
            "means the activations are growing out of control. "
            f"{BIN_RULE_NOTE}"),
        figure=fig,
    )


def dead_fractions(run) -> tuple[list[str], list[int], np.ndarray]:
    """Block names, recorded epochs and dead fractions (E, V) in [0, 1].

    Blocks missing from an epoch's record are NaN there.
    """
    kind = run.records["activations"]
    epochs = kind.epochs
    names: list[str] = []
    rows = []
    for epoch in epochs:
        rec = kind[epoch]
        if "dead_fraction" not in rec:
            rows.append({})
            continue
        row = {str(n): float(d) for n, d in zip(rec["names"],
                                                 rec["dead_fraction"])}
        for n in row:
            if n not in names:
                names.append(n)
        rows.append(row)
    table = np.array([[row.get(n, np.nan) for n in names] for row in rows],
                     dtype=np.float64).reshape(len(epochs), len(names))
    return names, epochs, table


def _dead_figure(names, epochs, table, options: RenderOptions) -> FigureResult:
    # One tick per block reads fine up to about twice the usual selection.
    keep = select_layers(names, 2 * options.max_layers, options.all_layers)
    shown = [names[i] for i in keep]
    values = 100 * table[:, keep]
    x = np.arange(len(shown))
    fig = new_figure(max(8.0, 0.45 * len(shown) + 3), 4.8)
    ax = fig.add_subplot()
    for j in range(1, len(epochs) - 1):
        ax.plot(x, values[j], color="#999999", alpha=0.45, lw=1,
                marker=".", ms=4,
                label="intermediate epochs" if j == 1 else None)
    ax.plot(x, values[0], color="#1f77b4", lw=2, marker="o", ms=5,
            label=f"epoch {epochs[0]} (start)")
    if len(epochs) > 1:
        ax.plot(x, values[-1], color="#d62728", lw=2, marker="s", ms=5,
                label=f"epoch {epochs[-1]} (end)")
    top = np.nanmax(values) if np.isfinite(values).any() else 0.0
    ax.set_ylim(-0.5, max(5.0, 1.1 * top))
    ax.set_xticks(x)
    ax.set_xticklabels([short_name(n) for n in shown], rotation=50,
                       ha="right", fontsize=8)
    ax.set_xlabel("block (input → output)")
    ax.set_ylabel("dead channels (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(
        "Dead channels per block (zero on every probe image)\n"
        "look for blocks whose share grows during training: those units no "
        "longer learn", fontsize=11)
    return FigureResult(
        key="dead_units",
        section=SECTION,
        title="Dead units per block",
        caption=(
            "Share of each block's channels whose output is (near) zero for "
            "every probe image and position, at the first recorded epoch "
            "(blue), the last (red) and in between (grey). A rising share "
            "means ReLUs are dying (often a too-high learning rate); a "
            "share that falls means the network is putting more units to "
            "use."),
        figure=fig,
    )


def render(run, options: RenderOptions) -> list[FigureResult]:
    """The activation figures of `run` ([] without ``activations`` records).

    Args:
        run: a loaded run (`kerasft.load_run`).
        options: what to draw.

    Returns:
        ``activation_histograms`` and ``dead_units``, each where its data
        is present.
    """
    kind = run.records.get("activations")
    if kind is None or not kind.epochs:
        return []
    results = []
    names = [str(n) for n in kind[kind.epochs[-1]]["names"]]
    keep = select_layers(names, options.max_layers, options.all_layers)
    series = histogram_series(run, [names[i] for i in keep])
    if series:
        results.append(_histograms_figure(series))
    dnames, epochs, table = dead_fractions(run)
    if dnames:
        results.append(_dead_figure(dnames, epochs, table, options))
    return results

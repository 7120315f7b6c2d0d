"""BatchNorm statistics: how far each BN layer's moving mean and variance drifted.

One figure, ``batchnorm_drift``, from the ``batchnorm`` records
(`kerasft.record.BatchNormRecorder`): two heat maps (moving mean, moving
variance) of ||m_t - m_0|| / ||m_0|| per BN layer (input to output) and
epoch. Frozen (inference-mode) BN layers read exactly 0 and get their own
colour. A moving mean that starts at exactly 0 (random initialisation)
has no relative drift; the recorder then divides by a tiny floor and
stores a huge number, so such cells are shown as "undefined" instead.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib import colors
from matplotlib.patches import Patch

from kerasft.render.base import (
    FigureResult,
    RenderOptions,
    new_figure,
    phase_lines,
)

SECTION = "batchnorm"
FROZEN_COLOUR = "#d9d9d9"
# The recorder divides by max(||m_0||, 1e-12): a drift above this from a
# zero start is that floor talking, not a relative change.
UNDEFINED_DRIFT = 1e6


def render(run, options: RenderOptions | None = None) -> list[FigureResult]:
    """The ``batchnorm`` section's figure, or [] when BN was not recorded.

    Args:
        run: a loaded run (`kerasft.load_run`).
        options: unused (every BN layer is one thin row). Defaults to
            `RenderOptions()`.

    Returns:
        The ``batchnorm_drift`` figure, or [] without BN records.
    """
    kind = run.records.get("batchnorm")
    if kind is None or not kind.epochs:
        return []
    # A store that cannot be read raises: `render_report` shows the reason
    # on the page, where a silently missing figure would hide it.
    result = batchnorm_drift(run)
    return [result] if result is not None else []


# ------------------------------------------------------------------ numbers


def drift_matrices(kind) -> dict:
    """Drift per BN layer and epoch from the records.

    Epoch 0 is dropped when later epochs exist (it is 0 by definition).

    Returns:
        A dict with ``names`` (L,), ``epochs``, ``mean`` and ``var``
        (L, epochs) arrays (NaN where absent), ``mean_undefined``
        (L, epochs) bool: cells whose moving mean started at exactly 0, and
        ``mean_avg`` (L, epochs): the channel average of the moving mean.
    """
    all_epochs = list(kind.epochs)
    epochs = [e for e in all_epochs if e > 0] or all_epochs
    first = kind[all_epochs[0]]
    names = [str(n) for n in first["names"]]
    row = {n: i for i, n in enumerate(names)}
    mean = np.full((len(names), len(epochs)), np.nan)
    var = np.full_like(mean, np.nan)
    mean_avg = np.full_like(mean, np.nan)
    for j, epoch in enumerate(epochs):
        record = kind[epoch]
        for k, n in enumerate(record["names"].astype(str)):
            i = row.get(n)
            if i is not None:
                mean[i, j] = record["mean_drift"][k]
                var[i, j] = record["var_drift"][k]
                if "moving_mean_avg" in record:
                    mean_avg[i, j] = record["moving_mean_avg"][k]
    start_avg = np.asarray(first.get("moving_mean_avg", np.ones(len(names))),
                           dtype=np.float64)
    if all_epochs[0] != 0:
        # No initial record to tell: trust only the size of the number.
        start_avg = np.zeros(len(names))
    # Current recorders store NaN for a zero start; older stores a huge
    # number from dividing by a 1e-12 floor.
    undefined = (start_avg[:, None] == 0) & (
        (mean > UNDEFINED_DRIFT) | np.isnan(mean))
    return {"names": names, "epochs": epochs, "mean": mean, "var": var,
            "mean_undefined": undefined, "mean_avg": mean_avg}


def batchnorm_drift(run) -> FigureResult | None:
    """Two heat maps: moving-mean and moving-variance drift per BN layer.

    When moving means started at exactly 0 (random initialisation), the
    mean panel shows the channel-averaged moving mean itself instead of an
    undefined relative drift.
    """
    data = drift_matrices(run.records["batchnorm"])
    names, epochs = data["names"], data["epochs"]
    if not names or not epochs:
        return None
    n = len(names)
    fig = new_figure(10.5, min(3.0 + 0.13 * n, 11))
    axes = fig.subplots(1, 2, sharey=True)
    extent = (epochs[0] - 0.5, epochs[-1] + 0.5, n - 0.5, -0.5)
    average = bool(data["mean_undefined"].any()) and bool(
        np.isfinite(data["mean_avg"]).any())
    if average:
        # Signed values spanning decades: symmetric log around 0.
        values = data["mean_avg"]
        top = float(np.nanmax(np.abs(values))) or 1.0
        image = _heat_map(
            axes[0], values, extent,
            colors.SymLogNorm(linthresh=top * 1e-2, vmin=-top, vmax=top),
            "RdBu_r", frozen=values == 0)
        bar = fig.colorbar(image, ax=axes[0], pad=0.01, location="bottom",
                           shrink=0.9)
        # Default symlog ticks crowd around 0; a few decades read better.
        ticks = [-top, -top / 10, 0.0, top / 10, top]
        bar.set_ticks(ticks)
        bar.set_ticklabels([f"{t:.2g}" for t in ticks])
        bar.set_label("channel-average moving mean (symmetric log)")
        axes[0].set_title("moving mean: started at 0, so its average is shown",
                          fontsize=10)
    else:
        values = data["mean"]
        image = _heat_map(axes[0], values, extent, _log_norm(values),
                          "magma", frozen=values == 0)
        bar = fig.colorbar(image, ax=axes[0], pad=0.01, location="bottom",
                           shrink=0.9)
        bar.set_label("relative drift ||m_t - m_0|| / ||m_0|| (log)")
        axes[0].set_title("moving mean: drift from the start", fontsize=10)
    image = _heat_map(axes[1], data["var"], extent, _log_norm(data["var"]),
                      "magma", frozen=data["var"] == 0)
    bar = fig.colorbar(image, ax=axes[1], pad=0.01, location="bottom",
                       shrink=0.9)
    bar.set_label("relative drift ||v_t - v_0|| / ||v_0|| (log)")
    axes[1].set_title("moving variance: drift from the start", fontsize=10)
    for ax in axes:
        ax.set_xticks(epochs if len(epochs) <= 20 else
                      epochs[:: math.ceil(len(epochs) / 20)])
        ax.set_xlabel("epoch")
        phase_lines(ax, run.phases, epochs, "tab:cyan")
    step = max(1, math.ceil(n / 30))
    rows = list(range(0, n, step))
    if rows[-1] != n - 1:
        rows.append(n - 1)
    axes[0].set_yticks(rows)
    axes[0].set_yticklabels([names[i].replace("_block", "_b") for i in rows],
                            fontsize=7)
    axes[0].set_ylabel("BatchNorm layer (input at top, output at bottom)")
    fig.legend(handles=[Patch(fc=FROZEN_COLOUR, ec="0.5",
                              label="frozen (inference mode): 0")],
               loc="outside upper right", fontsize=8)
    title = ("BatchNorm moving-statistics drift: frozen (inference-mode) layers "
             "stay at 0;\nlarge drift in few steps explains a train/test gap")
    fig.suptitle(title, fontsize=11)
    caption = (
        "Each row is a BatchNorm layer, input to output. Layers that train "
        "update their moving mean and variance with every batch; when these "
        "drift far from the values the weights were trained with, the model "
        "behaves differently at test time than during training."
    )
    if average:
        caption += (
            " Here the moving means started at 0 (random initialisation), so "
            "the drift is from placeholder statistics and is expected; the "
            "left panel shows the average moving mean itself."
        )
    return FigureResult("batchnorm_drift", SECTION, title.replace("\n", " "),
                        caption, fig)


def _log_norm(values: np.ndarray) -> colors.LogNorm:
    """A log colour scale over the finite positive values (a default if none)."""
    positive = values[np.isfinite(values) & (values > 0)]
    vmin = float(positive.min()) if positive.size else 1e-4
    vmax = float(positive.max()) if positive.size else 1.0
    if vmax <= vmin:
        vmin, vmax = vmin / 10, vmax * 10
    return colors.LogNorm(vmin=vmin, vmax=vmax)


def _heat_map(ax, values, extent, norm, cmap, frozen):
    """Layers x epochs heat map with frozen cells in a flat grey underneath.

    On a log scale exact zeros would otherwise vanish; undefined cells
    (NaN, or not positive on a log scale) stay blank.
    """
    ax.imshow(np.where(frozen, 1.0, np.nan), aspect="auto",
              interpolation="nearest", extent=extent,
              cmap=colors.ListedColormap([FROZEN_COLOUR]))
    shown = np.where(frozen, np.nan, values)
    if isinstance(norm, colors.LogNorm):
        shown = np.where(shown > 0, shown, np.nan)
    image = ax.imshow(np.ma.masked_invalid(shown), aspect="auto",
                      interpolation="nearest", extent=extent, cmap=cmap,
                      norm=norm)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    return image

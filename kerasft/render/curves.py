"""Is it learning? Loss and accuracy per epoch, train vs validation.

Figure ``curves`` (section ``curves``): loss on the left, accuracy on the
right, per epoch from ``metrics.csv``, with the per-step running means of
``record/scalars.csv`` drawn faintly behind, phase changes marked, and the
BatchNorm train/inference comparison of ``test_metrics.json`` at the last
epoch. The figure prints the curve findings of `kerasft.render.diagnose`
(over-/under-fitting, divergence, the BatchNorm gap): their one home.
"""

from __future__ import annotations

import textwrap

import numpy as np
from matplotlib.ticker import MaxNLocator, PercentFormatter

from kerasft.render.base import (
    FigureResult,
    RenderOptions,
    log_scale,
    new_figure,
)
from kerasft.render.diagnose import column, diagnose, nested_value, pct

TRAIN_COLOR = "C0"
VAL_COLOR = "C1"


# ------------------------------------------------------------------ numbers


# The findings about the curves, printed on the figure (the report shows
# every finding, with its evidence, at the top of the page).
CURVE_FINDINGS = (
    "diverged", "lr_too_high", "overfitting", "underfitting", "unstable",
    "possible_overfitting", "still_improving", "bn_gap",
)


def step_positions(steps: np.ndarray, epochs: np.ndarray) -> np.ndarray:
    """Maps global step numbers onto the epoch axis.

    Epoch ``e`` spans ``[e - 1, e]``; a step lands at ``e - 1`` plus its
    fraction through the epoch, so the last step of an epoch meets that
    epoch's point in ``metrics.csv`` (both are the epoch's running mean).

    Args:
        steps: global step numbers (1-based, counted across phases).
        epochs: the 1-based epoch of each step.

    Returns:
        x positions, same shape as `steps`.
    """
    steps = np.asarray(steps, dtype=np.float64)
    epochs = np.asarray(epochs, dtype=np.float64)
    ok = np.isfinite(steps) & np.isfinite(epochs)
    x = np.full(steps.shape, np.nan)
    if not np.any(ok):
        return x
    uniq = np.unique(epochs[ok])
    ends = {e: steps[ok & (epochs == e)].max() for e in uniq}
    # Steps per epoch from consecutive epochs' last steps; the largest gap,
    # since an unfinished last epoch (a crash) can only make it smaller.
    diffs = [ends[e] - ends[e - 1] for e in uniq if (e - 1) in ends]
    if diffs:
        per_epoch = float(max(diffs))
    else:
        per_epoch = float(ends[uniq[0]] / max(uniq[0], 1))
    per_epoch = max(per_epoch, 1.0)
    for e in uniq:
        sel = ok & (epochs == e)
        start = ends.get(e - 1, (e - 1) * per_epoch)
        x[sel] = e - 1 + np.clip((steps[sel] - start) / per_epoch, 0, 1)
    return x


def phase_boundaries(metrics: dict, phases: list) -> list[tuple[float, str]]:
    """(x, "old → new") for each phase change on the epoch axis.

    The line sits at the end of the last epoch of the old phase. Taken from
    the ``phase`` column of ``metrics.csv``, else from ``phases.json``.
    """
    out: list[tuple[float, str]] = []
    epoch = column(metrics, "epoch")
    names = metrics.get("phase")
    if epoch is not None and names is not None and len(names) == len(epoch):
        names = [str(p) for p in names]
        for i in range(1, len(names)):
            if names[i] != names[i - 1]:
                out.append(
                    (float(epoch[i - 1]), f"{names[i - 1]} → {names[i]}")
                )
        return out
    phases = [p for p in phases or [] if isinstance(p, dict)]
    for prev, cur in zip(phases, phases[1:]):
        first = cur.get("first_epoch")
        if isinstance(first, (int, float)):
            out.append((float(first) - 1,
                        f"{prev.get('name', '?')} → {cur.get('name', '?')}"))
    return out


# ------------------------------------------------------------------ figure


def render(run, options: RenderOptions | None = None) -> list[FigureResult]:
    """The ``curves`` figure of a run, or ``[]`` without ``metrics.csv``.

    Args:
        run: a loaded run (`kerasft.record.store.load_run`).
        options: unused; accepted for the common signature.

    Returns:
        A list with one `FigureResult`, or an empty list.
    """
    metrics = getattr(run, "metrics", None) or {}
    epoch = column(metrics, "epoch")
    loss = column(metrics, "loss")
    val_loss = column(metrics, "val_loss")
    if epoch is None or (loss is None and val_loss is None):
        return []
    acc = column(metrics, "accuracy")
    val_acc = column(metrics, "val_accuracy")
    test = getattr(run, "test", None) or {}
    scalars = (getattr(run, "tables", None) or {}).get("scalars") or {}

    findings = diagnose(run)
    notes = [f.message for f in findings if f.id in CURVE_FINDINGS]
    few = [e.what for f in findings if f.id == "too_few_points"
           for e in f.evidence if e.what.startswith("over-/under-fitting")]
    notes += few
    if not notes:
        notes = ["no fit problem found in these curves"]

    has_acc = acc is not None or val_acc is not None
    fig = new_figure(11, 6)
    axes = fig.subplots(1, 2 if has_acc else 1, squeeze=False)[0]
    ax_loss = axes[0]
    ax_acc = axes[1] if has_acc else None

    # Faint per-step running means first, so the epoch points sit on top.
    sx = None
    if "step" in scalars and "epoch" in scalars:
        sx = step_positions(scalars["step"], scalars["epoch"])
    _draw_steps(ax_loss, sx, column(scalars, "loss"), "train, per step")
    _draw_curve(ax_loss, epoch, loss, "train", TRAIN_COLOR)
    _draw_curve(ax_loss, epoch, val_loss, "validation", VAL_COLOR)
    ax_loss.set_ylabel("loss (cross-entropy)")
    ax_loss.set_title("Loss per epoch (lower is better)")
    pos = np.concatenate([c[np.isfinite(c) & (c > 0)] for c in
                          (loss, val_loss, column(scalars, "loss"))
                          if c is not None])
    if pos.size and pos.max() / pos.min() > 30:
        log_scale(ax_loss)
        ax_loss.set_ylabel("loss (cross-entropy, log scale)")

    if ax_acc is not None:
        _draw_steps(ax_acc, sx, column(scalars, "accuracy"),
                    "train, per step")
        _draw_curve(ax_acc, epoch, acc, "train", TRAIN_COLOR)
        _draw_curve(ax_acc, epoch, val_acc, "validation", VAL_COLOR)
        _draw_bn_markers(ax_acc, float(np.nanmax(epoch)), test)
        ax_acc.set_ylabel("accuracy")
        ax_acc.set_title("Accuracy per epoch (higher is better)")
        ax_acc.set_ylim(-0.02, 1.02)
        ax_acc.yaxis.set_major_formatter(PercentFormatter(1.0))

    bounds = phase_boundaries(metrics, getattr(run, "phases", None) or [])
    last = float(np.nanmax(epoch))
    for ax in axes:
        for x, label in bounds:
            ax.axvline(x, color="0.35", ls="--", lw=1)
            ax.text(x, 0.99, f" {label}", transform=ax.get_xaxis_transform(),
                    ha="left", va="top", fontsize=9, color="0.25")
        # Room on the right for the markers placed after the last epoch.
        ax.set_xlim(0, last + (0.6 if ax is ax_acc else 0.2))
        ax.set_xlabel("epoch (each epoch's point sits at its end)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        # Below the panel: inside, it would hide curves in some run or other.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3,
                  fontsize=9, frameon=False)

    # The findings' messages; their evidence and advice are on the page.
    subtitle = "\n".join(textwrap.fill(n, 140) for n in notes)
    fig.set_figheight(5.4 + 0.2 * subtitle.count("\n"))
    fig.suptitle(
        "Is it learning? Validation should follow training down (loss) and "
        f"up (accuracy)\n{subtitle}",
        fontsize=11,
    )
    caption = (
        "Loss (left) and accuracy (right) per epoch, training vs validation. "
        "Faint lines: the training running mean within each epoch, per "
        "step. Dashed lines: phase changes. A validation loss that turns up "
        "while training loss keeps falling means over-fitting; both still "
        "falling at the end means train longer. Markers right of the last "
        "epoch compare the training images in training vs inference mode "
        "(a gap points at BatchNorm statistics) and the test split."
    )
    return [FigureResult(
        key="curves", section="curves", title="Loss and accuracy per epoch",
        caption=caption, figure=fig,
    )]


def _draw_curve(ax, x, y, label, color) -> None:
    if y is None:
        return
    style = "-o" if y.size < 60 else "-"
    ax.plot(x, y, style, color=color, label=label, lw=2, ms=5, zorder=3)


def _draw_steps(ax, x, y, label) -> None:
    if x is None or y is None or len(x) != len(y):
        return
    ax.plot(x, y, "-", color=TRAIN_COLOR, alpha=0.3, lw=1, label=label,
            zorder=2)


def _draw_bn_markers(ax, last: float, test: dict) -> None:
    """Train (training mode), train (inference mode) and test accuracy."""
    x = last + 0.3
    items = (
        ("train (training mode)", nested_value(test, "last_epoch", "accuracy"),
         TRAIN_COLOR, "<"),
        ("train (inference mode)",
         nested_value(test, "train_inference_mode", "accuracy"), "C2", ">"),
        ("test", nested_value(test, "test", "accuracy"), "C3", "D"),
    )
    for label, value, color, marker in items:
        if value is None:
            continue
        ax.hlines(value, last, x + 0.2, colors=color, lw=2, alpha=0.8,
                  zorder=4)
        ax.plot([x], [value], marker=marker, color=color, ms=8, ls="none",
                zorder=5, label=f"{label}: {pct(value)}")

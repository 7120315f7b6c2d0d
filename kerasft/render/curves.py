"""Is it learning? Loss and accuracy per epoch, train vs validation.

Figure ``curves`` (section ``curves``): loss on the left, accuracy on the
right, per epoch from ``metrics.csv``, with the per-step running means of
``record/scalars.csv`` drawn faintly behind, phase changes marked, and the
BatchNorm train/inference comparison of ``test_metrics.json`` at the last
epoch. The diagnosis (`diagnose_curves`, `diagnose_batchnorm_gap`) is
computed from the numbers alone, so it is testable without a figure.
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

TRAIN_COLOR = "C0"
VAL_COLOR = "C1"


# ------------------------------------------------------------------ numbers


def _column(metrics: dict, name: str) -> np.ndarray | None:
    """A numeric column as float64, or None if absent, textual or all-NaN."""
    col = metrics.get(name)
    if col is None:
        return None
    try:
        col = np.asarray(col, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if col.size == 0 or not np.any(np.isfinite(col)):
        return None
    return col


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _num(x: float) -> str:
    return f"{x:.3g}"


def diagnose_curves(
    metrics: dict[str, np.ndarray],
    *,
    rise_tolerance: float = 0.02,
    steep_drop: float = 0.05,
    underfit_accuracy: float = 0.9,
    gap_points: float = 0.10,
) -> list[str]:
    """Over-/under-fitting diagnosis from per-epoch curves.

    Args:
        metrics: ``{column: array}`` as in ``metrics.csv``: ``epoch``,
            ``loss``, ``val_loss``, ``accuracy``, ``val_accuracy`` (any may
            be missing; NaN cells are ignored).
        rise_tolerance: relative rise of the validation loss above its
            minimum that counts as rising (smaller rises are noise).
            Defaults to `0.02`.
        steep_drop: relative drop of the training loss over the last epoch
            above which it is "still falling steeply". Defaults to `0.05`.
        underfit_accuracy: training accuracy below which a finished run is
            under-fitting. Defaults to `0.9`.
        gap_points: training minus validation accuracy above which the gap
            is called large. Defaults to `0.10` (10 points).

    Returns:
        Plain-text notes, most serious first; empty if there is no loss.

    Example:

    ```python
    diagnose_curves({"epoch": np.arange(1, 6),
                     "loss": np.array([2.0, 1.5, 1.0, 0.7, 0.5]),
                     "val_loss": np.array([2.0, 1.6, 1.7, 1.9, 2.2])})
    # ['over-fitting: validation loss rose for 3 epochs while ...']
    ```
    """
    loss = _column(metrics, "loss")
    val_loss = _column(metrics, "val_loss")
    raw = metrics.get("loss")
    if loss is None and raw is not None and len(raw) and raw.dtype.kind == "f":
        return ["diverged: training loss is NaN/inf in every epoch — lower "
                "the learning rate or clip gradients"]
    if loss is None and val_loss is None:
        return []
    n = len(loss if loss is not None else val_loss)
    epoch = _column(metrics, "epoch")
    if epoch is None or len(epoch) != n:
        epoch = np.arange(1, n + 1, dtype=np.float64)
    acc = _column(metrics, "accuracy")
    val_acc = _column(metrics, "val_accuracy")
    notes: list[str] = []

    # A training loss that turns NaN/inf and stays so is divergence, and
    # makes every other judgement meaningless; an isolated empty cell is not.
    if loss is not None and not np.isfinite(loss[-1]):
        bad = int(np.flatnonzero(np.isfinite(loss))[-1]) + 1
        notes.append(
            f"diverged: training loss is {loss[bad]} from epoch "
            f"{epoch[bad]:g} — lower the learning rate or clip gradients"
        )
        return notes

    # A finite loss that grew by orders of magnitude is divergence too:
    # "under-fitting, raise the learning rate" would be the wrong advice.
    if loss is not None and np.sum(np.isfinite(loss)) >= 1:
        fin = loss[np.isfinite(loss)]
        # (A cross-entropy of 1e4 means logits 1e4 off: no model that
        # learns gets there.)
        if fin[-1] > 1e4 or fin[-1] > 100 * abs(fin[0]) > 0:
            notes.append(
                f"diverged: training loss grew from {_num(fin[0])} to "
                f"{_num(fin[-1])} — lower the learning rate or clip gradients"
            )
            return notes

    def last_finite(a: np.ndarray | None) -> int | None:
        if a is None:
            return None
        idx = np.flatnonzero(np.isfinite(a))
        return int(idx[-1]) if idx.size else None

    over = False  # any sign, including a one-epoch rise
    over_confirmed = False
    gap = False
    if n < 2:
        notes.append(
            "only one epoch: too short to judge over- or under-fitting"
        )
    elif val_loss is not None and np.sum(np.isfinite(val_loss)) >= 2:
        best = int(np.nanargmin(val_loss))
        last = last_finite(val_loss)
        k = last - best
        rise = (val_loss[last] - val_loss[best]) / max(abs(val_loss[best]),
                                                       1e-12)
        train_fell = (
            loss is not None and np.isfinite(loss[last])
            and np.isfinite(loss[best]) and loss[last] < loss[best]
        )
        span = (
            f"epochs {epoch[best]:g}-{epoch[last]:g}: "
            f"{_num(val_loss[best])} → {_num(val_loss[last])}, "
            f"+{100 * rise:.0f}%"
        )
        if k >= 1 and rise > rise_tolerance:
            if not train_fell:
                notes.append(
                    f"validation loss rose for {k} epoch(s) while training "
                    f"loss did not fall ({span}): unstable training — "
                    "lower the learning rate"
                )
            elif k >= 2 or rise > 0.10:
                over = over_confirmed = True
                notes.append(
                    f"over-fitting: validation loss rose for {k} epochs "
                    f"while training loss fell ({span}); the best "
                    f"validation loss was at epoch {epoch[best]:g} — stop "
                    "earlier, add augmentation or regularisation"
                )
            else:
                over = True
                notes.append(
                    "possible start of over-fitting: validation loss rose "
                    f"in the last epoch while training loss fell ({span}); "
                    "watch whether it keeps rising"
                )

    # Train/validation gap at the end, in accuracy when there is one.
    la, lv = last_finite(acc), last_finite(val_acc)
    if la is not None and lv is not None:
        diff = acc[la] - val_acc[lv]
        if diff > gap_points:
            gap = True
            notes.append(
                f"large train/validation gap: training accuracy "
                f"{_pct(acc[la])} vs validation {_pct(val_acc[lv])} "
                f"({100 * diff:.0f} points) at the end — the model fits the "
                "training images much better than new ones"
            )
    elif loss is not None and val_loss is not None:
        ll, lvl = last_finite(loss), last_finite(val_loss)
        if ll is not None and lvl is not None and loss[ll] > 0:
            v, t = val_loss[lvl], loss[ll]
            if v > 1.5 * t and v - t > 0.2:
                gap = True
                notes.append(
                    f"large train/validation gap: validation loss "
                    f"{_num(val_loss[lvl])} vs training {_num(loss[ll])} "
                    "at the end"
                )

    # Under-fitting: low training accuracy, or a loss that still falls fast.
    if n >= 2 and loss is not None:
        fin = np.flatnonzero(np.isfinite(loss))
        if fin.size >= 2:
            a, b = loss[fin[-2]], loss[fin[-1]]
            drop = (a - b) / max(abs(a), 1e-12)
            steep = drop > steep_drop
            trend = (f"−{100 * drop:.0f}%" if drop >= 0
                     else f"+{-100 * drop:.0f}%") + " in the last epoch"
            # More epochs are the wrong advice once validation got worse.
            if la is not None and acc[la] < underfit_accuracy:
                if steep:
                    notes.append(
                        f"under-fitting: training accuracy still "
                        f"{_pct(acc[la])} (below {_pct(underfit_accuracy)}) "
                        f"and training loss still falling steeply at the end "
                        f"({trend}) — "
                        + ("but validation is already getting worse: more "
                           "data or augmentation rather than more epochs"
                           if over_confirmed else "train longer")
                    )
                else:
                    notes.append(
                        f"under-fitting: training accuracy only "
                        f"{_pct(acc[la])} (below {_pct(underfit_accuracy)}) "
                        f"and training loss has levelled off ({trend}) — "
                        "unfreeze more stages, raise the learning rate or "
                        "use a larger model"
                    )
            elif steep and not over:
                notes.append(
                    f"training loss still falling steeply at the end "
                    f"({trend}) — more epochs would likely help"
                )

    if n >= 2 and val_loss is not None and not over and not gap:
        best = int(np.nanargmin(val_loss))
        if best == last_finite(val_loss):
            notes.append(
                "no sign of over-fitting: validation loss is lowest in the "
                "last epoch"
            )
        else:
            notes.append("no sign of over-fitting")
    return notes


def nonfinite_note(fault: dict) -> str:
    """The curves' diagnosis of a run stopped by non-finite numbers.

    Args:
        fault: ``status.json``'s ``fault`` (see `NonFiniteGuard`).
    """
    values = ", ".join(f"{k} {v}" for k, v in
                       (fault.get("values") or {}).items()) or "a gradient"
    return (
        f"diverged: the numbers became non-finite ({values}) at epoch "
        f"{fault.get('epoch')}, batch {fault.get('batch')}, learning rate "
        f"{fault.get('learning_rate')}; first layer: "
        f"{fault.get('layer') or 'not found'}. The curves stop before it; "
        "judge no fit from them — lower the learning rate or clip gradients"
    )


def diagnose_batchnorm_gap(test: dict, threshold: float = 0.15) -> list[str]:
    """Flags training-mode accuracy well above inference-mode accuracy.

    Args:
        test: ``test_metrics.json``: ``last_epoch`` (training-mode metrics
            of the last epoch) and ``train_inference_mode`` (the training
            images again, in inference mode).
        threshold: gap (in accuracy, 0-1) that triggers the note.
            Defaults to `0.15`.

    Returns:
        One note, or none.
    """
    train_mode = _get(test, "last_epoch", "accuracy")
    inference = _get(test, "train_inference_mode", "accuracy")
    if train_mode is None or inference is None:
        return []
    if train_mode - inference > threshold:
        return [
            "BatchNorm train/inference gap, likely the BatchNorm moving "
            f"statistics: the training images score {_pct(train_mode)} in "
            f"training mode but {_pct(inference)} in inference mode "
            f"({100 * (train_mode - inference):.0f} points lower) — the "
            "moving statistics lag the trained weights (few steps since "
            "unfreezing, small batches or a high bn_momentum); lower "
            "model.bn_momentum, train longer, or use plan.batchnorm: "
            "inference"
        ]
    return []


def _get(d: dict, section: str, key: str) -> float | None:
    value = (d or {}).get(section, {})
    value = value.get(key) if isinstance(value, dict) else None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


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
    epoch = _column(metrics, "epoch")
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
    epoch = _column(metrics, "epoch")
    loss = _column(metrics, "loss")
    val_loss = _column(metrics, "val_loss")
    if epoch is None or (loss is None and val_loss is None):
        return []
    acc = _column(metrics, "accuracy")
    val_acc = _column(metrics, "val_accuracy")
    test = getattr(run, "test", None) or {}
    scalars = (getattr(run, "tables", None) or {}).get("scalars") or {}

    fault = (getattr(run, "status", None) or {}).get("fault")
    if fault:
        # The curves end before a NaN/inf: any fitting advice drawn from
        # them ("raise the learning rate") would be wrong.
        notes = [nonfinite_note(fault)]
    else:
        notes = diagnose_curves(metrics) + diagnose_batchnorm_gap(test)

    has_acc = acc is not None or val_acc is not None
    fig = new_figure(11, 6)
    axes = fig.subplots(1, 2 if has_acc else 1, squeeze=False)[0]
    ax_loss = axes[0]
    ax_acc = axes[1] if has_acc else None

    # Faint per-step running means first, so the epoch points sit on top.
    sx = None
    if "step" in scalars and "epoch" in scalars:
        sx = step_positions(scalars["step"], scalars["epoch"])
    _draw_steps(ax_loss, sx, _column(scalars, "loss"), "train, per step")
    _draw_curve(ax_loss, epoch, loss, "train", TRAIN_COLOR)
    _draw_curve(ax_loss, epoch, val_loss, "validation", VAL_COLOR)
    ax_loss.set_ylabel("loss (cross-entropy)")
    ax_loss.set_title("Loss per epoch (lower is better)")
    pos = np.concatenate([c[np.isfinite(c) & (c > 0)] for c in
                          (loss, val_loss, _column(scalars, "loss"))
                          if c is not None])
    if pos.size and pos.max() / pos.min() > 30:
        log_scale(ax_loss)
        ax_loss.set_ylabel("loss (cross-entropy, log scale)")

    if ax_acc is not None:
        _draw_steps(ax_acc, sx, _column(scalars, "accuracy"),
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

    # The figure shows each note up to its advice (after " — "); the full
    # text goes to the report's summary through `notes`.
    subtitle = "\n".join(
        textwrap.fill(n.split(" — ")[0], 140)
        for n in (notes or ["no diagnosis"])
    )
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
        caption=caption, figure=fig, notes=notes,
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
        ("train (training mode)", _get(test, "last_epoch", "accuracy"),
         TRAIN_COLOR, "<"),
        ("train (inference mode)",
         _get(test, "train_inference_mode", "accuracy"), "C2", ">"),
        ("test", _get(test, "test", "accuracy"), "C3", "D"),
    )
    for label, value, color, marker in items:
        if value is None:
            continue
        ax.hlines(value, last, x + 0.2, colors=color, lw=2, alpha=0.8,
                  zorder=4)
        ax.plot([x], [value], marker=marker, color=color, ms=8, ls="none",
                zorder=5, label=f"{label}: {_pct(value)}")

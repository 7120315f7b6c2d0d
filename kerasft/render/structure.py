"""What was trained: the model by ResNet stage, frozen or trainable per phase.

Figure ``structure`` (section ``structure``), from ``layers.json`` and
``phases.json``: on the left a grid of stages (rows: stem conv1, conv2-conv5,
head) by phases (columns), each cell coloured frozen / trainable and saying
whether the stage's BatchNorm layers ran in inference mode and, for runs
that record it, the stage's starting learning rate (with its
discriminative multiplier, `plan.lr_decay_per_stage` / `lr_multipliers`,
when not 1); on the right each stage's parameter count per phase,
trainable part over frozen part.

The per-stage split mirrors `kerasft.model.plan.apply_phase`: the head
always trains; a backbone stage trains when it is in the phase's
``stages``; its BatchNorm layers train only when the phase's ``batchnorm``
is ``train``, and even then their moving mean and variance (half of a
BatchNorm layer's parameters) are non-trainable variables, so they count
as frozen -- as in the phase's own ``params`` totals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from kerasft.config import stage_name
from kerasft.errors import RunDirError
from kerasft.render.base import (
    FigureResult,
    RenderOptions,
    log_scale,
    new_figure,
)

STAGE_ORDER = (1, 2, 3, 4, 5, "head")
# Cell categories, by how much of the stage learns.
FROZEN, TRAIN_BN_INFERENCE, TRAIN_BN_TRAINING = 0, 1, 2
CELL_COLORS = ("#cfd5de", "#a6dba0", "#1b7837")
CELL_TEXT_COLORS = ("0.15", "0.1", "white")
FROZEN_BAR = "#b0b7c3"


@dataclass
class StageRow:
    """One stage of the model.

    Attributes:
        stage: 1-5, ``"head"``, or None (layers outside any stage).
        params: all parameters of the stage's layers.
        bn_params: the part in BatchNormalization layers.
    """

    stage: object
    params: int
    bn_params: int

    @property
    def label(self) -> str:
        if self.stage == 1:
            return "1 stem (conv1)"
        if self.stage == "head":
            return "head (classifier)"
        if isinstance(self.stage, int):
            return f"{self.stage} conv{self.stage}"
        return "other layers"


def stage_rows(layers: list[dict]) -> list[StageRow]:
    """Parameter counts per stage, in input-to-output order.

    Args:
        layers: entries of ``layers.json`` (name, class, stage, params,
            batchnorm).

    Returns:
        One `StageRow` per stage that has parameters.
    """
    totals: dict = {}
    for layer in layers:
        if not isinstance(layer, dict):
            continue
        stage = layer.get("stage")
        params = int(layer.get("params") or 0)
        row = totals.setdefault(stage, [0, 0])
        row[0] += params
        if layer.get("batchnorm"):
            row[1] += params
    order = [s for s in STAGE_ORDER if s in totals]
    order += sorted((s for s in totals if s not in STAGE_ORDER), key=str)
    return [StageRow(s, *totals[s]) for s in order if totals[s][0] > 0]


def stage_state(row: StageRow, phase: dict) -> tuple[int, int, int, str]:
    """How a stage trained in a phase.

    Args:
        row: the stage.
        phase: an entry of ``phases.json`` (stages, batchnorm).

    Returns:
        ``(category, trainable, frozen, text)``: the cell category
        (`FROZEN`, `TRAIN_BN_INFERENCE`, `TRAIN_BN_TRAINING`), the
        trainable and frozen parameter counts, and the cell's text.
    """
    stages = {s for s in phase.get("stages") or []}
    trains = row.stage == "head" or (
        isinstance(row.stage, int) and row.stage in stages
    )
    bn_trains = trains and phase.get("batchnorm") == "train"
    if not trains:
        text = "frozen" + ("\nBN inference" if row.bn_params else "")
        return FROZEN, 0, row.params, text
    other = row.params - row.bn_params
    if bn_trains:
        # gamma and beta train; moving mean and variance never do.
        trainable = other + row.bn_params // 2
        category, bn = TRAIN_BN_TRAINING, "\nBN training"
    else:
        trainable = other
        category, bn = TRAIN_BN_INFERENCE, "\nBN inference"
    if not row.bn_params:
        bn = "\n(no BatchNorm)"
        category = TRAIN_BN_TRAINING if category else category
    return category, trainable, row.params - trainable, "trainable" + bn


def stage_rate(row: StageRow, phase: dict) -> str | None:
    """A trainable stage's starting learning rate in a phase, as text.

    Args:
        row: the stage.
        phase: an entry of ``phases.json``; its ``learning_rates`` (per
            stage name, trainable stages only) and ``lr_multipliers``.

    Returns:
        ``"lr 3.0e-04"``, with ``" (×0.3)"`` when the stage's multiplier
        is not 1; None for a frozen stage or a run that recorded no rates.
    """
    if row.stage is None:
        return None
    name = stage_name(row.stage)
    lr = (phase.get("learning_rates") or {}).get(name)
    if not isinstance(lr, (int, float)):
        return None
    text = f"lr {lr:.1e}"
    m = (phase.get("lr_multipliers") or {}).get(name)
    if isinstance(m, (int, float)) and m != 1:
        text += f" (×{m:.3g})"
    return text


def _count(n: float) -> str:
    n = float(n)
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


def _share(x: float) -> str:
    """A fraction as a percentage that never rounds to 0% or 100%."""
    if x < 0.001:
        return "<0.1%"
    if x > 0.999:
        return ">99.9%"
    return f"{100 * x:.1f}%"


def _phase_label(phase: dict) -> str:
    first = phase.get("first_epoch")
    epochs = phase.get("epochs")
    if isinstance(first, int) and isinstance(epochs, int) and epochs > 1:
        span = f"epochs {first}-{first + epochs - 1}"
    elif isinstance(first, int):
        span = f"epoch {first}"
    else:
        span = ""
    lr = phase.get("lr_factor")
    lr = f"lr ×{lr:g}" if isinstance(lr, (int, float)) else ""
    return "\n".join(x for x in (str(phase.get("name", "?")),
                                 " · ".join(y for y in (span, lr) if y)) if x)


def _phase_totals(phase: dict, computed: tuple[int, int]) -> tuple[int, int]:
    params = phase.get("params") or {}
    try:
        return int(params["trainable"]), int(params["frozen"])
    except (KeyError, TypeError, ValueError):
        return computed


def read_layers(path: Path) -> list[dict]:
    """The layer table; [] when the run has none (an older run).

    A file that exists but cannot be read raises: `render_report` shows the
    reason on the page instead of silently dropping the figure.
    """
    if not path.exists():
        return []
    try:
        with open(path, encoding="utf-8") as f:
            layers = json.load(f)
    except (OSError, ValueError) as e:
        raise RunDirError(
            f"{path} cannot be read ({type(e).__name__}: {e}); the "
            "structure figure needs it."
        ) from None
    if not isinstance(layers, list):
        raise RunDirError(
            f"{path}: expected a list of layers. Received a "
            f"{type(layers).__name__}."
        )
    return layers


def render(run, options: RenderOptions | None = None) -> list[FigureResult]:
    """The ``structure`` figure, or ``[]`` without layers.json/phases.json.

    Args:
        run: a loaded run (`kerasft.record.store.load_run`).
        options: unused; accepted for the common signature.

    Returns:
        A list with one `FigureResult`, or an empty list.
    """
    rows = stage_rows(read_layers(Path(run.path) / "layers.json"))
    phases = [p for p in getattr(run, "phases", None) or []
              if isinstance(p, dict)]
    if not rows or not phases:
        return []

    states = [[stage_state(r, p) for p in phases] for r in rows]
    totals = [
        _phase_totals(p, (sum(s[j][1] for s in states),
                          sum(s[j][2] for s in states)))
        for j, p in enumerate(phases)
    ]
    n_rows, n_phases = len(rows), len(phases)

    fig = new_figure(11, 1.8 + 0.75 * (n_rows + 1))
    ax_grid, ax_bar = fig.subplots(
        1, 2, sharey=True,
        gridspec_kw={"width_ratios": [1.1 + 0.9 * n_phases, 5]},
    )

    # Grid: one row per stage plus a totals row at the bottom.
    cats = np.array([[s[0] for s in row] for row in states], dtype=float)
    ax_grid.imshow(
        cats, cmap=ListedColormap(CELL_COLORS), vmin=-0.5, vmax=2.5,
        aspect="auto", extent=(-0.5, n_phases - 0.5, n_rows - 0.5, -0.5),
    )
    for i, row in enumerate(states):
        for j, (cat, trainable, frozen, text) in enumerate(row):
            rate = stage_rate(rows[i], phases[j]) if cat != FROZEN else None
            if rate:
                text += "\n" + rate
            ax_grid.text(j, i, text, ha="center", va="center", fontsize=9,
                         color=CELL_TEXT_COLORS[cat])
    for j, (t, f) in enumerate(totals):
        ax_grid.text(j, n_rows, f"{_count(t)} trainable\n{_count(f)} frozen",
                     ha="center", va="center", fontsize=9, fontweight="bold")
    ax_grid.set_xticks(range(n_phases), [_phase_label(p) for p in phases],
                       fontsize=9)
    ax_grid.xaxis.tick_top()
    ax_grid.set_yticks(range(n_rows + 1),
                       [r.label for r in rows] + ["all (phases.json)"])
    ax_grid.set_ylim(n_rows + 0.5, -0.5)
    ax_grid.set_xlim(-0.5, n_phases - 0.5)
    ax_grid.axhline(n_rows - 0.5, color="0.3", lw=1)
    for j in range(1, n_phases):
        ax_grid.axvline(j - 0.5, color="white", lw=2)
    ax_grid.tick_params(length=0)

    # Bars: per stage one thin bar per phase; the trainable part is drawn
    # over the whole stage (grey = frozen remainder). Log scale: the stem
    # has ~1e4 parameters, conv5 ~1e7.
    height = 0.8 / n_phases
    for j, p in enumerate(phases):
        color = f"C{j}"
        offsets = -0.4 + height * (j + 0.5)
        ys = np.arange(n_rows + 1) + offsets
        total = np.array([r.params for r in rows] + [sum(totals[j])], float)
        trainable = np.array([s[j][1] for s in states] + [totals[j][0]],
                             float)
        ax_bar.barh(ys, total, height=height * 0.9, color=FROZEN_BAR,
                    edgecolor="none")
        ax_bar.barh(ys, np.where(trainable > 0, trainable, np.nan),
                    height=height * 0.9, color=color, edgecolor="none",
                    label=f"{p.get('name', '?')}: trainable")
        for y, t, n in zip(ys, trainable, total):
            share = "frozen" if t == 0 else (
                "all trainable" if t >= n else f"{_share(t / n)} trainable"
            )
            ax_bar.text(n * 1.15, y, f"{_count(n)}, {share}", va="center",
                        fontsize=8)
    log_scale(ax_bar, "x")
    lo = min(r.params for r in rows)
    hi = max(sum(t) for t in totals)
    ax_bar.set_xlim(max(lo / 3, 1), hi * 40)
    ax_bar.set_xlabel("parameters (log scale)")
    ax_bar.axhline(n_rows - 0.5, color="0.3", lw=1)
    ax_bar.grid(True, axis="x", alpha=0.3)
    handles, labels = ax_bar.get_legend_handles_labels()
    handles.append(Patch(color=FROZEN_BAR))
    labels.append("frozen (incl. BatchNorm moving statistics)")
    ax_bar.legend(handles, labels, loc="upper center",
                  bbox_to_anchor=(0.5, -0.1), ncol=3, fontsize=9,
                  frameon=False)
    ax_bar.set_title("Parameters per stage and phase", fontsize=10)
    ax_grid.legend(
        [Patch(color=c) for c in CELL_COLORS],
        ["frozen", "trainable, BN inference",
         "trainable, BN training (or no BN)"],
        loc="upper center", bbox_to_anchor=(0.5, -0.04), ncol=1, fontsize=9,
        frameon=False,
    )

    summary = "; ".join(
        f"{p.get('name', '?')}: {_count(t)} trainable / {_count(f)} frozen"
        for p, (t, f) in zip(phases, totals)
    )
    fig.suptitle(
        "What was trained, by ResNet stage and phase — check that the "
        f"stages you meant to fine-tune are green\n{summary}",
        fontsize=11,
    )
    caption = (
        "Rows: ResNet stages (1 = stem conv1, 2-5 = conv2-conv5) and the "
        "head; columns: training phases. Green cells trained in that phase; "
        "'BN inference' means the stage's BatchNorm layers used (and did not "
        "update) their moving statistics; 'lr' is the stage's starting "
        "learning rate in the phase (base rate × the phase's factor × the "
        "stage's multiplier, shown in brackets when not 1; a schedule then "
        "scales all stages alike). Bars: parameters per stage, "
        "coloured where trainable in the phase, grey where frozen; the last "
        "row holds the phase totals from phases.json (BatchNorm moving "
        "statistics always count as frozen)."
    )
    return [FigureResult(
        key="structure", section="structure",
        title="Model structure and freezing per phase",
        caption=caption, figure=fig, notes=[],
    )]

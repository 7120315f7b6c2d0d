"""Diagnosis: a run's recorded numbers -> findings. One home for every rule.

`diagnose(run)` reads a loaded run (`kerasft.load_run`; numbers only, no
backend) and returns `Finding`s, most serious first. The report page shows
them first and ``kerasft train`` prints them at the end; both read them
from here, so a rule exists once, with one wording. The rules, their
thresholds and their precedence are documented in ``docs/diagnosis.md``.

Precedence (findings never contradict each other):

- ``diverged`` (non-finite numbers, an exploded loss) says "learning rate
  too high" itself and silences every judgement drawn from the curves,
  the learning rate and the predictions (`SUPPRESSES`).
- ``lr_too_high`` silences ``lr_too_low`` and ``underfitting`` (whose
  advice would be "raise the learning rate").
- over- and under-fitting are judged once, on the final phase of the plan
  (earlier phases are superseded: a head-only phase that under-fits is why
  the next phase unfreezes more); ``overfitting`` silences
  ``underfitting``.
- ``lr_too_low`` silences ``never_moved`` (when no layer moved, the rate
  is the cause, not the layers); a layer that is ``dead_layer`` is not
  also ``never_moved``; a BatchNorm layer in ``bn_frozen_moving`` is not
  also ``frozen_moved``.

A rule that lacks the points to judge says so (``too_few_points``, with
n) instead of staying silent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasft.record.store import STAT_NAMES

# ------------------------------------------------------------- thresholds

# The update-ratio band ||dW||/||W|| per step (cs231n's rule of thumb: about
# 1e-3 is healthy, a decade either side still fine). The figure draws it.
RATIO_TARGET = 1e-3
RATIO_LOW = 1e-4
RATIO_HIGH = 1e-2
# "Far" outside the band: a decade beyond its edge. Adam moves every weight
# by ~lr per step, so a fresh head at the default lr 1e-3 (weights of rms
# ~0.03) reads ~3e-2: above the band but healthy. Ten times more than that
# is no longer a matter of taste.
RATIO_HIGH_ALARM = 1e-1
RATIO_LOW_ALARM = 1e-5
# Below this per-step ratio float32 weights (7 significant digits) hardly
# change at all: the rate is too low whatever the loss did.
RATIO_NO_CHANGE = 1e-7
# A training loss that falls by less than this share over a phase is flat.
FLAT_LOSS_DROP = 0.05
# A training loss above this multiple of its first recorded value is a
# spike: no healthy run gets twice as bad as its untrained start.
SPIKE_FACTOR = 2.0
# A loss that grows 100-fold, or past 1e4 (a cross-entropy of 1e4 means
# logits 1e4 off: no model that learns gets there), has diverged.
DIVERGE_GROWTH = 100.0
DIVERGE_LOSS = 1e4
# Over-/under-fitting are judged on at least this many epochs of the final
# phase: a rise over two epochs is noise as often as a trend.
MIN_FIT_EPOCHS = 3
# Relative rise of the validation loss above its minimum that counts.
RISE_TOLERANCE = 0.02
# A rise this large counts as over-fitting after a single epoch.
RISE_CONFIRMED = 0.10
# Relative drop of the training loss over the last epoch that is "still
# falling steeply".
STEEP_DROP = 0.05
# Training accuracy below which a finished run under-fits.
UNDERFIT_ACCURACY = 0.9
# Train minus validation/test accuracy that counts as a large gap.
GAP_POINTS = 0.10
# Training-mode minus inference-mode accuracy on the training images that
# points at the BatchNorm moving statistics.
BN_GAP_POINTS = 0.15
# Accuracies compared across splits need this many images each: with 16
# images one image is 6 points, the size of the gaps judged.
MIN_EVAL_IMAGES = 100
# Step-table figures need this many rows to show a trend.
MIN_STEP_POINTS = 3
# Gradients across depth: the input-side third of the live kernels against
# the output-side third (medians); this ratio either way is a problem.
DEPTH_FACTOR = 1e3
MIN_DEPTH_KERNELS = 6
# Share of a block's channels dead (zero on every probe image) at the end.
DEAD_SHARE = 0.5
# Share of probe activations outside the epoch-0 range that counts as
# activations growing.
OUTSIDE_SHARE = 0.01
# Relative drift of BatchNorm moving statistics that counts as large.
LARGE_DRIFT = 0.5

SEVERITIES = ("error", "warning", "info")

# The one-line meaning of each finding id (the docs table lists the rule).
RULES = {
    "diverged": "learning rate too high: the run diverged",
    "lr_too_high": "learning rate too high",
    "lr_too_low": "learning rate too low",
    "overfitting": "over-fitting",
    "underfitting": "under-fitting",
    "unstable": "validation loss rose while training loss did not fall",
    "exploding_gradients": "gradients explode across depth",
    "vanishing_gradients": "gradients vanish across depth",
    "dead_layer": "dead layer",
    "bn_frozen_moving": "BatchNorm statistics moved in a frozen stage",
    "bn_gap": "BatchNorm train/inference gap",
    "frozen_moved": "frozen layers moved",
    "never_moved": "layers meant to train never moved",
    "predictions_collapse": "predictions collapse onto one class",
    "classes_never_recognised": "classes never recognised",
    "still_improving": "training loss still falling",
    "possible_overfitting": "possible start of over-fitting",
    "bn_drift": "BatchNorm statistics drifted",
    "activations_growing": "activations outside their starting range",
    "features_worse": "features separate the classes worse",
    "top_confusion": "most frequent confusion",
    "confident_mistakes": "confidently wrong test images",
    "too_few_points": "not enough points to judge",
    "rule_failed": "a rule could not read its numbers",
}

# finding id -> the ids it silences (see the module docstring).
SUPPRESSES = {
    "diverged": {
        "lr_too_high", "lr_too_low", "overfitting", "underfitting",
        "unstable", "exploding_gradients", "vanishing_gradients",
        "never_moved", "bn_gap", "still_improving", "possible_overfitting",
        "predictions_collapse", "classes_never_recognised", "bn_drift",
        "activations_growing", "features_worse", "top_confusion",
        "confident_mistakes", "dead_layer",
    },
    "lr_too_high": {"lr_too_low", "underfitting", "unstable",
                    "still_improving"},
    "overfitting": {"underfitting", "still_improving",
                    "possible_overfitting"},
    "underfitting": {"still_improving"},
    # the rate is the cause; under-fitting and still layers its symptoms
    "lr_too_low": {"never_moved", "still_improving", "underfitting"},
}


# The finding ids a check judges, for its too_few_points note.
FIT_IDS = frozenset({"overfitting", "underfitting", "unstable",
                     "still_improving", "possible_overfitting"})
PREDICTION_IDS = frozenset({"predictions_collapse",
                            "classes_never_recognised", "top_confusion",
                            "confident_mistakes"})


# ------------------------------------------------------------- findings


@dataclass(frozen=True)
class Evidence:
    """One number behind a finding.

    Attributes:
        what: what was measured ("median update ratio of the trainable
            kernels").
        value: the measured value.
        threshold: the threshold it crossed, as text ("> 1e-01").
        layer: the layer or variable concerned, if one.
        epoch: the epoch, if one.
        step: the training step, if one.
    """

    what: str
    value: float | str | None = None
    threshold: str = ""
    layer: str | None = None
    epoch: int | None = None
    step: int | None = None

    def text(self) -> str:
        """One line: ``what = value (threshold) at layer, epoch, step``."""
        value = self.value
        if isinstance(value, float):
            value = f"{value:.3g}"
        out = self.what + ("" if value is None else f" = {value}")
        if self.threshold:
            out += f" ({self.threshold})"
        where = [x for x in (
            self.layer and f"layer {self.layer}",
            self.epoch is not None and f"epoch {self.epoch}",
            self.step is not None and f"step {self.step}") if x]
        return out + (f" at {', '.join(where)}" if where else "")

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in
                ("what", "value", "threshold", "layer", "epoch", "step")}


@dataclass(frozen=True)
class Finding:
    """A diagnosis: what is wrong, the numbers that show it, what to do.

    Attributes:
        id: the rule's id (a key of `RULES`).
        severity: ``error``, ``warning`` or ``info``.
        message: one line saying what was found, with its numbers.
        action: what to do about it.
        evidence: the numbers behind it.
    """

    id: str
    severity: str
    message: str
    action: str = ""
    evidence: tuple[Evidence, ...] = field(default_factory=tuple)

    def text(self) -> str:
        """The finding in one line: ``message — action``."""
        return self.message + (f" — {self.action}" if self.action else "")

    def to_dict(self) -> dict:
        return {"id": self.id, "severity": self.severity,
                "message": self.message, "action": self.action,
                "evidence": [e.to_dict() for e in self.evidence]}


def problems(findings: list[Finding]) -> list[Finding]:
    """The findings that are problems (errors and warnings)."""
    return [f for f in findings if f.severity != "info"]


def summary_lines(findings: list[Finding]) -> list[str]:
    """What ``kerasft train`` prints: one line per finding, its evidence
    indented below, and a plain statement when nothing is wrong."""
    lines = []
    if not problems(findings):
        lines.append("diagnosis: healthy: no rule found a problem in the "
                     "recorded numbers")
    for f in findings:
        lines.append(f"diagnosis: {f.severity} [{f.id}]: {f.text()}")
        lines += [f"    evidence: {e.text()}" for e in f.evidence]
    return lines


# ------------------------------------------------------------- helpers


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def pct(x: float) -> str:
    """0.123 -> ``12.3%``."""
    return f"{100 * x:.1f}%"


def column(table: dict, name: str) -> np.ndarray | None:
    """A numeric column as float64, or None if absent, textual or all-NaN."""
    col = (table or {}).get(name)
    if col is None:
        return None
    try:
        col = np.asarray(col, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if col.size == 0 or not np.any(np.isfinite(col)):
        return None
    return col


def nested_value(d: dict, section: str, key: str) -> float | None:
    """``d[section][key]`` as a finite float, or None."""
    value = (d or {}).get(section, {})
    value = value.get(key) if isinstance(value, dict) else None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _names(names: list[str], limit: int = 3) -> str:
    more = len(names) - limit
    return ", ".join(names[:limit]) + (f" and {more} more" if more > 0 else "")


class _Context:
    """What the rules share: the run, its phases and layer intent."""

    def __init__(self, run):
        self.run = run
        self.metrics = getattr(run, "metrics", None) or {}
        self.tables = getattr(run, "tables", None) or {}
        self.records = getattr(run, "records", None) or {}
        self.test = getattr(run, "test", None) or {}
        self.status = getattr(run, "status", None) or {}
        self.phases = [p for p in (getattr(run, "phases", None) or [])
                       if isinstance(p, dict)]
        self.config = getattr(run, "config", None) or {}
        path = getattr(run, "path", None)
        self.layers = {}
        if path is not None and (Path(path) / "layers.json").exists():
            import json

            with open(Path(path) / "layers.json", encoding="utf-8") as f:
                self.layers = {r["name"]: r for r in json.load(f)}
        # too_few_points evidence, each with the finding ids it would judge
        self.few: list[tuple[frozenset, Evidence]] = []

    def too_few(self, judges: frozenset, evidence: Evidence) -> None:
        """Notes a check that lacked points; `judges`: the finding ids it
        would have judged (empty for a figure), so that a finding which
        silences them (``diverged``) silences this note too."""
        self.few.append((judges, evidence))

    def phase_of_epoch(self, epoch: int) -> dict | None:
        for p in self.phases:
            first = p.get("first_epoch", 1)
            if first <= epoch < first + p.get("epochs", 0):
                return p
        return None

    def meant_to_train(self, variable: str, phase: dict) -> bool | None:
        """Whether `variable` (a path) trains in `phase`; None if unknown."""
        layer = self.layers.get(str(variable).split("/")[0])
        if layer is None:
            return None
        stage = layer.get("stage")
        if stage == "head":
            return True
        if stage is None:
            return False
        on = stage in (phase.get("stages") or [])
        if layer.get("batchnorm"):
            on = on and phase.get("batchnorm") == "train"
        return on

    def is_batchnorm(self, variable: str) -> bool:
        layer = self.layers.get(str(variable).split("/")[0])
        return bool(layer and layer.get("batchnorm"))


# ------------------------------------------------------------- rules


def _rule_diverged(ctx: _Context) -> list[Finding]:
    """Non-finite numbers anywhere, or a training loss that exploded."""
    evidence: list[Evidence] = []
    fault = ctx.status.get("fault") or {}
    if fault:
        values = ", ".join(f"{k} {v}" for k, v in
                           (fault.get("values") or {}).items()) or "a gradient"
        evidence.append(Evidence(
            f"non-finite value caught by the guard ({values}); learning rate "
            f"{fault.get('learning_rate')}", threshold="any NaN/inf",
            layer=fault.get("layer") or "not found", epoch=fault.get("epoch"),
            step=fault.get("step")))
    loss = column(ctx.metrics, "loss")
    raw = ctx.metrics.get("loss")
    epoch = column(ctx.metrics, "epoch")
    if (loss is None and raw is not None and len(raw)
            and np.asarray(raw).dtype.kind == "f"):
        evidence.append(Evidence("training loss per epoch", "NaN/inf in "
                                 "every epoch", "any NaN/inf"))
    elif loss is not None:
        fin = np.flatnonzero(np.isfinite(loss))
        at = (lambda i: int(epoch[i]) if epoch is not None
              and len(epoch) == len(loss) else i + 1)
        if not np.isfinite(loss[-1]):
            evidence.append(Evidence("training loss", str(loss[-1]),
                                     "any NaN/inf", epoch=at(fin[-1] + 1)))
        else:
            first, last = loss[fin[0]], loss[fin[-1]]
            if last > DIVERGE_LOSS or last > DIVERGE_GROWTH * abs(first) > 0:
                evidence.append(Evidence(
                    f"training loss grew from {_fmt(first)} to", float(last),
                    f"> {DIVERGE_GROWTH:g}x its start or > {DIVERGE_LOSS:g}",
                    epoch=at(fin[-1])))
    for section, label in (("test", "test"),
                           ("train_inference_mode",
                            "inference-mode training")):
        for k, v in ((ctx.test or {}).get(section) or {}).items():
            try:
                v = float(v)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(v):
                evidence.append(Evidence(f"{label} {k} after training",
                                         str(v), "any NaN/inf"))
    for kind in ("weights", "gradients", "activations", "probe_gradients"):
        records = ctx.records.get(kind)
        if records is None:
            continue
        for e in records.epochs:
            rec = records[e]
            counts = rec.get("nonfinite")
            if counts is None or not np.any(counts):
                continue
            bad = np.flatnonzero(counts)
            evidence.append(Evidence(
                f"{kind}: {len(bad)} tensor(s) with NaN/inf entries "
                f"(the histograms show the finite ones)",
                int(counts[bad[0]]), "any NaN/inf",
                layer=str(rec["names"][bad[0]]), epoch=int(e)))
            break
    table = ctx.tables.get("grad_norms") or {}
    cols = [c for c in table if c not in ("step", "epoch")]
    if cols and len(table.get("step", [])):
        values = np.array([np.asarray(table[c], dtype=np.float64)
                           for c in cols])
        if np.any(np.isinf(values)):
            col, row = np.argwhere(np.isinf(values))[0]
            evidence.append(Evidence("gradient norm", "inf", "any NaN/inf",
                                     layer=cols[col],
                                     step=int(table["step"][row])))
    if not evidence:
        return []
    return [Finding(
        "diverged", "error",
        "diverged: the numbers became non-finite (NaN/inf), the learning "
        "rate is too high; no fit judgement holds for this run"
        if any("NaN" in e.threshold for e in evidence) else
        "diverged: the training loss exploded, the learning rate is too "
        "high; no fit judgement holds for this run",
        "lower optimizer.learning_rate (try 10x lower, or kerasft lr-find) "
        "or set optimizer.clipnorm; if the input was non-finite, fix the data",
        tuple(evidence))]


def _ratio_rows(ctx: _Context):
    """Per phase: (phase, rows, per-row median ratio over the kernels meant
    to train, counting frozen-by-mistake zeros as 0, the table)."""
    from kerasft.render.gradients import kernel_columns

    table = ctx.tables.get("update_ratios") or {}
    columns = kernel_columns(table)
    epochs = column(table, "epoch")
    if not columns or epochs is None:
        return []
    values = np.array([np.asarray(table[c], dtype=np.float64)
                       for c in columns])
    out = []
    phases = ctx.phases or [{"name": "run", "first_epoch": 1,
                             "epochs": 10 ** 9, "stages": [1, 2, 3, 4, 5],
                             "batchnorm": "train"}]
    for phase in phases:
        first = phase.get("first_epoch", 1)
        rows = np.flatnonzero((epochs >= first)
                              & (epochs < first + phase.get("epochs", 0)))
        if not rows.size:
            continue
        if ctx.phases and ctx.layers:
            meant = [i for i, c in enumerate(columns)
                     if ctx.meant_to_train(c, phase)]
        else:  # intent unknown: frozen variables read 0, leave them out
            meant = [i for i in range(len(columns))
                     if np.any(values[i, rows] > 0)]
        if not meant:
            continue
        sub = values[np.ix_(meant, rows)]
        med = np.array([np.median(col[np.isfinite(col)])
                        if np.isfinite(col).any() else np.nan
                        for col in sub.T])
        out.append((phase, rows, med, [columns[i] for i in meant], sub))
    return out


def _phase_loss_drop(ctx: _Context, phase: dict) -> float | None:
    """Relative drop of the training loss over a phase (per-epoch loss if
    the phase has two epochs or more, else its per-step running means)."""
    first = phase.get("first_epoch", 1)
    last = first + phase.get("epochs", 0) - 1
    for table in (ctx.metrics, ctx.tables.get("scalars") or {}):
        loss, epoch = column(table, "loss"), column(table, "epoch")
        if loss is None or epoch is None or len(epoch) != len(loss):
            continue
        sel = np.flatnonzero((epoch >= first) & (epoch <= last)
                             & np.isfinite(loss))
        if sel.size >= 2:
            a, b = loss[sel[0]], loss[sel[-1]]
            return float((a - b) / max(abs(a), 1e-12))
    return None


def _rule_learning_rate(ctx: _Context) -> list[Finding]:
    """Update ratios far outside the band, loss spikes, no movement."""
    out: list[Finding] = []
    high: list[Evidence] = []
    low: list[Evidence] = []
    table = ctx.tables.get("update_ratios") or {}
    steps = column(table, "step")
    for phase, rows, med, names, sub in _ratio_rows(ctx):
        name = phase.get("name", "run")
        fin = med[np.isfinite(med)]
        if not fin.size:
            continue
        value = float(np.median(fin))
        if value > RATIO_HIGH_ALARM:
            worst = np.unravel_index(np.nanargmax(sub), sub.shape)
            high.append(Evidence(
                f"median update ratio ||dW||/||W|| per step in phase {name}",
                value, f"> {RATIO_HIGH_ALARM:.0e}, healthy band "
                f"{RATIO_LOW:.0e}-{RATIO_HIGH:.0e}",
                layer=names[worst[0]], step=None if steps is None
                else int(steps[rows[worst[1]]])))
        elif value < RATIO_LOW_ALARM:
            drop = _phase_loss_drop(ctx, phase)
            flat = drop is None or drop < FLAT_LOSS_DROP
            if flat or value < RATIO_NO_CHANGE:
                low.append(Evidence(
                    f"median update ratio per step in phase {name} over "
                    f"{len(names)} kernel(s) meant to train", value,
                    f"< {RATIO_LOW_ALARM:.0e}, healthy band "
                    f"{RATIO_LOW:.0e}-{RATIO_HIGH:.0e}"))
                low.append(Evidence(
                    f"training loss drop over phase {name}",
                    "not measured" if drop is None else f"{100 * drop:.1f}%",
                    f"< {100 * FLAT_LOSS_DROP:.0f}% is flat"
                    if value >= RATIO_NO_CHANGE else
                    f"ratio < {RATIO_NO_CHANGE:.0e}: float32 weights hardly "
                    "change"))
    # Loss spikes: the per-step training loss (a running mean within each
    # epoch) climbing well above where the untrained model started.
    scalars = ctx.tables.get("scalars") or {}
    loss = column(scalars, "loss")
    if loss is not None:
        fin = np.flatnonzero(np.isfinite(loss))
        if fin.size >= 2 and loss[fin[0]] > 0:
            start = loss[fin[0]]
            over = fin[loss[fin] > SPIKE_FACTOR * start]
            if over.size:
                i = over[np.argmax(loss[over])]
                high.append(Evidence(
                    f"training loss spiked above its start {_fmt(start)}",
                    float(loss[i]), f"> {SPIKE_FACTOR:g}x the start",
                    epoch=int(scalars["epoch"][i]) if "epoch" in scalars
                    else None, step=int(scalars["step"][i])
                    if "step" in scalars else None))
    if high:
        out.append(Finding(
            "lr_too_high", "warning",
            "learning rate too high: " + "; ".join(
                e.what + " " + (_fmt(e.value) if isinstance(e.value, float)
                                else str(e.value)) for e in high),
            "lower optimizer.learning_rate about 10x (or run kerasft "
            "lr-find), or set optimizer.clipnorm", tuple(high)))
    elif low:
        out.append(Finding(
            "lr_too_low", "warning",
            f"learning rate too low: {low[0].what} {_fmt(low[0].value)} and "
            f"the loss does not fall ({low[1].value})",
            "raise optimizer.learning_rate about 10x (or run kerasft "
            "lr-find)", tuple(low)))
    return out


def _epochs_of_final_phase(ctx: _Context) -> np.ndarray:
    """Row indices of ``metrics.csv`` that belong to the final phase."""
    n = len(ctx.metrics.get("epoch", []))
    names = ctx.metrics.get("phase")
    if names is not None and len(names) == n and n:
        names = [str(p) for p in names]
        last = names[-1]
        start = n
        while start > 0 and names[start - 1] == last:
            start -= 1
        return np.arange(start, n)
    if ctx.phases and n:
        epoch = column(ctx.metrics, "epoch")
        first = ctx.phases[-1].get("first_epoch", 1)
        if epoch is not None:
            return np.flatnonzero(epoch >= first)
    return np.arange(n)


def _rule_fit(ctx: _Context) -> list[Finding]:
    """Over-/under-fitting on the final phase's epochs."""
    rows = _epochs_of_final_phase(ctx)
    metrics = {k: np.asarray(v)[rows] for k, v in ctx.metrics.items()
               if len(v) == len(ctx.metrics.get("epoch", []))}
    phase = (str(metrics["phase"][-1]) if "phase" in metrics and len(rows)
             else (ctx.phases[-1].get("name") if ctx.phases else "run"))
    loss = column(metrics, "loss")
    val_loss = column(metrics, "val_loss")
    if loss is None and val_loss is None:
        return []
    n = len(rows)
    out: list[Finding] = []
    acc = column(metrics, "accuracy")
    val_acc = column(metrics, "val_accuracy")
    epoch = column(metrics, "epoch")
    if epoch is None or len(epoch) != n:
        epoch = np.arange(1, n + 1, dtype=np.float64)
    sizes = (getattr(ctx.run, "data", None) or {}).get("sizes", {})

    def last_finite(a):
        if a is None:
            return None
        idx = np.flatnonzero(np.isfinite(a))
        return int(idx[-1]) if idx.size else None

    # Accuracy gaps between splits, where both splits are large enough.
    gap: list[Evidence] = []
    la, lv = last_finite(acc), last_finite(val_acc)
    if la is not None and lv is not None:
        small = min(sizes.get("train", 0), sizes.get("validation", 0))
        if small < MIN_EVAL_IMAGES:
            ctx.too_few(FIT_IDS, Evidence(
                "train/validation accuracy gap: validation images", small,
                f"need {MIN_EVAL_IMAGES}"))
        elif acc[la] - val_acc[lv] > GAP_POINTS:
            gap.append(Evidence(
                f"training accuracy {pct(acc[la])} minus validation "
                f"accuracy {pct(val_acc[lv])}", float(acc[la] - val_acc[lv]),
                f"> {GAP_POINTS:.2f}", epoch=int(epoch[la])))
    eval_acc = nested_value(ctx.test, "train_inference_mode", "accuracy")
    test_acc = nested_value(ctx.test, "test", "accuracy")
    if eval_acc is not None and test_acc is not None:
        small = min(int(ctx.test.get("test_images") or 0),
                    int(ctx.test.get("train_inference_mode_images") or 0))
        if small < MIN_EVAL_IMAGES:
            ctx.too_few(FIT_IDS, Evidence(
                "train/test accuracy gap: test images", small,
                f"need {MIN_EVAL_IMAGES}"))
        elif eval_acc - test_acc > GAP_POINTS:
            gap.append(Evidence(
                f"inference-mode accuracy on training images "
                f"{pct(eval_acc)} minus test accuracy {pct(test_acc)}",
                float(eval_acc - test_acc), f"> {GAP_POINTS:.2f}"))

    if n < MIN_FIT_EPOCHS:
        ctx.too_few(FIT_IDS, Evidence(
            f"over-/under-fitting: epochs in the final phase {phase}", n,
            f"need {MIN_FIT_EPOCHS}"))
        if gap:
            out.append(_overfitting(gap))
        return out

    rising: list[Evidence] = []
    if val_loss is not None and np.sum(np.isfinite(val_loss)) >= 2:
        best = int(np.nanargmin(val_loss))
        last = last_finite(val_loss)
        k = last - best
        rise = (val_loss[last] - val_loss[best]) / max(abs(val_loss[best]),
                                                       1e-12)
        train_fell = (loss is not None and np.isfinite(loss[last])
                      and np.isfinite(loss[best]) and loss[last] < loss[best])
        span = Evidence(
            f"validation loss rose for {k} epoch(s) from "
            f"{_fmt(val_loss[best])} (best, epoch {epoch[best]:g}) to",
            float(val_loss[last]),
            f"rise {100 * rise:.0f}% > {100 * RISE_TOLERANCE:.0f}%",
            epoch=int(epoch[last]))
        if k >= 1 and rise > RISE_TOLERANCE:
            if not train_fell:
                out.append(Finding(
                    "unstable", "warning",
                    f"validation loss rose for {k} epoch(s) while the "
                    "training loss did not fall: unstable training",
                    "lower optimizer.learning_rate", (span,)))
            elif k >= 2 or rise > RISE_CONFIRMED:
                rising.append(span)
            else:
                out.append(Finding(
                    "possible_overfitting", "info",
                    "possible start of over-fitting: validation loss rose in "
                    "the last epoch while training loss fell",
                    "watch whether it keeps rising", (span,)))
    if rising or gap:
        out.append(_overfitting(rising + gap))
        return out

    if loss is not None:
        fin = np.flatnonzero(np.isfinite(loss))
        if fin.size >= 2:
            a, b = loss[fin[-2]], loss[fin[-1]]
            drop = (a - b) / max(abs(a), 1e-12)
            trend = Evidence(f"training loss change in the last epoch of "
                             f"phase {phase}", f"{-100 * drop:+.0f}%",
                             f"falling steeply: < -{100 * STEEP_DROP:.0f}%",
                             epoch=int(epoch[fin[-1]]))
            steep = drop > STEEP_DROP
            if la is not None and acc[la] < UNDERFIT_ACCURACY:
                low = Evidence("training accuracy", float(acc[la]),
                               f"< {UNDERFIT_ACCURACY:.2f}",
                               epoch=int(epoch[la]))
                if steep:
                    out.append(Finding(
                        "underfitting", "warning",
                        f"under-fitting: training accuracy only "
                        f"{pct(acc[la])} and the training loss still falls "
                        "steeply at the end", "train longer", (low, trend)))
                else:
                    out.append(Finding(
                        "underfitting", "warning",
                        f"under-fitting: training accuracy only "
                        f"{pct(acc[la])} and the training loss has levelled "
                        "off", "unfreeze more stages (plan.unfreeze), raise "
                        "the learning rate, or use a larger model",
                        (low, trend)))
            elif steep:
                out.append(Finding(
                    "still_improving", "info",
                    "training loss still falling steeply at the end",
                    "more epochs would likely help", (trend,)))
    return out


def _overfitting(evidence: list[Evidence]) -> Finding:
    return Finding(
        "overfitting", "warning",
        "over-fitting: the model fits the training images much better than "
        "new ones (" + "; ".join(e.what for e in evidence[:2]) + ")",
        "stop earlier (the best validation epoch), add augmentation or "
        "regularisation (optimizer.weight_decay), or get more data",
        tuple(evidence))


def _rule_bn_gap(ctx: _Context) -> list[Finding]:
    """Training-mode accuracy well above inference-mode accuracy."""
    train_mode = nested_value(ctx.test, "last_epoch", "accuracy")
    inference = nested_value(ctx.test, "train_inference_mode", "accuracy")
    if train_mode is None or inference is None:
        return []
    images = int(ctx.test.get("train_inference_mode_images") or 0)
    if images < MIN_EVAL_IMAGES:
        ctx.too_few(frozenset({"bn_gap"}), Evidence(
            "BatchNorm train/inference gap: training images evaluated",
            images, f"need {MIN_EVAL_IMAGES}"))
        return []
    if train_mode - inference <= BN_GAP_POINTS:
        return []
    return [Finding(
        "bn_gap", "warning",
        f"BatchNorm train/inference gap: the training images score "
        f"{pct(train_mode)} in training mode but {pct(inference)} in "
        "inference mode; the BatchNorm moving statistics lag the trained "
        "weights (few steps since unfreezing, small batches or a high "
        "bn_momentum)",
        "lower model.bn_momentum, train longer, or keep BatchNorm frozen "
        "(plan.batchnorm: inference)",
        (Evidence("training-mode minus inference-mode accuracy",
                  float(train_mode - inference), f"> {BN_GAP_POINTS:.2f}"),))]


def _moved(rec_a: dict, rec_b: dict) -> dict[str, bool]:
    """Per variable in both weight records: did its value change between
    them? Exact: a frozen tensor's statistics and drift are recomputed from
    identical values, so they come out identical."""
    ia = {str(n): i for i, n in enumerate(rec_a["names"])}
    out = {}
    for j, n in enumerate(rec_b["names"].astype(str)):
        i = ia.get(n)
        if i is None:
            continue
        a = np.concatenate([rec_a["stats"][i], [rec_a["rel_change"][i]]])
        b = np.concatenate([rec_b["stats"][j], [rec_b["rel_change"][j]]])
        same = np.array_equal(a, b, equal_nan=True)
        out[n] = not same
    return out


def _dead_variables(ctx: _Context) -> dict[str, Evidence]:
    """Trainable kernels whose weights and last gradient are exactly zero."""
    weights, grads = ctx.records.get("weights"), ctx.records.get("gradients")
    if weights is None or grads is None or not grads.epochs \
            or not weights.epochs:
        return {}
    l2 = STAT_NAMES.index("l2")
    epoch = grads.epochs[-1]
    g = grads[epoch]
    w = weights[max(e for e in weights.epochs if e <= epoch)] \
        if any(e <= epoch for e in weights.epochs) else None
    if w is None:
        return {}
    wl2 = {str(n): float(v) for n, v in zip(w["names"], w["stats"][:, l2])}
    out = {}
    for n, v in zip(g["names"].astype(str), g["stats"][:, l2]):
        if n.endswith("/kernel") and v == 0 and wl2.get(n) == 0:
            out[n] = Evidence("weight and gradient L2 norm", 0.0,
                              "exactly 0", layer=n, epoch=int(epoch))
    return out


def _rule_dead(ctx: _Context) -> tuple[list[Finding], set[str]]:
    """Blocks whose channels went dead; layers with zero weights and grads."""
    evidence = list(_dead_variables(ctx).values())
    acts = ctx.records.get("activations")
    if acts is not None and acts.epochs:
        from kerasft.render.activations import dead_fractions

        names, epochs, table = dead_fractions(ctx.run)
        if names and np.isfinite(table[-1]).any():
            last, first = table[-1], table[0]
            for i in np.flatnonzero(np.nan_to_num(last) >= DEAD_SHARE):
                # Dead from the start is the architecture's or the data's
                # doing; dead by the end is what training did.
                if len(epochs) > 1 and not last[i] > first[i]:
                    continue
                evidence.append(Evidence(
                    f"share of channels zero on every probe image (epoch "
                    f"{epochs[0]}: {pct(first[i])})", float(last[i]),
                    f">= {DEAD_SHARE:.2f}", layer=names[i],
                    epoch=int(epochs[-1])))
    if not evidence:
        return [], set()
    layers = [e.layer for e in evidence]
    return [Finding(
        "dead_layer", "warning",
        f"dead layer(s): {_names(layers)} output or receive nothing "
        "(zero activations, or weights and gradients exactly zero)",
        "check the layer's initialisation or a hand-set weight; dying ReLUs "
        "after a large step mean a too-high learning rate",
        tuple(evidence))], {str(l).split("/")[0] for l in layers}


def _phase_records(epochs: list[int], phase: dict) -> tuple[list, list]:
    """The recorded epochs up to a phase's start, and those inside it."""
    first = phase.get("first_epoch", 1)
    end = first + phase.get("epochs", 0) - 1
    return ([e for e in epochs if e <= first - 1],
            [e for e in epochs if first <= e <= end])


def _rule_movement(ctx: _Context, dead: set[str]) -> tuple[list[Finding],
                                                            bool]:
    """Per phase: frozen layers that moved, layers meant to train that did
    not. Returns the findings and whether no layer meant to train moved in
    some phase (the learning rate's doing)."""
    kind = ctx.records.get("weights")
    if kind is None or not ctx.phases or not ctx.layers:
        return [], False
    epochs = kind.epochs
    frozen_moved: list[Evidence] = []
    never: list[Evidence] = []
    bn_moved: list[Evidence] = []
    nothing_moved = False
    for phase in ctx.phases:
        before, inside = _phase_records(epochs, phase)
        if not before or not inside:
            continue
        moved = _moved(kind[before[-1]], kind[inside[-1]])
        name = phase.get("name", "?")
        meant = {n: ctx.meant_to_train(n, phase) for n in moved}
        trained = [n for n, m in meant.items() if m]
        if trained and not any(moved[n] for n in trained):
            nothing_moved = True
            continue
        for n, m in meant.items():
            layer = n.split("/")[0]
            if m is False and moved[n]:
                target = bn_moved if ctx.is_batchnorm(n) else frozen_moved
                target.append(Evidence(
                    f"value changed during phase {name} while its stage is "
                    "frozen", "moved", "any change", layer=n,
                    epoch=int(inside[-1])))
            elif m and not moved[n] and layer not in dead \
                    and n.endswith("/kernel"):
                never.append(Evidence(
                    f"value unchanged over phase {name}", "unchanged",
                    "must change", layer=n, epoch=int(inside[-1])))
    out = []
    if frozen_moved:
        out.append(Finding(
            "frozen_moved", "warning",
            f"frozen layers moved: {_names([e.layer for e in frozen_moved])}"
            " changed although their stage is frozen in that phase",
            "check layer.trainable after the plan is applied (a custom model "
            "or callback re-enabled them)", tuple(frozen_moved)))
    if never:
        out.append(Finding(
            "never_moved", "warning",
            f"layers meant to train never moved: "
            f"{_names([e.layer for e in never])}",
            "check that they receive a gradient (see the gradient figure) "
            "and are not cut off by a zeroed or dead layer", tuple(never)))
    ctx.bn_weight_moved = bn_moved
    return out, nothing_moved


def _rule_bn_frozen(ctx: _Context) -> list[Finding]:
    """BatchNorm moving statistics (or gamma/beta) moving in a phase where
    that layer is meant to be frozen (inference mode)."""
    kind = ctx.records.get("batchnorm")
    evidence: list[Evidence] = []
    if kind is not None and ctx.phases and ctx.layers:
        epochs = kind.epochs
        for phase in ctx.phases:
            before, inside = _phase_records(epochs, phase)
            if not before or not inside:
                continue
            a, b = kind[before[-1]], kind[inside[-1]]
            ia = {str(n): i for i, n in enumerate(a["names"])}
            for j, n in enumerate(b["names"].astype(str)):
                i = ia.get(n)
                if i is None or ctx.meant_to_train(f"{n}/gamma", phase) \
                        is not False:
                    continue
                keys = [k for k in ("mean_drift", "var_drift",
                                    "moving_mean_avg", "moving_var_avg")
                        if k in a and k in b]
                va = np.array([a[k][i] for k in keys], dtype=np.float64)
                vb = np.array([b[k][j] for k in keys], dtype=np.float64)
                if not np.array_equal(va, vb, equal_nan=True):
                    change = float(np.nanmax(np.abs(vb - va))) \
                        if np.isfinite(vb - va).any() else float("nan")
                    evidence.append(Evidence(
                        f"moving statistics changed during phase "
                        f"{phase.get('name', '?')} (largest change of drift "
                        "or channel mean)", change, "any change (frozen)",
                        layer=n, epoch=int(inside[-1])))
    covered = {e.layer for e in evidence}
    for e in getattr(ctx, "bn_weight_moved", []):
        if e.layer.split("/")[0] not in covered:
            evidence.append(e)
    if not evidence:
        return []
    return [Finding(
        "bn_frozen_moving", "warning",
        f"BatchNorm statistics moved in a frozen stage: "
        f"{_names(sorted({str(e.layer).split('/')[0] for e in evidence}))} "
        "kept training (training mode) where the plan freezes them",
        "set those BatchNormalization layers' trainable to False (Keras 3 "
        "then runs them in inference mode), or plan.batchnorm: inference",
        tuple(evidence))]


def _rule_gradients_depth(ctx: _Context) -> list[Finding]:
    """Gradient norms across depth in the final phase: input-side kernels
    far smaller (vanishing) or far larger (exploding) than output-side."""
    from kerasft.render.gradients import kernel_columns

    table = ctx.tables.get("grad_norms") or {}
    kernels = kernel_columns(table)
    epochs = column(table, "epoch")
    if not kernels or epochs is None:
        return []
    rows = np.arange(len(epochs))
    if ctx.phases:
        rows = np.flatnonzero(epochs >= ctx.phases[-1].get("first_epoch", 1))
    if not rows.size:
        return []
    values = np.array([np.asarray(table[c], dtype=np.float64)[rows]
                       for c in kernels])
    values = np.where(np.isfinite(values) & (values > 0), values, np.nan)
    live = [i for i in range(len(kernels)) if np.isfinite(values[i]).any()]
    if len(live) < MIN_DEPTH_KERNELS:
        return []
    typical = np.array([np.nanmedian(values[i]) for i in live])
    third = len(live) // 3
    inp, outp = float(np.median(typical[:third])), \
        float(np.median(typical[-third:]))
    step = int(np.asarray(table["step"])[rows[-1]])
    ev = Evidence(
        f"median gradient norm of the input-side third of the trainable "
        f"kernels ({kernels[live[0]]}...) over the output-side third's "
        f"{outp:.1e}", inp / outp, f"outside 1/{DEPTH_FACTOR:g}..."
        f"{DEPTH_FACTOR:g}", step=step)
    if inp * DEPTH_FACTOR < outp:
        return [Finding(
            "vanishing_gradients", "warning",
            f"vanishing gradients: input-side kernels get a median gradient "
            f"norm of {inp:.1e}, the output side {outp:.1e}",
            "keep BatchNorm in training mode where layers train, check for "
            "saturating activations, or train the input-side stages with a "
            "higher rate", (ev,))]
    if inp > DEPTH_FACTOR * outp:
        return [Finding(
            "exploding_gradients", "warning",
            f"exploding gradients: input-side kernels get a median gradient "
            f"norm of {inp:.1e}, the output side {outp:.1e}",
            "set optimizer.clipnorm, lower the learning rate", (ev,))]
    return []


def recorded_interval(run) -> int | str | None:
    """The step interval the step tables were recorded at: the resolved
    ``record.every_steps`` (``record/recording.json``), else the config's."""
    path = getattr(run, "path", None)
    if path is not None and (Path(path) / "record/recording.json").exists():
        import json

        with open(Path(path) / "record/recording.json",
                  encoding="utf-8") as f:
            return json.load(f).get("every_steps")
    return ((getattr(run, "config", None) or {}).get("record")
            or {}).get("every_steps")


# What a step table's too-few-points evidence says: recording more often
# (record.every_steps) gives such a check its points.
_STEP_ROWS = "rows recorded (record.every_steps"


def _rule_points(ctx: _Context) -> None:
    """Step tables with too few rows to show a trend (the figures'; the
    learning-rate rules judge the median of whatever rows there are)."""
    every = recorded_interval(ctx.run)
    for name, label in (("update_ratios", "update-ratio trend"),
                        ("grad_norms", "gradient-norm trend")):
        recorded = name in ctx.tables or (
            (ctx.config.get("record") or {}).get(name if name !=
                                                 "grad_norms" else
                                                 "gradients") and
            (ctx.config.get("record") or {}).get("enabled", True)
            and ctx.records)
        if not recorded:
            continue
        n = len((ctx.tables.get(name) or {}).get("step", []))
        if n < MIN_STEP_POINTS:
            ctx.too_few(frozenset(), Evidence(
                f"{label}: {_STEP_ROWS} {every})", n,
                f"need {MIN_STEP_POINTS}"))


def _rule_info(ctx: _Context) -> list[Finding]:
    """Notes worth reading that are not problems by themselves."""
    out: list[Finding] = []
    kind = ctx.records.get("batchnorm")
    if kind is not None and kind.epochs:
        from kerasft.render.batchnorm import drift_matrices

        data = drift_matrices(kind)
        if data["names"] and data["epochs"]:
            placeholder = np.any(data["mean_undefined"], axis=1)
            mean = np.nan_to_num(data["mean"][:, -1], nan=0.0)
            var = np.nan_to_num(data["var"][:, -1], nan=0.0)
            worst = np.where(placeholder, 0.0, np.fmax(mean, var))
            large = np.flatnonzero(worst > LARGE_DRIFT)
            if large.size:
                top = int(large[np.argmax(worst[large])])
                out.append(Finding(
                    "bn_drift", "info",
                    f"{large.size} of {len(data['names'])} BatchNorm layers "
                    "moved their moving statistics far from the start",
                    "if validation lags training, keep BatchNorm frozen "
                    "(plan.batchnorm: inference)",
                    (Evidence("relative drift of the moving statistics",
                              float(worst[top]), f"> {LARGE_DRIFT:g}",
                              layer=data["names"][top],
                              epoch=int(data["epochs"][-1])),)))
    acts = ctx.records.get("activations")
    if acts is not None and acts.epochs:
        from kerasft.render.activations import histogram_series

        names = [str(n) for n in acts[acts.epochs[0]]["names"]]
        series = histogram_series(ctx.run, names)
        outside = [(n, s["outside_share"][-1], s["epochs"][-1])
                   for n, s in series.items()
                   if np.all(s["finite"]) and s["outside_share"][-1]
                   > OUTSIDE_SHARE]
        if outside:
            n, share, e = max(outside, key=lambda t: t[1])
            out.append(Finding(
                "activations_growing", "info",
                f"activations outside their epoch-0 range in "
                f"{_names([o[0] for o in outside])}",
                "expected while training from scratch; with pretrained "
                "weights it means the features drift: lower the rate",
                (Evidence("share of probe activations outside the epoch-0 "
                          "range", float(share), f"> {OUTSIDE_SHARE:g}",
                          layer=n, epoch=int(e)),)))
    emb = ctx.records.get("embeddings")
    if emb is not None and len(emb.epochs) > 1:
        from kerasft.render.base import RenderOptions
        from kerasft.render.embeddings import embedding_panels

        panels = embedding_panels(ctx.run, RenderOptions()).get("panels", [])
        if len(panels) > 1:
            a, b = panels[0], panels[-1]
            ka, kb = a["knn_full"], b["knn_full"]
            if np.isfinite(ka) and np.isfinite(kb) and kb < ka - 0.05:
                out.append(Finding(
                    "features_worse", "info",
                    f"probe-set features separate the classes worse at "
                    f"epoch {b['epoch']} than at epoch {a['epoch']}",
                    "with pretrained weights: lower the backbone's rate or "
                    "unfreeze less",
                    (Evidence("5-NN accuracy of the probe features",
                              float(kb), f"< {ka:.2f} - 0.05 (epoch "
                              f"{a['epoch']})", epoch=int(b["epoch"])),)))
    out += _rule_predictions(ctx)
    return out


def confusion_findings(cm: np.ndarray, class_names: list[str]) -> list[Finding]:
    """Findings from a test confusion matrix: collapse, dead classes, the
    most frequent confusion.

    Args:
        cm: counts ``[true, predicted]`` (K, K).
        class_names: K names.
    """
    out: list[Finding] = []
    k = cm.shape[0]
    total = int(cm.sum())
    if total == 0 or k < 2:
        return out
    predicted = cm.sum(axis=0)
    top = int(np.argmax(predicted))
    share = predicted[top] / total
    # One class taking far more than its share of predictions (and at least
    # twice its true count) is a collapse, not a preference.
    threshold = max(min(0.5, 10.0 / k), 2.0 / k)
    if k > 2 and share > threshold and predicted[top] >= 2 * cm[top].sum():
        out.append(Finding(
            "predictions_collapse", "warning",
            f"predictions collapse onto class {class_names[top]!r}: "
            f"{100 * share:.0f}% of the test images are predicted as it",
            "train longer or check the class balance and the labels",
            (Evidence("share of test predictions", float(share),
                      f"> {threshold:.2f}", layer=None),)))
    present = cm.sum(axis=1) > 0
    dead = [class_names[i] for i in range(k) if present[i] and cm[i, i] == 0]
    if dead:
        more = f" and {len(dead) - 5} more" if len(dead) > 5 else ""
        out.append(Finding(
            "classes_never_recognised", "warning",
            f"{len(dead)} of {int(present.sum())} classes never recognised "
            f"on the test split: {', '.join(map(repr, dead[:5]))}{more}",
            "train longer; check these classes' images and labels",
            (Evidence("classes with no correct test prediction", len(dead),
                      "any"),)))
    off = cm.copy()
    np.fill_diagonal(off, 0)
    if off.max() > 0:
        t, p = np.unravel_index(int(np.argmax(off)), off.shape)
        out.append(Finding(
            "top_confusion", "info",
            f"most frequent confusion: true {class_names[t]!r} predicted as "
            f"{class_names[p]!r} ({off[t, p]} of {cm[t].sum()} images)",
            "look at these images in the high-loss grid",
            (Evidence("images confused", int(off[t, p])),)))
    return out


def _rule_predictions(ctx: _Context) -> list[Finding]:
    path = getattr(ctx.run, "path", None)
    if path is None or not (Path(path) / "test_predictions.npz").exists():
        return []
    with np.load(Path(path) / "test_predictions.npz",
                 allow_pickle=False) as f:
        labels, probs = f["labels"], f["probs"]
        loss = f["loss"] if "loss" in f.files else None
    if len(labels) < MIN_EVAL_IMAGES:
        ctx.too_few(PREDICTION_IDS, Evidence(
            "test-prediction rules: test images", len(labels),
            f"need {MIN_EVAL_IMAGES}"))
        return []
    names = [str(c) for c in (getattr(ctx.run, "data", None) or {}).get(
        "class_names", [])] or [str(i) for i in range(probs.shape[1])]
    k = probs.shape[1]
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (labels, probs.argmax(1)), 1)
    out = confusion_findings(cm, names)
    if loss is not None:
        worst = np.argsort(-loss)[:24]
        confident = int(np.sum((probs[worst].max(1) > 0.9)
                               & (probs[worst].argmax(1) != labels[worst])))
        if confident:
            out.append(Finding(
                "confident_mistakes", "info",
                f"{confident} of the {len(worst)} highest-loss test images "
                "are confidently wrong (p > 0.9)", "check their labels",
                (Evidence("confidently wrong images", confident,
                          "p > 0.9"),)))
    return out


# ------------------------------------------------------------- entry point


def diagnose(run) -> list[Finding]:
    """Every finding for a run, most serious first, contradictions removed.

    Args:
        run: a loaded run (`kerasft.load_run`).

    Returns:
        `Finding`s: errors, then warnings, then infos (``too_few_points``
        last). No error or warning means no rule found a problem.

    Example:

    ```python
    for f in diagnose(kerasft.load_run("runs/<run>")):
        print(f.severity, f.id, f.text())
    ```
    """
    cached = getattr(run, "_kerasft_findings", None)
    if cached is not None:
        return list(cached)
    found: list[Finding] = []

    def safe(rule, *args, default=()):
        # A damaged file costs its rule, visibly, not the whole diagnosis.
        try:
            return rule(*args)
        except Exception as e:
            found.append(Finding(
                "rule_failed", "warning",
                f"{rule.__name__.removeprefix('_rule_')}: "
                f"{type(e).__name__}: {e}",
                "the run directory holds a damaged file; rerun or inspect it"))
            return default

    ctx = safe(_Context, run, default=None)
    if ctx is None:
        return found
    found += safe(_rule_diverged, ctx)
    found += safe(_rule_learning_rate, ctx)
    dead_findings, dead = safe(_rule_dead, ctx, default=([], set()))
    movement, nothing_moved = safe(_rule_movement, ctx, dead,
                                   default=([], False))
    if nothing_moved and not any(f.id in ("lr_too_low", "lr_too_high")
                                 for f in found):
        found.append(Finding(
            "lr_too_low", "warning",
            "learning rate too low: no layer meant to train changed its "
            "weights in a phase",
            "raise optimizer.learning_rate (is it 0, or a schedule that "
            "ends at 0 in its first steps?)",
            (Evidence("layers meant to train that changed", 0,
                      "at least 1"),)))
    found += safe(_rule_fit, ctx)
    found += safe(_rule_bn_gap, ctx)
    found += list(dead_findings) + list(movement)
    found += safe(_rule_bn_frozen, ctx)
    found += safe(_rule_gradients_depth, ctx)
    found += safe(_rule_info, ctx)
    safe(_rule_points, ctx)
    ids = {f.id for f in found}
    silenced = set().union(*(SUPPRESSES.get(i, set()) for i in ids))
    kept, seen = [], set()
    for f in found:
        if f.id in silenced or (f.id in seen and f.id != "rule_failed"):
            continue
        seen.add(f.id)
        kept.append(f)
    # A check whose findings are all silenced (a diverged run gets no fit
    # judgement) does not ask for more points either.
    few = [e for judges, e in ctx.few if not judges or not judges <= silenced]
    if few:
        # Recording more often helps only the step tables' checks.
        steps = any(_STEP_ROWS in e.what for e in few)
        kept.append(Finding(
            "too_few_points", "info",
            f"not enough points to judge {len(few)} check(s): "
            + ", ".join(e.what.split(":")[0] for e in few),
            "train longer or on more images"
            + (", or record more often (record.every_steps)" if steps
               else ""),
            tuple(Evidence(f"{e.what}: not enough points (n={e.value}, "
                           f"{e.threshold})") for e in few)))
    kept.sort(key=lambda f: SEVERITIES.index(f.severity))
    try:
        run._kerasft_findings = tuple(kept)
    except AttributeError:  # a read-only stand-in: no cache
        pass
    return kept

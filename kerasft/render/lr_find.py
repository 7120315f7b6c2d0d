"""Which learning rate? The LR range test's curve, with its suggestion.

Figures ``lr_find-N`` (section ``lr_find``), one per phase tested by
``optimizer.learning_rate: auto``, from ``<run>/lr_find/phase-N-<name>.json``
(written by `kerasft.train.lr_find`): the smoothed loss (and the raw loss,
faintly) against the learning rate on a log axis, the suggestion marked,
the rule and the weights the test started from stated in the figure.
`lr_find_figure` draws one result and is also what ``kerasft lr-find``
saves.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from matplotlib.ticker import LogLocator, NullFormatter

from kerasft.render.base import (
    DPI,
    FigureResult,
    RenderOptions,
    log_scale,
    new_figure,
    plain_text,
)


def _floats(values) -> np.ndarray:
    return np.array([float(v) for v in values or []], dtype=np.float64)


def lr_find_figure(result: dict):
    """One range test's figure.

    Args:
        result: an `LRFindResult.to_dict()` (or its JSON file's content).

    Returns:
        A matplotlib `Figure`.
    """
    lrs = _floats(result.get("learning_rates"))
    raw = _floats(result.get("losses"))
    smooth = _floats(result.get("smoothed"))
    info = result.get("info") or {}
    suggestion = result.get("suggestion")
    fig = new_figure(8, 5)
    ax = fig.add_subplot(1, 1, 1)
    ok = np.isfinite(raw)
    ax.plot(lrs[ok], raw[ok], color="tab:blue", alpha=0.3, lw=1,
            marker=".", ms=3, label="loss per step")
    ax.plot(lrs, smooth, color="tab:blue", lw=2, label="smoothed loss")
    if len(raw) and not ok[-1]:
        ax.axvline(lrs[-1], color="tab:red", ls=":", lw=1)
        ax.text(lrs[-1], 0.02, f" non-finite loss ({raw[-1]:g})",
                transform=ax.get_xaxis_transform(), color="tab:red",
                fontsize=8, rotation=90, va="bottom", ha="right")
    if isinstance(suggestion, (int, float)) and math.isfinite(suggestion):
        y = np.interp(math.log10(suggestion), np.log10(lrs[ok]), smooth[ok])
        ax.axvline(suggestion, color="tab:green", ls="--", lw=1.5)
        ax.plot([suggestion], [y], "o", color="tab:green", ms=9,
                label=f"suggestion {suggestion:.3g}")
    finite = smooth[np.isfinite(smooth)]
    if finite.size and ok.any():
        # Show the descent twice over: a diverging tail leaves at the top
        # instead of squashing the part that matters.
        lo = min(finite.min(), raw[ok].min())
        before = finite[: int(np.argmin(finite)) + 1].max()
        top = min(raw[ok].max(), before + max(before - lo, 0.1 * abs(before)))
        pad = 0.05 * (top - lo + 1e-9)
        ax.set_ylim(lo - pad, top + pad)
    log_scale(ax, "x")
    ax.xaxis.set_major_locator(LogLocator(base=10, numticks=20))  # decades
    ax.xaxis.set_minor_formatter(NullFormatter())
    if len(lrs):
        ax.set_xlim(result.get("start_lr", lrs[0]) / 1.5,
                    max(lrs[-1], result.get("end_lr", lrs[-1])) * 1.5)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(loc="upper left", fontsize=9)
    phase = info.get("phase")
    what = (f"phase {info.get('phase_number')} ({phase}): "
            if phase else "")
    params = (info.get("params") or {}).get("trainable")
    extra = ", ".join(x for x in (
        info.get("optimizer"),
        f"{params:,} trainable parameters" if params is not None else "",
        f"BatchNorm {info['batchnorm']}" if info.get("batchnorm") else "",
        info.get("backend")) if x)
    fig.suptitle(f"LR range test — {what}{extra}", fontsize=11)
    lines = [
        f"rule: {result.get('rule', '?')}",
        f"{'suggested' if suggestion else 'result'}: {result.get('note', '')}",
        f"stopped: {result.get('stopped', '?')}; "
        f"{len(lrs)} steps in {float(result.get('seconds', 0)):.0f} s",
    ]
    if info.get("weights"):
        lines.insert(0, f"started from: {info['weights']}")
    ax.set_title("\n".join(_wrap(t, 125) for t in lines), fontsize=8,
                 loc="left")
    return fig


def _wrap(text: str, width: int = 80) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(str(text), width)) or str(text)


@plain_text()
def save_plot(result: dict, path: str | os.PathLike) -> Path:
    """Draws `lr_find_figure(result)` into the PNG file `path`."""
    from kerasft.rundir import atomic_path

    path = Path(path)
    fig = lr_find_figure(result)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    return path


def _phase_number(path: Path) -> int:
    try:
        return int(path.stem.split("-")[1])
    except (IndexError, ValueError):
        return 0


def render(run, options: RenderOptions) -> list[FigureResult]:
    """One figure per range test recorded in ``<run>/lr_find/``."""
    folder = Path(run.path) / "lr_find"
    if not folder.is_dir():
        return []
    out = []
    used = {p.get("lr_find"): p for p in run.phases or []
            if isinstance(p, dict)}
    for path in sorted(folder.glob("phase-*.json"), key=_phase_number):
        result = json.loads(path.read_text(encoding="utf-8"))
        info = result.get("info") or {}
        record = used.get(f"lr_find/{path.name}")
        chosen = (f" Chosen: {float(record['learning_rate']):.3g}, the "
                  f"learning rate phase {info.get('phase_number')} "
                  f"({info.get('phase')}) trained at."
                  if record and record.get("learning_rate") is not None
                  else "")
        out.append(FigureResult(
            key=f"lr_find-{_phase_number(path)}",
            section="lr_find",
            title=(f"LR range test, phase {info.get('phase_number')} "
                   f"({info.get('phase')})"),
            caption=(
                "Training loss while the learning rate grows exponentially "
                "(log axis; faint: each step, solid: smoothed), from "
                f"{info.get('weights', 'the weights the phase started from')};"
                " the model was put back afterwards. "
                f"{result.get('note', '')}.{chosen}"),
            figure=lr_find_figure(result),
        ))
    return out

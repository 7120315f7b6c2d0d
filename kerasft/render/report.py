"""`kerasft report`: run directory -> PNG figures + one static index.html.

Rendering reads the run store only (`kerasft.load_run`): it imports no
training code and no Keras backend. The report is built in a temporary
folder next to the final one and swapped in at the end, so an interrupted
render never leaves half a report.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kerasft.errors import RunDirError
from kerasft.record.store import load_run
from kerasft.rundir import clean_leftovers
from kerasft.render.base import DPI, FigureResult, RenderOptions, plain_text
from kerasft.render.html import build_html

# Figure modules, each with `render(run, options) -> list[FigureResult]`.
FIGURE_MODULES = (
    "curves",
    "structure",
    "lr_find",
    "gradients",
    "weights",
    "batchnorm",
    "activations",
    "embeddings",
    "predictions",
    "filters",
)


@dataclass
class Report:
    """What `render_report` made.

    Attributes:
        index: path of index.html.
        figures: the PNG files, in page order.
        warnings: diagnoses shown at the top of the page.
        seconds: time taken.
    """

    index: Path
    figures: list[Path]
    warnings: list[str]
    seconds: float


# The histogram kinds whose records count non-finite entries.
_COUNTED = ("weights", "gradients", "activations", "probe_gradients")


def nonfinite_notes(run) -> list[str]:
    """One note per record kind whose histograms counted NaN/inf entries.

    Histograms hold finite values only; the ``nonfinite`` count beside
    them is the rest, so a figure never silently drops them.

    Args:
        run: a loaded run.

    Returns:
        Plain-text notes (empty when every recorded entry was finite).
    """
    notes = []
    for kind in _COUNTED:
        records = run.records.get(kind)
        if records is None:
            continue
        for epoch in records.epochs:
            rec = records[epoch]
            counts = rec.get("nonfinite")
            if counts is None or not np.any(counts):
                continue
            bad = np.flatnonzero(counts)
            names = rec["names"]
            notes.append(
                f"{kind}: {len(bad)} tensor(s) hold non-finite (NaN/inf) "
                f"entries from epoch {epoch} on (first: {names[bad[0]]}, "
                f"{int(counts[bad[0]])} entries); the histograms show "
                "the finite entries only."
            )
            break
    return notes


@plain_text()
def render_report(
    run_dir: str | os.PathLike, options: RenderOptions | None = None
) -> Report:
    """Renders every figure of a run and writes ``<run_dir>/report/``.

    Args:
        run_dir: a kerasft run directory.
        options: what to draw. Defaults to `RenderOptions()`.

    Returns:
        A `Report`.

    Example:

    ```python
    report = render_report("runs/20261125-120000-quickstart-torch")
    print(report.index)
    ```
    """
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise RunDirError(
            "expected a kerasft run directory (with config.yaml). Received: "
            f"{str(run_dir)!r}. Run directories are under runs/."
        )
    options = options or RenderOptions()
    # what killed writers (a training, an earlier render) left behind
    clean_leftovers(run_dir)
    run = load_run(run_dir)
    final = run_dir / "report"
    tmp = run_dir / f".report.tmp-{os.getpid()}"
    tmp.mkdir()
    figures: list[FigureResult] = []
    warnings = list((run.test or {}).get("warnings", []))
    if run.status.get("note"):  # a dead run that still said "running"
        warnings.insert(0, run.status["note"])
    warnings += nonfinite_notes(run)
    try:
        for name in FIGURE_MODULES:
            try:
                module = importlib.import_module(f"kerasft.render.{name}")
                results = module.render(run, options)
            except Exception as e:  # one broken figure must not cost the rest
                warnings.append(
                    f"figure module {name!r} failed: {type(e).__name__}: {e}"
                )
                print(f"kerasft: warning: figure module {name} failed: {e!r}",
                      file=sys.stderr)
                continue
            for result in results:
                result.figure.savefig(tmp / f"{result.key}.png", dpi=DPI)
                figures.append(result)
                for note in result.notes:
                    if note not in warnings:
                        warnings.append(note)
        seconds = time.perf_counter() - t0
        page = build_html(run, figures, warnings, seconds)
        (tmp / "index.html").write_text(page, encoding="utf-8")
        if final.exists():
            old = run_dir / f".report.old-{os.getpid()}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Report(
        final / "index.html",
        [final / f"{f.key}.png" for f in figures],
        warnings,
        time.perf_counter() - t0,
    )

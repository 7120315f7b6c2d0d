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
from dataclasses import dataclass, field
from pathlib import Path

from kerasft.errors import RunDirError
from kerasft.record.store import load_run
from kerasft.rundir import clean_leftovers
from kerasft.render.base import DPI, FigureResult, RenderOptions, plain_text
from kerasft.render.diagnose import diagnose
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
    "attention",
)


@dataclass
class Report:
    """What `render_report` made.

    Attributes:
        index: path of index.html.
        figures: the PNG files, in page order.
        warnings: what went wrong while rendering (a figure module that
            failed) or with the run record (a dead run), shown on the page.
        seconds: time taken.
        findings: the diagnosis (`kerasft.render.diagnose.diagnose`),
            shown first on the page.
    """

    index: Path
    figures: list[Path]
    warnings: list[str]
    seconds: float
    findings: list = field(default_factory=list)


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
    warnings = []
    if run.status.get("note"):  # a dead run that still said "running"
        warnings.append(run.status["note"])
    try:
        findings = diagnose(run)
    except Exception as e:  # the figures must still be drawn
        findings = []
        warnings.append(f"diagnosis failed: {type(e).__name__}: {e}")
        print(f"kerasft: warning: diagnosis failed: {e!r}", file=sys.stderr)
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
        page = build_html(run, figures, warnings, seconds, findings)
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
        findings,
    )

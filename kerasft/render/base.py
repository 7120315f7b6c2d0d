"""What every figure module shares: the result type, options, helpers.

A figure module exposes ``render(run, options) -> list[FigureResult]``: a
pure function of a loaded run (`kerasft.load_run`). It never imports
training code or a Keras backend, and uses matplotlib's object API
(`matplotlib.figure.Figure`, no pyplot), so rendering is headless and
leaves no global state or open figures behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import matplotlib
import numpy as np
from matplotlib.figure import Figure

# Report sections, in the order a person diagnoses a run.
SECTIONS = (
    ("curves", "Is it learning? Loss and accuracy"),
    ("structure", "What was trained: structure and freezing"),
    ("lr_find", "Which learning rate? The LR range test"),
    ("gradients", "Are the gradients and the learning rate healthy?"),
    ("weights", "Which layers moved?"),
    ("batchnorm", "BatchNorm statistics"),
    ("activations", "Activations on the probe batch"),
    ("embeddings", "Features: embeddings of the probe set"),
    ("predictions", "Test predictions: where it fails"),
    ("filters", "Filters and feature maps"),
    ("attention", "Where the model looks: Grad-CAM and saliency"),
)

DPI = 100
# How histogram bins are chosen, for the figure notes (the rule itself lives in
# kerasft.record.store.bin_grid).
BIN_RULE_NOTE = (
    "Bins: each recorded histogram has its own 64 bins, of a power-of-two "
    "width, on edges that are multiples of that width, the finest such "
    "bins that hold all its values (none is cut off, tensors that start at "
    "0 or constant included); the epochs of a panel are shown on their "
    "common, coarsest grid, obtained by adding up adjacent bins exactly."
)


@dataclass
class RenderOptions:
    """Choices of what to draw.

    Attributes:
        all_layers: draw every layer in per-layer figures instead of a
            readable selection. Defaults to `False`.
        max_layers: size of the default selection. Defaults to `12`.
        embeddings_every_epoch: one embedding panel per recorded epoch
            instead of start vs end. Defaults to `False`.
    """

    all_layers: bool = False
    max_layers: int = 12
    embeddings_every_epoch: bool = False


@dataclass
class FigureResult:
    """One rendered figure.

    Attributes:
        key: file stem, unique in the report (``curves`` -> curves.png).
        section: one of the `SECTIONS` keys.
        title: short title shown above the figure in the report.
        caption: what to look for, in a sentence or two (plain text).
        figure: the matplotlib figure.
        notes: diagnoses computed from the numbers (plain text), shown in
            the report's summary as warnings.
    """

    key: str
    section: str
    title: str
    caption: str
    figure: Figure
    notes: list[str] = field(default_factory=list)


def plain_text():
    """A context (or decorator) in which figure text is never mathtext.

    Class names, run names and layer names reach figure text; with
    matplotlib's default, a ``$`` pair in one (a class called ``$\\cmd$``)
    is parsed as maths and crashes the drawing. kerasft draws no maths, so
    every figure is made and saved with ``text.parse_math`` off (a
    temporary rc setting: nothing global changes for the caller).

    Example:

    ```python
    with plain_text():
        fig = new_figure(4, 3)
        fig.suptitle(user_string)
        fig.savefig("a.png")
    ```
    """
    return matplotlib.rc_context({"text.parse_math": False})


def log_scale(ax, axis: str = "y") -> None:
    """Puts `ax`'s x or y axis on a log scale with plain-text tick labels.

    matplotlib's log axes label their ticks in mathtext
    (``$\\mathdefault{10^{-5}}$``); with ``text.parse_math`` off (see
    `plain_text`) that source would be printed as it is. These labels are
    plain numbers (``1e-05``, ``0.01``, ``10``), on both major and minor
    ticks, chosen as matplotlib chooses them by default.
    """
    from matplotlib import ticker

    getattr(ax, f"set_{axis}scale")("log")
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_formatter(ticker.LogFormatter())
    target.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False))


def log_colorbar(bar) -> None:
    """Plain-number tick labels on a colour bar of a `LogNorm` image.

    Its default labels are mathtext (``$\\mathdefault{10^{-2}}$``), printed
    as source under `plain_text`; these are ``0.01``, ``0.003``, as
    `log_scale` labels an axis.
    """
    from matplotlib import ticker

    bar.formatter = ticker.LogFormatter()
    bar.minorformatter = ticker.LogFormatter(labelOnlyBase=False)


def new_figure(width: float, height: float) -> Figure:
    """A figure with the report's look (no pyplot involved)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return fig


def select_layers(names, max_n: int = 12, all_layers: bool = False) -> list[int]:
    """Indices of a readable, depth-spread selection of `names`.

    Keeps the first and the last (usually the stem and the head) and picks
    evenly between them, in input-to-output order.
    """
    n = len(names)
    if all_layers or n <= max_n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, max_n).round().astype(int)))


def short_name(path: str) -> str:
    """``conv4_block2_1_conv/kernel`` -> ``conv4_b2_1_conv/kernel``."""
    return str(path).replace("_block", "_b")


def kernels_only(names) -> list[int]:
    """Indices of kernel variables (conv and dense), the ones worth a row."""
    return [i for i, n in enumerate(names) if str(n).endswith("/kernel")]


def draw_each(draws, run, options: RenderOptions) -> list[FigureResult]:
    """Calls each figure function of a module; keeps the ones that drew.

    A function returns None when its data is absent. Errors are not
    swallowed here: `render_report` reports a failing module as a warning
    on the page, where a silent gap would hide a bug.
    """
    out = []
    for draw in draws:
        result = draw(run, options)
        if result is not None:
            out.append(result)
    return out


def phase_lines(ax, phases, epochs, color: str = "tab:red") -> None:
    """Dashed vertical lines before each phase's first epoch, labelled on top,
    on an axis whose x is the epoch number (cells centred on integers)."""
    for phase in phases or []:
        first = phase.get("first_epoch")
        if first is None or first <= epochs[0] or first > epochs[-1]:
            continue
        ax.axvline(first - 0.5, color=color, lw=1.5, ls="--")
        ax.text(first - 0.45, 0.995, f"{phase.get('name', '')} ->",
                transform=ax.get_xaxis_transform(), va="top", ha="left",
                fontsize=8, color=color,
                bbox=dict(fc="white", ec="none", alpha=0.8, pad=1))

"""Test predictions: where the model fails.

Figures (section ``predictions``), from ``test_predictions.npz`` (labels,
probs, loss, top_loss_indices, top_loss_images) and the class names of
``data.json``:

- ``confusion``: the confusion matrix on the test split, rows = true
  class, columns = predicted class, coloured by the share of each true
  class (so rare classes are as visible as common ones).
- ``top_losses``: the test images with the highest loss, each with its
  true and predicted class and the predicted probability.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from kerasft.errors import RunDirError
from kerasft.render.base import FigureResult, RenderOptions, new_figure

MAX_ANNOTATED_CLASSES = 20
MAX_TICKS = 40
NAME_CHARS = 14


def truncate(name: str, n: int = NAME_CHARS, middle: bool = False) -> str:
    """Shortens a class name to `n` characters for display.

    Args:
        name: the class name.
        n: the most characters to keep, ellipsis included. Defaults to
            `NAME_CHARS`.
        middle: cut out the middle (keeping the end, where names that
            share a prefix differ) instead of the end. Defaults to `False`.

    Example: ``truncate("golden_retriever", 10)`` -> ``"golden_re…"``.
    """
    name = str(name)
    if len(name) <= n:
        return name
    if middle:
        head = (n - 1) // 2
        return name[:head] + "…" + name[len(name) - (n - 1 - head):]
    return name[: n - 1] + "…"


def display_names(names: list[str], n: int = NAME_CHARS) -> list[str]:
    """Short names that stay distinct where the full names are.

    Cuts the end; if that makes names collide (a shared prefix), cuts the
    middle; if they still collide, prefixes the class index.
    """
    for middle in (False, True):
        short = [truncate(x, n, middle) for x in names]
        if len(set(short)) == len(set(map(str, names))):
            return short
    return [f"{i}: {truncate(x, n - len(str(i)) - 2, True)}"
            for i, x in enumerate(names)]


def confusion_matrix(labels: np.ndarray, preds: np.ndarray,
                     num_classes: int) -> np.ndarray:
    """Counts (K, K): ``[true, predicted]``.

    Args:
        labels: true class indices (N,).
        preds: predicted class indices (N,).
        num_classes: K.

    Returns:
        int64 counts; labels or predictions outside ``[0, K)`` are dropped.
    """
    labels = np.asarray(labels, dtype=np.int64).ravel()
    preds = np.asarray(preds, dtype=np.int64).ravel()
    ok = (labels >= 0) & (labels < num_classes) & (preds >= 0) & (
        preds < num_classes)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels[ok], preds[ok]), 1)
    return cm


def _load(run) -> dict[str, np.ndarray]:
    path = Path(run.path) / "test_predictions.npz"
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        # Shown on the report page by `render_report`: a missing figure
        # would hide a damaged file.
        raise RunDirError(
            f"{path} cannot be read ({type(e).__name__}: {e}); the "
            "confusion matrix and top losses need it. Train the run again "
            "to rewrite it."
        ) from None


def _class_names(run, k: int) -> list[str]:
    names = (getattr(run, "data", None) or {}).get("class_names") or []
    names = [str(n) for n in names]
    if len(names) < k:
        names += [str(i) for i in range(len(names), k)]
    return names[:k] if len(names) >= k else names


def render(run, options: RenderOptions | None = None) -> list[FigureResult]:
    """The ``confusion`` and ``top_losses`` figures, or ``[]``.

    Args:
        run: a loaded run (`kerasft.record.store.load_run`).
        options: unused; accepted for the common signature.

    Returns:
        Up to two `FigureResult`s; none without ``test_predictions.npz``.
    """
    pred = _load(run)
    labels, probs = pred.get("labels"), pred.get("probs")
    if labels is None or probs is None or probs.ndim != 2 or not len(labels):
        return []
    if len(labels) != len(probs):
        return []
    k = probs.shape[1]
    names = _class_names(run, k)
    results = [_confusion(labels, probs, names)]
    top = _top_losses(pred, labels, probs, names)
    if top is not None:
        results.append(top)
    return results


def _confusion(labels, probs, names) -> FigureResult:
    k = len(names)
    preds = np.argmax(probs, axis=1)
    cm = confusion_matrix(labels, preds, k)
    total = int(cm.sum())
    acc = np.trace(cm) / max(total, 1)
    rows = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(rows > 0, cm / rows, np.nan)

    side = float(np.clip(4 + 0.35 * k, 7, 13))
    fig = new_figure(side + 1.5, side)
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1,
                   interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8,
                 label="share of the true class's test images")
    if k <= MAX_ANNOTATED_CLASSES:
        for i in range(k):
            for j in range(k):
                if cm[i, j] == 0:
                    continue
                dark = share[i, j] > 0.55
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        fontsize=10 if k <= 12 else 8,
                        color="white" if dark else "black",
                        fontweight="bold" if i == j else "normal")
    # Readable ticks: every class up to MAX_TICKS, else an even subset.
    ticks = np.arange(k) if k <= MAX_TICKS else np.unique(
        np.linspace(0, k - 1, MAX_TICKS).round().astype(int))
    short = display_names(names)
    tick_names = [short[i] for i in ticks]
    long = max((len(n) for n in tick_names), default=1) > 3
    ax.set_xticks(ticks, tick_names, rotation=45 if long else 0,
                  ha="right" if long else "center",
                  fontsize=9 if k <= MAX_TICKS // 2 else 7)
    ax.set_yticks(ticks, tick_names, fontsize=9 if k <= MAX_TICKS // 2 else 7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    chance = 1.0 / k
    ax.set_title(
        f"Confusion matrix on the test split — accuracy {100 * acc:.1f}% "
        f"of {total} images (chance {100 * chance:.0f}%)\n"
        "a strong diagonal is good; off-diagonal cells show which classes "
        "are mistaken for which",
        fontsize=10,
    )
    caption = (
        "Rows: true class; columns: predicted class (the arg-max of the "
        "predicted probabilities). Colour is the share of each true class, "
        "so every row sums to 1"
        + ("; numbers are image counts." if k <= MAX_ANNOTATED_CLASSES
           else ".")
        + " A bright column means the model over-predicts that class."
    )
    return FigureResult(
        key="confusion", section="predictions",
        title="Confusion matrix (test split)", caption=caption, figure=fig,
    )


def _top_losses(pred, labels, probs, names) -> FigureResult | None:
    idx, images = pred.get("top_loss_indices"), pred.get("top_loss_images")
    if idx is None or images is None or not len(idx):
        return None
    idx = np.asarray(idx, dtype=np.int64)
    n = min(len(idx), len(images))
    if n == 0 or np.any(idx[:n] < 0) or np.any(idx[:n] >= len(labels)):
        return None
    loss = pred.get("loss")
    # Shorter than on the confusion axes: six captions share a row.
    short = display_names(names, 12)
    cols = min(n, 6)
    rows = int(np.ceil(n / cols))
    fig = new_figure(11, 0.6 + 2.3 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for a, ax in enumerate(axes):
        if a >= n:
            ax.set_axis_off()
            continue
        i = int(idx[a])
        img = np.asarray(images[a])
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None,
                  interpolation="nearest")
        p = int(np.argmax(probs[i]))
        t = int(labels[i])
        conf = float(probs[i, p])
        true_name = short[t] if 0 <= t < len(short) else str(t)
        text = f"true: {true_name} / pred: {short[p]} (p={conf:.2f})"
        if len(text) > 30:
            text = text.replace(" / ", " /\n", 1)
        if loss is not None and i < len(loss):
            text += f"\nloss {float(loss[i]):.2f}"
        ax.set_xlabel(text, fontsize=8,
                      color="C3" if p != t else "black")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"The {n} test images with the highest loss — look for wrong "
        "labels, "
        "ambiguous images and recurring confusions (red: misclassified)",
        fontsize=11,
    )
    caption = (
        "Test images sorted by loss (highest first). Under each: the true "
        "class, the predicted class and its probability p, and the image's "
        "cross-entropy loss. Confident mistakes on clear images hint at "
        "label noise or a systematic confusion."
    )
    return FigureResult(
        key="top_losses", section="predictions",
        title="Highest-loss test images", caption=caption, figure=fig,
    )

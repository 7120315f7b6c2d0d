"""Penultimate features of the probe set, projected to 2-D over training.

One figure, ``embeddings``: the probe images' pooled features at the start
and the end of training (or every recorded epoch), as points coloured by
class. Every panel uses ONE linear projection -- the top two principal
components of the last epoch's features, centred with the last epoch's
mean -- so panels are comparable: a point cloud that moves or spreads
between panels moved in feature space, not because the basis changed.

Each panel's title carries a separation score that does not depend on the
picture: the leave-one-out 5-nearest-neighbour accuracy of the probe
labels, in the full feature space and in the 2-D projection.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib import colormaps

from kerasft.render.base import FigureResult, RenderOptions, new_figure

SECTION = "embeddings"
K_NEIGHBOURS = 5


def fixed_basis(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean and the top-2 principal directions of `features`.

    Computed with an SVD of the centred features (no scikit-learn). Each
    direction's sign is fixed so that its largest-magnitude entry is
    positive, which makes the basis deterministic.

    Args:
        features: (P, D) array, P samples of D features.

    Returns:
        ``(mean (D,), components (2, D))``, float64; components are
        orthonormal rows (zero rows where the features have fewer than two
        directions of variance).

    Example:

    ```python
    mean, comps = fixed_basis(features_at_last_epoch)
    xy = project(features_at_epoch_0, mean, comps)
    ```
    """
    x = np.asarray(features, dtype=np.float64)
    x = x.reshape(len(x), -1)
    mean = x.mean(axis=0) if len(x) else np.zeros(x.shape[1])
    components = np.zeros((2, x.shape[1]))
    if len(x) >= 2 and x.shape[1] >= 1:
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        k = int(min(2, np.sum(s > s.max() * 1e-12) if s.size else 0))
        components[:k] = vt[:k]
    for row in components:
        j = np.argmax(np.abs(row))
        if row[j] < 0:
            row *= -1
    return mean, components


def project(features: np.ndarray, mean: np.ndarray,
            components: np.ndarray) -> np.ndarray:
    """`features` (P, D) in the basis of `fixed_basis`: (P, 2) coordinates."""
    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    return (x - mean) @ np.asarray(components).T


def knn_accuracy(points: np.ndarray, labels: np.ndarray,
                 k: int = K_NEIGHBOURS) -> float:
    """Leave-one-out k-nearest-neighbour accuracy (Euclidean).

    Each point is classified by a majority vote of its `k` nearest other
    points; ties go to the class of the nearest among the tied classes.

    Args:
        points: (P, D) coordinates.
        labels: (P,) integer labels.
        k: neighbours voting. Defaults to `5`.

    Returns:
        The share of points whose vote matches their label (NaN for fewer
        than two points or non-finite coordinates).
    """
    x = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    y = np.asarray(labels).astype(np.int64)
    n = len(x)
    if n < 2 or not np.all(np.isfinite(x)):
        return float("nan")
    k = min(k, n - 1)
    sq = np.sum(x * x, axis=1)
    d = sq[:, None] + sq[None, :] - 2 * x @ x.T
    np.fill_diagonal(d, np.inf)
    near = np.argsort(d, axis=1, kind="stable")[:, :k]
    correct = 0
    for i in range(n):
        votes = y[near[i]]
        classes, counts = np.unique(votes, return_counts=True)
        tied = set(classes[counts == counts.max()].tolist())
        # the nearest neighbour whose class is among the most voted
        pred = next(v for v in votes if v in tied)
        correct += int(pred == y[i])
    return correct / n


def embedding_panels(run, options: RenderOptions) -> dict:
    """The numbers behind the figure, one panel per epoch shown.

    Returns:
        ``{"basis_epoch", "explained" (2,) share of variance at the basis
        epoch, "panels": [{"epoch", "xy" (P, 2), "labels", "knn_full",
        "knn_2d"}]}``, or ``{}`` without usable ``embeddings`` records.
    """
    kind = run.records.get("embeddings")
    if kind is None or not kind.epochs:
        return {}
    epochs = kind.epochs
    records = {e: kind[e] for e in epochs}
    usable = [e for e in epochs
              if "features" in records[e] and len(records[e]["features"])
              and np.all(np.isfinite(records[e]["features"]))]
    if not usable:
        return {}
    # The basis comes from the last epoch: the features the model ended
    # with are the ones worth a faithful picture; earlier epochs are shown
    # in the same coordinates so movement is real movement.
    basis_epoch = usable[-1]
    fit = np.asarray(records[basis_epoch]["features"], dtype=np.float64)
    mean, comps = fixed_basis(fit)
    centred = fit - mean
    total = float(np.sum(centred * centred))
    xy_fit = centred @ comps.T
    explained = (np.sum(xy_fit * xy_fit, axis=0) / total if total > 0
                 else np.zeros(2))
    shown = epochs if options.embeddings_every_epoch else sorted(
        {epochs[0], epochs[-1]})
    panels = []
    for e in shown:
        rec = records[e]
        feats = np.asarray(rec.get("features", np.zeros((0, fit.shape[1]))),
                           dtype=np.float64)
        labels = np.asarray(rec.get("labels", np.zeros(len(feats))),
                            dtype=np.int64)
        finite = e in usable
        panels.append({
            "epoch": e,
            "xy": project(feats, mean, comps) if finite else None,
            "labels": labels,
            "knn_full": knn_accuracy(feats, labels) if finite else math.nan,
            "knn_2d": (knn_accuracy(project(feats, mean, comps), labels)
                       if finite else math.nan),
        })
    return {"basis_epoch": basis_epoch, "explained": explained,
            "panels": panels, "dim": fit.shape[1]}


def _class_colours(n: int) -> list:
    if n <= 10:
        cmap = colormaps["tab10"]
        return [cmap(i) for i in range(n)]
    if n <= 20:
        cmap = colormaps["tab20"]
        return [cmap(i) for i in range(n)]
    cmap = colormaps["turbo"]
    return [cmap(v) for v in np.linspace(0.05, 0.95, n)]


def _fmt(v: float) -> str:
    return "n/a" if not np.isfinite(v) else f"{v:.2f}"


def render(run, options: RenderOptions) -> list[FigureResult]:
    """The ``embeddings`` figure of `run` ([] without embedding records).

    Args:
        run: a loaded run (`kerasft.load_run`).
        options: what to draw; ``embeddings_every_epoch`` shows every
            recorded epoch instead of start vs end.

    Returns:
        A list with one `FigureResult`, or [].
    """
    data = embedding_panels(run, options)
    if not data:
        return []
    panels = data["panels"]
    all_labels = np.concatenate([p["labels"] for p in panels])
    class_names = list((run.data or {}).get("class_names") or [])
    n_classes = max(len(class_names), int(all_labels.max()) + 1
                    if all_labels.size else 0)
    names = [class_names[i] if i < len(class_names) else str(i)
             for i in range(n_classes)]
    colours = _class_colours(max(n_classes, 1))

    # Same limits everywhere, from every panel's points, so panels compare.
    pts = np.concatenate([p["xy"] for p in panels if p["xy"] is not None])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    pad = 0.05 * np.maximum(hi - lo, 1e-9)
    lo, hi = lo - pad, hi + pad

    n = len(panels)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = new_figure(4.4 * cols + 1.6, 4.3 * rows + 0.8)
    axes = fig.subplots(rows, cols, squeeze=False)
    size = max(6.0, min(30.0, 3000.0 / max(len(pts) / n, 1)))
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    for ax, p in zip(axes.ravel(), panels):
        if p["xy"] is None:
            ax.text(0.5, 0.5, "non-finite features", ha="center",
                    va="center", transform=ax.transAxes)
        else:
            for c in np.unique(p["labels"]):
                m = p["labels"] == c
                ax.scatter(p["xy"][m, 0], p["xy"][m, 1], s=size,
                           color=colours[int(c) % len(colours)], alpha=0.8,
                           edgecolors="none", rasterized=True)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_title(
            f"epoch {p['epoch']}\n{K_NEIGHBOURS}-NN accuracy: "
            f"{_fmt(p['knn_full'])} ({data['dim']}-D), "
            f"{_fmt(p['knn_2d'])} (2-D)", fontsize=10)
        ax.set_xlabel(f"PC1 of epoch {data['basis_epoch']} "
                      f"({100 * data['explained'][0]:.0f}% of variance)",
                      fontsize=9)
        ax.set_ylabel(f"PC2 ({100 * data['explained'][1]:.0f}% of variance)",
                      fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.2)
    if n_classes <= 30:
        handles = [
            fig.axes[0].scatter([], [], s=30, color=colours[i], label=names[i])
            for i in range(n_classes)
        ]
        fig.legend(handles=handles, title="class", loc="outside right upper",
                   fontsize=8, title_fontsize=9,
                   ncols=1 if n_classes <= 15 else 2)
    fig.suptitle(
        "Probe-set features in one fixed 2-D basis (PCA of the last epoch)\n"
        "look for classes pulling apart into clusters and the k-NN accuracy "
        "rising from start to end", fontsize=11)
    return [FigureResult(
        key="embeddings",
        section=SECTION,
        title="Embeddings of the probe set",
        caption=(
            "The penultimate (pooled) features of the probe images, projected "
            "on the top two principal components of the last epoch's "
            "features; every panel uses that same projection and the same "
            "axis limits, so points that move between panels moved in "
            "feature space. The title gives the leave-one-out "
            f"{K_NEIGHBOURS}-nearest-neighbour accuracy of the labels in the "
            "full feature space and in the 2-D picture: rising numbers mean "
            "the features separate the classes better."),
        figure=fig,
    )]

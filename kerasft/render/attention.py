"""Where the model looks: Grad-CAM and saliency maps, before and after.

``attention`` (report): for a few probe images, each for its true class,
the Grad-CAM overlay and the saliency map at epoch 0 and at the last
recorded epoch, with what the model predicted each time. `explanation_figure`
draws `kerasft explain`'s figure for one image of the user's. Both read
numbers only (record, then render).
"""

from __future__ import annotations

import numpy as np

from kerasft.explain.gradcam import map_correlation
from kerasft.record.store import probabilities
from kerasft.render.base import (
    FigureResult,
    RenderOptions,
    new_figure,
    select_layers,
)
from kerasft.render.predictions import _class_names

SECTION = "attention"
# Overlay opacity of the heat map over the image.
_ALPHA = 0.5
# Grad-CAM columns of the report figure, at most (epochs spread evenly).
MAX_EPOCHS = 4


def normalise(maps: np.ndarray) -> np.ndarray:
    """Each map divided by its own maximum (an all-zero map stays zero)."""
    maps = np.asarray(maps, dtype=np.float64)
    top = maps.reshape(len(maps), -1).max(axis=1)
    top = np.where(top > 0, top, 1.0).reshape(-1, *([1] * (maps.ndim - 1)))
    return maps / top


def overlay(ax, image: np.ndarray, cam: np.ndarray) -> None:
    """The image with a (normalised, h x w) Grad-CAM map over it, stretched
    bilinearly to the image's size."""
    h, w = image.shape[:2]
    ax.imshow(image, interpolation="nearest")
    ax.imshow(cam, cmap="jet", alpha=_ALPHA, vmin=0.0, vmax=1.0,
              interpolation="bilinear", extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    ax.set_xticks([])
    ax.set_yticks([])


def saliency_panel(ax, sal: np.ndarray) -> None:
    """A saliency map, 0 to its 99th percentile (a few extreme pixels would
    otherwise make the rest black)."""
    top = float(np.percentile(sal, 99)) if np.any(sal > 0) else 1.0
    ax.imshow(sal, cmap="inferno", vmin=0.0, vmax=top or 1.0,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _covered(ax, image: np.ndarray, text: str) -> None:
    """The image, faded, with `text` over it: a cell with nothing to draw
    keeps the image's size and place in the grid."""
    ax.imshow(image, interpolation="nearest", alpha=0.25)
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=8,
            transform=ax.transAxes,
            bbox=dict(fc="white", ec="0.6", alpha=0.9, pad=2))
    ax.set_xticks([])
    ax.set_yticks([])


def _prediction(logits_row, names) -> tuple[int, float, str]:
    p = probabilities(logits_row[None])[0]
    k = int(np.argmax(p))
    return k, float(p[k]), names[k]


def _attention_figure(run, options: RenderOptions) -> FigureResult | None:
    kind = run.records.get("attention")
    if kind is None or not kind.epochs:
        return None
    epochs = kind.epochs
    first = kind[epochs[0]]
    labels = np.asarray(first["labels"])
    n = len(labels)
    names = _class_names(run, np.asarray(first["logits"]).shape[1])
    layer = str(first["layer"])
    notes = []
    planned = (run.config or {}).get("train", {}).get("epochs")
    if epochs[-1] != planned:
        notes.append(
            f"Grad-CAM: the last record is of epoch {epochs[-1]}, not the "
            f"run's last epoch ({planned}): the run stopped early.")
    # Grad-CAM at up to MAX_EPOCHS epochs (all of them, first and last
    # included, spread evenly: record.attention_every_epoch records every
    # one); saliency at the first and the last.
    shown = [epochs[k] for k in select_layers(epochs, MAX_EPOCHS)]
    records = {e: kind[e] for e in shown}
    bad = {e for e, r in records.items()
           if not (np.all(np.isfinite(r["cam"]))
                   and np.all(np.isfinite(r["saliency"]))
                   and np.all(np.isfinite(r["logits"])))}
    for e in sorted(bad):
        notes.append(
            f"Grad-CAM: the maps of epoch {e} are not finite (the model's "
            "outputs or gradients on the probe images held NaN or inf), "
            "so they are not drawn.")
    sal_epochs = sorted({shown[0], shown[-1]})
    columns = ([("image", None)] + [("cam", e) for e in shown]
               + [("saliency", e) for e in sal_epochs])
    fig = new_figure(1.9 * len(columns), 1.95 * n + 0.8)
    axes = fig.subplots(n, len(columns), squeeze=False)
    images = np.asarray(first["image"])
    for c, (what, e) in enumerate(columns):
        header = {"image": "probe image", "cam": f"Grad-CAM, epoch {e}",
                  "saliency": f"saliency, epoch {e}"}[what]
        axes[0, c].text(0.5, 1.25, header, transform=axes[0, c].transAxes,
                        ha="center", va="bottom", fontsize=9, weight="bold")
    for i in range(n):
        for c, (what, e) in enumerate(columns):
            ax = axes[i, c]
            if what == "image":
                ax.imshow(images[i], interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_ylabel(f"true: {names[labels[i]]}", fontsize=9)
                continue
            if e in bad:
                _covered(ax, images[i], "not finite")
                continue
            r = records[e]
            if what == "saliency":
                saliency_panel(ax, np.asarray(r["saliency"])[i])
                continue
            cam = np.asarray(r["cam"])[i]
            if cam.max() > 0:
                overlay(ax, images[i], normalise(cam[None])[0])
            else:
                _covered(ax, images[i], "no positive\nevidence\n(map all 0)")
            k, p, name = _prediction(np.asarray(r["logits"])[i], names)
            ax.set_title(f"pred {name} ({p:.0%})", fontsize=8,
                         color="tab:green" if k == labels[i] else "tab:red")
            if e != shown[0] and shown[0] not in bad:
                corr = map_correlation(records[shown[0]]["cam"][i], cam)
                ax.set_xlabel(
                    f"corr. with epoch {shown[0]}: {corr:.2f}"
                    if np.isfinite(corr) else "corr.: none (a map is flat)",
                    fontsize=7)
    side = "x".join(str(s) for s in np.asarray(first["cam"]).shape[1:])
    fig.suptitle(
        f"Where the model looks for each image's true class, before and "
        f"after training (Grad-CAM at {layer}, a {side} map)", fontsize=10)
    thinned = (f" Epochs {', '.join(map(str, shown))} of the "
               f"{len(epochs)} recorded are shown." if len(shown) < len(epochs)
               else "")
    return FigureResult(
        key="attention",
        section=SECTION,
        title="Where the model looks: Grad-CAM and saliency",
        caption=(
            f"{n} probe images. Each map is for the image's true class, so "
            "the epochs answer the same question: where is the evidence "
            f"for this class? Grad-CAM (at layer {layer}, {side} cells "
            "stretched over the image) is red where that layer's features "
            "raise the class's score, each map scaled to its own maximum; "
            "saliency is |d score / d pixel|, bright where a pixel change "
            "moves the score most. Titles give the prediction at that "
            "epoch (green right, red wrong). After fine-tuning the "
            "heat should sit on the object; a low correlation with epoch "
            f"{shown[0]} means the model now looks elsewhere." + thinned),
        figure=fig,
        notes=notes,
    )


def explanation_figure(title: str, image: np.ndarray, cam: np.ndarray,
                       sal: np.ndarray, logits: np.ndarray, names: list[str],
                       explained: int, layer: str, how: str):
    """`kerasft explain`'s figure for one image: the image, the Grad-CAM
    overlay and the saliency map for class `explained`, and the top-3
    predictions.

    Args:
        title: what the image is (its file name).
        image: (H, W, 3) uint8, as the model saw it (resized).
        cam: (h, w) Grad-CAM map, unnormalised.
        sal: (H, W) saliency map.
        logits: (K,) the model's outputs.
        names: the K class names.
        explained: the class the maps are for.
        layer: the Grad-CAM layer's name.
        how: how the saliency was computed, e.g. "vanilla gradient".

    Returns:
        A matplotlib `Figure`.
    """
    probs = probabilities(np.asarray(logits)[None])[0]
    fig = new_figure(12.0, 3.4)
    axes = fig.subplots(1, 4, width_ratios=[1, 1, 1, 1.2])
    axes[0].imshow(image, interpolation="nearest")
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    axes[0].set_title(f"input ({image.shape[1]}x{image.shape[0]})", fontsize=9)
    if np.max(cam) > 0:
        overlay(axes[1], image, normalise(np.asarray(cam)[None])[0])
    else:
        _covered(axes[1], image, "no positive evidence\n(Grad-CAM map all 0)")
    axes[1].set_title(f"Grad-CAM: {names[explained]}\n({layer})", fontsize=9)
    saliency_panel(axes[2], sal)
    axes[2].set_title(f"saliency: {names[explained]}\n({how})", fontsize=9)
    top = np.argsort(-probs)[:3]
    ax = axes[3]
    ax.barh(range(len(top))[::-1], probs[top],
            color=["tab:orange" if k == explained else "tab:blue" for k in top])
    ax.set_yticks(range(len(top))[::-1])
    ax.set_yticklabels([names[k] for k in top], fontsize=9)
    ax.set_xlim(0, 1)
    for y, k in zip(range(len(top))[::-1], top):
        ax.text(min(probs[k] + 0.02, 0.8), y, f"{probs[k]:.1%}",
                va="center", fontsize=9)
    ax.set_title("top-3 predictions", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


def render(run, options: RenderOptions) -> list[FigureResult]:
    """The ``attention`` figure of `run` ([] without ``attention`` records).

    Args:
        run: a loaded run (`kerasft.load_run`).
        options: what to draw (unused: the figure has one row per image).

    Returns:
        ``[attention]`` where its data is present.
    """
    result = _attention_figure(run, options)
    return [] if result is None else [result]

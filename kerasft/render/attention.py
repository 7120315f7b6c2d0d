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
from kerasft.render.base import FigureResult, RenderOptions, new_figure
from kerasft.render.predictions import _class_names

SECTION = "attention"
# Overlay opacity of the heat map over the image.
_ALPHA = 0.5


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


def _blank(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=8,
            wrap=True, transform=ax.transAxes)
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
    last_epoch = epochs[-1]
    last = kind[last_epoch] if len(epochs) > 1 else None
    labels = np.asarray(first["labels"])
    n = len(labels)
    names = _class_names(run, np.asarray(first["logits"]).shape[1])
    layer = str(first["layer"])
    notes = []
    planned = (run.config or {}).get("train", {}).get("epochs")
    if last is None:
        notes.append(
            "Grad-CAM: there is no end-of-training record, only epoch 0 "
            f"(the run stopped before its last epoch, {planned}).")
    records = [(epochs[0], first)] + ([(last_epoch, last)] if last else [])
    bad = [e for e, r in records
           if not (np.all(np.isfinite(r["cam"]))
                   and np.all(np.isfinite(r["saliency"]))
                   and np.all(np.isfinite(r["logits"])))]
    for e in bad:
        notes.append(
            f"Grad-CAM: the maps of epoch {e} are not finite (the model's "
            "outputs or gradients on the probe images held NaN or inf), "
            "so they are not drawn.")
    cols = 1 + 2 * len(records)
    fig = new_figure(1.9 * cols, 1.9 * n + 0.9)
    axes = fig.subplots(n, cols, squeeze=False)
    images = np.asarray(first["image"])
    cams = {e: normalise(r["cam"]) if e not in bad else None
            for e, r in records}
    for i in range(n):
        ax = axes[i, 0]
        ax.imshow(images[i], interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(f"true: {names[labels[i]]}", fontsize=9)
        for j, (e, r) in enumerate(records):
            cam_ax, sal_ax = axes[i, 1 + j], axes[i, 1 + len(records) + j]
            if e in bad:
                _blank(cam_ax, "not finite")
                _blank(sal_ax, "not finite")
                continue
            k, p, name = _prediction(np.asarray(r["logits"])[i], names)
            if np.asarray(r["cam"])[i].max() > 0:
                overlay(cam_ax, images[i], cams[e][i])
            else:
                _blank(cam_ax, "no positive\nevidence\n(map all 0)")
            ok = k == labels[i]
            cam_ax.set_title(f"pred {name} ({p:.0%})", fontsize=8,
                             color="tab:green" if ok else "tab:red")
            saliency_panel(sal_ax, np.asarray(r["saliency"])[i])
        if len(records) == 2 and not bad:
            corr = map_correlation(records[0][1]["cam"][i],
                                   records[1][1]["cam"][i])
            axes[i, 2].set_xlabel(
                "corr. with epoch 0: n/a (a map is constant)" if np.isnan(corr)
                else f"corr. with epoch 0: {corr:.2f}", fontsize=8)
    for j, (e, _) in enumerate(records):
        axes[0, 1 + j].text(0.5, 1.32, f"Grad-CAM, epoch {e}",
                            transform=axes[0, 1 + j].transAxes,
                            ha="center", fontsize=9, weight="bold")
        axes[0, 1 + len(records) + j].text(
            0.5, 1.32, f"saliency, epoch {e}",
            transform=axes[0, 1 + len(records) + j].transAxes,
            ha="center", fontsize=9, weight="bold")
    axes[0, 0].set_title("probe image", fontsize=9, weight="bold")
    side = "x".join(str(s) for s in np.asarray(first["cam"]).shape[1:])
    fig.suptitle(
        f"Where the model looks for each image's true class, before and "
        f"after training (Grad-CAM at {layer}, a {side} map)", fontsize=10)
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
            "0 means the model now looks elsewhere."),
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
        _blank(axes[1], "no positive evidence\n(Grad-CAM map all 0)")
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

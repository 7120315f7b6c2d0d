"""First-layer filters and one probe image's feature maps.

Two figures from the ``feature_maps`` records:

- ``first_layer_filters``: the first convolution's kernels as small RGB
  images, at the first and the last recorded epoch side by side, with
  their difference, so a viewer sees whether (and which) filters changed.
- ``feature_maps``: the probe image and the first channels of its feature
  maps at the recorded depths, at the last epoch.
"""

from __future__ import annotations

import math

import numpy as np

from kerasft.render.base import FigureResult, RenderOptions, new_figure

SECTION = "filters"
MAX_FILTERS = 64
MAP_CHANNELS = 8
_GAP = 1.0  # value of the 1-pixel separators between tiles (white)


def normalise_filters(kernel: np.ndarray) -> np.ndarray:
    """Kernels (kh, kw, in, out) as images (out, kh, kw, 3) in [0, 1].

    Each filter is min-max normalised on its own (a constant filter becomes
    mid-grey). One input channel is shown grey; more than three show the
    first three as RGB.
    """
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 4:
        raise ValueError(f"expected a (kh, kw, in, out) kernel. Received "
                         f"shape {k.shape}")
    k = np.moveaxis(k, -1, 0)  # (out, kh, kw, in)
    if k.shape[-1] == 1:
        k = np.repeat(k, 3, axis=-1)
    elif k.shape[-1] == 2:
        k = np.concatenate([k, np.zeros_like(k[..., :1])], axis=-1)
    k = np.nan_to_num(k[..., :3])
    lo = k.min(axis=(1, 2, 3), keepdims=True)
    hi = k.max(axis=(1, 2, 3), keepdims=True)
    span = hi - lo
    return np.where(span > 0, (k - lo) / np.where(span > 0, span, 1), 0.5)


def mosaic(tiles: np.ndarray, cols: int | None = None) -> np.ndarray:
    """Tiles (N, h, w, 3) in one image with 1-pixel white separators."""
    n, h, w = tiles.shape[:3]
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + 1) + 1, cols * (w + 1) + 1, 3), _GAP)
    for i in range(n):
        r, c = divmod(i, cols)
        out[1 + r * (h + 1):1 + r * (h + 1) + h,
            1 + c * (w + 1):1 + c * (w + 1) + w] = tiles[i]
    return out


def relative_change(first: np.ndarray, last: np.ndarray) -> float:
    """||last - first|| / ||first|| (inf where `first` is all zero)."""
    a = np.asarray(first, dtype=np.float64)
    b = np.asarray(last, dtype=np.float64)
    base = np.linalg.norm(a)
    diff = np.linalg.norm(b - a)
    return float(diff / base) if base > 0 else (0.0 if diff == 0 else np.inf)


def _filters_figure(first_epoch: int, first: np.ndarray, last_epoch: int,
                    last: np.ndarray) -> FigureResult:
    n = min(first.shape[-1], MAX_FILTERS)
    first, last = first[..., :n], last[..., :n]
    kh, kw, cin = first.shape[:3]
    cols = math.ceil(math.sqrt(n))
    panels = [(f"epoch {first_epoch}\n(each filter min-max scaled)", mosaic(normalise_filters(first), cols))]
    change = relative_change(first, last)
    if last_epoch != first_epoch:
        panels.append((f"epoch {last_epoch}\n(each filter min-max scaled)",
                       mosaic(normalise_filters(last), cols)))
        diff = np.moveaxis(np.nan_to_num(last - first), -1, 0)
        if cin == 1:
            diff = np.repeat(diff, 3, axis=-1)
        diff = diff[..., :3] if diff.shape[-1] >= 3 else np.concatenate(
            [diff, np.zeros_like(diff[..., :1])], axis=-1)
        # One scale for all filters (not per filter): the filters that
        # moved most stand out, the still ones stay grey.
        scale = np.abs(diff).max()
        tiles = 0.5 + diff / (2 * scale) if scale > 0 else np.full_like(
            diff, 0.5)
        panels.append(("change: last - first\n(one scale, grey = unchanged)",
                       mosaic(tiles, cols)))
    fig = new_figure(4.2 * len(panels) + 0.4, 4.9)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, image) in zip(axes, panels):
        ax.imshow(np.clip(image, 0, 1), interpolation="nearest")
        ax.set_title(label, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    what = "RGB" if cin >= 3 else "grey"
    fig.suptitle(
        f"First conv layer: {n} of {first.shape[-1] if first.ndim == 4 else n}"
        f" filters ({kh}x{kw}, {what}); "
        f"relative change ||W_{last_epoch} - W_{first_epoch}|| / "
        f"||W_{first_epoch}|| = {change:.3g}\nlook for smooth edge and "
        "colour detectors emerging; noisy filters that do not change have "
        "not learned", fontsize=10)
    return FigureResult(
        key="first_layer_filters",
        section=SECTION,
        title="First-layer filters",
        caption=(
            "The kernels of the first convolution as small images, each "
            "min-max scaled on its own, at the first and the last recorded "
            "epochs, and their difference on one shared scale. Pretrained "
            "or well-trained filters look like oriented edges and colour "
            "blobs; filters that stay noise (or do not change, e.g. because "
            "the stem was frozen) have not learned from this data."),
        figure=fig,
    )


def _maps_figure(epoch: int, record: dict) -> FigureResult | None:
    layers = [str(n) for n in record.get("layers", [])
              if f"maps/{n}" in record]
    if not layers:
        return None
    image = record.get("image")
    rows = len(layers)
    fig = new_figure(12.0, 1.12 * rows + 1.0)
    gs = fig.add_gridspec(rows, MAP_CHANNELS + 1,
                          width_ratios=[2.2] + [1] * MAP_CHANNELS)
    if image is not None:
        ax = fig.add_subplot(gs[:, 0])
        img = np.asarray(image)
        ax.imshow(img if img.ndim == 3 and img.shape[-1] == 3 else
                  np.squeeze(img), cmap=None if img.ndim == 3 and
                  img.shape[-1] == 3 else "gray", interpolation="nearest")
        ax.set_title(f"probe image\n{img.shape[0]}x{img.shape[1]}",
                     fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for r, name in enumerate(layers):
        maps = np.asarray(record[f"maps/{name}"], dtype=np.float32)
        if maps.ndim == 2:
            maps = maps[..., None]
        h, w, c = maps.shape
        shown = maps[..., :MAP_CHANNELS]
        finite = shown[np.isfinite(shown)]
        # One colour scale per row: a channel that is dark next to bright
        # ones is really weaker, and an all-dark row is a silent depth.
        vmin = float(finite.min()) if finite.size else 0.0
        vmax = float(finite.max()) if finite.size else 1.0
        if vmax <= vmin:
            vmax = vmin + 1.0
        for j in range(MAP_CHANNELS):
            ax = fig.add_subplot(gs[r, j + 1])
            ax.set_xticks([])
            ax.set_yticks([])
            if j < c:
                ax.imshow(shown[..., j], cmap="viridis", vmin=vmin,
                          vmax=vmax, interpolation="nearest")
            else:
                ax.set_axis_off()
            if r == 0:
                ax.set_title(f"channel {j}", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{name}\n{h}x{w}\n"
                              f"range {vmin:.2g}..{vmax:.2g}",
                              fontsize=8, rotation=0, ha="right",
                              va="center")
    fig.suptitle(
        f"Feature maps of one probe image at increasing depth (epoch {epoch})"
        "\nlook for structure that follows the digit/object in early rows "
        "and channels that are never active (dark tiles on a row's scale)",
        fontsize=10)
    return FigureResult(
        key="feature_maps",
        section=SECTION,
        title="Feature maps at increasing depth",
        caption=(
            f"The probe image and the first {MAP_CHANNELS} channels of the "
            "feature maps at "
            "each recorded depth, last epoch, inference mode. Each row has "
            "one colour scale (given at the left), so a dark tile is a "
            "channel that is weak on this image. Early rows should follow "
            "the image's edges; deep rows are tiny (down to 1x1) and show "
            "which features fire, not where."),
        figure=fig,
    )


def render(run, options: RenderOptions) -> list[FigureResult]:
    """The filter figures of `run` ([] without ``feature_maps`` records).

    Args:
        run: a loaded run (`kerasft.load_run`).
        options: what to draw (unused: both figures are fixed-size).

    Returns:
        ``first_layer_filters`` and ``feature_maps``, each where its data
        is present.
    """
    kind = run.records.get("feature_maps")
    if kind is None or not kind.epochs:
        return []
    epochs = kind.epochs
    first_rec = kind[epochs[0]]
    last_rec = kind[epochs[-1]] if len(epochs) > 1 else first_rec
    results = []
    if ("filters" in first_rec and "filters" in last_rec
            and np.asarray(first_rec["filters"]).ndim == 4
            and first_rec["filters"].shape == last_rec["filters"].shape):
        results.append(_filters_figure(epochs[0], first_rec["filters"],
                                       epochs[-1], last_rec["filters"]))
    maps = _maps_figure(epochs[-1], last_rec)
    if maps is not None:
        results.append(maps)
    return results

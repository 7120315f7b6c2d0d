"""Numbers that say how far two runs are apart, layer by layer.

All of them are 0 for identical runs. Inputs are what the recorders stored
(`kerasft.load_run`) and the per-epoch checkpoints; nothing here needs a
Keras backend (checkpoints are read with h5py).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from kerasft.record.store import STAT_NAMES, common_histograms

_KERAS_VARS = {
    "Conv2D": ("kernel", "bias"),
    "Dense": ("kernel", "bias"),
    "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance"),
}


def wasserstein_fixed_bins(counts_a, counts_b, edges) -> float:
    """1-D Wasserstein (earth mover's) distance of two histograms on the
    same bins, in the units of the values.

    Counts are (B+2,) with under- and over-flow first and last; those are
    placed one bin width outside the range. 0 when the histograms are
    identical, whatever the bins.
    """
    a = np.asarray(counts_a, dtype=np.float64)
    b = np.asarray(counts_b, dtype=np.float64)
    if a.sum() == 0 or b.sum() == 0:
        return float("nan")
    width = float(edges[1] - edges[0])
    cdf_gap = np.abs(np.cumsum(a / a.sum()) - np.cumsum(b / b.sum()))[:-1]
    # distances between consecutive positions: under-flow -> first bin
    # centre is one width, bin to bin one width, last bin -> over-flow one
    return float(np.sum(cdf_gap) * width)


def histogram_distances(rec_a: dict, rec_b: dict, kind_a, kind_b,
                        measure: str = "wasserstein") -> np.ndarray:
    """Per name of `rec_a`, a distance to `rec_b`'s histogram of the same
    name on their common bins (`store.common_histograms`); NaN where
    `rec_b` lacks the name.

    Args:
        rec_a, rec_b: two histogram records (one epoch of a kind each).
        kind_a, kind_b: their `store.Kind`s (for format-1 edges).
        measure: ``wasserstein`` (1-D Wasserstein distance in widths of the
            common bins) or ``counts`` (sum of absolute count differences;
            0 only for identical histograms). Defaults to `"wasserstein"`.
    """
    edges_a, edges_b = kind_a.edges_of(rec_a), kind_b.edges_of(rec_b)
    row_b = {str(n): i for i, n in enumerate(rec_b["names"])}
    out = np.full(len(rec_a["names"]), np.nan)
    for i, name in enumerate(rec_a["names"]):
        j = row_b.get(str(name))
        if j is None:
            continue
        edges, (ca, cb) = common_histograms(
            [edges_a[i], edges_b[j]], [rec_a["counts"][i], rec_b["counts"][j]],
            f"histograms of {name}")
        if measure == "counts":
            out[i] = np.abs(ca - cb).sum()
        else:
            out[i] = (wasserstein_fixed_bins(ca, cb, edges)
                      / (edges[1] - edges[0]))
    return out


def relative_difference(a, b) -> float:
    """||a - b|| / ||a|| (||a|| floored at 1e-12)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12))


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower().replace("conv2_d", "conv2d")


def checkpoint_variables(run_dir: Path, layers: list[dict]) -> dict[str, str]:
    """Maps Keras variable paths to the dataset paths of a .weights.h5.

    Keras names a layer's group in a weights file after its class and its
    rank among layers of that class (``conv2d_9``), not after the layer;
    `layers.json` keeps the model's layer order, which gives the mapping.
    """
    seen: dict[str, int] = {}
    out = {}
    for layer in layers:
        cls = layer["class"]
        k = seen.get(cls, 0)
        seen[cls] = k + 1
        group = _snake(cls) + ("" if k == 0 else f"_{k}")
        for i, var in enumerate(_KERAS_VARS.get(cls, ())):
            out[f"{layer['name']}/{var}"] = f"layers/{group}/vars/{i}"
    return out


def read_checkpoint(path: Path, mapping: dict[str, str]) -> dict[str, np.ndarray]:
    """The variables of a checkpoint, keyed by Keras variable path."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        for name, key in mapping.items():
            if key in f:
                out[name] = f[key][()]
    return out


def stat(record: dict, name: str) -> np.ndarray:
    """One column of a record's ``stats`` table."""
    return record["stats"][:, STAT_NAMES.index(name)]


def first_divergence(names, values, tolerance) -> str | None:
    """The first name (in input-to-output order) whose value exceeds
    `tolerance`, or None."""
    for n, v in zip(names, values):
        if np.isfinite(v) and v > tolerance:
            return str(n)
    return None

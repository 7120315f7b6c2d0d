"""The probe set: fixed images, chosen by seed, shared by every backend."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kerasft.rundir import write_json


@dataclass
class ProbeSet:
    """Preprocessed probe images and their labels.

    Attributes:
        x: float32 images, preprocessed as for training.
        y: int labels.
        indices: positions in `split` the images were taken from.
        split: the split's name.
    """

    x: np.ndarray
    y: np.ndarray
    indices: np.ndarray
    split: str

    def head(self, n: int) -> "ProbeSet":
        return ProbeSet(self.x[:n], self.y[:n], self.indices[:n], self.split)

    def save(self, path, seed: int) -> None:
        write_json(
            path,
            {
                "split": self.split,
                "seed": seed,
                "indices": self.indices.tolist(),
                "labels": self.y.tolist(),
                "image_shape": list(self.x.shape[1:]),
            },
        )


def choose_indices(n: int, size: int, seed: int) -> np.ndarray:
    """`size` indices out of `n`, by seed only (sorted)."""
    rng = np.random.default_rng([seed, 23])
    return np.sort(rng.permutation(n)[: min(size, n)])

"""Gradient saliency: which input pixels the class's score is most sensitive to.

Vanilla gradient (Simonyan et al., 2014): |d y_c / d x|, the largest over
the colour channels. SmoothGrad (Smilkov et al., 2017) averages the gradient
over copies of the image with Gaussian noise added (standard deviation a
fraction of the image's value range), which removes much of the vanilla
map's speckle. The noise comes from numpy with a seed, so every backend
averages over the same noisy copies.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# SmoothGrad's paper finds 10-20% of the input range works; 15% is its
# suggestion.
SMOOTHGRAD_NOISE = 0.15
# Noisy copies differentiated per backward pass.
_CHUNK = 16


def saliency_from(input_grad: np.ndarray) -> np.ndarray:
    """(N, H, W, C) input gradients -> (N, H, W) max-over-channels |grad|."""
    return np.abs(np.asarray(input_grad, dtype=np.float32)).max(axis=-1)


def saliency(model: Any, x: np.ndarray, classes, smooth: int = 0,
             noise: float = SMOOTHGRAD_NOISE, seed: int = 0) -> np.ndarray:
    """Saliency maps of each image for its class, on the active backend.

    Args:
        model: a Keras model whose output is logits.
        x: (N, H, W, C) preprocessed images.
        classes: (N,) class indices (or one int for all images).
        smooth: SmoothGrad samples per image; 0 for the vanilla gradient.
            Defaults to `0`.
        noise: SmoothGrad's noise, as a fraction of each image's value
            range (max - min). Defaults to `0.15`.
        seed: SmoothGrad's noise seed. Defaults to `0`.

    Returns:
        (N, H, W) float32, not normalised.

    Example:
        >>> maps = saliency(model, x, classes=[3], smooth=25)
    """
    from kerasft.backend.attribution import class_score_gradients
    from kerasft.explain.gradcam import per_image

    x = np.asarray(x, dtype=np.float32)
    classes = per_image(classes, x.shape[0])
    if smooth <= 0:
        return saliency_from(class_score_gradients(model, x, classes).input_grad)
    rng = np.random.default_rng([seed, 31])
    out = np.empty(x.shape[:3], dtype=np.float32)
    for i, (image, c) in enumerate(zip(x, classes)):
        sigma = noise * float(image.max() - image.min())
        total = np.zeros(image.shape, dtype=np.float64)
        for start in range(0, smooth, _CHUNK):
            n = min(_CHUNK, smooth - start)
            batch = image[None] + rng.normal(
                0.0, sigma, (n, *image.shape)).astype(np.float32)
            g = class_score_gradients(model, batch, np.full(n, c)).input_grad
            total += g.sum(axis=0)
        out[i] = saliency_from((total / smooth)[None])[0]
    return out

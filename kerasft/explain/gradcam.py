"""Grad-CAM: where in a layer's map the evidence for a class lies.

Selvaraju et al. (2017): with A the layer's output (h, w, channels) for one
image and y_c the class's logit, each channel's weight is the spatial mean
of dy_c/dA_k, and the map is ``relu(sum_k weight_k * A_k)``: positive where
the layer's features push the class's score up. The gradients come from
`kerasft.backend.attribution` (every backend, nested backbones included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kerasft.explain.layers import default_layer, find_layer


@dataclass
class CamResult:
    """Grad-CAM maps of a batch, with what produced them.

    Attributes:
        maps: (N, h, w) float32, at the layer's resolution, not normalised
            (the scale is the logit's: comparable across backends and
            epochs of one model).
        linear: (N, h, w) float32, the same maps before the ReLU
            (``sum_k weight_k * A_k``): what cross-backend checks compare,
            since a map that is negative almost everywhere keeps only a
            round-off-sized positive part after the ReLU.
        layer: the layer's name.
        classes: (N,) the class each map is for.
        logits: (N, K) the model's outputs on the images.
        input_grad: (N, H, W, C) the gradient of the same class scores with
            respect to the input (a vanilla saliency map, for free).
    """

    maps: np.ndarray
    linear: np.ndarray
    layer: str
    classes: np.ndarray
    logits: np.ndarray
    input_grad: np.ndarray


def resolve_layer(model: Any, layer: Any = None) -> Any:
    """A layer object from a name, a layer, or None (`default_layer`)."""
    if layer is None:
        return default_layer(model)
    if isinstance(layer, str):
        return find_layer(model, layer)
    return layer


def per_image(classes, n: int) -> np.ndarray:
    """`classes` (one int, or one per image) as an (n,) int64 array."""
    return np.broadcast_to(np.asarray(classes, dtype=np.int64), (n,)).copy()


def linear_cam(activation: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """``sum_k mean_hw(dA_k) * A_k`` per image: (N, h, w, C) -> (N, h, w);
    Grad-CAM is its positive part."""
    weights = gradient.mean(axis=(1, 2), keepdims=True, dtype=np.float64)
    return (activation.astype(np.float64) * weights).sum(axis=-1).astype(
        np.float32)


def grad_cam(model: Any, x: np.ndarray, classes, layer: Any = None) -> CamResult:
    """Grad-CAM of each image for its class, on the active backend.

    Args:
        model: a Keras model whose output is logits, its backbone flat or
            nested.
        x: (N, H, W, C) preprocessed images, as the model was trained on.
        classes: (N,) class indices (or one int for all images).
        layer: a layer name or object, or None for `default_layer` (the
            deepest ResNet stage output at least 4x4). Defaults to `None`.

    Returns:
        A `CamResult`.

    Example:
        >>> result = grad_cam(model, x, classes=[3, 1])
        >>> result.layer, result.maps.shape
        ('conv5_block3_out', (2, 7, 7))
    """
    from kerasft.backend.attribution import class_score_gradients

    x = np.asarray(x, dtype=np.float32)
    classes = per_image(classes, x.shape[0])
    target = resolve_layer(model, layer)
    g = class_score_gradients(model, x, classes, target)
    linear = linear_cam(g.activation, g.activation_grad)
    return CamResult(np.maximum(linear, 0.0), linear, target.name, classes,
                     g.logits, g.input_grad)


def map_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps (NaN if either is constant)."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])

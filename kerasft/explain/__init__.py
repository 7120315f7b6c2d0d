"""Explain: where a model looks, on every backend.

Grad-CAM (`grad_cam`) and gradient saliency (`saliency`, with SmoothGrad)
for a model whose ResNet backbone is flat or nested under a new head;
`explain_images` runs both for a finished run's model on image files
(`kerasft explain`). The backend-specific gradients are in
`kerasft.backend.attribution`.
"""

from __future__ import annotations

from kerasft.lazy import lazy_exports

# Lazy: importing kerasft.explain must not import Keras or a framework.
_LAZY = {
    "CamResult": "gradcam",
    "Explanation": "run",
    "default_layer": "layers",
    "explain_images": "run",
    "find_layer": "layers",
    "grad_cam": "gradcam",
    "saliency": "saliency_map",
}


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = sorted(_LAZY)

"""Record: Keras callbacks that write numbers into the run store.

Every recorder is a plain `keras.callbacks.Callback`, usable in anyone's
`model.fit(...)`; `load_run` reads what they wrote with numpy alone.
"""

from __future__ import annotations

from kerasft.lazy import lazy_exports

# Lazy, like the top-level package: `load_run` (numpy only) must not import
# Keras or a framework.
_LAZY = {
    "ActivationRecorder": "activation_recorder",
    "AttentionRecorder": "attention_recorder",
    "BatchNormRecorder": "batchnorm_recorder",
    "EmbeddingRecorder": "embedding_recorder",
    "FeatureMapRecorder": "feature_map_recorder",
    "GradientRecorder": "gradient_recorder",
    "KINDS": "store",
    "ProbeGradientRecorder": "probe_gradient_recorder",
    "ProbeSet": "probe",
    "Run": "store",
    "ScalarRecorder": "scalar_recorder",
    "UpdateRatioRecorder": "update_ratio_recorder",
    "WeightRecorder": "weight_recorder",
    "choose_indices": "probe",
    "export_tensorboard": "tensorboard_export",
    "load_run": "store",
}


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "ActivationRecorder",
    "AttentionRecorder",
    "BatchNormRecorder",
    "EmbeddingRecorder",
    "FeatureMapRecorder",
    "GradientRecorder",
    "KINDS",
    "ProbeGradientRecorder",
    "ProbeSet",
    "Run",
    "ScalarRecorder",
    "UpdateRatioRecorder",
    "WeightRecorder",
    "choose_indices",
    "export_tensorboard",
    "load_run",
]

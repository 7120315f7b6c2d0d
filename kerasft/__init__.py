"""kerasft: fine-tune keras.applications ResNets and see what fine-tuning does.

Importing kerasft does not import Keras or any framework; the public names
below load on first use, so ``KERAS_BACKEND`` (or ``kerasft --backend``)
still decides the backend.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "RunConfig": "kerasft.config",
    "load_config": "kerasft.config",
    "config_from_dict": "kerasft.config",
    "KerasftError": "kerasft.errors",
    "Batches": "kerasft.data",
    "load_splits": "kerasft.data",
    "splits_from_arrays": "kerasft.data",
    "build_model": "kerasft.model",
    "train": "kerasft.train",
    "lr_find": "kerasft.train.lr_find",
    "LRFindResult": "kerasft.train.lr_find",
    "EpochCheckpoint": "kerasft.train",
    "MetricsLogger": "kerasft.train",
    "run_study": "kerasft.study",
    "load_run": "kerasft.record.store",
    "Run": "kerasft.record.store",
    "WeightRecorder": "kerasft.record",
    "GradientRecorder": "kerasft.record",
    "UpdateRatioRecorder": "kerasft.record",
    "ActivationRecorder": "kerasft.record",
    "EmbeddingRecorder": "kerasft.record",
    "ProbeGradientRecorder": "kerasft.record",
    "BatchNormRecorder": "kerasft.record",
    "ScalarRecorder": "kerasft.record",
    "AttentionRecorder": "kerasft.record",
    "grad_cam": "kerasft.explain",
    "saliency": "kerasft.explain",
    "explain_images": "kerasft.explain",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name])
        # `train` is both a subpackage and its function: importing the
        # subpackage binds it here under that name, so every later access
        # gets the subpackage, which is callable (`kerasft.train(cfg)`
        # calls the function; see kerasft/train/__init__.py). Return the
        # same object the first time too.
        if name in globals():
            return globals()[name]
        return getattr(module, name)
    raise AttributeError(f"module 'kerasft' has no attribute {name!r}")

"""The one place that imports torch, tensorflow or jax for compute.

Everything else in kerasft uses `keras.ops`. The functions here dispatch on
`keras.backend.backend()` and import the framework late, so importing kerasft
never picks a backend or loads a framework the user did not choose.
"""

from __future__ import annotations

import platform
import random

import numpy as np


def name() -> str:
    """The active Keras backend (`torch`, `tensorflow` or `jax`)."""
    import keras

    return keras.backend.backend()


def seed_everything(seed: int) -> None:
    """Seeds Python, numpy, Keras's global seed and the active backend only.

    Unlike `keras.utils.set_random_seed`, this does not import TensorFlow
    under the torch or jax backends (that costs ~400 MB of memory).

    Args:
        seed: the run seed.
    """
    import keras
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator

    random.seed(seed)
    np.random.seed(seed)
    global_state.set_global_attribute("global_random_seed", seed)
    global_state.set_global_attribute(
        seed_generator.GLOBAL_SEED_GENERATOR, None
    )
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        torch.manual_seed(seed)
    elif backend == "tensorflow":
        import tensorflow as tf

        tf.random.set_seed(seed)
    # jax has no global RNG: Keras draws its keys from the seed set above.


def framework_version() -> str:
    """Version of the framework behind the active backend."""
    backend = name()
    if backend == "torch":
        import torch

        return torch.__version__
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.__version__
    if backend == "jax":
        import jax

        return jax.__version__
    return "unknown"


def device() -> str:
    """A short description of the device the backend computes on."""
    backend = name()
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return f"cuda:0 ({torch.cuda.get_device_name(0)})"
        return f"cpu ({platform.processor() or platform.machine()})"
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return f"{gpus[0].name} ({len(gpus)} GPU)"
        return f"cpu ({platform.processor() or platform.machine()})"
    if backend == "jax":
        import jax

        d = jax.devices()[0]
        return f"{d.platform}:{d.id} ({getattr(d, 'device_kind', '')})"
    return "unknown"

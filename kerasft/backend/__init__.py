"""The one place that imports torch, tensorflow or jax for compute.

Everything else in kerasft uses `keras.ops`. The functions here dispatch on
`keras.backend.backend()` and import the framework late, so importing kerasft
never picks a backend or loads a framework the user did not choose.
"""

from __future__ import annotations

import platform
import random
import sys

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


def keep_tensorflow_unloaded() -> None:
    """Stops Keras from importing TensorFlow just to ask if it is installed.

    On the torch and jax backends, Keras's saving code (`model.save`) asks
    its lazy ``tensorflow`` module whether TensorFlow is available, which
    imports it when installed -- seconds, ~400 MB, and TensorFlow's C++
    start-up lines printed in the middle of a run -- only to test
    ``isinstance(obj, tf.TensorShape)``, which cannot hold for any object
    while TensorFlow was never loaded. The CLI, which owns its process,
    calls this on those backends; a no-op on the tensorflow backend or
    once TensorFlow is loaded (e.g. by tensorflow-datasets).
    """
    import keras

    if keras.backend.backend() == "tensorflow" or "tensorflow" in sys.modules:
        return
    from keras.src.utils import module_utils

    lazy = module_utils.tensorflow
    if lazy.module is None and lazy._available is None:
        lazy._available = False


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
    """A short description of the device the backend computes on.

    Keras places the model and every batch on it by itself: torch on
    ``cuda:0`` when CUDA is available, tensorflow and jax on their first
    GPU. Its string holds "GPU"/"cuda"/"gpu" when one is used.
    """
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
            details = tf.config.experimental.get_device_details(gpus[0])
            kind = details.get("device_name", "")
            return f"{gpus[0].name} ({kind}; {len(gpus)} GPU)"
        return f"cpu ({platform.processor() or platform.machine()})"
    if backend == "jax":
        import jax

        d = jax.devices()[0]
        return f"{d.platform}:{d.id} ({getattr(d, 'device_kind', '')})"
    return "unknown"


def on_accelerator() -> bool:
    """Whether the backend computes on something other than the host CPU.

    Recorders reduce on the device only there: on a CPU the "device" is
    host memory, where numpy's reductions are as fast or faster.
    """
    return not device().startswith("cpu")


def jit_compile_note(jit_compile) -> str | None:
    """What `train.jit_compile` does on this backend that a user would not
    expect, in one line (None: nothing to say).

    torch: `true` hands Keras's train step to `torch.compile`. Keras's torch
    step calls ``loss.backward()`` inside it, where dynamo breaks the graph,
    so the backward pass and the optimizer's update are never compiled;
    ResNet's layers then reach dynamo's recompile limit in Keras's layer
    code (torch logs a warning for each). Measured on a CPU with plain
    `model.fit` (README, "Precision and GPUs"): a 4-minute compile, then
    steps 1.4x slower than eager.
    """
    if jit_compile is True and name() == "torch":
        return ("train.jit_compile: true on torch runs Keras's train step "
                "through torch.compile, which stops at backward() (the "
                "backward pass and the update stay eager) and recompiles "
                "ResNet's layers up to dynamo's limit: expect minutes of "
                "compiling; measured on a CPU, its steps were 1.4x slower "
                "than `auto` (eager), and it is not measured on a GPU")
    return None


def _window_norms_keras(current, previous):
    """`window_norms` in `keras.ops` (compiled on TensorFlow and JAX)."""
    import keras

    ops = keras.ops
    deltas, norms, snapshot = [], [], []
    for now, before in zip(current, previous):
        now32 = ops.cast(now, "float32")
        d = now32 - ops.cast(before, "float32")
        deltas.append(ops.sqrt(ops.sum(d * d)))
        norms.append(ops.sqrt(ops.sum(now32 * now32)))
        snapshot.append(ops.copy(now))
    return ops.stack(deltas), ops.stack(norms), snapshot


_compiled_window_norms = None


def window_norms(current, previous=None):
    """||current - previous|| and ||current|| per tensor, on the device.

    For update ratios: `previous` is the window's start, and the returned
    snapshot of `current` is the next window's start. Reductions run in
    float32. Nothing but the two (V,) results needs to reach the host.

    Torch uses its fused multi-tensor kernels (`torch._foreach_*`, no
    autograd) and copies into `previous` in place, so the snapshot costs
    no new memory; TensorFlow and JAX run one compiled function.

    Args:
        current: the tensors now (backend tensors or variables' values).
        previous: tensors of the same shapes from the window's start, as
            returned by an earlier call (`None`: just take the snapshot;
            the norms are then of `current` against itself).

    Returns:
        ``(delta_norms, norms, snapshot)``: two (V,) float32 backend
        tensors and a list of V tensors to pass as `previous` next time.
    """
    global _compiled_window_norms
    current = list(current)
    if name() == "torch":
        import torch

        with torch.no_grad():
            current = [c.detach() for c in current]
            if previous is None:
                previous = [torch.clone(c) for c in current]
            deltas = torch._foreach_sub(current, previous)
            dn = torch._foreach_norm(deltas, 2, dtype=torch.float32)
            nn = torch._foreach_norm(current, 2, dtype=torch.float32)
            torch._foreach_copy_(previous, current)
            return torch.stack(dn), torch.stack(nn), previous
    if _compiled_window_norms is None:
        _compiled_window_norms = compile_function(_window_norms_keras)
    return _compiled_window_norms(
        current, current if previous is None else list(previous))


def prepare_determinism() -> None:
    """Environment switches that must be set before a framework is imported.

    Called by the CLI before Keras loads: XLA's deterministic GPU ops (JAX,
    and TensorFlow's XLA) and TensorFlow without oneDNN's reordered float
    reductions.
    """
    import os

    flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_gpu_deterministic_ops" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " --xla_gpu_deterministic_ops=true").strip()
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def enable_determinism() -> list[str]:
    """Turns on what the active backend offers for determinism.

    Returns:
        What could not be made deterministic, one line each (empty when
        everything the run uses is covered).
    """
    import os

    backend = name()
    notes = []
    if backend == "torch":
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        notes.append(
            "torch: ops without a deterministic implementation only warn "
            "(use_deterministic_algorithms(warn_only=True)) rather than stop "
            "the run"
        )
    elif backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
        if os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0":
            notes.append(
                "tensorflow: oneDNN was already loaded with its reordered "
                "reductions; start Python with TF_ENABLE_ONEDNN_OPTS=0"
            )
    elif backend == "jax":
        if "--xla_gpu_deterministic_ops=true" not in os.environ.get("XLA_FLAGS", ""):
            notes.append(
                "jax: XLA_FLAGS lacks --xla_gpu_deterministic_ops=true (it must "
                "be set before jax starts; kerasft train --deterministic does)"
            )
    notes.append(
        "runs on different backends stay different in float32 round-off: "
        "determinism makes each backend repeat itself, not agree bit for bit"
    )
    return notes


def compile_function(fn):
    """`fn` (written with `keras.ops`) compiled the way the backend compiles.

    `tf.function` on TensorFlow and `jax.jit` on JAX, so a function of many
    small ops runs as one graph; torch runs it eagerly as it is (each op is
    dispatched as it comes, which is cheap on torch). The function is traced
    at its first call, per input shapes.

    Args:
        fn: a function of backend tensors (or nested lists of them).

    Returns:
        The compiled callable.
    """
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, reduce_retracing=True)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


def bincount(ids, length: int):
    """Counts of each value of the int tensor `ids` in ``[0, length)``.

    `keras.ops.bincount` cannot be compiled by JAX (its output length is
    data-dependent) and torch's generic segment reduction is a slow
    scatter on CPU; each framework's own bincount, given a fixed length,
    is fast and compiles. Values must lie in ``[0, length)``.

    Args:
        ids: a 1-D integer backend tensor.
        length: the number of counts.

    Returns:
        A (length,) integer backend tensor.
    """
    backend = name()
    if backend == "torch":
        import torch

        return torch.bincount(ids.reshape(-1), minlength=length)
    if backend == "jax":
        import jax.numpy as jnp

        return jnp.bincount(ids, length=length)
    import tensorflow as tf

    return tf.math.bincount(ids, minlength=length, maxlength=length)


def build_compiled_state(model, batch) -> None:
    """Builds a compiled model's loss and metrics from one (x, y) batch.

    At its first call after `compile`, `fit` builds the compiled loss and
    metrics from a batch it draws from the data itself. With a `PyDataset`
    whose workers run ahead (Keras's `OrderedEnqueuer`), that draw takes
    batch 0 out of the queue the epoch then reads, so on torch and jax the
    epoch would start at batch 1 (tensorflow reads its own copy). Building
    them here, from a batch the caller hands over, leaves fit nothing to
    draw. Uses Keras's private `Trainer._symbolic_build`: this is the one
    place that does.

    Args:
        model: a compiled Keras model.
        batch: one `(x, y)` batch as the data yields it.
    """
    model._symbolic_build(data_batch=tuple(batch))

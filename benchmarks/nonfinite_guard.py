"""What the non-finite guard costs per training step.

In one process, on the active backend (KERAS_BACKEND), ResNet50 (random
weights, all layers trained, Adam) on fixed random images, three settings
timed in alternating rounds (--rounds), each a `fit` of --steps steps:

- ``plain``: `model.fit` with no callback (Keras may then dispatch its
  per-batch callback work asynchronously and never waits for the loss);
- ``batch hook``: one callback with an empty `on_train_batch_end`: Keras
  then converts the logs (the loss) to Python floats after every step, a
  device sync. kerasft's runner always has such callbacks (its metrics
  logger, the progress bar), so this is the guard's anchor;
- ``guard``: `NonFiniteGuard` alone: the loss check on those floats, the
  gradient tap's on-device non-finite watch inside the step, the skip of a
  non-finite update (a host read inside the step on torch) and one int32
  pair read per step.

The guard runs on its own model (the tap changes the compiled step); both
models are built from the same seed and warmed up first. Printed: each
model's first fit (on TensorFlow and JAX it compiles the train step; the
guard's step holds the non-finite watch and the skip), the median ms per
step of each setting and, per round, the ratios guard / batch hook and
batch hook / plain, with their medians. Unset JAX_COMPILATION_CACHE_DIR to
time a compile rather than a cache load.

Measured on the 2-core CPU, jax, defaults, beside a test suite (load ~3):
with the skip written as a `where` per variable after the update, first
fits took 55 s (plain) and 352 s (guard; XLA warns of a very slow
compile), guard / batch hook 1.16 per step; with the `jax.lax.cond` it uses
now, 78 s and 81 s, and 1.39 per step (rounds 1.12-1.44). A compile is
paid per run and phase; the step cost on every step, so a long run of
tiny steps on a CPU pays more than before.

On torch it then times the per-step gradient check alone (a few ms, which
the whole-step rounds cannot resolve on a CPU): the fused L1 norm a GPU
runs beside the per-gradient sums a CPU runs, on the model's 214 gradient
shapes, in --trials interleaved trials. On the 2-core CPU (2 threads,
quiet): fused 15.2 ms, sums 8.2 ms a step (0.54x).

    KERAS_BACKEND=torch python benchmarks/nonfinite_guard.py
    KERAS_BACKEND=jax python benchmarks/nonfinite_guard.py --image-size 64 \\
        --batch-size 64 --steps 50 --rounds 5      # on a GPU
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=40,
                        help="torch: trials of the gradient check alone")
    args = parser.parse_args()

    import keras

    from kerasft import backend
    from kerasft.train.nonfinite_guard import NonFiniteGuard

    class BatchHook(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    def build():
        backend.seed_everything(0)
        model = keras.applications.ResNet50(
            weights=None, input_shape=(args.image_size,) * 2 + (3,),
            classes=10, classifier_activation=None)
        model.compile(optimizer=keras.optimizers.Adam(1e-4),
                      loss=keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True))
        return model

    rng = np.random.default_rng(0)
    n = args.steps * args.batch_size
    x = rng.random((n, args.image_size, args.image_size, 3), "float32")
    y = rng.integers(0, 10, n)
    plain_model, guard_model = build(), build()
    guard = NonFiniteGuard(detach_at_end=False)
    settings = {
        "plain": (plain_model, []),
        "batch hook": (plain_model, [BatchHook()]),
        "guard": (guard_model, [guard]),
    }

    def fit(name) -> float:
        model, callbacks = settings[name]
        t = time.perf_counter()
        model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0,
                  shuffle=False, callbacks=callbacks)
        return (time.perf_counter() - t) / args.steps

    print(f"backend {backend.name()} on {backend.device()}; ResNet50 "
          f"{args.image_size}px, batch {args.batch_size}, {args.steps} "
          f"steps a fit, {args.rounds} rounds", flush=True)
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        print("(jax's persistent compilation cache is on: first fits may "
              "load compiled steps instead of compiling them)")
    for name in settings:  # warm-up: compile, allocate
        first = fit(name) * args.steps
        if name != "batch hook":  # its model's step is compiled already
            print(f"first fit, {name}: {first:.1f} s", flush=True)
    times = {name: [] for name in settings}
    for r in range(args.rounds):
        order = list(settings)[r % 3:] + list(settings)[: r % 3]
        for name in order:
            times[name].append(fit(name))
        print(f"round {r + 1}: " + ", ".join(
            f"{k} {times[k][-1] * 1e3:.1f} ms" for k in settings), flush=True)
    for name in settings:
        print(f"{name:>11}: median {statistics.median(times[name]) * 1e3:.2f}"
              " ms/step")
    g = [a / b for a, b in zip(times["guard"], times["batch hook"])]
    h = [a / b for a, b in zip(times["batch hook"], times["plain"])]
    print("guard / batch hook per round: "
          + " ".join(f"{v:.3f}" for v in g)
          + f"; median {statistics.median(g):.3f}")
    print("batch hook / plain per round: "
          + " ".join(f"{v:.3f}" for v in h)
          + f"; median {statistics.median(h):.3f}")
    if backend.name() == "torch":
        _torch_check(guard_model, args.trials)


def _torch_check(model, trials: int) -> None:
    """torch's per-step gradient check alone, both of its reductions.

    The whole-step ratios above cannot resolve a few ms on a CPU step of
    ~1 s. This times `_nonfinite_torch` directly on tensors of the model's
    trainable shapes, on its device: the fused L1 norm (what a GPU runs)
    and the per-gradient sums (what a CPU runs), in interleaved trials.
    """
    import torch

    from kerasft.backend.gradient_tap import _nonfinite_torch

    device = model.trainable_variables[0].value.device
    gen = torch.Generator(device=device).manual_seed(0)
    grads = [torch.randn(tuple(v.shape), generator=gen, device=device)
             for v in model.trainable_variables]
    size = sum(g.numel() for g in grads)

    def once(fused: bool) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        _nonfinite_torch(grads, fused).any().item()  # the guard's host read
        return time.perf_counter() - t

    times = {True: [], False: []}
    for fused in (True, False):  # warm-up
        once(fused)
    for i in range(trials):
        for fused in ((True, False) if i % 2 else (False, True)):
            times[fused].append(once(fused))
    print(f"\ngradient check alone ({len(grads)} gradients, {size / 1e6:.1f}M "
          f"entries, {device}, {torch.get_num_threads()} threads), "
          f"{trials} interleaved trials, ms: median (min-max)")
    for fused, label in ((True, "fused L1 norm (GPU path)"),
                         (False, "sum per gradient (CPU path)")):
        v = [t * 1e3 for t in times[fused]]
        print(f"  {label:28s} {statistics.median(v):7.2f} "
              f"({min(v):.2f}-{max(v):.2f})")
    ratio = statistics.median(times[False]) / statistics.median(times[True])
    print(f"  sums / fused: {ratio:.2f}")


if __name__ == "__main__":
    main()

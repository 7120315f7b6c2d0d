"""Images/s of the data pipeline, plain `model.fit`, and kerasft's training.

All three are measured in this one process, on the active backend
(KERAS_BACKEND), for the same model, batch size and images, and printed side
by side with their ratios. Each figure is the median of --repeats timed
epochs after one warm-up epoch (TensorFlow's CPU speed flips between runs;
a median of 3 or more is needed).

    KERAS_BACKEND=torch python benchmarks/throughput.py --steps 20
    # on a GPU: ResNet50 at 224 px in mixed precision, as a real run
    KERAS_BACKEND=jax python benchmarks/throughput.py --image-size 224 \\
        --precision mixed_bfloat16 --steps 30

kerasft's side feeds `model.fit` the way `kerasft train` does: its
`Batches` through Keras's PyDataset workers (--workers, default one per
core up to 16; a comma list times each), resizing the native 8x8 digits per
batch, with its per-step `MetricsLogger`; plain `model.fit` gets the same
images already resized, as in-memory arrays. Between the two, `model.fit`
of the same `Batches` with no callback separates the input path's cost from
the per-step host sync that any callback with a batch hook brings (Keras
converts the step's logs to numbers before calling it). --profile adds one
batch's host-to-device copy time and a cProfile of one more kerasft fit
(the thread that feeds the model).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="steps per epoch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=1,
                   help="epochs per timed fit (more steps per timing)")
    p.add_argument("--plan", default="full", choices=("full", "head"))
    p.add_argument("--precision", default="float32",
                   choices=("float32", "mixed_bfloat16", "mixed_float16"))
    p.add_argument("--jit-compile", default="auto",
                   choices=("auto", "true", "false"))
    p.add_argument("--workers", default=None,
                   help="data workers, or a comma list to time kerasft's "
                   "loop with each (default: kerasft's, one per core)")
    p.add_argument("--profile", action="store_true",
                   help="after the timings, one more kerasft fit (first "
                   "worker count) under cProfile: where the thread that "
                   "feeds the model spends its time")
    p.add_argument("--switch-interval", type=float, default=None,
                   help="sys.setswitchinterval for the whole run (Python's "
                   "default 0.005 s): whether the GIL hand-over between "
                   "the data threads and the thread that feeds the model "
                   "limits the loop (see README, \"Measured on GPUs\")")
    args = p.parse_args()
    if args.switch_interval is not None:
        import sys

        sys.setswitchinterval(args.switch_interval)
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]

    import keras
    import numpy as np

    from kerasft import backend
    from kerasft.config import DataConfig, ModelConfig, PlanConfig, TrainConfig
    from kerasft.data import Batches, default_workers, load_splits
    from kerasft.model import apply_phase, build_model, make_phases
    from kerasft.train import EpochCheckpoint, MetricsLogger

    backend.seed_everything(0)
    splits = load_splits(
        DataConfig(source="builtin", name="digits", image_size=args.image_size),
        0,
    )
    bs, steps = args.batch_size, args.steps
    worker_counts = ([int(w) for w in args.workers.split(",")]
                     if args.workers else [default_workers()])
    by_workers = {w: Batches(
        splits.train, bs, args.image_size, args.arch, 0, shuffle=True,
        max_steps=steps, workers=w,
    ) for w in worker_counts}
    batches = by_workers[worker_counts[0]]
    images_per_fit = bs * steps * args.epochs

    # 1. the pipeline alone: one thread building each batch from the native
    # 8x8 digits (resize, preprocess), what one worker does inside fit
    def pipeline_epoch():
        for _ in range(args.epochs):
            for i in range(len(batches)):
                batches[i]

    # 2. plain model.fit on preprocessed in-memory arrays
    x = np.concatenate([batches[i][0] for i in range(steps)])
    y = np.concatenate([batches[i][1] for i in range(steps)])

    def new_model():
        m = build_model(ModelConfig(arch=args.arch, weights="none"),
                        splits.num_classes, args.image_size,
                        precision=args.precision)
        (phase,) = make_phases(PlanConfig(kind=args.plan), TrainConfig(1))
        apply_phase(m, phase, "train" if args.plan == "full" else "inference")
        m.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=jit,
        )
        return m

    plain = new_model()
    ours = new_model()
    tmp = os.path.join("/tmp", f"kerasft-bench-{os.getpid()}")
    callbacks = [MetricsLogger(os.path.join(tmp, "metrics.csv"), "full", bs)]
    os.makedirs(tmp, exist_ok=True)

    def timed(fn):
        fn()  # warm-up (compilation, caches)
        out = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            out.append(images_per_fit / (time.perf_counter() - t))
        return statistics.median(out)

    pipe = timed(pipeline_epoch)
    fit_plain = timed(
        lambda: plain.fit(x, y, batch_size=bs, epochs=args.epochs,
                          shuffle=False, verbose=0)
    )
    # kerasft: the training loop `kerasft train` runs (Batches + its
    # per-epoch logger). The per-epoch checkpoint is timed on its own below.
    # The same Batches with no callback: what the input path alone costs,
    # apart from the per-step host sync that any callback with a batch
    # hook causes (Keras converts the logs to numbers after every step).
    fit_batches = timed(
        lambda: ours.fit(batches, epochs=args.epochs, verbose=0))
    fit_ours = {w: timed(
        lambda b=b: ours.fit(b, epochs=args.epochs, verbose=0,
                             callbacks=callbacks)
    ) for w, b in by_workers.items()}
    ckpt = EpochCheckpoint(os.path.join(tmp, "ckpt"))
    ckpt.set_model(ours)
    ckpt.params = {"epochs": 1}
    ckpt.on_train_begin()
    t = time.perf_counter()
    ckpt.on_epoch_end(0)
    ckpt_seconds = time.perf_counter() - t
    best = max(fit_ours.values())
    epoch_seconds = len(splits.train) / best
    print(
        f"backend {keras.backend.backend()} on {backend.device()} | "
        f"{args.arch} {args.plan} {args.image_size}px batch {bs}, "
        f"{args.precision}, jit_compile {ours.jit_compile}, "
        f"{steps} steps/epoch x {args.epochs} epoch(s) per timed "
        f"fit, median of {args.repeats}, GIL switch interval "
        f"{__import__('sys').getswitchinterval() * 1e3:g} ms"
    )
    print(f"  input pipeline, 1 thread {pipe:9.1f} img/s "
          f"({pipe / best:.1f}x the training speed)")
    print(f"  plain model.fit(arrays) {fit_plain:10.1f} img/s")
    print(f"  model.fit(Batches, {worker_counts[0]:2d} workers), no callbacks "
          f"{fit_batches:7.1f} img/s (ratio to plain model.fit: "
          f"{fit_batches / fit_plain:.3f})")
    for w, rate in fit_ours.items():
        print(f"  kerasft loop, {w:2d} workers {rate:9.1f} img/s "
              f"(ratio to plain model.fit: {rate / fit_plain:.3f})")
    print(f"  one checkpoint write    {ckpt_seconds:10.2f} s "
          f"({ckpt_seconds / epoch_seconds:.1%} of a {len(splits.train)}-image "
          "epoch at this speed)")
    if args.profile:
        # One batch's host-to-device copy, as Keras's data path does it
        # (for JAX, jax.device_put; for torch, a copy to the device).
        xb = batches[0][0]

        def to_device():
            t = keras.ops.convert_to_tensor(xb)
            if keras.backend.backend() == "jax":
                t.block_until_ready()
            else:
                keras.ops.convert_to_numpy(keras.ops.sum(t[:1, :1, :1]))

        copies = []
        for _ in range(20):
            t0 = time.perf_counter()
            to_device()
            copies.append(time.perf_counter() - t0)
        print(f"  one batch to the device ({xb.nbytes / 2**20:.1f} MiB "
              f"{xb.dtype}): {statistics.median(copies[5:]) * 1e3:.2f} ms "
              f"(median of 15)")
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        ours.fit(batches, epochs=args.epochs, verbose=0, callbacks=callbacks)
        prof.disable()
        print(f"\nkerasft fit with {worker_counts[0]} workers under cProfile "
              "(the main thread, which feeds the model), by own time:")
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
        print("... and by cumulative time:")
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

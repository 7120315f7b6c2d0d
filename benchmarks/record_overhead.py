"""What recording costs: the same training with and without the recorders.

In one process, on the active backend (KERAS_BACKEND): train the same model
on the same batches for the same epochs, once with no recorders, once with
the default ones (`kerasft train`'s defaults: scalars every step, gradient
norms and update ratios every 50 steps, histograms, activations, embeddings,
probe gradients and BatchNorm drift per epoch), alternating the two for
--repeats rounds, and print the median ratio. Then time each recorder's
per-epoch work on its own, so the note can say what each one costs.

    KERAS_BACKEND=torch python benchmarks/record_overhead.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-train-images", type=int, default=None,
                   help="default: all 1,295 digits training images")
    args = p.parse_args()

    import keras

    from kerasft import backend
    from kerasft.config import RunConfig
    from kerasft.data import load_splits
    from kerasft.model import apply_phase, build_model, make_phases
    from kerasft.train.runner import _batches, make_recorders

    cfg = RunConfig()
    cfg.data.source, cfg.data.name = "builtin", "digits"
    cfg.data.image_size, cfg.data.batch_size = args.image_size, args.batch_size
    cfg.data.max_train_images = args.max_train_images
    cfg.model.weights = "none"
    cfg.plan.kind, cfg.plan.batchnorm = "full", "train"
    backend.seed_everything(0)
    splits = load_splits(cfg.data, cfg.seed)
    batches = _batches(cfg, splits.train, True)

    def new_model():
        m = build_model(cfg.model, splits.num_classes, args.image_size)
        (phase,) = make_phases(cfg.plan, cfg.train)
        apply_phase(m, phase, "train")
        m.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return m

    plain_model, rec_model = new_model(), new_model()
    # Warm up both outside the timings: compile the train steps, the
    # recording one with its gradient tap already in it (the tap is kept by
    # the optimizer, so later recorders reuse this compiled step).
    plain_model.fit(batches, epochs=1, steps_per_epoch=2, verbose=0,
                    shuffle=False)
    warm = tempfile.mkdtemp(prefix="kerasft-bench-")
    rec_model.fit(batches, epochs=1, steps_per_epoch=2, verbose=0,
                  shuffle=False,
                  callbacks=make_recorders(cfg, splits, Path(warm)))
    shutil.rmtree(warm, ignore_errors=True)

    def recorders(tmp, which):
        recs = make_recorders(cfg, splits, Path(tmp))
        if which == "target":
            # the target: gradient norms every 50 steps and full
            # histograms per epoch
            recs = [r for r in recs if type(r).__name__ in
                    ("WeightRecorder", "GradientRecorder")]
        return recs

    def run(model, which):
        tmp = tempfile.mkdtemp(prefix="kerasft-bench-")
        try:
            recs = recorders(tmp, which) if which else []
            # Epoch 0 (the initial state) is recorded once per run, before
            # training; time it apart from the steady per-epoch cost.
            for r in recs:
                r.set_model(model)
                r.on_train_begin()
            t = time.perf_counter()
            model.fit(batches, epochs=args.epochs, verbose=0, callbacks=recs,
                      shuffle=False)
            return time.perf_counter() - t
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    times = {None: [], "target": [], "all": []}
    for _ in range(args.repeats):
        for which in times:
            times[which].append(run(rec_model if which else plain_model, which))

    steps = len(batches) * args.epochs
    base = statistics.median(times[None])
    print(
        f"backend {keras.backend.backend()} | resnet50 full {args.image_size}px "
        f"batch {args.batch_size}, {args.epochs} epoch(s) x {len(batches)} "
        f"steps ({steps} steps), median of {args.repeats} alternating rounds"
    )
    print(f"  without recorders                 {base:8.2f} s")
    for which, label in (("target", "weights + gradients (target set)"),
                         ("all", "all default recorders")):
        med = statistics.median(times[which])
        ratios = [b / a for a, b in zip(times[None], times[which])]
        print(f"  {label:33s} {med:8.2f} s  ratio "
              f"{statistics.median(ratios):.3f}  (rounds: "
              f"{', '.join(f'{r:.3f}' for r in ratios)})")
    plain_t = times[None]

    # Per-recorder cost of one epoch-end record, timed on its own.
    tmp = tempfile.mkdtemp(prefix="kerasft-bench-")
    try:
        recs = make_recorders(cfg, splits, Path(tmp))
        rec_model.fit(batches, epochs=1, steps_per_epoch=1, verbose=0,
                      callbacks=recs)
        epoch_seconds = statistics.median(plain_t) / args.epochs
        print(f"  per-epoch record cost (one epoch without recorders: "
              f"{epoch_seconds:.1f} s):")
        for r in recs:
            if not hasattr(r, "record"):
                continue
            t = time.perf_counter()
            r.record(99)
            dt = time.perf_counter() - t
            print(f"    {type(r).__name__:24s} {dt:7.3f} s "
                  f"({dt / epoch_seconds:.1%} of an epoch)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

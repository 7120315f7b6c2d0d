"""What recording costs: training with and without the recorders, beside
Keras's own `keras.callbacks.TensorBoard(histogram_freq=1)`.

In one process, on the active backend (KERAS_BACKEND), ResNet50 (random
weights, all layers trained) on the digits training images:

1. Whole epochs, alternating rounds (--repeats): the same batches with no
   recorders, with Keras's TensorBoard callback writing weight histograms
   every epoch (the anchor), with kerasft's weights + gradients recorders
   (the issue's target set) and with all default recorders. Ratios are per
   round against the no-recorder run of the same round; the median is
   printed with every round's ratio.
2. The compiled train step itself (`model.train_on_batch` on one fixed
   batch), with and without the gradient tap, in --trials short interleaved
   trials of --trial-steps steps each (the order rotates every trial). Three
   settings: no tap; tap attached but no step due (what every unrecorded
   step pays); tap recording every step. The tap's cost per step averaged
   over training at the default schedule (one step in 50 recorded) is
   ``(49 * unrecorded + recorded) / 50`` from the paired per-trial
   differences. Median and IQR are printed, in ms per step.
3. Each recorder's own work, called directly (median of --record-repeats):
   the per-epoch `record()` of every default recorder, and the host work of
   a recorded step of `GradientRecorder` and `UpdateRatioRecorder`.

    KERAS_BACKEND=torch python benchmarks/record_overhead.py
    # shorter (~2 minutes on 2 cores): fewer images, rounds and trials
    KERAS_BACKEND=torch python benchmarks/record_overhead.py \\
        --max-train-images 320 --repeats 2 --trials 10

Flags: --epochs/--repeats/--max-train-images size part 1 (the default,
one 1,295-image epoch x 3 rounds, is the issue's setting); --trials and
--trial-steps size part 2; --record-repeats part 3; --skip-epochs,
--skip-step and --skip-record leave a part out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _iqr(values) -> tuple[float, float, float]:
    q1, med, q3 = np.percentile(np.asarray(values, dtype=float), [25, 50, 75])
    return float(med), float(q1), float(q3)


def _fmt_ms(values) -> str:
    med, q1, q3 = _iqr(values)
    return f"{med * 1e3:8.2f} ms  (IQR {q1 * 1e3:.2f} .. {q3 * 1e3:.2f})"


def _time_rows(rows, reps: int, epoch_seconds: float | None) -> None:
    """Times each ``(label, call)`` (median of `reps`, after one untimed
    call that traces/compiles where the backend does) and prints it."""
    for label, call in rows:
        call()
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            call()
            ts.append(time.perf_counter() - t)
        dt = statistics.median(ts)
        share = (f"  ({dt / epoch_seconds:.1%} of an epoch)"
                 if epoch_seconds else "")
        print(f"  {label:52s} {dt * 1e3:9.1f} ms{share}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-train-images", type=int, default=None,
                   help="default: all 1,295 digits training images")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--trial-steps", type=int, default=5)
    p.add_argument("--record-repeats", type=int, default=3)
    p.add_argument("--every-steps", type=int, default=50,
                   help="the recording schedule averaged over in part 2")
    p.add_argument("--precision", default="float32",
                   choices=("float32", "mixed_bfloat16", "mixed_float16"))
    p.add_argument("--jit-compile", default="auto",
                   choices=("auto", "true", "false"))
    p.add_argument("--skip-epochs", action="store_true")
    p.add_argument("--skip-step", action="store_true")
    p.add_argument("--skip-record", action="store_true")
    args = p.parse_args()
    # Each part's table as soon as it is measured (also when piped to a
    # file and cut short by a timeout).
    sys.stdout.reconfigure(line_buffering=True)

    import keras

    from kerasft import backend
    from kerasft.backend.gradient_tap import GradientTap
    from kerasft.config import RunConfig
    from kerasft.data import load_splits
    from kerasft.model import apply_phase, build_model, make_phases
    from kerasft.record import (
        ActivationRecorder,
        GradientRecorder,
        UpdateRatioRecorder,
        WeightRecorder,
    )
    from kerasft.record.recorder import tracked_variables
    from kerasft.train.runner import _batches, make_recorders

    cfg = RunConfig()
    cfg.data.source, cfg.data.name = "builtin", "digits"
    cfg.data.image_size, cfg.data.batch_size = args.image_size, args.batch_size
    cfg.data.max_train_images = args.max_train_images
    cfg.model.weights = "none"
    cfg.plan.kind, cfg.plan.batchnorm = "full", "train"
    cfg.train.precision = args.precision
    cfg.train.jit_compile = {"auto": "auto", "true": True,
                             "false": False}[args.jit_compile]
    backend.seed_everything(0)
    splits = load_splits(cfg.data, cfg.seed)
    batches = _batches(cfg, splits.train, True)

    def new_model():
        m = build_model(cfg.model, splits.num_classes, args.image_size,
                        precision=cfg.train.precision)
        (phase,) = make_phases(cfg.plan, cfg.train)
        apply_phase(m, phase, "train")
        m.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=cfg.train.jit_compile,
        )
        return m

    # Keras's TensorBoard callback writes through `tensorflow.summary`: the
    # anchor needs TensorFlow installed, whatever the backend.
    try:
        import tensorflow  # noqa: F401

        no_anchor = None
    except ImportError as e:
        no_anchor = f"keras.callbacks.TensorBoard needs TensorFlow ({e})"

    def tensorboard(tmp):
        if no_anchor:
            return []
        return [keras.callbacks.TensorBoard(log_dir=tmp, histogram_freq=1)]

    def recorders(tmp, which):
        recs = make_recorders(cfg, splits, Path(tmp))
        if which == "target":
            recs = [r for r in recs if type(r).__name__ in
                    ("WeightRecorder", "GradientRecorder")]
        return recs

    plain_model, rec_model = new_model(), new_model()
    n_vars = len(tracked_variables(rec_model))
    n_params = sum(int(np.prod(v.shape)) for v in tracked_variables(rec_model))
    # Warm up outside the timings: compile both train steps (the recording
    # one with its gradient tap in it; make_recorders keeps the tap on the
    # optimizer, so later fits reuse this step) and start TensorBoard's
    # writer once.
    for model, cbs in ((plain_model, tensorboard), (rec_model, recorders)):
        warm = tempfile.mkdtemp(prefix="kerasft-bench-")
        model.fit(batches, epochs=1, steps_per_epoch=2, verbose=0,
                  shuffle=False,
                  callbacks=cbs(warm) if cbs is tensorboard else
                  cbs(warm, "all"))
        shutil.rmtree(warm, ignore_errors=True)

    print(f"backend {keras.backend.backend()} on {backend.device()} | "
          f"resnet50 ({n_vars} variables, {n_params / 1e6:.1f}M parameters) "
          f"trained in full, {args.image_size} px, batch {args.batch_size}, "
          f"{args.precision}, jit_compile {rec_model.jit_compile}, "
          f"{batches.workers} data workers")
    if no_anchor:
        print(f"  no TensorBoard anchor: {no_anchor}")

    # ------------------------------------------------ 1. whole epochs
    epoch_seconds = None
    if not args.skip_epochs:
        settings = {
            "none": (plain_model, lambda tmp: []),
            **({} if no_anchor else {"tensorboard": (plain_model, tensorboard)}),
            "target": (rec_model, lambda tmp: recorders(tmp, "target")),
            "all": (rec_model, lambda tmp: recorders(tmp, "all")),
        }

        def run(which):
            model, make = settings[which]
            tmp = tempfile.mkdtemp(prefix="kerasft-bench-")
            try:
                cbs = make(tmp)
                # Epoch 0 (the initial state) is recorded once per run,
                # before training: it is part of recording's cost only
                # once a run, so it is left out of the epoch timing.
                for r in cbs:
                    if hasattr(r, "record"):
                        r.set_model(model)
                        r.on_train_begin()
                t = time.perf_counter()
                model.fit(batches, epochs=args.epochs, verbose=0,
                          callbacks=cbs, shuffle=False)
                return time.perf_counter() - t
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

        times = {k: [] for k in settings}
        order = list(settings)
        for i in range(args.repeats):
            for which in order[i % len(order):] + order[:i % len(order)]:
                times[which].append(run(which))
        steps = len(batches) * args.epochs
        base = statistics.median(times["none"])
        epoch_seconds = base / args.epochs
        print(f"\n1. whole epochs: {args.epochs} epoch(s) x {len(batches)} "
              f"steps ({len(batches) * args.batch_size} images), median of "
              f"{args.repeats} alternating rounds")
        print(f"  {'setting':40s} {'seconds':>8s} {'ms/step':>8s}  ratio "
              f"(per round)")
        labels = {
            "none": "no recorders (plain fit)",
            "tensorboard": "keras TensorBoard(histogram_freq=1)",
            "target": "kerasft weights + gradients",
            "all": "kerasft all default recorders",
        }
        ratio = {}
        for which, label in labels.items():
            if which not in times:
                continue
            med = statistics.median(times[which])
            rs = [b / a for a, b in zip(times["none"], times[which])]
            ratio[which] = statistics.median(rs)
            print(f"  {label:40s} {med:8.2f} {med / steps * 1e3:8.1f}  "
                  f"{ratio[which]:.3f} ({', '.join(f'{r:.3f}' for r in rs)})")
        if "tensorboard" in ratio and ratio["tensorboard"] > 1:
            print(f"  weights+gradients overhead / TensorBoard overhead: "
                  f"{(ratio['target'] - 1) / (ratio['tensorboard'] - 1):.2f}"
                  "  (target < 1)")
        elif "tensorboard" in ratio:
            print("  weights+gradients overhead / TensorBoard overhead: not "
                  "resolved (TensorBoard's own overhead came out <= 0: the "
                  "rounds' noise is larger than it; see part 2)")
        print(f"  all recorders: {ratio['all']:.3f}x (target <= 1.05)")

    # ------------------------------------------------ 2. the train step
    if not args.skip_step:
        x, y = batches[0]
        tap = GradientTap.attach(rec_model.optimizer,
                                 tracked_variables(rec_model))
        never = 2 ** 30  # no apply number reaches it: nothing is recorded
        setting = {
            "no tap": (plain_model, None),
            "tap, step not recorded": (rec_model, never),
            "tap, step recorded": (rec_model, 1),
        }
        for model, every in setting.values():  # warm each path once
            if every:
                tap.schedule(every)
            model.train_on_batch(x, y)
        per_step = {k: [] for k in setting}
        names = list(setting)
        for i in range(args.trials):
            for name in names[i % 3:] + names[:i % 3]:
                model, every = setting[name]
                if every:
                    tap.schedule(every)
                t = time.perf_counter()
                for _ in range(args.trial_steps):
                    model.train_on_batch(x, y)
                per_step[name].append(
                    (time.perf_counter() - t) / args.trial_steps)
        none = np.asarray(per_step["no tap"])
        d_skip = np.asarray(per_step["tap, step not recorded"]) - none
        d_rec = np.asarray(per_step["tap, step recorded"]) - none
        n = args.every_steps
        d_avg = ((n - 1) * d_skip + d_rec) / n
        print(f"\n2. compiled train step (train_on_batch), {args.trials} "
              f"interleaved trials x {args.trial_steps} steps, per step: "
              f"median (IQR)")
        for name in names:
            print(f"  {name:40s} {_fmt_ms(per_step[name])}")
        print("  tap cost, paired with the no-tap trial of the same round:")
        print(f"  {'unrecorded step':40s} {_fmt_ms(d_skip)}")
        print(f"  {'recorded step':40s} {_fmt_ms(d_rec)}")
        print(f"  {f'averaged over training (1 in {n})':40s} "
              f"{_fmt_ms(d_avg)}  (target <= 1 ms)")
        print(f"  {'(averaged over training (every step))':40s} "
              f"{_fmt_ms(d_rec)}")

    # ------------------------------------------------ 3. recorders' own work
    if not args.skip_record:
        tmp = tempfile.mkdtemp(prefix="kerasft-bench-")
        try:
            recs = make_recorders(cfg, splits, Path(tmp))
            rec_model.fit(batches, epochs=1, steps_per_epoch=1, verbose=0,
                          callbacks=recs, shuffle=False)
            reps = args.record_repeats
            print(f"\n3. recorders called directly, median of {reps}"
                  + (f" (one epoch without recorders: {epoch_seconds:.1f} s)"
                     if epoch_seconds else ""))
            rows = []
            for r in recs:
                if not hasattr(r, "record"):
                    continue
                rows.append((f"{type(r).__name__}.record (per epoch)",
                             lambda r=r: r.record(99)))
            # Both reductions of the weight and activation histograms, on
            # the device (the default on accelerators) and in numpy (the
            # default on a CPU), timed here whatever the device.
            probe = next(r.x for r in recs
                         if isinstance(r, ActivationRecorder))
            for on_device in (True, False):
                for r in (WeightRecorder(Path(tmp) / f"w{on_device}",
                                         on_device=on_device),
                          ActivationRecorder(Path(tmp) / f"a{on_device}",
                                             probe, on_device=on_device)):
                    r.set_model(rec_model)
                    r.on_train_begin()
                    rows.append((f"{type(r).__name__}.record, "
                                 f"on_device={on_device}",
                                 lambda r=r: r.record(99)))
            _time_rows(rows, reps, epoch_seconds)
            # A recorded step's own work (every --every-steps steps), after
            # the per-epoch rows: these reset the tap's schedule.
            rows, step_recs = [], [
                GradientRecorder(Path(tmp) / "steps", every_steps=1,
                                 detach_at_end=False)]
            for on_device in (False, True):
                step_recs.append(UpdateRatioRecorder(
                    Path(tmp) / f"steps{on_device}", every_steps=1,
                    on_device=on_device))
            for r in step_recs:
                r.set_model(rec_model)
                r.on_train_begin()
                label = f"{type(r).__name__} recorded step"
                if isinstance(r, UpdateRatioRecorder):
                    label += f", on_device={r.on_device}"
                rows.append((label, lambda r=r: r.on_train_batch_end(0)))
            _time_rows(rows, reps, epoch_seconds)
            for r in step_recs:
                r.on_train_end()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

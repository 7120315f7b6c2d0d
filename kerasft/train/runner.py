"""`kerasft train`: data -> model -> phases of `model.fit` -> test -> run dir.

Nothing is written before the data and the weights are in hand, so a bad
config or an offline download leaves no half-made run directory behind.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

import kerasft
from kerasft import backend
from kerasft.config import AUTO_POINTS, OptimizerConfig, RunConfig, save_config
from kerasft.data import Batches, DataSplits, default_workers, load_splits
from kerasft.errors import NonFiniteError
from kerasft.backend.lr_multipliers import set_lr_multipliers
from kerasft.model import (
    apply_phase, build_model, make_phases, resolve_weights,
)
from kerasft.model.plan import Phase, variable_lr_multipliers
from kerasft.rundir import (
    FORMAT_VERSION,
    atomic_path,
    create_run_dir,
    running_status,
    write_json,
)
from kerasft.train.epoch_checkpoint import EpochCheckpoint
from kerasft.train.heartbeat import Heartbeat
from kerasft.train.metrics_logger import MetricsLogger
from kerasft.train.nonfinite_guard import NonFiniteGuard

log = logging.getLogger(__name__)

# Inference-mode accuracy on (at most) this many training images is measured
# after training, next to the training-mode accuracy Keras reports.
TRAIN_EVAL_IMAGES = 1000


@dataclass
class RunResult:
    """What `train` returns.

    Attributes:
        run_dir: the new run directory.
        test: test metrics (``loss``, ``accuracy``, ...).
        train_eval: metrics on training images in inference mode.
        seconds: wall time of the whole run.
        warnings: problems outside the diagnosis (a failed TensorBoard
            export).
        report: the report's index.html, if one was rendered.
        findings: the diagnosis of the run
            (`kerasft.render.diagnose.diagnose`), most serious first.
    """

    run_dir: Path
    test: dict
    train_eval: dict
    seconds: float
    warnings: list
    report: Path | None = None
    findings: list = field(default_factory=list)


def make_optimizer(
    cfg: OptimizerConfig, lr_factor: float, total_steps: int
) -> keras.optimizers.Optimizer:
    """The configured optimizer with its learning-rate schedule."""
    lr = cfg.learning_rate * lr_factor
    if cfg.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, max(total_steps, 1))
    common = {"learning_rate": lr, "clipnorm": cfg.clipnorm}
    if cfg.weight_decay:
        common["weight_decay"] = cfg.weight_decay
    if cfg.name == "sgd":
        return keras.optimizers.SGD(momentum=cfg.momentum, **common)
    if cfg.name == "adam":
        return keras.optimizers.Adam(**common)
    return keras.optimizers.AdamW(**common)


def phase_optimizer(
    cfg: OptimizerConfig, phase: Phase, model: keras.Model, total_steps: int
) -> keras.optimizers.Optimizer:
    """The optimizer of one phase: `make_optimizer` at the phase's rate,
    each stage's variables scaled by the phase's multipliers (plan options
    ``lr_decay_per_stage`` / ``lr_multipliers``; see
    `kerasft.backend.lr_multipliers`).

    Args:
        cfg: the optimizer section of the run config.
        phase: the phase about to be trained.
        model: the model, with its layers' stage names.
        total_steps: training steps of the phase (the schedule's length).

    Returns:
        An optimizer for `model.compile`.
    """
    optimizer = make_optimizer(cfg, phase.lr_factor, total_steps)
    multipliers = variable_lr_multipliers(model, phase)
    if any(m != 1.0 for m in multipliers.values()):
        set_lr_multipliers(optimizer, multipliers)
    return optimizer


def compile_phase(model: keras.Model, cfg: RunConfig,
                  optimizer: keras.optimizers.Optimizer) -> None:
    """Compiles `model` as every phase (and its range test) trains it."""
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=cfg.train.jit_compile,
    )


def _auto_learning_rate(cfg: RunConfig, model: keras.Model,
                        splits: DataSplits, phases: list, index: int,
                        run_dir: Path, inside: bool) -> tuple[float, str]:
    """`optimizer.learning_rate: auto`: the phase's range test, from the
    weights the model holds now (the earlier phases' result), saved as
    ``lr_find/phase-N-<name>.json`` and ``.png``; returns (rate, json path
    relative to the run). A run resumed inside the phase reuses its test."""
    from kerasft.errors import KerasftError
    from kerasft.render.lr_find import save_plot
    from kerasft.rundir import read_json
    from kerasft.train.lr_find import phase_lr_find, result_name

    phase = phases[index]
    rel = f"lr_find/{result_name(index, phase.name)}.json"
    path = run_dir / rel
    if inside and path.is_file():
        suggestion = read_json(path).get("suggestion")
        if isinstance(suggestion, float):
            return suggestion, rel
    weights = (f"the run's initial weights (model.weights: "
               f"{cfg.model.weights})" if index == 0 else
               f"this run's weights at the end of phase {index} "
               f"({phases[index - 1].name}, epoch "
               f"{sum(p.epochs for p in phases[:index])})")
    print(f"kerasft: LR range test for phase {index + 1} ({phase.name}), "
          f"from {weights}")
    result = phase_lr_find(cfg, model, splits, phase, index, weights,
                           verbose=True)
    path.parent.mkdir(exist_ok=True)
    write_json(path, result.to_dict())
    save_plot(result.to_dict(), path.with_suffix(".png"))
    print(f"kerasft: LR range test, phase {index + 1} ({phase.name}): "
          f"{result.note} ({len(result.losses)} steps, "
          f"{result.seconds:.0f} s; plot {path.with_suffix('.png')})")
    if result.suggestion is None:
        raise KerasftError(
            f"optimizer.learning_rate auto: the LR range test of phase "
            f"{index + 1} ({phase.name}) gives no rate ({result.note}); "
            f"see {path.with_suffix('.png')}. Set optimizer.learning_rate "
            "(--lr) to a number.")
    return result.suggestion, rel


def weights_fingerprint(model: keras.Model) -> str:
    """sha256 over every variable's path and float32 bytes, in model order.

    The same weights give the same fingerprint on every backend, so two
    runs can be checked for "same start" without loading their files.
    """
    import hashlib

    h = hashlib.sha256()
    for v in model.weights:
        h.update(v.path.encode())
        h.update(np.ascontiguousarray(
            keras.ops.convert_to_numpy(v), dtype=np.float32).tobytes())
    return h.hexdigest()


def environment(cfg: RunConfig) -> dict:
    """The environment record saved as env.json."""
    return {
        "format_version": FORMAT_VERSION,
        "kerasft": kerasft.__version__,
        "backend": backend.name(),
        "keras": keras.__version__,
        "framework": backend.framework_version(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": backend.device(),
        "seed": cfg.seed,
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def precision_record(model: keras.Model, cfg: RunConfig) -> dict:
    """The numeric setup for env.json: precision, policy, jit, loss scaling.

    Before `compile`, ``jit_compile`` is the configured value and
    ``loss_scaling`` is unknown (None); after it, what Keras resolved.
    """
    policy = model.dtype_policy
    compiled = getattr(model, "compiled", False)
    return {
        "precision": cfg.train.precision,
        "dtype_policy": policy.name,
        "compute_dtype": policy.compute_dtype,
        "variable_dtype": policy.variable_dtype,
        "jit_compile": model.jit_compile if compiled else cfg.train.jit_compile,
        "loss_scaling": (
            isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
            if compiled else None
        ),
    }


def _weights_record(cfg: RunConfig) -> dict:
    """What `model.weights` loaded, for env.json: the file, and for a run
    directory (transfer) that only its backbone was loaded."""
    file, backbone_only = resolve_weights(cfg.model.weights, cfg.model.arch)
    if file is None:
        return {}
    record = {"initial_weights_file": str(Path(file).resolve())}
    if backbone_only:
        record["initial_weights_loaded"] = "backbone"
        record["initial_weights_run"] = str(Path(file).resolve().parent)
        record["initial_weights_note"] = (
            "the final weights of that run: backbone loaded, head new "
            "(a new task)")
    return record


def _data_record(splits: DataSplits) -> dict:
    return {
        "description": splits.description,
        "class_names": splits.class_names,
        "sizes": {
            "train": len(splits.train),
            "validation": len(splits.validation) if splits.validation else 0,
            "test": len(splits.test),
        },
    }


def _batches(cfg: RunConfig, split, train: bool, max_steps=None,
             epochs=None, start_epoch=0) -> Batches:
    d = cfg.data
    return Batches(
        split,
        d.batch_size,
        d.image_size,
        cfg.model.arch,
        cfg.seed,
        shuffle=train,
        max_steps=max_steps,
        flip=train and d.augment_flip,
        crop_pad=d.augment_crop_pad if train else 0,
        epochs=epochs,
        start_epoch=start_epoch,
        workers=d.workers or default_workers(),
    )


def make_recorders(cfg: RunConfig, splits: DataSplits, run_dir: Path,
                   start_step: int = 0, total_steps: int | None = None) -> list:
    """The recorders the `record:` section asks for, sharing one probe set.

    The probe images come from the validation split (the test split if
    there is none), chosen by the seed alone, so every backend records the
    same images; their indices are saved in ``record/probe.json``.
    `start_step`: training steps already done (a resumed run).
    `total_steps`: the run's training steps, for ``record.every_steps:
    auto`` (`RecordConfig.steps_between`); the interval used is saved in
    ``record/probe.json``'s neighbour ``record/recording.json``.
    """
    from kerasft import record

    r = cfg.record
    if not r.enabled:
        return []
    directory = run_dir / "record"
    directory.mkdir(exist_ok=True)
    source, split_name = splits.validation, "validation"
    if source is None or len(source) == 0:
        source, split_name = splits.test, "test"
    idx = record.choose_indices(
        len(source), max(r.probe_size, r.embedding_size), cfg.seed
    )
    images = _batches(cfg, source.subset(idx), False)
    x, _ = images.collect()
    probe = record.ProbeSet(x, source.labels[idx], idx, split_name)
    probe.save(directory / "probe.json", cfg.seed)
    every = r.steps_between(total_steps if total_steps is not None else
                            50 * AUTO_POINTS)
    write_json(directory / "recording.json",
               {"every_steps": every, "requested": r.every_steps,
                "total_steps": total_steps})
    batch = probe.head(r.probe_size)
    out = []
    if r.scalars:
        out.append(record.ScalarRecorder(
            directory, r.scalars_every_steps, cfg.data.batch_size,
            start_step=start_step))
    if r.weights:
        out.append(record.WeightRecorder(
            directory, every_steps=r.weights_every_steps,
            start_step=start_step))
    if r.gradients:
        # One fit per epoch: keep the tap (and the compiled step) between
        # them; `train` detaches it before saving the model.
        out.append(record.GradientRecorder(
            directory, every, seed=cfg.seed, detach_at_end=False,
            start_step=start_step))
    if r.update_ratios:
        out.append(record.UpdateRatioRecorder(
            directory, every, start_step=start_step))
    if r.activations:
        out.append(record.ActivationRecorder(directory, batch.x))
    if r.probe_gradients:
        out.append(record.ProbeGradientRecorder(directory, batch.x, batch.y))
    if r.embeddings:
        emb = probe.head(r.embedding_size)
        out.append(record.EmbeddingRecorder(directory, emb.x, emb.y))
    if r.batchnorm:
        out.append(record.BatchNormRecorder(directory))
    if r.feature_maps:
        image = source.subset(idx[:1]).images.take(
            np.arange(1), cfg.data.image_size)[0]
        out.append(record.FeatureMapRecorder(directory, probe.x[:1], image))
    if r.attention:
        n = min(r.attention_images, len(idx))
        images = source.subset(idx[:n]).images.take(
            np.arange(n), cfg.data.image_size)
        out.append(record.AttentionRecorder(
            directory, probe.x[:n], probe.y[:n], images, r.attention_layer,
            last_epoch=cfg.train.epochs, every_epoch=r.attention_every_epoch))
    return out


def layer_table(model: keras.Model) -> list[dict]:
    """One entry per layer with weights: name, class, stage, parameters."""
    from kerasft.model import stage_of

    rows = []
    for layer in model.layers:
        if not layer.weights:
            continue
        rows.append({
            "name": layer.name,
            "class": type(layer).__name__,
            "stage": stage_of(layer.name),
            "params": int(sum(int(np.prod(v.shape)) for v in layer.weights)),
            "batchnorm": isinstance(layer, keras.layers.BatchNormalization),
        })
    return rows


def save_test_predictions(
    model: keras.Model, cfg: RunConfig, splits: DataSplits, path: Path,
    top: int = 24,
) -> dict:
    """Predicts the test split; saves labels, probabilities, per-image loss
    and the `top` highest-loss images (uint8) for the report."""
    batches = _batches(cfg, splits.test, False)
    logits = model.predict(batches, verbose=0)
    from kerasft.record.store import probabilities, write_npz

    probs = probabilities(logits)
    labels = splits.test.labels[: len(probs)]
    loss = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1))
    worst = np.argsort(-loss)[:top]
    images = splits.test.images.take(worst, cfg.data.image_size)
    write_npz(
        path,
        labels=labels.astype(np.int64),
        probs=probs.astype(np.float32),
        loss=loss.astype(np.float32),
        top_loss_indices=worst.astype(np.int64),
        top_loss_images=images,
    )
    return {"accuracy": float(np.mean(probs.argmax(1) == labels)),
            "loss": float(loss.mean())}


def _export_tensorboard(run_dir: Path) -> list[str]:
    from kerasft.errors import KerasftError
    from kerasft.record.tensorboard_export import export_tensorboard

    try:
        logdir = export_tensorboard(run_dir)
    except KerasftError as e:
        return [f"no TensorBoard export: {e}"]
    print(f"kerasft: TensorBoard logs in {logdir} (tensorboard --logdir {run_dir.parent})")
    return []


def _batch_fn(cfg: RunConfig, splits: DataSplits, steps, val_batches):
    """The guard's ``(phase, epoch, index) -> (x, y)``: the very batch a
    step saw (batch `index` of epoch `epoch` depends on the seed alone)."""

    def batch(phase: str, epoch: int, index: int):
        if phase == "validation":
            return val_batches[index]
        return _batches(cfg, splits.train, True, steps, epochs=1,
                        start_epoch=epoch)[index]

    return batch


def _failed_nonfinite(e: NonFiniteError, cfg: RunConfig, run_dir: Path,
                      status: dict, report: bool) -> NonFiniteError:
    """Marks the run failed, renders its report, and returns the error the
    user sees (one line: the fault, what the run directory keeps, the fix)."""
    done = status["epochs_done"]
    kept = (f"keeps the {done} complete epoch(s) before it" if done
            else "holds no complete epoch")
    message = (
        f"training stopped: {e} The run directory {run_dir} {kept}. "
        "Lower optimizer.learning_rate (now "
        f"{cfg.optimizer.learning_rate}) or set optimizer.clipnorm; "
        "if the input was non-finite, fix the data."
    )
    status.update(state="failed", error=message, fault=e.fault)
    write_json(run_dir / "status.json", status)
    if report:
        from kerasft.render import render_report

        try:
            message += f" Report: {render_report(run_dir).index}"
        except Exception as render_error:  # the fault must still be told
            logging.getLogger(__name__).exception("report of a failed run")
            message += (" The report could not be rendered: "
                        f"{type(render_error).__name__}: {render_error}")
    return NonFiniteError(message, e.fault)


def train(
    cfg: RunConfig,
    out: str | os.PathLike = "runs",
    splits: DataSplits | None = None,
    report: bool = True,
    resume: str | os.PathLike | None = None,
) -> RunResult:
    """Runs a whole fine-tuning run and writes its run directory.

    Args:
        cfg: the validated run config.
        out: parent folder of the run directory. Defaults to `"runs"`.
        splits: data to use instead of `cfg.data` (for library users with
            their own arrays). Defaults to loading `cfg.data`.
        report: render ``<run>/report/`` at the end. Defaults to `True`.
        resume: a run directory to continue from its last complete
            checkpoint instead of starting a new run (`out` is then
            unused); `cfg` must be its config, with at most
            `kerasft.train.resume.RESUMABLE_KEYS` changed. See
            `kerasft.train.resume`. Defaults to `None`.

    Returns:
        A `RunResult`.

    Example:

    ```python
    result = train(load_config("configs/quickstart.yaml"))
    result.test["accuracy"]
    ```
    """
    t0 = time.perf_counter()
    resuming = None
    if resume is not None:
        from kerasft.train import resume as resume_module

        # Before anything heavy: a run that cannot be resumed fails fast.
        resuming = resume_module.check(resume, cfg)
    determinism = backend.enable_determinism() if cfg.train.deterministic else []
    for note in determinism:
        print(f"kerasft: determinism: {note}")
    jit_note = backend.jit_compile_note(cfg.train.jit_compile)
    if jit_note:
        print(f"kerasft: note: {jit_note}")
    backend.seed_everything(cfg.seed)
    if splits is None:
        splits = load_splits(cfg.data, cfg.seed)
    model = build_model(cfg.model, splits.num_classes, cfg.data.image_size,
                        precision=cfg.train.precision, seed=cfg.seed)
    if cfg.record.enabled and cfg.record.attention and cfg.record.attention_layer:
        from kerasft.explain.layers import find_layer

        # A mistyped layer fails here, before a run directory exists.
        find_layer(model, cfg.record.attention_layer)

    phases = make_phases(cfg.plan, cfg.train)
    if resuming is None:
        run_dir = create_run_dir(out, cfg.name, backend.name())
        status = running_status()
        write_json(run_dir / "status.json", status)
        save_config(cfg, run_dir / "config.yaml")
        env = environment(cfg)
        env["initial_weights_sha256"] = weights_fingerprint(model)
        env["initial_weights_source"] = cfg.model.weights
        env.update(_weights_record(cfg))
        env["initial_weights_drawn"] = (
            {"none": "every variable", "imagenet": "the head"}.get(
                cfg.model.weights, "every variable the file does not hold")
            + f": numpy, seed {cfg.seed}, one generator per variable path")
        env["deterministic"] = cfg.train.deterministic
        env["determinism_notes"] = determinism
        env.update(precision_record(model, cfg))
        write_json(run_dir / "env.json", env)
        write_json(run_dir / "data.json", _data_record(splits))
        with atomic_path(run_dir / "initial.weights.h5") as tmp:
            model.save_weights(tmp)
        write_json(run_dir / "layers.json", layer_table(model))
    else:
        run_dir = resuming.run_dir
        status, env = resume_module.reopen(resuming, cfg, phases)

    steps = cfg.train.steps_per_epoch
    train_batches = _batches(cfg, splits.train, True, steps)
    val_batches = (
        _batches(cfg, splits.validation, False, steps)
        if splits.validation is not None and len(splits.validation)
        else None
    )
    recorders = make_recorders(cfg, splits, run_dir,
                               resuming.step if resuming else 0,
                               train_batches.steps_per_epoch * cfg.train.epochs)
    phase_records = list(resuming.phase_records) if resuming else []
    history: dict = dict(resuming.history) if resuming else {}
    step = resuming.step if resuming else 0
    # One guard for the whole run (its step count spans the phases).
    guard = NonFiniteGuard(_batch_fn(cfg, splits, steps, val_batches),
                           seed=cfg.seed, detach_at_end=False,
                           start_step=step)
    if resuming:
        resume_module.restore_model(resuming, model, recorders)
    verbose = cfg.train.verbose
    if resuming is None and env.get("initial_weights_loaded") == "backbone":
        print(f"kerasft: initial weights: the backbone of "
              f"{env['initial_weights_run']} (its final weights); the "
              f"{splits.num_classes}-class head is new")
    print(
        f"kerasft: {cfg.model.arch} ({cfg.model.weights} weights) on "
        f"{splits.description}: {len(splits.train)} train / "
        f"{len(splits.validation) if splits.validation else 0} validation / "
        f"{len(splits.test)} test images at {cfg.data.image_size}px, "
        f"backend {backend.name()}\nkerasft: run directory {run_dir}"
    )
    if resuming:
        if resuming.note:
            print(f"kerasft: {resuming.note}")
        print(f"kerasft: resuming {run_dir} after epoch {resuming.epoch} "
              f"(step {resuming.step})")
    epoch = resuming.epoch if resuming else 0
    try:
        for phase_index, phase in enumerate(phases):
            if resuming and phase_index < resuming.phase_index:
                continue  # over before the checkpoint
            first_epoch = sum(p.epochs for p in phases[:phase_index])
            opt_cfg, found = cfg.optimizer, None
            if cfg.optimizer.learning_rate == "auto":
                found = _auto_learning_rate(
                    cfg, model, splits, phases, phase_index, run_dir,
                    inside=epoch > first_epoch)
                opt_cfg = dataclasses.replace(cfg.optimizer,
                                              learning_rate=found[0])
                # the test measured this very phase: no factor on top
                phase = dataclasses.replace(phase, lr_factor=1.0)
            counts = apply_phase(model, phase, cfg.plan.batchnorm)
            phase_records.append(
                {
                    "name": phase.name,
                    "first_epoch": first_epoch + 1,
                    "epochs": phase.epochs,
                    "stages": sorted(phase.stages),
                    "lr_factor": phase.lr_factor,
                    "learning_rate": opt_cfg.learning_rate * phase.lr_factor,
                    "lr_find": found[1] if found else None,
                    # per stage name; the learning rates are the training
                    # stages' starting rates (a schedule scales all alike)
                    "lr_multipliers": phase.lr_multipliers,
                    "learning_rates": phase.stage_learning_rates(
                        opt_cfg.learning_rate),
                    "batchnorm": cfg.plan.batchnorm,
                    "params": counts,
                }
            )
            write_json(run_dir / "phases.json", phase_records)
            print(
                f"kerasft: phase {phase.describe()}; "
                f"{counts['trainable']:,} trainable / "
                f"{counts['frozen']:,} non-trainable parameters"
            )
            compile_phase(model, cfg, phase_optimizer(
                opt_cfg, phase, model,
                phase.epochs * train_batches.num_batches))
            # fit must not draw a batch from the workers' queue to build
            # the compiled metrics (it would skip batch 0 on torch and jax)
            backend.build_compiled_state(model, train_batches[0])
            if epoch > first_epoch:  # resumed inside this phase
                resume_module.restore_optimizer(resuming, model)
            if len(phase_records) == 1:  # what Keras resolved, once
                env.update(precision_record(model, cfg))
                write_json(run_dir / "env.json", env)
            phase_end = first_epoch + phase.epochs
            checkpoint = EpochCheckpoint(
                run_dir / "checkpoints",
                cfg.train.checkpoint_every,
                last_epoch=phase_end - 1,
                start_step=step,
                info={"phase": phase.name, "phase_index": phase_index},
            )
            callbacks = [
                # First, so a faulty step or epoch reaches no other callback.
                guard,
                Heartbeat(run_dir / "status.json", status),
                MetricsLogger(
                    run_dir / "metrics.csv", phase.name, cfg.data.batch_size
                ),
                *recorders,
                # last: an epoch's checkpoint comes after all its records
                checkpoint,
            ]
            # One `fit` per epoch, each on batches fixed to that epoch. A
            # single multi-epoch fit cannot promise the same batches on every
            # backend: tf.data prefetches across epoch boundaries, before any
            # epoch callback runs, and with steps_per_epoch Keras consumes
            # the first batch to build the model on torch and jax.
            while epoch < phase_end:
                if verbose != 0:
                    print(f"kerasft: epoch {epoch + 1}/{cfg.train.epochs} "
                          f"({phase.name})")
                fit = model.fit(
                    _batches(cfg, splits.train, True, steps, epochs=1,
                             start_epoch=epoch),
                    validation_data=val_batches,
                    # Keras would shuffle the batch order with Python's
                    # global RNG, differently per backend; Batches already
                    # shuffles by seed.
                    shuffle=False,
                    initial_epoch=epoch,
                    epochs=epoch + 1,
                    verbose=verbose,
                    callbacks=callbacks,
                )
                for key, values in fit.history.items():
                    history[key] = float(values[-1])
                epoch += 1
                status["epochs_done"] = epoch
                write_json(run_dir / "status.json", status)
            step = checkpoint.step

        test = model.evaluate(
            _batches(cfg, splits.test, False), verbose=verbose, return_dict=True
        )
        n_eval = min(len(splits.train), TRAIN_EVAL_IMAGES)
        sub = splits.train.subset(
            np.sort(np.random.default_rng([cfg.seed, 7]).permutation(
                len(splits.train))[:n_eval])
        )
        train_eval = model.evaluate(
            _batches(cfg, sub, False), verbose=0, return_dict=True
        )
        save_test_predictions(model, cfg, splits, run_dir / "test_predictions.npz")
        test = {k: float(v) for k, v in test.items()}
        train_eval = {k: float(v) for k, v in train_eval.items()}
        write_json(
            run_dir / "test_metrics.json",
            {
                "test": test,
                "test_images": len(splits.test),
                "train_inference_mode": train_eval,
                "train_inference_mode_images": n_eval,
                "last_epoch": history,
            },
        )
        from kerasft.backend.gradient_tap import GradientTap

        tap = getattr(model.optimizer, "_kerasft_gradient_tap", None)
        if isinstance(tap, GradientTap):
            tap.detach()  # keep the tap's variables out of model.keras
        with atomic_path(run_dir / "model.keras") as tmp:
            model.save(tmp)
    except NonFiniteError as e:
        raise _failed_nonfinite(e, cfg, run_dir, status, report) from None
    except KeyboardInterrupt:
        status.update(state="interrupted")
        write_json(run_dir / "status.json", status)
        raise
    except BaseException as e:
        status.update(state="failed", error=f"{type(e).__name__}: {e}")
        write_json(run_dir / "status.json", status)
        raise
    warnings = []
    if recorders and cfg.record.tensorboard:
        warnings += _export_tensorboard(run_dir)
    seconds = time.perf_counter() - t0
    status.update(state="completed", seconds=round(seconds, 1))
    write_json(run_dir / "status.json", status)
    # The same findings the report shows first, from the finished run
    # directory alone (kerasft.render.diagnose is their one home).
    from kerasft.record.store import load_run
    from kerasft.render.diagnose import diagnose

    findings = diagnose(load_run(run_dir))
    # INFO, not WARNING: the CLI prints the findings itself, and with no
    # logging configured a WARNING would reach stderr a second time through
    # logging's last-resort handler. Library users get them in the result.
    for f in findings:
        log.info("diagnosis %s [%s]: %s", f.severity, f.id, f.text())
    index = None
    if report:
        # Rendering reads only the finished run directory (record, then
        # render); it never sees the model or the data.
        from kerasft.render import render_report

        index = render_report(run_dir).index
    return RunResult(run_dir, test, train_eval, seconds, warnings, index,
                     findings)

"""The learning-rate range test: which learning rate should a phase use?

`lr_find` trains a compiled Keras model for a bounded number of steps while
the learning rate grows exponentially from `start_lr` to `end_lr` (Smith,
"Cyclical Learning Rates", 2017; fastai's ``lr_find``), records the loss of
every step, and puts the model and its optimizer back exactly as they were:
every model variable (weights, BatchNorm moving statistics, seed states),
every optimizer variable (iteration count, learning rate, moment slots) and
the compiled metrics' state are copied before the first step and assigned
back afterwards, whatever ends the test (an exception included).

The test ends early when the causally smoothed loss exceeds
`diverge_factor` times its minimum so far or a step's loss is not finite:
at a high learning rate that is what a range test is for, and it is not a
failure.

The rule (`RULE`, `suggest`): the smoothed loss is a Gaussian average over
`smoothing` decades of learning rate on each side of each point (centred,
so it does not lag behind the raw loss as a running average would, which
would shift the suggestion to higher rates); the suggestion is the learning
rate where that curve falls fastest per decade on the descent that ends in
its minimum (the stretch left of the minimum over which the curve only
falls: a noisy start or an earlier bump is not it). The
steepest descent is where a step of training gains most per step, and it
lies well below the rate where the loss turns and diverges; the rate at the
minimum itself is already at the edge of divergence. A curve that never
falls (flat, or rising from the start), one still falling where the range
ends, and one with too few points give no suggestion, and the result says
why, rather than a number read off noise.

`phase_lr_find` runs the test for one phase of a kerasft plan: the same
model, the phase's trainable layers and BatchNorm mode, the optimizer kind
of the config at a constant rate, and the run's training batches.

Example:

```python
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=..., metrics=[...])
result = kerasft.lr_find(model, train_batches, steps=100)
result.suggestion, result.note          # e.g. 0.00052, "steepest descent ..."
model.optimizer.learning_rate = result.suggestion
```
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import keras
import numpy as np

from kerasft.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_STEPS = 100
START_LR = 1e-7
END_LR = 10.0
DIVERGE_FACTOR = 4.0
# Half-width (one standard deviation) of the smoothing, in decades of LR.
SMOOTH_DECADES = 0.25
# Fewer finite points than this give no suggestion.
MIN_POINTS = 8
# The smoothed loss must fall at least this fraction below its start.
MIN_DROP = 0.05
RULE = (
    "steepest descent: the rate where the smoothed loss (Gaussian over "
    f"+-{SMOOTH_DECADES:g} decade) falls fastest on its descent into its "
    "minimum"
)


@dataclass
class LRFindResult:
    """What a range test measured and suggests.

    Attributes:
        learning_rates: the rate of each step, in order.
        losses: each step's training loss (the last may be NaN/inf).
        smoothed: the smoothed loss (NaN where the loss is not finite).
        suggestion: the suggested learning rate, or None (see `note`).
        note: how the suggestion was found, or why there is none.
        stopped: why the test ended.
        rule: the suggestion rule, in words.
        start_lr, end_lr, steps: the planned range and number of steps.
        seconds: wall time of the test.
        info: what the caller adds (phase, weights it started from, ...).
    """

    learning_rates: list
    losses: list
    smoothed: list
    suggestion: float | None
    note: str
    stopped: str
    rule: str = RULE
    start_lr: float = START_LR
    end_lr: float = END_LR
    steps: int = DEFAULT_STEPS
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain data (JSON-ready; `kerasft.rundir.write_json` writes
        non-finite numbers as strings)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "LRFindResult":
        """The inverse of `to_dict` (strings ``"nan"``/``"inf"`` read back)."""
        kwargs = dict(data)
        for key in ("learning_rates", "losses", "smoothed"):
            kwargs[key] = [float(v) for v in data.get(key, [])]
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in kwargs.items() if k in names})


def learning_rates(start_lr: float, end_lr: float, steps: int) -> np.ndarray:
    """The exponentially growing rates of a range test, `steps` of them."""
    return start_lr * (end_lr / start_lr) ** (np.arange(steps) / max(steps - 1, 1))


def _sigma_steps(lrs: np.ndarray, smoothing: float) -> float:
    if len(lrs) < 2 or lrs[-1] <= lrs[0]:
        return 1.0
    per_decade = (len(lrs) - 1) / math.log10(lrs[-1] / lrs[0])
    return max(smoothing * per_decade, 0.5)


def smooth(lrs, losses, smoothing: float = SMOOTH_DECADES) -> np.ndarray:
    """The centred Gaussian smoothing of `losses` over log10(`lrs`).

    Non-finite losses are left out of every average and get NaN.

    Args:
        lrs: the learning rates, increasing.
        losses: the loss at each rate.
        smoothing: the Gaussian's standard deviation in decades. Defaults
            to `SMOOTH_DECADES`.

    Returns:
        The smoothed losses, one per rate.
    """
    x = np.log10(np.asarray(lrs, dtype=np.float64))
    y = np.asarray(losses, dtype=np.float64)
    ok = np.isfinite(y)
    out = np.full(len(y), np.nan)
    if not ok.any():
        return out
    w = np.exp(-0.5 * ((x[:, None] - x[None, ok]) / smoothing) ** 2)
    out[ok] = (w[ok] @ y[ok]) / w[ok].sum(axis=1)
    return out


def suggest(lrs, smoothed, stopped: str = "diverged") -> tuple[float | None, str]:
    """The suggestion rule (`RULE`) on a smoothed range-test curve.

    Args:
        lrs: the learning rates, increasing.
        smoothed: the smoothed loss at each (NaN where not finite).
        stopped: why the test ended; ``"end of range"`` means the loss was
            never seen to turn. Defaults to `"diverged"`.

    Returns:
        ``(learning rate or None, note)``: the note says how the rate was
        found, or why there is none.
    """
    lrs = np.asarray(lrs, dtype=np.float64)
    s = np.asarray(smoothed, dtype=np.float64)
    ok = np.isfinite(s)
    n = int(ok.sum())
    if n < MIN_POINTS:
        return None, (
            f"no suggestion: too few points ({n} finite losses; the rule "
            f"needs at least {MIN_POINTS}). Run more steps or start the "
            "range higher (start_lr) if the loss diverged early.")
    x, s = np.log10(lrs[ok]), s[ok]
    low = int(np.argmin(s))
    # The descent into the minimum: back from it while the loss keeps
    # rising. A bump or noisy start further left is not that descent.
    top = low
    while top > 0 and s[top - 1] >= s[top]:
        top -= 1
    drop = (s[top] - s[low]) / max(abs(s[top]), 1e-12)
    if low <= 1:
        return None, (
            f"no suggestion: the smoothed loss only rose from the first "
            f"rate ({lrs[ok][0]:.3g}). Start the range lower (start_lr).")
    if drop < MIN_DROP:
        return None, (
            f"no suggestion: flat curve, the smoothed loss fell only "
            f"{drop:.1%} into its minimum (the rule needs {MIN_DROP:.0%}). "
            "Widen the range, run more steps, or check that the phase has "
            "layers to train.")
    if low == n - 1 and stopped == "end of range":
        return None, (
            f"no suggestion: the loss was still falling at the end of the "
            f"range ({lrs[ok][-1]:.3g}), so where it turns is unknown. "
            "Raise end_lr.")
    if low - top < 2:
        return None, (
            f"no suggestion: the descent into the minimum has "
            f"{low - top + 1} point(s); the rule needs 3. Run more steps.")
    slope = np.gradient(s[top: low + 1], x[top: low + 1])
    j = top + int(np.argmin(slope))
    steepest = -float(slope[j - top])
    lr = float(lrs[ok][j])
    return lr, (
        f"steepest descent at {lr:.3g}: the smoothed loss falls "
        f"{steepest:.3g} per decade there; its minimum "
        f"{s[low]:.4g} is at {lrs[ok][low]:.3g}")


def _stream(data) -> Iterable:
    """Batches of `data`, from the start again whenever it runs out."""
    while True:
        got = False
        if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
            source = (data[i] for i in range(len(data)))
        else:
            source = iter(data)
        for batch in source:
            got = True
            yield batch
        if not got:
            raise ValueError("lr_find: `data` yielded no batch.")


def _snapshot(model: keras.Model) -> list:
    seen, out = set(), []
    optimizer = model.optimizer
    for v in (*model.variables, *optimizer.variables,
              *model.metrics_variables):
        if id(v) in seen:
            continue
        seen.add(id(v))
        out.append((v, np.array(keras.ops.convert_to_numpy(v), copy=True)))
    return out


def lr_find(
    model: keras.Model,
    data,
    steps: int = DEFAULT_STEPS,
    start_lr: float = START_LR,
    end_lr: float = END_LR,
    diverge_factor: float = DIVERGE_FACTOR,
    smoothing: float = SMOOTH_DECADES,
    progress: Callable[[int, float, float], None] | None = None,
) -> LRFindResult:
    """Runs a learning-rate range test on a compiled model, then restores it.

    Step `i` trains on the next batch of `data` (`model.train_on_batch`,
    the model's own compiled train step) at the learning rate
    ``start_lr * (end_lr / start_lr) ** (i / (steps - 1))``. Batches whose
    size differs from the first one's are skipped (a last, smaller batch
    would make TensorFlow and JAX compile the step again). Afterwards every
    variable of the model, its optimizer and its compiled metrics holds
    the value it had before.

    Args:
        model: a compiled Keras model whose optimizer has a constant
            (settable) learning rate.
        data: ``(x, y)`` batches: a `kerasft.Batches`, a
            `keras.utils.PyDataset`, a `tf.data.Dataset`, a list; read
            again from the start when it runs out.
        steps: the most steps to run. Defaults to `DEFAULT_STEPS`.
        start_lr: the first learning rate. Defaults to `START_LR`.
        end_lr: the last learning rate. Defaults to `END_LR`.
        diverge_factor: stop once the (causally) smoothed loss exceeds
            this multiple of its minimum so far. Defaults to `4.0`.
        smoothing: the smoothing's width in decades of learning rate.
            Defaults to `SMOOTH_DECADES`.
        progress: called after each step with ``(step, lr, loss)``.
            Defaults to `None`.

    Returns:
        An `LRFindResult`.

    Raises:
        ConfigError: bad arguments, an uncompiled model, or an optimizer
            whose learning rate is a schedule.

    Example:

    ```python
    result = lr_find(model, batches, steps=60)
    print(result.suggestion, result.note)
    ```
    """
    if steps < 2:
        raise ConfigError(f"lr_find: steps: expected at least 2. Received: {steps!r}")
    if not (0 < start_lr < end_lr and math.isfinite(end_lr)):
        raise ConfigError(
            "lr_find: expected 0 < start_lr < end_lr, both finite. Received: "
            f"start_lr={start_lr!r}, end_lr={end_lr!r}")
    if not diverge_factor > 1:
        raise ConfigError(
            f"lr_find: diverge_factor: expected a value > 1. Received: "
            f"{diverge_factor!r}")
    if not getattr(model, "compiled", False) or model.optimizer is None:
        raise ConfigError(
            "lr_find: expected a compiled model (model.compile(optimizer=..., "
            "loss=...)). Received: a model that is not compiled.")
    from kerasft.record.scalar_recorder import learning_rate_of

    optimizer = model.optimizer
    try:
        optimizer.learning_rate = learning_rate_of(optimizer)
    except TypeError:
        schedule = optimizer.get_config().get("learning_rate")
        raise ConfigError(
            "lr_find: the model's optimizer has a learning-rate schedule "
            f"({schedule.get('class_name') if isinstance(schedule, dict) else schedule}); the range test "
            "sets the rate itself. Compile with a float learning_rate for "
            "the test.") from None
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    lrs = learning_rates(start_lr, end_lr, steps)
    beta = math.exp(-1.0 / _sigma_steps(lrs, smoothing))
    saved = _snapshot(model)
    losses: list[float] = []
    stopped = "end of range"
    t0 = time.perf_counter()
    avg, best, size = 0.0, math.inf, None
    try:
        stream = _stream(data)
        for i, lr in enumerate(lrs):
            x, y = next(b for b in stream if size is None
                        or len(b[1]) == size)[:2]
            size = len(y)
            optimizer.learning_rate = float(lr)
            logs = model.train_on_batch(x, y, return_dict=True)
            loss = float(np.asarray(logs["loss"]))
            losses.append(loss)
            if progress is not None:
                progress(i, float(lr), loss)
            log.debug("lr_find step %d: lr %.3g loss %.4g", i, lr, loss)
            if not math.isfinite(loss):
                stopped = "non-finite loss"
                break
            avg = beta * avg + (1 - beta) * loss
            smoothed_now = avg / (1 - beta ** (i + 1))
            best = min(best, smoothed_now)
            if i > 0 and smoothed_now > diverge_factor * best:
                stopped = "diverged"
                break
    finally:
        for v, value in saved:
            v.assign(value)
    seconds = time.perf_counter() - t0
    lrs = [float(v) for v in lrs[: len(losses)]]
    smoothed = smooth(lrs, losses, smoothing) if losses else np.array([])
    suggestion, note = suggest(lrs, smoothed, stopped)
    stopped_text = {
        "end of range": f"the range ended ({len(losses)} steps)",
        "diverged": (f"the smoothed loss passed {diverge_factor:g}x its "
                     f"minimum at step {len(losses)}"),
        "non-finite loss": f"the loss was not finite at step {len(losses)}",
    }[stopped]
    return LRFindResult(
        learning_rates=lrs,
        losses=[float(v) for v in losses],
        smoothed=[float(v) for v in smoothed],
        suggestion=suggestion,
        note=note,
        stopped=stopped_text,
        start_lr=float(start_lr),
        end_lr=float(end_lr),
        steps=int(steps),
        seconds=round(seconds, 2),
    )


# Below `DEFAULT_STEPS`, a test takes one pass over the training images but
# at least this many steps (a curve over 8 decades needs its points).
MIN_PASS_STEPS = 30


def finder_steps(requested: int | None, batches_per_pass: int) -> int:
    """Steps of a kerasft range test: `requested`, or by default
    `DEFAULT_STEPS` capped at one pass over the data, at least
    `MIN_PASS_STEPS` (repeated batches let the loss fall from memorising)."""
    if requested is not None:
        return requested
    return min(DEFAULT_STEPS, max(MIN_PASS_STEPS, batches_per_pass))


def result_name(index: int, phase_name: str) -> str:
    """File stem of phase `index`'s (0-based) test: ``phase-1-head``."""
    return f"phase-{index + 1}-{phase_name}"


def phase_lr_find(cfg, model: keras.Model, splits, phase, phase_index: int,
                  weights: str, verbose: bool = False) -> LRFindResult:
    """The range test of one phase of a kerasft plan, as `train` runs it.

    Applies `phase` to `model` (its trainable stages and BatchNorm mode),
    compiles the model with the config's optimizer kind (name, momentum,
    weight decay, clipnorm) at a constant rate, as `train` compiles it,
    and runs `lr_find` on the run's shuffled, augmented training batches.
    The model's variables are restored afterwards; it stays compiled with
    the test's optimizer (compile it again to train).

    Args:
        cfg: the run config (`optimizer`, `plan`, `lr_find` sections).
        model: the model from `kerasft.build_model`, holding the weights
            the phase starts from.
        splits: the data splits.
        phase: the `kerasft.model.Phase`.
        phase_index: its 0-based index in the plan.
        weights: where the model's current weights came from, in words
            (recorded in the result's `info`).
        verbose: print progress (`print_progress`). Defaults to `False`.

    Returns:
        The `LRFindResult`, with `info` describing the phase and weights.
    """
    import dataclasses

    from kerasft import backend
    from kerasft.model import apply_phase
    from kerasft.train.runner import _batches, compile_phase, phase_optimizer

    counts = apply_phase(model, phase, cfg.plan.batchnorm)
    per_pass = len(splits.train) // cfg.data.batch_size  # full batches
    steps = finder_steps(cfg.lr_find.steps, max(per_pass, 1))
    f = cfg.lr_find
    # the phase's own optimizer (its per-stage multipliers included) at a
    # constant base rate, which the test then raises step by step
    optimizer = phase_optimizer(
        dataclasses.replace(cfg.optimizer, learning_rate=f.start_lr,
                            schedule="constant"),
        dataclasses.replace(phase, lr_factor=1.0), model, steps)
    compile_phase(model, cfg, optimizer)
    data = _batches(cfg, splits.train, True,
                    epochs=math.ceil(steps / max(per_pass, 1)) + 1)
    result = lr_find(model, data, steps=steps, start_lr=f.start_lr,
                     end_lr=f.end_lr,
                     progress=print_progress(steps) if verbose else None)
    result.info = {
        "phase": phase.name,
        "phase_number": phase_index + 1,
        "stages": sorted(phase.stages),
        # as apply_phase sets it: BatchNorm trains only in trainable stages
        "batchnorm": ("train" if phase.stages and cfg.plan.batchnorm
                      == "train" else "inference"),
        "optimizer": cfg.optimizer.name,
        "params": counts,
        "weights": weights,
        "backend": backend.name(),
        "batch_size": cfg.data.batch_size,
        "image_size": cfg.data.image_size,
    }
    return result


def print_progress(steps: int) -> Callable[[int, float, float], None]:
    """A `progress` callback that prints every tenth of the steps."""
    every = max(1, steps // 10)

    def show(i: int, lr: float, loss: float) -> None:
        if i % every == 0 or not math.isfinite(loss):
            print(f"kerasft: lr-find step {i + 1}/{steps}: lr {lr:.2e}, "
                  f"loss {loss:.4g}", flush=True)

    return show

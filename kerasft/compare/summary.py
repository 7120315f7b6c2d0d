"""One run in numbers: what `kerasft compare` (and `kerasft study`) put in
their per-run table.

Everything comes from the run directory alone (`kerasft.load_run`); no
Keras backend is needed. A value the run did not record is None, never
a guess.
"""

from __future__ import annotations

import math

import numpy as np

# The keys of `summarize`, in table order (see its docstring).
KEYS = (
    "run", "state", "arch", "plan", "learning_rate", "seed", "backend",
    "trainable_params", "epochs", "wall_seconds", "train_seconds",
    "images_per_second", "best_val_accuracy", "best_val_epoch",
    "test_accuracy", "train_inference_accuracy", "knn_accuracy",
    "knn_epoch",
)


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _learning_rate(run) -> float | None:
    """The configured base learning rate; under ``learning_rate: auto``,
    the rate the first phase's range test chose (phases.json)."""
    lr = _finite((run.config.get("optimizer") or {}).get("learning_rate"))
    if lr is not None:
        return lr
    phases = [p for p in run.phases if isinstance(p, dict)]
    if phases:
        found = _finite(phases[0].get("learning_rate"))
        factor = _finite(phases[0].get("lr_factor")) or 1.0
        return None if found is None else found / factor
    return None


def _trainable_params(run) -> int | None:
    """The most parameters any phase trained (phases.json's counts)."""
    counts = [p.get("params", {}).get("trainable") for p in run.phases
              if isinstance(p, dict) and isinstance(p.get("params"), dict)]
    counts = [int(c) for c in counts if isinstance(c, (int, float))]
    return max(counts) if counts else None


def _images_per_second(metrics: dict) -> float | None:
    """Training images per second over every epoch: images / seconds of
    the training steps (validation left out), from metrics.csv."""
    ips = np.asarray(metrics.get("images_per_second", []), dtype=np.float64)
    secs = np.asarray(metrics.get("train_seconds", []), dtype=np.float64)
    ok = np.isfinite(ips) & np.isfinite(secs) & (secs > 0)
    if not ok.any():
        return None
    return float(np.sum(ips[ok] * secs[ok]) / np.sum(secs[ok]))


def _best_validation(metrics: dict) -> tuple[float | None, int | None]:
    acc = np.asarray(metrics.get("val_accuracy", []), dtype=np.float64)
    epochs = np.asarray(metrics.get("epoch", []), dtype=np.float64)
    if not acc.size or not np.isfinite(acc).any() or len(epochs) != len(acc):
        return None, None
    i = int(np.nanargmax(acc))  # the first epoch that reached the best
    return float(acc[i]), int(epochs[i])


def _knn(run) -> tuple[float | None, int | None]:
    """k-NN accuracy of the last recorded epoch's probe embeddings (the
    report's number: `kerasft.render.embeddings.embedding_panels`)."""
    from kerasft.render.base import RenderOptions
    from kerasft.render.embeddings import embedding_panels

    panels = embedding_panels(run, RenderOptions()).get("panels") or []
    if not panels:
        return None, None
    last = panels[-1]
    return _finite(last["knn_full"]), int(last["epoch"])


def summarize(run) -> dict:
    """The numbers of one run, for a table of runs side by side.

    Args:
        run: a loaded run (`kerasft.load_run`).

    Returns:
        A dict with these keys (`KEYS`, in this order); a value the run
        did not record is None:

        - ``run`` (str): the run directory's name.
        - ``state`` (str): status.json's state (completed, failed, ...).
        - ``arch`` (str): ``model.arch`` of the config.
        - ``plan`` (str): ``plan.kind`` (head, phased, full, ...).
        - ``learning_rate`` (float): ``optimizer.learning_rate`` of the
          config; with ``auto``, the first phase's found rate.
        - ``seed`` (int): the run's seed.
        - ``backend`` (str): env.json's backend.
        - ``trainable_params`` (int): the most trainable parameters of any
          phase (phases.json); for a phased plan, its widest phase.
        - ``epochs`` (int): epochs finished (rows of metrics.csv).
        - ``wall_seconds`` (float): the whole run's wall time
          (status.json, written at completion); None for an unfinished run
          and for a resumed one (only its last session was timed).
        - ``train_seconds`` (float): seconds in training steps, summed over
          the epochs (metrics.csv; no validation, test or recording setup).
        - ``images_per_second`` (float): training images per second over
          all epochs (images / ``train_seconds``; the first epoch's
          compilation included).
        - ``best_val_accuracy`` (float), ``best_val_epoch`` (int): the
          highest validation accuracy and the first epoch (1-based) that
          reached it.
        - ``test_accuracy`` (float): test_metrics.json's test accuracy.
        - ``train_inference_accuracy`` (float): accuracy on training
          images with the model in inference mode (BatchNorm from moving
          statistics), as `kerasft train` measures it after training.
        - ``knn_accuracy`` (float), ``knn_epoch`` (int): leave-one-out
          5-NN accuracy of the probe set's embeddings at the last recorded
          epoch, and that epoch (None without embedding records).

    Example:

    ```python
    from kerasft import load_run
    from kerasft.compare.summary import summarize

    summarize(load_run("runs/20261126-120000-quickstart-torch"))["test_accuracy"]
    ```
    """
    config, status = run.config or {}, run.status or {}
    metrics = run.metrics or {}
    seed = config.get("seed", (run.env or {}).get("seed"))
    wall = _finite(status.get("seconds"))
    if (run.env or {}).get("resumes") or status.get("state") != "completed":
        wall = None
    secs = np.asarray(metrics.get("train_seconds", []), dtype=np.float64)
    best, best_epoch = _best_validation(metrics)
    knn, knn_epoch = _knn(run)
    test = run.test or {}

    def nested(section: str, key: str) -> float | None:
        value = test.get(section)
        return _finite(value.get(key)) if isinstance(value, dict) else None

    out = {
        "run": run.path.name,
        "state": status.get("state"),
        "arch": (config.get("model") or {}).get("arch"),
        "plan": (config.get("plan") or {}).get("kind"),
        "learning_rate": _learning_rate(run),
        "seed": int(seed) if isinstance(seed, (int, float)) else None,
        "backend": (run.env or {}).get("backend"),
        "trainable_params": _trainable_params(run),
        "epochs": len(metrics.get("epoch", [])) or None,
        "wall_seconds": wall,
        "train_seconds": (float(np.nansum(secs))
                          if np.isfinite(secs).any() else None),
        "images_per_second": _images_per_second(metrics),
        "best_val_accuracy": best,
        "best_val_epoch": best_epoch,
        "test_accuracy": nested("test", "accuracy"),
        "train_inference_accuracy": nested("train_inference_mode",
                                           "accuracy"),
        "knn_accuracy": knn,
        "knn_epoch": knn_epoch,
    }
    return out

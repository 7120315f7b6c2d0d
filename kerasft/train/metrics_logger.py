"""Writes one CSV row per epoch with metrics, learning rate and speed."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import keras
import numpy as np


class MetricsLogger(keras.callbacks.Callback):
    """Appends per-epoch metrics to a CSV file and adds speed to the logs.

    Columns: ``epoch`` (1-based), ``phase``, every metric Keras logs
    (``loss``, ``accuracy``, ``val_loss``, ...), ``learning_rate`` (at the
    end of the epoch), ``train_seconds`` (training steps only, without
    validation) and ``images_per_second``. Each row is flushed and fsynced,
    so a killed run keeps every finished epoch. Several `fit` calls (phases)
    append to the same file.

    Args:
        path: the CSV file.
        phase: a label written in the ``phase`` column. Defaults to `""`.
        batch_size: images per step, for images/s. Defaults to `None`
            (the column is left empty).

    Example:

    ```python
    model.fit(ds, epochs=3, callbacks=[MetricsLogger("metrics.csv")])
    ```
    """

    def __init__(
        self,
        path: str | os.PathLike,
        phase: str = "",
        batch_size: int | None = None,
    ):
        super().__init__()
        self.path = Path(path)
        self.phase = phase
        self.batch_size = batch_size

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._train_end = None
        self._steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        self._train_end = time.perf_counter()

    def _learning_rate(self) -> float:
        from kerasft.record.scalar_recorder import learning_rate_of

        return learning_rate_of(self.model.optimizer)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        end = self._train_end or time.perf_counter()
        seconds = end - self._start
        row = {"epoch": epoch + 1, "phase": self.phase}
        for key, value in logs.items():
            if key in ("learning_rate",):
                continue
            row[key] = float(np.asarray(value))
        row["learning_rate"] = self._learning_rate()
        row["train_seconds"] = round(seconds, 3)
        images = self._steps * self.batch_size if self.batch_size else None
        row["images_per_second"] = (
            round(images / seconds, 2) if images and seconds > 0 else ""
        )
        logs["images_per_second"] = row["images_per_second"] or 0.0
        new = not self.path.exists() or self.path.stat().st_size == 0
        if not new:
            with open(self.path, newline="", encoding="utf-8") as f:
                # Later phases keep the first phase's columns.
                header = next(csv.reader(f), [])
        else:
            header = list(row)
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=header, restval="")
            if new:
                writer.writeheader()
            writer.writerow({k: row.get(k, "") for k in header})
            f.flush()
            os.fsync(f.fileno())

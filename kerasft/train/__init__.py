"""Train: phases of `model.fit`, checkpoints, test evaluation, run dir."""

from kerasft.train.epoch_checkpoint import EpochCheckpoint
from kerasft.train.metrics_logger import MetricsLogger
from kerasft.train.runner import RunResult, train

__all__ = ["EpochCheckpoint", "MetricsLogger", "RunResult", "train"]

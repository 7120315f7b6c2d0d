"""Train: phases of `model.fit`, checkpoints, test evaluation, run dir.

The package itself is callable: ``kerasft.train(cfg)`` is
`kerasft.train.train(cfg)`. The README documents ``kerasft.train`` as the
function, and Python binds this subpackage over that name on ``kerasft``
when it is imported, so the package forwards calls to the function.
"""

import sys
import types

from kerasft.train.epoch_checkpoint import EpochCheckpoint
from kerasft.train.metrics_logger import MetricsLogger
from kerasft.train.runner import RunResult, train

__all__ = ["EpochCheckpoint", "MetricsLogger", "RunResult", "train"]


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage

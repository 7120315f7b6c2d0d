"""Errors a user can act on.

Every message says what was expected, echoes the value received and says what
to do. The CLI prints ``Error: <message>`` to stderr and exits with
``exit_code``: 2 for usage, config and input problems, 1 for failures at run
time. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class KerasftError(Exception):
    """Base class of the errors kerasft reports without a traceback.

    Args:
        message: one line: what was expected, the value received, the fix.
    """

    exit_code = 1


class ConfigError(KerasftError):
    """A config file, a `--set` override or a CLI flag is wrong."""

    exit_code = 2


class DataError(KerasftError):
    """A data source cannot be read or does not hold what the config says."""

    exit_code = 2


class DownloadError(KerasftError):
    """Weights or a data set must be downloaded and cannot be (offline)."""

    exit_code = 2


class RunDirError(KerasftError):
    """A run directory is missing, incomplete or of an unknown format."""

    exit_code = 2


class NonFiniteError(KerasftError):
    """Training produced a NaN or inf (loss, gradient or validation metric).

    A runtime failure (exit code 1). The message names the step, the first
    layer that went non-finite and the learning rate at that step.

    Args:
        message: the one-line message.
        fault: what was found, as plain data (saved in ``status.json``).
    """

    def __init__(self, message: str, fault: dict | None = None):
        super().__init__(message)
        self.fault = fault or {}

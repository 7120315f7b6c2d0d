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

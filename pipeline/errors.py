"""The one exception family of vidbatch.

Every message says what is wrong *and* what to change, because the person reading it is
usually looking at a terminal, not at our source.
"""

from __future__ import annotations


class VidbatchError(Exception):
    """A problem the user can fix (configuration, input, environment). Exit code 2."""

    exit_code = 2


class ConfigError(VidbatchError):
    """The job spec or the command line asks for something impossible or unknown."""


class ManifestError(VidbatchError):
    """The manifest cannot be read, or its rows break a rule (missing column, duplicates)."""


class WeightsError(VidbatchError):
    """Model weights cannot be found, downloaded or loaded."""


class OutputError(VidbatchError):
    """The output location conflicts with the requested policy, or cannot be written."""


class JobFailed(VidbatchError):
    """The job ran but its result breaks a limit the user set (e.g. max_error_fraction)."""

    exit_code = 1


class VideoError(Exception):
    """One video could not be processed. Becomes an error row, never stops the job.

    Args:
        stage: where it failed (``read``, ``decode``, ``sample``, ``inference``).
        message: the reason, written for the person reading the output table.
    """

    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.message = message

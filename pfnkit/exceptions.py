"""Exception hierarchy: every error pfnkit raises on purpose derives from PfnkitError."""

from __future__ import annotations


class PfnkitError(Exception):
    """Root of all pfnkit errors; the CLI turns these into one red line and exit code 1."""


class InvalidConfigError(PfnkitError, ValueError):
    """A configuration value, recipe field or argument is not allowed."""


class UnknownNameError(InvalidConfigError, KeyError):
    """A name was looked up in a registry that does not hold it."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(PfnkitError):
    """A checkpoint is missing, corrupt, from a newer format or does not fit the request."""


class BatchError(PfnkitError, ValueError):
    """A prior produced a batch whose fields do not agree with each other."""


class TrainingDivergedError(PfnkitError):
    """Training produced a non-finite loss, gradient or weight; nothing non-finite is saved."""

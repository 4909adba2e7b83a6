"""Errors that the CLI turns into one-line messages (never a bare traceback).

Every error a user can cause by bad input derives from :class:`KdsrcError`; anything
else reaching the CLI is a bug and keeps its traceback.
"""


class KdsrcError(Exception):
    """Base class: a problem with the user's input, reported as one line."""


class ConfigError(KdsrcError, ValueError):
    """A run config or plan is invalid (missing key, wrong type, unknown value)."""


class StaleResumeError(ConfigError):
    """A resume file written by another training (another config, other inputs): resuming it
    would finish that training. ``path`` is the file, ``reason`` how it differs ("was written
    by ...", "was trained with ...")."""

    def __init__(self, path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path} {reason}; delete it or pass --no-resume to start over")


class UnknownNameError(ConfigError, KeyError):
    """An unknown model, method or dataset name. The message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(KdsrcError):
    """A checkpoint cannot be read, or does not match the architecture it is loaded into."""


class DataError(KdsrcError):
    """A dataset is missing, corrupt (checksum) or cannot be downloaded."""


class NonFiniteLossError(KdsrcError, FloatingPointError):
    """A loss term became NaN or inf; the message names epoch, step and term."""


def unknown_name(kind: str, name: str, valid) -> UnknownNameError:
    """Build the standard 'unknown <kind>' error listing the valid choices."""
    choices = ", ".join(sorted(valid))
    return UnknownNameError(f"unknown {kind} {name!r}; valid {kind}s: {choices}")

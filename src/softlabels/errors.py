"""User-facing errors: the CLI prints their message in one line and exits 2."""
from __future__ import annotations


class UserError(Exception):
    """An error the user can fix (config, data, checkpoint, CLI): the message says what and how."""


class ConfigError(UserError):
    """A config file or override is invalid; the message names the file and the key."""


class DataError(UserError):
    """A dataset is missing, truncated or malformed; the message names the path."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt or does not match the config; the message names the file."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; the message names the epoch, the step and every loss term."""

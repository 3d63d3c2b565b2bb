"""One error hierarchy, so the CLI can turn any expected failure into one line and exit code 2."""

from __future__ import annotations


class RrsisError(Exception):
    """Base of every error rrsis raises on purpose (bad input, config, storage, checkpoint)."""

    exit_code = 2


class ConfigError(RrsisError):
    """A config key is unknown, has the wrong type, or a value outside what is allowed."""


class InputError(RrsisError):
    """An input file, scene or record is missing, unreadable or malformed."""


class StorageError(RrsisError):
    """Object storage failed after retries, or a URI cannot be handled."""


class CheckpointError(RrsisError):
    """A checkpoint is missing, truncated, or of the wrong kind."""


class ModelError(RrsisError):
    """A model cannot be built from the given configuration."""


class JobError(RrsisError):
    """A cluster job could not be submitted or followed."""

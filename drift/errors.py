"""The one error tree of drift (drawn in ``drift/__init__.py``)."""

from __future__ import annotations


class DriftError(Exception):
    """Base of every error drift raises on purpose; the CLI prints it as one line."""


class ConfigError(DriftError):
    """A flag, environment variable or scenario file is invalid."""


class TargetUnreachable(DriftError):
    """The server under test could not be reached."""


class CheckFailed(DriftError):
    """A run completed and at least one check failed."""

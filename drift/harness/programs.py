"""Installed programs a child runs (redis-server, turnserver), or one clear error."""

from __future__ import annotations

import shutil

from drift.errors import DriftError


class MissingProgram(DriftError):
    """A program drift starts as a child is not installed."""


def program(name: str, package: str) -> str:
    """The path of ``name``; :class:`MissingProgram` naming the Debian package otherwise."""
    path = shutil.which(name)
    if path is None:
        raise MissingProgram(f"{name} is not installed (Debian package {package})")
    return path

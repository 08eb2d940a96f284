"""Programs the tests start (redis-server, turnserver): a failure in CI, a skip elsewhere."""

from __future__ import annotations

import os

import pytest

from drift.harness.programs import MissingProgram, program


def require_program(name: str, package: str) -> str:
    """The path of ``name``; CI must have it installed (scripts/test installs it)."""
    try:
        return program(name, package)
    except MissingProgram as exc:
        message = f"{exc}; scripts/test installs it"
        if os.environ.get("DRIFT_CI"):
            pytest.fail(message)
        pytest.skip(message)

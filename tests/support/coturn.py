"""A real coturn for tests (:mod:`drift.harness.coturn`) with one shared secret for the session."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager

import pytest

from drift.harness import coturn as harness
from drift.harness.coturn import Coturn
from tests.support.programs import require_program

SECRET = "coturn-shared-" + secrets.token_hex(8)


@contextmanager
def run_coturn(
    relay_ports: int = 16, secret: str = SECRET, extra: Sequence[str] = ()
) -> Iterator[Coturn]:
    """A started coturn on free loopback ports; the test is skipped (failed in CI) without one."""
    require_program("turnserver", "coturn")
    with harness.run_coturn(secret, relay_ports, extra) as server:
        yield server


@pytest.fixture
async def coturn() -> AsyncIterator[int]:
    """A fresh coturn for one test; yields its UDP port (the shared secret is SECRET)."""
    with run_coturn(relay_ports=16) as server:
        yield server.port

"""Waiting for a condition that has no event to await, always with a deadline.

The check is the real thing (a server's state, an answered request); the
pause between two checks only spaces them out, it is never the wait itself.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    *,
    interval: float = 0.02,
    what: str = "the condition",
) -> None:
    """Return once ``check()`` holds; :class:`TimeoutError` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not hold within {timeout:g} s")
        time.sleep(interval)


async def until(
    check: Callable[[], bool | Awaitable[bool]],
    timeout: float = 10.0,
    *,
    interval: float = 0.01,
) -> None:
    """Return once ``check()`` (plain or async) holds; :class:`TimeoutError` after ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if await result if inspect.isawaitable(result) else result:
                return
            await asyncio.sleep(interval)

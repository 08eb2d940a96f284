"""The one way drift runs a coroutine to completion: uvloop when it is installed.

Every command and child process uses it, so a figure measured by one tool is
measured on the same event loop as the others (uvloop was measured faster; see
docs/performance.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when importable, plain asyncio otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    result: T = uvloop.run(coro)
    return result

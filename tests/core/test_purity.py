"""The core is pure: importing it loads no event loop, socket, HTTP or Redis module.

Run in a fresh interpreter, because the test process itself has long imported
all of them; a core module that grew an I/O import would fail here, not in review.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CORE_MODULES = (
    "drift.core.protocol",
    "drift.core.lobby",
    "drift.core.cluster",
    "drift.core.node_messages",
    "drift.core.ratelimit",
)
#: Top-level packages the core must never load, directly or through a dependency.
IO_PACKAGES = ("asyncio", "aiohttp", "redis", "socket", "selectors", "ssl", "gevent", "aiortc")


def _loaded_after_import(modules: tuple[str, ...]) -> list[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded: list[str] = json.loads(out.stdout)
    return loaded


def test_core_imports_no_io_module() -> None:
    loaded = _loaded_after_import(CORE_MODULES)
    assert set(CORE_MODULES) <= set(loaded)  # the imports really happened
    offenders = sorted(m for m in loaded if m.split(".")[0] in IO_PACKAGES)
    assert offenders == []


@pytest.mark.parametrize("module", ["drift.serve.server", "drift.client.signaling"])
def test_the_check_sees_io_modules(module: str) -> None:
    """The probe is not blind: the I/O shells do load what the core must not."""
    loaded = _loaded_after_import((module,))
    assert any(m.split(".")[0] in IO_PACKAGES for m in loaded)

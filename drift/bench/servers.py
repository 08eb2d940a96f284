"""The servers under test of a benchmark, each its own process (:mod:`drift.harness`).

Each server runs in its own process (its RSS and CPU are then its own, and it
holds its own 10,000 sockets under the 20,000 descriptor limit). It is ready
when it prints its URL (bound to port 0, read back); its stdout and stderr go
to ``<log_dir>/<name>.out``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from drift.harness.serve import DRIFT_SERVE, ServeProcess

#: The flags of every drift server under test, also printed in the report: every
#: load connection comes from 127.0.0.1, and 10,000 of them must be let in.
DRIFT_FLAGS: Final = (
    "--max-connections-per-ip",
    "0",
    "--rate-limit",
    "0",
    "--max-connections",
    "20000",
    "--max-queue",
    "20000",
)
#: ``drift serve`` on plain asyncio: uvloop made unimportable before the CLI runs.
_NO_UVLOOP: Final = (
    sys.executable,
    "-c",
    "import sys; sys.modules['uvloop'] = None; from drift.cli import main; main()",
    "serve",
)
#: What the bare baseline (``suites/bare_relay.py``) prints once it listens.
BARE_READY: Final = re.compile(r"bare serving on (?P<url>http://\S+)")


def drift_server(
    name: str, log_dir: Path, extra: Sequence[str] = (), *, uvloop: bool = True
) -> ServeProcess:
    """``drift serve`` on a free loopback port with :data:`DRIFT_FLAGS` (not started)."""
    return ServeProcess(
        [*DRIFT_FLAGS, *extra],
        log_dir / f"{name}.out",
        program=DRIFT_SERVE if uvloop else _NO_UVLOOP,
        name=name,
    )


def bare_server(
    name: str, log_dir: Path, script: Path, mode: str = "relay", *, uvloop: bool = True
) -> ServeProcess:
    """The bare aiohttp baseline ``script`` in ``mode`` (not started)."""
    return ServeProcess(
        ["--mode", mode, *([] if uvloop else ["--no-uvloop"])],
        log_dir / f"{name}.out",
        program=(sys.executable, str(script)),
        ready=BARE_READY,
        name=name,
    )

"""The reference server under test, in its own process (see :mod:`drift.harness.serve`).

Every locust user connects from 127.0.0.1, so the per-address cap is off; the
per-connection rate limit stays on. Reports say so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

from drift.harness.serve import ServeProcess

BASE_ARGS: Final = ("--max-connections-per-ip", "0", "--log-format", "json")


class ServerProcess(ServeProcess):
    def __init__(
        self,
        extra_args: Sequence[str],
        log_path: Path,
        *,
        host: str = "127.0.0.1",
        ready_timeout: float = 30.0,
    ) -> None:
        # Scenario and user flags come last: for a repeated click option the last one wins.
        args = [*BASE_ARGS, "--log-level", "warning", *extra_args]
        super().__init__(args, log_path, host=host, ready_timeout=ready_timeout)

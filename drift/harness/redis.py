"""``redis-server`` as a child: its own loopback port, no persistence, ready when it says so."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from drift.harness.child import Child
from drift.harness.ports import free_port
from drift.harness.programs import program

#: What redis-server logs (on stdout) once it accepts connections.
READY: Final = re.compile(r"Ready to accept connections")


class RedisServer(Child):
    """One redis-server on a free loopback port; it can be stopped and started again there."""

    def __init__(
        self, workdir: Path, log_path: Path | None = None, *, ready_timeout: float = 30.0
    ) -> None:
        self.port = free_port()
        argv = [
            program("redis-server", "redis-server"),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            # No RDB or AOF file: a scratch store that leaves nothing behind.
            "--save", "",
            "--appendonly", "no",
            "--dir", str(workdir),
            "--protected-mode", "no",
        ]  # fmt: skip
        super().__init__(argv, name="redis-server", log_path=log_path)
        self.ready_timeout = ready_timeout

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        self.spawn()
        self.wait_for_line(READY, self.ready_timeout)
        return self.url

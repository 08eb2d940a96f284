"""The embedded target: the reference server in its own process on a free loopback port.

Its own process, so the server's event loop does not compete with the peers'
loop for one core. All synthetic peers come from one address, so the per-IP
cap is off (``--max-connections-per-ip 0``) and the report says so; the queue
timeout is off too, so the odd peer out can wait for as long as the run lasts.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Final

from drift.client.urls import ws_url
from drift.errors import DriftError
from drift.harness.serve import ServeProcess

#: flags the report prints, so a reader knows what the target was
SERVER_NOTE: Final = "embedded reference server, per-IP connection cap off, queue timeout off"


class EmbeddedServer:
    def __init__(
        self,
        *,
        peers: int,
        faults: tuple[str, ...] = (),
        log: Path | None = None,
        turn_urls: tuple[str, ...] = (),
        turn_secret: str | None = None,
        turn_ttl: float | None = None,
        stun_urls: tuple[str, ...] = (),
        host: str = "127.0.0.1",
    ):
        self.peers = peers
        self.faults = faults
        self.log = log
        self.turn_urls = turn_urls
        self.turn_secret = turn_secret
        self.turn_ttl = turn_ttl
        self.stun_urls = stun_urls
        #: a --network run serves on the lab's internet address instead of loopback
        self.host = host
        self.http_url = ""
        self.process: ServeProcess | None = None
        self.pid = 0

    @property
    def ws_url(self) -> str:
        return ws_url(self.http_url)

    def argv(self) -> list[str]:
        """The flags of ``drift serve`` (host and port are ServeProcess's)."""
        cap = str(max(10_000, self.peers * 2 + 16))
        argv = [
            "--max-connections-per-ip", "0",
            "--max-connections", cap, "--max-queue", cap,
            "--queue-timeout", "0",
            "--log-level", "warning",
        ]  # fmt: skip
        for fault in self.faults:
            argv += ["--fault", fault]
        for url in self.stun_urls:
            argv += ["--stun-url", url]
        for url in self.turn_urls:
            argv += ["--turn-url", url]
        if self.turn_ttl is not None:
            argv += ["--turn-ttl", f"{self.turn_ttl:g}"]
        return argv

    async def start(self, timeout: float = 30.0) -> str:
        # Through the environment, never argv, where any local user could read it with ps.
        env = {"DRIFT_TURN_SECRET": self.turn_secret} if self.turn_secret else {}
        self.process = ServeProcess(
            self.argv(), self.log, host=self.host, env=env, ready_timeout=timeout
        )
        try:
            self.http_url = await asyncio.to_thread(self.process.start)
        except DriftError as exc:
            raise DriftError(f"the embedded server did not start: {exc}") from None
        self.pid = self.process.pid
        return self.ws_url

    def stats(self) -> dict[str, object]:
        with urllib.request.urlopen(self.http_url + "/stats", timeout=5) as resp:
            value = json.loads(resp.read())
        assert isinstance(value, dict)
        return value

    async def settled_connections(self, deadline_s: float = 5.0) -> int:
        """Poll /stats until no connection is left (or the deadline); return the last count."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        while True:
            stats = await loop.run_in_executor(None, self.stats)
            left = int(str(stats.get("connections", 0)))
            if left == 0 or loop.time() >= end:
                return left
            await asyncio.sleep(0.1)

    def peak_rss(self) -> int:
        """Peak resident set size of the server process (VmHWM), 0 when unknown."""
        try:
            with open(f"/proc/{self.pid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            pass
        return 0

    async def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the server drains), SIGKILL after ``timeout``."""
        if self.process is not None:
            await asyncio.to_thread(self.process.stop, timeout)

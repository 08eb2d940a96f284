"""The embedded target: the reference server in its own process on a free loopback port.

Its own process, so the server's event loop does not compete with the peers'
loop for one core. All synthetic peers come from one address, so the per-IP
cap is off (``--max-connections-per-ip 0``) and the report says so; the queue
timeout is off too, so the odd peer out can wait for as long as the run lasts.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from drift.client.urls import ws_url
from drift.errors import DriftError
from drift.harness.serve import ServeProcess

if TYPE_CHECKING:
    from drift.simulate.settings import Settings

#: what the embedded server's environment says about CA certificates: none to load
NO_CA_BUNDLE: Final = {"SSL_CERT_FILE": os.devnull, "SSL_CERT_DIR": os.devnull}

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

    @classmethod
    def for_run(cls, settings: Settings, folder: Path, **lab: Any) -> EmbeddedServer:
        """The server of one run (its log in the report folder); ``lab``: a --network
        run's host, STUN and TURN options, which replace the settings' own."""
        options: dict[str, Any] = {
            "turn_urls": settings.turn_urls,
            "turn_secret": settings.turn_secret,
            "turn_ttl": settings.turn_ttl,
            **lab,
        }
        return cls(
            peers=settings.peers,
            faults=settings.server_faults,
            log=folder / "server.log",
            **options,
        )

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

    def spawn(self, timeout: float = 30.0) -> None:
        """Start the process without waiting for it; :meth:`start` waits."""
        if self.process is not None:
            return
        # Through the environment, never argv, where any local user could read it with ps.
        env = {"DRIFT_TURN_SECRET": self.turn_secret} if self.turn_secret else {}
        # This server opens no TLS connection, but importing aiohttp builds its
        # client TLS contexts and loads the system CA bundle into them: ~50 ms of
        # CPU on the run's critical path (server start 0.27 -> 0.22 s, measured in
        # docs/performance.md). An empty bundle makes that load instant.
        env |= NO_CA_BUNDLE
        self.process = ServeProcess(
            self.argv(), self.log, host=self.host, env=env, ready_timeout=timeout
        )
        self.process.spawn()
        self.pid = self.process.pid

    async def start(self, timeout: float = 30.0) -> str:
        """Spawned (unless it was) and ready: its ``ws://`` URL."""
        self.spawn(timeout)
        assert self.process is not None
        try:
            self.http_url = await asyncio.to_thread(self.process.wait_ready)
        except DriftError as exc:
            raise DriftError(f"the embedded server did not start: {exc}") from None
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

    def stop_now(self) -> None:
        """From synchronous code, when the run could not stop it: SIGTERM, SIGKILL after 2 s."""
        if self.process is not None:
            self.process.stop(2.0)

"""The embedded target: the reference server in its own process on a free loopback port.

Its own process, so the server's event loop does not compete with the peers'
loop for one core. All synthetic peers come from one address, so the per-IP
cap is off (``--max-connections-per-ip 0``) and the report says so; the queue
timeout is off too, so the odd peer out can wait for as long as the run lasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import urllib.request
from pathlib import Path
from typing import Final

from drift.errors import DriftError

_READY: Final = re.compile(r"drift serving on (http://\S+)")
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
    ):
        self.peers = peers
        self.faults = faults
        self.log = log
        self.turn_urls = turn_urls
        self.turn_secret = turn_secret
        self.turn_ttl = turn_ttl
        self.http_url = ""
        self.process: asyncio.subprocess.Process | None = None
        self.pid = 0

    @property
    def ws_url(self) -> str:
        return self.http_url.replace("http", "ws", 1) + "/ws"

    def argv(self) -> list[str]:
        cap = str(max(10_000, self.peers * 2 + 16))
        argv = [
            sys.executable, "-m", "drift", "serve",
            "--host", "127.0.0.1", "--port", "0",
            "--max-connections-per-ip", "0",
            "--max-connections", cap, "--max-queue", cap,
            "--queue-timeout", "0",
            "--log-level", "warning",
        ]  # fmt: skip
        for fault in self.faults:
            argv += ["--fault", fault]
        for url in self.turn_urls:
            argv += ["--turn-url", url]
        if self.turn_ttl is not None:
            argv += ["--turn-ttl", f"{self.turn_ttl:g}"]
        return argv

    async def start(self, timeout: float = 30.0) -> str:
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
        # the server's log goes to a file next to the report (opened once, briefly)
        stderr = open(self.log, "ab") if self.log else asyncio.subprocess.DEVNULL  # noqa: SIM115, ASYNC230
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("DRIFT_TURN_SECRET", None)
        if self.turn_secret:
            # through the environment, never argv, where any local user could read it with ps
            env["DRIFT_TURN_SECRET"] = self.turn_secret
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv(), stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env
            )
        finally:
            if not isinstance(stderr, int):
                stderr.close()
        self.pid = self.process.pid
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = await self.process.stdout.readline()
                    if not line:
                        raise DriftError("the embedded server exited before it was ready")
                    found = _READY.search(line.decode(errors="replace"))
                    if found:
                        self.http_url = found.group(1)
                        return self.ws_url
        except TimeoutError:
            await self.stop()
            raise DriftError(f"the embedded server was not ready within {timeout:g} s") from None

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

    async def stop(self) -> None:
        proc = self.process
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

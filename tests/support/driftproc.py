"""A real ``python -m drift serve`` in a subprocess, for tests that need real signals or logs.

Readiness is the printed "drift serving on http://..." line (the server binds
port 0 and prints the port it got), never a sleep. stdout and stderr are
collected in the background so the child can never block on a full pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from drift.client.urls import ws_url
from drift.harness.serve import READY_LINE
from tests.support.wsclient import TIMEOUT


async def until(check: Callable[[], bool | Awaitable[bool]], timeout: float = TIMEOUT) -> None:
    """Poll ``check`` until it holds, within a deadline: for state that has no event to await."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if result if isinstance(result, bool) else await result:
                return
            await asyncio.sleep(0.01)


_READY = READY_LINE


class DriftProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.url = ""
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers: list[asyncio.Task[None]] = []

    @property
    def ws_url(self) -> str:
        return ws_url(self.url)

    @classmethod
    async def start(cls, *args: str, env: dict[str, str] | None = None) -> DriftProcess:
        """Start ``drift serve --port 0 --host 127.0.0.1 *args`` and wait for its URL line."""
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFT_")}
        child_env.update(env or {})
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "drift",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=child_env,
        )
        self = cls(proc)
        assert proc.stdout is not None and proc.stderr is not None
        self._readers.append(asyncio.create_task(self._collect(proc.stderr, self.stderr)))
        try:
            async with asyncio.timeout(TIMEOUT * 3):
                while True:
                    raw = await proc.stdout.readline()
                    if not raw:
                        raise AssertionError(f"drift serve exited early: {self.stderr}")
                    line = raw.decode()
                    self.stdout.append(line)
                    match = _READY.search(line)
                    if match:
                        self.url = match.group(1)
                        break
        except BaseException:
            await self.kill()
            raise
        self._readers.append(asyncio.create_task(self._collect(proc.stdout, self.stdout)))
        return self

    @staticmethod
    async def _collect(stream: asyncio.StreamReader, into: list[str]) -> None:
        async for raw in stream:
            into.append(raw.decode(errors="replace"))

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    async def wait(self, timeout: float) -> int:
        """Exit status, once the process has exited and its output is fully read."""
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
            await asyncio.gather(*self._readers)
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        for task in self._readers:
            task.cancel()
        for task in self._readers:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def output(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.url + path, **kwargs) as resp,
        ):
            return resp.status, await resp.text()

"""``drift serve`` as a child process, for every tool and test that needs a server to aim at.

simulate's embedded target, the load test's server, the benchmarks' servers,
``drift serve --workers`` and the tests all start it here: a separate process,
so the tool under way never shares the server's CPU, event loop or RSS. It
binds port 0 and is ready when it prints its URL, read back from that line.

Two flavours: :class:`ServeProcess` (blocking; stdout drained to a log by a
thread) and :class:`AsyncServeProcess` (asyncio; every output line kept, for
tests that read the server's logs).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from drift.client.urls import ws_url
from drift.errors import ConfigError, DriftError
from drift.harness.child import Child, NotReady, kill_group
from drift.harness.env import child_env
from drift.serve.logs import json_event

#: What ``drift serve`` prints on stdout once it listens; the one format of it.
READY_PREFIX: Final = "drift serving on "
#: the ready event's name with ``--log-format json``
READY_EVENT: Final = "ready"
#: The URL of either form of the ready line: the text, or the JSON object's "url".
READY_LINE: Final = re.compile(
    rf'(?:{READY_PREFIX}|"event":\s*"{READY_EVENT}".*"url":\s*")(?P<url>https?://[^\s"]+)'
)
#: ``python -m drift serve``: the program of every server child unless told otherwise.
DRIFT_SERVE: Final = (sys.executable, "-m", "drift", "serve")
READY_TIMEOUT: Final = 30.0


def ready_message(url: str, log_format: str = "console") -> str:
    """The ready line: readable text, or one JSON object like every log line of the format."""
    if log_format == "json":
        return json_event(READY_EVENT, url=url, ws_url=ws_url(url))
    return f"{READY_PREFIX}{url} (WebSocket {ws_url(url)})"


def serve_command(
    args: Sequence[str],
    *,
    host: str | None = "127.0.0.1",
    port: int = 0,
    program: Sequence[str] = DRIFT_SERVE,
) -> list[str]:
    """``program --host HOST --port PORT *args``; ``host=None``: host and port come from ``args``.

    The caller's flags come last: for a repeated click option the last one wins.
    """
    listen = [] if host is None else ["--host", host, "--port", str(port)]
    return [*program, *listen, *args]


class ServeProcess(Child):
    """A server child that prints its URL when ready; ``start()`` returns that URL.

    ``program`` and ``ready`` serve the other servers of the benchmarks (the
    bare baseline, a profiled drift) that take ``--host``/``--port`` and print a
    line of their own.
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        log_path: Path | None = None,
        *,
        host: str | None = "127.0.0.1",
        port: int = 0,
        env: Mapping[str, str] | None = None,
        ready_timeout: float = READY_TIMEOUT,
        program: Sequence[str] = DRIFT_SERVE,
        ready: re.Pattern[str] = READY_LINE,
        name: str = "drift serve",
        inherit_stderr: bool = False,
        dies_with_parent: bool = False,
    ) -> None:
        super().__init__(
            serve_command(args, host=host, port=port, program=program),
            name=name,
            log_path=log_path,
            env=env,
            inherit_stderr=inherit_stderr,
            dies_with_parent=dies_with_parent,
        )
        self.ready_timeout = ready_timeout
        self.ready = ready
        self.url = ""

    @property
    def command(self) -> list[str]:
        return self.argv

    @property
    def ws_url(self) -> str:
        return ws_url(self.url)

    def start(self) -> str:
        self.spawn()
        return self.wait_ready()

    def wait_ready(self) -> str:
        """The URL from the ready line; :class:`ConfigError` if the server exited first."""
        try:
            self.url = self.wait_for_line(self.ready, self.ready_timeout)["url"]
        except NotReady as exc:
            if exc.code is None:
                raise DriftError(
                    f"{self.name} did not print its URL within {self.ready_timeout:g} s"
                ) from None
            # A bad --server-arg ends here with click's usage error: a usage problem.
            raise ConfigError(f"{exc} (before serving)") from None
        return self.url


class AsyncServeProcess:
    """``drift serve`` on the caller's event loop; every stdout and stderr line is kept."""

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
    async def start(
        cls,
        *args: str,
        env: Mapping[str, str] | None = None,
        host: str | None = "127.0.0.1",
        timeout: float = READY_TIMEOUT,
        program: Sequence[str] = DRIFT_SERVE,
    ) -> AsyncServeProcess:
        """Start ``drift serve --host HOST --port 0 *args`` and wait for its URL line."""
        proc = await asyncio.create_subprocess_exec(
            *serve_command(args, host=host, program=program),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=child_env(env),
            start_new_session=True,  # see Child.spawn
        )
        self = cls(proc)
        assert proc.stdout is not None and proc.stderr is not None
        self._readers.append(asyncio.create_task(self._collect(proc.stderr, self.stderr)))
        try:
            async with asyncio.timeout(timeout):
                while not self.url:
                    raw = await proc.stdout.readline()
                    if not raw:
                        await proc.wait()
                        await asyncio.gather(*self._readers)
                        raise NotReady(
                            f"drift serve exited with code {proc.returncode}: {self.output()}",
                            proc.returncode,
                        )
                    line = raw.decode(errors="replace")
                    self.stdout.append(line)
                    if match := READY_LINE.search(line):
                        self.url = match["url"]
        except BaseException:
            await self.kill()
            raise
        self._readers.append(asyncio.create_task(self._collect(proc.stdout, self.stdout)))
        return self

    @staticmethod
    async def _collect(stream: asyncio.StreamReader, into: list[str]) -> None:
        async for raw in stream:
            into.append(raw.decode(errors="replace"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    async def wait(self, timeout: float) -> int:
        """Exit status, once the process has exited and its output is fully read."""
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
            await asyncio.gather(*self._readers)
        return code

    async def kill(self) -> None:
        """SIGKILL it and whatever it started (``--workers``), then read the rest of its output."""
        if self.proc.returncode is None:
            kill_group(self.proc.pid)
            await self.proc.wait()
        for task in self._readers:
            task.cancel()
        for task in self._readers:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def output(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str]:
        """``GET url+path``: (status, body)."""
        import aiohttp  # only the tests' and tools' async side needs it

        async with (
            aiohttp.ClientSession() as session,
            session.get(self.url + path, **kwargs) as resp,
        ):
            return resp.status, await resp.text()

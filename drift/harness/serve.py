"""``drift serve`` in a child process, for every tool that needs a server to aim at.

simulate's embedded target, the load test's server and the benchmarks' servers
all start the reference server this way: a separate process, so the tool under
way never shares the server's CPU, event loop or RSS. It is ready when it
prints its URL (bound to port 0, read back), never after a sleep. Its output
goes to a log file (or nowhere) from a background thread, so a chatty server
can never block on a full pipe.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Final

from drift.client.urls import ws_url
from drift.errors import ConfigError, DriftError

#: What ``drift serve`` prints on stdout once it listens; the one format of it.
READY_PREFIX: Final = "drift serving on "
READY_LINE: Final = re.compile(READY_PREFIX + r"(?P<url>https?://\S+)")


def ready_message(url: str) -> str:
    return f"{READY_PREFIX}{url} (WebSocket {url.replace('http', 'ws', 1)}/ws)"


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without ``DRIFT_*`` settings, which would change the server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFT_")}
    env.update(extra or {})
    return env


class ServeProcess:
    """``python -m drift serve --host HOST --port 0 *args``; a context manager."""

    def __init__(
        self,
        args: Sequence[str],
        log_path: Path | None = None,
        *,
        host: str = "127.0.0.1",
        env: Mapping[str, str] | None = None,
        ready_timeout: float = 30.0,
    ) -> None:
        # The caller's flags come last: for a repeated click option the last one wins.
        self.args = ["--host", host, "--port", "0", *args]
        self.log_path = log_path
        self.env = child_env(env)
        self.ready_timeout = ready_timeout
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._drain: threading.Thread | None = None

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "drift", "serve", *self.args]

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def ws_url(self) -> str:
        return ws_url(self.url)

    def __enter__(self) -> ServeProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> str:
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log or subprocess.DEVNULL,
            env=self.env,
        )
        assert self._proc.stdout is not None
        self.url = self._wait_ready(self._proc, self._proc.stdout)
        self._drain = threading.Thread(
            target=self._copy, args=(self._proc.stdout,), name="drift-server-stdout", daemon=True
        )
        self._drain.start()
        return self.url

    def _wait_ready(self, proc: subprocess.Popen[bytes], out: IO[bytes]) -> str:
        deadline = time.monotonic() + self.ready_timeout
        buffered = b""
        with selectors.DefaultSelector() as sel:
            sel.register(out, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    continue
                chunk = os.read(out.fileno(), 4096)
                if not chunk:  # stdout closed: the server exited
                    break
                buffered += chunk
                if self._log is not None:
                    self._log.write(chunk)
                if match := READY_LINE.search(buffered.decode(errors="replace")):
                    return match["url"]
        self.stop()
        code = proc.poll()
        why = self._last_log_line() or "no output"
        if code is None:
            raise DriftError(f"the server did not print its URL within {self.ready_timeout:g} s")
        # A bad --server-arg ends here with click's usage error: a usage problem.
        raise ConfigError(f"the server exited with code {code} before serving: {why}")

    def _last_log_line(self) -> str:
        if self.log_path is None:
            return ""
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""

    def _copy(self, out: IO[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError):
            for chunk in iter(lambda: out.read1(65536), b""):  # type: ignore[attr-defined]
                if self._log is not None:
                    self._log.write(chunk)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (the server drains), then SIGKILL after ``timeout``; the exit code."""
        proc = self._proc
        code: int | None = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            code = proc.returncode
            if self._drain is not None:
                self._drain.join(timeout=2)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

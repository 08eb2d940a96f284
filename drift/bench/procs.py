"""Processes of a benchmark: servers under test, redis-server and the load client.

Each server runs in its own process (its RSS and CPU are then its own, and it
holds its own 10,000 sockets under the 20,000 descriptor limit). A server is
ready when it prints its URL (bound to port 0, read back), never after a sleep;
its stdout and stderr go to files in the run folder, so a chatty server can
never block on a full pipe.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from drift.client.urls import ws_url
from drift.errors import DriftError

# Matches drift's own line (drift.harness.serve.READY_LINE) and the baseline
# servers' "bare serving on ..." alike.
_READY: Final = re.compile(r"serving on (?P<url>http://\S+)")
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
#: ``drift serve`` with plain asyncio: uvloop made unimportable before the CLI runs.
_NO_UVLOOP: Final = "import sys; sys.modules['uvloop'] = None; from drift.cli import main; main()"
READY_TIMEOUT: Final = 30.0


def child_env() -> dict[str, str]:
    """This environment minus ``DRIFT_*`` settings, which would change the server under test."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DRIFT_")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proc:
    """A child process whose output goes to ``<log_dir>/<name>.out``; a context manager."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.out_path = log_dir / f"{name}.out"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with self.out_path.open("wb") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=child_env()
            )

    def wait_for(self, pattern: re.Pattern[str], timeout: float = READY_TIMEOUT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            text = self.out_path.read_text(errors="replace")
            match = pattern.search(text)
            if match:
                return match
            if self.proc.poll() is not None:
                raise DriftError(f"{self.name} exited early: {text[-2000:]}")
            if time.monotonic() > deadline:
                raise DriftError(f"{self.name} not ready within {timeout:g} s: {text[-2000:]}")
            time.sleep(0.02)

    def stop(self, timeout: float = 15.0, *, kill: bool = False) -> None:
        """SIGTERM and wait (SIGKILL after ``timeout``); ``kill``: SIGKILL at once.

        Killing is for servers whose measurements are done: draining 10,000
        sockets politely takes seconds of the five-minute budget and proves nothing.
        """
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ServerProc(Proc):
    """A server that prints ``... serving on http://HOST:PORT``; ``ws_url`` once started."""

    url = ""

    @property
    def ws_url(self) -> str:
        return ws_url(self.url)

    def start(self) -> None:
        super().start()
        try:
            self.url = self.wait_for(_READY).group("url")
        except BaseException:
            self.stop()
            raise


def drift_server(
    name: str, log_dir: Path, extra: Sequence[str] = (), *, uvloop: bool = True
) -> ServerProc:
    """``drift serve`` on a free loopback port with :data:`DRIFT_FLAGS` (not started)."""
    prefix = [sys.executable, "-m", "drift"] if uvloop else [sys.executable, "-c", _NO_UVLOOP]
    argv = [*prefix, "serve", "--host", "127.0.0.1", "--port", "0", *DRIFT_FLAGS, *extra]
    return ServerProc(name, argv, log_dir)


def bare_server(
    name: str, log_dir: Path, script: Path, mode: str = "relay", *, uvloop: bool = True
) -> ServerProc:
    argv = [sys.executable, str(script), "--mode", mode, "--port", "0"]
    return ServerProc(name, [*argv, *([] if uvloop else ["--no-uvloop"])], log_dir)


class RedisServer(Proc):
    """Its own redis-server on a free loopback port, without persistence."""

    def __init__(self, log_dir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise DriftError("redis-server is not installed (Debian package redis-server)")
        self.port = free_port()
        super().__init__(
            "redis",
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(log_dir),
                "--protected-mode",
                "no",
            ],
            log_dir,
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        super().start()
        self.wait_for(re.compile(r"Ready to accept connections"))


def run_loadgen(spec: dict[str, Any], timeout: float = 180.0) -> dict[str, Any]:
    """Run the load client in its own process and return its JSON result."""
    done = subprocess.run(
        [sys.executable, "-m", "drift.bench.loadgen", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
        check=False,
    )
    if done.returncode != 0:
        raise DriftError(f"load client failed ({done.returncode}): {done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(result, dict)
    return result

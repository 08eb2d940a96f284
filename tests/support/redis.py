"""A real ``redis-server`` for tests: its own process on a free loopback port, no persistence."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.support.wsclient import TIMEOUT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_binary(name: str, package: str) -> str:
    """The path of ``name``; a failure in CI (it must be installed), a clear skip elsewhere."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian package {package}; scripts/test installs it)"
        if os.environ.get("DRIFT_CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


class RedisProcess:
    def __init__(self, workdir: Path) -> None:
        self.binary = require_binary("redis-server", "redis-server")
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait_ready()

    def wait_ready(self) -> None:
        """Poll PING with a deadline: ready means it answers, not that time has passed."""
        deadline = time.monotonic() + TIMEOUT * 2
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        try:
            while True:
                assert self.proc is not None and self.proc.poll() is None, "redis-server exited"
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(TIMEOUT * 2)
        self.proc = None

    def flush(self) -> None:
        client = redis.Redis.from_url(self.url)
        try:
            client.flushall()
        finally:
            client.close()

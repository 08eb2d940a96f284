"""``drift serve --workers N``: N server processes on one port (SO_REUSEPORT) sharing Redis.

The kernel spreads new connections over the workers; the workers share the
queue through Redis, so a peer on one worker is matched with a peer on
another exactly as across machines. This parent only starts, watches and
stops them: first SIGTERM/SIGINT is passed on (each worker drains), a second
one kills them.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from drift.errors import ConfigError
from drift.harness.serve import READY_LINE
from drift.serve.config import ServerConfig


def reserve_port(host: str, port: int) -> socket.socket:
    """Hold ``port`` (a free one when 0) with SO_REUSEPORT so the workers can share it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def run_workers(config: ServerConfig, argv: Sequence[str], ready: Callable[[str], None]) -> int:
    """Start ``config.workers`` copies of ``drift serve``, wait for them, return an exit code."""
    if not config.redis_url:
        raise ConfigError("--workers needs --redis: the workers share their queue through Redis")
    holder = reserve_port(config.host, config.port)
    port = holder.getsockname()[1]
    # Later flags win in click, so the worker's own settings go last.
    child_args = [*argv, "--port", str(port), "--workers", "1", "--reuse-port"]
    children: list[subprocess.Popen[str]] = []
    try:
        for index in range(config.workers):
            node = f"{config.node_id or socket.gethostname()}-w{index}"
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "drift", "serve", *child_args, "--node-id", node],
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        url = ""
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline()
            found = READY_LINE.match(line)
            if not found:
                raise ConfigError("a worker failed to start; see its log above")
            url = found["url"]
        ready(url)
        return _supervise(children)
    finally:
        holder.close()
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


def _supervise(children: list[subprocess.Popen[str]]) -> int:
    signals = 0

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal signals
        signals += 1
        for child in children:
            if child.poll() is None:
                # A second signal forces, as for a single server.
                child.send_signal(signal.SIGKILL if signals > 1 else signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    codes = [child.wait() for child in children]
    # Close the pipes; the workers' own lines went nowhere after the first.
    for child in children:
        if child.stdout is not None:
            child.stdout.close()
    return max((abs(code) for code in codes), default=0)

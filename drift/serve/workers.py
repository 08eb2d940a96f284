"""``drift serve --workers N``: N server processes on one port (SO_REUSEPORT) sharing Redis.

The kernel spreads new connections over the workers; the workers share the
queue through Redis, so a peer on one worker is matched with a peer on
another exactly as across machines. This parent only starts, watches and
stops them: first SIGTERM/SIGINT is passed on (each worker drains), a second
one kills them.

Each worker is ``drift serve`` started through :mod:`drift.harness.serve` with
flags written from the parent's frozen :class:`ServerConfig` (never re-read
from this process's argv), so it runs with exactly the parent's settings.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from types import FrameType

from drift.errors import ConfigError, DriftError
from drift.harness.serve import ServeProcess
from drift.serve.command import config_argv, config_env
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


def worker_configs(config: ServerConfig, port: int) -> list[ServerConfig]:
    """One single-process config per worker: the shared port, its own node name."""
    base = config.node_id or socket.gethostname()
    return [
        config.replace(port=port, workers=1, reuse_port=True, node_id=f"{base}-w{index}")
        for index in range(config.workers)
    ]


def run_workers(config: ServerConfig, ready: Callable[[str], None]) -> int:
    """Start ``config.workers`` copies of ``drift serve``, wait for them, return an exit code."""
    if not config.redis_url:
        raise ConfigError("--workers needs --redis: the workers share their queue through Redis")
    holder = reserve_port(config.host, config.port)
    port = holder.getsockname()[1]
    children = [
        # host=None: --host and --port are in the flags. The workers log to this stderr.
        ServeProcess(
            config_argv(worker),
            host=None,
            env=config_env(worker),
            name=f"worker {worker.node_id}",
            inherit_stderr=True,
        )
        for worker in worker_configs(config, port)
    ]
    try:
        for child in children:
            child.spawn()
        urls = [child.wait_ready() for child in children]
        ready(urls[0])
        return _supervise(children)
    except DriftError as exc:
        raise ConfigError(f"a worker failed to start: {exc}; see its log above") from None
    finally:
        holder.close()
        for child in children:
            child.stop(kill=True)


def _supervise(children: list[ServeProcess]) -> int:
    signals = 0

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal signals
        signals += 1
        for child in children:
            # A second signal forces, as for a single server.
            child.send_signal(signal.SIGKILL if signals > 1 else signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    codes = [child.wait() for child in children]
    return max((abs(code) for code in codes), default=0)

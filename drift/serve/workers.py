"""``drift serve --workers N``: N server processes on one port (SO_REUSEPORT) sharing Redis.

The kernel spreads new connections over the workers; the workers share the
queue through Redis, so a peer on one worker is matched with a peer on
another exactly as across machines. This parent starts, supervises and stops
them:

- a worker that dies is logged (``worker_died``, a warning) and started again
  after a backoff that doubles with each death of that slot (0.5 s up to 8 s);
- a slot whose worker died :data:`MAX_DEATHS` times within :data:`DEATH_WINDOW`
  seconds is broken (a bad flag, a port, Redis gone), not unlucky: the server
  logs ``workers_failing``, drains the others and exits with
  :attr:`~drift.exitcodes.ExitCode.WORKERS_FAILING`;
- the first SIGTERM/SIGINT is passed on to every worker (each drains) and the
  parent exits 0 once all have drained; a second one kills them.

Each worker is ``drift serve`` started through :mod:`drift.harness.serve` with
flags written from the parent's frozen :class:`ServerConfig` (never re-read
from this process's argv), so it runs with exactly the parent's settings. A
restarted worker gets a new node name: its predecessor's peers are the
cluster's to clean up (after ``--node-ttl``), not the newcomer's.
"""

from __future__ import annotations

import collections
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Final

from drift.errors import ConfigError, DriftError
from drift.exitcodes import ExitCode
from drift.harness.serve import ServeProcess
from drift.serve.command import config_argv, config_env
from drift.serve.config import ServerConfig
from drift.serve.logs import get_logger

log = get_logger("drift.serve.workers")

#: deaths of one worker slot within :data:`DEATH_WINDOW` seconds that end the server
MAX_DEATHS: Final = 5
DEATH_WINDOW: Final = 60.0
#: first restart delay; doubled per death of the slot still in the window, capped
BACKOFF_FIRST: Final = 0.5
BACKOFF_MAX: Final = 8.0
#: how often the parent looks at its workers (a dead one is noticed this late at most)
_POLL: Final = 0.1


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


def backoff(deaths: int) -> float:
    """Seconds before restarting a slot that died ``deaths`` times within the window."""
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** max(0, deaths - 1)))


@dataclass
class Slot:
    """One worker position: its config, its current process, its recent deaths."""

    index: int
    config: ServerConfig
    process: ServeProcess | None = None
    generation: int = 0
    deaths: collections.deque[float] = field(default_factory=collections.deque)
    restart_at: float | None = None

    def spawn(self) -> ServeProcess:
        config = self.config
        if self.generation:
            config = config.replace(node_id=f"{config.node_id}-{self.generation}")
        # host=None: --host and --port are in the flags. The workers log to this stderr.
        # A worker must not outlive this supervisor, even a SIGKILLed one: it would
        # go on serving the port, unsupervised (the supervisor spawns from its main
        # thread, as dies_with_parent requires).
        self.process = ServeProcess(
            config_argv(config),
            host=None,
            env=config_env(config),
            name=f"worker {config.node_id}",
            inherit_stderr=True,
            dies_with_parent=True,
        )
        self.process.spawn()
        return self.process

    def died(self, now: float) -> int:
        """Record a death; the number of deaths within the window."""
        self.deaths.append(now)
        while self.deaths and now - self.deaths[0] > DEATH_WINDOW:
            self.deaths.popleft()
        self.generation += 1
        return len(self.deaths)


class Supervisor:
    """Watches the slots until a stop signal, or until one slot keeps dying."""

    def __init__(self, slots: list[Slot]) -> None:
        self.slots = slots
        self.signals = 0
        self.stopping = threading.Event()
        self.failing: Slot | None = None

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        self.stopping.set()
        for slot in self.slots:
            if slot.process is not None:
                # A second signal forces, as for a single server.
                slot.process.send_signal(signal.SIGKILL if self.signals > 1 else signum)

    def run(self) -> int:
        while not self.stopping.is_set():
            now = time.monotonic()
            for slot in self.slots:
                self._check(slot, now)
                if self.failing is not None:
                    return self._give_up(slot)
            self.stopping.wait(_POLL)
        return self._drain()

    def _check(self, slot: Slot, now: float) -> None:
        proc = slot.process
        if slot.restart_at is not None:
            if now >= slot.restart_at:
                slot.restart_at = None
                self._restart(slot)
            return
        if proc is None or proc.poll() is None or self.stopping.is_set():
            return
        pid = proc.pid
        code = proc.stop()
        deaths = slot.died(now)
        delay = backoff(deaths)
        log.warning(
            "worker_died",
            extra={
                "fields": {
                    "worker": slot.index,
                    "pid": pid,
                    "exit_code": code,
                    "deaths_in_window": deaths,
                    "restart_in_s": delay,
                }
            },
        )
        slot.process = None
        if deaths >= MAX_DEATHS:
            self.failing = slot
            return
        slot.restart_at = now + delay

    def _restart(self, slot: Slot) -> None:
        proc = slot.spawn()
        try:
            url = proc.wait_ready()
        except DriftError as exc:
            # it died before serving: a death like any other, seen on the next look
            log.warning(
                "worker_restart_failed", extra={"fields": {"worker": slot.index, "error": str(exc)}}
            )
            return
        log.warning(
            "worker_restarted",
            extra={"fields": {"worker": slot.index, "pid": proc.pid, "url": url}},
        )

    def _give_up(self, slot: Slot) -> int:
        log.error(
            "workers_failing",
            extra={
                "fields": {
                    "worker": slot.index,
                    "deaths": MAX_DEATHS,
                    "window_s": DEATH_WINDOW,
                    "exit_code": int(ExitCode.WORKERS_FAILING),
                }
            },
        )
        for other in self.slots:
            if other.process is not None:
                other.process.send_signal(signal.SIGTERM)
        self._drain()
        return int(ExitCode.WORKERS_FAILING)

    def _drain(self) -> int:
        codes = [slot.process.wait() for slot in self.slots if slot.process is not None]
        return max((abs(code) for code in codes), default=0)


def run_workers(config: ServerConfig, ready: Callable[[str], None]) -> int:
    """Start ``config.workers`` copies of ``drift serve``, supervise them, return an exit code."""
    if not config.redis_url:
        raise ConfigError("--workers needs --redis: the workers share their queue through Redis")
    holder = reserve_port(config.host, config.port)
    port = holder.getsockname()[1]
    slots = [Slot(index, worker) for index, worker in enumerate(worker_configs(config, port))]
    supervisor = Supervisor(slots)
    # installed before the first spawn: a signal during start-up stops the workers too
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, supervisor.on_signal)
    try:
        children = [slot.spawn() for slot in slots]
        try:
            urls = [child.wait_ready() for child in children]
        except DriftError as exc:
            if supervisor.stopping.is_set():
                return supervisor._drain()
            raise ConfigError(f"a worker failed to start: {exc}; see its log above") from None
        ready(urls[0])
        return supervisor.run()
    finally:
        holder.close()
        for slot in slots:
            if slot.process is not None:
                slot.process.stop(kill=True)

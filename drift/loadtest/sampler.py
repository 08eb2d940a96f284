"""Periodic samples of the server under test: RSS and CPU (psutil) and its ``/stats``.

A thread, not asyncio: the command is synchronous and only waits on
subprocesses. When the server is not ours (``--url``), RSS comes from the
``rss_bytes`` of its ``/stats``, if it has one.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil


@dataclass(frozen=True, slots=True)
class ServerSample:
    t: float  # wall clock, seconds since the epoch
    rss_bytes: int | None
    cpu_percent: float | None  # server process, 100 = one core
    client_cpu_percent: float | None  # all locust processes together
    stats: dict[str, Any] | None

    def stat(self, key: str) -> float | None:
        value = (self.stats or {}).get(key)
        return float(value) if isinstance(value, int | float) else None


def fetch_stats(base_url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """``GET /stats`` as a dict, or None if the server has none or does not answer."""
    try:
        with urllib.request.urlopen(f"{base_url.rstrip('/')}/stats", timeout=timeout) as resp:
            value = json.loads(resp.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return value if isinstance(value, dict) else None


class Sampler:
    def __init__(
        self,
        base_url: str,
        server_pid: int | None,
        client_pids: Callable[[], list[int]],
        interval: float = 1.0,
    ) -> None:
        self.base_url = base_url
        self.interval = interval
        self.samples: list[ServerSample] = []
        self._server = _process(server_pid)
        self._client_pids = client_pids
        self._clients: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drift-sampler", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> None:
        self.take()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def latest(self) -> ServerSample | None:
        with self._lock:
            return self.samples[-1] if self.samples else None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.take()

    def take(self) -> ServerSample:
        stats = fetch_stats(self.base_url)
        rss: int | None = None
        cpu: float | None = None
        if self._server is not None:
            try:
                rss = self._server.memory_info().rss
                cpu = self._server.cpu_percent(None)
            except psutil.Error:
                self._server = None
        if rss is None and stats is not None and isinstance(stats.get("rss_bytes"), int):
            rss = stats["rss_bytes"]
        sample = ServerSample(time.time(), rss, cpu, self._client_cpu(), stats)
        with self._lock:
            self.samples.append(sample)
        return sample

    def _client_cpu(self) -> float | None:
        total = 0.0
        seen = False
        for pid in self._client_pids():
            proc = self._clients.get(pid) or _process(pid)
            if proc is None:
                continue
            self._clients[pid] = proc
            try:
                total += proc.cpu_percent(None)  # the first call per process reads 0.0
                seen = True
            except psutil.Error:
                self._clients.pop(pid, None)
        return total if seen else None


def _process(pid: int | None) -> psutil.Process | None:
    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
        proc.cpu_percent(None)  # prime: the next call measures since now
    except psutil.Error:
        return None
    return proc

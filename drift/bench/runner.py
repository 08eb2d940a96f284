"""What a benchmark module gets: sizes for this run, a run folder, progress, its baselines.

A benchmark in ``drift/bench/suites/`` is a module with ``run(bench: Bench) -> Outcome``.
It reads its sizes from :attr:`Bench.sizes` (``--quick`` shrinks them all),
announces each step with :meth:`Bench.step` (one rich progress bar for the whole
run), keeps server logs under :attr:`Bench.log_dir` and returns rows for the
summary table and its own section of ``docs/performance.md``.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.progress import Progress, TaskID

from drift.bench import suites


@dataclass(frozen=True)
class Sizes:
    reps: int
    #: connections held open for the memory figure (half of them matched)
    hold_connections: int
    relay_pairs: int
    relay_messages: int
    #: seconds of paced joins (and echoes) per repetition
    latency_duration: float
    join_rate: float
    redis_join_rate: float


FULL = Sizes(
    reps=3,
    hold_connections=10_000,
    relay_pairs=100,
    relay_messages=40_000,
    latency_duration=4.0,
    join_rate=500.0,
    redis_join_rate=200.0,
)
QUICK = Sizes(
    reps=3,
    hold_connections=2_000,
    relay_pairs=50,
    relay_messages=10_000,
    latency_duration=1.5,
    join_rate=500.0,
    redis_join_rate=200.0,
)
#: Sizes for the smoke test: proves the harness works, measures nothing useful.
TINY = Sizes(
    reps=1,
    hold_connections=20,
    relay_pairs=2,
    relay_messages=40,
    latency_duration=0.1,
    join_rate=200.0,
    redis_join_rate=100.0,
)


class Bench:
    def __init__(
        self,
        sizes: Sizes,
        run_dir: Path,
        console: Console,
        progress: Progress | None = None,
        quick: bool = False,
    ) -> None:
        self.sizes = sizes
        self.run_dir = run_dir
        self.log_dir = run_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.console = console
        self.progress = progress
        self.quick = quick
        self._task: TaskID | None = None

    @property
    def bare_script(self) -> Path:
        """The bare aiohttp relay baseline, run as its own script (no drift imports)."""
        return Path(suites.__file__).resolve().parent / "bare_relay.py"

    def begin(self, name: str, steps: int) -> None:
        """Start this benchmark's progress bar of ``steps`` steps."""
        if self.progress is not None:
            self._task = self.progress.add_task(name, total=steps)

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        if self.progress is not None and self._task is not None:
            self.progress.update(self._task, description=what)
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.progress is not None and self._task is not None:
                self.progress.advance(self._task)
            self.log(f"{what} [dim]({time.perf_counter() - start:.1f} s)[/]")

    def log(self, message: str) -> None:
        self.console.log(message)


def machine() -> dict[str, Any]:
    """The context every figure needs: this is a shared, loaded 2-core box, say so."""
    load = psutil.getloadavg()
    return {
        "cpus": psutil.cpu_count(),
        "load_average": [round(x, 2) for x in load],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_bytes": psutil.virtual_memory().total,
    }

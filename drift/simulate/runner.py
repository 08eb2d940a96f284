"""Run a share of the synthetic peers in one event loop, and coordinate the waiting ones.

The runner only orchestrates: it starts peers on schedule (``--arrival-rate``)
through a concurrency gate, counts their live states for the progress display
and, through a :class:`Coordinator` that sees every worker's counts, tells
waiting peers when nobody is left to pair with. Everything a peer does is in
:mod:`drift.simulate.peer` (its rounds) and :mod:`drift.simulate.call` (each
round's connection); every verdict is in :mod:`drift.simulate.verify`.
"""

from __future__ import annotations

import asyncio
import gc
import random
import resource
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from drift.simulate.loopback import LOOPBACK, PeerNetwork
from drift.simulate.records import PeerRecord
from drift.simulate.settings import Settings

#: Live states shown in the progress display.
STATES = ("pending", "connecting", "connected", "waiting", "matched", "negotiating", "verified")
_TICK = 0.2
#: WebSocket handshakes in flight at once per process
CONNECTS_IN_FLIGHT = 64


@dataclass(frozen=True, slots=True)
class RunSpec:
    """Everything a worker needs; picklable for ``--procs``."""

    settings: Settings
    #: the resolved targets (the embedded server's URL when ``settings.urls`` is empty)
    urls: tuple[str, ...]
    #: monotonic start of the arrival schedule (shared by all workers)
    t0: float = 0.0
    #: where the worker's peers gather ICE candidates (loopback unless told otherwise)
    network: PeerNetwork = LOOPBACK

    def next_selected(self, index: int) -> bool:
        fraction, seed = self.settings.next_fraction, self.settings.seed
        if fraction <= 0:
            return False
        return random.Random(seed * 1_000_003 + index).random() < fraction


class Snapshot(msgspec.Struct):
    """One worker's live counts."""

    worker: int
    assigned: int
    states: dict[str, int]
    done: int
    failed: int
    totals: dict[str, int]
    at: float


class Coordinator:
    """Decides, from all workers' snapshots, when waiting peers should give up.

    Two peers waiting at once with nobody active is itself a broken pairing rule
    (they should have been paired), so they are released to be reported as
    never-matched; one peer waiting after everybody else is done is the odd one
    out. The condition must hold on two ticks in a row so that counts taken a
    moment apart in different processes cannot trigger it.
    """

    def __init__(self, workers: int) -> None:
        self.snapshots: dict[int, Snapshot] = {}
        self.workers = workers
        self._armed = False
        self._last_waiting = -1

    def update(self, snap: Snapshot) -> None:
        self.snapshots[snap.worker] = snap

    def totals(self) -> tuple[Counter[str], int, int, dict[str, int]]:
        states: Counter[str] = Counter()
        totals: Counter[str] = Counter()
        done = failed = 0
        for snap in self.snapshots.values():
            states.update(snap.states)
            totals.update(snap.totals)
            done += snap.done
            failed += snap.failed
        return states, done, failed, dict(totals)

    def decide(self) -> int | None:
        """The number of waiting peers to release now, or None."""
        if len(self.snapshots) < self.workers:
            return None
        states, _, _, _ = self.totals()
        waiting = states.get("waiting", 0)
        pending = states.get("pending", 0) + states.get("connecting", 0)
        active = sum(v for k, v in states.items() if k not in ("pending", "waiting"))
        ready = waiting > 0 and active == 0 and (pending == 0 or waiting >= 2)
        if not ready:
            self._armed = False
            return None
        if self._armed and waiting == self._last_waiting:
            self._armed = False
            return waiting
        self._armed = True
        self._last_waiting = waiting
        return None


class WorkerRun:
    """The peers of one worker (``index % procs == worker``), run in this event loop."""

    def __init__(self, spec: RunSpec, worker: int = 0, procs: int = 1) -> None:
        # Imported here, not at the top: the process that only coordinates
        # workers (``--procs`` > 1) never loads aiortc or aiohttp's client, and a
        # single-process run imports them while the embedded server starts
        # (:func:`drift.simulate.forkserver.prestart`).
        from drift.simulate.peer import Release

        self.spec = spec
        self.worker = worker
        self.indices = list(range(worker, spec.settings.peers, procs))
        self.states: Counter[str] = Counter({"pending": len(self.indices)})
        self.totals: Counter[str] = Counter()
        self.done = 0
        self.failed = 0
        self.release = Release()
        self.offers = 0
        self.media_offers = 0
        self.changed = asyncio.Event()

    def snapshot(self) -> Snapshot:
        return Snapshot(
            worker=self.worker,
            assigned=len(self.indices),
            states={k: v for k, v in self.states.items() if v},
            done=self.done,
            failed=self.failed,
            totals=dict(self.totals),
            at=time.monotonic(),
        )

    def release_waiting(self, waiting: int) -> None:
        """Let every peer now waiting give up; later waiters get a fresh release."""
        release, self.release = self.release, type(self.release)()
        release.waiting = waiting
        release.event.set()

    def _on_state(self, old: str, new: str) -> None:
        self.states[old] -= 1
        if new in ("done", "failed"):
            self.done += 1
            self.failed += new == "failed"
        else:
            self.states[new] += 1
        if new in ("connected", "matched", "verified"):
            self.totals[new] += 1
        self.changed.set()

    def _media_for_offer(self) -> bool:
        # The first offer of every worker carries media (at least one media pair
        # when the fraction is > 0), then the fraction of offers so far.
        self.offers += 1
        fraction = self.spec.settings.media_fraction
        if fraction <= 0:
            return False
        if self.media_offers < max(1, int(fraction * self.offers + 0.5)):
            self.media_offers += 1
            return True
        return False

    async def run(self) -> list[PeerRecord]:
        import aiohttp

        from drift.simulate.peer import SyntheticPeer

        spec, settings = self.spec, self.spec.settings
        spec.network.apply()
        quiet_aiortc_tasks(asyncio.get_running_loop())
        gate = asyncio.Semaphore(settings.concurrency)
        # Opening hundreds of TCP connections at once overflows the server's listen
        # backlog (128 by default); dropped SYNs are retried only after 1 s.
        connects = asyncio.Semaphore(CONNECTS_IN_FLIGHT)
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(index: int) -> PeerRecord:
                if settings.arrival_rate:
                    delay = spec.t0 + index / settings.arrival_rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                async with gate:
                    spec.network.seat(index)
                    record = PeerRecord(
                        index=index,
                        worker=self.worker,
                        url=spec.urls[index % len(spec.urls)],
                        t_start=time.monotonic(),
                        next_selected=spec.next_selected(index),
                    )
                    peer = SyntheticPeer(
                        record,
                        settings,
                        session=session,
                        release_source=lambda: self.release,
                        media_for_offer=self._media_for_offer,
                        on_state=self._on_state,
                        connect_gate=connects,
                    )
                    return await peer.run()

            return list(await asyncio.gather(*(one(i) for i in self.indices)))


def quiet_aiortc_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Drop "Task exception was never retrieved" from aiortc's own background tasks.

    Closing a peer connection mid-handshake (a failed pair) leaves aiortc tasks
    that end in ConnectionError; the peer has already recorded why it closed.
    """

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        future = context.get("future") or context.get("task")
        where = repr(getattr(future, "get_coro", lambda: future)())
        if isinstance(context.get("exception"), ConnectionError | OSError) or (
            "aiortc" in where or "aioice" in where
        ):
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a process that only runs peers.

    The long-lived objects of the imports are frozen out of every collection,
    and generation 0 is collected every 20,000 allocations instead of 700:
    aiortc allocates heavily per packet, and this saves ~10 % of the CPU of a
    run (measured with drift/bench/suites/simulate_overhead.py). Called by the CLI and
    worker processes only, never by code that merely imports drift.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 50)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def drive(
    run: WorkerRun,
    publish: Callable[[Snapshot], None],
    poll_release: Callable[[], int | None],
) -> list[PeerRecord]:
    """Run the worker while publishing snapshots and applying release orders every tick."""
    task = asyncio.ensure_future(run.run())
    try:
        while not task.done():
            run.changed.clear()
            publish(run.snapshot())
            waiting = poll_release()
            if waiting is not None:
                run.release_waiting(waiting)
            await asyncio.wait({task}, timeout=_TICK)
        publish(run.snapshot())
        return task.result()
    finally:
        if not task.done():
            task.cancel()

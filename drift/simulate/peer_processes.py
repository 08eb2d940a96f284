"""``--procs K``: the peers spread over K worker processes, results merged here.

Peer ``i`` runs in worker ``i % K``; pairs are still formed by the server, so a
room often spans two processes. Workers are started with multiprocessing's
``forkserver`` (a clean process that imported aiortc once, so no inherited
event loop or sockets, and no import per worker), report :class:`Snapshot` counts
over a pipe every tick and get release orders back from the one
:class:`Coordinator` here. With K = 1 the same runner runs in this process,
which saves a process start and an aiortc import.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from drift.simulate.forkserver import worker_context
from drift.simulate.records import PeerRecord
from drift.simulate.runner import (
    Coordinator,
    RunSpec,
    Snapshot,
    WorkerRun,
    drive,
    peak_rss_bytes,
    tune_gc,
)


class _Result(msgspec.Struct):
    rss: int
    records: list[PeerRecord]


_result = msgspec.msgpack.Decoder(_Result)
_snapshot = msgspec.msgpack.Decoder(Snapshot)
_encoder = msgspec.msgpack.Encoder()


@dataclass(slots=True)
class Merged:
    records: list[PeerRecord]
    #: peak RSS of each process that ran peers
    worker_rss: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


OnTick = Callable[[Coordinator], None]


def _hard_deadline(spec: RunSpec) -> float:
    """A cap no healthy run reaches: release every waiter, so nothing waits forever."""
    settings = spec.settings
    span = settings.peers / settings.arrival_rate if settings.arrival_rate else 0.0
    return time.monotonic() + span + 3 * (settings.timeout + settings.hold) + 30.0


async def run_in_process(spec: RunSpec, on_tick: OnTick) -> Merged:
    coordinator = Coordinator(1)
    worker = WorkerRun(spec)
    hard = _hard_deadline(spec)

    def publish(snap: Snapshot) -> None:
        coordinator.update(snap)
        on_tick(coordinator)

    def poll() -> int | None:
        if time.monotonic() > hard:
            return 1_000_000
        return coordinator.decide()

    records = await drive(worker, publish, poll)
    return Merged(records, [peak_rss_bytes()])


def _worker_main(
    spec: RunSpec, worker: int, procs: int, conn: multiprocessing.connection.Connection
) -> None:
    """Entry point of one worker process."""
    from drift import aio
    from drift.harness.signals import ignore_signals

    # The parent stops its workers (SIGTERM) when it is interrupted; a terminal's
    # Ctrl-C, which reaches this process too, must not raise here.
    ignore_signals()
    tune_gc()
    orders: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def readable() -> None:
            while conn.poll():
                kind, value = conn.recv()
                if kind == "release":
                    orders.append(value)

        loop.add_reader(conn.fileno(), readable)
        # uvloop makes a watched fd non-blocking; a large message must not hit EAGAIN
        os.set_blocking(conn.fileno(), True)
        run = WorkerRun(spec, worker, procs)

        def publish(snap: Snapshot) -> None:
            conn.send_bytes(b"s" + _encoder.encode(snap))

        def poll() -> int | None:
            return orders.pop(0) if orders else None

        records = await drive(run, publish, poll)
        loop.remove_reader(conn.fileno())
        conn.send_bytes(b"r" + _encoder.encode(_Result(peak_rss_bytes(), records)))

    aio.run(main())
    conn.close()


async def run_in_workers(spec: RunSpec, procs: int, on_tick: OnTick) -> Merged:
    ctx = worker_context()
    coordinator = Coordinator(procs)
    loop = asyncio.get_running_loop()
    results: dict[int, tuple[int, list[PeerRecord]]] = {}
    pipes: list[multiprocessing.connection.Connection] = []
    processes = []
    finished = asyncio.Event()
    for worker in range(procs):
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_worker_main, args=(spec, worker, procs, child), name=f"drift-sim-{worker}"
        )
        proc.start()
        child.close()
        pipes.append(parent)
        processes.append(proc)

    def readable(worker: int, conn: multiprocessing.connection.Connection) -> None:
        try:
            while conn.poll():
                data = conn.recv_bytes()
                if data[:1] == b"s":
                    coordinator.update(_snapshot.decode(data[1:]))
                else:
                    result = _result.decode(data[1:])
                    results[worker] = (result.rss, result.records)
                    loop.remove_reader(conn.fileno())
                    if len(results) == procs:
                        finished.set()
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            finished.set()

    for worker, conn in enumerate(pipes):
        loop.add_reader(conn.fileno(), readable, worker, conn)
        # read whole messages: the results of thousands of peers span many writes
        os.set_blocking(conn.fileno(), True)
    hard = _hard_deadline(spec) + 30.0  # + process start and imports
    errors: list[str] = []
    try:
        while not finished.is_set() or len(results) < procs:
            if finished.is_set():
                # a pipe closed early: check whether its worker died
                finished.clear()
                dead = [i for i, p in enumerate(processes) if not p.is_alive() and i not in results]
                if dead:
                    errors += [f"worker {i} exited with code {processes[i].exitcode}" for i in dead]
                    break
            on_tick(coordinator)
            order = coordinator.decide()
            if order is None and time.monotonic() > hard:
                order = 1_000_000
            if order is not None:
                for worker, conn in enumerate(pipes):
                    if worker in results:
                        continue  # finished: its end of the pipe may be gone
                    with contextlib.suppress(OSError):
                        conn.send(("release", order))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), 0.2)
            if any(not p.is_alive() and i not in results for i, p in enumerate(processes)):
                await asyncio.sleep(0.5)  # let a last pipe message arrive
                if not finished.is_set():
                    finished.set()
    except asyncio.CancelledError:
        # Interrupted: stop the workers now rather than wait for their peers.
        for proc in processes:
            if proc.is_alive():
                proc.terminate()
        raise
    finally:
        for conn in pipes:
            with contextlib.suppress(OSError, ValueError):
                loop.remove_reader(conn.fileno())
        for proc in processes:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join()
        for conn in pipes:
            conn.close()
    records: list[PeerRecord] = []
    rss: list[int] = []
    for worker in sorted(results):
        rss.append(results[worker][0])
        records.extend(results[worker][1])
    records.sort(key=lambda r: r.index)
    on_tick(coordinator)
    return Merged(records, rss, errors)

"""The baseline of simulate_overhead: aiortc pairs connected in one process, no signaling.

Run as its own process, the way a user would time it (``python
drift/bench/suites/bare_loop.py --pairs 250``): interpreter start, the aiortc
import and every pair's connection are in its wall and CPU time, exactly like
``drift simulate`` as a whole process. It imports nothing from drift, so its
start-up is the least any aiortc script pays. Host candidates are 127.0.0.1
only (as drift's peers gather them), and it runs on uvloop when importable,
like drift: the tightest honest baseline. It prints one JSON line with its
in-process wall time.

For the scale figures (``--pairs 5000 --procs 2 --concurrency 500``) the pairs
are split over forked processes, one per core like ``drift simulate``'s
workers, each with at most ``--concurrency`` pairs in flight (all at once,
5,000 pairs would need more descriptors than a process may have): what aiortc
alone does on this machine, the ceiling of any signaling-driven run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection


def _loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    # What drift's default network does (drift.simulate.loopback), inlined so
    # that this baseline pays no drift import.
    return ["127.0.0.1"] if use_ipv4 else []


async def _pair() -> None:
    config = RTCConfiguration(iceServers=[])
    a, b = RTCPeerConnection(config), RTCPeerConnection(config)
    opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    channel = a.createDataChannel("bare")

    @b.on("datachannel")
    def on_channel(ch: object) -> None:
        if not opened.done():
            opened.set_result(None)

    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    await opened
    del channel
    await a.close()
    await b.close()


async def bare_loop(pairs: int, concurrency: int = 0) -> float:
    """Seconds to connect ``pairs`` pairs (data channel open on both sides).

    All at once, or at most ``concurrency`` pairs in flight.
    """
    aioice.ice.get_host_addresses = _loopback_only
    gate = asyncio.Semaphore(concurrency or pairs)

    async def one() -> None:
        async with gate:
            await _pair()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(pairs)))
    return time.perf_counter() - started


def _run(pairs: int, concurrency: int, no_uvloop: bool) -> float:
    coro = bare_loop(pairs, concurrency)
    if not no_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


def _in_processes(pairs: int, procs: int, concurrency: int, no_uvloop: bool) -> float:
    """Wall seconds until the last of ``procs`` forked processes connected its share."""
    started = time.perf_counter()
    children = []
    for i in range(procs):
        share = pairs // procs + (1 if i < pairs % procs else 0)
        pid = os.fork()
        if pid == 0:  # the child: its share, then out without the parent's cleanup
            try:
                _run(share, concurrency, no_uvloop)
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, default=250)
    parser.add_argument("--no-uvloop", action="store_true", help="plain asyncio event loop")
    parser.add_argument("--procs", type=int, default=1, help="forked processes sharing the pairs")
    parser.add_argument(
        "--concurrency", type=int, default=0, help="most pairs in flight per process (0: all)"
    )
    args = parser.parse_args()
    if args.procs > 1:
        wall = _in_processes(args.pairs, args.procs, args.concurrency, args.no_uvloop)
    else:
        wall = _run(args.pairs, args.concurrency, args.no_uvloop)
    print(json.dumps({"pairs": args.pairs, "wall_s": round(wall, 3)}), flush=True)


if __name__ == "__main__":
    main()

"""The baseline of simulate_overhead: aiortc pairs connected in one process, no signaling.

Run as its own process, the way a user would time it (``python
drift/bench/suites/bare_loop.py --pairs 250``): interpreter start, the aiortc
import and every pair's connection are in its wall and CPU time, exactly like
``drift simulate`` as a whole process. It imports nothing from drift, so its
start-up is the least any aiortc script pays. Host candidates are 127.0.0.1
only (as drift's peers gather them), and it runs on uvloop when importable,
like drift: the tightest honest baseline. It prints one JSON line with its
in-process wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


async def bare_loop(pairs: int) -> float:
    """Seconds to connect ``pairs`` pairs (data channel open on both sides), all at once."""
    aioice.ice.get_host_addresses = _loopback_only
    started = time.perf_counter()
    await asyncio.gather(*(_pair() for _ in range(pairs)))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, default=250)
    parser.add_argument("--no-uvloop", action="store_true", help="plain asyncio event loop")
    args = parser.parse_args()
    coro = bare_loop(args.pairs)
    wall: float
    if args.no_uvloop:
        wall = asyncio.run(coro)
    else:
        try:
            import uvloop
        except ImportError:
            wall = asyncio.run(coro)
        else:
            wall = uvloop.run(coro)
    print(json.dumps({"pairs": args.pairs, "wall_s": round(wall, 3)}), flush=True)


if __name__ == "__main__":
    main()

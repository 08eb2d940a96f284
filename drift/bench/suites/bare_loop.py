"""The baseline of simulate_overhead: aiortc pairs connected in one process, no signaling."""

from __future__ import annotations

import asyncio
import time

from aiortc import RTCConfiguration, RTCPeerConnection

from drift.simulate.loopback import configure_interfaces


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
    configure_interfaces(False)
    started = time.perf_counter()
    await asyncio.gather(*(_pair() for _ in range(pairs)))
    return time.perf_counter() - started


if __name__ == "__main__":
    print(f"{asyncio.run(bare_loop(250)):.2f} s")

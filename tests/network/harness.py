"""Pairs of aiortc peers seated in lab homes, signaled directly (no server): the lab alone.

Each pair exchanges complete SDP (candidates inside) in memory and opens a
data channel; the result is the pair's state and nominated candidate types on
both sides, read as simulate reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

from drift.netlab.lab import NetworkLab
from drift.netlab.seat import set_seat
from drift.serve.turn_credentials import turn_credential, turn_username
from drift.simulate.call import selected_pair_types


@dataclass
class PairResult:
    connected: bool
    ice_state: str
    offerer: tuple[str, str] | None
    answerer: tuple[str, str] | None


def ice_servers(lab: NetworkLab) -> list[RTCIceServer]:
    """What welcome would carry: STUN, and TURN with time-limited credentials."""
    servers = [RTCIceServer(urls=list(lab.stun_urls))]
    if lab.turn_urls:
        assert lab.coturn is not None
        user = turn_username("harness", time.time(), 600)
        servers.append(
            RTCIceServer(
                urls=list(lab.turn_urls),
                username=user,
                credential=turn_credential(lab.coturn.secret, user),
            )
        )
    return servers


async def _peer(lab: NetworkLab, index: int, servers: list[RTCIceServer]) -> RTCPeerConnection:
    set_seat(lab.seat(index))
    return RTCPeerConnection(RTCConfiguration(iceServers=servers))


async def connect_pair(lab: NetworkLab, a: int, b: int, timeout: float) -> PairResult:
    servers = ice_servers(lab)

    async def offerer(
        offer_q: asyncio.Queue[object], answer_q: asyncio.Queue[object]
    ) -> RTCPeerConnection:
        pc = await _peer(lab, a, servers)
        channel = pc.createDataChannel("x")
        opened = asyncio.Event()
        channel.on("open", opened.set)
        await pc.setLocalDescription(await pc.createOffer())
        await offer_q.put(pc.localDescription)
        await pc.setRemoteDescription(await answer_q.get())  # type: ignore[arg-type]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(opened.wait(), timeout)
        return pc

    async def answerer(
        offer_q: asyncio.Queue[object], answer_q: asyncio.Queue[object]
    ) -> RTCPeerConnection:
        pc = await _peer(lab, b, servers)
        await pc.setRemoteDescription(await offer_q.get())  # type: ignore[arg-type]
        await pc.setLocalDescription(await pc.createAnswer())
        await answer_q.put(pc.localDescription)
        return pc

    offers: asyncio.Queue[object] = asyncio.Queue()
    answers: asyncio.Queue[object] = asyncio.Queue()
    pc_a, pc_b = await asyncio.gather(
        asyncio.create_task(offerer(offers, answers)),
        asyncio.create_task(answerer(offers, answers)),
    )
    try:
        connected = pc_a.connectionState == "connected"
        return PairResult(
            connected, pc_a.iceConnectionState, selected_pair_types(pc_a), selected_pair_types(pc_b)
        )
    finally:
        await pc_a.close()
        await pc_b.close()

"""One synthetic peer against whatever partner the server assigns, a browser page included.

For other tools and the browser interop tests: :func:`run_one_peer` runs one
:class:`~drift.simulate.peer.SyntheticPeer` in the
:class:`~drift.simulate.dialect.BrowserInterop` dialect and reports whether the
call connected and video flowed, without requiring the partner to speak the
identity protocol.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from drift.simulate.dialect import BrowserInterop
from drift.simulate.loopback import network_for
from drift.simulate.peer import SyntheticPeer
from drift.simulate.records import PeerRecord
from drift.simulate.settings import Settings


@dataclass(frozen=True, slots=True)
class PeerOutcome:
    """What :func:`run_one_peer` saw: the record plus the figures interop tests assert on."""

    record: PeerRecord
    connected: bool
    role: str | None
    room_id: str | None
    media_frames_sent: int
    media_frames_received: int
    failure: str | None
    detail: str | None


async def run_one_peer(
    ws_url: str,
    *,
    media: bool = True,
    hold: float = 5.0,
    timeout: float = Settings.timeout,
    trickle: bool = Settings.trickle,
    real_interfaces: bool = Settings.real_interfaces,
    ice_policy: str = Settings.ice_policy,
) -> PeerOutcome:
    """Join ``ws_url`` once, negotiate by role with whatever partner the server assigns.

    The partner may be a browser that does not speak the identity protocol on
    the data channel: success is a connected call (``connectionState ==
    "connected"``) held for ``hold`` seconds, with the synthetic identity video
    track sent when ``media`` (frames the partner sends are counted too).
    Candidates stay on 127.0.0.1 unless ``real_interfaces``; ``ice_policy="relay"``
    allows only relay candidates from the TURN server of welcome.
    """
    network = network_for(real_interfaces)
    network.apply()
    network.seat(0)
    record = PeerRecord(index=0, url=ws_url, t_start=time.monotonic())
    settings = Settings(
        peers=1,
        urls=(ws_url,),
        hold=hold,
        timeout=timeout,
        trickle=trickle,
        real_interfaces=real_interfaces,
        ice_policy=ice_policy,
    )
    peer = SyntheticPeer(record, settings, dialect=BrowserInterop(media=media))
    await peer.run()
    rnd = record.rounds[-1] if record.rounds else None
    failure = record.failure or (rnd.failure if rnd else None)
    detail = record.detail or (rnd.detail if rnd else None)
    frames_in = 0
    if rnd is not None:
        frames_in = rnd.media_frames_ok + rnd.media_frames_foreign + rnd.media_frames_other
    return PeerOutcome(
        record=record,
        connected=bool(rnd and rnd.t_connected is not None),
        role=rnd.role if rnd else None,
        room_id=rnd.room_id if rnd else None,
        media_frames_sent=rnd.media_frames_sent if rnd else 0,
        media_frames_received=frames_in,
        failure=failure,
        detail=detail,
    )

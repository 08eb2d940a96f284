"""Who the partner is, as one strategy object: another drift peer, or maybe a browser.

Between two synthetic peers (:data:`DRIFT_PEERS`) a round must *prove* the
call: the identity check of :mod:`drift.simulate.handshake` on both sides, the
partner's own check awaited, video verified frame by frame on media pairs, and
``next`` pressed by the rule below. A browser page (:class:`BrowserInterop`,
used by :func:`drift.simulate.interop.run_one_peer`) does not speak that
identity protocol: a connected call held for ``hold`` seconds is the success,
video is sent when asked for and only counted, and the page's own
``ping``/``pong`` gives the round trip. Every place where the two differ is a
member of :class:`Dialect`; the call and the round driver never ask which one
they have.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from drift.simulate.records import RoundRecord

if TYPE_CHECKING:
    from drift.simulate.call import Call
    from drift.simulate.peer import SyntheticPeer


class Dialect(Protocol):
    #: ping on open in the page's terms (``{"t": "ping", "n"}``) to measure the round trip
    @property
    def ping_on_open(self) -> bool: ...

    #: a media pair's video is checked frame by frame (else only counted)
    @property
    def verifies_media(self) -> bool: ...

    def sends_media(self, role: str, media_for_offer: Callable[[], bool]) -> bool:
        """Whether this side adds its identity video at the start of a round."""
        ...

    def answers_video(self, sends_media: bool) -> bool:
        """Whether the answerer adds its video track to an offer that has video."""
        ...

    def goal(self, call: Call) -> asyncio.Event:
        """The event that makes the round a success, awaited under ``--timeout``."""
        ...

    async def settle(self, peer: SyntheticPeer, call: Call, deadline: float) -> None:
        """After the goal: how long the round stays up before it ends."""
        ...

    def presses_next(self, peer: SyntheticPeer, rnd: RoundRecord) -> bool:
        """Whether this peer presses ``next`` after ``rnd`` (and must get a new partner)."""
        ...


@dataclass(frozen=True, slots=True)
class DriftPeers:
    """The partner is another synthetic peer: every round proves identity end to end."""

    ping_on_open: bool = False
    verifies_media: bool = True

    def sends_media(self, role: str, media_for_offer: Callable[[], bool]) -> bool:
        # the offerer decides whether the pair is a media pair; the answerer mirrors
        # the video of the offer (Call.on_offer)
        return media_for_offer() if role == "offerer" else False

    def answers_video(self, sends_media: bool) -> bool:
        return True  # media pairs send both ways

    def goal(self, call: Call) -> asyncio.Event:
        return call.verified

    async def settle(self, peer: SyntheticPeer, call: Call, deadline: float) -> None:
        # stay until the partner has what it needs from us, then hold
        await peer.until(call, call.partner_done, deadline, "the partner's check")
        await peer.hold(peer.settings.hold)
        if self._partner_presses(peer, call.rnd, call.partner_next):
            # let the partner end the room with a real next
            await peer.hold(peer.settings.timeout)

    def presses_next(self, peer: SyntheticPeer, rnd: RoundRecord) -> bool:
        # When both peers of a pair drew "next", only the offerer presses it, so the
        # two are never left waiting for each other through the rematch cooldown.
        if not peer.next_selected or not rnd.verified:
            return False
        if rnd.number != 1 or rnd.ended_by != "hold":
            return False
        return rnd.role == "offerer" or not peer.partner_next

    @staticmethod
    def _partner_presses(peer: SyntheticPeer, rnd: RoundRecord, partner_next: bool) -> bool:
        """The other half of the rule of :meth:`presses_next`, seen from the partner."""
        if rnd.number != 1 or not partner_next:
            return False
        return rnd.role == "answerer" or not peer.next_selected


@dataclass(frozen=True, slots=True)
class BrowserInterop:
    """The partner may be a browser page: a connected call (+ video) is the success.

    ``media``: send the identity video track whatever the role.
    """

    media: bool = True
    ping_on_open: bool = True
    verifies_media: bool = False

    def sends_media(self, role: str, media_for_offer: Callable[[], bool]) -> bool:
        return self.media

    def answers_video(self, sends_media: bool) -> bool:
        return sends_media

    def goal(self, call: Call) -> asyncio.Event:
        return call.connected

    async def settle(self, peer: SyntheticPeer, call: Call, deadline: float) -> None:
        await peer.hold(peer.settings.hold)

    def presses_next(self, peer: SyntheticPeer, rnd: RoundRecord) -> bool:
        return False  # one round with whoever the server assigns


DRIFT_PEERS = DriftPeers()

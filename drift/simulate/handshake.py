"""The data-channel check of one call, as a pure state machine: events in, messages out.

No asyncio, aiortc or clock here (like :mod:`drift.core.lobby`). The call that
owns the data channel feeds a :class:`Handshake` these events and performs what
each returns:

=======================  ==========================================================
call                     when the call makes it
=======================  ==========================================================
``open(now)``            the data channel opened (or arrived open, on the answerer)
``receive(data, now)``   a data-channel message arrived (``str`` or ``bytes``)
``poll(now)``            media pairs: video frames arrived, so check media again
=======================  ==========================================================

Each returns a list of effects, in order: :class:`Send` (write this message on
the channel), :class:`Hello` (the partner's identity arrived, first time only),
:class:`CrossWired` (that identity names another room: the round failed),
:class:`RoundTrip` (our ping came back), :class:`PartnerVerified` (the partner
says it verified us) and :class:`Verified` (this side verified its partner).
``now`` is a monotonic time in seconds.

Between two drift peers a pair verifies in four messages: offerer -> ``hello``
(identity, ping ``n``); answerer -> ``hello`` (identity, ``echo`` of that ping,
its own ping ``n``); offerer -> ``pong`` (``echo``, ``ok``: I verified you);
answerer -> ``ok``. Merging the pings into the hellos keeps the SCTP traffic
(and CPU) per pair at half of separate messages.

A browser page speaks a smaller language on the channel: it answers
``{"t": "ping", "n"}`` with ``{"t": "pong", "n"}`` (the echo in ``n``) and may
ping us the same way. The machine always answers such pings and reads such
pongs, and pings on open when told to (``ping_on_open``); anything else a page
sends that is not a :class:`DataMsg` is ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import msgspec


class DataMsg(msgspec.Struct, omit_defaults=True):
    """One data-channel message (see the module docstring for the exchange)."""

    t: str  # hello | pong | ok (and ping, with a browser page)
    peer: str = ""
    room: str = ""
    next: bool = False
    n: int = 0  # a ping: echo this back
    echo: int = 0  # the partner's ping, echoed
    ok: bool = False  # the sender verified its partner


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(DataMsg)


def encode(msg: DataMsg) -> str:
    """The text frame for ``msg`` (text, so a browser page reads it as a string)."""
    return _encoder.encode(msg).decode()


@dataclass(frozen=True, slots=True)
class Send:
    msg: DataMsg


@dataclass(frozen=True, slots=True)
class Hello:
    """The partner's identity: its peerId, the roomId it was told, whether it presses next."""

    peer: str
    room: str
    next: bool


@dataclass(frozen=True, slots=True)
class CrossWired:
    """The partner's hello names a room other than ours: a relay crossed rooms."""

    peer: str
    room: str


@dataclass(frozen=True, slots=True)
class RoundTrip:
    rtt_ms: float


@dataclass(frozen=True, slots=True)
class PartnerVerified:
    pass


@dataclass(frozen=True, slots=True)
class Verified:
    at: float


Effect = Send | Hello | CrossWired | RoundTrip | PartnerVerified | Verified

#: media pairs: True once enough video frames carrying that peerId's identity arrived
MediaReady = Callable[[str], bool]


class Handshake:
    """One side of the data-channel check of one round.

    This side verified its partner when the partner's hello named our room and
    our ping came back (and, on a media pair, ``media_ready`` says enough of the
    partner's frames arrived). ``nonce`` is our ping, never 0.
    """

    def __init__(
        self,
        *,
        peer_id: str,
        room_id: str,
        offerer: bool,
        nonce: int,
        next_selected: bool = False,
        media_ready: MediaReady | None = None,
        ping_on_open: bool = False,
    ) -> None:
        if nonce == 0:
            raise ValueError("the nonce is a ping: 0 means none")
        self.peer_id = peer_id
        self.room_id = room_id
        self.offerer = offerer
        self.nonce = nonce
        self.next_selected = next_selected
        self.media_ready = media_ready
        self.ping_on_open = ping_on_open
        self.hello_sent = False
        #: we said (in a hello, pong or ok) that we verified the partner
        self.ok_sent = False
        self.ping_sent_at = 0.0
        self.rtt_ms: float | None = None
        self.partner: Hello | None = None
        self.partner_ok = False
        self.verified = False

    # ------------------------------------------------------------------ events

    def open(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        if self.offerer:
            out.append(self._hello(now, echo=0))
        if self.ping_on_open:
            # a browser page answers {"t": "ping", "n"} with {"t": "pong", "n"}
            self.ping_sent_at = now
            out.append(Send(DataMsg("ping", n=self.nonce)))
        return out

    def receive(self, data: str | bytes, now: float) -> list[Effect]:
        try:
            msg = _decoder.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return []  # a browser partner may talk its own language on the channel
        if msg.t == "ping":
            # the browser page's liveness probe: answer in its own terms
            return [Send(DataMsg("pong", n=msg.n))]
        out: list[Effect] = []
        echoed = msg.echo or (msg.n if msg.t == "pong" else 0)  # a page's pong echoes in "n"
        if echoed and echoed == self.nonce and self.rtt_ms is None:
            self.rtt_ms = (now - self.ping_sent_at) * 1000.0
            out.append(RoundTrip(self.rtt_ms))
        if msg.ok and not self.partner_ok:
            self.partner_ok = True
            out.append(PartnerVerified())
        if msg.t == "hello" and self.partner is None:
            self.partner = Hello(msg.peer, msg.room, msg.next)
            out.append(self.partner)
            if msg.room != self.room_id:
                out.append(CrossWired(msg.peer, msg.room))
        # quiet: a reply below carries our ok, so no separate ok message is needed
        out += self._check(now, quiet=True)
        if msg.n and msg.t == "hello":
            # answer the ping, saying whether this side has verified already
            if self.hello_sent:
                self.ok_sent = self.ok_sent or self.verified
                out.append(Send(DataMsg("pong", echo=msg.n, ok=self.ok_sent)))
            else:
                self.ok_sent = self.verified
                out.append(self._hello(now, echo=msg.n))
        if self.verified and not self.ok_sent:
            self.ok_sent = True
            out.append(Send(DataMsg("ok", ok=True)))
        return out

    def poll(self, now: float) -> list[Effect]:
        return self._check(now, quiet=False)

    # ------------------------------------------------------------------ rules

    def _hello(self, now: float, echo: int) -> Send:
        self.hello_sent = True
        self.ping_sent_at = now
        return Send(
            DataMsg(
                "hello",
                peer=self.peer_id,
                room=self.room_id,
                next=self.next_selected,
                n=self.nonce,
                echo=echo,
                ok=self.ok_sent,
            )
        )

    def _check(self, now: float, *, quiet: bool) -> list[Effect]:
        """The one verification rule: our room's identity, our ping back, the partner's video."""
        partner = self.partner
        if self.verified or partner is None or partner.room != self.room_id:
            return []
        if self.rtt_ms is None:
            return []
        if self.media_ready is not None and not self.media_ready(partner.peer):
            return []
        self.verified = True
        out: list[Effect] = [Verified(now)]
        if not quiet and not self.ok_sent:
            self.ok_sent = True
            out.append(Send(DataMsg("ok", ok=True)))
        return out

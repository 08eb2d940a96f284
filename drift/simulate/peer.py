"""One synthetic peer: the protocol client plus an aiortc RTCPeerConnection.

The peer joins, negotiates by the role the server gives it (the offerer offers,
the answerer answers), trickles its ICE candidates as ``ice-candidate`` frames,
then proves the call on the data channel: it sends its identity (``peerId`` and
the ``roomId`` it was told) and a ping, and checks what the partner sends back.
It only *records* what it saw (:class:`~drift.simulate.records.PeerRecord`);
whether the pair is verified is decided by :mod:`drift.simulate.verify`, which
sees both sides of every room.

For browser interop, :func:`run_one_peer` runs one such peer against whatever
partner the server assigns and reports whether the call connected and video
flowed, without requiring the partner to speak the identity protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import msgspec
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.sdp import candidate_from_sdp

from drift.client.signaling import ClientState, ConnectionClosed, ProtocolViolation, SignalingClient
from drift.core import protocol as p
from drift.simulate.loopback import configure_interfaces
from drift.simulate.media import FrameCounter, IdentityTrack, identity_code
from drift.simulate.records import Failure, PeerRecord, RoundRecord
from drift.turn.probe import allocate_once, pick_turn_target

#: Media pairs count as verified after this many frames carrying the partner's identity.
MEDIA_MIN_FRAMES: Final = 5
#: Session-level SDP line naming the sender, so a relay from another room is caught
#: before any ICE happens. Browsers and aiortc ignore unknown attributes.
_SDP_TAG: Final = "a=x-drift-peer:"
_CONNECT_ERRORS: Final = (OSError, aiohttp.ClientError, TimeoutError)


class DataMsg(msgspec.Struct, omit_defaults=True):
    """One data-channel message; a pair verifies in four of them.

    offerer -> ``hello`` (identity, ping ``n``); answerer -> ``hello`` (identity,
    ``echo`` of that ping, its own ping ``n``); offerer -> ``pong`` (``echo``,
    ``ok``: I verified you); answerer -> ``ok``. Merging pings into the hellos
    keeps the SCTP traffic (and CPU) per pair at half of separate messages.
    """

    t: str  # hello | pong | ok (and ping, only with a browser page)
    peer: str = ""
    room: str = ""
    next: bool = False
    n: int = 0  # a ping: echo this back
    echo: int = 0  # the partner's ping, echoed
    ok: bool = False  # the sender verified its partner


_dc_encoder: Final = msgspec.json.Encoder()
_dc_decoder: Final = msgspec.json.Decoder(DataMsg)


class PeerFailed(Exception):
    """Ends a round: ``kind`` is a :class:`Failure` value."""

    def __init__(self, kind: Failure, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True, slots=True)
class PeerOptions:
    trickle: bool = True
    timeout: float = 20.0
    hold: float = 0.0
    #: interop mode: the partner may be a browser; connected (+ video) is success
    interop: bool = False
    #: interop mode: send the identity video track whatever the role
    media: bool = False
    #: "all", or "relay": only candidates relayed by the TURN server of welcome
    ice_policy: str = "all"


@dataclass(slots=True)
class Release:
    """Set by the runner when waiting peers should give up (nobody left to pair with)."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: int = 0


def split_candidates(sdp: str) -> tuple[str, list[p.CandidateInit]]:
    """Strip ``a=candidate``/``a=end-of-candidates`` lines; return them as trickle inits."""
    lines = sdp.split("\r\n")
    kept: list[str] = []
    found: list[p.CandidateInit] = []
    index = -1
    mid: str | None = None
    ufrag: str | None = None
    session_ufrag: str | None = None
    section: list[str] = []
    for line in lines:
        if line.startswith("m="):
            index += 1
            mid = None
            ufrag = session_ufrag
            section = []
        if line.startswith("a=mid:"):
            mid = line[6:]
        elif line.startswith("a=ice-ufrag:"):
            if index < 0:
                session_ufrag = line[12:]
            ufrag = line[12:]
        if line.startswith("a=candidate:"):
            section.append(line[2:])
            continue
        if line.startswith("a=end-of-candidates"):
            continue
        kept.append(line)
        if section and mid is not None:
            for cand in section:
                found.append(p.CandidateInit(cand, sdpMid=mid, sdpMLineIndex=index))
            section = []
    # candidates listed after a=mid in their section were flushed above; late ones here
    for cand in section:
        found.append(p.CandidateInit(cand, sdpMid=mid, sdpMLineIndex=max(index, 0)))
    if ufrag is not None:
        found = [
            p.CandidateInit(
                c.candidate, sdpMid=c.sdpMid, sdpMLineIndex=c.sdpMLineIndex, usernameFragment=ufrag
            )
            for c in found
        ]
    return "\r\n".join(kept), found


def tag_sdp(sdp: str, peer_id: str, room_id: str) -> str:
    """Add the session-level identity line after ``t=`` (relayed unchanged by the server)."""
    head, sep, tail = sdp.partition("\r\nt=")
    if not sep:
        return sdp
    line_end = tail.find("\r\n")
    if line_end < 0:
        return sdp
    return f"{head}{sep}{tail[:line_end]}\r\n{_SDP_TAG}{peer_id} {room_id}{tail[line_end:]}"


def read_tag(sdp: str) -> tuple[str, str] | None:
    start = sdp.find(_SDP_TAG)
    if start < 0:
        return None
    end = sdp.find("\r\n", start)
    parts = sdp[start + len(_SDP_TAG) : end if end >= 0 else None].split()
    return (parts[0], parts[1]) if len(parts) == 2 else None


def _remote_ufrag(sdp: str) -> set[str]:
    return {line[12:].strip() for line in sdp.split("\r\n") if line.startswith("a=ice-ufrag:")}


def rtc_configuration(servers: list[p.IceServer], ice_policy: str = "all") -> RTCConfiguration:
    """Only the ICE servers from welcome: never aiortc's default public STUN.

    With ``ice_policy="relay"`` aioice (0.13) gathers relay candidates only and
    ignores mDNS remote candidates (RFC 9429 section 3.5.3), like a browser's
    ``iceTransportPolicy: "relay"``: every path then goes through TURN.
    """
    ice = []
    for s in servers:
        username = s.username if isinstance(s.username, str) else None
        credential = s.credential if isinstance(s.credential, str) else None
        ice.append(RTCIceServer(urls=list(s.urls), username=username, credential=credential))
    return RTCConfiguration(iceServers=ice, iceTransportPolicy=RTCIceTransportPolicy(ice_policy))


def candidate_types(sdp: str) -> list[str]:
    """The distinct ``typ`` values of the ``a=candidate`` lines (host, srflx, prflx, relay).

    Distinct, because a bundled SDP repeats the same candidates in every m= section.
    """
    found: list[str] = []
    for line in sdp.split("\r\n"):
        if line.startswith("a=candidate:"):
            words = line.split()
            if "typ" in words[:-1]:
                kind = words[words.index("typ") + 1]
                if kind not in found:
                    found.append(kind)
    return found


def selected_pair_types(pc: RTCPeerConnection) -> tuple[str, str] | None:
    """(local, remote) candidate types of the pair aioice nominated, None when unknown.

    aiortc has no candidate-pair stats; the nominated pair (the one aioice sends
    on) sits on the ICE transport's aioice connection, under the SCTP transport
    (every synthetic call has a data channel) or else a media transceiver's.
    """
    transports = [getattr(pc.sctp, "transport", None)]
    transports += [t.sender.transport for t in pc.getTransceivers()]
    for dtls in transports:
        connection = getattr(getattr(dtls, "transport", None), "_connection", None)
        nominated = getattr(connection, "_nominated", None)
        if isinstance(nominated, dict) and nominated:
            pair = nominated.get(1) or next(iter(nominated.values()))
            local = getattr(getattr(pair, "local_candidate", None), "type", None)
            remote = getattr(getattr(pair, "remote_candidate", None), "type", None)
            if isinstance(local, str) and isinstance(remote, str):
                return local, remote
    return None


class _Call:
    """The WebRTC side of one round; signaling frames and channel events feed it."""

    def __init__(
        self,
        peer: SyntheticPeer,
        rnd: RoundRecord,
        servers: list[p.IceServer],
        want_media: bool,
    ) -> None:
        self.peer = peer
        self.rnd = rnd
        self.servers = servers
        self.pc = RTCPeerConnection(rtc_configuration(servers, peer.options.ice_policy))
        self.channel: RTCDataChannel | None = None
        self.failure: asyncio.Future[PeerFailed] = asyncio.get_running_loop().create_future()
        self.verified = asyncio.Event()
        self.partner_done = asyncio.Event()
        self.connected = asyncio.Event()
        self.remote_set = False
        self.remote_ufrags: set[str] = set()
        self.queued: list[p.CandidateInit | None] = []
        self.want_media = want_media
        self.track: IdentityTrack | None = None
        self.frames = FrameCounter()
        self.partner_ident: int | None = None
        self.partner_next = False
        self.ping_sent_at = 0.0
        self.nonce = secrets.randbelow(2**31 - 1) + 1
        self.hello_sent = False
        self.ok_sent = False
        self.tasks: list[asyncio.Task[Any]] = []
        self.pc.on("iceconnectionstatechange", self._on_ice_state)
        self.pc.on("connectionstatechange", self._on_state)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("track", self._on_track)

    # ---------------------------------------------------------------- failure

    def fail(self, kind: Failure, detail: str) -> None:
        if not self.failure.done():
            self.failure.set_result(PeerFailed(kind, detail))

    # ---------------------------------------------------------------- pc events

    def _on_ice_state(self) -> None:
        state = self.pc.iceConnectionState
        if state in ("completed", "connected") and self.rnd.t_ice_connected is None:
            self.rnd.t_ice_connected = time.monotonic()
        elif state == "failed":
            self.fail(Failure.ICE_FAILED, "ICE connection failed")

    def _on_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            if self.rnd.t_connected is None:
                self.rnd.t_connected = time.monotonic()
            self._note_selected_pair()
            self.connected.set()
        elif state == "failed":
            self.fail(Failure.ICE_FAILED, "peer connection failed")

    def _note_selected_pair(self) -> None:
        if self.rnd.selected_local_type is None:
            types = selected_pair_types(self.pc)
            if types is not None:
                self.rnd.selected_local_type, self.rnd.selected_remote_type = types

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        self._use_channel(channel)
        self._channel_open()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video":
            self.tasks.append(asyncio.ensure_future(self.frames.consume(track)))

    def _use_channel(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        channel.on("message", self._on_message)
        channel.on("close", self._on_channel_close)

    def _on_channel_close(self) -> None:
        self.partner_done.set()

    def _channel_open(self) -> None:
        self.rnd.t_channel_open = time.monotonic()
        if self.rnd.role == "offerer":
            self._send_hello(echo=0)
        if self.peer.options.interop:
            # a browser page answers {"t": "ping", "n"} with {"t": "pong", "n"}
            self.ping_sent_at = time.monotonic()
            self._send(DataMsg("ping", n=self.nonce))

    def _send_hello(self, echo: int) -> None:
        rnd, peer = self.rnd, self.peer
        assert rnd.room_id is not None
        self.hello_sent = True
        self.ping_sent_at = time.monotonic()
        self._send(
            DataMsg(
                "hello",
                peer=peer.peer_id,
                room=rnd.room_id,
                next=peer.next_selected,
                n=self.nonce,
                echo=echo,
                ok=self.ok_sent,
            )
        )

    def _send(self, msg: DataMsg) -> None:
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(_dc_encoder.encode(msg).decode())

    def _on_message(self, data: str | bytes) -> None:
        rnd = self.rnd
        try:
            msg = _dc_decoder.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return  # a browser partner may talk its own language on the channel
        if msg.t == "ping":
            # the browser page's liveness probe: answer in its own terms
            self._send(DataMsg("pong", n=msg.n))
            return
        echoed = msg.echo or (msg.n if msg.t == "pong" else 0)  # a page's pong echoes in "n"
        if echoed and echoed == self.nonce and rnd.rtt_ms is None:
            rnd.rtt_ms = (time.monotonic() - self.ping_sent_at) * 1000.0
        if msg.ok:
            rnd.partner_ok = True
            self.partner_done.set()
        if msg.t == "hello" and rnd.hello_peer is None:
            rnd.hello_peer, rnd.hello_room = msg.peer, msg.room
            self.partner_next = msg.next
            self.partner_ident = identity_code(msg.peer)
            if msg.room != rnd.room_id:
                self.note_foreign(msg.room)
                self.fail(
                    Failure.CROSS_WIRED,
                    f"data channel hello from {msg.peer} of room {msg.room}, not {rnd.room_id}",
                )
        self._check_verified(quiet=True)
        if msg.n and msg.t == "hello":
            # answer the ping, saying whether this side has verified already
            if self.hello_sent:
                self.ok_sent = self.ok_sent or self.rnd.verified
                self._send(DataMsg("pong", echo=msg.n, ok=self.ok_sent))
            else:
                self.ok_sent = self.rnd.verified
                self._send_hello(echo=msg.n)
        if self.rnd.verified and not self.ok_sent:
            self.ok_sent = True
            self._send(DataMsg("ok", ok=True))

    def _check_verified(self, quiet: bool = False) -> None:
        rnd = self.rnd
        if rnd.verified or rnd.hello_room != rnd.room_id or rnd.rtt_ms is None:
            return
        if rnd.media and not self._media_ok():
            return
        rnd.verified = True
        rnd.t_verified = time.monotonic()
        self.verified.set()
        if not quiet and not self.ok_sent:
            self.ok_sent = True
            self._send(DataMsg("ok", ok=True))

    def _media_ok(self) -> bool:
        return self.partner_ident is not None and (
            self.frames.count_for(self.partner_ident) >= MEDIA_MIN_FRAMES
        )

    async def watch_media(self) -> None:
        """Re-check verification as frames arrive (media pairs only)."""
        while not self.verified.is_set():
            await asyncio.sleep(0.1)
            self._check_verified()

    # ---------------------------------------------------------------- signaling

    async def offer(self, client: SignalingClient) -> None:
        rnd = self.rnd
        self._use_channel(self.pc.createDataChannel("drift"))
        assert self.channel is not None
        self.channel.on("open", self._channel_open)
        if self.want_media:
            self.track = IdentityTrack(self.peer.peer_id)
            self.pc.addTrack(self.track)
        if not await self._set_local(await self.pc.createOffer()):
            return
        rnd.t_offer = time.monotonic()
        await self._send_description(client, "offer")

    async def on_offer(self, client: SignalingClient, sdp: str) -> None:
        rnd = self.rnd
        if self.foreign(sdp):
            return
        rnd.t_offer = time.monotonic()
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await self._remote_set(sdp)
        has_video = any(t.kind == "video" for t in self.pc.getTransceivers())
        if has_video and (self.want_media or not self.peer.options.interop):
            # media pairs send both ways: the offerer decided this pair is a media pair
            rnd.media = not self.peer.options.interop
            self.track = IdentityTrack(self.peer.peer_id)
            self.pc.addTrack(self.track)
            if rnd.media:
                self.tasks.append(asyncio.ensure_future(self.watch_media()))
        if not await self._set_local(await self.pc.createAnswer()):
            return
        rnd.t_answer = time.monotonic()
        await self._send_description(client, "answer")

    async def _set_local(self, description: RTCSessionDescription) -> bool:
        """setLocalDescription (which gathers) under a timeout; False when the round failed.

        aiortc hides TURN failures: a refused allocation just leaves no relay
        candidate. A relay-only peer without one asks :mod:`drift.turn.probe`
        (the same allocation, done by hand) why, and fails with that kind.
        """
        try:
            await asyncio.wait_for(
                self.pc.setLocalDescription(description), self.peer.options.timeout
            )
        except TimeoutError:
            self.fail(Failure.TIMEOUT, "ICE gathering did not finish within the timeout")
            return False
        self.rnd.local_candidate_types = candidate_types(self.pc.localDescription.sdp)
        if (
            self.peer.options.ice_policy == "relay"
            and "relay" not in self.rnd.local_candidate_types
        ):
            kind, detail = await self._turn_failure()
            self.fail(kind, detail)
            return False
        return True

    async def _turn_failure(self) -> tuple[Failure, str]:
        target = pick_turn_target(self.servers)
        if target is None:
            return Failure.TURN_MISSING, "relay-only, but welcome carried no TURN server to use"
        probe = await allocate_once(target, timeout=min(5.0, self.peer.options.timeout))
        if probe.problem is None:
            return (
                Failure.TURN_ALLOCATION_REFUSED,
                f"{target.url}: no relay candidate gathered, though a probe allocation "
                "right after succeeded",
            )
        return Failure(probe.problem.value), f"{target.url}: {probe.detail}"

    async def on_answer(self, sdp: str) -> None:
        if self.foreign(sdp):
            return
        self.rnd.t_answer = time.monotonic()
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        await self._remote_set(sdp)

    async def _remote_set(self, sdp: str) -> None:
        self.remote_set = True
        self.remote_ufrags = _remote_ufrag(sdp)
        queued, self.queued = self.queued, []
        for cand in queued:
            await self._add_candidate(cand)

    def note_foreign(self, room: str) -> None:
        if room not in self.rnd.foreign_rooms:
            self.rnd.foreign_rooms.append(room)

    def foreign(self, sdp: str) -> bool:
        """True (and the round failed) when the SDP is tagged with another room."""
        tag = read_tag(sdp)
        if tag is None or tag[1] == self.rnd.room_id:
            return False
        self.note_foreign(tag[1])
        self.fail(
            Failure.CROSS_WIRED,
            f"SDP from {tag[0]} of room {tag[1]} relayed into room {self.rnd.room_id}",
        )
        return True

    async def _send_description(self, client: SignalingClient, kind: str) -> None:
        rnd = self.rnd
        local = self.pc.localDescription
        sdp = local.sdp
        candidates: list[p.CandidateInit] = []
        if self.peer.options.trickle:
            sdp, candidates = split_candidates(sdp)
        assert rnd.room_id is not None
        sdp = tag_sdp(sdp, self.peer.peer_id, rnd.room_id)
        if kind == "offer":
            await client.send_offer(sdp)
        else:
            await client.send_answer(sdp)
        if self.peer.options.trickle:
            for cand in candidates:
                await client.send_candidate(cand)
                rnd.candidates_sent += 1
            await client.send_candidate(None)

    async def on_candidate(self, cand: p.CandidateInit | None) -> None:
        rnd = self.rnd
        if cand is None:
            rnd.end_of_candidates = True
        elif cand.candidate:
            rnd.candidates_received += 1
        if not self.remote_set:
            self.queued.append(cand)
            return
        await self._add_candidate(cand)

    async def _add_candidate(self, cand: p.CandidateInit | None) -> None:
        if cand is None:
            await self.pc.addIceCandidate(None)
            return
        if not cand.candidate:
            return  # an empty candidate string is a browser's end-of-generation marker
        ufrag = cand.usernameFragment
        if isinstance(ufrag, str) and self.remote_ufrags and ufrag not in self.remote_ufrags:
            self.fail(
                Failure.CROSS_WIRED, f"candidate for ufrag {ufrag} is not from the partner's SDP"
            )
            return
        text = cand.candidate.removeprefix("candidate:")
        try:
            ice = candidate_from_sdp(text)
        except (AssertionError, ValueError, IndexError):
            self.fail(Failure.SIGNALING_ERROR, f"unparseable candidate {cand.candidate[:80]!r}")
            return
        mid = cand.sdpMid if isinstance(cand.sdpMid, str) else None
        line = cand.sdpMLineIndex if isinstance(cand.sdpMLineIndex, int) else None
        if mid is None and line is None:
            line = 0
        ice.sdpMid = mid
        ice.sdpMLineIndex = line
        if ice.ip.endswith(".local"):
            return  # mDNS names cannot resolve on a loopback-only run
        await self.pc.addIceCandidate(ice)

    async def close(self) -> None:
        if self.rnd.t_connected is not None:
            self._note_selected_pair()
        for task in self.tasks:
            task.cancel()
        if self.track is not None:
            self.rnd.media_frames_sent = self.track.sent
            self.track.stop()
        ident = self.partner_ident
        if ident is not None:
            ok = self.frames.count_for(ident)
            self.rnd.media_frames_ok = ok
            self.rnd.media_frames_foreign = sum(self.frames.by_ident.values()) - ok
        else:
            self.rnd.media_frames_foreign = sum(self.frames.by_ident.values())
        self.rnd.media_frames_other = self.frames.unreadable
        await self.pc.close()
        for task in self.tasks:
            with contextlib.suppress(BaseException):
                await task


class SyntheticPeer:
    """Runs one peer from connect to close and fills its :class:`PeerRecord`."""

    def __init__(
        self,
        record: PeerRecord,
        options: PeerOptions,
        *,
        session: aiohttp.ClientSession | None = None,
        release_source: Callable[[], Release] | None = None,
        media_for_offer: Callable[[], bool] | None = None,
        on_state: Callable[[str, str], None] | None = None,
        connect_gate: asyncio.Semaphore | None = None,
    ) -> None:
        self.record = record
        self.options = options
        self.session = session
        fixed = Release()
        #: where to find the current release order (the runner renews it after each)
        self.release_source = release_source or (lambda: fixed)
        self.media_for_offer = media_for_offer or (lambda: options.media)
        self.on_state = on_state or (lambda old, new: None)
        self.connect_gate = connect_gate
        self.peer_id = ""
        self.next_selected = record.next_selected
        self.client: SignalingClient | None = None
        self.call: _Call | None = None
        self.state = "pending"
        self.partner_next = False
        self.partner_left: asyncio.Future[str] | None = None

    def _set_state(self, new: str) -> None:
        old, self.state = self.state, new
        if old != new:
            self.on_state(old, new)

    async def run(self) -> PeerRecord:
        rec = self.record
        self._set_state("connecting")
        try:
            async with self.connect_gate or contextlib.nullcontext():
                client = await SignalingClient.connect(
                    rec.url, session=self.session, timeout=self.options.timeout
                )
        except ProtocolViolation as exc:
            return self._finish(Failure.SIGNALING_ERROR, str(exc))
        except ConnectionClosed as exc:
            return self._finish(Failure.SIGNALING_ERROR, f"closed before welcome: {exc}")
        except _CONNECT_ERRORS as exc:
            return self._finish(Failure.UNREACHABLE, f"{type(exc).__name__}: {exc}")
        self.client = client
        rec.t_connected = client.marks.get("connected")
        rec.t_welcome = client.marks.get("welcome")
        rec.peer_id = self.peer_id = client.peer_id
        self._set_state("connected")
        try:
            await self._rounds(client)
        except ProtocolViolation as exc:
            self._fail_round(Failure.SIGNALING_ERROR, str(exc))
        except ConnectionClosed as exc:
            self._fail_round(Failure.SIGNALING_ERROR, f"server closed the WebSocket: {exc}")
        except PeerFailed as exc:
            self._fail_round(exc.kind, exc.detail)
        finally:
            if self.call is not None:
                await self.call.close()
            rec.stale_relays = client.counters.stale_relays
            await client.close()
        return self._finish(None, None)

    def _finish(self, kind: Failure | None, detail: str | None) -> PeerRecord:
        rec = self.record
        if kind is not None:
            rec.failure, rec.detail = kind.value, detail
        rec.t_done = time.monotonic()
        failed = rec.failure or any(r.failure for r in rec.rounds)
        self._set_state("failed" if failed else "done")
        return rec

    def _fail_round(self, kind: Failure, detail: str) -> None:
        if self.record.rounds and self.record.rounds[-1].failure is None:
            rnd = self.record.rounds[-1]
            rnd.failure, rnd.detail, rnd.ended_by = kind.value, detail, "failure"
            rnd.t_end = rnd.t_end or time.monotonic()
        elif not self.record.rounds:
            self.record.failure, self.record.detail = kind.value, detail

    async def _rounds(self, client: SignalingClient) -> None:
        await client.join()
        rnd = self._new_round(1, client.marks["join"])
        if not await self._wait_match(client, rnd):
            return
        await self._run_call(client, rnd)
        if not self._presses_next(rnd):
            return
        # round 2: skip this partner; a new, different, verified partner must follow
        rnd.pressed_next = True
        if client.state is ClientState.MATCHED:
            await client.next()
            at = client.marks["next"]
        else:
            await client.join()
            at = client.marks["join"]
        rnd2 = self._new_round(2, at)
        if not await self._wait_match(client, rnd2):
            return
        await self._run_call(client, rnd2)

    def _presses_next(self, rnd: RoundRecord) -> bool:
        # When both peers of a pair drew "next", only the offerer presses it, so the
        # two are never left waiting for each other through the rematch cooldown.
        if not self.next_selected or not rnd.verified or self.options.interop:
            return False
        if rnd.number != 1 or rnd.ended_by != "hold":
            return False
        return rnd.role == "offerer" or not self.partner_next

    def _partner_presses(self, rnd: RoundRecord, call: _Call) -> bool:
        if rnd.number != 1 or not call.partner_next:
            return False
        return rnd.role == "answerer" or not self.next_selected

    def _new_round(self, number: int, at: float) -> RoundRecord:
        rnd = RoundRecord(number=number, t_join=at)
        self.record.rounds.append(rnd)
        return rnd

    async def _wait_match(self, client: SignalingClient, rnd: RoundRecord) -> bool:
        """Wait for matched; False when released while waiting (no partner is coming)."""
        order = self.release_source()
        release = asyncio.ensure_future(order.event.wait())
        try:
            while True:
                recv = asyncio.ensure_future(client.recv())
                done, _ = await asyncio.wait({recv, release}, return_when=asyncio.FIRST_COMPLETED)
                if recv not in done:
                    recv.cancel()
                    with contextlib.suppress(BaseException):
                        await recv
                    # released: nobody left to pair with (or the server never pairs)
                    if client.state is ClientState.WAITING:
                        self.record.released_waiting = order.waiting
                        rnd.t_end = time.monotonic()
                        rnd.ended_by = "released"
                        await client.leave()
                        return False
                    # not waiting at that moment: listen for the next order instead
                    order = self.release_source()
                    release = asyncio.ensure_future(order.event.wait())
                    continue
                msg = recv.result()
                if isinstance(msg, p.Waiting):
                    rnd.t_waiting = client.marks["waiting"]
                    self._set_state("waiting")
                elif isinstance(msg, p.Matched):
                    match = client.match
                    assert match is not None
                    rnd.t_matched = match.at
                    rnd.role, rnd.room_id = match.role, match.room_id
                    rnd.waited, rnd.expected_role = match.waited, match.expected_role
                    self._set_state("matched")
                    if not match.role_ok:
                        rnd.failure = Failure.SWAPPED_ROLES.value
                        rnd.detail = (
                            f"told {match.role} after {'waiting' if match.waited else 'joining'}"
                            f" (expected {match.expected_role})"
                        )
                    return True
                elif isinstance(msg, p.PartnerLeft) and client.state is ClientState.IDLE:
                    # the partner left as we pressed next: the server refuses our next
                    # (absorbed by the client), so join afresh
                    await client.join()
                elif isinstance(msg, p.Error) and msg.code == p.ErrorCode.QUEUE_TIMEOUT:
                    # the server's queue timeout (a long run's odd one out): wait again
                    await client.join()
                elif isinstance(msg, p.Error):
                    raise ProtocolViolation(f"error {msg.code} while waiting: {msg.message}")
                else:
                    raise ProtocolViolation(f"unexpected {type(msg).__name__} while waiting")
        finally:
            release.cancel()

    async def _run_call(self, client: SignalingClient, rnd: RoundRecord) -> None:
        """Negotiate, verify, hold; end the room's call. Raises PeerFailed on failure."""
        opts = self.options
        want_media = False
        if rnd.role == "offerer":
            want_media = self.media_for_offer()
        elif opts.interop:
            want_media = opts.media
        rnd.media = want_media and not opts.interop
        call = self.call = _Call(self, rnd, client.ice_servers, want_media)
        self._set_state("negotiating")
        self.partner_left = asyncio.get_running_loop().create_future()
        reader = asyncio.ensure_future(self._read_signaling(client, call))
        if rnd.media:
            call.tasks.append(asyncio.ensure_future(call.watch_media()))
        deadline = time.monotonic() + opts.timeout
        try:
            if rnd.role == "offerer":
                await call.offer(client)
            goal = call.connected if opts.interop else call.verified
            await self._until(call, goal, deadline, "verification")
            rnd.t_verified = rnd.t_verified or time.monotonic()
            self._set_state("verified")
            if opts.interop:
                await self._hold(call, opts.hold)
            else:
                # stay until the partner has what it needs from us, then hold
                await self._until(call, call.partner_done, deadline, "the partner's check")
                await self._hold(call, opts.hold)
                if self._partner_presses(rnd, call):
                    # let the partner end the room with a real next
                    await self._hold(call, opts.timeout)
            rnd.ended_by = rnd.ended_by or "hold"
        except PeerFailed as exc:
            rnd.failure = rnd.failure or exc.kind.value
            rnd.detail = rnd.detail or exc.detail
            rnd.ended_by = "failure"
            raise
        finally:
            rnd.t_end = time.monotonic()
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
            if call.failure.done() and rnd.failure is None:
                failed = call.failure.result()
                rnd.failure, rnd.detail = failed.kind.value, failed.detail
            self.partner_next = call.partner_next
            self.call = None
            await call.close()

    async def _until(self, call: _Call, goal: asyncio.Event, deadline: float, what: str) -> None:
        waiter = asyncio.ensure_future(goal.wait())
        assert self.partner_left is not None
        watch: set[asyncio.Future[Any]] = {waiter, call.failure, self.partner_left}
        try:
            await asyncio.wait(
                watch,
                timeout=max(0.0, deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            waiter.cancel()
        if call.failure.done():
            failed = call.failure.result()
            if failed.kind is Failure.CROSS_WIRED:
                # stay until the deadline: every misrouted frame that still arrives
                # names another room involved (the others are waiting that long anyway)
                linger = max(0.0, deadline - time.monotonic())
                await asyncio.wait({self.partner_left}, timeout=linger)
            raise failed
        if goal.is_set():
            return
        if self.partner_left.done():
            reason = self.partner_left.result()
            if goal is call.partner_done:
                return  # the partner went away after both sides had what they needed
            raise PeerFailed(Failure.TIMEOUT, f"partner left ({reason}) before {what}")
        raise PeerFailed(Failure.TIMEOUT, f"no {what} within {self.options.timeout:g} s")

    async def _hold(self, call: _Call, seconds: float) -> None:
        if seconds <= 0:
            return
        assert self.partner_left is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.partner_left), seconds)

    async def _read_signaling(self, client: SignalingClient, call: _Call) -> None:
        rnd = call.rnd
        try:
            while True:
                msg = await client.recv()
                if isinstance(msg, p.Offer):
                    if rnd.role != "answerer" or rnd.t_offer is not None:
                        if not call.foreign(msg.sdp.sdp):
                            call.fail(Failure.SIGNALING_ERROR, f"unexpected offer to {rnd.role}")
                        continue
                    await call.on_offer(client, msg.sdp.sdp)
                elif isinstance(msg, p.Answer):
                    if rnd.role != "offerer" or rnd.t_answer is not None:
                        if not call.foreign(msg.sdp.sdp):
                            call.fail(Failure.SIGNALING_ERROR, f"unexpected answer to {rnd.role}")
                        continue
                    await call.on_answer(msg.sdp.sdp)
                elif isinstance(msg, p.IceCandidate):
                    await call.on_candidate(msg.candidate)
                elif isinstance(msg, p.PartnerLeft):
                    rnd.ended_by = rnd.ended_by or f"partner-left:{msg.reason}"
                    assert self.partner_left is not None
                    if not self.partner_left.done():
                        self.partner_left.set_result(msg.reason)
                    return
                elif isinstance(msg, p.Error):
                    call.fail(Failure.SIGNALING_ERROR, f"error {msg.code}: {msg.message}")
                else:
                    call.fail(Failure.SIGNALING_ERROR, f"unexpected {type(msg).__name__}")
        except ProtocolViolation as exc:
            call.fail(Failure.SIGNALING_ERROR, str(exc))
        except ConnectionClosed as exc:
            call.fail(Failure.SIGNALING_ERROR, f"server closed the WebSocket: {exc}")
        except (ValueError, AssertionError, RuntimeError) as exc:
            # aiortc refuses a description or candidate it cannot use
            call.fail(Failure.SIGNALING_ERROR, f"{type(exc).__name__}: {exc}")


# ---------------------------------------------------------------------- browser interop


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
    timeout: float = 20.0,
    trickle: bool = True,
    real_interfaces: bool = False,
    ice_policy: str = "all",
) -> PeerOutcome:
    """Join ``ws_url`` once, negotiate by role with whatever partner the server assigns.

    The partner may be a browser that does not speak the identity protocol on
    the data channel: success is a connected call (``connectionState ==
    "connected"``) held for ``hold`` seconds, with the synthetic identity video
    track sent when ``media`` (frames the partner sends are counted too).
    Candidates stay on 127.0.0.1 unless ``real_interfaces``; ``ice_policy="relay"``
    allows only relay candidates from the TURN server of welcome.
    """
    configure_interfaces(real_interfaces)
    record = PeerRecord(index=0, url=ws_url, t_start=time.monotonic())
    options = PeerOptions(
        trickle=trickle,
        timeout=timeout,
        hold=hold,
        interop=True,
        media=media,
        ice_policy=ice_policy,
    )
    peer = SyntheticPeer(record, options)
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

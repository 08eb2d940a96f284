"""The WebRTC side of one round: negotiation, trickle ICE, the data channel, video.

A :class:`Call` owns one aiortc ``RTCPeerConnection``. The round driver
(:mod:`drift.simulate.peer`) feeds it signaling frames (:meth:`Call.pump`); it
negotiates by the role the server gave (the offerer offers and creates the data
channel, the answerer answers), trickles its candidates as ``ice-candidate``
frames, and runs the data-channel check through the pure
:class:`~drift.simulate.handshake.Handshake`, writing what it observed into the
round's :class:`~drift.simulate.records.RoundRecord`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from typing import Any, Final

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

from drift.client.signaling import ConnectionClosed, ProtocolViolation, SignalingClient
from drift.core import protocol as p
from drift.simulate import handshake as hs
from drift.simulate.certificates import peer_connection
from drift.simulate.dialect import Dialect
from drift.simulate.media import FrameCounter, IdentityTrack, identity_code
from drift.simulate.records import Failure, RoundRecord
from drift.simulate.relays import digest
from drift.simulate.sdp import candidate_types, ice_ufrags, read_tag, split_candidates, tag_sdp
from drift.simulate.settings import Settings
from drift.turn.probe import allocate_once
from drift.turn.targets import pick_turn_target

#: Media pairs count as verified after this many frames carrying the partner's identity.
MEDIA_MIN_FRAMES: Final = 5
#: How often a media pair re-checks its partner's frames.
_MEDIA_POLL_S: Final = 0.1


class PeerFailed(Exception):
    """Ends a round: ``kind`` is a :class:`Failure` value."""

    def __init__(self, kind: Failure, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def rtc_configuration(servers: list[p.IceServer], ice_policy: str) -> RTCConfiguration:
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


def failed_layer(pc: RTCPeerConnection) -> tuple[Failure, str]:
    """Which layer took the connection to ``failed``: ICE, or DTLS over a working ICE.

    aiortc's connectionState is failed when either an ICE or a DTLS transport is;
    a DTLS transport that failed over an ICE transport that did not is a DTLS
    failure (a fingerprint that does not match the certificate, a broken handshake).
    """
    transports = [getattr(pc.sctp, "transport", None)]
    transports += [t.sender.transport for t in pc.getTransceivers()]
    dtls = [t for t in transports if t is not None]
    ice = [getattr(getattr(t, "transport", None), "state", None) for t in dtls]
    if any(t.state == "failed" for t in dtls) and "failed" not in ice:
        return (
            Failure.DTLS_FAILED,
            "the DTLS handshake failed after ICE connected (certificate does not match "
            "the SDP fingerprint, or the handshake broke)",
        )
    return Failure.ICE_FAILED, "peer connection failed: ICE failed"


class Call:
    """One round's peer connection; signaling frames and channel events feed it."""

    def __init__(
        self,
        *,
        peer_id: str,
        next_selected: bool,
        rnd: RoundRecord,
        servers: list[p.IceServer],
        settings: Settings,
        dialect: Dialect,
        want_media: bool,
    ) -> None:
        self.peer_id = peer_id
        self.next_selected = next_selected
        self.rnd = rnd
        self.servers = servers
        self.settings = settings
        self.dialect = dialect
        self.pc = peer_connection(rtc_configuration(servers, settings.ice_policy))
        self.channel: RTCDataChannel | None = None
        self.handshake: hs.Handshake | None = None
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
        self.tasks: list[asyncio.Task[Any]] = []
        self.pc.on("iceconnectionstatechange", self._on_ice_state)
        self.pc.on("connectionstatechange", self._on_state)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("track", self._on_track)

    # ---------------------------------------------------------------- failure

    def fail(self, kind: Failure, detail: str) -> None:
        if not self.failure.done():
            self.failure.set_result(PeerFailed(kind, detail))

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
            self.fail(*failed_layer(self.pc))

    def _note_selected_pair(self) -> None:
        if self.rnd.selected_local_type is None:
            types = selected_pair_types(self.pc)
            if types is not None:
                self.rnd.selected_local_type, self.rnd.selected_remote_type = types

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video":
            self.tasks.append(asyncio.ensure_future(self.frames.consume(track)))

    # ---------------------------------------------------------------- data channel

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        self._use_channel(channel)
        self._channel_open()

    def _use_channel(self, channel: RTCDataChannel) -> None:
        rnd = self.rnd
        assert rnd.room_id is not None
        self.channel = channel
        # Made here, once the round's media is decided: the answerer decides it on
        # the offer, which always comes before the channel.
        self.handshake = hs.Handshake(
            peer_id=self.peer_id,
            room_id=rnd.room_id,
            offerer=rnd.role == "offerer",
            nonce=secrets.randbelow(2**31 - 1) + 1,
            next_selected=self.next_selected,
            media_ready=self._media_ready if rnd.media else None,
            ping_on_open=self.dialect.ping_on_open,
        )
        channel.on("message", self._on_message)
        channel.on("close", self.partner_done.set)

    def _channel_open(self) -> None:
        now = self.rnd.t_channel_open = time.monotonic()
        assert self.handshake is not None
        self._apply(self.handshake.open(now))

    def _on_message(self, data: str | bytes) -> None:
        assert self.handshake is not None
        self._apply(self.handshake.receive(data, time.monotonic()))

    def _media_ready(self, partner: str) -> bool:
        return self.frames.count_for(identity_code(partner)) >= MEDIA_MIN_FRAMES

    def _apply(self, effects: list[hs.Effect]) -> None:
        """Perform the handshake's effects: send, and record what it observed."""
        rnd = self.rnd
        for effect in effects:
            if isinstance(effect, hs.Send):
                if self.channel is not None and self.channel.readyState == "open":
                    self.channel.send(hs.encode(effect.msg))
            elif isinstance(effect, hs.Hello):
                rnd.hello_peer, rnd.hello_room = effect.peer, effect.room
                self.partner_next = effect.next
                self.partner_ident = identity_code(effect.peer)
            elif isinstance(effect, hs.CrossWired):
                self.note_foreign(effect.room)
                self.fail(
                    Failure.CROSS_WIRED,
                    f"data channel hello from {effect.peer} of room {effect.room},"
                    f" not {rnd.room_id}",
                )
            elif isinstance(effect, hs.RoundTrip):
                rnd.rtt_ms = effect.rtt_ms
            elif isinstance(effect, hs.PartnerVerified):
                rnd.partner_ok = True
                self.partner_done.set()
            elif isinstance(effect, hs.Verified):
                rnd.verified = True
                rnd.t_verified = effect.at
                self.verified.set()

    async def watch_media(self) -> None:
        """Re-check verification as frames arrive (media pairs only)."""
        while not self.verified.is_set():
            await asyncio.sleep(_MEDIA_POLL_S)
            if self.handshake is not None:
                self._apply(self.handshake.poll(time.monotonic()))

    # ---------------------------------------------------------------- negotiation

    async def offer(self, client: SignalingClient) -> None:
        rnd = self.rnd
        channel = self.pc.createDataChannel("drift")
        self._use_channel(channel)
        channel.on("open", self._channel_open)
        if self.want_media:
            self.track = IdentityTrack(self.peer_id)
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
        offered_video = any(t.kind == "video" for t in self.pc.getTransceivers())
        if offered_video and self.dialect.answers_video(self.want_media):
            # the offerer decided whether this pair is a media pair
            rnd.media = self.dialect.verifies_media
            self.track = IdentityTrack(self.peer_id)
            self.pc.addTrack(self.track)
            if rnd.media:
                self.tasks.append(asyncio.ensure_future(self.watch_media()))
        if not await self._set_local(await self.pc.createAnswer()):
            return
        rnd.t_answer = time.monotonic()
        await self._send_description(client, "answer")

    async def on_answer(self, sdp: str) -> None:
        if self.foreign(sdp):
            return
        self.rnd.t_answer = time.monotonic()
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        await self._remote_set(sdp)

    async def _set_local(self, description: RTCSessionDescription) -> bool:
        """setLocalDescription (which gathers) under a timeout; False when the round failed.

        aiortc hides TURN failures: a refused allocation just leaves no relay
        candidate. A relay-only peer without one asks :mod:`drift.turn.probe`
        (the same allocation, done by hand) why, and fails with that kind.
        """
        try:
            await asyncio.wait_for(self.pc.setLocalDescription(description), self.settings.timeout)
        except TimeoutError:
            self.fail(Failure.TIMEOUT, "ICE gathering did not finish within the timeout")
            return False
        self.rnd.local_candidate_types = candidate_types(self.pc.localDescription.sdp)
        if self.settings.ice_policy == "relay" and "relay" not in self.rnd.local_candidate_types:
            kind, detail = await self._turn_failure()
            self.fail(kind, detail)
            return False
        return True

    async def _turn_failure(self) -> tuple[Failure, str]:
        target = pick_turn_target(self.servers)
        if target is None:
            return Failure.TURN_MISSING, "relay-only, but welcome carried no TURN server to use"
        probe = await allocate_once(target, timeout=min(5.0, self.settings.timeout))
        if probe.problem is None:
            return (
                Failure.TURN_ALLOCATION_REFUSED,
                f"{target.url}: no relay candidate gathered, though a probe allocation "
                "right after succeeded",
            )
        return Failure(probe.problem.value), f"{target.url}: {probe.detail}"

    async def _remote_set(self, sdp: str) -> None:
        self.remote_set = True
        self.remote_ufrags = ice_ufrags(sdp)
        queued, self.queued = self.queued, []
        for cand in queued:
            await self._add_candidate(cand)

    async def _send_description(self, client: SignalingClient, kind: str) -> None:
        rnd = self.rnd
        sdp = self.pc.localDescription.sdp
        candidates: list[p.CandidateInit] = []
        if self.settings.trickle:
            sdp, candidates = split_candidates(sdp)
        assert rnd.room_id is not None
        sdp = tag_sdp(sdp, self.peer_id, rnd.room_id)
        if kind == "offer":
            self._sent(p.Offer(sdp=p.SessionDescription(type="offer", sdp=sdp)))
            await client.send_offer(sdp)
        else:
            self._sent(p.Answer(sdp=p.SessionDescription(type="answer", sdp=sdp)))
            await client.send_answer(sdp)
        if self.settings.trickle:
            for cand in [*candidates, None]:
                self._sent(p.IceCandidate(candidate=cand))
                await client.send_candidate(cand)
                rnd.candidates_sent += cand is not None

    def _sent(self, msg: p.Offer | p.Answer | p.IceCandidate) -> None:
        self.rnd.relays_sent.append((time.monotonic(), digest(msg)))

    async def on_candidate(self, cand: p.CandidateInit | None) -> None:
        rnd = self.rnd
        if cand is None:
            rnd.end_of_candidates = True
        elif cand.candidate:
            rnd.candidates_received += 1
        if not self.remote_set:
            # trickled candidates may overtake the description they belong to
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

    # ---------------------------------------------------------------- signaling

    async def pump(self, client: SignalingClient, partner_left: asyncio.Future[str]) -> None:
        """Feed this round's signaling frames to the call until the partner leaves.

        Anything the contract does not allow here fails the round: a description
        for the wrong role (unless tagged with another room: cross-wired), an
        ``error`` frame, an unexpected frame, or one aiortc cannot use.
        """
        rnd = self.rnd
        try:
            while True:
                msg = await client.recv()
                if isinstance(msg, p.Offer | p.Answer | p.IceCandidate):
                    seen = digest(msg)
                    again = seen in rnd.relays_received
                    rnd.relays_received.append(seen)
                    if again:
                        # a relay delivered twice: recorded for the verdict, used once
                        continue
                if isinstance(msg, p.Offer):
                    if rnd.role != "answerer" or rnd.t_offer is not None:
                        if not self.foreign(msg.sdp.sdp):
                            self.fail(Failure.SIGNALING_ERROR, f"unexpected offer to {rnd.role}")
                        continue
                    await self.on_offer(client, msg.sdp.sdp)
                elif isinstance(msg, p.Answer):
                    if rnd.role != "offerer" or rnd.t_answer is not None:
                        if not self.foreign(msg.sdp.sdp):
                            self.fail(Failure.SIGNALING_ERROR, f"unexpected answer to {rnd.role}")
                        continue
                    await self.on_answer(msg.sdp.sdp)
                elif isinstance(msg, p.IceCandidate):
                    await self.on_candidate(msg.candidate)
                elif isinstance(msg, p.PartnerLeft):
                    rnd.t_partner_left = time.monotonic()
                    rnd.partner_left_reason = msg.reason
                    rnd.ended_by = rnd.ended_by or f"partner-left:{msg.reason}"
                    if not partner_left.done():
                        partner_left.set_result(msg.reason)
                    return
                elif isinstance(msg, p.Error):
                    self.fail(Failure.SIGNALING_ERROR, f"error {msg.code}: {msg.message}")
                else:
                    self.fail(Failure.SIGNALING_ERROR, f"unexpected {type(msg).__name__}")
        except ProtocolViolation as exc:
            self.fail(Failure.SIGNALING_ERROR, str(exc))
        except ConnectionClosed as exc:
            if rnd.own_end is None:
                rnd.own_end, rnd.t_own_end = "lost", time.monotonic()
            self.fail(Failure.SIGNALING_ERROR, f"server closed the WebSocket: {exc}")
        except (ValueError, AssertionError, RuntimeError) as exc:
            # aiortc refuses a description or candidate it cannot use
            self.fail(Failure.SIGNALING_ERROR, f"{type(exc).__name__}: {exc}")

    # ---------------------------------------------------------------- end

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

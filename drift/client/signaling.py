"""The drift protocol client: one state machine, the rules of docs/protocol.md from a peer's side.

Synthetic peers (``drift simulate``) and the browser interop tests talk to a
server through :class:`SignalingClient`, so there is
one place that knows what a server may send when. Every server frame is decoded
strictly with :func:`drift.core.protocol.decode_server`; a frame that breaks the
contract raises :class:`ProtocolViolation` instead of being guessed at.

Call contract::

    client = await SignalingClient.connect("ws://127.0.0.1:8080/ws")  # reads welcome
    await client.join()
    msg = await client.recv()        # Waiting, Matched, Offer, Answer, IceCandidate, ...
    client.match                     # Match(role, room_id, waited, expected_role, ...)
    await client.send_offer(sdp)     # or send_answer / send_candidate (matched only)
    await client.next() / await client.leave()
    await client.close()

The client tracks ``idle``/``waiting``/``matched`` from what the server says, and
whether this peer WAITED before ``matched`` (it must then be the answerer) or
was the NEWCOMER (it must be the offerer). A wrong role is not an exception: it
is recorded on :class:`Match` (``role_ok``) so a checker can still negotiate and
report it. Two races the protocol allows are absorbed, not reported: relays from
the old room that arrive after this client sent ``next``/``leave`` (counted in
``stale_relays`` and skipped), and a ``partner-left`` that crosses our own
``next``/``leave`` (the server then answers ours with ``invalid-state``, which is
skipped too).

Times are ``time.monotonic()`` seconds, comparable across processes of one
machine; :attr:`SignalingClient.marks` keeps the latest time of each step.
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field
from typing import Final, Literal

import aiohttp
import msgspec

from drift.core import protocol as p
from drift.errors import DriftError

Pending = Literal["join", "next", "leave"]


class ClientState(enum.StrEnum):
    IDLE = "idle"
    WAITING = "waiting"
    MATCHED = "matched"


class ProtocolViolation(DriftError):
    """The server sent something docs/protocol.md does not allow at this point."""

    #: the decoded frame that broke the contract, when there was one
    frame: p.ServerMessage | None = None


class ConnectionClosed(DriftError):
    """The WebSocket closed; ``code`` is the close code when there was one."""

    def __init__(self, code: int | None, detail: str = "") -> None:
        super().__init__(f"connection closed (code {code}){': ' + detail if detail else ''}")
        self.code = code


@dataclass(slots=True)
class Match:
    """One ``matched`` frame and what this client knew when it arrived."""

    role: p.Role
    room_id: str
    #: this peer got ``waiting`` before ``matched`` (else it was the newcomer)
    waited: bool
    #: the role docs/protocol.md demands, or None when both are allowed: a peer that
    #: waited after an earlier room may be paired when a rematch cooldown ends,
    #: where "the one that waited longer" answers, which one client cannot see.
    expected_role: p.Role | None
    at: float

    @property
    def role_ok(self) -> bool:
        return self.expected_role is None or self.role == self.expected_role


@dataclass(slots=True)
class _Counters:
    stale_relays: int = 0
    absorbed_errors: int = 0
    frames_in: int = 0
    frames_out: int = 0
    errors: list[str] = field(default_factory=list)


_TEXT: Final = aiohttp.WSMsgType.TEXT
_CLOSING: Final = frozenset(
    {aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED}
)
_JOIN: Final = p.encode_client(p.Join()).decode()
_NEXT: Final = p.encode_client(p.Next()).decode()
_LEAVE: Final = p.encode_client(p.Leave()).decode()


class SignalingClient:
    """A protocol client over one aiohttp WebSocket. Not thread-safe; one reader task."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.ws = ws
        self._own_session = session
        self.state = ClientState.IDLE
        self.peer_id = ""
        self.welcome: p.Welcome | None = None
        self.match: Match | None = None
        #: latest monotonic time of each step: connected, welcome, join, waiting, matched, ...
        self.marks: dict[str, float] = {}
        self.counters = _Counters()
        self._pending: Pending | None = None
        self._waited = False
        self._had_room = False
        self._stale = False
        # a partner-left crossed our own next/leave: the server answers it with invalid-state
        self._expect_refusal = 0

    # ------------------------------------------------------------ connect / close

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 10.0,
        headers: dict[str, str] | None = None,
    ) -> SignalingClient:
        """Open the WebSocket and read ``welcome``, each within ``timeout`` seconds.

        Raises OSError/``aiohttp.ClientError``/TimeoutError when the server cannot
        be reached, :class:`ConnectionClosed` when it closes before ``welcome``
        (e.g. 1013 at a connection cap) and :class:`ProtocolViolation` when the
        first frame is not a valid ``welcome``. Pass a shared ``session`` when
        opening many clients; otherwise the client owns one and closes it.
        """
        own = session is None
        sess = session or aiohttp.ClientSession()
        try:
            async with asyncio.timeout(timeout):
                ws = await sess.ws_connect(
                    url,
                    compress=0,
                    autoping=True,
                    max_msg_size=0,
                    timeout=aiohttp.ClientWSTimeout(ws_close=timeout),
                    headers=headers,
                )
        except BaseException:
            if own:
                await sess.close()
            raise
        client = cls(ws, sess if own else None)
        client.marks["connected"] = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                first = await client._read()
        except BaseException:
            await client.close()
            raise
        if not isinstance(first, p.Welcome):
            await client.close()
            raise ProtocolViolation(f"first frame must be welcome, got {_kind(first)!r}")
        if first.protocol != p.PROTOCOL_VERSION:
            await client.close()
            raise ProtocolViolation(f"welcome.protocol is {first.protocol}, expected 1")
        client.welcome = first
        client.peer_id = first.peerId
        client.marks["welcome"] = time.monotonic()
        return client

    async def close(self) -> None:
        if not self.ws.closed:
            await self.ws.close()
        if self._own_session is not None:
            await self._own_session.close()

    @property
    def ice_servers(self) -> list[p.IceServer]:
        return list(self.welcome.iceServers) if self.welcome else []

    @property
    def room_id(self) -> str | None:
        return self.match.room_id if self.match and self.state is ClientState.MATCHED else None

    # ------------------------------------------------------------ client -> server

    async def join(self) -> None:
        self._require(self.state is ClientState.IDLE and self._pending is None, "join")
        self._pending = "join"
        self._waited = False
        self.marks["join"] = time.monotonic()
        await self._send(_JOIN)

    async def next(self) -> None:
        self._require(self.state is not ClientState.IDLE and self._pending is None, "next")
        if self.state is ClientState.MATCHED:
            self._room_ending()
        self._pending = "next"
        self.marks["next"] = time.monotonic()
        await self._send(_NEXT)

    async def leave(self) -> None:
        """Leave the queue or the room; no reply comes, so the client is idle at once."""
        self._require(self.state is not ClientState.IDLE and self._pending is None, "leave")
        if self.state is ClientState.MATCHED:
            self._room_ending()
        self.state = ClientState.IDLE
        self.marks["leave"] = time.monotonic()
        await self._send(_LEAVE)

    def _room_ending(self) -> None:
        # From here until the server's next waiting/matched, frames of the old
        # room (and a partner-left that crossed ours) may still arrive.
        self._had_room = True
        self._waited = False
        self._stale = True

    async def send_offer(self, sdp: str) -> None:
        await self._relay(p.Offer(sdp=p.SessionDescription(type="offer", sdp=sdp)))

    async def send_answer(self, sdp: str) -> None:
        await self._relay(p.Answer(sdp=p.SessionDescription(type="answer", sdp=sdp)))

    async def send_candidate(self, candidate: p.CandidateInit | None) -> None:
        """One trickled candidate, or None for end-of-candidates."""
        await self._relay(p.IceCandidate(candidate=candidate))

    @property
    def features(self) -> frozenset[str]:
        """The protocol additions the server announced in ``welcome`` (none from old servers)."""
        return frozenset(self.welcome.features) if self.welcome else frozenset()

    async def send_call_report(self, report: p.CallReport) -> None:
        """Report a call attempt (feature ``call-report``); no reply comes, no state changes."""
        await self._send(p.encode_client(report).decode())

    async def _relay(self, msg: p.RelayMessage) -> None:
        self._require(self.state is ClientState.MATCHED and self._pending is None, msg.type_name)
        await self._send(p.encode_client(msg).decode())

    async def _send(self, text: str) -> None:
        self.counters.frames_out += 1
        await self.ws.send_str(text)

    def _require(self, ok: bool, what: str) -> None:
        if not ok:
            pending = f" ({self._pending} pending)" if self._pending else ""
            raise RuntimeError(f"cannot send {what!r} while {self.state.value}{pending}")

    # ------------------------------------------------------------ server -> client

    async def recv(self, timeout: float | None = None) -> p.ServerMessage:
        """The next frame that matters, after applying it to the state machine.

        Raises :class:`ProtocolViolation` on a frame the contract forbids here,
        :class:`ConnectionClosed` when the socket closes, TimeoutError on timeout.
        """
        async with asyncio.timeout(timeout):
            while True:
                msg = await self._read()
                if self._apply(msg):
                    return msg

    async def _read(self) -> p.ServerMessage:
        frame = await self.ws.receive()
        if frame.type is not _TEXT:
            if frame.type in _CLOSING:
                raise ConnectionClosed(self.ws.close_code)
            if frame.type is aiohttp.WSMsgType.ERROR:
                raise ConnectionClosed(self.ws.close_code, str(frame.data))
            raise ProtocolViolation(f"server sent a {frame.type.name} frame; only text is allowed")
        self.counters.frames_in += 1
        try:
            return p.decode_server(frame.data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ProtocolViolation(
                f"undecodable server frame: {exc} in {str(frame.data)[:120]!r}"
            ) from None

    def _apply(self, msg: p.ServerMessage) -> bool:
        """Advance the state machine; False means the frame is absorbed (not returned)."""
        now = time.monotonic()
        state, pending = self.state, self._pending
        if isinstance(msg, p.Welcome):
            raise ProtocolViolation("a second welcome")
        if isinstance(msg, p.Waiting):
            if pending not in ("join", "next"):
                raise self._unexpected(msg)
            self._pending = None
            self._stale = False
            self.state = ClientState.WAITING
            self._waited = True
            self.marks["waiting"] = now
            return True
        if isinstance(msg, p.Matched):
            unasked = state is ClientState.WAITING
            if pending not in ("join", "next") and not (unasked and pending is None):
                raise self._unexpected(msg)
            waited = self._waited
            expected: p.Role | None = "offerer"
            if waited:
                expected = None if self._had_room else "answerer"
            self.match = Match(msg.role, msg.roomId, waited, expected, now)
            self.state = ClientState.MATCHED
            self.marks["matched"] = now
            if pending == "next" and unasked:
                # paired while our next (sent while waiting) was on its way: the
                # server will end this room on it and answer with waiting/matched
                self._room_ending()
            else:
                self._pending = None
                self._stale = False
            return True
        if isinstance(msg, p.Offer | p.Answer | p.IceCandidate):
            if state is ClientState.MATCHED and pending is None:
                return True
            if self._stale:
                self.counters.stale_relays += 1
                return False
            raise self._unexpected(msg)
        if isinstance(msg, p.PartnerLeft):
            if state is ClientState.MATCHED and pending is None:
                self.state = ClientState.IDLE
                self._had_room = True
                self.marks["partner-left"] = now
                return True
            if self._stale:
                # the partner's leave/next crossed ours: the server now refuses ours
                self._stale = False
                self._expect_refusal += 1
                self._pending = None
                self.state = ClientState.IDLE
                self.marks["partner-left"] = now
                return True
            raise self._unexpected(msg)
        # Error
        code = msg.code
        self.counters.errors.append(code)
        if code == p.ErrorCode.INVALID_STATE and self._expect_refusal:
            self._expect_refusal -= 1
            self.counters.absorbed_errors += 1
            return False
        if code in (p.ErrorCode.QUEUE_TIMEOUT, p.ErrorCode.QUEUE_FULL) and (
            state is ClientState.WAITING or pending in ("join", "next")
        ):
            self.state = ClientState.IDLE
            self._pending = None
        return True

    def _unexpected(self, msg: p.ServerMessage) -> ProtocolViolation:
        pending = f", {self._pending} pending" if self._pending else ""
        exc = ProtocolViolation(f"unexpected {_kind(msg)!r} while {self.state.value}{pending}")
        exc.frame = msg
        return exc


def _kind(msg: p.ServerMessage) -> str:
    return type(msg).__name__.lower()

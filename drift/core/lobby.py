"""The pure matchmaking core: every rule of docs/protocol.md, and nothing else.

No asyncio, sockets, Redis or clocks here. A backend feeds the :class:`Lobby`
events and performs what it returns:

====================================  =========================================
call                                  when the I/O layer makes it
====================================  =========================================
``connect(peer, now, addr, ice)``     a WebSocket upgrade completed
``receive(peer, frame, now)``         a text frame arrived (``bytes`` or ``str``)
``receive_binary(peer, now)``         a binary frame arrived
``charge(peer, frames, now)``         control frames or non-final fragments
                                      arrived (they cost the same budget)
``disconnect(peer, now, reason)``     the socket is gone, for whatever reason
``tick(now)``                         at ``next_deadline()`` (queue timeouts,
                                      rematch cooldowns ending)
====================================  =========================================

Each call returns a list of effects, in order: :class:`Send` (write this text
frame to that peer), :class:`Close` (close that peer's socket with a code) and
:class:`Event` (something worth a log line or a metric). ``now`` is a
monotonic time in seconds and must never go backwards.

Calls for a peer that is unknown (never connected, refused, or already gone)
are no-ops, so the I/O layer need not track what the core already forgot.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, Literal

from drift.core import protocol as p
from drift.core.call_report import CallLedger
from drift.core.node_messages import Left, NodeMessage, Relay
from drift.core.protocol import CloseCode, ErrorCode
from drift.core.ratelimit import TokenBucket


class Fault(enum.StrEnum):
    """Deliberate bugs, so tests can prove that the checkers catch them.

    Never enable one in production: each breaks a rule of docs/protocol.md.
    """

    SWAP_ROLES = "swap-roles"  # the newcomer answers and the waiting peer offers
    CROSS_WIRE = "cross-wire"  # relays go to a peer of another room
    DROP_CANDIDATES = "drop-candidates"  # ice-candidate frames are swallowed
    NEVER_MATCH = "never-match"  # everybody waits forever
    LEAK_ON_DISCONNECT = "leak-on-disconnect"  # gone peers stay in memory and /stats
    DOUBLE_ENQUEUE = "double-enqueue"  # a matched answerer also stays in the queue
    DROP_CALL_REPORTS = "drop-call-reports"  # call-report frames are taken but never counted


class State(enum.Enum):
    IDLE = "idle"
    WAITING = "waiting"
    MATCHED = "matched"


DisconnectReason = Literal["disconnected", "timeout"]


@dataclass(frozen=True, slots=True)
class LobbyConfig:
    rematch_cooldown: float = 10.0
    #: Largest number of waiting peers; a join beyond it gets ``queue-full``.
    max_queue: int = 10_000
    #: Seconds a peer may wait before ``queue-timeout``; 0 = forever.
    queue_timeout: float = 60.0
    #: Frames per second per connection; 0 = no limit.
    rate_limit: float = 20.0
    rate_burst: int = 40
    max_connections: int = 10_000
    #: 0 = no per-address cap.
    max_connections_per_ip: int = 20
    faults: frozenset[Fault] = frozenset()


@dataclass(slots=True)
class Send:
    peer: str
    data: bytes | str


@dataclass(frozen=True, slots=True)
class Close:
    peer: str
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    peer: str | None = None
    room: str | None = None
    fields: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Forward:
    """Deliver ``message`` to the core of ``node`` (a peer's partner lives there)."""

    node: str
    message: NodeMessage


@dataclass(frozen=True, slots=True)
class QueueOp:
    """Ask the shared queue to ``join``, ``retry`` or ``leave`` for a local peer.

    ``ticket`` names the queue entry a ``join`` writes (or a ``retry`` looks
    for); see :mod:`drift.core.node_messages`. A ``leave`` removes whatever
    entry the peer has.
    """

    op: Literal["join", "retry", "leave"]
    peer: str
    ticket: int = 0


@dataclass(frozen=True, slots=True)
class Cooldown:
    """Record, where every node can see it, that ``a`` and ``b`` just parted."""

    a: str
    b: str
    seconds: float


Effect = Send | Close | Event | Forward | QueueOp | Cooldown


class Peer:
    __slots__ = (
        "addr",
        "bucket",
        "closing",
        "id",
        "joined_at",
        "queued_at",
        "recent",
        "room",
        "state",
        "strikes",
        "strikes_at",
    )

    def __init__(self, peer_id: str, addr: str, bucket: TokenBucket, now: float) -> None:
        self.id = peer_id
        self.addr = addr
        self.state = State.IDLE
        #: set once the core has asked for this peer's socket to close
        self.closing = False
        self.room: Room | None = None
        self.queued_at = 0.0
        self.joined_at = 0.0
        self.bucket = bucket
        # Refused frames, leaking one per second: the measure of "keeps sending
        # after repeated refusals" that ends in close 1008.
        self.strikes = 0.0
        self.strikes_at = now
        #: partner id -> end of the rematch cooldown with that partner
        self.recent: dict[str, float] = {}


class RemotePeer:
    """A partner connected to another node (Redis backend): known here by id and node."""

    __slots__ = ("id", "node")

    def __init__(self, peer_id: str, node: str) -> None:
        self.id = peer_id
        self.node = node


Member = Peer | RemotePeer


class Room:
    __slots__ = ("answerer", "created_at", "id", "offerer")

    def __init__(self, room_id: str, offerer: Member, answerer: Member, now: float) -> None:
        self.id = room_id
        self.offerer = offerer
        self.answerer = answerer
        self.created_at = now

    def partner_of(self, peer: Member) -> Member:
        return self.answerer if peer is self.offerer else self.offerer


@dataclass(slots=True)
class Counters:
    """Monotonic totals, read by /stats and /metrics at scrape time."""

    matches: int = 0
    messages: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    closes: dict[int, int] = field(default_factory=dict)


# A tuple, not ``p.Offer | p.Answer | ...``: isinstance on a tuple builds nothing
# per call, and this check runs for every frame.
_RELAYED: Final = (p.Offer, p.Answer, p.IceCandidate)
_WAITING: Final = p.encode(p.Waiting())
_PARTNER_LEFT: Final = {
    r: p.encode(p.PartnerLeft(reason=r)) for r in ("left", "next", "disconnected", "timeout")
}


def _cooldown_entry(end: float, a: str, b: str) -> tuple[float, str, str]:
    """One heap entry per pair, whichever of the two ended the room."""
    return (end, a, b) if a < b else (end, b, a)


def _counter_ids(prefix: str) -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter)}"


class Lobby:
    #: True when the queue is shared with other nodes (ClusterLobby): the core
    #: then also emits the Cooldown effects the shared queue needs.
    shared_queue = False

    def __init__(
        self,
        config: LobbyConfig | None = None,
        new_room_id: Callable[[], str] | None = None,
    ) -> None:
        self.config = config or LobbyConfig()
        self._new_room_id = new_room_id or _counter_ids("r")
        self.peers: dict[str, Peer] = {}
        #: FIFO: insertion order is queue order (``now`` never goes backwards).
        self.queue: dict[str, Peer] = {}
        self.rooms: dict[str, Room] = {}
        self.counters = Counters()
        #: call-report rules (current or last room, once per side) and their totals
        self.calls = CallLedger()
        self._per_addr: dict[str, int] = {}
        self._cooldowns: list[tuple[float, str, str]] = []  # heap of (end, a, b)
        self._stale_cooldowns = 0  # heap entries whose peers have gone
        self._leaked: list[Peer] = []

    # ------------------------------------------------------------ read side

    @property
    def connections(self) -> int:
        return len(self.peers)

    @property
    def waiting(self) -> int:
        return len(self.queue)

    def state_of(self, peer_id: str) -> State | None:
        peer = self.peers.get(peer_id)
        return peer.state if peer else None

    def next_deadline(self) -> float | None:
        """When ``tick`` next has something to do, or None."""
        deadlines: list[float] = []
        if self.config.queue_timeout > 0 and self.queue:
            first = next(iter(self.queue.values()))
            deadlines.append(first.queued_at + self.config.queue_timeout)
        if self._cooldowns:
            deadlines.append(self._cooldowns[0][0])
        return min(deadlines) if deadlines else None

    # ------------------------------------------------------------ events in

    def connect(
        self, peer_id: str, now: float, addr: str = "", ice_servers: list[p.IceServer] | None = None
    ) -> list[Effect]:
        cfg = self.config
        if peer_id in self.peers:
            raise ValueError(f"peer id {peer_id!r} is already connected")
        if len(self.peers) >= cfg.max_connections:
            return self._refuse(peer_id, "server connection cap reached")
        if cfg.max_connections_per_ip and self._per_addr.get(addr, 0) >= cfg.max_connections_per_ip:
            return self._refuse(peer_id, "per-address connection cap reached")
        peer = Peer(peer_id, addr, TokenBucket(cfg.rate_limit, cfg.rate_burst, now), now)
        self.peers[peer_id] = peer
        self._per_addr[addr] = self._per_addr.get(addr, 0) + 1
        welcome = p.Welcome(peerId=peer_id, iceServers=ice_servers or [], features=list(p.FEATURES))
        return [Send(peer_id, p.encode(welcome)), Event("peer_connected", peer_id)]

    def receive_binary(self, peer_id: str, now: float) -> list[Effect]:
        return self.receive(peer_id, None, now)

    def receive(self, peer_id: str, frame: bytes | str | None, now: float) -> list[Effect]:
        """Handle one client frame; ``None`` stands for a binary frame."""
        peer = self.peers.get(peer_id)
        if peer is None or peer.closing:
            return []
        out: list[Effect] = []
        if not peer.bucket.take(now):
            self._refused(peer, now, out)
            return out
        if frame is None:
            self._error(peer, ErrorCode.INVALID_MESSAGE, "binary frames are not accepted", out)
            return out
        msg = p.decode(frame)
        if isinstance(msg, p.DecodeError):
            self._error(peer, msg.code, msg.message, out)
            return out
        kind = msg.type_name
        messages = self.counters.messages
        messages[kind] = messages.get(kind, 0) + 1
        if isinstance(msg, _RELAYED):
            self._relay(peer, msg, frame, out)
        elif isinstance(msg, p.Join):
            if peer.state is State.IDLE:
                peer.joined_at = now
                self._enqueue(peer, now, out)
            else:
                self._error(peer, ErrorCode.INVALID_STATE, f"join while {peer.state.value}", out)
        elif isinstance(msg, p.Next):
            if peer.state is State.MATCHED:
                self._end_room(peer, "next", now, out)
                peer.joined_at = now
                self._enqueue(peer, now, out)
            elif peer.state is State.WAITING:
                out.append(Send(peer.id, _WAITING))
            else:
                self._error(peer, ErrorCode.INVALID_STATE, "next while idle", out)
        elif isinstance(msg, p.CallReport):
            self._call_report(peer, msg, out)
        elif peer.state is State.MATCHED:  # Leave
            self._end_room(peer, "left", now, out)
        elif peer.state is State.WAITING:
            self._dequeue(peer, out)
        else:
            self._error(peer, ErrorCode.INVALID_STATE, "leave while idle", out)
        return out

    def charge(self, peer_id: str, frames: int, now: float) -> list[Effect]:
        """Bill ``frames`` wire frames the core never sees (pings, pongs, fragments).

        They cost the same budget as messages, and one over it counts towards
        close 1008 like a refused message; it gets no ``rate-limited`` error,
        since error frames answer messages (a client counts on one each).
        """
        peer = self.peers.get(peer_id)
        if peer is None or peer.closing:
            return []
        out: list[Effect] = []
        for _ in range(frames):
            if not peer.bucket.take(now):
                self._refused(peer, now, out, answer=False)
                if peer.closing:
                    break
        return out

    def disconnect(
        self, peer_id: str, now: float, reason: DisconnectReason = "disconnected"
    ) -> list[Effect]:
        peer = self.peers.get(peer_id)
        if peer is None:
            return []
        out: list[Effect] = []
        if peer.state is State.MATCHED:
            self._end_room(peer, reason, now, out)
        elif peer.state is State.WAITING:
            self._dequeue(peer, out)
        out.append(Event("peer_disconnected", peer.id, fields={"reason": reason}))
        self.calls.forget(peer_id)
        if Fault.LEAK_ON_DISCONNECT in self.config.faults:
            self._leaked.append(peer)
            return out
        del self.peers[peer_id]
        left = self._per_addr[peer.addr] - 1
        if left:
            self._per_addr[peer.addr] = left
        else:
            del self._per_addr[peer.addr]
        for other_id in peer.recent:
            other = self.peers.get(other_id)
            if other is not None:
                other.recent.pop(peer_id, None)
        self._forget_cooldowns(len(peer.recent))
        return out

    def note_close(self, code: int) -> None:
        """Count a close the I/O layer performed on its own (e.g. 1009, 1001)."""
        self.counters.closes[code] = self.counters.closes.get(code, 0) + 1

    def _forget_cooldowns(self, gone: int) -> None:
        # Entries of departed peers are skipped lazily by tick(). Once they are
        # the majority the heap is filtered, which costs its own length, so the
        # work stays proportional to the entries, not to peers x departures.
        self._stale_cooldowns += gone
        heap = self._cooldowns
        if not self.peers:
            heap.clear()
            self._stale_cooldowns = 0
        elif self._stale_cooldowns > 32 and self._stale_cooldowns * 2 > len(heap):
            self._cooldowns = [entry for entry in heap if self._cooldown_alive(entry)]
            heapq.heapify(self._cooldowns)
            self._stale_cooldowns = 0

    def _cooldown_alive(self, entry: tuple[float, str, str]) -> bool:
        end, a, b = entry
        for here, there in ((a, b), (b, a)):
            peer = self.peers.get(here)
            if peer is not None and peer.recent.get(there) == end:
                return True
        return False

    def tick(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        timeout = self.config.queue_timeout
        if timeout > 0:
            expired = [
                q
                for q in itertools.takewhile(
                    lambda q: q.queued_at + timeout <= now, self.queue.values()
                )
            ]
            for peer in expired:
                self._dequeue(peer, out)
                self._error(
                    peer, ErrorCode.QUEUE_TIMEOUT, f"nobody to match within {timeout:g} s", out
                )
                out.append(Event("queue_timeout", peer.id, fields={"wait_s": now - peer.joined_at}))
        heap = self._cooldowns
        while heap and heap[0][0] <= now:
            end, a_id, b_id = heapq.heappop(heap)
            ended: list[Peer] = []
            for here, there in ((a_id, b_id), (b_id, a_id)):
                side = self.peers.get(here)
                if side is not None and side.recent.get(there) == end:
                    del side.recent[there]
                    ended.append(side)
            if ended:
                self._cooldown_ended(ended, now, out)
            elif self._stale_cooldowns:
                self._stale_cooldowns -= 1  # both sides gone, or the pair met again since
        return out

    def _cooldown_ended(self, ended: list[Peer], now: float, out: list[Effect]) -> None:
        # Every two waiting peers are incompatible (else they would have been
        # paired), so a cooldown ending can only make *this* pair possible.
        if len(ended) == 2 and all(peer.state is State.WAITING for peer in ended):
            older, newer = sorted(ended, key=lambda peer: peer.queued_at)
            self._dequeue(older, out)
            self._dequeue(newer, out)
            self._pair(newer, older, now, out)

    # ------------------------------------------------------------ rules

    def _compatible(self, a: Peer, b: Peer, now: float) -> bool:
        if a is b:
            return False
        end = a.recent.get(b.id)
        return end is None or end <= now

    def _enqueue(self, peer: Peer, now: float, out: list[Effect]) -> None:
        if Fault.NEVER_MATCH not in self.config.faults:
            for other in self.queue.values():
                if self._compatible(peer, other, now):
                    self._dequeue(other, out)
                    self._pair(peer, other, now, out)
                    return
        if len(self.queue) >= self.config.max_queue:
            self._error(
                peer,
                ErrorCode.QUEUE_FULL,
                f"the queue is full ({self.config.max_queue} waiting)",
                out,
            )
            return
        peer.state = State.WAITING
        peer.queued_at = now
        self.queue[peer.id] = peer
        out.append(Send(peer.id, _WAITING))
        out.append(Event("peer_waiting", peer.id))

    def _dequeue(self, peer: Peer, out: list[Effect]) -> None:
        self.queue.pop(peer.id, None)
        peer.state = State.IDLE

    def _roles(self, newcomer: Member, waited: Member) -> tuple[Member, Member]:
        """(offerer, answerer): the peer that WAITED answers, the NEWCOMER offers.

        The one place of the role rule (docs/protocol.md), for every backend.
        """
        if Fault.SWAP_ROLES in self.config.faults:
            return waited, newcomer
        return newcomer, waited

    def _pair(
        self,
        newcomer: Member,
        waited: Member,
        now: float,
        out: list[Effect],
        room_id: str | None = None,
    ) -> Room:
        offerer, answerer = self._roles(newcomer, waited)
        if Fault.DOUBLE_ENQUEUE in self.config.faults and isinstance(waited, Peer):
            self.queue[waited.id] = waited
        room = Room(room_id or self._new_room_id(), offerer, answerer, now)
        self.rooms[room.id] = room
        if isinstance(newcomer, Peer):  # counted once per room, on the newcomer's node
            self.counters.matches += 1
        roles: tuple[tuple[Member, p.Role], ...] = ((offerer, "offerer"), (answerer, "answerer"))
        for member, role in roles:
            if isinstance(member, Peer):
                member.state = State.MATCHED
                member.room = room
                self.calls.matched(member.id, room.id)
                out.append(Send(member.id, p.encode(p.Matched(role=role, roomId=room.id))))
        for member, role in reversed(roles):
            if isinstance(member, Peer):
                out.append(
                    Event(
                        "peer_matched",
                        member.id,
                        room.id,
                        {"role": role, "wait_s": now - member.joined_at},
                    )
                )
        return room

    def _end_room(self, peer: Peer, reason: p.LeaveReason, now: float, out: list[Effect]) -> None:
        room = peer.room
        assert room is not None
        self._close_room(room, peer, room.partner_of(peer), reason, now, out)

    def _close_room(
        self,
        room: Room,
        ender: Member,
        other: Member,
        reason: p.LeaveReason,
        now: float,
        out: list[Effect],
    ) -> None:
        """The room-ending rule, wherever the ending comes from.

        ``ender`` did leave/next/disconnect (here, or on another node: then
        ``other`` is ours and this node only learns of it); both sides go idle
        and into their rematch cooldown, and ``other`` gets ``partner-left``.
        The node of the ender tells the node of the other side, and records the
        cooldown where the shared queue sees it.
        """
        del self.rooms[room.id]
        cooldown = self.config.rematch_cooldown
        end = now + cooldown
        for here, there in ((ender, other), (other, ender)):
            if isinstance(here, Peer):
                self._leave_room(here, there.id, end)
        if isinstance(other, Peer):
            out.append(Send(other.id, _PARTNER_LEFT[reason]))
        else:
            out.append(Forward(other.node, Left(other.id, ender.id, room.id, reason)))
        if cooldown > 0:
            self._push_cooldown(end, ender.id, other.id)
            if self.shared_queue and isinstance(ender, Peer):
                out.append(Cooldown(ender.id, other.id, cooldown))
        out.append(
            Event(
                "room_closed",
                ender.id,
                room.id,
                {"reason": reason, "duration_s": now - room.created_at},
            )
        )

    def _push_cooldown(self, end: float, a: str, b: str) -> None:
        heapq.heappush(self._cooldowns, _cooldown_entry(end, a, b))

    def _leave_room(self, member: Peer, partner_id: str, cooldown_end: float) -> None:
        member.room = None
        member.state = State.IDLE
        if self.config.rematch_cooldown > 0:
            member.recent[partner_id] = cooldown_end

    def _relay(
        self, peer: Peer, msg: p.RelayMessage, frame: bytes | str, out: list[Effect]
    ) -> None:
        room = peer.room
        if room is None:
            self._error(
                peer, ErrorCode.INVALID_STATE, f"{msg.type_name} while {peer.state.value}", out
            )
            return
        target = room.partner_of(peer)
        faults = self.config.faults
        if faults:
            if Fault.DROP_CANDIDATES in faults and isinstance(msg, p.IceCandidate):
                return
            if Fault.CROSS_WIRE in faults:
                target = self._other_room_peer(room, target)
        # Relayed as received: "unchanged" in docs/protocol.md, and no re-encoding cost.
        if isinstance(target, Peer):
            out.append(Send(target.id, frame))
        else:
            text = frame if isinstance(frame, str) else frame.decode()
            out.append(Forward(target.node, Relay(target.id, peer.id, room.id, text)))

    def _other_room_peer(self, room: Room, partner: Member) -> Member:
        for other in self.rooms.values():
            if other is not room:
                return other.offerer if partner is room.offerer else other.answerer
        return partner

    def _call_report(self, peer: Peer, msg: p.CallReport, out: list[Effect]) -> None:
        count = Fault.DROP_CALL_REPORTS not in self.config.faults
        refused = self.calls.accept(peer.id, msg, count=count)
        if refused is not None:
            self._error(peer, ErrorCode.INVALID_STATE, refused, out)
            return
        fields: dict[str, object] = {"outcome": msg.outcome}
        for name in ("layer", "connectMs", "localCandidate", "remoteCandidate", "relayProtocol"):
            value = getattr(msg, name)
            if isinstance(value, str | int):
                fields[name] = value
        out.append(Event("call_reported", peer.id, msg.roomId, fields))

    def _refuse(self, peer_id: str, why: str) -> list[Effect]:
        code = CloseCode.TRY_AGAIN_LATER
        self.counters.closes[code] = self.counters.closes.get(code, 0) + 1
        return [Close(peer_id, code, why), Event("peer_refused", peer_id, fields={"why": why})]

    def _refused(self, peer: Peer, now: float, out: list[Effect], *, answer: bool = True) -> None:
        peer.strikes = max(0.0, peer.strikes - (now - peer.strikes_at)) + 1.0
        peer.strikes_at = now
        if peer.strikes > self.config.rate_burst:
            code = CloseCode.POLICY_VIOLATION
            self.counters.closes[code] = self.counters.closes.get(code, 0) + 1
            peer.closing = True
            out.append(Close(peer.id, code, "rate limit abused"))
            out.append(Event("peer_abusive", peer.id))
            return
        if answer:
            self._error(peer, ErrorCode.RATE_LIMITED, "too many messages; slow down", out)

    def _error(self, peer: Peer, code: ErrorCode, message: str, out: list[Effect]) -> None:
        errors = self.counters.errors
        errors[code] = errors.get(code, 0) + 1
        out.append(Send(peer.id, p.encode(p.Error(code=code, message=message))))

    # ------------------------------------------------------------ for invariant checks

    def room_members(self) -> Iterator[tuple[Room, Member, Member]]:
        for room in self.rooms.values():
            yield room, room.offerer, room.answerer

"""Stateful property tests of the pure matchmaking core.

A hypothesis ``RuleBasedStateMachine`` drives :class:`drift.core.lobby.Lobby` through
random interleavings of connect / join / next / leave / offer / answer /
ice-candidate / malformed and binary frames / disconnect / clock ticks across
many peers, and keeps a small model of its own: who is connected from where,
who waits since when (in FIFO order), who is in which room with which role,
which pairs are in their rematch cooldown, and each peer's rate-limit bucket.

After every call the frames the core asked to send are compared, per peer, with
what docs/protocol.md's tables say that frame must produce (an effect or an error
code); after every step the invariants below are checked against the core's
state. The model is written from docs/protocol.md, not from lobby.py, so the two can
disagree — that is the point.

The machine reaches the core only through ``Backend``: a factory for the core
and a read-only view of its state: in memory, and two cluster nodes on a real
Redis (:func:`redis_backend`), so the same machine runs over both (see
docs/testing.md). Over Redis this machine settles each call's I/O at once, in
one order; tests/core/test_cluster_interleavings.py lets the orders vary.

Budgets: ``HYPOTHESIS_PROFILE`` = ``ci`` (default when ``DRIFT_CI`` is set),
``dev`` (default otherwise) or ``long``; ``DRIFT_SEED`` fixes the seed.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, Phase, event, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from drift.core import protocol as p
from drift.core.lobby import Close, Effect, Fault, Lobby, LobbyConfig, Send, State
from tests.support.cluster_harness import RedisCluster

# ---------------------------------------------------------------- budgets

_COMMON = settings(
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
PROFILES: dict[str, settings] = {
    # Two state machines (rate limit off / on) share the CI budget of ~30 s.
    "ci": settings(_COMMON, max_examples=250, stateful_step_count=60),
    "dev": settings(_COMMON, max_examples=60, stateful_step_count=50),
    # Minutes to an hour: `HYPOTHESIS_PROFILE=long pytest tests/core/test_lobby_properties.py`.
    "long": settings(_COMMON, max_examples=2_000, stateful_step_count=100),
}


def profile() -> settings:
    default = "ci" if os.environ.get("DRIFT_CI") else "dev"
    name = os.environ.get("HYPOTHESIS_PROFILE", default)
    if name not in PROFILES:
        raise pytest.UsageError(f"HYPOTHESIS_PROFILE must be one of {sorted(PROFILES)}")
    return PROFILES[name]


def seeded(machine_class: type[RuleBasedStateMachine]) -> type[RuleBasedStateMachine]:
    """Apply ``DRIFT_SEED`` (if set) so a failure seen in CI can be replayed.

    Hypothesis reads the seed of a state machine from its class, not its TestCase.
    """
    raw = os.environ.get("DRIFT_SEED")
    return seed(int(raw))(machine_class) if raw else machine_class


# ---------------------------------------------------------------- backends


class InvariantViolation(AssertionError):
    """A rule of docs/protocol.md (or an invariant of the core) was broken."""


@dataclass(frozen=True)
class CoreView:
    """What the machine reads back from a backend after every step."""

    peers: dict[str, str]  # peer id -> "idle" | "waiting" | "matched"
    queue: list[str]  # waiting peers, in queue order
    queued_at: dict[str, float]  # waiting peer -> when it entered the queue
    rooms: dict[str, tuple[str, str]]  # room id -> (offerer, answerer)
    peer_room: dict[str, str | None]  # peer -> the room it believes it is in
    per_addr: dict[str, int]
    cooldown_entries: int  # pending rematch-cooldown timers (any bookkeeping)
    matches: int


@dataclass(frozen=True)
class Backend:
    name: str
    make: Callable[[LobbyConfig, Callable[[], str]], Lobby]
    view: Callable[[Lobby], CoreView]


def _memory_view(lobby: Lobby) -> CoreView:
    return CoreView(
        peers={pid: peer.state.value for pid, peer in lobby.peers.items()},
        queue=list(lobby.queue),
        queued_at={pid: peer.queued_at for pid, peer in lobby.queue.items()},
        rooms={rid: (r.offerer.id, r.answerer.id) for rid, r in lobby.rooms.items()},
        peer_room={pid: peer.room.id if peer.room else None for pid, peer in lobby.peers.items()},
        per_addr=dict(lobby._per_addr),
        cooldown_entries=len(lobby._cooldowns),
        matches=lobby.counters.matches,
    )


MEMORY = Backend("memory", lambda cfg, ids: Lobby(cfg, new_room_id=ids), _memory_view)

# ---------------------------------------------------------------- frames

PEER_ADDRS = ("10.0.0.1", "10.0.0.2", "10.0.0.3", "")
MAX_LIVE_PEERS = 8
#: No cooldown timer may outlive the last peer (found by this machine: the core
#: kept superseded timers until their deadline; test_no_cooldown_timer_outlives_everyone).
STRICT_COOLDOWN_CLEANUP = True

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(), kids, max_size=3),
    max_leaves=6,
)
# Anything that is not a JSON string: a wrong type for every string field.
not_a_string = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)
extra_fields = st.dictionaries(
    st.text(max_size=8).filter(lambda k: k != "type"), json_values, max_size=2
)


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


@st.composite
def frame_encoding(draw: st.DrawFn, frame: bytes) -> bytes | str:
    """The I/O layer may hand the core ``bytes`` or ``str``; both must behave alike."""
    return frame.decode() if draw(st.booleans()) else frame


@st.composite
def simple_frame(draw: st.DrawFn, kind: str) -> bytes | str:
    """A valid join/next/leave, sometimes with unknown extra fields (which are ignored)."""
    extra = draw(st.none() | extra_fields)
    if extra:
        return _dumps({"type": kind, **extra})
    msg: p.ClientMessage = {"join": p.Join(), "next": p.Next(), "leave": p.Leave()}[kind]
    return draw(frame_encoding(p.encode_client(msg)))


@st.composite
def relay_frame(draw: st.DrawFn) -> bytes | str:
    kind = draw(st.sampled_from(["offer", "answer", "ice-candidate"]))
    msg: p.ClientMessage
    if kind == "offer":
        msg = p.Offer(sdp=p.SessionDescription(type="offer", sdp=draw(st.text())))
    elif kind == "answer":
        msg = p.Answer(sdp=p.SessionDescription(type="answer", sdp=draw(st.text())))
    else:
        optional: dict[str, Any] = {}
        if draw(st.booleans()):
            optional["sdpMid"] = draw(st.none() | st.text(max_size=4))
        if draw(st.booleans()):
            optional["sdpMLineIndex"] = draw(st.none() | st.integers(0, 8))
        if draw(st.booleans()):
            optional["usernameFragment"] = draw(st.none() | st.text(max_size=8))
        candidate = draw(
            st.none()
            | st.builds(p.CandidateInit, st.text(), **{k: st.just(v) for k, v in optional.items()})
        )
        msg = p.IceCandidate(candidate=candidate)
    return draw(frame_encoding(p.encode_client(msg)))


@dataclass(frozen=True)
class Malformed:
    frame: bytes | str
    codes: frozenset[str]  # any of these is the documented answer
    kind: str


def _bad(kind: str, *codes: str) -> Callable[[bytes | str], Malformed]:
    return lambda frame: Malformed(frame, frozenset(codes), kind)


INVALID_JSON, INVALID_MESSAGE, UNKNOWN_TYPE = "invalid-json", "invalid-message", "unknown-type"


def _wrong_fields() -> st.SearchStrategy[str]:
    sdp_kind = st.sampled_from(["offer", "answer"])
    return st.one_of(
        sdp_kind.map(lambda k: _dumps({"type": k})),  # sdp missing
        st.tuples(sdp_kind, not_a_string).map(lambda t: _dumps({"type": t[0], "sdp": t[1]})),
        sdp_kind.map(  # sdp.type is the other kind
            lambda k: _dumps(
                {"type": k, "sdp": {"type": "answer" if k == "offer" else "offer", "sdp": ""}}
            )
        ),
        st.tuples(sdp_kind, not_a_string).map(
            lambda t: _dumps({"type": t[0], "sdp": {"type": t[0], "sdp": t[1]}})
        ),
        st.tuples(sdp_kind, st.text().filter(lambda s: s not in ("offer", "answer"))).map(
            lambda t: _dumps({"type": t[0], "sdp": {"type": t[1], "sdp": ""}})
        ),
        st.just(_dumps({"type": "ice-candidate"})),  # candidate missing
        st.one_of(st.booleans(), st.integers(), st.text(), st.lists(st.integers())).map(
            lambda v: _dumps({"type": "ice-candidate", "candidate": v})
        ),
        not_a_string.map(
            lambda v: _dumps({"type": "ice-candidate", "candidate": {"candidate": v}})
        ),
        st.one_of(st.booleans(), st.floats(allow_nan=False, allow_infinity=False), st.text()).map(
            lambda v: _dumps(
                {"type": "ice-candidate", "candidate": {"candidate": "", "sdpMLineIndex": v}}
            )
        ),
    )


def malformed_frames() -> st.SearchStrategy[Malformed]:
    """Bad frames, each built with the error code docs/protocol.md assigns to it."""
    return st.one_of(
        # not JSON at all (a leading '}' can never start a JSON text)
        st.text().map(lambda s: "}" + s).map(_bad("not-json", INVALID_JSON)),
        st.sampled_from(["", " ", "{", "nul", "{'type': 'join'}", '{"type":"join"', "join"]).map(
            _bad("not-json", INVALID_JSON)
        ),
        # JSON, but not an object
        st.one_of(
            st.lists(json_values, max_size=2), st.integers(), st.text(), st.none(), st.booleans()
        )
        .map(_dumps)
        .map(_bad("not-object", INVALID_JSON)),
        # object without "type", or with a non-string "type"
        extra_fields.map(_dumps).map(_bad("missing-type", INVALID_MESSAGE)),
        st.tuples(not_a_string, extra_fields)
        .map(lambda t: _dumps({"type": t[0], **t[1]}))
        .map(_bad("type-not-string", INVALID_MESSAGE)),
        # a string type that is not in the client table (control characters escaped)
        st.text()
        .filter(lambda s: s not in p.CLIENT_TYPES)
        .map(lambda s: json.dumps({"type": s}))
        .map(_bad("unknown-type", UNKNOWN_TYPE)),
        # known type, wrong or missing fields (validation before state)
        _wrong_fields().map(_bad("wrong-fields", INVALID_MESSAGE)),
        # raw control characters are not allowed inside JSON strings
        st.sampled_from(["\x00", "\x01", "\x1f", "\x07"])
        .map(lambda c: f'{{"type":"jo{c}in"}}')
        .map(_bad("control-char", INVALID_JSON)),
        # invalid UTF-8 outside strings (the server closes with 1007 before the core
        # sees any; inside a string see test_invalid_utf8_in_a_string_is_an_error_frame)
        st.binary(max_size=8).map(lambda b: b"\xff" + b).map(_bad("invalid-utf8", INVALID_JSON)),
        st.just(b'\xef\xbb\xbf{"type":"join"}').map(_bad("bom", INVALID_JSON)),
        # deep nesting where a value is checked: refused as JSON or as a message
        st.integers(10, 5000)
        .map(lambda d: "[" * d + "]" * d)
        .map(_bad("deep-nesting", INVALID_JSON)),
        st.integers(900, 3000)
        .map(lambda d: '{"type":"offer","sdp":' + "[" * d + "]" * d + "}")
        .map(_bad("deep-nesting", INVALID_JSON, INVALID_MESSAGE)),
    )


@st.composite
def ice_server_lists(draw: st.DrawFn) -> list[p.IceServer] | None:
    if draw(st.booleans()):
        return None
    urls = draw(st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=2))
    if draw(st.booleans()):
        return [p.IceServer(urls=urls)]
    return [p.IceServer(urls=urls, username=draw(st.text()), credential=draw(st.text()))]


# ---------------------------------------------------------------- the model


@dataclass
class ModelPeer:
    id: str
    addr: str
    state: str = "idle"
    queued_at: float = 0.0
    room: str | None = None
    # rate limit, as docs/protocol.md and the config describe it: a bucket of
    # ``burst`` frames refilled at ``rate`` per second; refusals decay 1/s.
    tokens: float = 0.0
    stamp: float = 0.0
    strikes: float = 0.0
    strikes_at: float = 0.0
    # call-report: the room it may report on (its current or last), and whether it did
    report_room: str | None = None
    reported: bool = False


@dataclass
class ModelRoom:
    id: str
    offerer: str
    answerer: str

    def partner_of(self, peer: str) -> str:
        return self.answerer if peer == self.offerer else self.offerer


@dataclass
class Expected:
    """Frames each peer must receive from one call, in order."""

    frames: dict[str, list[object]] = field(default_factory=dict)
    closes: dict[str, int] = field(default_factory=dict)

    def add(self, peer: str, frame: object) -> None:
        self.frames.setdefault(peer, []).append(frame)


def _error(code: str) -> dict[str, str]:
    return {"type": "error", "code": code}


WAITING: dict[str, str] = {"type": "waiting"}


class LobbyMachine(RuleBasedStateMachine):
    """The pure core against a model written from docs/protocol.md."""

    backend: ClassVar[Backend] = MEMORY
    rate_limited: ClassVar[bool] = False
    faults: ClassVar[frozenset[Fault]] = frozenset()

    def __init__(self) -> None:
        super().__init__()
        self.lobby: Lobby | None = None
        self.cfg = LobbyConfig()
        self.now = 1000.0
        self.ticked_through = self.now  # every deadline <= this has been ticked
        self.peers: dict[str, ModelPeer] = {}
        self.queue: list[str] = []
        self.rooms: dict[str, ModelRoom] = {}
        self.cooldowns: dict[frozenset[str], float] = {}
        self.per_addr: Counter[str] = Counter()
        self.matches = 0
        self.call_reports = 0  # reports the core must have counted
        self.room_ids: list[str] = []
        self.ids_used = 0  # room ids of room_ids the model has accounted for
        self.next_peer = 0
        self.steps = 0

    # ------------------------------------------------------------ setup

    # Repeated values weight the draw toward roomy limits, where rooms, queues
    # and cooldowns interact most; the tight ones exercise the caps.
    @initialize(
        cooldown=st.sampled_from([10.0, 10.0, 1.0, 0.0]),
        queue_timeout=st.sampled_from([60.0, 60.0, 0.0, 5.0]),
        max_queue=st.sampled_from([10_000, 10_000, 3, 2, 1]),
        max_connections=st.sampled_from([10_000, 10_000, 6, 3]),
        per_ip=st.sampled_from([0, 20, 20, 2]),
        rate=st.sampled_from([1.0, 5.0]),
        burst=st.sampled_from([1, 3, 5]),
    )
    def configure(
        self,
        cooldown: float,
        queue_timeout: float,
        max_queue: int,
        max_connections: int,
        per_ip: int,
        rate: float,
        burst: int,
    ) -> None:
        self.cfg = LobbyConfig(
            rematch_cooldown=cooldown,
            max_queue=max_queue,
            queue_timeout=queue_timeout,
            rate_limit=rate if self.rate_limited else 0.0,
            rate_burst=burst,
            max_connections=max_connections,
            max_connections_per_ip=per_ip,
            faults=self.faults,
        )
        counter = iter(range(1, 1 << 30))

        def new_room_id() -> str:
            room_id = f"room{next(counter)}"
            self.room_ids.append(room_id)
            return room_id

        self.lobby = self.backend.make(self.cfg, new_room_id)

    @property
    def core(self) -> Lobby:
        assert self.lobby is not None
        return self.lobby

    def live(self) -> bool:
        return bool(self.peers)

    def _pick(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from(sorted(self.peers)), label="peer")

    # ------------------------------------------------------------ rules: connections

    @precondition(lambda self: len(self.peers) < MAX_LIVE_PEERS)
    @rule(addr=st.sampled_from(PEER_ADDRS), ice=ice_server_lists())
    def connect(self, addr: str, ice: list[p.IceServer] | None) -> None:
        self.next_peer += 1
        peer_id = f"p{self.next_peer}"
        effects = self.core.connect(peer_id, self.now, addr, ice)
        expected = Expected()
        cfg = self.cfg
        if len(self.peers) >= cfg.max_connections or (
            cfg.max_connections_per_ip and self.per_addr[addr] >= cfg.max_connections_per_ip
        ):
            expected.closes[peer_id] = 1013  # refused before any welcome
            event("connect refused with 1013")
            self._check(effects, expected, "connect (refused)")
            # The I/O layer closes and reports the disconnect; the core forgot the peer.
            gone = self.core.disconnect(peer_id, self.now)
            if gone:
                raise InvariantViolation(f"disconnect of a refused peer had effects: {gone}")
            return
        servers = [
            {
                k: v
                for k, v in (
                    ("urls", s.urls),
                    ("username", s.username),
                    ("credential", s.credential),
                )
                if isinstance(v, (str, list))
            }
            for s in ice or []
        ]
        expected.add(
            peer_id,
            {
                "type": "welcome",
                "protocol": 1,
                "peerId": peer_id,
                "iceServers": servers,
                "features": ["call-report"],
            },
        )
        self._check(effects, expected, "connect")
        self.peers[peer_id] = ModelPeer(
            peer_id, addr, tokens=float(cfg.rate_burst), stamp=self.now, strikes_at=self.now
        )
        self.per_addr[addr] += 1

    @precondition(lambda self: len(self.peers) <= MAX_LIVE_PEERS - 2)
    @rule(addrs=st.tuples(st.sampled_from(PEER_ADDRS), st.sampled_from(PEER_ADDRS)))
    def two_newcomers_join(self, addrs: tuple[str, str]) -> None:
        """A shortcut to busy states (several rooms at once) that single steps reach rarely."""
        for addr in addrs:
            self.connect(addr, None)
            peer_id = f"p{self.next_peer}"
            if peer_id in self.peers:
                self._frame(peer_id, p.encode_client(p.Join()), "join")

    @precondition(lambda self: any(peer.state == "matched" for peer in self.peers.values()))
    @rule(data=st.data())
    def skip_then_partner_rejoins(self, data: st.DataObject) -> None:
        """``next``, then the skipped partner joins again: both wait, in their cooldown.

        The path to queue-full, to pairing past the oldest waiting peer and to
        pairing when a cooldown ends, which single random steps seldom walk.
        """
        matched = sorted(pid for pid, peer in self.peers.items() if peer.state == "matched")
        peer_id = data.draw(st.sampled_from(matched), label="skipper")
        room = self.peers[peer_id].room
        assert room is not None
        partner = self.rooms[room].partner_of(peer_id)
        self._frame(peer_id, p.encode_client(p.Next()), "next")
        if partner in self.peers and self.peers[partner].state == "idle":
            self._frame(partner, p.encode_client(p.Join()), "join")

    @precondition(live)
    @rule(data=st.data(), reason=st.sampled_from(["disconnected", "timeout"]))
    def disconnect(self, data: st.DataObject, reason: str) -> None:
        peer_id = self._pick(data)
        self._disconnect(peer_id, reason)

    def _disconnect(self, peer_id: str, reason: str) -> None:
        effects = self.core.disconnect(peer_id, self.now, reason)  # type: ignore[arg-type]
        expected = Expected()
        self._leave_everything(self.peers[peer_id], reason, expected)
        self._check(effects, expected, f"disconnect/{reason}")
        peer = self.peers.pop(peer_id)
        self.per_addr[peer.addr] -= 1
        if not self.per_addr[peer.addr]:
            del self.per_addr[peer.addr]
        for pair in [pair for pair in self.cooldowns if peer_id in pair]:
            del self.cooldowns[pair]
        if self.core.disconnect(peer_id, self.now, reason):  # type: ignore[arg-type]
            raise InvariantViolation("a second disconnect of the same peer had effects")

    @precondition(live)
    @rule(data=st.data())
    def everyone_leaves(self, data: st.DataObject) -> None:
        """Disconnect every peer (any order): afterwards no trace of anyone may remain."""
        for peer_id in data.draw(st.permutations(sorted(self.peers)), label="order"):
            self._disconnect(peer_id, "disconnected")
        view = self.backend.view(self.core)
        leftovers = {
            "peers": view.peers,
            "queue": view.queue,
            "rooms": view.rooms,
            "per-address counts": view.per_addr,
        }
        left = {name: value for name, value in leftovers.items() if value}
        if left:
            raise InvariantViolation(f"state left after everyone disconnected: {left}")
        if view.cooldown_entries or self.core.next_deadline() is not None:
            message = (
                f"cooldown timers left after everyone disconnected: {view.cooldown_entries} "
                f"entries, next_deadline={self.core.next_deadline()}"
            )
            if STRICT_COOLDOWN_CLEANUP:
                raise InvariantViolation(message)
            event("known bug: cooldown timers outlive everyone")
        # Once every deadline has passed and been ticked, nothing at all may remain.
        self._advance(max(self.cfg.rematch_cooldown, self.cfg.queue_timeout) + 1.0, ticks=True)
        view = self.backend.view(self.core)
        if view.cooldown_entries or self.core.next_deadline() is not None:
            raise InvariantViolation(
                f"cooldown timers left after everyone disconnected and all deadlines passed: "
                f"{view.cooldown_entries} entries, next_deadline={self.core.next_deadline()}"
            )

    @rule(frame=simple_frame("join"))
    def frame_from_unknown_peer(self, frame: bytes | str) -> None:
        """Calls for a peer the core does not know are no-ops (lobby.py's contract)."""
        for effects in (
            self.core.receive("nobody", frame, self.now),
            self.core.receive_binary("nobody", self.now),
            self.core.disconnect("nobody", self.now),
        ):
            if effects:
                raise InvariantViolation(f"a call for an unknown peer had effects: {effects}")

    # ------------------------------------------------------------ rules: client frames

    @precondition(live)
    @rule(data=st.data(), frame=simple_frame("join"))
    def join(self, data: st.DataObject, frame: bytes | str) -> None:
        self._frame(self._pick(data), frame, "join")

    @precondition(live)
    @rule(data=st.data(), frame=simple_frame("next"))
    def next(self, data: st.DataObject, frame: bytes | str) -> None:
        self._frame(self._pick(data), frame, "next")

    @precondition(live)
    @rule(data=st.data(), frame=simple_frame("leave"))
    def leave(self, data: st.DataObject, frame: bytes | str) -> None:
        self._frame(self._pick(data), frame, "leave")

    @precondition(live)
    @rule(data=st.data(), frame=relay_frame())
    def relay(self, data: st.DataObject, frame: bytes | str) -> None:
        """offer / answer / ice-candidate."""
        self._frame(self._pick(data), frame, "relay")

    @precondition(lambda self: any(p.state == "matched" for p in self.peers.values()))
    @rule(data=st.data(), frame=relay_frame())
    def relay_in_room(self, data: st.DataObject, frame: bytes | str) -> None:
        """Relays from matched peers, so that relaying is exercised often."""
        matched = sorted(pid for pid, peer in self.peers.items() if peer.state == "matched")
        self._frame(data.draw(st.sampled_from(matched)), frame, "relay")

    @precondition(live)
    @rule(data=st.data(), connected=st.booleans())
    def call_report(self, data: st.DataObject, connected: bool) -> None:
        """A valid call-report, for the peer's own room, another room, or none."""
        peer_id = self._pick(data)
        own = self.peers[peer_id].report_room
        room_id = data.draw(
            st.sampled_from(sorted({own or "nowhere", *self.room_ids[-3:], "nowhere"})),
            label="roomId",
        )
        if connected:
            msg = p.CallReport(
                roomId=room_id,
                outcome="connected",
                connectMs=data.draw(st.integers(0, p.MAX_CONNECT_MS), label="connectMs"),
                localCandidate="host",
                remoteCandidate="srflx",
            )
        else:
            msg = p.CallReport(roomId=room_id, outcome="failed", layer="dtls")
        self._frame(peer_id, p.encode_client(msg), "call-report")

    @precondition(live)
    @rule(data=st.data(), bad=malformed_frames(), as_str=st.booleans())
    def malformed(self, data: st.DataObject, bad: Malformed, as_str: bool) -> None:
        frame = bad.frame
        if as_str and isinstance(frame, bytes):
            with contextlib.suppress(UnicodeDecodeError):
                frame = frame.decode()
        self._frame(self._pick(data), frame, "malformed", bad)

    @precondition(live)
    @rule(data=st.data())
    def binary(self, data: st.DataObject) -> None:
        self._frame(self._pick(data), None, "binary")

    # ------------------------------------------------------------ rules: the clock

    @rule(data=st.data())
    def clock(self, data: st.DataObject) -> None:
        """Advance the fake clock, ticking at every deadline like the server's ticker."""
        self._advance(self._draw_delay(data), ticks=True)

    @rule(data=st.data())
    def late_tick(self, data: st.DataObject) -> None:
        """A busy event loop ticks late: one tick after several deadlines have passed."""
        self._advance(self._draw_delay(data), ticks=False)

    @rule(data=st.data())
    def time_passes_without_tick(self, data: st.DataObject) -> None:
        """Frames may arrive after a deadline and before the ticker has run."""
        self.now += self._draw_delay(data)

    def _draw_delay(self, data: st.DataObject) -> float:
        cfg = self.cfg
        marks = [cfg.rematch_cooldown, cfg.queue_timeout]
        around = [m + d for m in marks if m > 0 for d in (-0.001, 0.0, 0.001)]
        return data.draw(
            st.one_of(
                st.just(0.0),
                st.floats(0.0, 0.5),
                st.floats(0.0, 2 * max(marks) + 1.0),
                st.sampled_from(around or [1.0]),
            ),
            label="delay",
        )

    def _advance(self, delay: float, *, ticks: bool) -> None:
        target = self.now + delay
        if ticks:
            for _ in range(10_000):
                deadline = self.core.next_deadline()
                if deadline is None or deadline > target:
                    break
                self.now = max(self.now, deadline)
                self._tick()
            else:
                raise InvariantViolation("ticking at next_deadline() never clears the deadline")
        self.now = target
        self._tick()

    def _tick(self) -> None:
        effects = self.core.tick(self.now)
        self.ticked_through = self.now
        expected = Expected()
        cfg = self.cfg
        if cfg.queue_timeout > 0:
            expired = [
                q for q in self.queue if self.peers[q].queued_at + cfg.queue_timeout <= self.now
            ]
            if expired != self.queue[: len(expired)]:
                raise InvariantViolation(f"model queue is not FIFO: {self.queue}")
            for peer_id in expired:
                self._dequeue(self.peers[peer_id])
                expected.add(peer_id, _error("queue-timeout"))
                event("queue-timeout")
        # Cooldowns that end while both peers wait pair them; which of several
        # simultaneous endings wins is not specified, so any valid pairing is
        # accepted and the model follows the core's choice (checked below).
        got = self._frames(effects, "tick")
        for peer_id, frames in got.items():
            for frame in frames:
                if frame.get("type") == "matched" and frame.get("role") == "offerer":
                    self._tick_pairing(peer_id, str(frame.get("roomId")), got, expected)
        self._check(effects, expected, "tick")

    def _tick_pairing(
        self, offerer: str, room_id: str, got: dict[str, list[dict[str, Any]]], expected: Expected
    ) -> None:
        answerer = next(
            (
                pid
                for pid, frames in got.items()
                for f in frames
                if f.get("type") == "matched"
                and f.get("role") == "answerer"
                and f.get("roomId") == room_id
            ),
            None,
        )
        if answerer is None or answerer not in self.peers or offerer not in self.peers:
            return  # _check reports the unexpected frames
        a, b = self.peers[answerer], self.peers[offerer]
        if a.state != "waiting" or b.state != "waiting":
            raise InvariantViolation(f"tick paired {answerer}/{offerer}, not both waiting")
        end = self.cooldowns.get(frozenset((answerer, offerer)))
        if end is not None and end > self.now:
            raise InvariantViolation(f"tick paired {answerer}/{offerer} inside their cooldown")
        if a.queued_at > b.queued_at:
            raise InvariantViolation(
                f"tick made {answerer} the answerer though {offerer} waited longer"
            )
        self._dequeue(a)
        self._dequeue(b)
        self._pair(newcomer=b, waited=a, expected=expected, room_id=room_id)
        event("paired when their cooldown ended")

    # ------------------------------------------------------------ the model's rules

    def _frame(
        self, peer_id: str, frame: bytes | str | None, what: str, bad: Malformed | None = None
    ) -> None:
        if frame is None:
            effects = self.core.receive_binary(peer_id, self.now)
        else:
            effects = self.core.receive(peer_id, frame, self.now)
        expected = Expected()
        peer = self.peers[peer_id]
        if not self._rate_allows(peer, expected):
            self._check(effects, expected, f"{what} (rate-limited)")
            if peer_id in expected.closes:  # the I/O layer closes, then reports the disconnect
                self._disconnect(peer_id, "disconnected")
            return
        if frame is None:
            expected.add(peer_id, _error(INVALID_MESSAGE))
        elif bad is not None:
            expected.add(peer_id, {"type": "error", "code": bad.codes})
        else:
            self._valid_frame(peer, frame, expected)
        self._check(effects, expected, what if bad is None else f"malformed/{bad.kind}")

    def _rate_allows(self, peer: ModelPeer, expected: Expected) -> bool:
        cfg = self.cfg
        if cfg.rate_limit <= 0:
            return True
        elapsed = self.now - peer.stamp
        if elapsed > 0:
            peer.tokens = min(cfg.rate_burst, peer.tokens + elapsed * cfg.rate_limit)
            peer.stamp = self.now
        if peer.tokens >= 1.0:
            peer.tokens -= 1.0
            return True
        peer.strikes = max(0.0, peer.strikes - (self.now - peer.strikes_at)) + 1.0
        peer.strikes_at = self.now
        if peer.strikes > cfg.rate_burst:
            expected.closes[peer.id] = 1008
            event("closed with 1008")
        else:
            expected.add(peer.id, _error("rate-limited"))
            event("rate-limited")
        return False

    def _valid_frame(self, peer: ModelPeer, frame: bytes | str, expected: Expected) -> None:
        kind = json.loads(frame)["type"]
        if kind in ("offer", "answer", "ice-candidate"):
            if peer.state == "matched":
                assert peer.room is not None
                # Relayed unchanged, to the partner only.
                expected.add(self.rooms[peer.room].partner_of(peer.id), frame)
                event("relayed")
            else:
                expected.add(peer.id, _error("invalid-state"))
        elif kind == "join":
            if peer.state == "idle":
                self._enqueue(peer, expected)
            else:
                expected.add(peer.id, _error("invalid-state"))
        elif kind == "next":
            if peer.state == "matched":
                self._end_room(peer, "next", expected)
                self._enqueue(peer, expected)
            elif peer.state == "waiting":
                expected.add(peer.id, WAITING)
            else:
                expected.add(peer.id, _error("invalid-state"))
        elif kind == "call-report":
            # Only for the current or last room, once per side (docs/protocol.md).
            if json.loads(frame)["roomId"] == peer.report_room and not peer.reported:
                peer.reported = True
                if Fault.DROP_CALL_REPORTS not in self.cfg.faults:
                    self.call_reports += 1
                event("call-report taken")
            else:
                expected.add(peer.id, _error("invalid-state"))
        elif peer.state == "idle":  # leave
            expected.add(peer.id, _error("invalid-state"))
        else:
            self._leave_everything(peer, "left", expected)

    def _leave_everything(self, peer: ModelPeer, reason: str, expected: Expected) -> None:
        if peer.state == "matched":
            self._end_room(peer, reason, expected)
        elif peer.state == "waiting":
            self._dequeue(peer)

    def _compatible(self, a: str, b: str) -> bool:
        end = self.cooldowns.get(frozenset((a, b)))
        return a != b and (end is None or end <= self.now)

    def _enqueue(self, peer: ModelPeer, expected: Expected) -> None:
        for other in self.queue:  # FIFO: the oldest compatible waiting peer
            if self._compatible(peer.id, other):
                if other != self.queue[0]:
                    event("paired with a peer other than the oldest (cooldown)")
                waited = self.peers[other]
                self._dequeue(waited)
                self._pair(newcomer=peer, waited=waited, expected=expected)
                return
        if len(self.queue) >= self.cfg.max_queue:
            expected.add(peer.id, _error("queue-full"))
            event("queue-full")
            return
        peer.state = "waiting"
        peer.queued_at = self.now
        self.queue.append(peer.id)
        expected.add(peer.id, WAITING)

    def _dequeue(self, peer: ModelPeer) -> None:
        self.queue.remove(peer.id)
        peer.state = "idle"

    def _pair(
        self,
        newcomer: ModelPeer,
        waited: ModelPeer,
        expected: Expected,
        room_id: str | None = None,
    ) -> None:
        if room_id is None:
            # The id the core drew for this call's room (it asks the factory once per room).
            room_id = (
                self.room_ids[self.ids_used] if self.ids_used < len(self.room_ids) else "<none>"
            )
        elif room_id not in self.room_ids:
            raise InvariantViolation(f"room id {room_id} was not drawn from the id factory")
        self.ids_used += 1
        if room_id in self.rooms:
            raise InvariantViolation(f"room id {room_id} reused")
        self.rooms[room_id] = ModelRoom(room_id, offerer=newcomer.id, answerer=waited.id)
        for member in (newcomer, waited):
            member.state = "matched"
            member.room = room_id
            member.report_room, member.reported = room_id, False
        self.matches += 1
        expected.add(newcomer.id, {"type": "matched", "role": "offerer", "roomId": room_id})
        expected.add(waited.id, {"type": "matched", "role": "answerer", "roomId": room_id})

    def _end_room(self, peer: ModelPeer, reason: str, expected: Expected) -> None:
        assert peer.room is not None
        room = self.rooms.pop(peer.room)
        partner = self.peers[room.partner_of(peer.id)]
        for member in (peer, partner):
            member.state = "idle"
            member.room = None
        if self.cfg.rematch_cooldown > 0:
            self.cooldowns[frozenset((peer.id, partner.id))] = self.now + self.cfg.rematch_cooldown
        expected.add(partner.id, {"type": "partner-left", "reason": reason})

    # ------------------------------------------------------------ comparing effects

    def _frames(self, effects: Iterable[Effect], what: str) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for effect in effects:
            if isinstance(effect, Send):
                try:
                    value = json.loads(effect.data)
                except ValueError:
                    raise InvariantViolation(f"{what}: a Send that is not JSON: {effect}") from None
                out.setdefault(effect.peer, []).append(value)
        return out

    def _check(self, effects: list[Effect], expected: Expected, what: str) -> None:
        """Every peer receives exactly the frames docs/protocol.md prescribes, in order."""
        self.steps += 1
        got: dict[str, list[object]] = {}
        closes: dict[str, int] = {}
        for effect in effects:
            if isinstance(effect, Send):
                got.setdefault(effect.peer, []).append(effect.data)
            elif isinstance(effect, Close):
                if effect.peer in closes:
                    raise InvariantViolation(f"{what}: closed {effect.peer} twice")
                closes[effect.peer] = effect.code
        if closes != expected.closes:
            raise InvariantViolation(f"{what}: closes {closes}, expected {expected.closes}")
        if set(got) != set(expected.frames):
            raise InvariantViolation(
                f"{what}: frames went to {sorted(got)}, expected {sorted(expected.frames)}: "
                f"got {got}, expected {expected.frames}"
            )
        for peer_id, frames in got.items():
            want = expected.frames[peer_id]
            if len(frames) != len(want) or not all(
                _matches(g, w) for g, w in zip(frames, want, strict=True)
            ):
                raise InvariantViolation(f"{what}: {peer_id} got {frames!r}, expected {want!r}")

    # ------------------------------------------------------------ invariants

    @invariant()
    def call_reports_are_counted_once(self) -> None:
        if self.lobby is None:
            return
        nodes = getattr(self.lobby, "nodes", None)
        lobbies = list(nodes.values()) if isinstance(nodes, dict) else [self.lobby]
        counted = sum(
            lobby.calls.stats.connected + sum(lobby.calls.stats.failed.values())
            for lobby in lobbies
        )
        if counted != self.call_reports:
            raise InvariantViolation(
                f"core counted {counted} call reports, model {self.call_reports}"
            )

    @invariant()
    def core_agrees_with_model(self) -> None:
        if self.lobby is None:
            return
        view = self.backend.view(self.core)
        if set(view.peers) != set(self.peers):
            raise InvariantViolation(f"peers {sorted(view.peers)} != model {sorted(self.peers)}")
        for pid, state in view.peers.items():
            if state != self.peers[pid].state:
                raise InvariantViolation(f"{pid} is {state}, model says {self.peers[pid].state}")
        if view.per_addr != dict(self.per_addr):
            raise InvariantViolation(f"per-address counts {view.per_addr} != {dict(self.per_addr)}")
        if view.matches != self.matches:
            raise InvariantViolation(f"matches counter {view.matches} != model {self.matches}")

    @invariant()
    def queue_and_rooms_are_disjoint(self) -> None:
        if self.lobby is None:
            return
        view = self.backend.view(self.core)
        in_rooms = [pid for pair in view.rooms.values() for pid in pair]
        both = set(view.queue) & set(in_rooms)
        if both:
            raise InvariantViolation(f"peers both in the queue and a room: {sorted(both)}")
        if len(in_rooms) != len(set(in_rooms)):
            raise InvariantViolation(f"a peer is in two rooms: {view.rooms}")

    @invariant()
    def queue_is_fifo(self) -> None:
        if self.lobby is None:
            return
        view = self.backend.view(self.core)
        if len(view.queue) != len(set(view.queue)):
            raise InvariantViolation(f"duplicates in the queue: {view.queue}")
        for pid in view.queue:
            if view.peers.get(pid) != State.WAITING.value:
                raise InvariantViolation(f"{pid} is queued but {view.peers.get(pid)}")
        times = [view.queued_at[pid] for pid in view.queue]
        if times != sorted(times):
            raise InvariantViolation(f"queue not ordered by entry time: {view.queue} {times}")
        if view.queue != self.queue:
            raise InvariantViolation(f"queue {view.queue}, expected FIFO order {self.queue}")

    @invariant()
    def rooms_have_an_offerer_and_the_answerer_that_waited(self) -> None:
        if self.lobby is None:
            return
        view = self.backend.view(self.core)
        if set(view.rooms) != set(self.rooms):
            raise InvariantViolation(f"rooms {sorted(view.rooms)} != model {sorted(self.rooms)}")
        for room_id, (offerer, answerer) in view.rooms.items():
            model = self.rooms[room_id]
            if offerer == answerer:
                raise InvariantViolation(f"{room_id} pairs {offerer} with itself")
            if (offerer, answerer) != (model.offerer, model.answerer):
                raise InvariantViolation(
                    f"{room_id}: offerer/answerer {offerer}/{answerer}, expected the newcomer "
                    f"{model.offerer} to offer and {model.answerer} (who waited) to answer"
                )
            for pid in (offerer, answerer):
                if view.peers.get(pid) != "matched" or view.peer_room.get(pid) != room_id:
                    raise InvariantViolation(f"{pid} of {room_id} does not know its room")
        matched = sum(1 for state in view.peers.values() if state == "matched")
        if matched != 2 * len(view.rooms):
            raise InvariantViolation(f"{matched} matched peers for {len(view.rooms)} rooms")

    @invariant()
    def no_two_waiting_peers_could_be_paired(self) -> None:
        """Once the ticker has caught up, nobody waits while a compatible peer waits too."""
        if self.lobby is None or self.ticked_through < self.now:
            return
        for i, a in enumerate(self.queue):
            for b in self.queue[i + 1 :]:
                if self._compatible(a, b):
                    raise InvariantViolation(f"{a} and {b} both wait though compatible")

    @invariant()
    def next_deadline_is_never_late(self) -> None:
        """The ticker is woken no later than the first queue timeout or cooldown end due."""
        if self.lobby is None:
            return
        due: list[float] = []
        if self.cfg.queue_timeout > 0 and self.queue:
            due.append(self.peers[self.queue[0]].queued_at + self.cfg.queue_timeout)
        due += [end for end in self.cooldowns.values() if end > self.ticked_through]
        deadline = self.core.next_deadline()
        if due and (deadline is None or deadline > min(due)):
            raise InvariantViolation(f"next_deadline() {deadline} is later than {min(due)}")


def _text(frame: object) -> object:
    return frame.decode() if isinstance(frame, bytes) else frame


def _matches(got: object, want: object) -> bool:
    """A sent frame against the model's expectation (a dict from docs/protocol.md, or raw bytes)."""
    if not isinstance(want, dict):
        # Relayed unchanged: the same text, whether it travels as bytes or, through
        # another node, as str.
        return _text(got) == _text(want)
    try:
        value = json.loads(got)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    if not isinstance(value, dict):
        return False
    if want.get("type") == "error":
        codes = want["code"]
        codes = codes if isinstance(codes, frozenset) else {codes}
        message = value.get("message")
        return (
            set(value) == {"type", "code", "message"}
            and value["type"] == "error"
            and value.get("code") in codes
            and isinstance(message, str)
            and bool(message)
        )
    return value == want


# ---------------------------------------------------------------- the Redis backend


def _cluster_view(cluster: RedisCluster) -> CoreView:
    """The two nodes' cores merged, with the queue as Redis holds it (the shared FIFO)."""
    peers, queued_at, peer_room, per_addr = {}, {}, {}, Counter[str]()
    rooms: dict[str, tuple[str, str]] = {}
    cooldowns = matches = 0
    for node in cluster.nodes.values():
        for pid, peer in node.peers.items():
            peers[pid] = peer.state.value
            peer_room[pid] = peer.room.id if peer.room else None
            if pid in node.queue:
                queued_at[pid] = peer.queued_at
        rooms.update({rid: (r.offerer.id, r.answerer.id) for rid, r in node.rooms.items()})
        per_addr.update(node._per_addr)
        cooldowns += len(node._cooldowns)
        matches += node.counters.matches
    return CoreView(
        peers=peers,
        queue=cluster.shared_queue(),
        queued_at=queued_at,
        rooms=rooms,
        peer_room=peer_room,
        per_addr=dict(per_addr),
        cooldown_entries=cooldowns,
        matches=matches,
    )


def redis_backend(url: str) -> Backend:
    return Backend(
        "redis",
        lambda cfg, ids: RedisCluster(url, cfg, ids),  # type: ignore[arg-type,return-value]
        _cluster_view,  # type: ignore[arg-type]
    )


class ClusterMachine(LobbyMachine):
    """The same machine over two nodes sharing a Redis queue.

    A connection cap is per node in a cluster, so the global cap is left
    roomy here; per-address caps still bite, since an address stays on one node.
    """

    @initialize(
        cooldown=st.sampled_from([10.0, 10.0, 1.0, 0.0]),
        queue_timeout=st.sampled_from([60.0, 60.0, 0.0, 5.0]),
        max_queue=st.sampled_from([10_000, 10_000, 3, 2, 1]),
        per_ip=st.sampled_from([0, 20, 20, 2]),
        rate=st.sampled_from([1.0, 5.0]),
        burst=st.sampled_from([1, 3, 5]),
    )
    def configure_cluster(
        self,
        cooldown: float,
        queue_timeout: float,
        max_queue: int,
        per_ip: int,
        rate: float,
        burst: int,
    ) -> None:
        self.configure(cooldown, queue_timeout, max_queue, 10_000, per_ip, rate, burst)

    def teardown(self) -> None:
        if self.lobby is not None:
            self.lobby.close()  # type: ignore[attr-defined]


# ClusterMachine draws its own configuration; the base one must not run as well.
ClusterMachine.configure = LobbyMachine.configure.__wrapped__  # type: ignore[attr-defined]


@pytest.mark.parametrize("rate_limited", [False, True], ids=["plain", "ratelimited"])
def test_the_same_machine_holds_over_two_nodes_on_redis(redis_url: str, rate_limited: bool) -> None:
    name = f"ClusterMachine{'_ratelimited' if rate_limited else ''}"
    attrs = {"backend": redis_backend(redis_url), "rate_limited": rate_limited}
    cluster_machine = type(name, (ClusterMachine,), attrs)
    budget = profile()
    run_state_machine_as_test(
        cluster_machine,
        settings=settings(budget, max_examples=max(10, budget.max_examples // 4)),
    )


# ---------------------------------------------------------------- the tests


def machine(
    backend: Backend = MEMORY,
    *,
    rate_limited: bool = False,
    faults: frozenset[Fault] = frozenset(),
) -> type[LobbyMachine]:
    name = f"LobbyMachine_{backend.name}{'_ratelimited' if rate_limited else ''}"
    if faults:
        name += "_" + "_".join(sorted(f.name for f in faults))
    attrs = {"backend": backend, "rate_limited": rate_limited, "faults": faults}
    return type(name, (LobbyMachine,), attrs)


TestLobbyMemory = seeded(machine(MEMORY)).TestCase
TestLobbyMemory.settings = profile()
TestLobbyMemoryRateLimited = seeded(machine(MEMORY, rate_limited=True)).TestCase
TestLobbyMemoryRateLimited.settings = profile()


# Each deliberate bug of lobby.Fault must be caught, and by the right check:
# proof that the invariants above bite. Derandomized so CI never flakes.
FAULT_SETTINGS = settings(
    _COMMON,
    max_examples=400,
    stateful_step_count=40,
    derandomize=True,
    report_multiple_bugs=False,
    # Detection is the point here; shrinking a failure would only cost CI time.
    phases=[Phase.generate],
)
FAULTS_AND_SYMPTOMS = [
    (Fault.SWAP_ROLES, r"matched.*expected .*'role': '(answerer|offerer)'"),
    (Fault.CROSS_WIRE, r"^relay: frames went to"),
    (Fault.DROP_CANDIDATES, r"^relay: frames went to \[\]"),
    (Fault.NEVER_MATCH, r"expected .*'type': 'matched'"),
    (Fault.LEAK_ON_DISCONNECT, r"second disconnect of the same peer|peers .* != model"),
]


def test_double_enqueue_is_caught_by_the_queue_room_invariant() -> None:
    """A matched answerer that stays queued breaks queue/room exclusivity."""
    broken = machine(MEMORY, faults=frozenset({Fault.DOUBLE_ENQUEUE}))
    with pytest.raises(InvariantViolation, match="peers both in the queue and a room"):
        run_state_machine_as_test(broken, settings=FAULT_SETTINGS)


@pytest.mark.parametrize(("fault", "symptom"), FAULTS_AND_SYMPTOMS, ids=lambda v: str(v))
def test_a_deliberately_broken_core_is_caught(fault: Fault, symptom: str) -> None:
    broken = machine(MEMORY, faults=frozenset({fault}))
    with pytest.raises(InvariantViolation, match=symptom):
        run_state_machine_as_test(broken, settings=FAULT_SETTINGS)


def test_deep_nesting_in_an_ignored_field_is_an_error_frame() -> None:
    lobby = Lobby(LobbyConfig(rate_limit=0))
    lobby.connect("a", 0.0)
    depth = 5000
    frame = '{"type":"join","extra":' + "[" * depth + "]" * depth + "}"
    effects = lobby.receive("a", frame, 0.0)
    sends = [e for e in effects if isinstance(e, Send)]
    assert len(sends) == 1
    assert json.loads(sends[0].data)["code"] in {INVALID_JSON, INVALID_MESSAGE}


def test_invalid_utf8_in_a_string_is_an_error_frame() -> None:
    lobby = Lobby(LobbyConfig(rate_limit=0))
    lobby.connect("a", 0.0)
    effects = lobby.receive("a", b'{"type":"\xff"}', 0.0)
    sends = [e for e in effects if isinstance(e, Send)]
    assert len(sends) == 1
    assert json.loads(sends[0].data)["code"] == INVALID_JSON


def test_no_cooldown_timer_outlives_everyone() -> None:
    """A pair that meets and parts again before the ticker ran leaves two heap entries."""
    join, leave = p.encode_client(p.Join()), p.encode_client(p.Leave())
    lobby = Lobby(LobbyConfig(rate_limit=0, rematch_cooldown=10.0))
    for peer in ("a", "b"):
        lobby.connect(peer, 0.0)
    for now in (0.0, 10.0):  # the ticker has not run at 10.0 yet: the pair meets again
        lobby.receive("a", join, now)
        lobby.receive("b", join, now)
        lobby.receive("b", leave, now)
    lobby.disconnect("a", 10.0)
    lobby.disconnect("b", 10.0)
    assert not lobby.peers
    assert lobby.next_deadline() is None
    assert not lobby._cooldowns


def test_model_matches_protocol_error_shape() -> None:
    """The comparison itself bites: a wrong code or an empty message is not accepted."""
    good = p.encode(p.Error(code="invalid-state", message="join while matched"))
    assert _matches(good, _error("invalid-state"))
    assert not _matches(good, _error("invalid-json"))
    assert not _matches(
        p.encode(p.Error(code="invalid-state", message="")), _error("invalid-state")
    )
    assert _matches(b'{"type":"offer"}', '{"type":"offer"}')  # same text, via another node
    assert not _matches(b'{"type":"offer"}', '{"type": "offer"}')  # relayed, but changed

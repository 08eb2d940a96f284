"""Locust users that speak the drift signaling protocol (docs/protocol.md) over WebSockets.

Runs on its own::

    DRIFT_SCENARIO=steady locust -f loadtest/locustfile.py --host http://127.0.0.1:8080

or through ``drift loadtest SCENARIO``, which also starts the server, samples its
memory and writes the report. ``DRIFT_SCENARIO`` is a shipped scenario name or a
path to a ``.toml`` file (default ``smoke``); it sets the users' behaviour and, for
scenarios with ``[[stages]]``, the load shape.

Each honest user: connect (``connect``: TCP + upgrade + ``welcome``), ``join``,
wait for ``matched`` (``queue``: join or next -> matched), exchange offer/answer
and trickled candidates of realistic size with its partner (``relay``: offer
sent -> answer received, measured by the offerer), hold, then ``next``,
``leave`` or disconnect as the scenario's shares say. Every ``error`` frame
and unexpected close is a locust failure whose error is the protocol code
(``queue-timeout``, ``close-1008``...), so locust's failure table groups them
by code. Abusive users (``abuse_share``) report under the ``abuse`` type as
successes: their errors are the expected outcome.

This file runs on gevent: it imports only drift modules that do not import
asyncio (``drift.core.protocol`` is msgspec only, ``drift.loadtest.scenario`` is
tomllib + msgspec).
"""

from __future__ import annotations

import contextlib
import csv
import os
import random
import struct
import time
from collections.abc import Callable
from typing import IO, Any, Final, cast

import gevent
import msgspec
import websocket
from locust import LoadTestShape, User, between, constant, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from drift.client.urls import ws_url
from drift.core import protocol as p
from drift.loadtest.scenario import Scenario, load_scenario

SCENARIO: Final[Scenario] = load_scenario(os.environ.get("DRIFT_SCENARIO", "smoke"))
#: Set by ``drift loadtest``: where the master (or the single process) writes every
#: sample, so the report computes exact percentiles rather than locust's rounded ones.
SAMPLES_PATH: Final = os.environ.get("DRIFT_LOADTEST_SAMPLES", "")
SAMPLE_FIELDS: Final = ("t", "kind", "name", "ms", "error")
_MESSAGE: Final = "drift-samples"

Row = tuple[float, str, str, float, str]


class Closed(Exception):
    """The server closed the connection (``code`` None: the TCP stream just ended)."""

    def __init__(self, code: int | None) -> None:
        super().__init__(code)
        self.code = code

    @property
    def label(self) -> str:
        return f"close-{self.code}" if self.code else "connection-lost"


class Timeout(Exception):
    pass


class BadFrame(Exception):
    """A frame that breaks the contract: binary, or JSON that is not a server message."""


# ------------------------------------------------------------------ samples


class SampleSink:
    """Every sample of this process; forwarded to the master, which appends them to a file."""

    def __init__(self) -> None:
        self.buffer: list[Row] = []
        self.environment: Environment | None = None
        self._file: IO[str] | None = None
        self._writer: Any = None

    def add(self, kind: str, name: str, ms: float, error: str) -> None:
        self.buffer.append((round(time.time(), 3), kind, name, round(ms, 3), error))

    def flush(self) -> None:
        if not self.buffer or self.environment is None or self.environment.runner is None:
            return
        batch, self.buffer = self.buffer, []
        # On a worker this crosses to the master; locally it calls write() directly.
        self.environment.runner.send_message(_MESSAGE, batch)

    def write(self, rows: list[list[Any]]) -> None:
        if not SAMPLES_PATH:
            return
        if self._file is None:
            self._file = open(SAMPLES_PATH, "w", newline="", encoding="utf-8")  # noqa: SIM115
            self._writer = csv.writer(self._file)
            self._writer.writerow(SAMPLE_FIELDS)
        self._writer.writerows(rows)
        self._file.flush()

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None


SINK: Final = SampleSink()
# locust's event hooks are untyped; reached through Any so the rest stays strictly typed.
_EVENTS: Final[Any] = events
_REQUEST: Final[Any] = _EVENTS.request


def record(kind: str, name: str, ms: float, error: str | None = None, length: int = 0) -> None:
    """One locust request event (locust's stats, CSV, HTML) and one raw sample."""
    _REQUEST.fire(
        request_type=kind,
        name=name,
        response_time=ms,
        response_length=length,
        exception=error,
        context={},
    )
    SINK.add(kind, name, ms, error or "")


def _on_init(environment: Environment, **_: Any) -> None:
    SINK.environment = environment
    runner = environment.runner
    if runner is None:
        return
    if not isinstance(runner, WorkerRunner):
        runner.register_message(_MESSAGE, lambda environment, msg, **kw: SINK.write(msg.data))
    if not isinstance(runner, MasterRunner):
        gevent.spawn(_flush_forever)


def _flush_forever() -> None:
    while True:
        gevent.sleep(1.0)
        SINK.flush()


def _on_test_stop(**_: Any) -> None:
    SINK.flush()


def _on_quitting(**_: Any) -> None:
    SINK.close()


_EVENTS.init.add_listener(_on_init)
_EVENTS.test_stop.add_listener(_on_test_stop)
_EVENTS.quitting.add_listener(_on_quitting)


# ------------------------------------------------------------------ wire


class Connection:
    """A synchronous WebSocket (gevent makes it cooperative) that speaks drift frames."""

    def __init__(self, ws: websocket.WebSocket) -> None:
        self.ws = ws

    @classmethod
    def open(cls, url: str, timeout: float) -> tuple[Connection, p.Welcome]:
        deadline = time.monotonic() + timeout
        ws = websocket.create_connection(
            url,
            timeout=timeout,
            suppress_origin=True,  # a non-browser client sends no Origin (docs/protocol.md)
            enable_multithread=False,
            skip_utf8_validation=True,  # pure-Python validation would dominate the client CPU
        )
        conn = cls(ws)
        try:
            first = conn.recv(deadline)
        except BaseException:
            conn.close()
            raise
        if not isinstance(first, p.Welcome):
            conn.close()
            raise BadFrame(f"expected welcome, got {type(first).__name__}")
        return conn, first

    def send(self, msg: p.ClientMessage) -> None:
        self.send_raw(p.encode_client(msg))

    def send_raw(self, data: bytes | str, binary: bool = False) -> None:
        opcode = websocket.ABNF.OPCODE_BINARY if binary else websocket.ABNF.OPCODE_TEXT
        try:
            self.ws.send(data, opcode)
        except (websocket.WebSocketConnectionClosedException, OSError) as exc:
            raise Closed(None) from exc

    def recv(self, deadline: float) -> p.ServerMessage:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Timeout
        self.ws.settimeout(remaining)
        try:
            opcode, data = self.ws.recv_data()
        except websocket.WebSocketTimeoutException as exc:
            raise Timeout from exc
        except (websocket.WebSocketException, OSError) as exc:
            raise Closed(None) from exc
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise Closed(struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None)
        if opcode != websocket.ABNF.OPCODE_TEXT:
            raise BadFrame("binary frame from the server")
        try:
            return p.decode_server(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise BadFrame(str(exc)) from exc

    def close(self) -> None:
        """Send a close frame and drop the socket, without waiting for the server's reply.

        Not ``WebSocket.close()``: its bare ``except:`` swallows the GreenletExit
        locust uses to stop a user, which then lives on and blocks locust's exit.
        """
        with contextlib.suppress(websocket.WebSocketException, OSError):
            self.ws.send_close()  # already gone is as good as closed
        cast(Any, self.ws).shutdown()  # untyped in websocket-client


# ------------------------------------------------------------------ fake signaling payloads


def fake_sdp(kind: str, size: int, rng: random.Random) -> str:
    """SDP-looking text of about ``size`` bytes: the server relays it unchanged, never parses."""
    head = (
        f"v=0\r\no=- {rng.getrandbits(62)} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        "a=group:BUNDLE 0 1 2\r\na=msid-semantic: WMS\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 100 101\r\nc=IN IP4 0.0.0.0\r\n"
        f"a=ice-ufrag:{rng.getrandbits(32):08x}\r\na=ice-pwd:{rng.getrandbits(128):032x}\r\n"
        f"a=fingerprint:sha-256 {':'.join(f'{rng.getrandbits(8):02X}' for _ in range(32))}\r\n"
        f"a=setup:{'actpass' if kind == 'offer' else 'active'}\r\na=mid:0\r\n"
    )
    lines = [head]
    n = len(head)
    pt = 96
    while n < size:
        line = f"a=rtpmap:{pt} VP8/90000\r\na=rtcp-fb:{pt} nack pli\r\na=fmtp:{pt} apt={pt - 1}\r\n"
        lines.append(line)
        n += len(line)
        pt = 96 if pt >= 127 else pt + 1
    return "".join(lines)[:size]


def fake_candidate(i: int, rng: random.Random) -> p.CandidateInit:
    port = rng.randrange(40_000, 60_000)
    return p.CandidateInit(
        candidate=f"candidate:{rng.getrandbits(31)} 1 udp {2122260223 - i} 127.0.0.1 {port} "
        f"typ host generation 0 ufrag {rng.getrandbits(16):04x} network-cost 999",
        sdpMid="0",
        sdpMLineIndex=0,
    )


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


def _connect_error(exc: Exception) -> str:
    if isinstance(exc, websocket.WebSocketBadStatusException):
        return f"http-{exc.status_code}"  # e.g. 403 (Origin) or 503 (draining)
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    return type(exc).__name__


_JOIN: Final = p.Join()
_NEXT: Final = p.Next()
_LEAVE: Final = p.Leave()


# ------------------------------------------------------------------ users


def _think_time() -> Callable[..., float]:
    # Jittered, so users that started together drift apart (as real ones would).
    return between(SCENARIO.think_s * 0.5, SCENARIO.think_s * 1.5)


class SignalingUser(User):
    """An honest peer: its latencies and failures are the measure."""

    weight = max(1, round((1.0 - SCENARIO.abuse_share) * 1000))
    think_time = _think_time()

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.url = ws_url(self.host or "http://127.0.0.1:8080")
        self.rng = random.Random()
        self.conn: Connection | None = None
        self.queued_at: float | None = None  # perf_counter of our last join/next
        self.phase = "idle"
        self.last_end = ""
        # A partner-left that crosses our own frames on the wire (next, leave, or
        # relays to a partner who just vanished) makes the server answer those with
        # invalid-state: an inherent race of the protocol, not a failure. Replies to
        # frames of an ended room all arrive before our next waiting/matched.
        self.excused = 0
        self.relays_sent = 0
        self.role = ""
        self.next_session_at = 0.0

    def wait_time(self) -> float:
        """``think_s`` (jittered), or what is left of the ``pacing_s`` period."""
        if not SCENARIO.pacing_s:
            return float(self.think_time())
        self.next_session_at = max(self.next_session_at + SCENARIO.pacing_s, time.perf_counter())
        return self.next_session_at - time.perf_counter()

    def on_start(self) -> None:
        if SCENARIO.pacing_s:
            # locust starts users in batches, once per second; with a fixed pacing
            # each batch would keep arriving together (locust's constant_pacing
            # counts from when the user was created), and a peer left over from one
            # batch would wait a whole second for the next. Real arrivals are spread
            # out: the first session starts at a random point of the period.
            self.next_session_at = time.perf_counter() + self.rng.uniform(0, SCENARIO.pacing_s)
            gevent.sleep(self.next_session_at - time.perf_counter())

    def on_stop(self) -> None:
        self._drop()

    def _drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        self.queued_at = None
        self.phase = "idle"
        self.excused = 0

    @task
    def session(self) -> None:
        try:
            if self.conn is None and not self._connect():
                return
            assert self.conn is not None
            if self.queued_at is None:
                self.conn.send(_JOIN)
                self.queued_at = time.perf_counter()
            while self._await_match() and self._talk():
                pass  # ended with `next`: already queued again, so no think time
        except Closed as exc:
            kind = self.phase if self.phase in ("queue", "relay") else "error"
            since = self.queued_at if kind == "queue" and self.queued_at else time.perf_counter()
            record(kind, kind if kind != "error" else exc.label, _ms(since), exc.label)
            self._drop()
        except BadFrame as exc:
            record("error", "bad-frame", 0.0, f"bad-frame: {str(exc)[:80]}")
            self._drop()

    def _connect(self) -> bool:
        start = time.perf_counter()
        self.phase = "connect"
        try:
            self.conn, _ = Connection.open(self.url, SCENARIO.connect_timeout_s)
        except Closed as exc:
            record("connect", "connect", _ms(start), exc.label)
            return False
        except Timeout:
            record("connect", "connect", _ms(start), "timeout")
            return False
        except (websocket.WebSocketException, OSError) as exc:
            record("connect", "connect", _ms(start), _connect_error(exc))
            return False
        record("connect", "connect", _ms(start))
        self.phase = "idle"
        return True

    def _error(self, msg: p.Error) -> None:
        if msg.code == p.ErrorCode.INVALID_STATE and self.excused:
            self.excused -= 1
            if self.last_end == "next" and self.queued_at is not None:
                # Our `next` found us idle (the partner left first): join instead.
                assert self.conn is not None
                self.conn.send(_JOIN)
                self.queued_at = time.perf_counter()
            return
        record("error", msg.code, 0.0, msg.code)

    def _await_match(self) -> bool:
        """Wait for ``matched``; record ``queue``. False: not matched (now idle)."""
        assert self.conn is not None and self.queued_at is not None
        self.phase = "queue"
        deadline = time.monotonic() + SCENARIO.match_timeout_s
        while True:
            try:
                msg = self.conn.recv(deadline)
            except Timeout:
                record("queue", "queue", _ms(self.queued_at), "timeout")
                self.conn.send(_LEAVE)
                self.queued_at = None
                return False
            if isinstance(msg, p.Matched):
                record("queue", "queue", _ms(self.queued_at))
                self.queued_at = None
                self.role = msg.role
                self.excused = self.relays_sent = 0
                return True
            if isinstance(msg, p.Waiting):
                self.excused = 0
                continue
            if isinstance(msg, p.Error):
                if msg.code in (p.ErrorCode.QUEUE_TIMEOUT, p.ErrorCode.QUEUE_FULL):
                    record("queue", "queue", _ms(self.queued_at), msg.code)
                    self.queued_at = None
                    return False
                self._error(msg)
            elif isinstance(msg, p.PartnerLeft):
                self.excused += 1  # the previous room, ended by both sides at once
            # relays still in flight from the previous room: nothing to do

    def _talk(self) -> bool:
        """Exchange offer/answer/candidates, hold, end. True: ended with ``next`` (queued)."""
        conn = self.conn
        assert conn is not None
        self.phase = "relay"
        deadline = time.monotonic() + SCENARIO.relay_timeout_s
        if self.role == "offerer":
            start = time.perf_counter()
            self._send_description("offer")
            if not self._until(p.Answer, deadline, measure_from=start):
                return False
        else:
            if not self._until(p.Offer, deadline, measure_from=None):
                return False
            self._send_description("answer")
        self.phase = "hold"
        hold_until = time.monotonic() + SCENARIO.hold_s * self.rng.uniform(0.5, 1.5)
        while True:
            try:
                msg = conn.recv(hold_until)
            except Timeout:
                break
            if isinstance(msg, p.PartnerLeft):
                self.excused += self.relays_sent
                self.phase = "idle"
                return False
            if isinstance(msg, p.Error):
                self._error(msg)
        return self._end()

    def _send_description(self, kind: str) -> None:
        assert self.conn is not None
        sdp = fake_sdp(kind, SCENARIO.sdp_bytes, self.rng)
        if kind == "offer":
            self.conn.send(p.Offer(sdp=p.SessionDescription(type="offer", sdp=sdp)))
        else:
            self.conn.send(p.Answer(sdp=p.SessionDescription(type="answer", sdp=sdp)))
        for i in range(SCENARIO.candidates):
            self.conn.send(p.IceCandidate(candidate=fake_candidate(i, self.rng)))
        if SCENARIO.candidates:
            self.conn.send(p.IceCandidate(candidate=None))  # end of candidates
        self.relays_sent = 1 + SCENARIO.candidates + bool(SCENARIO.candidates)

    def _until(
        self, kind: type[p.Offer | p.Answer], deadline: float, measure_from: float | None
    ) -> bool:
        """Read until the partner's offer/answer arrives; False when the room is gone."""
        assert self.conn is not None
        while True:
            try:
                msg = self.conn.recv(deadline)
            except Timeout:
                if measure_from is not None:
                    record("relay", "relay", _ms(measure_from), "timeout")
                self.conn.send(_LEAVE)
                self.last_end = "leave"
                self.phase = "idle"
                return False
            if isinstance(msg, kind):
                if measure_from is not None:
                    record("relay", "relay", _ms(measure_from), length=len(msg.sdp.sdp))
                return True
            if isinstance(msg, p.PartnerLeft):
                self.excused += self.relays_sent
                self.phase = "idle"
                return False
            if isinstance(msg, p.Error):
                self._error(msg)

    def _end(self) -> bool:
        assert self.conn is not None
        self.phase = "idle"
        pick = self.rng.random()
        if pick < SCENARIO.next_share:
            self.last_end = "next"
            self.conn.send(_NEXT)
            self.queued_at = time.perf_counter()
            return True
        if pick < SCENARIO.next_share + SCENARIO.leave_share:
            self.last_end = "leave"
            self.conn.send(_LEAVE)
            return False
        self._drop()
        return False


#: Frames of an abusive client: each breaks a different rule of docs/protocol.md.
_JUNK: Final[tuple[tuple[bytes, bool], ...]] = (
    (b"{not json", False),
    (b"[1, 2, 3]", False),
    (b'{"type": 7}', False),
    (b'{"type": "dance"}', False),
    (b'{"type": "offer", "sdp": {"type": "answer", "sdp": "x"}}', False),
    (b'{"type": "leave"}', False),
    (b'{"type": "ice-candidate", "candidate": null}', False),
    (b"\x00\x01\x02", True),
)
_OVERSIZE: Final = b'{"type": "offer", "pad": "' + b"x" * (p.MAX_FRAME_BYTES + 10) + b'"}'


class AbusiveUser(User):
    """Floods bursts over the rate limit, malformed and oversized frames; never joins.

    It never joins, so no honest user is matched with it: what it can do to the
    others is only through the server's shared CPU and memory.
    """

    weight = max(1, round(SCENARIO.abuse_share * 1000))
    wait_time = constant(1.0)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.url = ws_url(self.host or "http://127.0.0.1:8080")
        self.rng = random.Random()
        self.conn: Connection | None = None

    def on_stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None

    @task
    def flood(self) -> None:
        if self.conn is None:
            start = time.perf_counter()
            try:
                self.conn, _ = Connection.open(self.url, SCENARIO.connect_timeout_s)
            except (Closed, Timeout, BadFrame, websocket.WebSocketException, OSError) as exc:
                label = exc.label if isinstance(exc, Closed) else type(exc).__name__
                record("abuse", f"connect-{label}", _ms(start))
                return
            record("abuse", "connect", _ms(start))
        conn = self.conn
        try:
            if self.rng.random() < 0.05:
                conn.send_raw(_OVERSIZE)  # expect close 1009
            for _ in range(60):  # over the default burst of 40: rate-limited, later 1008
                frame, binary = self.rng.choice(_JUNK)
                conn.send_raw(frame, binary=binary)
            until = time.monotonic() + 0.5
            while True:
                msg = conn.recv(until)
                if isinstance(msg, p.Error):
                    record("abuse", msg.code, 0.0)
        except Timeout:
            return
        except Closed as exc:
            record("abuse", exc.label, 0.0)
        except BadFrame:
            record("abuse", "bad-frame", 0.0)
        conn.close()
        self.conn = None


if SCENARIO.abuse_share == 0:
    AbusiveUser.abstract = True  # locust only runs non-abstract user classes


if SCENARIO.stages:
    _STAGES: Final = sorted(SCENARIO.stages, key=lambda s: s.at_s)

    class StagedShape(LoadTestShape):
        """The scenario's ``[[stages]]``: at ``at_s`` seconds, go to ``users`` at ``spawn_rate``."""

        def tick(self) -> tuple[int, float] | None:
            now: float = cast(Any, self).get_run_time()
            if now >= SCENARIO.duration_s:
                return None
            current = (SCENARIO.users, SCENARIO.spawn_rate)
            for stage in _STAGES:
                if stage.at_s <= now:
                    current = (stage.users, stage.spawn_rate)
            return current

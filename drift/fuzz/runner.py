"""Drive the fuzz: many bad connections, a few bursting ones, and honest pairs.

Verdict (every item is a problem in :attr:`FuzzReport.problems`):

- every fuzz frame gets its documented answer — an ``error`` frame with one of
  the frame's codes, or a close with one of its close codes — in order, within
  ``reply_timeout``; a fuzz connection (never joined) receives nothing else;
- burst frames are answered like that too, or with ``rate-limited``, and a
  burst may end only with close 1008;
- each honest pair, matched with each other, gets every relayed frame,
  unchanged and in order, and nothing else (with several pairs, a relay that
  crosses rooms shows up here);
- ``/stats`` is back to where it was (connections, waiting, rooms) once every
  connection has gone, and ``matches_total`` counted the honest pairs.

Unhandled exceptions in the server's log are the caller's to check: the runner
only sees the wire (the CLI watches the log of the server it embeds).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

from drift.client import urls
from drift.core import protocol as p
from drift.fuzz.mutate import FrameSource, FuzzFrame
from drift.fuzz.rawws import HandshakeFailed, Incoming, RawWebSocket

RATE_LIMITED: Final = p.ErrorCode.RATE_LIMITED.value
POLICY_VIOLATION: Final = int(p.CloseCode.POLICY_VIOLATION)
_MAX_LISTED: Final = 50  # problems kept verbatim; the rest are only counted


@dataclass(frozen=True)
class FuzzConfig:
    url: str
    seed: int
    #: fuzz connections sending mutated frames, each waiting for its answers
    connections: int = 8
    #: total fuzz frames (messages) to try; the run also stops at ``duration``
    frames: int = 10_000
    duration: float = 60.0
    #: frames in flight per fuzz connection (answers arrive in order)
    window: int = 8
    #: connections that send ``burst_frames`` frames without waiting (rate limiting)
    bursts: int = 0
    burst_frames: int = 200
    #: seconds between an honest pair's relay rounds (4 frames per round)
    honest_interval: float = 0.05
    honest_pairs: int = 1
    reply_timeout: float = 5.0
    kinds: frozenset[str] | None = None


@dataclass
class FuzzReport:
    seed: int
    url: str
    frames_tried: int = 0
    wire_frames: int = 0
    bytes_sent: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    closes: Counter[int] = field(default_factory=Counter)
    connections: int = 0
    burst_frames: int = 0
    burst_errors: Counter[str] = field(default_factory=Counter)
    burst_closes: Counter[int] = field(default_factory=Counter)
    honest_relays: int = 0
    stats_before: dict[str, Any] = field(default_factory=dict)
    stats_after: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < _MAX_LISTED:
            self.problems.append(text)

    def merge(self, other: FuzzReport) -> None:
        """Fold another run (e.g. the burst server of an embedded run) into this one."""
        self.frames_tried += other.frames_tried
        self.wire_frames += other.wire_frames
        self.bytes_sent += other.bytes_sent
        for mine, theirs in (
            (self.kinds, other.kinds),
            (self.errors, other.errors),
            (self.burst_errors, other.burst_errors),
        ):
            mine.update(theirs)
        self.closes.update(other.closes)
        self.burst_closes.update(other.burst_closes)
        self.connections += other.connections
        self.burst_frames += other.burst_frames
        self.honest_relays += other.honest_relays
        self.elapsed_s += other.elapsed_s
        for text in other.problems:
            self.problem(text)
        self.problem_count += other.problem_count - len(other.problems)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "seed": self.seed,
            "url": self.url,
            "frames_tried": self.frames_tried,
            "wire_frames": self.wire_frames,
            "bytes_sent": self.bytes_sent,
            "kinds": dict(self.kinds),
            "errors": dict(self.errors),
            "closes": {str(k): v for k, v in self.closes.items()},
            "connections": self.connections,
            "burst_frames": self.burst_frames,
            "burst_errors": dict(self.burst_errors),
            "burst_closes": {str(k): v for k, v in self.burst_closes.items()},
            "honest_relays": self.honest_relays,
            "stats_before": self.stats_before,
            "stats_after": self.stats_after,
            "elapsed_s": round(self.elapsed_s, 3),
            "problem_count": self.problem_count,
            "problems": self.problems,
        }


class _Budget:
    """Frames left for one fuzz connection, and the run's time limit.

    Each connection has its own share and its own seeded generator, so a seed
    replays exactly the same frames on the same connections (unless the time
    limit cuts the run short).
    """

    def __init__(self, frames: int, deadline: float) -> None:
        self.left = frames
        self.deadline = deadline

    def take(self) -> bool:
        if self.left <= 0 or time.monotonic() >= self.deadline:
            return False
        self.left -= 1
        return True


def stats_url(ws_url: str) -> str:
    return urls.endpoint(ws_url, "/stats")


async def run_fuzz(cfg: FuzzConfig, on_progress: Callable[[int], None] | None = None) -> FuzzReport:
    """One run against one server; see the module docstring for the verdict."""
    report = FuzzReport(seed=cfg.seed, url=cfg.url)
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=cfg.reply_timeout)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        report.stats_before = await _stats(http, cfg.url, report)
        # One pair at a time: each first peer must find the queue empty.
        pairs = [_HonestPair(cfg, report, http, i) for i in range(cfg.honest_pairs)]
        for pair in pairs:
            await pair.start()
        deadline = time.monotonic() + cfg.duration
        share, extra = divmod(cfg.frames, max(1, cfg.connections))
        rng = random.Random(cfg.seed)
        workers = [
            _fuzz_connection(
                cfg,
                random.Random(rng.getrandbits(64)),
                _Budget(share + (i < extra), deadline),
                report,
                on_progress,
            )
            for i in range(cfg.connections)
        ]
        workers += [
            _burst_connection(cfg, random.Random(rng.getrandbits(64)), report)
            for _ in range(cfg.bursts)
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            await asyncio.gather(*(pair.stop() for pair in pairs))
        await _check_stats_settle(http, cfg, report)
    report.elapsed_s = time.monotonic() - started
    return report


# ---------------------------------------------------------------- fuzz connections


async def _open(cfg: FuzzConfig, report: FuzzReport) -> RawWebSocket | None:
    try:
        ws = await RawWebSocket.connect(cfg.url, cfg.reply_timeout)
    except (OSError, TimeoutError, HandshakeFailed) as exc:
        report.problem(f"cannot open a fuzz connection: {exc!r}")
        return None
    report.connections += 1
    first = await _recv(ws, cfg)
    welcome = _json(first)
    if welcome is None or welcome.get("type") != "welcome":
        what = f"close {first.code}" if first.kind == "close" else repr(first)[:200]
        report.problem(f"a new connection got {what} instead of welcome (per-IP cap?)")
        await ws.close()
        return None
    return ws


async def _recv(ws: RawWebSocket, cfg: FuzzConfig) -> Incoming:
    try:
        return await ws.recv(cfg.reply_timeout)
    except TimeoutError:
        return Incoming("timeout")


def _json(msg: Incoming) -> dict[str, Any] | None:
    if msg.kind != "text":
        return None
    try:
        value = json.loads(msg.data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


async def _send(ws: RawWebSocket, frame: FuzzFrame, report: FuzzReport) -> bool:
    """Write every wire frame of one fuzz message; False once the socket is gone."""
    try:
        for wire in frame.frames:
            await ws.send(wire.opcode, wire.payload, fin=wire.fin, rsv=wire.rsv)
            report.wire_frames += 1
            report.bytes_sent += len(wire.payload)
    except (ConnectionError, RuntimeError):
        return False
    return True


def _judge(frame: FuzzFrame, msg: Incoming, report: FuzzReport, *, burst: bool = False) -> bool:
    """Record the answer to ``frame``; True if the connection is still open."""
    errors = report.burst_errors if burst else report.errors
    closes = report.burst_closes if burst else report.closes
    value = _json(msg)
    if value is not None and value.get("type") == "error":
        code = value.get("code")
        message = value.get("message")
        errors[str(code)] += 1
        if not isinstance(message, str) or not message:
            report.problem(f"{frame.kind}: error frame without a message: {value}")
        if not (frame.accepts_error(str(code)) or code == RATE_LIMITED):
            report.problem(
                f"{frame.kind}: answered {code!r}, documented {sorted(frame.error_codes)} "
                f"(frame {_preview(frame)})"
            )
        return True
    if msg.kind in ("close", "eof"):
        closes[msg.code or 0] += 1
        if msg.kind == "eof" or msg.code is None:
            report.problem(f"{frame.kind}: connection dropped without a close frame")
        elif not (frame.accepts_close(msg.code) or msg.code == POLICY_VIOLATION):
            documented = sorted(frame.close_codes) or "an error frame"
            report.problem(
                f"{frame.kind}: closed with {msg.code}, documented {documented} "
                f"(frame {_preview(frame)})"
            )
        return False
    if msg.kind == "timeout":
        report.problem(f"{frame.kind}: no answer within the reply timeout ({_preview(frame)})")
        return False
    report.problem(f"{frame.kind}: unexpected answer {msg.kind} {msg.data[:200]!r}")
    return True


def _preview(frame: FuzzFrame) -> str:
    head = frame.frames[0].payload[:60] if frame.frames else b""
    return f"{len(frame.frames)} wire frame(s), {frame.size} bytes, {head!r}"


async def _fuzz_connection(
    cfg: FuzzConfig,
    rng: random.Random,
    budget: _Budget,
    report: FuzzReport,
    on_progress: Callable[[int], None] | None,
) -> None:
    source = FrameSource(rng, cfg.kinds)
    ws: RawWebSocket | None = None
    held: FuzzFrame | None = None
    try:
        while True:
            batch: list[FuzzFrame] = []
            while len(batch) < cfg.window:
                if held is not None:
                    frame, held = held, None
                elif budget.take():
                    frame = source.next()
                else:
                    break
                if frame.ends_connection:
                    # Sent alone, once every earlier answer has arrived: a server that
                    # closes with unread input makes the kernel reset the connection,
                    # which may discard answers still unsent (see docs/testing.md).
                    if batch:
                        held = frame
                    else:
                        batch.append(frame)
                    break
                batch.append(frame)
            if not batch:
                return
            if ws is None:
                ws = await _open(cfg, report)
                if ws is None:
                    return
            sent: list[FuzzFrame] = []
            for frame in batch:
                report.frames_tried += 1
                report.kinds[frame.kind] += 1
                sent.append(frame)
                if not await _send(ws, frame, report):
                    # The server may close before it has read all of a frame (1009 on
                    # the header of an oversized one): its answer is still to be read.
                    break
            for frame in sent:
                if not _judge(frame, await _recv(ws, cfg), report):
                    await ws.close()
                    ws = None  # closed, as documented or not; the next batch reconnects
                    break
            if on_progress is not None:
                on_progress(report.frames_tried)
    finally:
        if ws is not None:
            await ws.close()


async def _burst_connection(cfg: FuzzConfig, rng: random.Random, report: FuzzReport) -> None:
    """Frames as fast as the socket takes them; every one answered, or close 1008."""
    source = FrameSource(rng, cfg.kinds)
    frames: list[FuzzFrame] = []
    while len(frames) < cfg.burst_frames:
        frame = source.next()
        if not frame.ends_connection:
            frames.append(frame)
    ws = await _open(cfg, report)
    if ws is None:
        return
    sent = 0
    for frame in frames:
        if not await _send(ws, frame, report):
            break
        sent += 1
    report.burst_frames += sent
    for frame in frames[:sent]:
        msg = await _recv(ws, cfg)
        if not _judge(frame, msg, report, burst=True):
            if msg.kind == "close" and msg.code != POLICY_VIOLATION:
                report.problem(f"a burst ended with close {msg.code}, not 1008")
            break
    await ws.close()


# ---------------------------------------------------------------- the honest pair


class _HonestPair:
    """Two well-behaved peers in one room relaying numbered frames back and forth."""

    def __init__(
        self, cfg: FuzzConfig, report: FuzzReport, http: aiohttp.ClientSession, index: int
    ) -> None:
        self.index = index
        self.cfg = cfg
        self.report = report
        self.http = http
        self.answerer: aiohttp.ClientWebSocketResponse | None = None
        self.offerer: aiohttp.ClientWebSocketResponse | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        ws = await self.http.ws_connect(self.cfg.url, max_msg_size=0, autoping=True)
        welcome = await self._expect(ws, "welcome")
        if welcome.get("protocol") != p.PROTOCOL_VERSION:
            self.report.problem(f"honest peer: welcome with protocol {welcome.get('protocol')}")
        return ws

    async def _expect(self, ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
        msg = await ws.receive(timeout=self.cfg.reply_timeout)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise _HonestFailure(f"expected {kind!r}, got {msg.type.name} {msg.data!r}")
        value = json.loads(msg.data)
        if not isinstance(value, dict) or value.get("type") != kind:
            raise _HonestFailure(f"expected {kind!r}, got {msg.data[:200]!r}")
        return value

    async def start(self) -> None:
        try:
            self.answerer = await self._connect()
            await self.answerer.send_str(p.encode_client(p.Join()).decode())
            waiting = await self.answerer.receive(timeout=self.cfg.reply_timeout)
            if waiting.type is not aiohttp.WSMsgType.TEXT or json.loads(waiting.data) != {
                "type": "waiting"
            }:
                raise _HonestFailure(f"first peer did not wait (someone else queued?): {waiting}")
            self.offerer = await self._connect()
            await self.offerer.send_str(p.encode_client(p.Join()).decode())
            offer_side = await self._expect(self.offerer, "matched")
            answer_side = await self._expect(self.answerer, "matched")
        except (_HonestFailure, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.report.problem(f"honest pair could not start: {exc!r}")
            return
        if (offer_side.get("role"), answer_side.get("role")) != ("offerer", "answerer"):
            self.report.problem(
                f"honest pair roles: newcomer {offer_side.get('role')}, "
                f"waiter {answer_side.get('role')} (the peer that waited must answer)"
            )
        if offer_side.get("roomId") != answer_side.get("roomId"):
            self.report.problem("honest pair matched into different rooms")
        self._task = asyncio.create_task(self._relay_loop())

    async def _relay(
        self,
        sender: aiohttp.ClientWebSocketResponse,
        receiver: aiohttp.ClientWebSocketResponse,
        msg: p.ClientMessage,
    ) -> None:
        text = p.encode_client(msg).decode()
        await sender.send_str(text)
        got = await receiver.receive(timeout=self.cfg.reply_timeout)
        if got.type is not aiohttp.WSMsgType.TEXT or got.data != text:
            raise _HonestFailure(f"relay {msg.type_name} lost or changed: got {got.data!r:.200}")
        self.report.honest_relays += 1

    async def _relay_loop(self) -> None:
        assert self.offerer is not None and self.answerer is not None
        a, b = self.answerer, self.offerer
        n = 0
        try:
            while True:
                n += 1
                tag = f"pair {self.index} round {n}"
                await self._relay(b, a, p.Offer(sdp=p.SessionDescription("offer", f"{tag} é💥")))
                await self._relay(a, b, p.Answer(sdp=p.SessionDescription("answer", tag)))
                candidate = p.CandidateInit(candidate=f"candidate:{tag}", sdpMid="0")
                await self._relay(b, a, p.IceCandidate(candidate=candidate))
                await self._relay(a, b, p.IceCandidate(candidate=None if n % 2 else candidate))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.cfg.honest_interval)
                if self._stop.is_set():
                    return
        except (_HonestFailure, aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            self.report.problem(f"honest pair {self.index}, round {n}: {exc!r}")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        a, b = self.answerer, self.offerer
        try:
            if a is not None and b is not None and self._task is not None:
                await b.send_str(p.encode_client(p.Leave()).decode())
                left = await self._expect(a, "partner-left")
                if left.get("reason") != "left":
                    self.report.problem(f"honest pair: partner-left reason {left.get('reason')}")
        except (_HonestFailure, aiohttp.ClientError, TimeoutError) as exc:
            self.report.problem(f"honest pair, leaving: {exc}")
        finally:
            for ws in (a, b):
                if ws is not None:
                    await ws.close()


class _HonestFailure(Exception):
    pass


# ---------------------------------------------------------------- /stats


async def _stats(http: aiohttp.ClientSession, ws_url: str, report: FuzzReport) -> dict[str, Any]:
    try:
        async with http.get(stats_url(ws_url)) as response:
            if response.status != 200:
                report.problem(f"/stats answered HTTP {response.status}")
                return {}
            value = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        report.problem(f"/stats unreadable: {exc!r}")
        return {}
    if not isinstance(value, dict):
        report.problem(f"/stats is not a JSON object: {value!r}")
        return {}
    for key in ("connections", "waiting", "rooms", "matches_total"):
        if not isinstance(value.get(key), int) or value[key] < 0:
            report.problem(f"/stats {key} is {value.get(key)!r}, not a count")
    return value


async def _check_stats_settle(
    http: aiohttp.ClientSession, cfg: FuzzConfig, report: FuzzReport
) -> None:
    """Every connection we opened is gone: /stats returns to its counts before the run.

    A closed socket is reported to the server's core just after the close
    handshake, so this polls (bounded by the reply timeout) instead of reading once.
    """
    before = report.stats_before
    if not before:
        return
    keys = ("connections", "waiting", "rooms")
    deadline = time.monotonic() + cfg.reply_timeout
    after: dict[str, Any] = {}
    while True:
        after = await _stats(http, cfg.url, FuzzReport(cfg.seed, cfg.url))
        if all(after.get(k) == before.get(k) for k in keys) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    report.stats_after = after
    for key in keys:
        if after.get(key) != before.get(key):
            report.problem(
                f"/stats {key} is {after.get(key)} after the run, {before.get(key)} before"
            )
    matches = after.get("matches_total", 0) - before.get("matches_total", 0)
    if report.honest_relays and matches < cfg.honest_pairs:
        report.problem(
            f"/stats matches_total grew by {matches} for {cfg.honest_pairs} honest pairs"
        )

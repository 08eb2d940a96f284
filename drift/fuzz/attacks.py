"""``drift fuzz --attack``: one abusive connection against a server, and what it does to others.

Each attack runs while an honest pair — from its own address, so per-address
caps do not mix the two up — measures what a user would feel: join -> matched
and offer -> answer round trips, and whether ``/healthz`` answers. The verdict
fails when

- the honest medians under attack exceed ``max_ratio`` x their baseline (measured
  just before, same run) plus ``slack_ms``; an honest round or a ``/healthz``
  fails or times out; or
- the attack's own check fails: the server did not end the abuse the way a
  protected server does (below).

====================  ======================================================
attack                what the server must do
====================  ======================================================
``ping-flood``        close a connection sending pings non-stop with 1008
``fragment-flood``    the same for empty continuation fragments
``flood-after-close`` once it has closed a connection (1008 for rate abuse),
                      stop reading it and drop it within ``cut_within`` s
``stalled-reader``    keep answering the partner of a peer that never reads
                      (and keeps the heartbeat happy with unsolicited pongs),
                      and cut that peer off
``idle-sockets``      drop sockets that never send a request
``slowloris``         drop sockets that drip a request one byte at a time
====================  ======================================================

Every count and duration is bounded; the attacker only ever talks to the
target it was given (loopback unless the caller allowed otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import statistics
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, cast
from urllib.parse import urlsplit

import aiohttp

from drift.client import urls
from drift.fuzz.rawws import (
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    RawWebSocket,
    encode_frame,
)

ATTACKS: Final = (
    "ping-flood",
    "fragment-flood",
    "flood-after-close",
    "stalled-reader",
    "idle-sockets",
    "slowloris",
)
POLICY_VIOLATION: Final = 1008
#: Frames written per batch by the floods (one write, then a yield).
_BATCH: Final = 512
#: How often a closed flooder comes back (the nginx example allows 5/s, burst 10).
_RECONNECTS_PER_S: Final = 10
#: Relays of the stalled-reader victim, and their size: small steps, so the
#: server's queue to the stalled peer cannot jump over 64-128 KiB between two
#: of aiohttp's drain points (every 64 KiB written).
_RELAYS: Final = 60
_RELAY: Final = 6_000


@dataclass(frozen=True)
class AttackConfig:
    url: str  # ws://host:port/ws
    attack: str
    duration: float = 3.0
    baseline: float = 1.0
    #: local address of the honest pair (another loopback address by default)
    honest_source: str | None = "127.0.0.2"
    #: sockets of the idle-sockets and slowloris attacks
    sockets: int = 100
    max_ratio: float = 5.0
    slack_ms: float = 20.0
    reply_timeout: float = 2.0
    #: seconds within which the server must have ended what it should end
    cut_within: float = 2.5


@dataclass
class AttackReport:
    attack: str
    url: str
    baseline_rtt_ms: float = 0.0
    baseline_match_ms: float = 0.0
    attack_rtt_ms: float = 0.0
    attack_match_ms: float = 0.0
    honest_rounds: int = 0
    healthz_ok: int = 0
    healthz_failed: int = 0
    #: what the attack saw of the server's answer to it
    outcome: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "url": self.url,
            "ok": self.ok,
            "baseline_rtt_ms": round(self.baseline_rtt_ms, 3),
            "attack_rtt_ms": round(self.attack_rtt_ms, 3),
            "baseline_match_ms": round(self.baseline_match_ms, 3),
            "attack_match_ms": round(self.attack_match_ms, 3),
            "honest_rounds": self.honest_rounds,
            "healthz_ok": self.healthz_ok,
            "healthz_failed": self.healthz_failed,
            "outcome": self.outcome,
            "problems": self.problems,
        }


# ---------------------------------------------------------------- the honest pair


@dataclass
class Samples:
    rtt: list[float] = field(default_factory=list)
    match: list[float] = field(default_factory=list)
    healthz_ok: int = 0
    failures: list[str] = field(default_factory=list)

    def median_ms(self, values: list[float]) -> float:
        return statistics.median(values) * 1e3 if values else float("inf")


class HonestPair:
    """Rounds of: two fresh peers join and are matched, then offer -> answer twice."""

    def __init__(self, cfg: AttackConfig) -> None:
        self.cfg = cfg
        connector = aiohttp.TCPConnector(
            local_addr=(cfg.honest_source, 0) if cfg.honest_source else None,
            force_close=True,
        )
        self.http = aiohttp.ClientSession(connector=connector)

    async def close(self) -> None:
        await self.http.close()

    async def run(self, seconds: float) -> Samples:
        samples = Samples()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                async with asyncio.timeout(self.cfg.reply_timeout * 3):
                    await self._round(samples)
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                samples.failures.append(f"honest round: {exc!r}"[:200])
            await self._healthz(samples)
            # Paced: two rounds a second stay well under every default limit.
            await asyncio.sleep(0.05)
        return samples

    async def _healthz(self, samples: Samples) -> None:
        timeout = aiohttp.ClientTimeout(total=self.cfg.reply_timeout)
        try:
            async with self.http.get(urls.endpoint(self.cfg.url, "/healthz"), timeout=timeout) as r:
                if r.status == 200:
                    samples.healthz_ok += 1
                    return
                samples.failures.append(f"/healthz answered {r.status}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            samples.failures.append(f"/healthz: {exc!r}"[:200])

    async def _expect(self, ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
        while True:
            msg = await ws.receive(timeout=self.cfg.reply_timeout)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise ValueError(f"expected {kind!r}, got {msg.type.name}")
            value = json.loads(msg.data)
            if value.get("type") == kind:
                return dict(value)
            if value.get("type") != "waiting":
                raise ValueError(f"expected {kind!r}, got {msg.data[:120]!r}")

    async def _round(self, samples: Samples) -> None:
        timeout = self.cfg.reply_timeout
        async with (
            self.http.ws_connect(
                self.cfg.url, timeout=aiohttp.ClientWSTimeout(ws_close=timeout)
            ) as a,
            self.http.ws_connect(
                self.cfg.url, timeout=aiohttp.ClientWSTimeout(ws_close=timeout)
            ) as b,
        ):
            await self._expect(a, "welcome")
            await self._expect(b, "welcome")
            await a.send_str('{"type":"join"}')
            await self._expect(a, "waiting")
            start = time.perf_counter()
            await b.send_str('{"type":"join"}')
            await self._expect(b, "matched")
            samples.match.append(time.perf_counter() - start)
            await self._expect(a, "matched")
            offer = '{"type":"offer","sdp":{"type":"offer","sdp":"v=0\\r\\nprobe"}}'
            answer = '{"type":"answer","sdp":{"type":"answer","sdp":"v=0\\r\\nprobe"}}'
            for _ in range(2):
                start = time.perf_counter()
                await b.send_str(offer)
                await self._expect(a, "offer")
                await a.send_str(answer)
                await self._expect(b, "answer")
                samples.rtt.append(time.perf_counter() - start)


# ---------------------------------------------------------------- the attacks


def _target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    return parts.hostname, parts.port or (443 if parts.scheme == "wss" else 80)


class _Attack:
    """One attack: ``run`` until ``stop`` is set, then ``outcome()`` judges what the server did."""

    def __init__(self, cfg: AttackConfig) -> None:
        self.cfg = cfg
        self.stop = asyncio.Event()
        self.problems: list[str] = []
        self.notes: list[str] = []

    async def setup(self) -> None:
        """What must be in place before the honest pair measures again (no rounds run now)."""

    async def run(self) -> None:
        raise NotImplementedError

    async def cleanup(self) -> None:
        """Close whatever the attack still holds."""


class _Flood(_Attack):
    """Write one frame pattern non-stop; once closed (it must be, with 1008), reconnect.

    Reconnecting (at most ten times a second) keeps the pressure on for the
    whole run, as a determined attacker would: what is measured is also the
    cost of closing flooders.
    """

    def __init__(self, cfg: AttackConfig) -> None:
        super().__init__(cfg)
        self.ws: RawWebSocket | None = None
        self.frames = 0
        self.codes: list[int | None] = []

    def opening(self) -> bytes:
        return b""

    def pattern(self) -> bytes:
        raise NotImplementedError

    async def run(self) -> None:
        batch = self.pattern() * _BATCH
        while not self.stop.is_set():
            started = time.monotonic()
            code = await self._one(batch)
            self.codes.append(code)
            if code != POLICY_VIOLATION:
                break
            # New connections at the rate a proxy's per-address limit lets
            # through (docs/operations.md): flooding, not connection churn.
            with contextlib.suppress(TimeoutError):
                wait = started + 1 / _RECONNECTS_PER_S - time.monotonic()
                await asyncio.wait_for(self.stop.wait(), max(0.0, wait))
        bad = [c for c in self.codes if c != POLICY_VIOLATION]
        if bad or not self.codes:
            got = "no close" if not bad or bad[0] is None else f"close {bad[0]}"
            self.problems.append(
                f"{self.cfg.attack}: {self.frames:,} frames sent and {got}; the server must "
                "bill every frame and close the flooder with 1008"
            )
        else:
            self.notes.append(
                f"{len(self.codes)} flooders in a row closed with 1008 "
                f"({self.frames:,} frames offered)"
            )

    async def _one(self, batch: bytes) -> int | None:
        """One flooding connection until the server closes it; its close code."""
        self.ws = ws = await RawWebSocket.connect(self.cfg.url, self.cfg.reply_timeout)
        closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        reader = asyncio.create_task(self._read(ws, closed))
        try:
            ws.writer.write(self.opening())
            while not self.stop.is_set() and not closed.done():
                ws.writer.write(batch)
                self.frames += _BATCH
                await ws.writer.drain()
                await asyncio.sleep(0)  # let the honest pair (same loop) run
        except (ConnectionError, OSError, RuntimeError):
            pass
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(closed), self.cfg.cut_within)
        reader.cancel()
        ws.writer.transport.abort()
        return closed.result() if closed.done() else None

    async def _read(self, ws: RawWebSocket, closed: asyncio.Future[int | None]) -> None:
        code: int | None = None
        with contextlib.suppress(TimeoutError, ConnectionError, OSError):
            while True:
                msg = await ws.recv(self.cfg.duration + self.cfg.cut_within)
                if msg.kind in ("close", "eof"):
                    code = msg.code
                    break
        if not closed.done():
            closed.set_result(code)

    async def cleanup(self) -> None:
        if self.ws is not None:
            self.ws.writer.transport.abort()


class PingFlood(_Flood):
    def pattern(self) -> bytes:
        return encode_frame(PING, b"x")


class FragmentFlood(_Flood):
    def opening(self) -> bytes:
        return encode_frame(TEXT, b"{", fin=False)

    def pattern(self) -> bytes:
        return encode_frame(CONTINUATION, b"", fin=False)


class FloodAfterClose(_Attack):
    """Earn a 1008 for rate abuse, then flood big frames and ignore the close; again.

    Each round must be dropped within ``cut_within`` of its close frame; a new
    round starts at most ten times a second, like the floods' reconnects.
    """

    def __init__(self, cfg: AttackConfig) -> None:
        super().__init__(cfg)
        self.ws: RawWebSocket | None = None
        self.bytes = 0
        self.rounds: list[float] = []  # seconds from close frame to drop, per round

    async def run(self) -> None:
        abuse = encode_frame(TEXT, b'{"type":"leave"}') * 200
        big = encode_frame(TEXT, b'{"type":"offer","x":"' + b"a" * 65_000 + b'"}') * 4
        while not self.stop.is_set():
            started = time.monotonic()
            closed_at, gone_at = await self._round(abuse, big)
            if closed_at is None:
                if not self.rounds or not self.stop.is_set():  # not merely cut short
                    self.problems.append(f"{self.cfg.attack}: the abuse was never closed")
                return
            if gone_at is None or gone_at - closed_at > self.cfg.cut_within:
                after = "never" if gone_at is None else f"{gone_at - closed_at:.1f} s"
                self.problems.append(
                    f"{self.cfg.attack}: after closing, the server kept the connection open "
                    f"(dropped: {after}, bound {self.cfg.cut_within:g} s) while it was sent "
                    f"{self.bytes / 1e6:.0f} MB; it must stop reading and drop it"
                )
                return
            self.rounds.append(gone_at - closed_at)
            with contextlib.suppress(TimeoutError):
                wait = started + 1 / _RECONNECTS_PER_S - time.monotonic()
                await asyncio.wait_for(self.stop.wait(), max(0.0, wait))
        if self.rounds:
            self.notes.append(
                f"{len(self.rounds)} rounds closed, each dropped within "
                f"{max(self.rounds):.2f} s of its close ({self.bytes / 1e6:.0f} MB offered)"
            )

    async def _round(self, abuse: bytes, big: bytes) -> tuple[float | None, float | None]:
        """One connection: (when its close frame came, when it was dropped)."""
        self.ws = ws = await RawWebSocket.connect(self.cfg.url, self.cfg.reply_timeout)
        seen: list[float | None] = [None, None]
        reader = asyncio.create_task(self._read(ws, seen))
        try:
            ws.writer.write(abuse)
            while not self.stop.is_set() and seen[1] is None:
                ws.writer.write(big)
                self.bytes += len(big)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ws.writer.drain(), 0.2)
                await asyncio.sleep(0)
        except (ConnectionError, OSError, RuntimeError):
            seen[1] = seen[1] or time.monotonic()
        # Stopped mid-round: the drop may still be due.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reader), self.cfg.cut_within + 0.5)
        reader.cancel()
        ws.writer.transport.abort()
        return seen[0], seen[1]

    async def _read(self, ws: RawWebSocket, seen: list[float | None]) -> None:
        # The raw frames: RawWebSocket.recv would answer the close and end it.
        # A drop is a reset, or an end of stream when the server closed a socket
        # with nothing left to send (IncompleteReadError): both end the round.
        with contextlib.suppress(
            TimeoutError, ConnectionError, OSError, asyncio.IncompleteReadError
        ):
            while True:
                fin_op, length = await ws.reader.readexactly(2)
                size = length & 0x7F
                if size == 126:
                    (size,) = struct.unpack("!H", await ws.reader.readexactly(2))
                elif size == 127:
                    (size,) = struct.unpack("!Q", await ws.reader.readexactly(8))
                await ws.reader.readexactly(size)
                if fin_op & 0x0F == CLOSE and seen[0] is None:
                    seen[0] = time.monotonic()
        seen[1] = seen[1] or time.monotonic()

    async def cleanup(self) -> None:
        if self.ws is not None:
            self.ws.writer.transport.abort()


class StalledReader(_Attack):
    """A peer that never reads, matched with a victim that keeps relaying to it.

    The stalled peer keeps a tiny receive buffer and sends unsolicited pongs, so
    the heartbeat never drops it. The victim relays offers (filling the
    server's queue to the stalled peer through 64-128 KiB) and after each one
    asks the server something (an invalid frame): the answer must come while
    its partner stalls. The stalled peer must be cut off. The victim relays
    6 KB offers (at most 60, paced under the default rate limit).
    """

    def __init__(self, cfg: AttackConfig) -> None:
        super().__init__(cfg)
        self.writer: asyncio.StreamWriter | None = None
        self.victim: aiohttp.ClientWebSocketResponse | None = None
        self.stalled: RawWebSocket | None = None
        self.http = aiohttp.ClientSession()

    async def setup(self) -> None:
        # Before the honest rounds resume: their joins would take the stalled
        # peer's place in the queue.
        host, port = _target(self.cfg.url)
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # A small segment size keeps the server's kernel send buffer to this
        # peer small (it is sized in segments), so the queue fills in user space.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        stalled = await RawWebSocket.connect(self.cfg.url, self.cfg.reply_timeout, sock=sock)
        self.writer = stalled.writer
        welcome = await stalled.recv(self.cfg.reply_timeout)
        await stalled.send(TEXT, b'{"type":"join"}')
        waiting = await stalled.recv(self.cfg.reply_timeout)
        if b"welcome" not in welcome.data or b"waiting" not in waiting.data:
            self.problems.append(f"{self.cfg.attack}: could not queue the stalled peer")
            return
        cast(asyncio.Transport, stalled.writer.transport).pause_reading()  # never read again
        self.victim = victim = await self.http.ws_connect(self.cfg.url)
        await victim.receive(timeout=self.cfg.reply_timeout)  # welcome
        await victim.send_str('{"type":"join"}')
        matched = json.loads((await victim.receive(timeout=self.cfg.reply_timeout)).data)
        if matched.get("type") != "matched":
            self.problems.append(f"{self.cfg.attack}: victim not matched: {matched}")
            return
        self.stalled = stalled

    async def run(self) -> None:
        victim, stalled = self.victim, self.stalled
        if victim is None or stalled is None:
            return
        pongs = asyncio.create_task(self._pongs(stalled))
        offer = json.dumps({"type": "offer", "sdp": {"type": "offer", "sdp": "a" * _RELAY}})
        sent, cut_off = 0, False
        try:
            # Not bounded by `stop`: the queue must pass through 64-128 KiB, however
            # much the kernel's buffers take first.
            while sent < _RELAYS and not cut_off:
                await victim.send_str(offer)
                sent += 1
                await victim.send_str('{"type":"bogus"}')
                start = time.monotonic()
                while True:
                    try:
                        msg = await victim.receive(timeout=self.cfg.reply_timeout)
                    except TimeoutError:
                        self.problems.append(
                            f"{self.cfg.attack}: after {sent} relays to a peer that does not "
                            f"read, the victim's own frame went unanswered for "
                            f"{self.cfg.reply_timeout:g} s: its frames wait for the stalled "
                            "peer's writes"
                        )
                        return
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        self.problems.append(f"{self.cfg.attack}: victim got {msg.type.name}")
                        return
                    kind = json.loads(msg.data).get("type")
                    if kind == "partner-left":
                        cut_off = True
                        continue
                    if kind == "error":
                        break
                if time.monotonic() - start > self.cfg.reply_timeout:
                    break
                await asyncio.sleep(0.1)  # paced under the default rate limit
        finally:
            pongs.cancel()
        if cut_off:
            self.notes.append(f"the stalled peer was cut off after {sent} relays of 6 KB")
        else:
            self.problems.append(
                f"{self.cfg.attack}: the peer that never reads was not cut off after "
                f"{sent} relays of 6 KB"
            )

    async def _pongs(self, ws: RawWebSocket) -> None:
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            while True:
                ws.writer.write(encode_frame(PONG, b""))
                await asyncio.sleep(0.3)

    async def cleanup(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        if self.victim is not None:
            await self.victim.close()
        await self.http.close()


class _Sockets(_Attack):
    """Many plain TCP sockets that never finish a request; the server must drop them."""

    def __init__(self, cfg: AttackConfig) -> None:
        super().__init__(cfg)
        self.socks: list[socket.socket] = []

    async def drip(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        """What each socket sends: nothing, by default."""

    async def run(self) -> None:
        host, port = _target(self.cfg.url)
        loop = asyncio.get_running_loop()
        for _ in range(self.cfg.sockets):
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, (host, port)), 1.0)
            except (OSError, TimeoutError):
                sock.close()
                continue
            self.socks.append(sock)
        drips = [asyncio.create_task(self.drip(s, loop)) for s in self.socks]
        await self.stop.wait()
        for task in drips:
            task.cancel()
        still = sum(1 for s in self.socks if _is_open(s))
        if still:
            self.problems.append(
                f"{self.cfg.attack}: {still} of {len(self.socks)} sockets that never finished "
                f"a request were still open after {self.cfg.duration:g} s; the server must "
                "give a deadline to finish the request and cap such sockets"
            )
        else:
            self.notes.append(f"all {len(self.socks)} sockets dropped by the server")

    async def cleanup(self) -> None:
        for sock in self.socks:
            sock.close()


class IdleSockets(_Sockets):
    pass


class Slowloris(_Sockets):
    async def drip(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(OSError):
            await loop.sock_sendall(sock, b"GET /healthz HTTP/1.1\r\nHost: drift\r\nX-Slow: ")
            while True:
                await asyncio.sleep(0.5)
                await loop.sock_sendall(sock, b"a")


def _is_open(sock: socket.socket) -> bool:
    """True if the server has not closed its side (no EOF and no reset pending)."""
    try:
        data = sock.recv(1 << 16, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return bool(data) and not data.startswith(b"HTTP/")  # an answer means it was served


_ATTACKS: Final[dict[str, Callable[[AttackConfig], _Attack]]] = {
    "ping-flood": PingFlood,
    "fragment-flood": FragmentFlood,
    "flood-after-close": FloodAfterClose,
    "stalled-reader": StalledReader,
    "idle-sockets": IdleSockets,
    "slowloris": Slowloris,
}


# ---------------------------------------------------------------- one run


async def run_attack(
    cfg: AttackConfig, on_phase: Callable[[str], Awaitable[None] | None] | None = None
) -> AttackReport:
    """Baseline, then the attack with the honest pair measuring; the verdict in the report."""
    report = AttackReport(cfg.attack, cfg.url)
    honest = HonestPair(cfg)
    attack = _ATTACKS[cfg.attack](cfg)
    try:
        base = await honest.run(cfg.baseline)
        report.baseline_rtt_ms = base.median_ms(base.rtt)
        report.baseline_match_ms = base.median_ms(base.match)
        if base.failures or not base.rtt:
            report.problems += [f"baseline: {f}" for f in base.failures[:5]] or [
                "baseline: no honest round completed"
            ]
            return report
        await asyncio.wait_for(attack.setup(), cfg.reply_timeout * 3)
        running = asyncio.create_task(attack.run())
        under = await honest.run(cfg.duration)
        attack.stop.set()
        try:
            async with asyncio.timeout(cfg.cut_within + cfg.reply_timeout * 2 + 1):
                await running
        except (TimeoutError, OSError, aiohttp.ClientError, ValueError) as exc:
            attack.problems.append(f"{cfg.attack}: the attack itself failed: {exc!r}"[:300])
        report.attack_rtt_ms = under.median_ms(under.rtt)
        report.attack_match_ms = under.median_ms(under.match)
        report.honest_rounds = len(under.match)
        report.healthz_ok = under.healthz_ok
        report.healthz_failed = sum(1 for f in under.failures if f.startswith("/healthz"))
        report.problems += [f"under {cfg.attack}: {f}" for f in under.failures[:5]]
        for what, base_ms, now_ms in (
            ("offer->answer round trip", report.baseline_rtt_ms, report.attack_rtt_ms),
            ("join->matched", report.baseline_match_ms, report.attack_match_ms),
        ):
            bound = max(cfg.max_ratio * base_ms, base_ms + cfg.slack_ms)
            if now_ms > bound:
                report.problems.append(
                    f"under {cfg.attack}: honest {what} median {now_ms:.2f} ms, over "
                    f"{bound:.2f} ms (baseline {base_ms:.2f} ms)"
                )
        report.problems += attack.problems
        report.outcome = "; ".join(attack.notes)
    finally:
        attack.stop.set()
        await attack.cleanup()
        await honest.close()
    return report

"""``drift serve``: the aiohttp I/O shell around the pure :class:`~drift.core.lobby.Lobby`.

The WebSocket handler only moves bytes: frame in -> ``Lobby`` -> effects out.
Every protocol rule is in the core; what lives here is what needs a socket, an
HTTP request or a clock: Origin checks, security headers, heartbeats, timers,
logs, metrics and graceful shutdown (first signal drains, second forces).

One connection must never slow down another, so:

- nothing here awaits a write: a frame for a peer is appended to that peer's
  socket buffer (its outbound queue, bounded by ``max_pending_bytes``) and the
  event loop's writer drains it; a peer whose queue takes no byte for
  ``send_timeout`` seconds is cut off. The sender, the ticker and the Redis
  worker go on at once whatever the receiver does;
- every frame a client sends costs from its budget, control frames and
  fragments included (:mod:`drift.serve.frames`);
- once the server decides to close a connection it stops reading it and
  aborts it after :data:`CLOSE_GRACE` seconds at most;
- sockets that have not finished their HTTP request are capped and given a
  deadline (:mod:`drift.serve.http`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import os
import random
import resource
import secrets
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.client_exceptions import ClientConnectionResetError
from aiohttp.http_websocket import WebSocketWriter

from drift.core import lobby as core
from drift.core.cluster import ClusterLobby
from drift.core.lobby import Close, Event, Fault, Forward, Lobby, Send
from drift.core.protocol import MAX_FRAME_BYTES, CloseCode
from drift.resources import data_dir
from drift.serve.config import ServerConfig, Unsafe
from drift.serve.frames import FrameGate
from drift.serve.heartbeat import HeartbeatWheel
from drift.serve.http import (
    CONTENT_SECURITY_POLICY,
    SECURITY_HEADERS,
    DriftRequestHandler,
    GatedRunner,
    SocketGate,
)
from drift.serve.logs import flush_logs, get_logger
from drift.serve.metrics import Metrics, rss_bytes

if TYPE_CHECKING:
    from drift.serve.redis_backend import RedisBackend

log = get_logger("drift.serve.server")

#: What a peer going away looks like from here: an ordinary disconnect, never a bug.
_RESET_ERRORS: Final = (ConnectionError, ClientConnectionResetError, RuntimeError)
#: Closes aiohttp performs on its own for a bad frame (counted like the core's).
_PROTOCOL_CLOSES: Final = frozenset(
    {WSCloseCode.PROTOCOL_ERROR, WSCloseCode.MESSAGE_TOO_BIG, WSCloseCode.INVALID_TEXT}
)
#: JSON endpoints a page of an allowed origin may read cross-origin.
CORS_PATHS: Final = frozenset({"/healthz", "/stats"})
#: A second signal exits with 128 + its number, like a process killed by it.
FORCED_EXIT_BASE: Final = 128
#: Seconds between the decision to close a connection and its abort: room for
#: the close handshake, and no more.
CLOSE_GRACE: Final = 1.0
#: aiohttp's close timeout, with the read-after-close defect switched back on.
_UNSAFE_CLOSE_WAIT: Final = 10.0

__all__ = ["CLOSE_GRACE", "CONTENT_SECURITY_POLICY", "SECURITY_HEADERS", "Server", "run_server"]


def raise_descriptor_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one; return the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def frame_header(length: int) -> bytes:
    """The header of a final, unmasked text frame (servers never mask, RFC 6455 5.1)."""
    if length < 126:
        return bytes((0x81, length))
    if length < 1 << 16:
        return b"\x81\x7e" + length.to_bytes(2, "big")
    return b"\x81\x7f" + length.to_bytes(8, "big")


#: What aiohttp's WebSocketWriter makes per socket (see LingeringWebSocket.prepare).
_RANDOM_BITS: Final = functools.partial(random.getrandbits, 32)
_SEND_TASKS: Final[set[asyncio.Task[None]]] = set()


class LingeringWebSocket(web.WebSocketResponse):
    """A WebSocket whose socket outlives a server-initiated close by the grace.

    aiohttp closes the socket right after the close frame. If the peer is still
    sending, unread bytes make the kernel answer with a reset, and the reset
    makes the peer's kernel drop our close frame before the peer reads it. So
    once ``linger`` is set the socket stays open, read and thrown away by the
    frame gate, until the peer closes it or the server aborts it at the grace.
    """

    linger = False

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter:
        writer = await super().prepare(request)
        # The 101 answer is on the wire, security headers included; aiohttp
        # would keep its header dict (~2 KB with the security headers) for the
        # socket's life, and nothing reads it again.
        self.headers.clear()
        ws_writer = getattr(self, "_writer", None)
        if isinstance(ws_writer, WebSocketWriter):
            # Two objects aiohttp makes per socket and a server never uses (it
            # does not mask, and without compression it starts no send task):
            # shared ones of the same kind do the same if ever used (~0.5 KB).
            ws_writer.get_random_bits = _RANDOM_BITS
            ws_writer._background_tasks = _SEND_TASKS
        return writer

    def _close_transport(self) -> None:
        if not self.linger:
            super()._close_transport()


class Connection:
    """One upgraded WebSocket: its socket, its frame gate, and its outbound queue's state.

    Also what its :class:`FrameGate` reports to (``on_frames``, ``on_violation``)
    and what the :class:`HeartbeatWheel` ages (``idle``): methods and slots of
    this one object, not closures and timers per connection.
    """

    __slots__ = (
        "abort_at",
        "close_with",
        "closing",
        "gate",
        "idle",
        "mark",
        "peer_id",
        "sent",
        "server",
        "stall_timer",
        "task",
        "timed_out",
        "transport",
        "ws",
    )

    def __init__(
        self, server: Server, peer_id: str, ws: LingeringWebSocket, transport: asyncio.Transport
    ) -> None:
        self.server = server
        self.peer_id = peer_id
        self.ws = ws
        self.transport = transport
        self.gate: FrameGate | None = None
        #: set once the server decided to close: nothing more is sent or read
        self.closing = False
        #: loop time at which the socket is aborted, once closing (0: not set)
        self.abort_at = 0.0
        #: the handler's task, and (Unsafe.READ_AFTER_CLOSE) the close it owes
        self.task: asyncio.Task[Any] | None = None
        self.close_with: tuple[int, str] | None = None
        #: bytes this server has handed to the socket in total
        self.sent = 0
        #: (queued bytes, ``sent``) when the stall timer was armed
        self.mark = (0, 0)
        self.stall_timer: asyncio.TimerHandle | None = None
        #: heartbeat ticks since the client last sent a byte (reset by the gate)
        self.idle = 0
        #: dropped by the heartbeat: the peer stopped answering pings
        self.timed_out = False

    def on_frames(self, frames: int) -> None:
        """The gate bills frames the core will not see (control frames, fragments)."""
        server = self.server
        effects = server.lobby.charge(self.peer_id, frames, server._now_fn())
        if effects:
            server._apply_now(effects)

    def on_violation(self) -> None:
        """The gate saw an unmasked client frame: RFC 6455 5.1 says close."""
        log.warning("peer_unmasked_frame", extra={"fields": {"peerId": self.peer_id}})
        server = self.server
        server.lobby.note_close(WSCloseCode.PROTOCOL_ERROR)
        server._close(self, WSCloseCode.PROTOCOL_ERROR, "client frames must be masked")


def new_id() -> str:
    """Unguessable ids: a peer or room id must not let anyone address someone else."""
    return secrets.token_urlsafe(9)


class Server:
    """One signaling node. ``start()`` binds and returns the URL; ``shutdown()`` drains."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self.lobby: Lobby = Lobby(self.config.lobby_config(), new_room_id=new_id)
        self.backend: RedisBackend | None = None
        if self.config.redis_url:
            self.lobby, self.backend = self._cluster_node(self.config.redis_url)
        unsafe = self.config.unsafe
        self._await_writes = Unsafe.AWAIT_WRITES in unsafe
        self._read_after_close = Unsafe.READ_AFTER_CLOSE in unsafe
        self._free_control = Unsafe.FREE_CONTROL_FRAMES in unsafe
        self.gate: SocketGate | None = None
        if Unsafe.UNBOUNDED_UPGRADES not in unsafe:
            self.gate = SocketGate(
                self.config.max_handshakes,
                # Behind a proxy every socket comes from the proxy's address.
                0 if self.config.trust_proxy else self.config.max_connections_per_ip,
                self.config.upgrade_timeout,
            )
        self.metrics = Metrics(lambda: self.lobby, self.cluster_stats, self.gate)
        self.url = ""
        self.port = 0
        self.draining = False
        self.fd_limit = 0
        self._ice = self.config.ice_servers()
        self._max_pending = self.config.max_pending_bytes
        self._conns: dict[str, Connection] = {}
        self._no_conns = asyncio.Event()
        self._no_conns.set()
        self._closing_tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._heartbeat: HeartbeatWheel[Connection] | None = None
        if self.config.heartbeat > 0:
            self._heartbeat = HeartbeatWheel(
                self.config.heartbeat, self._conns.values, self._heartbeat_expired
            )
        self._wake = asyncio.Event()
        self._now_fn: Callable[[], float] = time.monotonic
        #: what every WebSocket handler calls per frame, bound once for all of them
        self._hot: tuple[
            Callable[[str, bytes | str | None, float], list[core.Effect]],
            Callable[[Send], None],
            Callable[[Iterable[core.Effect]], None],
        ] = (self.lobby.receive, self._send, self._apply_now)
        self._tick_at: float | None = None
        self._started = time.monotonic()
        self._static = data_dir("static")
        self.app = self._make_app()

    def _cluster_node(self, url: str) -> tuple[ClusterLobby, RedisBackend]:
        from drift.serve.redis_backend import RedisBackend

        node = self.config.node_id or f"{secrets.token_hex(4)}-{os.getpid()}"
        lobby = ClusterLobby(node, self.config.lobby_config(), new_room_id=new_id)
        backend = RedisBackend(
            url,
            lobby,
            self._apply,
            max_queue=self.config.max_queue,
            never_match=Fault.NEVER_MATCH in self.config.faults,
            node_ttl=self.config.node_ttl,
            heartbeat=self.config.node_ttl / 5,
        )
        return lobby, backend

    def cluster_stats(self) -> dict[str, Any] | None:
        """Cluster-wide figures (Redis backend), refreshed every heartbeat; else None."""
        return self.backend.cluster if self.backend is not None else None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> str:
        # The loop's clock, bound once: the core's `now` for frames and ticks alike.
        self._now_fn = asyncio.get_running_loop().time
        self.fd_limit = raise_descriptor_limit()
        if self.backend is not None:
            await self.backend.start()
        unbounded = self.gate is None
        self._runner = GatedRunner(
            self.app,
            self.gate,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self.config.shutdown_timeout,
            # aiohttp's default keeps an idle socket for an hour.
            **({} if unbounded else {"keepalive_timeout": self.config.keepalive_timeout}),
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self.config.host,
            self.config.port,
            reuse_port=self.config.reuse_port or None,
            # aiohttp's default of 128 drops connects when hundreds arrive at
            # once (each dropped SYN then waits 1 s to retry).
            backlog=1024,
        )
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.config.port
        host = self.config.host
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}"
        self._ticker = asyncio.create_task(self._tick_loop(), name="drift-ticker")
        if self._heartbeat is not None:
            self._heartbeat.start()
        fields: dict[str, object] = {"url": self.url, "pid": os.getpid(), "fd_limit": self.fd_limit}
        log.info("server_started", extra={"fields": fields})
        # Every socket is a descriptor: upgraded ones (max_connections), those
        # not upgraded yet (max_handshakes), plus the process's own few dozen.
        wanted = self.config.max_connections + self.config.max_handshakes + 64
        if self.fd_limit < wanted:
            log.warning(
                "fd_limit_low",
                extra={"fields": {"fd_limit": self.fd_limit, "caps_need": wanted}},
            )
        return self.url

    async def shutdown(self) -> None:
        """Drain: refuse new work, close every WebSocket with 1001, then stop listening.

        Bounded: every close aborts its connection after ``CLOSE_GRACE`` (a peer
        that does not read cannot hold the process up), and the whole drain by
        ``shutdown_timeout``.
        """
        if self.draining:
            return
        self.draining = True
        log.info("server_draining", extra={"fields": {"connections": len(self._conns)}})
        for conn in list(self._conns.values()):
            self.lobby.note_close(CloseCode.GOING_AWAY)
            self._close(conn, CloseCode.GOING_AWAY, "server shutting down")
        try:
            await asyncio.wait_for(self._no_conns.wait(), self.config.shutdown_timeout)
        except TimeoutError:
            log.warning("server_shutdown_timeout", extra={"fields": {"left": len(self._conns)}})
            for conn in self._conns.values():
                conn.transport.abort()
        if self._heartbeat is not None:
            await self._heartbeat.stop()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._runner is not None:
            await self._runner.cleanup()
        if self.backend is not None:
            await self.backend.stop()
        log.info("server_stopped")

    async def serve_forever(self, ready: Callable[[str], None] | None = None) -> None:
        """Run until SIGTERM/SIGINT, then drain; a second signal exits at once.

        The forced exit status is ``128 + signal`` (the shell's convention for
        "killed by a signal"), so a supervisor can tell it from a clean drain (0).
        """
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        signals = 0

        def on_signal(signum: int) -> None:
            nonlocal signals
            signals += 1
            name = signal.Signals(signum).name
            if signals > 1:
                log.warning("server_forced_exit", extra={"fields": {"signal": name}})
                flush_logs()  # os._exit skips the loop that would write it
                os._exit(FORCED_EXIT_BASE + signum)
            log.info("server_signal", extra={"fields": {"signal": name}})
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        url = await self.start()
        # Everything allocated so far lives as long as the process: keep it out
        # of every later full collection, whose pause grows with the heap.
        gc.freeze()
        if ready is not None:
            flush_logs()  # the start's lines (fd_limit_low) come before the ready line
            ready(url)
        await stop.wait()
        # shutdown() keeps its own deadline; this outer bound only covers the
        # listener teardown that follows it.
        try:
            await asyncio.wait_for(self.shutdown(), self.config.shutdown_timeout + 1)
        except TimeoutError:
            log.warning("server_cleanup_timeout")
        flush_logs()  # the last lines, not left to the loop's timer or the exit

    # ------------------------------------------------------------ core glue

    def _now(self) -> float:
        return self._now_fn()

    def _send(self, effect: Send) -> None:
        """The one way a frame goes out: onto the peer's queue, never awaited.

        A gone or closing peer is skipped. A peer whose queue passes
        ``max_pending_bytes`` is cut off at once; one whose queue takes no byte
        for ``send_timeout`` seconds, when the stall timer finds it so.
        """
        conn = self._conns.get(effect.peer)
        if conn is None or conn.closing:
            return
        transport = conn.transport
        if transport.is_closing():
            return
        data = effect.data
        payload = data.encode() if isinstance(data, str) else data
        frame = frame_header(len(payload)) + payload
        transport.write(frame)
        conn.sent += len(frame)
        queued = transport.get_write_buffer_size()
        if not queued:
            return
        if self._max_pending and queued > self._max_pending:
            self._cut_off(conn, effect.peer, "max_pending_bytes")
        elif conn.stall_timer is None and self.config.send_timeout > 0:
            self._arm_stall_timer(conn, effect.peer, queued)

    def _arm_stall_timer(self, conn: Connection, peer: str, queued: int) -> None:
        conn.mark = (queued, conn.sent)
        loop = asyncio.get_running_loop()
        conn.stall_timer = loop.call_later(self.config.send_timeout, self._check_stall, conn, peer)

    def _check_stall(self, conn: Connection, peer: str) -> None:
        conn.stall_timer = None
        if conn.closing or conn.transport.is_closing():
            return
        queued = conn.transport.get_write_buffer_size()
        if not queued:
            return
        was_queued, was_sent = conn.mark
        drained = was_queued + (conn.sent - was_sent) - queued
        if drained <= 0:
            self._cut_off(conn, peer, "send_timeout")
        else:
            self._arm_stall_timer(conn, peer, queued)

    def _cut_off(self, conn: Connection, peer: str, why: str) -> None:
        """A peer that does not read: drop it without a close frame (it would not read that)."""
        log.warning("peer_stalled", extra={"fields": {"peerId": peer, "why": why}})
        self.lobby.note_close(WSCloseCode.ABNORMAL_CLOSURE)
        conn.closing = True
        if conn.gate is not None:
            conn.gate.shut()
        conn.transport.abort()

    def _heartbeat_expired(self, conn: Connection) -> None:
        """A peer silent through a ping and its pong wait: dropped, no close frame (1006)."""
        conn.timed_out = True
        conn.closing = True
        if conn.gate is not None:
            conn.gate.shut()
        conn.transport.abort()

    async def _send_awaited(self, effect: Send) -> None:
        """Unsafe.AWAIT_WRITES: a write awaited by whoever sent it, as drift once did.

        Past the transport's high-water mark the sender waits for the receiver
        to read (aiohttp's drain); below ``max_pending_bytes`` nothing cuts the
        receiver off, so the sender (a partner, the ticker) waits for good.
        """
        conn = self._conns.get(effect.peer)
        if conn is None or conn.ws.closed:
            return
        transport = conn.transport
        if self._max_pending and transport.get_write_buffer_size() > self._max_pending:
            self._cut_off(conn, effect.peer, "max_pending_bytes")
            return
        data = effect.data
        with contextlib.suppress(*_RESET_ERRORS):
            await conn.ws.send_frame(
                data.encode() if isinstance(data, str) else data, WSMsgType.TEXT
            )
            high = transport.get_write_buffer_limits()[1]
            # A drain, polled: this path only exists to bring a defect back.
            while transport.get_write_buffer_size() > high and not transport.is_closing():  # noqa: ASYNC110
                await asyncio.sleep(0.05)

    def _apply_now(self, effects: Iterable[core.Effect]) -> None:
        only_sends = True
        for effect in effects:
            if isinstance(effect, Send):
                self._send(effect)
            elif isinstance(effect, Close):
                only_sends = False
                conn = self._conns.get(effect.peer)
                if conn is not None:
                    self._close(conn, effect.code, effect.reason)
            elif isinstance(effect, Event):
                only_sends = False
                self._observe(effect)
            elif self.backend is not None:
                only_sends = False  # Forward, QueueOp, Cooldown: the shared queue's
                self.backend.submit(effect)
        if only_sends:
            return  # a relay: the queue and the cooldowns, so the deadlines, are as they were
        deadline = self.lobby.next_deadline()
        if deadline is not None and (self._tick_at is None or deadline < self._tick_at):
            self._wake.set()

    async def _apply(self, effects: Iterable[core.Effect]) -> None:
        """Perform effects (the ticker's, the Redis worker's); awaits nothing but in unsafe mode."""
        if not self._await_writes:
            self._apply_now(effects)
            return
        for effect in effects:
            if isinstance(effect, Send):
                await self._send_awaited(effect)
            else:
                self._apply_now((effect,))

    def _close(self, conn: Connection, code: int, reason: str) -> None:
        """Close a peer's connection: stop reading it, send the close, abort after the grace."""
        if conn.closing:
            return
        conn.closing = True
        if conn.gate is not None:
            conn.gate.shut()
        if self._read_after_close and asyncio.current_task() is conn.task:
            # As drift once did: the handler closes inline, and aiohttp goes on
            # reading (and parsing) whatever comes until the close reply.
            conn.close_with = (code, reason)
            return
        if not self._read_after_close:
            conn.ws.linger = True
            loop = asyncio.get_running_loop()
            conn.abort_at = loop.time() + CLOSE_GRACE
            loop.call_at(conn.abort_at, conn.transport.abort)
        task = asyncio.create_task(self._close_ws(conn.ws, code, reason))
        self._closing_tasks.add(task)
        task.add_done_callback(self._closing_tasks.discard)

    async def _close_ws(self, ws: LingeringWebSocket, code: int, reason: str) -> None:
        with contextlib.suppress(TimeoutError, *_RESET_ERRORS):
            if self._read_after_close:
                await ws.close(code=code, message=reason.encode())
                return
            async with asyncio.timeout(CLOSE_GRACE):
                await ws.close(code=code, message=reason.encode())

    def _observe(self, event: core.Event) -> None:
        if event.name == "peer_matched":
            wait = event.fields.get("wait_s")
            if isinstance(wait, float):
                self.metrics.wait.observe(wait)
        level = 30 if event.name in ("peer_refused", "peer_abusive") else 20
        if not log.isEnabledFor(level):
            return  # a few events per connection: no fields dict for a line never written
        fields: dict[str, object] = {}
        if event.peer is not None:
            fields["peerId"] = event.peer
        if event.room is not None:
            fields["roomId"] = event.room
        fields.update(event.fields)
        log.log(level, event.name, extra={"fields": fields})

    async def _tick_loop(self) -> None:
        """Call ``Lobby.tick`` at its next deadline; woken early when one moves closer."""
        while True:
            self._wake.clear()
            self._tick_at = self.lobby.next_deadline()
            timeout = None if self._tick_at is None else max(0.0, self._tick_at - self._now())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            try:
                await self._apply(self.lobby.tick(self._now()))
            except Exception:
                # One bad send must not stop every queue timeout and cooldown.
                log.exception("tick_failed")

    # ------------------------------------------------------------ HTTP

    def _make_app(self) -> web.Application:
        # No middleware: each one costs every request a coroutine frame, and
        # aiohttp already logs a handler's unhandled exception with its traceback.
        app = web.Application()
        app.on_response_prepare.append(self._add_headers)
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/stats", self._stats)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._index)
        app.router.add_get("/favicon.ico", self._favicon)
        app.router.add_static("/static/", self._static, follow_symlinks=False)
        return app

    async def _add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        if self.gate is not None:
            # A request arrived whole: this socket has met its upgrade deadline.
            self.gate.served(request.protocol)
        response.headers.update(SECURITY_HEADERS)
        if request.path not in CORS_PATHS:
            return
        # The answer depends on Origin: a shared cache must not reuse it for another.
        response.headers["Vary"] = "Origin"
        origin = request.headers.get("Origin")
        if origin and self._origin_allowed(request, origin):
            response.headers["Access-Control-Allow-Origin"] = origin

    def _own_origin(self, request: web.Request) -> str:
        scheme, host = request.scheme, request.host
        if self.config.trust_proxy:
            scheme = request.headers.get("X-Forwarded-Proto", scheme).split(",")[0].strip()
            host = request.headers.get("X-Forwarded-Host", host).split(",")[0].strip()
        return f"{scheme}://{host}"

    def _origin_allowed(self, request: web.Request, origin: str) -> bool:
        if self.config.allowed_origins:
            # Only the list: Host is whatever name the browser used, so a page
            # served from a name rebound to this server's address (DNS
            # rebinding) would otherwise count as "our own origin".
            return origin in self.config.allowed_origins
        return origin == self._own_origin(request)

    def _client_addr(self, request: web.Request) -> str:
        if self.config.trust_proxy:
            # One list, however many header lines carry it (RFC 9110 5.3).
            forwarded = ",".join(request.headers.getall("X-Forwarded-For", ()))
            if forwarded.strip():
                # The rightmost entry is the one our own proxy appended; the
                # ones to its left are whatever the client chose to send.
                return forwarded.rsplit(",", 1)[-1].strip()
        return request.remote or ""

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(self._static / "index.html")

    async def _favicon(self, request: web.Request) -> web.StreamResponse:
        icon: Path = self._static / "favicon.svg"
        return web.FileResponse(icon, headers={"Content-Type": "image/svg+xml"})

    async def _healthz(self, request: web.Request) -> web.Response:
        if self.draining:
            return web.json_response({"status": "draining"}, status=503)
        return web.json_response({"status": "ok"})

    def stats(self) -> dict[str, object]:
        lobby = self.lobby
        return {
            "connections": lobby.connections,
            "waiting": lobby.waiting,
            "rooms": len(lobby.rooms),
            "matches_total": lobby.counters.matches,
            "uptime_s": round(time.monotonic() - self._started, 3),
            "rss_bytes": rss_bytes(),
            # this node's call reports; a cluster's sum is under cluster.calls
            "calls": lobby.calls.stats.snapshot(),
            **({"cluster": self.backend.cluster} if self.backend is not None else {}),
        }

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats(), dumps=json.dumps)

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.render(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    # ------------------------------------------------------------ WebSocket

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if self.draining:
            raise web.HTTPServiceUnavailable(text="server is shutting down")
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(request, origin):
            log.warning("origin_refused", extra={"fields": {"origin": origin[:200]}})
            raise web.HTTPForbidden(text="origin not allowed")
        transport = request.transport
        if transport is None:
            raise web.HTTPBadRequest(text="connection lost")
        ws = LingeringWebSocket(
            compress=False,
            # aiohttp refuses a frame of exactly max_msg_size; the protocol accepts 65,536.
            max_msg_size=MAX_FRAME_BYTES + 1,
            # Off: one HeartbeatWheel for the server, not a timer per socket.
            heartbeat=None,
            # How long a close waits for the peer's close reply.
            timeout=_UNSAFE_CLOSE_WAIT if self._read_after_close else CLOSE_GRACE,
        )
        peer_id = new_id()
        conn = Connection(self, peer_id, ws, transport)
        conn.gate = gate = FrameGate(
            transport,
            conn,
            billing=not self._free_control,
            stop_after_close=not self._read_after_close,
        )
        protocol = request.protocol
        # GatedRunner makes every socket's protocol one: the gate is what the
        # rate limit and the heartbeat see of the client, so it is not optional.
        assert isinstance(protocol, DriftRequestHandler)
        protocol.frame_gate = gate
        try:
            await ws.prepare(request)
        except _RESET_ERRORS:
            return ws  # gone during the handshake: nothing to clean up
        lobby = self.lobby
        conn.task = asyncio.current_task()
        self._conns[peer_id] = conn
        self._no_conns.clear()
        ice = self._ice(peer_id, time.time())
        # Looked up once: this loop runs for every frame of every peer. The
        # bound methods are the server's, made once (see __init__): bound here,
        # each connection would keep three of its own.
        now = self._now_fn
        receive, send, apply_now = self._hot
        awaiting = self._await_writes
        text = WSMsgType.TEXT
        try:
            apply_now(lobby.connect(peer_id, now(), self._client_addr(request), ice))
            while True:
                try:
                    msg = await ws.receive()
                except _RESET_ERRORS:
                    break  # the peer reset the connection: an ordinary disconnect
                if msg.type is text:
                    effects = receive(peer_id, msg.data, now())
                elif msg.type is WSMsgType.BINARY:
                    effects = lobby.receive_binary(peer_id, now())
                elif msg.type is WSMsgType.ERROR:
                    # aiohttp has already closed with the error's code (1002
                    # framing, 1009 too big, 1007 bad UTF-8); ws.close_code then
                    # holds the code of the peer's close reply, so read it from
                    # the error itself.
                    error = msg.data
                    if isinstance(error, WebSocketError) and error.code in _PROTOCOL_CLOSES:
                        lobby.note_close(error.code)
                    break
                else:
                    break
                if awaiting:
                    await self._apply(effects)
                elif len(effects) == 1 and type(effects[0]) is Send:
                    send(effects[0])  # a relay (or a lone error frame): the hot path
                elif len(effects) == 1 and type(effects[0]) is Forward and self.backend:
                    self.backend.submit(effects[0])  # a relay to another node: its hot path
                else:
                    apply_now(effects)
                if conn.close_with is not None:
                    await ws.close(code=conn.close_with[0], message=conn.close_with[1].encode())
        except Exception:
            # A bug, never bad input (that is an error frame) nor a peer going
            # away: say so with the close code docs/protocol.md reserves for it.
            log.exception("ws_handler_crashed", extra={"fields": {"peerId": peer_id}})
            lobby.note_close(CloseCode.INTERNAL_ERROR)
            self._close(conn, CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            del self._conns[peer_id]
            if not self._conns:
                self._no_conns.set()
            if conn.stall_timer is not None:
                conn.stall_timer.cancel()
            timed_out = conn.timed_out
            if timed_out:
                # Dropped by the heartbeat: no close frame went out (the peer is
                # not answering); 1006 is what its side reports, if it ever does.
                lobby.note_close(WSCloseCode.ABNORMAL_CLOSURE)
            gone = lobby.disconnect(
                peer_id, self._now(), "timeout" if timed_out else "disconnected"
            )
            if awaiting:
                await self._apply(gone)
            else:
                apply_now(gone)
            if self._read_after_close:
                pass  # Unsafe: aiohttp closes the socket whenever it gets to it
            elif conn.abort_at:
                # Returning lets aiohttp close the socket at once (see
                # LingeringWebSocket): hold it until the peer has read our close.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(conn.abort_at):
                        await asyncio.shield(gate.closed())
            else:
                # aiohttp closes the socket politely, which a peer that does
                # not read can hold open forever: bound it like any close.
                conn.closing = True
                if not transport.is_closing() or transport.get_write_buffer_size():
                    asyncio.get_running_loop().call_later(CLOSE_GRACE, transport.abort)
                # else: the peer's close was answered and the socket is closing
                # with nothing left to write, so it is gone in this iteration:
                # no timer (and no handle kept for a second) per connection.
        return ws


async def run_server(config: ServerConfig, ready: Callable[[str], None] | None = None) -> None:
    await Server(config).serve_forever(ready)

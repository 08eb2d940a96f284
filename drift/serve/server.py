"""``drift serve``: the aiohttp I/O shell around the pure :class:`~drift.core.lobby.Lobby`.

The WebSocket handler only moves bytes: frame in -> ``Lobby`` -> effects out.
Every protocol rule is in the core; what lives here is what needs a socket, an
HTTP request or a clock: Origin checks, security headers, heartbeats, timers,
logs, metrics and graceful shutdown (first signal drains, second forces).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import secrets
import signal
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web
from aiohttp.client_exceptions import ClientConnectionResetError

from drift.core import lobby as core
from drift.core.cluster import ClusterLobby
from drift.core.lobby import Close, Event, Fault, Lobby, Send
from drift.core.protocol import MAX_FRAME_BYTES, CloseCode
from drift.resources import data_dir
from drift.serve.config import ServerConfig
from drift.serve.logs import get_logger
from drift.serve.metrics import Metrics, rss_bytes

if TYPE_CHECKING:
    from drift.serve.redis_backend import RedisBackend

log = get_logger("drift.serve.server")

# script/style from our own origin only: no inline script, no eval. The page
# needs camera/microphone streams (mediastream:/blob:) and a WebSocket back to
# this server ('self' covers ws:/wss: of the same host in CSP level 3).
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(self), microphone=(self), geolocation=(), payment=(), usb=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_RESET_ERRORS: Final = (ConnectionResetError, ClientConnectionResetError, RuntimeError)
#: Closes aiohttp performs on its own for a bad frame (counted like the core's).
_PROTOCOL_CLOSES: Final = frozenset({WSCloseCode.MESSAGE_TOO_BIG, WSCloseCode.INVALID_TEXT})
#: JSON endpoints a page of an allowed origin may read cross-origin.
CORS_PATHS: Final = frozenset({"/healthz", "/stats"})
#: A second signal exits with 128 + its number, like a process killed by it.
FORCED_EXIT_BASE: Final = 128


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
        self.metrics = Metrics(lambda: self.lobby, self.cluster_stats)
        self.url = ""
        self.port = 0
        self.draining = False
        self._ice = self.config.ice_servers()
        # Below aiohttp's writer_limit (256 KiB), where a send starts to block.
        self._max_pending = min(self.config.max_pending_bytes, 255 * 1024)
        self._sockets: dict[str, web.WebSocketResponse] = {}
        # Kept to abort connections that cannot be closed politely by the deadline.
        self._transports: dict[str, asyncio.Transport] = {}
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._now_fn: Callable[[], float] = time.monotonic
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
        if self.backend is not None:
            await self.backend.start()
        self._runner = web.AppRunner(
            self.app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self.config.shutdown_timeout,
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
        log.info("server_started", extra={"fields": {"url": self.url, "pid": os.getpid()}})
        return self.url

    async def shutdown(self) -> None:
        """Drain: refuse new work, close every WebSocket with 1001, then stop listening.

        Bounded by ``shutdown_timeout``: a peer that does not read (so its close
        frame cannot be flushed) has its connection aborted at the deadline
        instead of holding the process up.
        """
        if self.draining:
            return
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.shutdown_timeout
        log.info("server_draining", extra={"fields": {"connections": len(self._sockets)}})
        sockets = dict(self._sockets)
        for _ in sockets:
            self.lobby.note_close(CloseCode.GOING_AWAY)
        closes = [
            ws.close(code=CloseCode.GOING_AWAY, message=b"server shutting down")
            for ws in sockets.values()
        ]
        if closes:
            try:
                async with asyncio.timeout_at(deadline):
                    await asyncio.gather(*closes, return_exceptions=True)
            except TimeoutError:
                stuck = [peer for peer in sockets if peer in self._transports]
                log.warning("server_shutdown_timeout", extra={"fields": {"aborted": len(stuck)}})
                for peer in stuck:
                    self._transports[peer].abort()
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
            ready(url)
        await stop.wait()
        # shutdown() keeps its own deadline; this outer bound only covers the
        # listener teardown that follows it.
        try:
            await asyncio.wait_for(self.shutdown(), self.config.shutdown_timeout + 1)
        except TimeoutError:
            log.warning("server_cleanup_timeout")

    # ------------------------------------------------------------ core glue

    def _now(self) -> float:
        return self._now_fn()

    def _send(self, effect: Send) -> Coroutine[Any, Any, None] | None:
        """The one way a frame goes out: the write to await, or None when there is none.

        A gone socket is skipped; a peer that stopped reading is cut off, since
        waiting for it would stall the sender (or the ticker, or the Redis
        worker) behind one dead peer.
        """
        ws = self._sockets.get(effect.peer)
        if ws is None or ws.closed:
            return None
        transport = self._transports.get(effect.peer)
        if (
            transport is not None
            and self._max_pending
            and transport.get_write_buffer_size() > self._max_pending
        ):
            log.warning("peer_stalled", extra={"fields": {"peerId": effect.peer}})
            self.lobby.note_close(WSCloseCode.ABNORMAL_CLOSURE)
            transport.abort()
            return None
        data = effect.data
        if isinstance(data, str):
            return ws.send_str(data)
        return ws.send_frame(data, WSMsgType.TEXT)

    async def _apply(self, effects: Iterable[core.Effect]) -> None:
        only_sends = True
        for effect in effects:
            if isinstance(effect, Send):
                sending = self._send(effect)
                if sending is not None:
                    try:
                        await sending
                    except _RESET_ERRORS:
                        continue  # the receiver is going away; its own handler cleans up
            elif isinstance(effect, Close):
                only_sends = False
                ws = self._sockets.get(effect.peer)
                if ws is not None and not ws.closed:
                    await ws.close(code=effect.code, message=effect.reason.encode())
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

    def _observe(self, event: core.Event) -> None:
        fields: dict[str, object] = {}
        if event.peer is not None:
            fields["peerId"] = event.peer
        if event.room is not None:
            fields["roomId"] = event.room
        fields.update(event.fields)
        if event.name == "peer_matched":
            wait = event.fields.get("wait_s")
            if isinstance(wait, float):
                self.metrics.wait.observe(wait)
        level = 30 if event.name in ("peer_refused", "peer_abusive") else 20
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
        return origin in self.config.allowed_origins or origin == self._own_origin(request)

    def _client_addr(self, request: web.Request) -> str:
        if self.config.trust_proxy:
            forwarded = request.headers.get("X-Forwarded-For")
            if forwarded:
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
            **({"cluster": self.backend.cluster} if self.backend is not None else {}),
        }

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats(), dumps=json.dumps)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    # ------------------------------------------------------------ WebSocket

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if self.draining:
            raise web.HTTPServiceUnavailable(text="server is shutting down")
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(request, origin):
            log.warning("origin_refused", extra={"fields": {"origin": origin[:200]}})
            raise web.HTTPForbidden(text="origin not allowed")
        ws = web.WebSocketResponse(
            compress=False,
            # aiohttp refuses a frame of exactly max_msg_size; the protocol accepts 65,536.
            max_msg_size=MAX_FRAME_BYTES + 1,
            heartbeat=self.config.heartbeat or None,
        )
        await ws.prepare(request)
        peer_id = new_id()
        lobby = self.lobby
        self._sockets[peer_id] = ws
        if request.transport is not None:
            self._transports[peer_id] = request.transport
        ice = self._ice(peer_id, time.time())
        # Bound once: this loop runs for every frame of every peer.
        now, receive, apply, send = self._now_fn, lobby.receive, self._apply, self._send
        text = WSMsgType.TEXT
        try:
            await apply(lobby.connect(peer_id, now(), self._client_addr(request), ice))
            while not ws.closed:
                msg = await ws.receive()
                if msg.type is text:
                    effects = receive(peer_id, msg.data, now())
                elif msg.type is WSMsgType.BINARY:
                    effects = lobby.receive_binary(peer_id, now())
                elif msg.type is WSMsgType.ERROR:
                    # aiohttp has already closed with the error's code (1009 too
                    # big, 1007 bad UTF-8); ws.close_code then holds the code of
                    # the peer's close reply, so read it from the error itself.
                    error = msg.data
                    if isinstance(error, WebSocketError) and error.code in _PROTOCOL_CLOSES:
                        lobby.note_close(error.code)
                    break
                else:
                    break
                if len(effects) == 1 and type(effects[0]) is Send:
                    # A relay (or a lone error frame): the hot path, without the
                    # coroutine of _apply around the one write.
                    sending = send(effects[0])
                    if sending is not None:
                        with contextlib.suppress(*_RESET_ERRORS):
                            await sending
                    continue
                await apply(effects)
        except Exception:
            # A bug, never bad input (that is an error frame): say so with the
            # close code docs/protocol.md reserves for it, then clean up as usual.
            log.exception("ws_handler_crashed", extra={"fields": {"peerId": peer_id}})
            lobby.note_close(CloseCode.INTERNAL_ERROR)
            if not ws.closed:
                await ws.close(code=CloseCode.INTERNAL_ERROR, message=b"internal error")
        finally:
            del self._sockets[peer_id]
            self._transports.pop(peer_id, None)
            timed_out = isinstance(ws.exception(), TimeoutError)
            if timed_out:
                # Dropped by the heartbeat: no close frame went out (the peer is
                # not answering); 1006 is what its side reports, if it ever does.
                lobby.note_close(WSCloseCode.ABNORMAL_CLOSURE)
            gone = lobby.disconnect(
                peer_id, self._now(), "timeout" if timed_out else "disconnected"
            )
            await self._apply(gone)
        return ws


async def run_server(config: ServerConfig, ready: Callable[[str], None] | None = None) -> None:
    await Server(config).serve_forever(ready)

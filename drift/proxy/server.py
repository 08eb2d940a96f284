"""The fault proxy: one upstream WebSocket per client connection, frames changed on the way.

Every client that connects to the proxy's ``/ws`` gets its own connection to
the upstream server; frames from the client go upstream unchanged (except the
bookkeeping of :class:`Leg`), frames from the server pass through
:meth:`FaultProxy.downstream`, where the :class:`~drift.proxy.faults.WireFault`
is applied. Other ``GET`` paths (``/healthz``, ``/stats``) are forwarded as is.

Bounded: at most ``max_connections`` legs, frames up to the protocol's size,
and each leg's frames to its client go through one bounded queue and one
writer task, so a slow client never blocks another leg (a frame delivered to
another room is queued there, not written from here). A leg whose queue fills
up is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

import aiohttp
import msgspec
from aiohttp import web

from drift.client.urls import endpoint, ws_url
from drift.core.protocol import MAX_FRAME_BYTES
from drift.proxy.faults import WireFault, tamper_fingerprint

#: frames queued for one client before the leg is closed as too slow
QUEUE_FRAMES: Final = 1024
_RELAYS: Final = frozenset({"offer", "answer", "ice-candidate"})
_CONNECT_TIMEOUT: Final = 10.0


class Leg:
    """One client connection and its upstream connection, with what the proxy saw on it."""

    def __init__(self, client: web.WebSocketResponse, number: int) -> None:
        self.client = client
        self.number = number
        self.upstream: aiohttp.ClientWebSocketResponse | None = None
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue(QUEUE_FRAMES)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.room_id: str | None = None
        self.role: str | None = None
        self.waited = False  # got waiting since its last join/next
        #: a false partner-left was delivered: the room's frames are swallowed from here
        self.lied = False
        self.dropped = False  # drop-relay: this room's offer is gone already
        self.closed = False

    def deliver(self, text: str) -> None:
        """Queue ``text`` for the client; never awaits (it may be called from another leg)."""
        if self.closed:
            return
        try:
            self.outbox.put_nowait(text)
        except asyncio.QueueFull:
            self.close_soon()

    def later(self, delay: float, action: Any) -> None:
        """Run ``action()`` after ``delay`` seconds unless the leg closed by then."""

        async def wait_then() -> None:
            await asyncio.sleep(delay)
            if not self.closed:
                action()

        task = asyncio.ensure_future(wait_then())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def close_soon(self) -> None:
        self.closed = True
        with contextlib.suppress(asyncio.QueueFull):
            self.outbox.put_nowait(None)

    def end_room(self) -> None:
        self.room_id = self.role = None
        self.lied = self.dropped = False


class FaultProxy:
    """Listens on ``host:port`` (0 = a free port) and proxies to ``upstream``."""

    def __init__(
        self,
        upstream: str,
        fault: WireFault = WireFault.NONE,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        delay: float = 1.0,
        max_connections: int = 1000,
    ) -> None:
        self.upstream = ws_url(upstream)
        self.fault = fault
        self.host = host
        self.port = port
        self.delay = delay
        self.max_connections = max_connections
        self.legs: dict[int, Leg] = {}
        self.counters: dict[str, int] = {}
        self._numbers = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> str:
        """Start listening; returns the proxy's WebSocket URL (the real port read back)."""
        app = web.Application()
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/{tail:.*}", self._http)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True)
        )
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"ws://{self.host}:{port}/ws"
        return self.url

    async def stop(self) -> None:
        for leg in list(self.legs.values()):
            leg.close_soon()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    # ------------------------------------------------------------ HTTP

    async def _http(self, request: web.Request) -> web.Response:
        assert self._session is not None
        url = endpoint(self.upstream, "/" + request.match_info["tail"])
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(10)) as resp:
                body = await resp.content.read(1 << 20)
                return web.Response(status=resp.status, body=body, content_type=resp.content_type)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return web.Response(status=502, text=f"upstream unreachable: {exc}")

    # ------------------------------------------------------------ WebSocket

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if len(self.legs) >= self.max_connections:
            raise web.HTTPServiceUnavailable(text="drift proxy: too many connections")
        client = web.WebSocketResponse(compress=False, max_msg_size=MAX_FRAME_BYTES + 1)
        await client.prepare(request)
        self._numbers += 1
        leg = Leg(client, self._numbers)
        self.legs[leg.number] = leg
        assert self._session is not None
        try:
            try:
                leg.upstream = await self._session.ws_connect(
                    self.upstream,
                    compress=0,
                    max_msg_size=0,
                    timeout=aiohttp.ClientWSTimeout(ws_close=_CONNECT_TIMEOUT),
                )
            except (aiohttp.ClientError, OSError, TimeoutError):
                await client.close(code=1011, message=b"upstream unreachable")
                return client
            writer = asyncio.ensure_future(self._write(leg))
            down = asyncio.ensure_future(self._down(leg))
            up = asyncio.ensure_future(self._up(leg))
            await asyncio.wait({writer, down, up}, return_when=asyncio.FIRST_COMPLETED)
            leg.close_soon()
            for task in (down, up, *leg.tasks):
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(writer, 1.0)
            for task in (down, up):
                with contextlib.suppress(BaseException):
                    await task
        finally:
            leg.closed = True
            self.legs.pop(leg.number, None)
            if leg.upstream is not None:
                await leg.upstream.close()
            await client.close()
        return client

    async def _write(self, leg: Leg) -> None:
        while True:
            text = await leg.outbox.get()
            if text is None or leg.client.closed:
                return
            await leg.client.send_str(text)

    async def _up(self, leg: Leg) -> None:
        """Client -> server: unchanged, except that a lied-to client is brought back in line."""
        assert leg.upstream is not None
        async for frame in leg.client:
            if frame.type is not aiohttp.WSMsgType.TEXT:
                return
            kind = _type_of(frame.data)
            if kind in ("join", "next", "leave"):
                if kind == "join" and leg.lied:
                    # the server still has this client in the room the lie ended
                    await leg.upstream.send_str('{"type":"leave"}')
                leg.end_room()
                leg.waited = False
            await leg.upstream.send_str(frame.data)

    async def _down(self, leg: Leg) -> None:
        assert leg.upstream is not None
        async for frame in leg.upstream:
            if frame.type is not aiohttp.WSMsgType.TEXT:
                return
            self.downstream(leg, frame.data)

    # ------------------------------------------------------------ the faults

    def downstream(self, leg: Leg, text: str) -> None:
        """Apply the fault to one server frame for ``leg`` and deliver what remains."""
        try:
            msg = msgspec.json.decode(text)
        except msgspec.DecodeError:
            leg.deliver(text)
            return
        kind = msg.get("type") if isinstance(msg, dict) else None
        fault = self.fault
        if kind == "waiting":
            leg.waited = True
        elif kind == "matched":
            self._matched(leg, msg)
            return
        elif kind == "partner-left":
            if leg.lied:
                self._count("swallowed")
                leg.end_room()
                return
            leg.end_room()
        elif kind in _RELAYS:
            if leg.lied:
                self._count("swallowed")
                return
            if fault is WireFault.DROP_RELAY and kind == "offer" and not leg.dropped:
                # the candidates that follow still arrive: only the checker's order
                # rule (a later frame came, an earlier one never did) can see it
                leg.dropped = True
                self._count(fault)
                return
            if fault is WireFault.TAMPER_FINGERPRINT and kind in ("offer", "answer"):
                sdp = msg["sdp"]
                if isinstance(sdp, dict) and isinstance(sdp.get("sdp"), str):
                    sdp["sdp"] = tamper_fingerprint(sdp["sdp"])
                    text = msgspec.json.encode(msg).decode()
                    self._count(fault)
            if fault is WireFault.DUPLICATE_RELAY:
                leg.deliver(text)
                self._count(fault)
            if fault is WireFault.CROSS_ROOM:
                other = self._other_room(leg)
                if other is not None:
                    other.deliver(text)
                    self._count(fault)
        leg.deliver(text)

    def _matched(self, leg: Leg, msg: dict[str, Any]) -> None:
        fault = self.fault
        if fault is WireFault.SWAP_ROLES:
            msg["role"] = "answerer" if msg.get("role") == "offerer" else "offerer"
            self._count(fault)
        leg.room_id = msg.get("roomId") if isinstance(msg.get("roomId"), str) else None
        leg.role = msg.get("role") if isinstance(msg.get("role"), str) else None
        leg.lied = leg.dropped = False
        text = msgspec.json.encode(msg).decode()
        waited, leg.waited = leg.waited, False
        if fault is WireFault.DELAY_MATCHED and waited:
            # the partner's offer (sent on its own matched) now overtakes ours
            leg.later(self.delay, lambda: leg.deliver(text))
            self._count(fault)
            return
        leg.deliver(text)
        if fault is WireFault.FALSE_PARTNER_LEFT and leg.role == "answerer":
            room = leg.room_id

            def lie() -> None:
                if leg.room_id == room and not leg.lied:
                    leg.lied = True
                    leg.deliver('{"type":"partner-left","reason":"left"}')
                    self._count(fault)

            leg.later(self.delay, lie)

    def _other_room(self, leg: Leg) -> Leg | None:
        """A live leg matched in a room other than ``leg``'s (the oldest, so it is stable)."""
        for other in self.legs.values():
            if (
                other is not leg
                and other.room_id
                and other.room_id != leg.room_id
                and not other.closed
            ):
                return other
        return None


def _type_of(text: str) -> str | None:
    try:
        msg = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return None
    kind = msg.get("type") if isinstance(msg, dict) else None
    return kind if isinstance(kind, str) else None

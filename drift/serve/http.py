"""The HTTP layer under ``drift serve``: sockets before their upgrade, and aiohttp's own answers.

aiohttp keeps a socket that never finishes a request for about an hour and
counts nothing before a handler runs, so silent or dripping sockets
(slowloris) could take every file descriptor. :class:`SocketGate` bounds them:

- a socket has ``upgrade_timeout`` seconds to finish its first request (for
  ``/ws``, the upgrade), whether it sends nothing or one byte at a time;
- at most ``max_handshakes`` sockets may be in that state at once, and at most
  ``per_address`` of them from one address (none from one address when 0);
  beyond that a new socket is dropped at once;
- between two requests, aiohttp's keep-alive timeout (set short) applies.

:class:`DriftRequestHandler` also answers the HTTP parser's own errors (bad
request line, too many or too long headers) with a fixed text and the security
headers, instead of aiohttp's answer that echoes the request's bytes.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any, Final

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from drift.serve.frames import FrameGate

log = logging.getLogger("drift.serve.http")

# script/style from our own origin only: no inline script, no eval. The page
# needs camera/microphone streams (mediastream:/blob:) and a WebSocket back to
# this server ('self' covers ws:/wss: of the same host in CSP level 3).
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: On every answer the server sends, its HTTP parser's errors included.
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(self), microphone=(self), geolocation=(), payment=(), usb=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def peer_host(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


class SocketGate:
    """Sockets that have not finished a request yet: capped, and given a deadline."""

    def __init__(self, max_sockets: int, per_address: int, deadline: float) -> None:
        self.max_sockets = max_sockets
        self.per_address = per_address
        self.deadline = deadline
        self._pending: dict[RequestHandler, tuple[asyncio.TimerHandle | None, str]] = {}
        self._per_address: dict[str, int] = {}
        #: sockets dropped, by reason: "cap" (too many at once), "deadline"
        self.dropped: dict[str, int] = {"cap": 0, "deadline": 0}

    @property
    def pending(self) -> int:
        return len(self._pending)

    def opened(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        addr = peer_host(transport) if self.per_address else ""
        if len(self._pending) >= self.max_sockets or (
            self.per_address and self._per_address.get(addr, 0) >= self.per_address
        ):
            self.dropped["cap"] += 1
            # Not from inside connection_made: aiohttp's handler task, created
            # just after this, must start before the socket is gone.
            asyncio.get_running_loop().call_soon(transport.abort)
            return
        timer = None
        if self.deadline > 0:
            loop = asyncio.get_running_loop()
            timer = loop.call_later(self.deadline, self._expire, handler, transport)
        self._pending[handler] = (timer, addr)
        if self.per_address:
            self._per_address[addr] = self._per_address.get(addr, 0) + 1

    def served(self, handler: object) -> None:
        """A request arrived whole on this socket (called for every answer; cheap)."""
        entry = self._pending.pop(handler, None)  # type: ignore[call-overload]
        if entry is None:
            return
        timer, addr = entry
        if timer is not None:
            timer.cancel()
        if self.per_address:
            left = self._per_address[addr] - 1
            if left:
                self._per_address[addr] = left
            else:
                del self._per_address[addr]

    def _expire(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        if handler in self._pending:
            self._pending[handler] = (None, self._pending[handler][1])
            self.served(handler)
            self.dropped["deadline"] += 1
            transport.abort()


#: aiohttp's names for the per-socket HTTP parser and request queue (slots of
#: its protocol); on an aiohttp without them nothing is freed.
_HTTP_STATE_FREEABLE: Final = all(
    hasattr(RequestHandler, name) for name in ("_parser", "_messages", "_upgraded")
)
_NO_MESSAGES: Final = ()


class DriftRequestHandler(RequestHandler):
    """aiohttp's per-socket protocol, with drift's error answers and frame gate."""

    __slots__ = ("frame_gate",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: set by the /ws handler before the upgrade, so that even frames sent
        #: together with the upgrade request go through it
        self.frame_gate: FrameGate | None = None

    def set_parser(self, parser: Any, data_received_cb: Any = None) -> None:
        gate = self.frame_gate
        # The gate stands in for the reader: aiohttp calls only feed_data/feed_eof.
        wrapped: Any = gate.attach(parser) if gate is not None else parser
        super().set_parser(wrapped, data_received_cb)
        if _HTTP_STATE_FREEABLE and self._upgraded:
            # The socket speaks WebSocket from here on: aiohttp never parses
            # HTTP on it again (nor queues a request), yet would keep its HTTP
            # parser and an empty request queue (~1.4 KB) for the socket's life.
            # None and an empty tuple are what its code already copes with
            # (it checks the parser for None, the queue only for emptiness),
            # and an append to the tuple would fail loudly, not silently.
            self._parser = None
            self._messages = _NO_MESSAGES  # type: ignore[assignment]

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # A malformed request is the client's doing: one line, no traceback
        # (anyone can send them), and never the request's bytes in the answer.
        if status >= 500 and not isinstance(exc, ConnectionError):
            log.error("http_handler_crashed", exc_info=exc)
        else:
            log.debug("http_bad_request", extra={"fields": {"status": status}})
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was already started on this connection")
        phrase = HTTPStatus(status).phrase
        resp = web.Response(status=status, text=f"{status} {phrase}\n", headers=SECURITY_HEADERS)
        resp.force_close()
        return resp


class GatedServer(web.Server):
    """aiohttp's low-level server, telling the :class:`SocketGate` about each socket."""

    gate: SocketGate | None = None

    def __call__(self) -> RequestHandler:
        # The same construction as web.Server.__call__, with drift's handler.
        return DriftRequestHandler(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if self.gate is not None:
            self.gate.opened(handler, transport)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        if self.gate is not None:
            self.gate.served(handler)


class GatedRunner(web.AppRunner):
    """An AppRunner whose server is a :class:`GatedServer` (``gate`` None: ungated)."""

    def __init__(
        self,
        app: web.Application,
        gate: SocketGate | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._gate = gate

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # web.Server has no __slots__ and GatedServer adds only methods and a
        # class attribute, so the instance aiohttp built can become one.
        server.__class__ = GatedServer
        assert isinstance(server, GatedServer)
        server.gate = self._gate
        return server

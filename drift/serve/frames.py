"""The gate between a client's socket and aiohttp's WebSocket reader.

aiohttp answers pings and joins fragments inside its reader, so a flood of
them never reaches the handler and the core's rate limit cannot see it. This
gate reads only the frame headers of each chunk (a few operations per frame,
payloads are skipped, never copied) before passing the chunk on, and

- bills every frame the core will not see — control frames and non-final
  fragments — to the connection's budget (``Owner.on_frames``); the final frame of a
  message is billed by the core when the message arrives;
- reports an unmasked client frame (RFC 6455 5.1: the server must close the
  connection; aiohttp accepts it) through ``Owner.on_violation``;
- marks the connection as heard from (``Owner.idle = 0``), which is all the
  heartbeat (:mod:`drift.serve.heartbeat`) needs per chunk;
- once the server has decided to close (:meth:`shut`), passes on at most
  :data:`CLOSE_ALLOWANCE` more bytes — room for the peer's close reply —,
  throws away (unparsed) at most :data:`DISCARD_LIMIT` more, and then stops
  reading the socket, so a flood after the close costs next to nothing.

Why throw some bytes away rather than stop at once: closing a socket whose
receive buffer holds unread bytes makes the kernel send a reset, and a reset
makes the peer's kernel drop what it has not read yet — our close frame with
it. A client that sent a burst and then stopped must still see why it was closed,
even one whose library reads only once its burst is written. Dropping 16 MiB
unparsed costs about a hundred reads: the parsing is what a flood made expensive.
"""

from __future__ import annotations

import asyncio
from typing import Final, Protocol

#: Bytes still parsed after the close decision: a close reply is 8 bytes.
CLOSE_ALLOWANCE: Final = 1024
#: Bytes then read and dropped unparsed before the socket is no longer read.
DISCARD_LIMIT: Final = 16 << 20
_PASSED: Final = (False, b"")
#: Frames billed at a time while a chunk is scanned.
_STEP: Final = 64


class Owner(Protocol):
    """The connection a gate reports to (one object per connection, no closures)."""

    #: reset to 0 whenever the client sends a byte (the heartbeat's measure of silence)
    idle: int

    def on_frames(self, frames: int) -> None:
        """Bill ``frames`` frames the core will not see to the connection's budget."""

    def on_violation(self) -> None:
        """The client sent an unmasked frame."""


class Parser(Protocol):
    """What aiohttp's protocol calls on its payload parser (the WebSocketReader)."""

    def feed_data(self, data: bytes) -> tuple[bool, bytes]: ...

    def feed_eof(self) -> None: ...


class FrameGate:
    """Wraps one connection's WebSocket reader; see the module docstring."""

    __slots__ = (
        "_allowance",
        "_billing",
        "_closed",
        "_discard",
        "_eof",
        "_head",
        "_inner",
        "_owner",
        "_skip",
        "_transport",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        owner: Owner,
        *,
        billing: bool = True,
        stop_after_close: bool = True,
    ) -> None:
        self._inner: Parser | None = None
        self._transport = transport
        self._owner = owner
        self._billing = billing
        #: payload bytes of the current frame not seen yet
        self._skip = 0
        #: the start of a frame header cut by the end of the last chunk
        self._head = b""
        #: -1 while open; bytes still passed on once shut (-2: never stop, unsafe)
        self._allowance = -1 if stop_after_close else -2
        self._discard = DISCARD_LIMIT
        #: the socket is gone (aiohttp feeds the reader its EOF then)
        self._eof = False
        #: made only for whoever waits for the EOF (a future per socket costs ~150 B)
        self._closed: asyncio.Future[None] | None = None

    def attach(self, inner: Parser) -> FrameGate:
        self._inner = inner
        return self

    def shut(self) -> None:
        """The server is closing this connection: stop reading it soon."""
        if self._allowance == -1:
            self._allowance = CLOSE_ALLOWANCE

    def closed(self) -> asyncio.Future[None]:
        """Done once the socket is gone."""
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
            if self._eof:
                self._closed.set_result(None)
        return self._closed

    def feed_eof(self) -> None:
        self._eof = True
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        if self._inner is not None:
            self._inner.feed_eof()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        inner = self._inner
        assert inner is not None, "attach() the reader first"
        if type(data) is not bytes:
            data = bytes(data)
        owner = self._owner
        owner.idle = 0
        if self._allowance >= 0:
            return self._closing(inner, data)
        buf = self._head + data if self._head else data
        self._head = b""
        pos = 0
        while pos >= 0:
            # Billed a step at a time: a chunk of 30,000 pings is closed after
            # the first steps, not scanned to its end first.
            pos, billed = self._scan(buf, pos)
            if billed < 0:
                owner.on_violation()
                return self._closing(inner, b"")
            if billed and self._billing:
                owner.on_frames(billed)
                if self._allowance >= 0:  # the bill ended in a close
                    return self._closing(inner, data)
        return inner.feed_data(data)

    def _closing(self, inner: Parser, data: bytes) -> tuple[bool, bytes]:
        allowance = self._allowance
        if len(data) <= allowance:
            self._allowance = allowance - len(data)
            return inner.feed_data(data) if data else _PASSED
        self._allowance = 0
        self._discard -= len(data) - allowance
        if self._discard < 0:
            # Nothing more is read from this socket: the kernel's buffers fill
            # and the peer's own sends block, at no cost to the server.
            self._transport.pause_reading()
        return inner.feed_data(data[:allowance]) if allowance else _PASSED

    def _scan(self, data: bytes, pos: int) -> tuple[int, int]:
        """From ``pos``: (where to go on, or -1 at the end; frames to bill, or -1 if unmasked)."""
        size = len(data)
        if pos == 0:
            pos = self._skip
            if pos >= size:
                self._skip = pos - size
                return -1, 0
        billed = 0
        while billed < _STEP:
            if size - pos < 2:
                self._head = data[pos:]
                self._skip = 0
                return -1, billed
            first, second = data[pos], data[pos + 1]
            if not second & 0x80:
                return -1, -1
            length = second & 0x7F
            header = 6 if length < 126 else 8 if length == 126 else 14
            if size - pos < header:
                self._head = data[pos:]
                self._skip = 0
                return -1, billed
            if length == 126:
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            elif length == 127:
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            # Control frames (opcode 8+) and every fragment but the last.
            if first & 0x08 or not first & 0x80:
                billed += 1
            pos += header + length
            if pos >= size:
                self._skip = pos - size
                return -1, billed
        return pos, billed

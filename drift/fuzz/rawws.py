"""A minimal RFC 6455 client over asyncio streams that sends whatever it is told.

aiohttp's client (rightly) refuses to send invalid UTF-8 in a text message,
non-final frames, reserved bits or opcodes; the fuzzer needs exactly those, so
it writes frames itself. Reading is just enough to see the server's answers:
text/binary messages, pings (answered), and the close code.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import socket
import ssl
import struct
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

CONTINUATION: Final = 0x0
TEXT: Final = 0x1
BINARY: Final = 0x2
CLOSE: Final = 0x8
PING: Final = 0x9
PONG: Final = 0xA

_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEADER: Final = 16_384


class HandshakeFailed(Exception):
    """The server did not upgrade to a WebSocket (``status`` is the HTTP status, 0 if none)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message from the server: ``text``/``binary`` data, or ``close``/``eof``."""

    kind: str
    data: bytes = b""
    code: int | None = None


def encode_frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True
) -> bytes:
    """One frame on the wire; ``rsv`` is the three reserved bits (0-7)."""
    head = bytearray([(0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)])
    length = len(payload)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        head.append(mask_bit | length)
    elif length < 1 << 16:
        head.append(mask_bit | 126)
        head += struct.pack("!H", length)
    else:
        head.append(mask_bit | 127)
        head += struct.pack("!Q", length)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    # XOR with the repeating 4-byte key, via int arithmetic (fast for 64 KiB frames).
    repeated = (key * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        length, "big"
    )
    return bytes(head) + key + masked


class RawWebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.closed = False
        self.close_code: int | None = None
        self._close_sent = False

    @classmethod
    async def connect(
        cls, url: str, timeout: float, *, sock: socket.socket | None = None
    ) -> RawWebSocket:
        """Open ``url`` (over ``sock`` if given: a socket already connected to its host)."""
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise HandshakeFailed(f"not a ws:// or wss:// URL: {url}")
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        async with asyncio.timeout(timeout):
            tls = ssl.create_default_context() if secure else None
            if sock is not None:
                reader, writer = await asyncio.open_connection(
                    sock=sock, ssl=tls, server_hostname=parts.hostname if tls else None
                )
            else:
                reader, writer = await asyncio.open_connection(
                    parts.hostname, port, ssl=tls, limit=1 << 20
                )
            try:
                key = base64.b64encode(os.urandom(16)).decode()
                host = parts.netloc.rsplit("@", 1)[-1]
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n".encode()
                )
                head = await reader.readuntil(b"\r\n\r\n")
            except BaseException:
                writer.close()
                raise
        if len(head) > _MAX_HEADER:
            writer.close()
            raise HandshakeFailed("oversized handshake response")
        lines = head.decode("latin-1").split("\r\n")
        status_parts = lines[0].split(" ", 2)
        status = int(status_parts[1]) if len(status_parts) > 1 and status_parts[1].isdigit() else 0
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:] if line)
        }
        accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
        if status != 101 or headers.get("sec-websocket-accept") != accept:
            writer.close()
            raise HandshakeFailed(f"upgrade refused: {lines[0]}", status)
        return cls(reader, writer)

    async def send(self, opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> None:
        self.writer.write(encode_frame(opcode, payload, fin=fin, rsv=rsv))
        await self.writer.drain()

    async def recv(self, timeout: float) -> Incoming:
        """The next message; pings are answered on the way. ``eof`` once the socket ends."""
        if self.closed:
            return Incoming("close", code=self.close_code)
        async with asyncio.timeout(timeout):
            fragments: list[bytes] = []
            first_opcode = 0
            while True:
                try:
                    fin, opcode, payload = await self._read_frame()
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.closed = True
                    return Incoming("eof")
                if opcode == PING:
                    with contextlib.suppress(ConnectionError):
                        await self.send(PONG, payload)
                    continue
                if opcode == PONG:
                    continue
                if opcode == CLOSE:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    self.close_code = code
                    await self._finish_close(payload[:2])
                    return Incoming("close", payload[2:], code)
                if opcode != CONTINUATION:
                    first_opcode = opcode
                fragments.append(payload)
                if fin:
                    data = b"".join(fragments)
                    return Incoming("text" if first_opcode == TEXT else "binary", data)

    async def _read_frame(self) -> tuple[bool, int, bytes]:
        b0, b1 = await self.reader.readexactly(2)
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        key = await self.reader.readexactly(4) if b1 & 0x80 else b""
        payload = await self.reader.readexactly(length)
        if key:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return bool(b0 & 0x80), b0 & 0x0F, payload

    async def _finish_close(self, code: bytes) -> None:
        """Echo the close (RFC 6455 5.5.1) so the server need not wait for its timeout."""
        self.closed = True
        if not self._close_sent:
            self._close_sent = True
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.writer.write(encode_frame(CLOSE, code))
                await self.writer.drain()
        self.writer.close()

    async def close(self, code: int = 1000) -> None:
        """Client-initiated close: send ours, wait briefly for the server's, drop the socket."""
        if not self.closed:
            self._close_sent = True
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.send(CLOSE, struct.pack("!H", code))
                with contextlib.suppress(TimeoutError):
                    while not self.closed:
                        await self.recv(2.0)
            self.closed = True
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()

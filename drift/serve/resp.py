"""RESP, Redis's wire protocol, over a plain asyncio stream: the hot paths of the Redis backend.

Every frame relayed between two nodes costs a ``PUBLISH`` on the sender's node
and a pub/sub message on the receiver's. Through redis-py those cost more than
the rest of the relay together (measured in docs/performance.md: its pipeline
objects, connection pool and per-message ``PubSub`` dicts, in Python, per
frame). So the two streams a frame travels use this module instead:

* a node's **ordered command stream** (:class:`Connection`: :meth:`~Connection.send`
  writes a whole batch of commands in one write, :meth:`~Connection.replies`
  reads their replies in order; :class:`Publisher` packs a relayed frame's
  ``PUBLISH``), and
* a node's **inbox subscription** (:meth:`~Connection.read` returns every
  complete reply of one read from the socket).

Commands are packed and replies parsed by hiredis, in C. Everything else the
backend says to Redis (heartbeats, figures, shutdown: a few commands a second)
stays on redis-py.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
from redis.connection import SSLConnection, parse_url

from drift.errors import DriftError

#: One command: its name, then its arguments (packed as bulk strings).
Command = tuple[str | bytes | int | float, ...]

#: Bytes asked of the socket per read.
_READ_SIZE = 1 << 16


def pack(command: Command) -> bytes:
    """``command`` as RESP (an array of bulk strings), ready for :meth:`Connection.send`."""
    # (hiredis's stub types the tuple as one element long, and the result as Any)
    packed: bytes = hiredis.pack_command(command)  # type: ignore[arg-type]
    return packed


class Publisher:
    """``PUBLISH`` on one channel, packed by hand: one per frame relayed to another node.

    Same bytes as :func:`pack` (``("PUBLISH", channel, message)``) in a third of
    the time: the channel's part is packed once.
    """

    __slots__ = ("_head",)

    def __init__(self, channel: str) -> None:
        name = channel.encode()
        self._head = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n" % (len(name), name)

    def pack(self, message: bytes) -> bytes:
        return b"".join((self._head, b"$%d\r\n" % len(message), message, b"\r\n"))


class RespError(DriftError):
    """Redis answered with an error, or broke the protocol, or went away."""


@dataclass(frozen=True, slots=True)
class Address:
    """Where Redis is and how to log in, from a ``redis://``/``rediss://``/``unix://`` URL."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None
    username: str | None = None
    password: str | None = None
    db: int = 0
    tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> Address:
        # redis-py's parser: the same URL means the same Redis on both paths.
        parts: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        return cls(
            host=str(parts.get("host") or "localhost"),
            port=int(parts.get("port") or 6379),
            path=parts.get("path"),
            username=parts.get("username"),
            password=parts.get("password"),
            db=int(parts.get("db") or 0),
            tls=parts.get("connection_class") is SSLConnection,
        )


class Connection:
    """One connection to Redis; replies decoded as ``str`` when ``encoding`` is given.

    Error replies come back from :meth:`replies` and :meth:`read` as
    ``hiredis.ReplyError`` values, in their place: the caller decides what an
    error means. A closed or broken stream raises :class:`RespError` (or
    ``OSError``), after which the connection is of no further use.
    """

    __slots__ = ("_parser", "_reader", "_writer")

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, encoding: str | None
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = hiredis.Reader(encoding=encoding) if encoding else hiredis.Reader()

    @classmethod
    async def open(
        cls, address: Address, timeout: float, encoding: str | None = None
    ) -> Connection:
        """Connect and log in (``AUTH``, ``SELECT``), all within ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            if address.path is not None:
                reader, writer = await asyncio.open_unix_connection(address.path)
            else:
                tls = ssl.create_default_context() if address.tls else None
                reader, writer = await asyncio.open_connection(address.host, address.port, ssl=tls)
            conn = cls(reader, writer, encoding)
            try:
                hello: list[Command] = []
                if address.password is not None and address.username:
                    hello.append(("AUTH", address.username, address.password))
                elif address.password is not None:
                    hello.append(("AUTH", address.password))
                if address.db:
                    hello.append(("SELECT", address.db))
                if hello:
                    conn.send([pack(command) for command in hello])
                    for reply in await conn.replies(len(hello)):
                        if isinstance(reply, hiredis.ReplyError):
                            raise RespError(str(reply))
            except BaseException:
                conn.close()
                raise
        return conn

    def send(self, packed: Sequence[bytes]) -> None:
        """Write packed commands (:func:`pack`) in one write; their replies come in order."""
        self._writer.write(b"".join(packed))

    async def replies(self, count: int) -> list[Any]:
        """The next ``count`` replies, in the order of the commands."""
        out: list[Any] = []
        parser = self._parser
        try:
            while True:
                while len(out) < count:
                    reply = parser.gets()
                    if reply is False:
                        break
                    out.append(reply)
                if len(out) == count:
                    return out
                self._feed(await self._reader.read(_READ_SIZE))
        except hiredis.ProtocolError as exc:  # not a Redis on the other end
            raise RespError(str(exc)) from exc

    async def read(self) -> list[Any]:
        """Every complete reply the next read from the socket brings (at least one)."""
        parser = self._parser
        out: list[Any] = []
        try:
            while not out:
                self._feed(await self._reader.read(_READ_SIZE))
                while (reply := parser.gets()) is not False:
                    out.append(reply)
        except hiredis.ProtocolError as exc:
            raise RespError(str(exc)) from exc
        return out

    def _feed(self, data: bytes) -> None:
        if not data:
            raise RespError("Redis closed the connection")
        self._parser.feed(data)

    @property
    def closed(self) -> bool:
        """Redis already closed it (it restarted, say): no command sent now could run."""
        return self._reader.at_eof() or self._writer.is_closing()

    def close(self) -> None:
        self._writer.close()

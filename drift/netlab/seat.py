"""Seat a synthetic peer in its home: its ICE sockets are opened in the home's namespace.

One event loop holds peers of many homes: a socket keeps the namespace it was
opened in, so each peer's aioice sockets are created with the loop's thread
briefly switched into that peer's home (:func:`drift.netlab.namespaces.inside`
around the ``socket()`` call only — never across an ``await``). Which home is
the current peer's travels in a :class:`~contextvars.ContextVar`, set once in
the peer's task; asyncio copies it into every task aioice starts from there.

Three process-wide hooks, installed by :func:`install` and inert for code that
sets no seat:

* ``aioice.ice.get_host_addresses`` returns the seat's home address, so host
  candidates are the home's (not loopback, not the machine's interfaces);
* aioice's event loop calls that open sockets (``create_datagram_endpoint``
  for host and TURN/UDP, ``create_connection`` for TURN/TCP and TLS) go
  through a view of the loop that opens the socket in the home first; TLS
  trusts the lab's throwaway certificate, with verification on;
* ``aiortc.rtcicetransport.connection_kwargs``, which keeps only the first
  TURN URL, is given the seat's TURN URLs in the seat's order (see
  :class:`~drift.netlab.lab.Seat`).

Two timings change for seated peers, both to behave like a browser rather
than like aiortc's defaults: a STUN transaction gives up after 5 sends (15.5 s)
instead of 7 (31.5 s), so a pair that cannot connect is reported as an ICE
failure within simulate's default 20 s timeout rather than as a timeout; and
gathering waits at most 2 s for server-reflexive and relay candidates instead
of 5 s. aiortc puts every candidate in the SDP before it is sent, where a
browser trickles them; in a UDP-blocked home the STUN request never gets an
answer, and a 5 s wait would show up as 5 s of every such pair's connect time.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import socket
import ssl
import types
from collections.abc import Callable
from typing import Any, Final

import aioice
import aioice.ice
import aioice.stun
import aioice.turn
import aiortc.rtcicetransport
from aiortc import RTCIceServer

from drift.netlab import namespaces as ns
from drift.netlab.lab import Seat

LAB_STUN_RETRIES: Final = 4
#: seconds a seated peer waits for its STUN/TURN candidates (aioice: 5)
LAB_GATHER_TIMEOUT: Final = 2
_SEAT: contextvars.ContextVar[Seat | None] = contextvars.ContextVar("drift_seat", default=None)
_home_fds: dict[str, int] = {}
_trust: dict[str, ssl.SSLContext] = {}
_cafile: list[str] = []


def set_seat(seat: Seat | None) -> None:
    """Seat the current task (and the tasks it starts) in ``seat``'s home."""
    _SEAT.set(seat)


def current_seat() -> Seat | None:
    return _SEAT.get()


def _home_fd(seat: Seat) -> int:
    fd = _home_fds.get(seat.home)
    if fd is None:
        fd = _home_fds[seat.home] = ns.open_ns(seat.home)
    return fd


def home_socket(seat: Seat, kind: socket.SocketKind) -> socket.socket:
    with ns.inside(_home_fd(seat)):
        sock = socket.socket(socket.AF_INET, kind)
    sock.setblocking(False)
    return sock


def _tls_context() -> ssl.SSLContext:
    cafile = _cafile[0] if _cafile else None
    key = cafile or ""
    if key not in _trust:
        _trust[key] = ssl.create_default_context(cafile=cafile)
    return _trust[key]


class _HomeLoop:
    """The running loop, except that the sockets aioice asks for open in the seat's home."""

    def __init__(self, loop: asyncio.AbstractEventLoop, seat: Seat) -> None:
        self._loop = loop
        self._seat = seat

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    async def create_datagram_endpoint(
        self,
        protocol_factory: Callable[[], asyncio.DatagramProtocol],
        local_addr: tuple[str, int] | None = None,
        remote_addr: tuple[str, int] | None = None,
        **kwargs: Any,
    ) -> tuple[asyncio.DatagramTransport, asyncio.DatagramProtocol]:
        sock = home_socket(self._seat, socket.SOCK_DGRAM)
        try:
            sock.bind(local_addr or (self._seat.host, 0))
            if remote_addr is not None:
                sock.connect(remote_addr)
        except OSError:
            sock.close()
            raise
        return await self._loop.create_datagram_endpoint(protocol_factory, sock=sock, **kwargs)

    async def create_connection(
        self,
        protocol_factory: Callable[[], asyncio.Protocol],
        host: str | None = None,
        port: int | None = None,
        *,
        ssl: bool | ssl.SSLContext | None = None,
        **kwargs: Any,
    ) -> tuple[asyncio.Transport, asyncio.Protocol]:
        assert host is not None and port is not None
        sock = home_socket(self._seat, socket.SOCK_STREAM)
        try:
            sock.bind((self._seat.host, 0))
            await self._loop.sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        context = _tls_context() if ssl is True else ssl
        return await self._loop.create_connection(
            protocol_factory,
            sock=sock,
            ssl=context or None,
            server_hostname=host if context else None,
            **kwargs,
        )


class _AsyncioView(types.ModuleType):
    """``asyncio`` as aioice's modules see it: the same, but a seated loop."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    def get_running_loop() -> Any:
        loop = asyncio.get_running_loop()
        seat = _SEAT.get()
        return loop if seat is None else _HomeLoop(loop, seat)


_ORIGINAL_HOSTS: Final = aioice.ice.get_host_addresses
_ORIGINAL_KWARGS: Final = aiortc.rtcicetransport.connection_kwargs


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    seat = _SEAT.get()
    if seat is None:
        # the hook that was in place before (e.g. simulate's loopback-only one)
        previous: Callable[[bool, bool], list[str]] = _previous_hosts[0]
        return previous(use_ipv4, use_ipv6)
    return [seat.host] if use_ipv4 else []


_previous_hosts: list[Callable[[bool, bool], list[str]]] = [_ORIGINAL_HOSTS]


def transport_of(url: str) -> str:
    """udp, tcp or tls: how a TURN URL reaches its server."""
    if url.startswith("turns:"):
        return "tls"
    return "tcp" if "transport=tcp" in url else "udp"


def seat_ice_servers(servers: list[RTCIceServer], seat: Seat) -> list[RTCIceServer]:
    """STUN servers as given, then TURN URLs the seat can use, in the seat's order."""
    out: list[RTCIceServer] = []
    turn: list[tuple[int, RTCIceServer]] = []
    for server in servers:
        urls = server.urls if isinstance(server.urls, list) else [server.urls]
        stun = [u for u in urls if u.startswith("stun")]
        if stun:
            out.append(RTCIceServer(urls=stun))
        for url in urls:
            if url.startswith("turn") and transport_of(url) in seat.turn:
                rank = seat.turn.index(transport_of(url))
                turn.append(
                    (
                        rank,
                        RTCIceServer(url, username=server.username, credential=server.credential),
                    )
                )
    return out + [s for _, s in sorted(turn, key=lambda t: t[0])]


def _connection_kwargs(servers: list[RTCIceServer]) -> dict[str, Any]:
    seat = _SEAT.get()
    if seat is not None:
        servers = seat_ice_servers(servers, seat)
    result: dict[str, Any] = _ORIGINAL_KWARGS(servers)
    return result


def selected_turn_transport(seat: Seat, servers: list[RTCIceServer]) -> str | None:
    """The transport the seat's relay candidate uses with these ICE servers (None: no TURN)."""
    for server in seat_ice_servers(servers, seat):
        url = server.urls if isinstance(server.urls, str) else server.urls[0]
        if url.startswith("turn"):
            return transport_of(url)
    return None


_ORIGINAL_GATHER: Final = aioice.ice.Connection.get_component_candidates


async def _get_component_candidates(
    self: aioice.ice.Connection, component: int, addresses: list[str], timeout: int = 5
) -> list[aioice.Candidate]:
    if _SEAT.get() is not None:
        timeout = LAB_GATHER_TIMEOUT
    candidates: list[aioice.Candidate] = await _ORIGINAL_GATHER(self, component, addresses, timeout)
    return candidates


def install(cafile: str | None) -> None:
    """Install the hooks in this process (idempotent); ``cafile`` is the lab's TURN cert."""
    _cafile[:] = [cafile] if cafile else []
    _trust.clear()
    if aioice.ice.get_host_addresses is not _host_addresses:
        _previous_hosts[0] = aioice.ice.get_host_addresses
        aioice.ice.get_host_addresses = _host_addresses
    view = _AsyncioView("asyncio")
    for module in (aioice.ice, aioice.turn):
        if not isinstance(module.asyncio, _AsyncioView):
            module.asyncio = view  # type: ignore[attr-defined]
    aiortc.rtcicetransport.connection_kwargs = _connection_kwargs
    aioice.stun.RETRY_MAX = LAB_STUN_RETRIES
    aioice.ice.Connection.get_component_candidates = _get_component_candidates  # type: ignore[method-assign]


def close_homes() -> None:
    for fd in _home_fds.values():
        os.close(fd)
    _home_fds.clear()


__all__ = ["current_seat", "install", "set_seat"]

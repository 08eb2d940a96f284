"""The TURN credentials of ``welcome`` against a real coturn (``use-auth-secret``).

The HMAC is checked in test_security.py; here coturn itself must accept a
fresh credential and refuse one whose expiry has passed. The TURN client is a
few lines of RFC 5389/5766 written here, independent of drift and aiortc.
coturn comes from tests/support/coturn.py (a failure in CI when missing, a skip elsewhere).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import struct
import time

from drift.client.urls import ws_url
from drift.core.protocol import IceServer
from drift.serve.turn_credentials import IceServerSource
from tests.conftest import MakeServer
from tests.support import coturn as coturn_support
from tests.support.coturn import SECRET
from tests.support.wsclient import TIMEOUT, WsClient

#: the shared fixture: a fresh coturn on free loopback ports, yielding its UDP port
coturn = coturn_support.coturn

MAGIC = 0x2112A442
BINDING, BINDING_OK = 0x0001, 0x0101
ALLOCATE, ALLOCATE_OK, ALLOCATE_ERROR = 0x0003, 0x0103, 0x0113
USERNAME, MESSAGE_INTEGRITY, ERROR_CODE = 0x0006, 0x0008, 0x0009
REALM, NONCE, REQUESTED_TRANSPORT = 0x0014, 0x0015, 0x0019


def stun(kind: int, attrs: list[tuple[int, bytes]], integrity_key: bytes | None = None) -> bytes:
    body = b"".join(struct.pack("!HH", t, len(v)) + v + b"\0" * (-len(v) % 4) for t, v in attrs)
    txid = os.urandom(12)
    if integrity_key is None:
        return struct.pack("!HHI", kind, len(body), MAGIC) + txid + body
    # MESSAGE-INTEGRITY covers the header with a length that already counts it.
    head = struct.pack("!HHI", kind, len(body) + 24, MAGIC) + txid
    mac = hmac.new(integrity_key, head + body, hashlib.sha1).digest()
    return head + body + struct.pack("!HH", MESSAGE_INTEGRITY, 20) + mac


def parse(data: bytes) -> tuple[int, dict[int, bytes]]:
    kind, length, _ = struct.unpack("!HHI", data[:8])
    attrs: dict[int, bytes] = {}
    pos = 20
    while pos < 20 + length:
        t, n = struct.unpack("!HH", data[pos : pos + 4])
        attrs.setdefault(t, data[pos + 4 : pos + 4 + n])
        pos += 4 + n + (-n % 4)
    return kind, attrs


class Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.replies.put_nowait(data)


class Session:
    """One UDP 5-tuple: coturn's nonce belongs to it, so both Allocate tries share it."""

    def __init__(self, transport: asyncio.DatagramTransport, proto: Udp) -> None:
        self.transport, self.proto = transport, proto

    @classmethod
    async def open(cls, port: int) -> Session:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(Udp, remote_addr=("127.0.0.1", port))
        return cls(transport, proto)

    async def exchange(self, message: bytes, timeout: float = TIMEOUT) -> bytes:
        self.transport.sendto(message)
        return await asyncio.wait_for(self.proto.replies.get(), timeout)

    def close(self) -> None:
        self.transport.close()


async def allocate(port: int, username: str, password: str) -> int | None:
    """A TURN Allocate with long-term credentials; None on success, else the error code."""
    session = await Session.open(port)
    try:
        transport = [(REQUESTED_TRANSPORT, bytes([17, 0, 0, 0]))]
        kind, attrs = parse(await session.exchange(stun(ALLOCATE, transport)))
        assert kind == ALLOCATE_ERROR and attrs[ERROR_CODE][2:4] == bytes([4, 1])  # challenge
        realm, nonce = attrs[REALM], attrs[NONCE]
        key = hashlib.md5(username.encode() + b":" + realm + b":" + password.encode()).digest()
        request = stun(
            ALLOCATE,
            [*transport, (USERNAME, username.encode()), (REALM, realm), (NONCE, nonce)],
            integrity_key=key,
        )
        kind, attrs = parse(await session.exchange(request))
    finally:
        session.close()
    if kind == ALLOCATE_OK:
        return None
    assert kind == ALLOCATE_ERROR, hex(kind)
    code = attrs[ERROR_CODE]
    return code[2] * 100 + code[3]


async def test_coturn_accepts_the_welcome_credential_and_refuses_an_expired_one(
    coturn: int, make_server: MakeServer
) -> None:
    server = await make_server(
        turn_urls=(f"turn:127.0.0.1:{coturn}?transport=udp",), turn_secret=SECRET, turn_ttl=600
    )
    client = await WsClient.connect(ws_url(server.url))
    (turn,) = client.welcome["iceServers"]
    await client.close()
    assert await allocate(coturn, turn["username"], turn["credential"]) is None

    # The same source with a fake clock: issued 601 s ago, so expired 1 s ago.
    source = IceServerSource(turn_urls=("turn:x",), turn_secret=SECRET, turn_ttl=600)
    (old,) = source(client.peer_id, time.time() - 601)
    assert await allocate(coturn, *creds(old)) == 401
    # ...and a fresh one from the same source works, so only the time differs.
    (fresh,) = source(client.peer_id, time.time())
    assert await allocate(coturn, *creds(fresh)) is None

    # A credential made with another secret is refused too.
    forger = IceServerSource(turn_urls=("turn:x",), turn_secret="wrong", turn_ttl=600)
    (forged,) = forger(client.peer_id, time.time())
    assert await allocate(coturn, *creds(forged)) == 401


def creds(server: IceServer) -> tuple[str, str]:
    assert isinstance(server.username, str) and isinstance(server.credential, str)
    return server.username, server.credential

"""A deliberately independent protocol client for tests, written from docs/protocol.md only.

It does not import drift's own client or core, so a test that passes with it
shows the server speaks the documented contract, not merely agrees with itself.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

#: One timing unit for every wait in the tests (python-websockets style).
TIMEOUT = 5.0


class WsClient:
    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws
        self.peer_id = ""
        self.welcome: dict[str, Any] = {}

    @classmethod
    async def connect(
        cls, url: str, *, headers: dict[str, str] | None = None, welcome: bool = True
    ) -> WsClient:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(url, headers=headers, autoping=True, max_msg_size=0)
        except BaseException:
            await session.close()
            raise
        client = cls(session, ws)
        if welcome:
            client.welcome = await client.expect("welcome")
            client.peer_id = client.welcome["peerId"]
        return client

    async def send(self, msg: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(msg))

    async def send_raw(self, text: str) -> None:
        await self.ws.send_str(text)

    async def recv(self, within: float = TIMEOUT) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=within)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"expected a text frame, got {msg.type!r} {msg.data!r}")
        value = json.loads(msg.data)
        assert isinstance(value, dict)
        return value

    async def expect(self, kind: str, within: float = TIMEOUT) -> dict[str, Any]:
        msg = await self.recv(within)
        assert msg["type"] == kind, f"expected {kind!r}, got {msg!r}"
        return msg

    async def expect_error(self, code: str) -> dict[str, Any]:
        msg = await self.expect("error")
        assert msg["code"] == code, msg
        assert isinstance(msg["message"], str) and msg["message"]
        return msg

    async def expect_close(self, within: float = TIMEOUT) -> int | None:
        """Wait for the server's close, skipping frames, and return its code."""
        async with asyncio.timeout(within):
            while True:
                msg = await self.ws.receive()
                if msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.ERROR,
                ):
                    return self.ws.close_code

    async def assert_silent(self, within: float = 0.2) -> None:
        """Nothing arrives: used only where *absence* is the behaviour under test."""
        try:
            msg = await self.ws.receive(timeout=within)
        except TimeoutError:
            return
        raise AssertionError(f"expected no frame, got {msg.type!r} {msg.data!r}")

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


async def pair(url: str) -> tuple[WsClient, WsClient]:
    """Two connected peers in one room: (answerer that waited, offerer that came second)."""
    first = await WsClient.connect(url)
    await first.send({"type": "join"})
    await first.expect("waiting")
    second = await WsClient.connect(url)
    await second.send({"type": "join"})
    m2 = await second.expect("matched")
    m1 = await first.expect("matched")
    assert m1["role"] == "answerer" and m2["role"] == "offerer"
    assert m1["roomId"] == m2["roomId"]
    return first, second

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from drift.config import ServerConfig
from drift.server import Server

MakeServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def make_server() -> AsyncIterator[MakeServer]:
    """Start in-process servers on a free loopback port (port 0, read back)."""
    servers: list[Server] = []

    async def factory(**overrides: Any) -> Server:
        config = ServerConfig(port=0, log_level="debug").replace(**overrides)
        server = Server(config)
        await server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        await server.shutdown()


@pytest.fixture
async def server(make_server: MakeServer) -> Server:
    return await make_server()


@pytest.fixture
def ws_url(server: Server) -> str:
    return server.url.replace("http", "ws", 1) + "/ws"

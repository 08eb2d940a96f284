from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from drift.client import urls
from drift.serve.config import ServerConfig
from drift.serve.server import Server
from tests.support.redis import RedisProcess

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


@pytest.fixture(scope="session")
def redis_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One real redis-server for the session; tests flush it before use."""
    proc = RedisProcess(Path(tmp_path_factory.mktemp("redis")))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def redis_url(redis_proc: RedisProcess) -> str:
    if redis_proc.proc is None:  # a test stopped it: bring it back
        redis_proc.start()
    redis_proc.flush()
    return redis_proc.url


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The protocol conformance tests run against both backends of the same core."""
    if request.param == "memory":
        return {}
    return {"redis_url": request.getfixturevalue("redis_url")}


@pytest.fixture
async def server(make_server: MakeServer, backend: dict[str, Any]) -> Server:
    return await make_server(**backend)


@pytest.fixture
def ws_url(server: Server) -> str:
    return urls.ws_url(server.url)

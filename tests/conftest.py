from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from drift.client import urls
from drift.harness.redis import RedisServer
from drift.harness.serve import AsyncServeProcess
from drift.serve.config import ServerConfig
from drift.serve.server import Server
from tests.support.programs import require_program

MakeServer = Callable[..., Awaitable[Server]]
StartServe = Callable[..., Awaitable[AsyncServeProcess]]


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
async def drift_serve() -> AsyncIterator[StartServe]:
    """Start real ``drift serve`` processes (:meth:`AsyncServeProcess.start`'s arguments).

    Every one of them, and whatever it started, is killed after the test.
    """
    started: list[AsyncServeProcess] = []

    async def start(*args: str, **kwargs: Any) -> AsyncServeProcess:
        proc = await AsyncServeProcess.start(*args, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        await proc.kill()


@pytest.fixture(scope="session")
def redis_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session; tests flush it before use."""
    require_program("redis-server", "redis-server")
    with RedisServer(Path(tmp_path_factory.mktemp("redis"))) as proc:
        yield proc


@pytest.fixture
def redis_url(redis_proc: RedisServer) -> str:
    if not redis_proc.running:  # a test stopped it: bring it back on its port
        redis_proc.start()
    client = redis.Redis.from_url(redis_proc.url)
    try:
        client.flushall()
    finally:
        client.close()
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

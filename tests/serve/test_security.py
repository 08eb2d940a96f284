"""Origin allowlist on the upgrade, CORS, security headers, TURN credentials and their secret."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import signal
import subprocess
import sys
import time
from collections.abc import Mapping

import aiohttp
import pytest

from drift.client import urls
from drift.harness.serve import AsyncServeProcess
from drift.serve.config import ServerConfig
from drift.serve.server import Server
from tests.conftest import MakeServer
from tests.support.wsclient import TIMEOUT, WsClient, pair

ALLOWED = "https://chat.example.com"


def ws_url(server: Server) -> str:
    return urls.ws_url(server.url)


# ---------------------------------------------------------------- Origin allowlist


async def upgrade_status(url: str, origin: str) -> int:
    async with aiohttp.ClientSession() as session:
        try:
            ws = await session.ws_connect(url, headers={"Origin": origin})
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        await ws.close()
        return 101


async def test_allowed_origin_upgrades_and_others_get_403(make_server: MakeServer) -> None:
    server = await make_server(allowed_origins=(ALLOWED, "https://other.example.org"))
    url = ws_url(server)
    allowed = await WsClient.connect(url, headers={"Origin": ALLOWED})
    assert allowed.peer_id
    await allowed.close()
    for bad in (
        "https://evil.example.net",
        "https://chat.example.com.evil.net",  # exact match, not a prefix
        "http://chat.example.com",  # scheme is part of the origin
        "https://chat.example.com:444",
        "null",  # sandboxed iframes, file:// pages
    ):
        assert await upgrade_status(url, bad) == 403, bad
    assert server.lobby.connections == 0


async def test_no_origin_and_without_a_list_the_servers_own_origin_are_accepted(
    make_server: MakeServer,
) -> None:
    listed = await make_server(allowed_origins=(ALLOWED,))
    native = await WsClient.connect(ws_url(listed))  # a non-browser client sends no Origin
    assert native.peer_id
    await native.close()
    unlisted = await make_server()
    own = await WsClient.connect(ws_url(unlisted), headers={"Origin": unlisted.url})
    assert own.peer_id
    await own.close()


async def test_with_allowed_origins_only_the_list_counts_never_host(
    make_server: MakeServer,
) -> None:
    """DNS rebinding: a page of rebound.example, whose name now points at this
    server, sends Origin and Host both naming rebound.example. Deriving "our own
    origin" from Host would let it in; with a list, only the list counts."""
    server = await make_server(allowed_origins=(ALLOWED,))
    url = ws_url(server)
    rebound = f"rebound.example:{server.port}"
    async with aiohttp.ClientSession() as session:
        for origin, host in ((f"http://{rebound}", rebound), (server.url, None)):
            headers = {"Origin": origin, **({"Host": host} if host else {})}
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(url, headers=headers)
            assert refused.value.status == 403, origin
    assert server.lobby.connections == 0


async def test_own_origin_comes_from_forwarded_headers_only_with_trust_proxy(
    make_server: MakeServer,
) -> None:
    public = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "drift.example.com"}
    headers = {**public, "Origin": "https://drift.example.com"}
    trusting = await make_server(trust_proxy=True)
    client = await WsClient.connect(ws_url(trusting), headers=headers)
    await client.close()
    plain = await make_server()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(ws_url(plain), headers=headers)
    assert refused.value.status == 403


def test_an_allowed_origin_that_could_never_match_is_refused_at_startup() -> None:
    """Matching is exact, so a trailing slash or capitals would refuse every browser."""
    for bad in (
        "https://chat.example.com/",
        "https://Chat.example.com",
        "chat.example.com",
        "null",
    ):
        result = subprocess.run(
            [sys.executable, "-m", "drift", "serve", "--allowed-origin", bad],
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 4,
            check=False,
        )
        assert result.returncode == 2, (bad, result)
        assert "is not an origin" in result.stderr, result.stderr
    for good in ("https://chat.example.com", "http://127.0.0.1:8080", "capacitor://localhost"):
        assert ServerConfig(allowed_origins=(good,)).allowed_origins == (good,)


# ---------------------------------------------------------------- CORS


async def test_cors_on_json_endpoints_for_allowed_origins_only(make_server: MakeServer) -> None:
    server = await make_server(allowed_origins=(ALLOWED,))
    async with aiohttp.ClientSession() as session:
        for path in ("/stats", "/healthz"):
            async with session.get(server.url + path, headers={"Origin": ALLOWED}) as resp:
                assert resp.status == 200
                assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
                assert "Origin" in resp.headers["Vary"]
            evil = {"Origin": "https://evil.example.net"}
            async with session.get(server.url + path, headers=evil) as resp:
                assert resp.status == 200
                assert "Access-Control-Allow-Origin" not in resp.headers
                assert "Origin" in resp.headers["Vary"]
        # Not a JSON endpoint: no CORS even for an allowed origin.
        async with session.get(server.url + "/", headers={"Origin": ALLOWED}) as resp:
            assert "Access-Control-Allow-Origin" not in resp.headers


# ---------------------------------------------------------------- security headers


def assert_security_headers(headers: Mapping[str, str], what: str) -> None:
    h = {k.lower(): v for k, v in headers.items()}
    csp = h.get("content-security-policy", "")
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert directives.get("script-src") == ["'self'"], (what, csp)
    assert directives.get("object-src") == ["'none'"], (what, csp)
    assert directives.get("frame-ancestors") == ["'none'"], (what, csp)
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, (what, csp)
    assert h.get("x-content-type-options") == "nosniff", what
    assert h.get("referrer-policy") == "no-referrer", what
    policy = h.get("permissions-policy", "")
    assert "camera=(self)" in policy and "microphone=(self)" in policy, (what, policy)


async def test_security_headers_on_every_http_answer(make_server: MakeServer) -> None:
    server = await make_server(allowed_origins=(ALLOWED,))
    answers: list[int] = []
    async with aiohttp.ClientSession() as session:
        for path in (
            "/",
            "/static/app.js",
            "/static/style.css",
            "/favicon.ico",
            "/healthz",
            "/stats",
            "/metrics",
            "/no-such-page",
            "/static/no-such-file.js",
            "/ws",  # a plain GET, not an upgrade
        ):
            async with session.get(server.url + path) as resp:
                assert_security_headers(resp.headers, path)
                answers.append(resp.status)
        async with session.post(server.url + "/stats") as resp:
            assert_security_headers(resp.headers, "POST /stats")
            answers.append(resp.status)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(ws_url(server), headers={"Origin": "https://evil.test"})
        assert refused.value.status == 403
        assert refused.value.headers is not None
        assert_security_headers(refused.value.headers, "403 upgrade")
        async with session.ws_connect(ws_url(server)) as ws:
            assert_security_headers(ws._response.headers, "101 upgrade")
    assert answers[:7] == [200] * 7
    assert answers[7:9] == [404, 404]
    assert answers[9] >= 400 and answers[10] == 405


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /<script>MARKER</script> HTTP/1.1\x01\r\n\r\n",  # bad request line
        b"GET / HTTP/1.1\r\nX-Big: " + b"MARKER" * 3000 + b"\r\n\r\n",  # header too long
        b"GET / HTTP/1.1\r\n" + b"X-MARKER: 1\r\n" * 200 + b"\r\n",  # too many headers
        b"MARKER / HTTP/1.1\r\n\r\n",  # not a method
    ],
    ids=["request-line", "long-header", "many-headers", "bad-method"],
)
async def test_the_http_parsers_own_errors_carry_the_headers_and_echo_nothing(
    make_server: MakeServer, request_bytes: bytes
) -> None:
    server = await make_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(request_bytes)
    async with asyncio.timeout(TIMEOUT):
        answer = await reader.read(1 << 20)
        while chunk := await reader.read(1 << 20):
            answer += chunk
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    assert status_line.split()[1] == "400", status_line
    headers = dict(line.split(": ", 1) for line in header_lines)
    assert_security_headers(headers, status_line)
    assert b"MARKER" not in body and b"script" not in body, body[:200]


async def test_the_page_itself_has_no_inline_script(make_server: MakeServer) -> None:
    """The CSP forbids inline script, so the shipped page must not rely on one."""
    server = await make_server()
    async with aiohttp.ClientSession() as session, session.get(server.url + "/") as resp:
        page = await resp.text()
    assert "<script>" not in page.replace(" ", "") and "onclick=" not in page.lower()


# ---------------------------------------------------------------- TURN credentials


SECRET = "turn-secret-Zq7vX3pL9mN2"


def coturn_credential(secret: str, username: str) -> str:
    """What coturn computes for use-auth-secret (RFC 5389 long-term creds via TURN REST API)."""
    return base64.b64encode(
        hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    ).decode()


@pytest.mark.slow
async def test_turn_credentials_verify_expire_with_ttl_and_never_leak_the_secret() -> None:
    proc = await AsyncServeProcess.start(
        "--turn-url", "turn:127.0.0.1:3478?transport=udp",
        "--turn-url", "turns:turn.example.com:5349",
        "--stun-url", "stun:127.0.0.1:3478",
        "--turn-ttl", "120",
        "--log-level", "debug",
        env={"DRIFT_TURN_SECRET": SECRET},
    )  # fmt: skip
    seen: list[str] = []
    try:
        answerer, offerer = await pair(proc.ws_url)
        for client in (answerer, offerer):
            seen.append(json.dumps(client.welcome))
            stun, turn = client.welcome["iceServers"]
            assert stun == {"urls": ["stun:127.0.0.1:3478"]}
            assert turn["urls"] == [
                "turn:127.0.0.1:3478?transport=udp",
                "turns:turn.example.com:5349",
            ]
            expiry, peer = turn["username"].split(":", 1)
            assert peer == client.peer_id
            assert abs(int(expiry) - (time.time() + 120)) <= 5
            assert turn["credential"] == coturn_credential(SECRET, turn["username"])
        # Provoke every error path the server has, and read every public output.
        await offerer.send_raw("{not json")
        seen.append(json.dumps(await offerer.expect_error("invalid-json")))
        await offerer.send({"type": "bogus"})
        seen.append(json.dumps(await offerer.expect_error("unknown-type")))
        for path in ("/stats", "/metrics", "/healthz", "/no-such-page"):
            _, body = await proc.get(path)
            seen.append(body)
        await answerer.close()
        await offerer.close()
        proc.signal(signal.SIGTERM)
        assert await proc.wait(timeout=TIMEOUT) == 0
    finally:
        await proc.kill()
    everything = "\n".join(seen) + proc.output()
    assert "peer_matched" in everything  # the debug log really was captured
    assert SECRET not in everything


def test_the_secret_is_not_echoed_by_configuration_errors() -> None:
    for bad in (["--turn-ttl", "0"], ["--port", "not-a-port"], ["--log-format", "xml"]):
        result = subprocess.run(
            [sys.executable, "-m", "drift", "serve", "--turn-url", "turn:x", *bad],
            env={"DRIFT_TURN_SECRET": SECRET, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 4,
            check=False,
        )
        assert result.returncode == 2, result
        assert SECRET not in result.stdout + result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "drift", "serve", "--turn-url", "turn:x", "--port", "0"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 4,
        check=False,
    )
    assert result.returncode == 2 and "--turn-secret" in result.stderr


def test_server_config_repr_hides_the_secret() -> None:
    config = ServerConfig(turn_urls=("turn:x",), turn_secret=SECRET)
    assert SECRET not in repr(config) and SECRET not in repr(config.ice_servers())

"""peerjs-server (npm ``peer``, Node) as a baseline of the server benchmark.

peerjs-server is the signaling server most 1:1 WebRTC demos start from, so it
is the figure a user compares ``drift serve`` with. It is installed at bench
time with npm into ``reports/.cache/peerjs`` (never into the repository), run as
its own process on a free loopback port, and driven by this module's own load
client (``python -m drift.bench.suites.peerjs '<json spec>'``, a separate
process like :mod:`drift.bench.loadgen`, whose :class:`~drift.bench.loadgen.Servers`
measures the server's RSS and CPU):

``hold``
    open ``connections`` WebSockets (``/peerjs?key=peerjs&id=...&token=...``)
    and read each ``OPEN``; RSS growth of the server per connection (peerjs has
    no rooms, so every connection is idle, as half of drift's are).
``relay``
    ``pairs`` pairs ping-pong ~1 KB ``OFFER``/``ANSWER`` frames addressed with
    ``dst``; server CPU seconds per 1,000 frames relayed.

When ``node`` or ``npm`` is missing, or the install fails (no registry),
:func:`install` returns the reason instead and the benchmark reports it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Final

import aiohttp

from drift import aio
from drift.bench.loadgen import TIMEOUT, Servers, run_json_client
from drift.errors import DriftError
from drift.harness.ports import free_port
from drift.report.paths import reports_root

VERSION: Final = "1.0.2"
_READY: Final = "Started PeerServer"
_PAYLOAD: Final = {"sdp": {"type": "offer", "sdp": "v=0\r\na=x-bench:" + "x" * 960 + "\r\n"}}


def cache_dir() -> Path:
    return reports_root() / ".cache" / "peerjs"


def install(cache: Path | None = None) -> Path | str:
    """The path of ``peerjs.js`` (installed when needed), or why peerjs cannot run here."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "node/npm not found on PATH"
    folder = cache or cache_dir()
    script = folder / "node_modules" / "peer" / "dist" / "bin" / "peerjs.js"
    if script.is_file():
        return script
    folder.mkdir(parents=True, exist_ok=True)
    # npm's own cache first, and no retries: inside a loopback-only namespace
    # (where benchmarks run) the registry is unreachable, and the default
    # retries would stall the bench for minutes before it could say so.
    argv = [npm, "install", "--no-audit", "--no-fund", "--prefer-offline"]
    argv += ["--fetch-retries", "0", "--fetch-timeout", "15000"]
    argv += ["--prefix", str(folder), f"peer@{VERSION}"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        return "npm install peer timed out after 120 s"
    if done.returncode != 0 or not script.is_file():
        lines = (done.stderr or done.stdout).strip().splitlines()
        why = [x for x in lines if "error" in x and "log of this run" not in x] or lines or [""]
        return f"npm install peer@{VERSION} failed ({done.returncode}): {why[0][:200]}"
    return script


def node_version() -> str:
    done = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


class PeerjsServer:
    """``node peerjs.js`` on 127.0.0.1, its concurrent limit raised to 20,000 connections."""

    def __init__(self, script: Path, log: Path) -> None:
        self.script = script
        self.log = log
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/peerjs"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> None:
        # peerjs cannot bind port 0 and print the port it got
        self.port = free_port()
        argv = ["node", str(self.script), "--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--concurrent_limit", "20000"]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        # readline blocks until a line or EOF; a server that never prints is killed below.
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if _READY in line:
                self.log.write_text("".join(lines))
                # Keep draining its output, or a full pipe would stall the server.
                threading.Thread(target=self._drain, daemon=True).start()
                return
        self.stop()
        raise DriftError(f"peerjs-server did not start: {''.join(lines)[-500:]}")

    def _drain(self) -> None:
        proc = self.proc
        if proc is None or proc.stdout is None:
            return
        with self.log.open("a") as sink:
            for line in proc.stdout:
                sink.write(line)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


# ------------------------------------------------------------------ load client


async def _connect_all(
    session: aiohttp.ClientSession, url: str, count: int, concurrency: int = 64
) -> tuple[list[aiohttp.ClientWebSocketResponse], float]:
    gate = asyncio.Semaphore(concurrency)
    conns: list[aiohttp.ClientWebSocketResponse | None] = [None] * count

    async def one(i: int) -> None:
        async with gate:
            ws = await session.ws_connect(
                f"{url}?key=peerjs&id=p{i}&token=t{i}", max_msg_size=0, compress=0
            )
            opened = await ws.receive(timeout=TIMEOUT)
            if opened.type is not aiohttp.WSMsgType.TEXT or '"OPEN"' not in opened.data:
                raise RuntimeError(f"connection {i}: expected OPEN, got {opened.data!r}")
            conns[i] = ws

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return [c for c in conns if c is not None], time.perf_counter() - start


async def _hold(spec: dict[str, Any], servers: Servers) -> dict[str, Any]:
    count = int(spec["connections"])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        before = servers.rss()
        conns, connect_s = await _connect_all(session, spec["url"], count)
        await asyncio.sleep(float(spec.get("settle", 1.0)))
        after = servers.rss()
        return {
            "connections": len(conns),
            "connect_s": connect_s,
            "upgrades_per_s": len(conns) / connect_s,
            "rss_before": before,
            "rss_after": after,
            "rss_per_connection": (sum(after) - sum(before)) / len(conns),
        }


async def _relay(spec: dict[str, Any], servers: Servers) -> dict[str, Any]:
    pairs = int(spec["pairs"])
    rounds = max(1, int(spec["messages"]) // (2 * pairs))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        conns, _ = await _connect_all(session, spec["url"], 2 * pairs)

        def frame(kind: str, dst: int) -> str:
            return json.dumps({"type": kind, "dst": f"p{dst}", "payload": _PAYLOAD})

        async def receive(ws: aiohttp.ClientWebSocketResponse) -> None:
            msg = await ws.receive(timeout=TIMEOUT)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"expected a relayed frame, got {msg.type!r}")

        async def ping_pong(i: int) -> None:
            a, b = conns[i], conns[i + 1]
            offer, answer = frame("OFFER", i + 1), frame("ANSWER", i)
            for _ in range(rounds):
                await a.send_str(offer)
                await receive(b)
                await b.send_str(answer)
                await receive(a)

        cpu_before = servers.cpu()
        start = time.perf_counter()
        await asyncio.gather(*(ping_pong(i) for i in range(0, 2 * pairs, 2)))
        wall = time.perf_counter() - start
        cpu = [b - a for a, b in zip(cpu_before, servers.cpu(), strict=True)]
        relayed = 2 * rounds * pairs
        return {
            "pairs": pairs,
            "relayed": relayed,
            "frame_bytes": len(frame("OFFER", 1)),
            "wall_s": wall,
            "cpu_s": cpu,
            "cpu_s_per_1000": sum(cpu) / relayed * 1000,
        }


async def _client(spec: dict[str, Any]) -> dict[str, Any]:
    servers = Servers(spec["pids"])
    scenario = _hold if spec["scenario"] == "hold" else _relay
    return {"scenario": spec["scenario"], **await scenario(spec, servers)}


def run_client(spec: dict[str, Any], timeout: float = 180.0) -> dict[str, Any]:
    """This module's load client in its own process; its JSON result."""
    return run_json_client("drift.bench.suites.peerjs", spec, timeout, "peerjs load client")


def measure(script: Path, log_dir: Path, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Start a fresh peerjs-server, run one scenario of the client against it, stop it."""
    server = PeerjsServer(script, log_dir / f"{name}.out")
    server.start()
    try:
        return run_client({**spec, "url": server.ws_url, "pids": [server.pid]})
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m drift.bench.suites.peerjs '<json spec>'", file=sys.stderr)
        return 2
    print(json.dumps(aio.run(_client(json.loads(args[0])))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

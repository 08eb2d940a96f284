"""Baselines for the server benchmarks: the least an aiohttp WebSocket server can do.

``--mode relay``: a bare relay. Parse the JSON frame, look up where it goes, send
it. It speaks just enough of docs/protocol.md for the same load client to drive it
and drift alike: ``welcome`` on connect, ``join`` pairs with whoever waits
(``waiting``/``matched`` with the same roles), anything else is forwarded
unchanged to the partner. No validation, rate limit, heartbeat, log, metric,
cooldown or queue timeout: that is exactly what drift's figures are compared
against. Per connection it keeps only what aiohttp's public API cannot free
(one dict entry of its own), so its memory per connection is aiohttp's floor.

``--mode echo``: ``welcome`` on connect, then every text frame is sent back
unparsed; its round trip is the floor for any request/response over a WebSocket.

Runs as its own process (``python drift/bench/suites/bare_relay.py --port 0``) so its RSS
and CPU are its own; prints ``bare serving on http://HOST:PORT`` when ready. Uses
uvloop when importable, like ``drift serve``, so the comparison is loop-for-loop.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal

import msgspec
from aiohttp import WSMsgType, web

# The generic decoder is the fastest parse available to both servers (drift also
# uses msgspec), so the baseline is the tightest honest one.
_decode = msgspec.json.Decoder().decode
_WAITING = '{"type":"waiting"}'


class BareRelay:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.partner: dict[str, str] = {}
        self.waiting: str | None = None
        self._ids = itertools.count(1)
        self._rooms = itertools.count(1)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        # aiohttp's defaults already have no heartbeat (no timer per socket).
        ws = web.WebSocketResponse(compress=False, max_msg_size=65_537)
        await ws.prepare(request)
        # The least aiohttp's API lets a server keep: the 101's header dict is
        # not needed once it is on the wire (drift drops it too).
        ws.headers.clear()
        me = f"p{next(self._ids)}"
        self.sockets[me] = ws
        await ws.send_str(f'{{"type":"welcome","peerId":"{me}","iceServers":[],"protocol":1}}')
        try:
            while True:
                # receive() itself, not `async for`: one coroutine frame less per socket.
                msg = await ws.receive()
                if msg.type is not WSMsgType.TEXT:
                    break
                if self.mode == "echo":
                    await ws.send_str(msg.data)
                    continue
                frame = _decode(msg.data)
                if frame.get("type") == "join":
                    await self._join(me, ws)
                    continue
                other = self.partner.get(me)
                target = self.sockets.get(other) if other else None
                if target is not None:
                    await target.send_str(msg.data)
        finally:
            del self.sockets[me]
            if self.waiting == me:
                self.waiting = None
            other = self.partner.pop(me, None)
            if other is not None:
                self.partner.pop(other, None)
        return ws

    async def _join(self, me: str, ws: web.WebSocketResponse) -> None:
        waited = self.waiting
        if waited is None or waited == me:
            self.waiting = me
            await ws.send_str(_WAITING)
            return
        self.waiting = None
        self.partner[me] = waited
        self.partner[waited] = me
        room = f"r{next(self._rooms)}"
        # Same roles as drift: the newcomer offers, the peer that waited answers.
        await ws.send_str(f'{{"type":"matched","role":"offerer","roomId":"{room}"}}')
        await self.sockets[waited].send_str(
            f'{{"type":"matched","role":"answerer","roomId":"{room}"}}'
        )


async def serve(mode: str, host: str, port: int) -> None:
    app = web.Application()
    app.router.add_get("/ws", BareRelay(mode).handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    assert server is not None
    bound = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    print(f"bare serving on http://{host}:{bound} ({mode})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--mode", choices=["relay", "echo"], default="relay")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-uvloop", action="store_true", help="plain asyncio event loop")
    args = parser.parse_args(argv)
    coro = serve(args.mode, args.host, args.port)
    if not args.no_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(coro)
            return
    asyncio.run(coro)


if __name__ == "__main__":
    main()

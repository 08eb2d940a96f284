"""One heartbeat for every WebSocket of the server, instead of a timer per socket.

aiohttp's own heartbeat (``WebSocketResponse(heartbeat=...)``) keeps a timer
handle per connection and re-arms it on every chunk received: ~0.55 KB per
idle connection, and timer churn on every relayed frame. Here one task wakes
every ``heartbeat / TICKS`` seconds and walks the open connections once:

- whatever a client sends (a frame, a pong, part of a frame) sets its
  connection's ``idle`` back to 0 (:class:`~drift.serve.frames.FrameGate` does
  it per chunk: one attribute store);
- every tick adds 1 to each connection's ``idle``;
- a connection silent for :data:`TICKS` whole ticks (``heartbeat`` seconds)
  gets a ping; one still silent :data:`PONG_TICKS` ticks later (the pong wait,
  ``heartbeat / 2``, as aiohttp's) is dropped through ``expire``.

So a peer that stops answering is dropped 1.5 to 1.75 heartbeats after the last
byte it sent (aiohttp: 1.5), and a peer that sends anything is never pinged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Final, Generic, Protocol, TypeVar

#: Ticks per heartbeat interval: how finely silence is measured.
TICKS: Final = 4
#: Silent ticks after the ping before the peer counts as gone (half a heartbeat).
PONG_TICKS: Final = TICKS // 2
#: A final, empty, unmasked ping frame (servers never mask, RFC 6455 5.1).
PING_FRAME: Final = b"\x89\x00"


class Socket(Protocol):
    """What the wheel does with a connection's transport."""

    def write(self, data: bytes) -> None: ...

    def is_closing(self) -> bool: ...


class Beating(Protocol):
    """What the wheel needs of a connection."""

    #: ticks since the client last sent a byte
    idle: int
    #: set once the server decided to close it: no ping, no expiry
    closing: bool
    #: bytes handed to the socket in total (the stall check counts the pings too)
    sent: int

    @property
    def transport(self) -> Socket: ...


B = TypeVar("B", bound=Beating)


class HeartbeatWheel(Generic[B]):
    """Pings silent connections and expires those that stay silent; see the module docstring."""

    def __init__(
        self,
        interval: float,
        connections: Callable[[], Iterable[B]],
        expire: Callable[[B], None],
    ) -> None:
        self.step = interval / TICKS
        self._connections = connections
        self._expire = expire
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="drift-heartbeat")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.step)
            self.tick()

    def tick(self) -> None:
        """Age every connection by one tick; ping or expire the silent ones."""
        gone: list[B] = []
        for conn in self._connections():
            idle = conn.idle + 1
            conn.idle = idle
            if idle < TICKS or conn.closing:
                continue
            if idle == TICKS:
                transport = conn.transport
                if not transport.is_closing():
                    transport.write(PING_FRAME)
                    conn.sent += len(PING_FRAME)
            elif idle >= TICKS + PONG_TICKS:
                gone.append(conn)
        # Not while walking: expiring a connection may change what is walked.
        for conn in gone:
            self._expire(conn)

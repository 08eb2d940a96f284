"""A tiny synthetic video track whose every frame carries the sender's identity.

Frames are 160x120, painted as an 8x6 grid of 20x20 black or white blocks: 32
bits of ``crc32(peerId)``, an 8-bit frame counter and an 8-bit check. Blocks
that big survive VP8 at any sane bitrate, so the receiver can read back *who*
sent each frame (a cross-wired media path shows up as a foreign identity) and
*how many* arrived, at ~1 % of a core per stream.

The first :data:`BURST_FRAMES` frames go out at :data:`BURST_FPS`, the rest at
the low :data:`FPS`: a media pair is verified after a handful of frames, so the
burst verifies it ~0.8 s sooner than 5 fps would (measured in
docs/performance.md), and a pair held for a long time still costs little.
"""

from __future__ import annotations

import asyncio
import fractions
import time
import zlib
from typing import Final

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

WIDTH: Final = 160
HEIGHT: Final = 120
FPS: Final = 5
#: The opening frames, fast: enough for verification (call.MEDIA_MIN_FRAMES) and to spare.
BURST_FRAMES: Final = 10
BURST_FPS: Final = 30
_BLOCK: Final = 20
_COLS: Final = WIDTH // _BLOCK
_ROWS: Final = HEIGHT // _BLOCK
_BITS: Final = _COLS * _ROWS  # 48
_CLOCK: Final = 90_000
_TIME_BASE: Final = fractions.Fraction(1, _CLOCK)
_BLACK: Final = 16
_WHITE: Final = 235


def identity_code(peer_id: str) -> int:
    return zlib.crc32(peer_id.encode()) & 0xFFFFFFFF


def _check(ident: int, counter: int) -> int:
    return zlib.crc32(ident.to_bytes(4, "big") + bytes([counter])) & 0xFF


def encode_bits(ident: int, counter: int) -> int:
    counter &= 0xFF
    return (ident << 16) | (counter << 8) | _check(ident, counter)


def paint(ident: int, counter: int) -> np.ndarray:
    """The luma plane (HEIGHT x WIDTH, uint8) of one identity frame."""
    bits = encode_bits(ident, counter)
    cells = np.array(
        [_WHITE if bits >> (_BITS - 1 - i) & 1 else _BLACK for i in range(_BITS)], dtype=np.uint8
    ).reshape(_ROWS, _COLS)
    return np.kron(cells, np.ones((_BLOCK, _BLOCK), dtype=np.uint8))


def read_luma(luma: np.ndarray) -> tuple[int, int] | None:
    """(identity, counter) from a decoded luma plane, or None when the check fails."""
    if luma.shape[0] < HEIGHT or luma.shape[1] < WIDTH:
        return None
    # the centre of each block only: edges blur under compression
    q = _BLOCK // 4
    centres = luma[:HEIGHT, :WIDTH].reshape(_ROWS, _BLOCK, _COLS, _BLOCK)[:, q:-q, :, q:-q]
    means = centres.mean(axis=(1, 3)).reshape(-1)
    bits = 0
    for m in means:
        bits = (bits << 1) | int(m > 128)
    ident, counter, check = bits >> 16, (bits >> 8) & 0xFF, bits & 0xFF
    if _check(ident, counter) != check:
        return None
    return ident, counter


def luma_of(frame: av.VideoFrame) -> np.ndarray:
    plane = frame.planes[0]
    rows: np.ndarray = np.frombuffer(memoryview(plane), dtype=np.uint8)
    return rows.reshape(frame.height, plane.line_size)[:, : frame.width]


class IdentityTrack(MediaStreamTrack):
    """Video frames painted with one peer's identity: a short fast burst, then ``fps``."""

    kind = "video"

    def __init__(self, peer_id: str, fps: int = FPS) -> None:
        super().__init__()
        self.ident = identity_code(peer_id)
        self.fps = fps
        self.sent = 0
        self._start: float | None = None
        chroma = np.full((HEIGHT // 2, WIDTH), 128, dtype=np.uint8)
        self._chroma = chroma

    def offset(self, n: int) -> float:
        """Seconds from the first frame to frame ``n``."""
        if n <= BURST_FRAMES:
            return n / BURST_FPS
        return BURST_FRAMES / BURST_FPS + (n - BURST_FRAMES) / self.fps

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        offset = self.offset(self.sent)
        due = self._start + offset
        if due > now:
            await asyncio.sleep(due - now)
        yuv = np.vstack([paint(self.ident, self.sent), self._chroma])
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = int(offset * _CLOCK)
        frame.time_base = _TIME_BASE
        self.sent += 1
        return frame


class FrameCounter:
    """Reads identity frames from a remote track: counts own-partner, foreign and unreadable."""

    def __init__(self) -> None:
        self.by_ident: dict[int, int] = {}
        self.unreadable = 0
        self.total = 0
        self.arrived = asyncio.Event()

    def count_for(self, ident: int) -> int:
        return self.by_ident.get(ident, 0)

    async def consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.total += 1
            self.arrived.set()
            decoded = read_luma(luma_of(frame)) if isinstance(frame, av.VideoFrame) else None
            if decoded is None:
                self.unreadable += 1
            else:
                self.by_ident[decoded[0]] = self.by_ident.get(decoded[0], 0) + 1

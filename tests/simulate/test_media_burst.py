"""The identity track's pacing: a fast opening burst, then a low frame rate."""

from __future__ import annotations

import pytest

from drift.simulate.call import MEDIA_MIN_FRAMES
from drift.simulate.media import BURST_FPS, BURST_FRAMES, FPS, IdentityTrack


def test_identity_track_opens_with_a_fast_burst_then_slows_down() -> None:
    track = IdentityTrack("peer-1")
    # every frame a media pair needs to verify goes out within the burst
    assert MEDIA_MIN_FRAMES < BURST_FRAMES
    assert track.offset(MEDIA_MIN_FRAMES) == pytest.approx(MEDIA_MIN_FRAMES / BURST_FPS)
    steps = [track.offset(n + 1) - track.offset(n) for n in range(BURST_FRAMES, BURST_FRAMES + 3)]
    assert steps == [pytest.approx(1 / FPS)] * 3


@pytest.mark.asyncio
async def test_identity_frames_carry_increasing_timestamps() -> None:
    track = IdentityTrack("peer-1")
    frames = [await track.recv() for _ in range(BURST_FRAMES + 2)]
    pts = [f.pts for f in frames]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    track.stop()

"""The one decode step: every frame is either a typed message or a DecodeError value."""

from __future__ import annotations

import msgspec
import pytest

from drift.core import protocol as p


def test_valid_frames_decode_to_typed_messages() -> None:
    assert p.decode(b'{"type": "join"}') == p.Join()
    offer = p.decode('{"type": "offer", "sdp": {"type": "offer", "sdp": "v=0"}}')
    assert offer == p.Offer(sdp=p.SessionDescription(type="offer", sdp="v=0"))
    ice = p.decode('{"type": "ice-candidate", "candidate": {"candidate": "c", "sdpMid": null}}')
    assert isinstance(ice, p.IceCandidate)
    assert ice.candidate is not None
    assert ice.candidate.sdpMid is None
    assert ice.candidate.sdpMLineIndex is msgspec.UNSET


def test_absent_optional_members_stay_absent_when_encoded() -> None:
    msg = p.IceCandidate(candidate=p.CandidateInit(candidate="c", sdpMLineIndex=0))
    assert (
        p.encode_client(msg)
        == b'{"type":"ice-candidate","candidate":{"candidate":"c","sdpMLineIndex":0}}'
    )


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b'"\xff\xfe"', p.ErrorCode.INVALID_JSON),  # invalid UTF-8 inside a string
        (b"[" * 10_000, p.ErrorCode.INVALID_JSON),  # deep nesting fails cleanly
        (b'{"type": "join"', p.ErrorCode.INVALID_JSON),  # truncated
        (b'{"type": "answer", "sdp": {"type": "offer", "sdp": ""}}', p.ErrorCode.INVALID_MESSAGE),
        (b'{"type": "join\\u0000"}', p.ErrorCode.UNKNOWN_TYPE),
    ],
)
def test_bad_frames_are_values_not_exceptions(frame: bytes, code: p.ErrorCode) -> None:
    result = p.decode(frame)
    assert isinstance(result, p.DecodeError)
    assert result.code is code
    assert len(result.message) < 300  # long attacker strings are clipped


def test_server_frames_round_trip_and_are_checked_strictly() -> None:
    frames = [
        p.Welcome(
            peerId="a", iceServers=[p.IceServer(urls=["turn:x"], username="u", credential="c")]
        ),
        p.Waiting(),
        p.Matched(role="offerer", roomId="r"),
        p.PartnerLeft(reason="timeout"),
        p.Error(code="queue-full", message="full"),
    ]
    for frame in frames:
        assert p.decode_server(p.encode(frame)) == frame
    assert b'"protocol":1' in p.encode(frames[0])
    with pytest.raises(msgspec.ValidationError):
        p.decode_server(b'{"type": "matched", "role": "watcher", "roomId": "r"}')

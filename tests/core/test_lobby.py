"""The pure core, row by row of docs/protocol.md's tables. No event loop, no sockets, no clock."""

from __future__ import annotations

import json
from typing import Any

import pytest

from drift.core.lobby import Close, Effect, Event, Fault, Lobby, LobbyConfig, Send, State
from drift.core.protocol import IceServer

OFFER = json.dumps({"type": "offer", "sdp": {"type": "offer", "sdp": "v=0 offer"}})
ANSWER = json.dumps({"type": "answer", "sdp": {"type": "answer", "sdp": "v=0 answer"}})
CANDIDATE = json.dumps(
    {
        "type": "ice-candidate",
        "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"},
    }
)
END_OF_CANDIDATES = json.dumps({"type": "ice-candidate", "candidate": None})


def frames(effects: list[Effect], peer: str | None = None) -> list[dict[str, Any]]:
    """Decoded frames sent (to ``peer`` only, if given)."""
    return [
        json.loads(e.data)
        for e in effects
        if isinstance(e, Send) and (peer is None or e.peer == peer)
    ]


def recipients(effects: list[Effect]) -> list[str]:
    return [e.peer for e in effects if isinstance(e, Send)]


class Harness:
    """A lobby plus a fake clock; ``do`` sends one frame and returns what came out."""

    def __init__(self, **config: Any) -> None:
        config.setdefault("rate_limit", 0)
        self.lobby = Lobby(LobbyConfig(**config))
        self.now = 1000.0

    def connect(self, peer: str, addr: str = "10.0.0.1") -> list[Effect]:
        return self.lobby.connect(peer, self.now, addr)

    def do(self, peer: str, frame: dict[str, Any] | str) -> list[Effect]:
        text = frame if isinstance(frame, str) else json.dumps(frame)
        return self.lobby.receive(peer, text, self.now)

    def join(self, peer: str) -> list[Effect]:
        return self.do(peer, {"type": "join"})

    def advance(self, seconds: float) -> list[Effect]:
        self.now += seconds
        return self.lobby.tick(self.now)

    def room(self, *peers: str) -> None:
        """Connect the peers in order, each joining: pairs form as they come."""
        for peer in peers:
            self.connect(peer)
            self.join(peer)


@pytest.fixture
def h() -> Harness:
    return Harness()


# ---------------------------------------------------------------- welcome


def test_welcome_is_the_first_frame_with_protocol_peer_id_and_ice_servers() -> None:
    lobby = Lobby()
    ice = [IceServer(urls=["stun:127.0.0.1:3478"])]
    out = lobby.connect("a", 0.0, "10.0.0.1", ice)
    assert frames(out) == [
        {
            "type": "welcome",
            "protocol": 1,
            "peerId": "a",
            "iceServers": [{"urls": ["stun:127.0.0.1:3478"]}],
            "features": ["call-report"],
        }
    ]
    assert lobby.state_of("a") is State.IDLE


def test_connecting_the_same_id_twice_is_a_caller_bug(h: Harness) -> None:
    h.connect("a")
    with pytest.raises(ValueError, match="already connected"):
        h.connect("a")


# ---------------------------------------------------------------- join / waiting / matched


def test_join_with_nobody_waiting_sends_waiting(h: Harness) -> None:
    h.connect("a")
    out = h.join("a")
    assert frames(out) == [{"type": "waiting"}]
    assert h.lobby.state_of("a") is State.WAITING
    assert list(h.lobby.queue) == ["a"]


def test_the_peer_that_waited_answers_and_the_newcomer_offers(h: Harness) -> None:
    h.room("a")
    h.connect("b")
    out = h.join("b")
    to_a, to_b = frames(out, "a"), frames(out, "b")
    assert to_a[0]["type"] == to_b[0]["type"] == "matched"
    assert to_a[0]["role"] == "answerer"
    assert to_b[0]["role"] == "offerer"
    assert to_a[0]["roomId"] == to_b[0]["roomId"]
    assert h.lobby.state_of("a") is h.lobby.state_of("b") is State.MATCHED
    assert h.lobby.waiting == 0 and len(h.lobby.rooms) == 1
    matched_events = [e for e in out if isinstance(e, Event) and e.name == "peer_matched"]
    assert {e.peer: e.fields["role"] for e in matched_events} == {"a": "answerer", "b": "offerer"}


def test_queue_is_fifo_oldest_waiting_peer_is_matched_first() -> None:
    h = Harness()
    # a and b wait because each is in cooldown with the other after a room ends.
    h.room("a", "b")
    h.do("a", {"type": "leave"})
    h.join("a")
    h.join("b")
    assert list(h.lobby.queue) == ["a", "b"]
    h.connect("c")
    out = h.join("c")
    assert frames(out, "a")[0] == {
        "type": "matched",
        "role": "answerer",
        "roomId": frames(out, "c")[0]["roomId"],
    }
    assert list(h.lobby.queue) == ["b"]


def test_join_while_waiting_or_matched_is_invalid_state(h: Harness) -> None:
    h.room("a")
    assert frames(h.join("a")) == [
        {"type": "error", "code": "invalid-state", "message": "join while waiting"}
    ]
    h.room("b")
    out = h.join("b")
    assert frames(out)[0]["code"] == "invalid-state"
    assert h.lobby.state_of("b") is State.MATCHED


# ---------------------------------------------------------------- next


def test_next_while_matched_ends_room_notifies_partner_and_requeues(h: Harness) -> None:
    h.room("a", "b")
    out = h.do("b", {"type": "next"})
    assert frames(out, "a") == [{"type": "partner-left", "reason": "next"}]
    assert frames(out, "b") == [{"type": "waiting"}]  # a is in cooldown with b
    assert h.lobby.state_of("a") is State.IDLE
    assert h.lobby.state_of("b") is State.WAITING
    assert not h.lobby.rooms


def test_next_while_matched_matches_at_once_when_someone_compatible_waits(h: Harness) -> None:
    h.room("a", "b", "c")  # a+b matched, c waiting
    out = h.do("b", {"type": "next"})
    assert frames(out, "a") == [{"type": "partner-left", "reason": "next"}]
    to_b, to_c = frames(out, "b"), frames(out, "c")
    assert to_b[0]["role"] == "offerer"  # b is the newcomer now
    assert to_c[0]["role"] == "answerer"  # c waited


def test_next_while_waiting_stays_queued_in_place_and_repeats_waiting(h: Harness) -> None:
    h.room("a", "b")
    h.do("a", {"type": "leave"})
    h.join("a")
    h.join("b")
    out = h.do("a", {"type": "next"})
    assert frames(out) == [{"type": "waiting"}]
    assert list(h.lobby.queue) == ["a", "b"]


def test_next_while_idle_is_invalid_state(h: Harness) -> None:
    h.connect("a")
    assert frames(h.do("a", {"type": "next"}))[0]["code"] == "invalid-state"


# ---------------------------------------------------------------- leave


def test_leave_while_matched_notifies_partner_and_sends_nothing_back(h: Harness) -> None:
    h.room("a", "b")
    out = h.do("a", {"type": "leave"})
    assert frames(out, "b") == [{"type": "partner-left", "reason": "left"}]
    assert frames(out, "a") == []
    assert h.lobby.state_of("a") is h.lobby.state_of("b") is State.IDLE


def test_leave_while_waiting_leaves_the_queue_silently(h: Harness) -> None:
    h.room("a")
    out = h.do("a", {"type": "leave"})
    assert frames(out) == []
    assert h.lobby.waiting == 0 and h.lobby.state_of("a") is State.IDLE


def test_leave_while_idle_is_invalid_state(h: Harness) -> None:
    h.connect("a")
    assert frames(h.do("a", {"type": "leave"}))[0]["code"] == "invalid-state"


# ---------------------------------------------------------------- relay


@pytest.mark.parametrize("frame", [OFFER, ANSWER, CANDIDATE, END_OF_CANDIDATES])
def test_relay_goes_to_the_partner_only_and_unchanged(frame: str) -> None:
    h = Harness()
    h.room("a", "b", "c", "d")  # rooms a+b and c+d
    for sender, partner in (("a", "b"), ("b", "a")):
        out = h.do(sender, frame)
        assert recipients(out) == [partner]
        sent = out[0]
        assert isinstance(sent, Send) and sent.data == frame


def test_relay_keeps_optional_candidate_members_absent_and_unknown_fields(h: Harness) -> None:
    h.room("a", "b")
    frame = json.dumps(
        {"type": "ice-candidate", "candidate": {"candidate": "c", "sdpMid": "0"}, "future": 1}
    )
    assert frames(h.do("a", frame), "b") == [json.loads(frame)]


@pytest.mark.parametrize("frame", [OFFER, ANSWER, CANDIDATE, END_OF_CANDIDATES])
def test_relay_while_idle_or_waiting_is_invalid_state(frame: str) -> None:
    h = Harness()
    h.connect("idle")
    h.room("waiting")
    for peer in ("idle", "waiting"):
        out = h.do(peer, frame)
        assert recipients(out) == [peer]
        assert frames(out)[0]["code"] == "invalid-state"


def test_validation_comes_before_state(h: Harness) -> None:
    h.connect("a")
    out = h.do("a", {"type": "offer", "sdp": {"type": "offer"}})
    assert frames(out)[0]["code"] == "invalid-message"


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid-json"),
        ("[1, 2]", "invalid-json"),
        ("42", "invalid-json"),
        ('"join"', "invalid-json"),
        ("{}", "invalid-message"),
        ('{"type": 7}', "invalid-message"),
        ('{"type": null}', "invalid-message"),
        ('{"type": "offer"}', "invalid-message"),
        ('{"type": "offer", "sdp": "v=0"}', "invalid-message"),
        ('{"type": "offer", "sdp": {"type": "answer", "sdp": "v=0"}}', "invalid-message"),
        ('{"type": "answer", "sdp": {"type": "answer", "sdp": 5}}', "invalid-message"),
        ('{"type": "ice-candidate"}', "invalid-message"),
        ('{"type": "ice-candidate", "candidate": {"sdpMid": "0"}}', "invalid-message"),
        (
            '{"type": "ice-candidate", "candidate": {"candidate": "c", "sdpMLineIndex": "0"}}',
            "invalid-message",
        ),
        ('{"type": "hello"}', "unknown-type"),
        ('{"type": "welcome"}', "unknown-type"),
    ],
)
def test_bad_frames_get_an_error_frame_and_change_nothing(frame: str, code: str) -> None:
    h = Harness()
    h.room("a", "b")
    out = h.do("a", frame)
    assert recipients(out) == ["a"]
    error = frames(out)[0]
    assert error["type"] == "error" and error["code"] == code and error["message"]
    assert h.lobby.state_of("a") is h.lobby.state_of("b") is State.MATCHED
    assert frames(h.do("a", OFFER), "b")[0]["type"] == "offer"  # still works


def test_unknown_extra_fields_are_ignored(h: Harness) -> None:
    h.connect("a")
    assert frames(h.do("a", {"type": "join", "mode": "video", "v": [1]})) == [{"type": "waiting"}]


def test_binary_frames_are_invalid_message(h: Harness) -> None:
    h.connect("a")
    out = h.lobby.receive_binary("a", h.now)
    assert frames(out)[0]["code"] == "invalid-message"


def test_frames_for_unknown_peers_are_ignored(h: Harness) -> None:
    assert h.do("ghost", {"type": "join"}) == []
    assert h.lobby.disconnect("ghost", h.now) == []


# ---------------------------------------------------------------- disconnect


@pytest.mark.parametrize("reason", ["disconnected", "timeout"])
def test_disconnect_while_matched_notifies_partner_with_the_reason(reason: str) -> None:
    h = Harness()
    h.room("a", "b")
    out = h.lobby.disconnect("a", h.now, reason)  # type: ignore[arg-type]
    assert frames(out) == [{"type": "partner-left", "reason": reason}]
    assert recipients(out) == ["b"]
    assert h.lobby.state_of("b") is State.IDLE


def test_disconnect_in_any_state_removes_every_trace() -> None:
    h = Harness(rate_limit=5, rematch_cooldown=10)
    h.room("a", "b", "c")
    h.do("a", {"type": "next"})  # cooldown a<->b, a matched with c
    for peer in ("a", "b", "c"):
        h.lobby.disconnect(peer, h.now)
    lobby = h.lobby
    assert (lobby.connections, lobby.waiting, len(lobby.rooms)) == (0, 0, 0)
    assert not lobby._per_addr
    assert lobby.next_deadline() is None


def test_leak_fault_keeps_gone_peers_counted() -> None:
    h = Harness(faults=frozenset({Fault.LEAK_ON_DISCONNECT}))
    h.room("a", "b")
    h.lobby.disconnect("a", h.now)
    h.lobby.disconnect("b", h.now)
    assert h.lobby.connections == 2


# ---------------------------------------------------------------- rematch cooldown


def test_next_never_hands_back_the_partner_just_skipped(h: Harness) -> None:
    h.room("a", "b")
    h.do("a", {"type": "next"})
    out = h.join("b")
    assert frames(out) == [{"type": "waiting"}]
    assert h.lobby.waiting == 2 and not h.lobby.rooms


def test_when_the_cooldown_ends_both_waiting_peers_are_paired_older_answers() -> None:
    h = Harness(rematch_cooldown=10)
    h.room("a", "b")
    h.do("a", {"type": "next"})  # a waits first
    h.advance(1)
    h.join("b")  # b waits second
    assert h.lobby.next_deadline() == pytest.approx(1010.0)
    assert h.advance(8) == []  # 1009: still cooling down
    out = h.advance(1)  # 1010: cooldown over
    assert frames(out, "a")[0]["role"] == "answerer"
    assert frames(out, "b")[0]["role"] == "offerer"
    assert h.lobby.waiting == 0


def test_after_the_cooldown_a_join_may_match_the_old_partner_again(h: Harness) -> None:
    h.room("a", "b")
    h.do("a", {"type": "leave"})
    h.advance(10)
    h.join("a")
    assert frames(h.join("b"), "b")[0]["type"] == "matched"


def test_zero_cooldown_rematches_at_once() -> None:
    h = Harness(rematch_cooldown=0)
    h.room("a", "b")
    h.do("a", {"type": "next"})  # b is idle now, a waits
    out = h.join("b")
    assert frames(out, "b")[0]["role"] == "offerer"
    assert frames(out, "a")[0]["role"] == "answerer"


# ---------------------------------------------------------------- limits (pure parts)


def test_queue_full_refuses_the_join_and_the_peer_stays_idle() -> None:
    h = Harness(max_queue=1, rematch_cooldown=10)
    h.room("a", "b")
    h.do("a", {"type": "next"})  # a waits (cooling with b)
    out = h.join("b")  # b cannot match a and the queue is full
    assert frames(out)[0]["code"] == "queue-full"
    assert h.lobby.state_of("b") is State.IDLE


def test_queue_timeout_makes_the_peer_idle_with_an_error() -> None:
    h = Harness(queue_timeout=60)
    h.room("a")
    assert h.lobby.next_deadline() == pytest.approx(1060.0)
    assert h.advance(59.9) == []
    out = h.advance(0.1)
    assert frames(out) == [frames(out)[0]]
    assert frames(out)[0]["code"] == "queue-timeout"
    assert h.lobby.state_of("a") is State.IDLE and h.lobby.waiting == 0


def test_rate_limit_refuses_with_an_error_then_closes_sustained_abuse() -> None:
    h = Harness(rate_limit=10, rate_burst=5)
    h.connect("a")
    codes = [frames(h.do("a", "{}"))[0]["code"] for _ in range(5)]
    assert codes == ["invalid-message"] * 5  # the burst is spent on anything, even junk
    out = h.do("a", {"type": "join"})
    assert frames(out)[0]["code"] == "rate-limited"
    assert h.lobby.state_of("a") is State.IDLE  # the refused frame had no effect
    h.now += 0.1  # one token back
    assert frames(h.join("a")) == [{"type": "waiting"}]
    closes: list[Close] = []
    for _ in range(10):
        closes += [e for e in h.do("a", {"type": "next"}) if isinstance(e, Close)]
    assert [c.code for c in closes] == [1008]


@pytest.mark.parametrize(("per_ip", "refused"), [(2, True), (0, False)])
def test_connection_caps_close_with_1013_before_welcome(per_ip: int, refused: bool) -> None:
    h = Harness(max_connections=10, max_connections_per_ip=per_ip)
    h.connect("a")
    h.connect("b")
    out = h.connect("c")
    if refused:
        assert [type(e) for e in out if not isinstance(e, Event)] == [Close]
        assert isinstance(out[0], Close) and out[0].code == 1013
        assert h.lobby.connections == 2
        assert frames(h.connect("d", addr="10.0.0.2"))[0]["type"] == "welcome"
    else:
        assert frames(out)[0]["type"] == "welcome"


# ---------------------------------------------------------------- faults change the rules


def test_swap_roles_fault_gives_the_waiting_peer_the_offer() -> None:
    h = Harness(faults=frozenset({Fault.SWAP_ROLES}))
    h.room("a")
    h.connect("b")
    out = h.join("b")
    assert frames(out, "a")[0]["role"] == "offerer"


def test_never_match_fault_leaves_everybody_waiting() -> None:
    h = Harness(faults=frozenset({Fault.NEVER_MATCH}))
    h.room("a", "b")
    assert h.lobby.waiting == 2

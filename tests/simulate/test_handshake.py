"""The data-channel check as a pure state machine: no aiortc, no event loop, a fake clock.

Two :class:`Handshake` objects are wired back to back: every ``Send`` of one
is delivered as text to the other, 5 ms later.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, field

import pytest

from drift.simulate.handshake import (
    CrossWired,
    DataMsg,
    Effect,
    Handshake,
    Hello,
    PartnerVerified,
    RoundTrip,
    Send,
    Verified,
    encode,
)

LATENCY = 0.005


def make(role: str, *, room: str = "room1", **kw: object) -> Handshake:
    peer = "offer-peer" if role == "offerer" else "answer-peer"
    nonce = 111 if role == "offerer" else 222
    return Handshake(peer_id=peer, room_id=room, offerer=role == "offerer", nonce=nonce, **kw)  # type: ignore[arg-type]


@dataclass
class Wire:
    """Delivers each side's sends to the other side, in order, LATENCY later."""

    a: Handshake
    b: Handshake
    now: float = 100.0
    sent: list[tuple[str, DataMsg]] = field(default_factory=list)
    effects: dict[str, list[Effect]] = field(default_factory=lambda: {"a": [], "b": []})
    queue: deque[tuple[str, str]] = field(default_factory=deque)

    def side(self, name: str) -> Handshake:
        return self.a if name == "a" else self.b

    def take(self, name: str, effects: list[Effect]) -> None:
        self.effects[name] += effects
        to = "b" if name == "a" else "a"
        for effect in effects:
            if isinstance(effect, Send):
                self.sent.append((name, effect.msg))
                self.queue.append((to, encode(effect.msg)))

    def open(self) -> None:
        self.take("a", self.a.open(self.now))
        self.take("b", self.b.open(self.now))
        self.run()

    def run(self) -> None:
        while self.queue:
            to, text = self.queue.popleft()
            self.now += LATENCY
            self.take(to, self.side(to).receive(text, self.now))

    def of(self, name: str, kind: type[Effect]) -> list[Effect]:
        return [e for e in self.effects[name] if isinstance(e, kind)]


def test_two_drift_peers_verify_each_other_in_four_messages() -> None:
    wire = Wire(make("offerer", next_selected=True), make("answerer"))
    wire.open()
    assert [(who, m.t) for who, m in wire.sent] == [
        ("a", "hello"),
        ("b", "hello"),
        ("a", "pong"),
        ("b", "ok"),
    ]
    for name, partner in (("a", "answer-peer"), ("b", "offer-peer")):
        hs = wire.side(name)
        assert hs.verified and hs.partner_ok
        assert len(wire.of(name, Verified)) == 1 and len(wire.of(name, PartnerVerified)) == 1
        (hello,) = wire.of(name, Hello)
        assert isinstance(hello, Hello) and (hello.peer, hello.room) == (partner, "room1")
    # each side's ping came back one round trip (two hops) after it was sent
    assert wire.a.rtt_ms == pytest.approx(2 * LATENCY * 1000)
    assert wire.b.rtt_ms == pytest.approx(2 * LATENCY * 1000)
    assert wire.of("b", Hello) == [Hello("offer-peer", "room1", next=True)]
    assert not wire.of("a", CrossWired) and not wire.of("b", CrossWired)


def test_the_answerer_says_ok_in_its_hello_when_it_already_verified() -> None:
    answerer = make("answerer")
    # a ping the answerer never sent is no round trip: nothing verifies on it
    assert answerer.receive(encode(DataMsg("pong", echo=999)), 1.0) == []
    out = answerer.receive(encode(DataMsg("hello", peer="p", room="room1", n=7)), 1.0)
    (send,) = [e for e in out if isinstance(e, Send)]
    assert send.msg.t == "hello" and send.msg.echo == 7 and send.msg.n == 222
    assert not send.msg.ok and not answerer.verified


def test_a_hello_from_another_room_is_cross_wired_and_never_verifies() -> None:
    wire = Wire(make("offerer", room="room9"), make("answerer"))
    wire.open()
    assert wire.of("b", CrossWired) == [CrossWired("offer-peer", "room9")]
    assert not wire.b.verified
    # the offerer saw the answerer name room1, not its room9
    assert wire.of("a", CrossWired) == [CrossWired("answer-peer", "room1")]
    assert not wire.a.verified


def test_a_media_pair_verifies_only_once_the_partners_frames_arrived() -> None:
    frames: dict[str, bool] = {"answer-peer": False, "offer-peer": False}
    a = make("offerer", media_ready=lambda peer: frames[peer])
    b = make("answerer", media_ready=lambda peer: frames[peer])
    wire = Wire(a, b)
    wire.open()
    assert not a.verified and not b.verified
    assert all(not m.ok for _, m in wire.sent)  # nobody claimed a check it did not pass
    assert a.poll(wire.now) == []  # still no frames
    frames["answer-peer"] = True  # the offerer now sees the answerer's video
    out = a.poll(wire.now)
    assert [type(e) for e in out] == [Verified, Send]
    assert isinstance(out[1], Send) and out[1].msg == DataMsg("ok", ok=True)
    assert a.poll(wire.now) == []  # verified once, ok said once
    wire.take("a", out)
    wire.run()
    assert b.partner_ok and not b.verified


def test_a_browser_page_is_pinged_in_its_own_terms() -> None:
    page_side = make("answerer", ping_on_open=True)
    (ping,) = page_side.open(5.0)
    assert isinstance(ping, Send) and ping.msg == DataMsg("ping", n=222)
    # the page answers {"t": "pong", "n": ...}: the echo is in "n"
    out = page_side.receive(json.dumps({"t": "pong", "n": 222}), 5.25)
    assert out == [RoundTrip(pytest.approx(250.0))]
    # the page's own liveness ping gets its pong; its other chatter is ignored
    assert page_side.receive(json.dumps({"t": "ping", "n": 9}), 6.0) == [Send(DataMsg("pong", n=9))]
    assert page_side.receive("not json", 6.0) == []
    assert page_side.receive(json.dumps({"kind": "chat", "text": "hi"}), 6.0) == []
    assert not page_side.verified  # a page never says who it is


def test_an_offerer_with_a_browser_page_sends_hello_and_ping() -> None:
    hs = make("offerer", ping_on_open=True)
    assert [e.msg.t for e in hs.open(0.0) if isinstance(e, Send)] == ["hello", "ping"]


def test_the_nonce_is_never_zero() -> None:
    with pytest.raises(ValueError, match="nonce"):
        Handshake(peer_id="p", room_id="r", offerer=True, nonce=0)


@pytest.mark.parametrize("module", ["drift.simulate.handshake", "drift.simulate.sdp"])
def test_the_pure_parts_load_no_event_loop_or_webrtc(module: str) -> None:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = {m.split(".")[0] for m in json.loads(out.stdout)}
    assert module in json.loads(out.stdout)
    assert loaded.isdisjoint({"asyncio", "aiortc", "aioice", "aiohttp", "av", "socket"})

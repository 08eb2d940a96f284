"""The verdict checks every server event against what the other side of the room did.

Records are built by hand, as the peers would have filled them: each case is one
lie (or one truth that must pass) of a server.
"""

from __future__ import annotations

from drift.simulate.records import Failure, Outcome, PeerRecord, RoundRecord
from drift.simulate.verify import PARTNER_LEFT_SLACK_S, RELAY_GRACE_S, classify


def rnd(room: str, role: str, **kw: object) -> RoundRecord:
    base: dict[str, object] = dict(
        number=1, t_join=0.0, t_matched=0.1, room_id=room, role=role, verified=True,
        rtt_ms=1.0, t_verified=0.5, t_answer=0.3, t_ice_connected=0.4, t_connected=0.4,
        t_channel_open=0.45, candidates_sent=1, candidates_received=1, t_end=3.0,
    )  # fmt: skip
    base.update(kw)
    return RoundRecord(**base)  # type: ignore[arg-type]


def pair(room: str = "r1", a: int = 0, b: int = 1) -> tuple[PeerRecord, PeerRecord]:
    """A verified pair: p<a> waited and answers, p<b> offers; each sent two relays."""
    answerer = PeerRecord(
        index=a, url="ws://x/ws", t_start=0.0, peer_id=f"p{a}",
        rounds=[rnd(room, "answerer", waited=True, hello_peer=f"p{b}", hello_room=room)],
    )  # fmt: skip
    offerer = PeerRecord(
        index=b, url="ws://x/ws", t_start=0.0, peer_id=f"p{b}",
        rounds=[rnd(room, "offerer", hello_peer=f"p{a}", hello_room=room)],
    )  # fmt: skip
    base = 1000 * (a + 1)
    offerer.rounds[0].relays_sent = [(0.2, base + 1), (0.21, base + 2)]
    answerer.rounds[0].relays_received = [base + 1, base + 2]
    answerer.rounds[0].relays_sent = [(0.3, base + 3)]
    offerer.rounds[0].relays_received = [base + 3]
    return answerer, offerer


def partner_left(rec: PeerRecord, reason: str, at: float) -> None:
    r = rec.rounds[0]
    r.partner_left_reason, r.t_partner_left, r.ended_by = reason, at, f"partner-left:{reason}"


def kinds(*records: PeerRecord) -> list[str | None]:
    return [r.failure_kind for r in records]


def test_a_true_partner_left_passes_for_every_reason() -> None:
    for reason, did in (("left", "leave"), ("next", "next"), ("disconnected", "close")):
        answerer, offerer = pair()
        offerer.rounds[0].own_end, offerer.rounds[0].t_own_end = did, 2.0
        partner_left(answerer, reason, 2.001)
        verdict = classify([answerer, offerer], hold=1.0)
        assert verdict.passed(None), (reason, kinds(answerer, offerer))


def test_partner_left_with_no_action_of_the_partner_is_a_lie_named_on_both_sides() -> None:
    answerer, offerer = pair()
    partner_left(answerer, "left", 1.0)
    # the lied-to answerer closed; the honest offerer was then told the truth
    answerer.rounds[0].own_end, answerer.rounds[0].t_own_end = "close", 1.001
    offerer.rounds[0].own_end, offerer.rounds[0].t_own_end = "close", 1.003
    partner_left(offerer, "disconnected", 1.002)
    verdict = classify([answerer, offerer], hold=2.0)
    assert kinds(answerer, offerer) == [Failure.FALSE_PARTNER_LEFT] * 2
    assert "never sent leave" in (answerer.failure_detail or "")
    assert not verdict.passed(None)


def test_a_reason_the_partner_did_not_give_is_a_lie() -> None:
    answerer, offerer = pair()
    offerer.rounds[0].own_end, offerer.rounds[0].t_own_end = "close", 2.0
    partner_left(answerer, "next", 2.01)  # it closed its socket; it never pressed next
    classify([answerer, offerer])
    assert answerer.failure_kind == Failure.FALSE_PARTNER_LEFT


def test_partner_left_before_the_partner_acted_is_a_lie() -> None:
    answerer, offerer = pair()
    offerer.rounds[0].own_end, offerer.rounds[0].t_own_end = "leave", 2.0
    partner_left(answerer, "left", 2.0 - 10 * PARTNER_LEFT_SLACK_S)
    classify([answerer, offerer])
    assert answerer.failure_kind == Failure.FALSE_PARTNER_LEFT
    assert "before the partner's leave" in (answerer.failure_detail or "")


def test_disconnected_after_the_server_dropped_the_partner_is_true_whenever_it_noticed() -> None:
    answerer, offerer = pair()
    offerer.rounds[0].own_end, offerer.rounds[0].t_own_end = "lost", 5.0
    partner_left(answerer, "timeout", 2.0)
    assert classify([answerer, offerer], hold=1.0).passed(None)


def test_a_partner_that_really_left_before_the_hold_ended_cuts_the_hold() -> None:
    answerer, offerer = pair()
    offerer.rounds[0].own_end, offerer.rounds[0].t_own_end = "close", 1.0
    partner_left(answerer, "disconnected", 1.001)
    verdict = classify([answerer, offerer], hold=2.0)
    assert answerer.failure_kind == Failure.HOLD_CUT
    assert "short of --hold 2 s" in (answerer.failure_detail or "")
    assert not verdict.passed(None)
    # the same records with no hold promised pass
    for rec in (answerer, offerer):
        rec.outcome = rec.failure_kind = rec.failure_detail = None
    assert classify([answerer, offerer], hold=0.0).passed(None)


def test_relays_are_checked_against_what_the_partner_sent() -> None:
    answerer, offerer = pair()
    answerer.rounds[0].relays_received = [1001, 1001, 1002]
    classify([answerer, offerer])
    assert answerer.failure_kind == Failure.RELAY_DUPLICATED

    answerer, offerer = pair()
    answerer.rounds[0].relays_received = [1001, 9999]
    classify([answerer, offerer])
    assert answerer.failure_kind == Failure.RELAY_ALTERED

    answerer, offerer = pair()
    answerer.rounds[0].relays_received = [1002]  # the first never came, the second did
    classify([answerer, offerer])
    assert answerer.failure_kind == Failure.RELAY_DROPPED


def test_a_missing_last_relay_is_dropped_only_after_the_grace() -> None:
    answerer, offerer = pair()
    answerer.rounds[0].relays_received = [1001]
    answerer.rounds[0].t_end = 0.21 + RELAY_GRACE_S / 2  # it may still have been in flight
    assert classify([answerer, offerer]).passed(None)
    answerer, offerer = pair()
    answerer.rounds[0].relays_received = [1001]
    answerer.rounds[0].t_end = 0.21 + RELAY_GRACE_S * 2
    classify([answerer, offerer])
    assert answerer.failure_kind == Failure.RELAY_DROPPED


def test_a_relay_from_another_room_names_both_rooms_cross_wired_on_both_sides() -> None:
    a0, o1 = pair("r1", 0, 1)
    a2, o3 = pair("r2", 2, 3)
    a2.rounds[0].relays_received.append(1001)  # r1's offer, also delivered into r2
    verdict = classify([a0, o1, a2, o3])
    assert kinds(a0, o1, a2, o3) == [Failure.CROSS_WIRED] * 4
    assert verdict.verified_pairs == 0


def test_one_side_cross_wired_and_the_other_ice_failed_are_both_cross_wired() -> None:
    answerer, offerer = pair()
    answerer.rounds[0].verified = offerer.rounds[0].verified = False
    answerer.rounds[0].failure = Failure.CROSS_WIRED
    answerer.rounds[0].detail = "candidate for ufrag x is not from the partner's SDP"
    offerer.rounds[0].failure = Failure.ICE_FAILED
    classify([answerer, offerer])
    assert kinds(answerer, offerer) == [Failure.CROSS_WIRED] * 2


def test_a_stop_is_named_by_its_layer_and_claims_no_timeout_that_did_not_happen() -> None:
    answerer, offerer = pair()
    for r in (answerer.rounds[0], offerer.rounds[0]):
        r.verified, r.t_verified, r.t_connected, r.t_channel_open = False, None, None, None
        r.failure, r.detail = Failure.TIMEOUT, "no verification within the 6 s timeout"
        r.ended_by = "timeout"
    classify([answerer, offerer])
    assert kinds(answerer, offerer) == [Failure.DTLS_FAILED] * 2
    assert "6 s timeout" in (answerer.failure_detail or "")

    answerer, offerer = pair()
    a = answerer.rounds[0]
    a.media, a.verified, a.t_verified, a.media_frames_ok = True, False, None, 2
    partner_left(answerer, "disconnected", 2.0)
    offerer.rounds[0].own_end, offerer.rounds[0].t_own_end = "close", 1.9
    classify([answerer, offerer])
    assert answerer.failure_kind == Failure.MEDIA_FAILED
    detail = answerer.failure_detail or ""
    assert "timeout" not in detail and "partner-left:disconnected" in detail
    assert answerer.outcome == Outcome.FAILED


def test_a_relay_that_reaches_a_waiting_peer_is_cross_wired() -> None:
    answerer, offerer = pair()
    waiter = PeerRecord(
        index=5, url="ws://x/ws", t_start=0.0, peer_id="p5", released_waiting=1,
        rounds=[RoundRecord(number=1, t_join=0.0, relays_received=[1001])],
    )  # fmt: skip
    classify([answerer, offerer, waiter])
    assert kinds(answerer, offerer, waiter) == [Failure.CROSS_WIRED] * 3

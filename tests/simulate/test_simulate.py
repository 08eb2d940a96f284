"""drift simulate's parts: SDP trickle surgery, identity video, the verdict, one real pair."""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import Awaitable, Callable
from pathlib import Path

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection
from rich.console import Console

from drift.client.urls import ws_url
from drift.exitcodes import ExitCode
from drift.serve.server import Server
from drift.simulate.interop import run_one_peer
from drift.simulate.loopback import configure_interfaces, loopback_only
from drift.simulate.media import identity_code, luma_of, paint, read_luma
from drift.simulate.records import Failure, Outcome, PeerRecord, RoundRecord
from drift.simulate.run import Settings, simulate_run
from drift.simulate.runner import Coordinator, Snapshot
from drift.simulate.sdp import read_tag, split_candidates, tag_sdp
from drift.simulate.verify import classify

MakeServer = Callable[..., Awaitable[Server]]


async def aiortc_offer() -> str:
    configure_interfaces(False)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("x")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


async def test_loopback_is_the_default_and_real_interfaces_an_option() -> None:
    configure_interfaces(True)
    assert not loopback_only()
    configure_interfaces(False)
    assert loopback_only()
    sdp = await aiortc_offer()
    hosts = [line for line in sdp.split("\r\n") if line.startswith("a=candidate:")]
    assert hosts and all(" 127.0.0.1 " in line for line in hosts)


async def test_split_candidates_strips_and_returns_them_for_trickle() -> None:
    sdp = await aiortc_offer()
    body, cands = split_candidates(sdp)
    assert "a=candidate" not in body and "a=end-of-candidates" not in body
    assert len(cands) == sdp.count("a=candidate:") >= 1
    ufrag = next(line[12:] for line in sdp.split("\r\n") if line.startswith("a=ice-ufrag:"))
    for cand in cands:
        assert cand.candidate.startswith("candidate:")
        assert cand.sdpMid == "0" and cand.sdpMLineIndex == 0
        assert cand.usernameFragment == ufrag
    # the rest of the SDP is untouched
    kept = [line for line in sdp.split("\r\n") if not line.startswith(("a=candidate", "a=end-of"))]
    assert body.split("\r\n") == kept


def test_sdp_tag_round_trip() -> None:
    sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=application 9 x\r\n"
    tagged = tag_sdp(sdp, "peerA", "room1")
    assert read_tag(tagged) == ("peerA", "room1")
    assert tagged.split("\r\n")[4] == "a=x-drift-peer:peerA room1"
    assert read_tag(sdp) is None


def test_identity_frames_survive_vp8() -> None:
    ident = identity_code("some-peer")
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = 160, 120, "yuv420p"
    enc.bit_rate = 100_000
    enc.time_base = fractions.Fraction(1, 5)
    dec = av.CodecContext.create("vp8", "r")
    read: list[tuple[int, int] | None] = []
    for n in range(6):
        yuv = np.vstack([paint(ident, n), np.full((60, 160), 128, np.uint8)])
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = n
        for packet in enc.encode(frame):
            read += [read_luma(luma_of(out)) for out in dec.decode(packet)]
    assert read and all(r is not None and r[0] == ident for r in read)
    assert [r[1] for r in read if r] == list(range(len(read)))


def test_a_damaged_frame_fails_its_check() -> None:
    luma = paint(identity_code("x"), 3)
    luma[:20, :20] = 255 - luma[:20, :20]  # flip one block
    assert read_luma(luma) is None


# ------------------------------------------------------------------ the verdict


def rnd(room: str, role: str, **kw: object) -> RoundRecord:
    base: dict[str, object] = dict(
        number=1, t_join=0.0, t_matched=0.1, room_id=room, role=role, verified=True,
        rtt_ms=1.0, t_verified=0.5, candidates_sent=1, candidates_received=1,
    )  # fmt: skip
    base.update(kw)
    return RoundRecord(**base)  # type: ignore[arg-type]


def peer(index: int, rounds: list[RoundRecord], **kw: object) -> PeerRecord:
    pid = f"p{index}"
    return PeerRecord(index=index, url="ws://x/ws", t_start=0.0, peer_id=pid, rounds=rounds, **kw)  # type: ignore[arg-type]


def good_pair(room: str = "r1", a: int = 0, b: int = 1) -> list[PeerRecord]:
    return [
        peer(a, [rnd(room, "answerer", waited=True, hello_peer=f"p{b}", hello_room=room)]),
        peer(b, [rnd(room, "offerer", hello_peer=f"p{a}", hello_room=room)]),
    ]


def test_a_good_pair_is_verified() -> None:
    verdict = classify(good_pair())
    assert verdict.outcomes[Outcome.VERIFIED] == 2 and verdict.verified_pairs == 1
    assert verdict.passed(None)


def test_identity_of_someone_outside_the_room_is_cross_wired() -> None:
    records = good_pair("r1", 0, 1) + good_pair("r2", 2, 3)
    # both sides "verified" locally, but p0 got p2's identity claiming room r1
    records[0].rounds[0].hello_peer = "p2"
    verdict = classify(records)
    assert records[0].failure_kind == Failure.CROSS_WIRED
    assert not verdict.passed(None)


def test_both_peers_of_a_room_with_one_role_is_swapped_roles() -> None:
    records = good_pair()
    records[0].rounds[0].role = "offerer"
    classify(records)
    assert {r.failure_kind for r in records} == {Failure.SWAPPED_ROLES}


def test_candidates_that_never_arrived_are_dropped_not_timeout() -> None:
    records = good_pair()
    for r in records:
        r.rounds[0].verified = False
        r.rounds[0].candidates_received = 0
        r.rounds[0].failure = Failure.TIMEOUT
    classify(records)
    assert {r.failure_kind for r in records} == {Failure.CANDIDATES_DROPPED}


def test_only_one_side_verified_is_one_sided() -> None:
    records = good_pair()
    records[1].rounds[0].verified = False
    classify(records)
    assert {r.failure_kind for r in records} == {Failure.ONE_SIDED}


def test_a_partner_timeout_takes_the_cause_seen_by_the_other_side() -> None:
    records = good_pair()
    records[0].rounds[0].verified = False
    records[0].rounds[0].failure = Failure.ICE_FAILED
    records[1].rounds[0].verified = False
    records[1].rounds[0].failure = Failure.TIMEOUT
    classify(records)
    assert {r.failure_kind for r in records} == {Failure.ICE_FAILED}


def test_the_odd_one_out_waits_but_two_waiters_never_matched() -> None:
    alone = peer(2, [RoundRecord(number=1, t_join=0.0)], released_waiting=1)
    verdict = classify([*good_pair(), alone])
    assert alone.outcome == Outcome.WAITING and verdict.passed(None)
    stuck = [peer(i, [RoundRecord(number=1, t_join=0.0)], released_waiting=2) for i in (5, 6)]
    verdict = classify(stuck)
    assert {r.failure_kind for r in stuck} == {Failure.NEVER_MATCHED}
    assert not verdict.passed(None)


def test_min_success_lets_a_ratio_pass() -> None:
    records = good_pair("r1", 0, 1) + good_pair("r2", 2, 3)
    records[3].rounds[0].verified = False
    verdict = classify(records)
    assert not verdict.passed(None)
    assert verdict.passed(0.5) and not verdict.passed(0.9)


def test_coordinator_releases_only_a_stable_final_wait() -> None:
    coord = Coordinator(workers=2)

    def snap(worker: int, **states: int) -> Snapshot:
        return Snapshot(worker, 5, states, 0, 0, {}, 0.0)

    coord.update(snap(0, waiting=1))
    assert coord.decide() is None  # worker 1 not heard from yet
    coord.update(snap(1, negotiating=2))
    assert coord.decide() is None  # others still active
    coord.update(snap(1))
    assert coord.decide() is None  # first tick: armed
    assert coord.decide() == 1  # still so on the next tick
    coord.update(snap(1, pending=3))
    assert coord.decide() is None  # the odd one out may pair with a later arrival
    coord.update(snap(1, waiting=1, pending=3))
    assert coord.decide() is None
    assert coord.decide() == 2  # two waiting and nobody active: they were never matched


# ------------------------------------------------------------------ a real pair


async def test_run_one_peer_pairs_connect_with_video(make_server: MakeServer) -> None:
    server = await make_server()
    url = ws_url(server.url)
    first = asyncio.ensure_future(run_one_peer(url, media=True, hold=1.6, timeout=15))
    second = asyncio.ensure_future(run_one_peer(url, media=True, hold=1.6, timeout=15))
    a, b = await asyncio.wait_for(asyncio.gather(first, second), 40)
    for outcome in (a, b):
        assert outcome.failure is None, outcome.detail
        assert outcome.connected
        assert outcome.media_frames_sent >= 3
        assert outcome.media_frames_received >= 1
        assert outcome.record.rounds[-1].rtt_ms is not None  # pinged like a browser page
    assert {a.role, b.role} == {"offerer", "answerer"}
    assert a.room_id == b.room_id
    # trickle: candidates went as ice-candidate frames
    assert server.lobby.counters.messages.get("ice-candidate", 0) >= 4


async def test_odd_peer_out_outlives_the_servers_queue_timeout(
    make_server: MakeServer, tmp_path: Path
) -> None:
    """In-process run against a server whose queue times out before the run ends."""
    server = await make_server(queue_timeout=0.3)
    url = ws_url(server.url)
    settings = Settings(
        peers=3, urls=(url,), hold=1.0, media_fraction=0.0, live=False, report_dir=tmp_path
    )
    result = await simulate_run(settings, Console(quiet=True))
    assert result.exit_code == ExitCode.OK, result.summary
    assert result.summary["outcomes"] == {"verified": 2, "waiting": 1, "failed": 0}
    assert server.lobby.counters.errors.get("queue-timeout", 0) >= 1
    assert (tmp_path / "report.html").exists()


def test_the_timeline_counts_each_state_where_it_holds() -> None:
    from drift.simulate.report import timeline

    records = [
        # joined at 0, matched at 1, verified at 2, room ended at 3; done at 3
        peer(0, [rnd("r", "offerer", t_join=0.0, t_matched=1.0, t_verified=2.0, t_end=3.0)]),
        # never matched: waiting from 0.5 until it failed at 4
        peer(1, [rnd("r2", "answerer", t_join=0.5, t_matched=None, verified=False)]),
    ]
    records[0].t_done = 3.0
    records[1].t_done = 4.0
    records[1].outcome = Outcome.FAILED
    series = timeline(records, points=9)  # every 0.5 s from 0 to 4

    def at(state: str, t: float) -> float:
        return dict(series[state])[t]

    assert [at("waiting", t) for t in (0.0, 0.5, 1.0, 2.0, 3.5)] == [1, 2, 1, 1, 1]
    assert [at("negotiating", t) for t in (0.5, 1.0, 1.5, 2.0)] == [0, 1, 1, 0]
    assert [at("verified", t) for t in (1.5, 2.0, 2.5, 3.0)] == [0, 1, 1, 0]
    assert (at("done", 2.5), at("done", 3.0), at("failed", 3.5), at("failed", 4.0)) == (0, 1, 0, 1)

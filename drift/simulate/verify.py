"""Decide, from both sides of every room, which peers are verified and why the rest failed.

A peer only records what it saw. A pair is verified when each side received the
identity (``peerId``, ``roomId``) of the peer the *server* put in the same room
— known here from every peer's own ``matched`` — and a ping/pong round trip
succeeded (and, on media pairs, enough frames carrying the partner's identity
arrived). Nothing a server relays can fake that: a cross-wired relay delivers
the identity of a peer from another room, which is caught here even when the
connection itself came up.

Failure kinds are :class:`~drift.simulate.records.Failure`, applied in its
order of precedence; a peer whose own view is only "timed out" takes the cause
its partner saw (the partner that was cross-wired, say), so a broken rule is
named on both sides of the room.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from drift.simulate.records import Failure, Outcome, PeerRecord, RoundRecord
from drift.simulate.settings import Settings

#: Kinds that are causes, and so explain a partner's plain timeout or early end.
_CAUSES = (
    Failure.SIGNALING_ERROR,
    Failure.LATE_MATCHED,
    Failure.SWAPPED_ROLES,
    Failure.CROSS_WIRED,
    Failure.FALSE_PARTNER_LEFT,
    Failure.TURN_MISSING,
    Failure.TURN_UNREACHABLE,
    Failure.TURN_AUTH_REJECTED,
    Failure.TURN_ALLOCATION_REFUSED,
    Failure.RELAY_ALTERED,
    Failure.RELAY_DUPLICATED,
    Failure.CANDIDATES_DROPPED,
    Failure.RELAY_DROPPED,
    Failure.ICE_FAILED,
    Failure.DTLS_FAILED,
)
#: A relay-only peer that gathered no relay candidate: nothing after that could work.
_TURN = (
    Failure.TURN_MISSING,
    Failure.TURN_UNREACHABLE,
    Failure.TURN_AUTH_REJECTED,
    Failure.TURN_ALLOCATION_REFUSED,
)
#: Kinds that only say "it stopped": explained by a cause the partner saw.
_EXPLAINED = (Failure.TIMEOUT, Failure.PARTNER_LEFT, Failure.HOLD_CUT, Failure.ONE_SIDED)
_ORDER = {kind.value: i for i, kind in enumerate(Failure)}

#: The partner's own leave/next/close must come before our ``partner-left``
#: arrived. Both times are ``time.monotonic()`` (one clock for every process of
#: the machine): the partner reads it before it sends, we after we receive, so
#: the order is causal and this slack only covers the two clock reads.
PARTNER_LEFT_SLACK_S = 0.05
#: What each ``partner-left`` reason claims the partner did (docs/protocol.md).
#: ``lost``: the server closed the partner's socket, which the partner may notice
#: only after the server told us, so its time is not compared.
_REASONS: dict[str, tuple[str, ...]] = {
    "left": ("leave",),
    "next": ("next",),
    "disconnected": ("close", "lost"),
    "timeout": ("close", "lost"),
}
#: A relayed frame the partner sent this long before we stopped reading must
#: have arrived, even when no later frame of the partner's did.
RELAY_GRACE_S = 2.0


@dataclass(slots=True)
class RoomView:
    room_id: str
    members: list[tuple[PeerRecord, RoundRecord]] = field(default_factory=list)
    verified: bool = False
    failure: str | None = None


@dataclass(slots=True)
class Verdict:
    peers: list[PeerRecord]
    rooms: dict[str, RoomView]
    outcomes: Counter[str]
    failures: Counter[str]
    #: run-level checks that failed (e.g. the server leaked connections)
    run_failures: list[str]

    @property
    def verified_pairs(self) -> int:
        return sum(1 for room in self.rooms.values() if room.verified)

    @property
    def failed(self) -> int:
        return self.outcomes.get(Outcome.FAILED.value, 0)

    def success_ratio(self) -> float:
        judged = len(self.peers) - self.outcomes.get(Outcome.WAITING.value, 0)
        return 1.0 if judged <= 0 else self.outcomes.get(Outcome.VERIFIED.value, 0) / judged

    def passed(self, min_success: float | None) -> bool:
        if self.run_failures:
            return False
        if min_success is None:
            return self.failed == 0 and self.outcomes.get(Outcome.VERIFIED.value, 0) > 0
        return self.success_ratio() >= min_success


@dataclass(frozen=True, slots=True)
class _Context:
    trickle: bool
    ice_policy: str
    hold: float
    timeout: float
    first_partner: dict[str, str]
    #: digest of every relayed frame sent -> (peer, room) of its sender; None when
    #: several senders sent the same content (an end-of-candidates marker)
    senders: dict[int, tuple[str, str] | None]


def classify(
    records: Sequence[PeerRecord],
    *,
    trickle: bool = Settings.trickle,
    run_failures: Sequence[str] = (),
    ice_policy: str = Settings.ice_policy,
    hold: float = Settings.hold,
    timeout: float = Settings.timeout,
) -> Verdict:
    """Fill ``outcome``/``failure_kind``/``failure_detail`` on every record.

    With ``ice_policy="relay"`` a side that connected on a pair whose local
    candidate is not a relay one (or whose pair is unknown) is ``not-relayed``.
    ``hold`` is the promise checked by ``hold-cut``; ``timeout`` only words details.
    """
    rooms: dict[str, RoomView] = {}
    for rec in records:
        for rnd in rec.rounds:
            if rnd.room_id is not None:
                rooms.setdefault(rnd.room_id, RoomView(rnd.room_id)).members.append((rec, rnd))
    judged: dict[int, list[tuple[str | None, str | None]]] = defaultdict(list)
    first_partner: dict[str, str] = {}
    for room in rooms.values():
        for rec, rnd in room.members:
            if rnd.number == 1 and rec.peer_id:
                others = [o.peer_id for o, _ in room.members if o is not rec and o.peer_id]
                if others:
                    first_partner[rec.peer_id] = others[0]
    senders: dict[int, tuple[str, str] | None] = {}
    for rec in records:
        for rnd in rec.rounds:
            for _, sent in rnd.relays_sent:
                owner = (rec.peer_id or f"#{rec.index}", rnd.room_id or "?")
                senders[sent] = owner if senders.get(sent, owner) == owner else None
                # (the same content from two senders, e.g. end-of-candidates: nobody's)
    ctx = _Context(trickle, ice_policy, hold, timeout, first_partner, senders)
    # rooms whose frames were seen in another room: their members were cross-wired
    # even if nothing foreign reached them (their own frames went elsewhere)
    leaked: dict[str, str] = {}
    for rec in records:
        for rnd in rec.rounds:
            for foreign in rnd.foreign_rooms:
                leaked.setdefault(foreign, rnd.room_id or "?")
            for got in rnd.relays_received:
                src = senders.get(got)
                if src is not None and src[1] != rnd.room_id:
                    leaked.setdefault(src[1], rnd.room_id or "a peer that was in no room")
    for room in rooms.values():
        kinds = [_judge_round(rec, rnd, room, ctx) for rec, rnd in room.members]
        kinds = _explain(room, kinds, leaked)
        for (rec, _), kind in zip(room.members, kinds, strict=True):
            judged[rec.index].append(kind)
        room.verified = len(room.members) == 2 and all(k[0] is None for k in kinds)
        failed = [k[0] for k in kinds if k[0]]
        room.failure = min(failed, key=lambda k: _ORDER[k]) if failed else None

    outcomes: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for rec in records:
        failure, detail = _judge_peer(rec, judged.get(rec.index, []))
        if failure is not None:
            rec.outcome, rec.failure_kind, rec.failure_detail = Outcome.FAILED, failure, detail
            failures[failure] += 1
        elif rec.released_waiting is not None:
            rec.outcome = Outcome.WAITING
        else:
            rec.outcome = Outcome.VERIFIED
        outcomes[rec.outcome] += 1
    return Verdict(list(records), rooms, outcomes, failures, list(run_failures))


Kind = tuple[str | None, str | None]


def _explain(room: RoomView, kinds: list[Kind], leaked: dict[str, str]) -> list[Kind]:
    """Name one cause on both sides of a room, then the layer of every plain timeout.

    A cross-wired room is cross-wired on both sides (and so is a room whose
    frames reached another room); a side that only stopped (timeout, partner
    gone, hold cut, one-sided) takes the cause its partner saw.
    """
    out: list[Kind] = []
    crossed = [k for k in kinds if k[0] == Failure.CROSS_WIRED]
    causes = [k for k in kinds if k[0] in _CAUSES]
    for (_, rnd), kind in zip(room.members, kinds, strict=True):
        if kind[0] != Failure.CROSS_WIRED and room.room_id in leaked:
            kind = (
                Failure.CROSS_WIRED.value,
                f"frames of room {room.room_id} were relayed into room {leaked[room.room_id]}",
            )
        elif kind[0] != Failure.CROSS_WIRED and crossed:
            kind = (Failure.CROSS_WIRED.value, f"partner saw: {crossed[0][1]}")
        elif kind[0] in _EXPLAINED and causes:
            cause = min(causes, key=lambda c: _ORDER[c[0] or ""])
            kind = (cause[0], f"partner saw: {cause[1]}")
        if kind[0] == Failure.TIMEOUT:
            kind = _timeout_layer(rnd, kind)
        out.append(kind)
    return out


def _timeout_layer(rnd: RoundRecord, kind: Kind) -> Kind:
    """The layer a round stopped at, worded by how it ended (no timeout claimed that was not)."""
    if rnd.role is None:
        return kind
    why = (
        f"({kind[1]})"
        if rnd.ended_by == "timeout"
        else f"before the round ended ({rnd.ended_by or 'run over'})"
    )
    if rnd.t_answer is None:
        missing = "no answer arrived" if rnd.role == "offerer" else "no offer arrived"
        if rnd.role == "answerer" and rnd.t_offer is not None:
            missing = "the answer was not sent"
        return Failure.TIMEOUT.value, f"{missing} {why}"
    if rnd.t_ice_connected is None:
        return Failure.ICE_FAILED.value, f"ICE did not connect {why}"
    if rnd.t_connected is None:
        return Failure.DTLS_FAILED.value, f"ICE connected, DTLS did not finish {why}"
    if rnd.t_channel_open is None:
        return Failure.DATACHANNEL_FAILED.value, f"DTLS up, the data channel did not open {why}"
    return (
        Failure.DATACHANNEL_FAILED.value,
        f"the data channel opened, the identity check did not finish {why}",
    )


def _judge_peer(rec: PeerRecord, rounds: list[Kind]) -> Kind:
    if rec.failure is not None:
        return rec.failure, rec.detail
    if rec.released_waiting is not None and rec.released_waiting > 1:
        return (
            Failure.NEVER_MATCHED.value,
            f"still waiting while {rec.released_waiting} peers waited and nobody else was active",
        )
    failed = [r for r in rounds if r[0] is not None]
    failed += [(r.failure, r.detail) for r in rec.rounds if r.room_id is None and r.failure]
    failed += [
        (
            Failure.CROSS_WIRED.value,
            f"{len(r.relays_received)} relayed frames reached it in no room",
        )
        for r in rec.rounds
        if r.room_id is None and r.relays_received
    ]
    if failed:
        return min(failed, key=lambda r: _ORDER[r[0] or ""])
    if not rec.rounds:
        return Failure.TIMEOUT.value, "never joined"
    last = rec.rounds[-1]
    if last.room_id is None and rec.released_waiting is None:
        return Failure.TIMEOUT.value, "run ended before this peer was matched"
    return None, None


def _judge_round(rec: PeerRecord, rnd: RoundRecord, room: RoomView, ctx: _Context) -> Kind:
    local = (rnd.failure, rnd.detail)
    if rnd.failure == Failure.SIGNALING_ERROR:
        return local
    others = [(o, r) for o, r in room.members if o is not rec]
    if len(others) != 1:
        return (
            Failure.SIGNALING_ERROR.value,
            f"room {room.room_id} was given to {len(room.members)} peers",
        )
    partner, prnd = others[0]
    for got in rnd.relays_received:
        owner = ctx.senders.get(got)
        if owner is not None and owner[1] != room.room_id:
            return (
                Failure.CROSS_WIRED.value,
                f"a frame {owner[0]} sent in room {owner[1]} was relayed into room {room.room_id}",
            )
    if rnd.failure in (Failure.LATE_MATCHED, Failure.SWAPPED_ROLES):
        return local
    if rnd.role is not None and rnd.role == prnd.role:
        return Failure.SWAPPED_ROLES.value, f"both peers of room {room.room_id} told {rnd.role}"
    if rnd.failure == Failure.CROSS_WIRED:
        return local
    if rnd.hello_peer is not None and (
        rnd.hello_peer != partner.peer_id or rnd.hello_room != room.room_id
    ):
        return (
            Failure.CROSS_WIRED.value,
            f"got identity {rnd.hello_peer}/{rnd.hello_room}, room partner is "
            f"{partner.peer_id}/{room.room_id}",
        )
    if rnd.media_frames_foreign and not rnd.media_frames_ok:
        return Failure.CROSS_WIRED.value, "video frames carried another peer's identity"
    lie = _false_partner_left(rnd, prnd)
    if lie is not None:
        return Failure.FALSE_PARTNER_LEFT.value, lie
    if rnd.failure in _TURN:
        return local
    altered, duplicated, dropped = _relay_faults(rnd, prnd)
    if rnd.failure == Failure.DTLS_FAILED:
        if altered:
            return local[0], f"{local[1]}; {altered} relayed frames differ from what was sent"
        return local
    if altered:
        return (
            Failure.RELAY_ALTERED.value,
            f"{altered} relayed frames match nothing the partner (or anyone) sent",
        )
    if duplicated:
        return (
            Failure.RELAY_DUPLICATED.value,
            f"{duplicated} frames the partner sent once were relayed more than once",
        )
    if (
        ctx.trickle
        and prnd.candidates_sent > 0
        and rnd.candidates_received == 0
        and not (rnd.verified and prnd.verified)
    ):
        return (
            Failure.CANDIDATES_DROPPED.value,
            f"partner trickled {prnd.candidates_sent} candidates, none arrived",
        )
    if dropped:
        return (
            Failure.RELAY_DROPPED.value,
            f"{dropped} of the {len(prnd.relays_sent)} frames the partner sent never arrived, "
            "though later ones did (or they were sent long before this side stopped reading)",
        )
    if rnd.failure in (Failure.ICE_FAILED, Failure.DTLS_FAILED):
        return local
    if (
        ctx.ice_policy == "relay"
        and rnd.t_connected is not None
        and rnd.selected_local_type != "relay"
    ):
        pair = f"{rnd.selected_local_type}/{rnd.selected_remote_type}"
        return (
            Failure.NOT_RELAYED.value,
            f"relay-only, yet connected on a {pair} candidate pair"
            if rnd.selected_local_type
            else "relay-only, but the selected candidate pair is unknown",
        )
    if rnd.media and rnd.rtt_ms is not None and rnd.hello_room == room.room_id and not rnd.verified:
        ended = (
            f"within the {ctx.timeout:g} s timeout"
            if rnd.ended_by == "timeout"
            else f"before the round ended ({rnd.ended_by or 'run over'})"
        )
        return (
            Failure.MEDIA_FAILED.value,
            f"{rnd.media_frames_ok} frames with the partner's identity "
            f"({rnd.media_frames_other} unreadable) {ended}",
        )
    cut = _hold_cut(rnd, ctx.hold)
    if cut is not None:
        return Failure.HOLD_CUT.value, cut
    if rnd.verified != prnd.verified:
        who = "this side" if rnd.verified else "the partner"
        return Failure.ONE_SIDED.value, f"only {who} verified the call"
    if rnd.failure is not None:
        return local
    if not rnd.verified:
        return Failure.TIMEOUT.value, "never verified"
    if rnd.number == 2 and rec.peer_id and ctx.first_partner.get(rec.peer_id) == partner.peer_id:
        return Failure.CROSS_WIRED.value, "next handed back the partner it skipped"
    return None, None


def _false_partner_left(rnd: RoundRecord, prnd: RoundRecord) -> str | None:
    """Why the ``partner-left`` this side got contradicts the partner's own record, or None."""
    reason, told = rnd.partner_left_reason, rnd.t_partner_left
    if reason is None or told is None:
        return None
    claims = _REASONS.get(reason, ())
    did, at = prnd.own_end, prnd.t_own_end
    if did in claims:
        if did == "lost" or (at is not None and at <= told + PARTNER_LEFT_SLACK_S):
            return None
        assert at is not None
        return (
            f"told partner-left ({reason}) {at - told:.3f} s before the partner's {did} "
            "(the server spoke for it before it acted)"
        )
    want = " or ".join("closed its socket" if c == "close" else f"sent {c}" for c in claims[:1])
    later = ""
    if did is not None and at is not None:
        later = f"; the partner's own end of the room ({did}) came {at - told:+.3f} s from then"
    return f"told partner-left ({reason}), but the partner never {want}{later}"


def _relay_faults(rnd: RoundRecord, prnd: RoundRecord) -> tuple[int, int, int]:
    """(altered, duplicated, dropped) relayed frames between the partner and this side.

    A frame is dropped when it never arrived although a frame the partner sent
    after it did (a server relays each sender's frames in order), or when it
    was sent :data:`RELAY_GRACE_S` before this side, still healthy, stopped reading.
    """
    sent = Counter(d for _, d in prnd.relays_sent)
    got = Counter(rnd.relays_received)
    altered = sum(n for d, n in got.items() if d not in sent)
    duplicated = sum(n - sent[d] for d, n in got.items() if d in sent and n > sent[d])
    left = Counter(got)
    arrived: list[bool] = []
    for _, d in prnd.relays_sent:
        arrived.append(left[d] > 0)
        left[d] -= 1
    last = max((i for i, ok in enumerate(arrived) if ok), default=-1)
    # a round that failed on its own may have stopped reading (an aiortc call that
    # never returned, say): then only the order rule speaks
    stop = rnd.t_end if rnd.failure is None else None
    dropped = sum(
        1
        for i, ((t, _), ok) in enumerate(zip(prnd.relays_sent, arrived, strict=True))
        if not ok and (i < last or (stop is not None and t <= stop - RELAY_GRACE_S))
    )
    return altered, duplicated, dropped


def _hold_cut(rnd: RoundRecord, hold: float) -> str | None:
    """A verified call the server ended before ``--hold`` ran out, not by this side.

    The partner holds from when our own ``ok`` reached it, which is after we
    verified, so a partner that kept the promise leaves no earlier than
    ``t_verified + hold``.
    """
    told, verified = rnd.t_partner_left, rnd.t_verified
    if hold <= 0 or not rnd.verified or told is None or verified is None:
        return None
    if rnd.t_own_end is not None and rnd.t_own_end <= told:
        return None  # we ended it ourselves first
    short = verified + hold - told
    if short <= PARTNER_LEFT_SLACK_S:
        return None
    return (
        f"partner-left ({rnd.partner_left_reason}) {told - verified:.2f} s after the call "
        f"verified, {short:.2f} s short of --hold {hold:g} s"
    )

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

#: Local kinds that are causes, and so explain a partner's plain timeout.
_CAUSES = (
    Failure.SIGNALING_ERROR,
    Failure.SWAPPED_ROLES,
    Failure.CROSS_WIRED,
    Failure.TURN_MISSING,
    Failure.TURN_UNREACHABLE,
    Failure.TURN_AUTH_REJECTED,
    Failure.TURN_ALLOCATION_REFUSED,
    Failure.CANDIDATES_DROPPED,
    Failure.ICE_FAILED,
)
#: A relay-only peer that gathered no relay candidate: nothing after that could work.
_TURN = (
    Failure.TURN_MISSING,
    Failure.TURN_UNREACHABLE,
    Failure.TURN_AUTH_REJECTED,
    Failure.TURN_ALLOCATION_REFUSED,
)
#: Kinds that only say "nothing came": explained by a cause seen elsewhere.
_SYMPTOMS = (Failure.TIMEOUT, Failure.CANDIDATES_DROPPED, Failure.ONE_SIDED)
_ORDER = {kind.value: i for i, kind in enumerate(Failure)}


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


def classify(
    records: Sequence[PeerRecord],
    *,
    trickle: bool = Settings.trickle,
    run_failures: Sequence[str] = (),
    ice_policy: str = Settings.ice_policy,
) -> Verdict:
    """Fill ``outcome``/``failure_kind``/``failure_detail`` on every record.

    With ``ice_policy="relay"`` a side that connected on a pair whose local
    candidate is not a relay one (or whose pair is unknown) is ``not-relayed``.
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
    # rooms whose frames were seen in another room: their members were cross-wired
    # even if nothing foreign reached them (their own frames went elsewhere)
    leaked: dict[str, str] = {}
    for rec in records:
        for rnd in rec.rounds:
            for foreign in rnd.foreign_rooms:
                leaked.setdefault(foreign, rnd.room_id or "?")
    for room in rooms.values():
        kinds = [
            _judge_round(rec, rnd, room, trickle, first_partner, ice_policy)
            for rec, rnd in room.members
        ]
        causes = [k for k in kinds if k[0] in _CAUSES]
        for (rec, _), kind in zip(room.members, kinds, strict=True):
            if kind[0] in _SYMPTOMS and room.room_id in leaked:
                kind = (
                    Failure.CROSS_WIRED.value,
                    f"frames of room {room.room_id} were relayed into room {leaked[room.room_id]}",
                )
            elif kind[0] == Failure.TIMEOUT and causes:
                cause = min(causes, key=lambda c: _ORDER[c[0] or ""])
                kind = (cause[0], f"partner saw: {cause[1]}")
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


def _judge_peer(
    rec: PeerRecord, rounds: list[tuple[str | None, str | None]]
) -> tuple[str | None, str | None]:
    if rec.failure is not None:
        return rec.failure, rec.detail
    if rec.released_waiting is not None and rec.released_waiting > 1:
        return (
            Failure.NEVER_MATCHED.value,
            f"still waiting while {rec.released_waiting} peers waited and nobody else was active",
        )
    failed = [r for r in rounds if r[0] is not None]
    failed += [(r.failure, r.detail) for r in rec.rounds if r.room_id is None and r.failure]
    if failed:
        return min(failed, key=lambda r: _ORDER[r[0] or ""])
    if not rec.rounds:
        return Failure.TIMEOUT.value, "never joined"
    last = rec.rounds[-1]
    if last.room_id is None and rec.released_waiting is None:
        return Failure.TIMEOUT.value, "run ended before this peer was matched"
    return None, None


def _judge_round(
    rec: PeerRecord,
    rnd: RoundRecord,
    room: RoomView,
    trickle: bool,
    first_partner: dict[str, str],
    ice_policy: str,
) -> tuple[str | None, str | None]:
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
    if rnd.failure == Failure.SWAPPED_ROLES:
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
    if rnd.failure in _TURN:
        return local
    if (
        trickle
        and prnd.candidates_sent > 0
        and rnd.candidates_received == 0
        and not (rnd.verified and prnd.verified)
    ):
        return (
            Failure.CANDIDATES_DROPPED.value,
            f"partner trickled {prnd.candidates_sent} candidates, none arrived",
        )
    if rnd.failure == Failure.ICE_FAILED:
        return local
    if ice_policy == "relay" and rnd.t_connected is not None and rnd.selected_local_type != "relay":
        pair = f"{rnd.selected_local_type}/{rnd.selected_remote_type}"
        return (
            Failure.NOT_RELAYED.value,
            f"relay-only, yet connected on a {pair} candidate pair"
            if rnd.selected_local_type
            else "relay-only, but the selected candidate pair is unknown",
        )
    if rnd.media and rnd.rtt_ms is not None and rnd.hello_room == room.room_id and not rnd.verified:
        return (
            Failure.MEDIA_FAILED.value,
            f"{rnd.media_frames_ok} frames with the partner's identity "
            f"({rnd.media_frames_other} unreadable) before the timeout",
        )
    if rnd.verified != prnd.verified:
        who = "this side" if rnd.verified else "the partner"
        return Failure.ONE_SIDED.value, f"only {who} verified the call"
    if rnd.failure is not None:
        return local
    if not rnd.verified:
        return Failure.TIMEOUT.value, "never verified"
    if rnd.number == 2 and rec.peer_id and first_partner.get(rec.peer_id) == partner.peer_id:
        return Failure.CROSS_WIRED.value, "next handed back the partner it skipped"
    return None, None

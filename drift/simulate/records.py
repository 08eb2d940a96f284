"""What one synthetic peer observed: plain msgspec structs, cheap to pickle across processes.

A peer records facts only (times, ids it was told, what arrived); whether a
pair is verified is decided afterwards by :mod:`drift.simulate.verify`, which
sees both sides of every room.
"""

from __future__ import annotations

import enum

from msgspec import Struct

from drift.core.protocol import CallReport
from drift.turn.targets import TurnProblem


class Failure(enum.StrEnum):
    """Failure kinds, each named in the report; the order is the precedence.

    Each names the layer that failed (docs/simulate.md lists the check behind
    each): the WebSocket, signaling (the server's frames, checked against what
    the other side actually did), TURN, ICE, DTLS, the SCTP data channel, media,
    or the call as a whole.
    """

    UNREACHABLE = "unreachable"  # the WebSocket could not be opened
    SIGNALING_ERROR = "signaling-error"  # the server broke the protocol (bad frame, wrong state)
    LATE_MATCHED = "late-matched"  # a relay from the partner arrived before this peer's matched
    SWAPPED_ROLES = (
        "swapped-roles"  # waited peer told offerer, newcomer told answerer, or both same
    )
    CROSS_WIRED = "cross-wired"  # frames or identity from a peer outside this room
    #: partner-left with a reason the partner's own record contradicts
    FALSE_PARTNER_LEFT = "false-partner-left"
    NEVER_MATCHED = "never-matched"  # waited while another peer waited too
    # --ice-policy relay and no relay candidate: drift.turn.probe names the cause
    TURN_MISSING = "turn-missing"  # relay-only, but welcome carried no usable TURN server
    TURN_UNREACHABLE = TurnProblem.UNREACHABLE.value  # no answer / ICMP unreachable
    TURN_AUTH_REJECTED = TurnProblem.AUTH_REJECTED.value  # 401: wrong secret or expired
    TURN_ALLOCATION_REFUSED = TurnProblem.ALLOCATION_REFUSED.value  # quota, ports, 403...
    RELAY_ALTERED = "relay-altered"  # a relayed frame differs from anything the partner sent
    RELAY_DUPLICATED = "relay-duplicated"  # a relayed frame arrived more often than it was sent
    CANDIDATES_DROPPED = "candidates-dropped"  # the partner trickled candidates, none arrived
    RELAY_DROPPED = "relay-dropped"  # a frame the partner sent never arrived (a later one did)
    ICE_FAILED = "ice-failed"  # ICE went to failed, or did not connect in time
    DTLS_FAILED = "dtls-failed"  # ICE connected, the DTLS handshake failed or did not finish
    DATACHANNEL_FAILED = "datachannel-failed"  # DTLS up, the data-channel check did not finish
    NOT_RELAYED = "not-relayed"  # --ice-policy relay, yet the selected pair had no relay
    MEDIA_FAILED = "media-failed"  # a media pair got too few frames carrying the partner's identity
    HOLD_CUT = "hold-cut"  # a verified call ended before --hold, not by this peer
    ONE_SIDED = "one-sided"  # only one side of the pair verified
    PARTNER_LEFT = "partner-left"  # the partner really left before the call verified
    TIMEOUT = "timeout"  # a signaling step did not finish within --timeout


class Outcome(enum.StrEnum):
    VERIFIED = "verified"
    WAITING = "waiting"  # the odd one out: nobody left to pair with (not a failure)
    FAILED = "failed"


class RoundRecord(Struct, kw_only=True):
    """One match of one peer: from join (or next) to the end of that room."""

    number: int
    t_join: float
    t_waiting: float | None = None
    t_matched: float | None = None
    role: str | None = None
    room_id: str | None = None
    waited: bool = False
    expected_role: str | None = None
    media: bool = False
    t_offer: float | None = None  # offer sent (offerer) or received (answerer)
    t_answer: float | None = None
    t_ice_connected: float | None = None
    t_connected: float | None = None  # DTLS up (connectionState connected)
    t_channel_open: float | None = None
    t_verified: float | None = None
    t_end: float | None = None
    candidates_sent: int = 0
    candidates_received: int = 0
    end_of_candidates: bool = False
    #: distinct types (host, srflx, prflx, relay) of the candidates in the local SDP
    local_candidate_types: list[str] = []
    #: the ICE pair aioice nominated: this side's local and the remote candidate type
    selected_local_type: str | None = None
    selected_remote_type: str | None = None
    #: rooms whose frames (tagged SDP, hello) reached this peer of another room
    foreign_rooms: list[str] = []
    hello_peer: str | None = None
    hello_room: str | None = None
    rtt_ms: float | None = None
    verified: bool = False  # this side's own check: partner identity + pong (+ media)
    partner_ok: bool = False  # the partner said it verified this peer
    media_frames_sent: int = 0
    media_frames_ok: int = 0
    media_frames_foreign: int = 0
    media_frames_other: int = 0
    pressed_next: bool = False
    ended_by: str | None = None  # hold, partner-left:<reason>, timeout, failure
    #: what this peer itself did to end this room: leave, next, close (its socket)
    #: or lost (the server closed it), and when; checked against the partner's partner-left
    own_end: str | None = None
    t_own_end: float | None = None
    partner_left_reason: str | None = None
    t_partner_left: float | None = None
    #: relayed frames (offer, answer, ice-candidate) as 64-bit digests
    #: (:func:`drift.simulate.relays.digest`): (sent time, digest) of each sent,
    #: and each received, in order, including ones that came before matched
    relays_sent: list[tuple[float, int]] = []
    relays_received: list[int] = []
    t_early_relay: float | None = None  # a relay arrived before this round's matched
    failure: str | None = None  # what this side saw locally (a Failure value)
    detail: str | None = None
    #: the call-report this side sent for this room (None: none sent)
    call_report: CallReport | None = None


class PeerRecord(Struct, kw_only=True):
    index: int
    worker: int = 0
    url: str
    t_start: float
    t_connected: float | None = None
    t_welcome: float | None = None
    t_done: float | None = None
    peer_id: str | None = None
    next_selected: bool = False
    rounds: list[RoundRecord] = []
    #: released while waiting: the number of peers waiting run-wide at that moment
    released_waiting: int | None = None
    failure: str | None = None  # a failure outside any round (unreachable, signaling)
    detail: str | None = None
    stale_relays: int = 0
    # filled by verify.classify
    outcome: str | None = None
    failure_kind: str | None = None
    failure_detail: str | None = None

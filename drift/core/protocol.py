"""The drift wire protocol, version 1: message schemas, codes and the one decode step.

Every frame a client sends goes through :func:`decode` exactly once. Valid frames
take msgspec's typed fast path (decode and validate in one C pass); only a frame
that fails it is parsed again, generically, to tell *which* error code applies.
Bad input is never an exception to the caller: it is a :class:`DecodeError`
value that the core turns into an ``error`` frame.

Server frames are encoded here too, so the shape of every frame on the wire is
defined in this one module.
"""

from __future__ import annotations

import enum
from typing import Annotated, ClassVar, Final, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

PROTOCOL_VERSION: Final = 1
#: Additions to version 1 that a server announces in ``welcome.features``. A
#: client uses one only when its server names it: an older server would answer
#: the new frame with ``unknown-type``.
FEATURE_CALL_REPORT: Final = "call-report"
FEATURES: Final = (FEATURE_CALL_REPORT,)
#: Largest accepted frame in bytes; a larger one is refused with close 1009.
MAX_FRAME_BYTES: Final = 65_536

Role = Literal["offerer", "answerer"]
LeaveReason = Literal["left", "next", "disconnected", "timeout"]


class ErrorCode(enum.StrEnum):
    INVALID_JSON = "invalid-json"
    INVALID_MESSAGE = "invalid-message"
    UNKNOWN_TYPE = "unknown-type"
    INVALID_STATE = "invalid-state"
    RATE_LIMITED = "rate-limited"
    QUEUE_FULL = "queue-full"
    QUEUE_TIMEOUT = "queue-timeout"
    #: Used by backends that depend on an external store (Redis) while it is down.
    UNAVAILABLE = "unavailable"


class CloseCode(enum.IntEnum):
    GOING_AWAY = 1001
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013


# ---------------------------------------------------------------- client -> server


class SessionDescription(Struct, frozen=True):
    type: Literal["offer", "answer"]
    sdp: str


class CandidateInit(Struct, frozen=True, omit_defaults=True):
    """RTCIceCandidateInit. Optional members stay absent when they were absent."""

    candidate: str
    sdpMid: str | UnsetType | None = UNSET
    sdpMLineIndex: int | UnsetType | None = UNSET
    usernameFragment: str | UnsetType | None = UNSET


class Join(Struct, frozen=True, tag="join", tag_field="type"):
    type_name: ClassVar[Literal["join"]] = "join"


class Next(Struct, frozen=True, tag="next", tag_field="type"):
    type_name: ClassVar[Literal["next"]] = "next"


class Leave(Struct, frozen=True, tag="leave", tag_field="type"):
    type_name: ClassVar[Literal["leave"]] = "leave"


class Offer(Struct, frozen=True, tag="offer", tag_field="type"):
    type_name: ClassVar[Literal["offer"]] = "offer"
    sdp: SessionDescription


class Answer(Struct, frozen=True, tag="answer", tag_field="type"):
    type_name: ClassVar[Literal["answer"]] = "answer"
    sdp: SessionDescription


class IceCandidate(Struct, frozen=True, tag="ice-candidate", tag_field="type"):
    type_name: ClassVar[Literal["ice-candidate"]] = "ice-candidate"
    candidate: CandidateInit | None


CallOutcome = Literal["connected", "failed"]
#: The layer a call failed at, lowest first: no ICE pair, no DTLS, no data channel, no media.
FailureLayer = Literal["ice", "dtls", "datachannel", "media"]
CandidateType = Literal["host", "srflx", "prflx", "relay"]
RelayProtocol = Literal["udp", "tcp", "tls"]
#: Bounds of a report's figures: anything beyond them is a broken client, not a call.
MAX_CONNECT_MS: Final = 600_000
MAX_RTT_MS: Final = 60_000.0
MAX_BITRATE_KBPS: Final = 1_000_000.0
_QUALITY: Final = ("rttMs", "lossPct", "bitrateKbps")


class CallReport(Struct, frozen=True, tag="call-report", tag_field="type"):
    """A client's account of one call attempt (feature ``call-report``).

    Only coarse figures: never an address, a candidate string or SDP. The
    combinations allowed are checked by :func:`call_report_problem`.
    """

    type_name: ClassVar[Literal["call-report"]] = "call-report"
    roomId: Annotated[str, Meta(min_length=1, max_length=64)]
    outcome: CallOutcome
    layer: FailureLayer | UnsetType = UNSET
    connectMs: Annotated[int, Meta(ge=0, le=MAX_CONNECT_MS)] | UnsetType = UNSET
    localCandidate: CandidateType | UnsetType = UNSET
    remoteCandidate: CandidateType | UnsetType = UNSET
    relayProtocol: RelayProtocol | UnsetType = UNSET
    rttMs: Annotated[float, Meta(ge=0, le=MAX_RTT_MS)] | UnsetType = UNSET
    lossPct: Annotated[float, Meta(ge=0, le=100)] | UnsetType = UNSET
    bitrateKbps: Annotated[float, Meta(ge=0, le=MAX_BITRATE_KBPS)] | UnsetType = UNSET


def call_report_problem(msg: CallReport) -> str | None:
    """Why the fields of a report do not fit together, or None (docs/protocol.md)."""
    if msg.outcome == "failed":
        if msg.layer is UNSET:
            return "a failed call-report needs 'layer'"
        extra = [
            name
            for name in (
                "connectMs",
                "localCandidate",
                "remoteCandidate",
                "relayProtocol",
                *_QUALITY,
            )
            if getattr(msg, name) is not UNSET
        ]
        if extra:
            return f"a failed call-report carries no {extra[0]!r}"
        return None
    if msg.layer is not UNSET:
        return "a connected call-report carries no 'layer'"
    for name in ("connectMs", "localCandidate", "remoteCandidate"):
        if getattr(msg, name) is UNSET:
            return f"a connected call-report needs {name!r}"
    if (msg.localCandidate == "relay") != (msg.relayProtocol is not UNSET):
        return "'relayProtocol' is required with, and only with, localCandidate 'relay'"
    return None


ClientMessage = Join | Next | Leave | Offer | Answer | IceCandidate | CallReport
RelayMessage = Offer | Answer | IceCandidate

CLIENT_TYPES: Final = frozenset(
    {"join", "next", "leave", "offer", "answer", "ice-candidate", "call-report"}
)


# ---------------------------------------------------------------- server -> client


class IceServer(Struct, frozen=True, omit_defaults=True):
    urls: list[str]
    username: str | UnsetType = UNSET
    credential: str | UnsetType = UNSET


class Welcome(Struct, frozen=True, tag="welcome", tag_field="type"):
    peerId: str
    iceServers: list[IceServer]
    protocol: int = PROTOCOL_VERSION
    #: additions to the version this server speaks (:data:`FEATURES`); absent = none
    features: list[str] = []


class Waiting(Struct, frozen=True, tag="waiting", tag_field="type"):
    pass


class Matched(Struct, frozen=True, tag="matched", tag_field="type"):
    role: Role
    roomId: str


class PartnerLeft(Struct, frozen=True, tag="partner-left", tag_field="type"):
    reason: LeaveReason


class Error(Struct, frozen=True, tag="error", tag_field="type"):
    code: str
    message: str


ServerMessage = Welcome | Waiting | Matched | Offer | Answer | IceCandidate | PartnerLeft | Error

# ---------------------------------------------------------------- decode / encode

_typed_decoder: Final[msgspec.json.Decoder[ClientMessage]] = msgspec.json.Decoder(ClientMessage)
_any_decoder: Final = msgspec.json.Decoder()
_server_decoder: Final[msgspec.json.Decoder[ServerMessage]] = msgspec.json.Decoder(ServerMessage)
_encoder: Final = msgspec.json.Encoder()


_WITH_SDP: Final = (Offer, Answer)


class DecodeError(Struct, frozen=True):
    """Why a frame was refused: the code of the ``error`` frame and a human message."""

    code: ErrorCode
    message: str


def decode(frame: str | bytes) -> ClientMessage | DecodeError:
    """Decode and validate one client text frame.

    Validation comes before state (docs/protocol.md), so this needs nothing but the
    frame. The typed decoder is tried first because nearly every real frame is
    valid; the slow classification only runs for frames that are already bad.
    """
    try:
        msg = _typed_decoder.decode(frame)
    except (ValueError, RecursionError) as exc:
        # msgspec's errors are ValueErrors; so is a UnicodeDecodeError from
        # bytes that are not UTF-8, and nesting beyond the C stack's depth is a
        # RecursionError even in a field that would be ignored.
        return _classify(frame, exc)
    if isinstance(msg, _WITH_SDP) and msg.sdp.type != msg.type_name:
        return DecodeError(
            ErrorCode.INVALID_MESSAGE,
            f"sdp.type must be {msg.type_name!r} in a {msg.type_name!r} frame",
        )
    if isinstance(msg, CallReport):
        problem = call_report_problem(msg)
        if problem is not None:
            return DecodeError(ErrorCode.INVALID_MESSAGE, problem)
    return msg


def _classify(frame: str | bytes, exc: Exception) -> DecodeError:
    try:
        value = _any_decoder.decode(frame)
    except RecursionError:
        return DecodeError(ErrorCode.INVALID_JSON, "frame is nested too deeply")
    except ValueError:
        return DecodeError(ErrorCode.INVALID_JSON, "frame is not valid JSON")
    if not isinstance(value, dict):
        return DecodeError(ErrorCode.INVALID_JSON, "frame is not a JSON object")
    kind = value.get("type", UNSET)
    if kind is UNSET:
        return DecodeError(ErrorCode.INVALID_MESSAGE, "missing field 'type'")
    if not isinstance(kind, str):
        return DecodeError(ErrorCode.INVALID_MESSAGE, "field 'type' must be a string")
    if kind not in CLIENT_TYPES:
        return DecodeError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {_clip(kind)!r}")
    # msgspec's own message names the offending path, e.g. "at `$.sdp.type`".
    return DecodeError(ErrorCode.INVALID_MESSAGE, f"invalid {kind!r}: {_clip(str(exc), 200)}")


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def encode(msg: ServerMessage) -> bytes:
    """Encode a server frame as UTF-8 JSON bytes (sent as a text frame)."""
    return _encoder.encode(msg)


def decode_server(frame: str | bytes) -> ServerMessage:
    """Decode a server frame strictly; for clients (synthetic peers, tests).

    Raises ``msgspec.ValidationError``/``msgspec.DecodeError`` on a frame that
    breaks the contract: a client that checks a server must not guess.
    """
    return _server_decoder.decode(frame)


def encode_client(msg: ClientMessage) -> bytes:
    return _encoder.encode(msg)

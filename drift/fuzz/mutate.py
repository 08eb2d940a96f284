"""Fuzz frames, each built together with the answer docs/protocol.md (or RFC 6455) prescribes.

Every frame is sent by a connection that never joined, so it is *idle*: a valid
``next``/``leave``/``offer``/``answer``/``ice-candidate`` gets
``error/invalid-state`` and anything malformed gets its own error code. Hence
every frame the fuzzer sends has a documented answer — an ``error`` frame with
one of :attr:`FuzzFrame.error_codes`, or a close with one of
:attr:`FuzzFrame.close_codes` — and no frame may go unanswered. ``join`` is the
one frame that would change state, so the generator never sends one.

Valid frames are encoded with :mod:`drift.core.protocol`, the one definition of
their shape. Everything is drawn from one :class:`random.Random`, so a seed
replays a run exactly.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

from msgspec import UNSET

from drift.core import protocol as p
from drift.core.protocol import MAX_FRAME_BYTES, CloseCode, ErrorCode
from drift.fuzz.rawws import BINARY, CLOSE, CONTINUATION, PING, TEXT

#: What an idle connection may be told about any frame it sends.
CLIENT_ERRORS: Final = frozenset(
    {
        ErrorCode.INVALID_JSON.value,
        ErrorCode.INVALID_MESSAGE.value,
        ErrorCode.UNKNOWN_TYPE.value,
        ErrorCode.INVALID_STATE.value,
    }
)
#: Closes RFC 6455 requires of any WebSocket server (not a drift rule, so not in
#: docs/protocol.md's table): 1002 protocol error, 1007 invalid UTF-8 in a text message.
PROTOCOL_ERROR: Final = 1002
INVALID_TEXT: Final = 1007
TOO_BIG: Final = int(CloseCode.MESSAGE_TOO_BIG)
DOCUMENTED_CLOSES: Final = frozenset(
    {PROTOCOL_ERROR, INVALID_TEXT, TOO_BIG, int(CloseCode.POLICY_VIOLATION)}
)

_JSON: Final = ErrorCode.INVALID_JSON.value
_MESSAGE: Final = ErrorCode.INVALID_MESSAGE.value
_UNKNOWN: Final = ErrorCode.UNKNOWN_TYPE.value
_STATE: Final = ErrorCode.INVALID_STATE.value


@dataclass(frozen=True, slots=True)
class WireFrame:
    """One frame as written: opcode, payload, FIN and the reserved bits."""

    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0


@dataclass(frozen=True, slots=True)
class FuzzFrame:
    """A message to send (maybe as several wire frames) and its acceptable answers."""

    kind: str
    frames: tuple[WireFrame, ...]
    error_codes: frozenset[str] = frozenset()
    close_codes: frozenset[int] = frozenset()

    @property
    def ends_connection(self) -> bool:
        return not self.error_codes

    @property
    def size(self) -> int:
        return sum(len(f.payload) for f in self.frames)

    def accepts_error(self, code: str) -> bool:
        return code in self.error_codes

    def accepts_close(self, code: int | None) -> bool:
        return code in self.close_codes


def _text(kind: str, payload: bytes, *codes: str) -> FuzzFrame:
    return FuzzFrame(kind, (WireFrame(TEXT, payload),), frozenset(codes))


def _closing(kind: str, frames: tuple[WireFrame, ...], *codes: int) -> FuzzFrame:
    return FuzzFrame(kind, frames, close_codes=frozenset(codes))


def _dumps(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


# ---------------------------------------------------------------- valid material


def valid_messages(rng: random.Random) -> list[p.ClientMessage]:
    """Every client message except ``join`` (the one that would leave the idle state)."""
    candidate = p.CandidateInit(
        candidate=f"candidate:{rng.getrandbits(32)} 1 udp 2122260223 127.0.0.1 "
        f"{rng.randrange(1, 65536)} typ host",
        sdpMid=rng.choice([UNSET, None, "0"]),
        sdpMLineIndex=rng.choice([UNSET, None, 0]),
        usernameFragment=rng.choice([UNSET, None, "abcd"]),
    )
    sdp = f"v=0\r\no=- {rng.getrandbits(62)} 2 IN IP4 127.0.0.1\r\ns=-\r\n"
    return [
        p.Next(),
        p.Leave(),
        p.Offer(sdp=p.SessionDescription(type="offer", sdp=sdp)),
        p.Answer(sdp=p.SessionDescription(type="answer", sdp=sdp)),
        p.IceCandidate(candidate=candidate),
        p.IceCandidate(candidate=None),
    ]


def valid_frame(rng: random.Random) -> bytes:
    return p.encode_client(rng.choice(valid_messages(rng)))


def valid_dict(rng: random.Random) -> dict[str, Any]:
    value = json.loads(valid_frame(rng))
    assert isinstance(value, dict)
    return value


def is_join(payload: bytes) -> bool:
    """True if the server would take this as a ``join`` (it must never be sent)."""
    try:
        return isinstance(p.decode(payload), p.Join)
    except Exception:  # the server's own decoder failing is the server's problem, not ours
        return False


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_NOT_STRINGS: Final[tuple[object, ...]] = (None, True, False, 0, -1, 1.5, 2**70, [], {}, ["x"])
_CONTROL: Final = [chr(c) for c in range(0x20) if chr(c) not in "\t\n\r"]
_ODD_TEXT: Final = ["", " ", "\u0000", "\u202e", "\ufeff", "💥", "ǰ", "\\", '"', "JOIN", "Join"]
_BAD_UTF8: Final = [
    b"\xff",
    b"\xfe",
    b"\xc0\xaf",  # overlong "/"
    b"\xed\xa0\x80",  # a UTF-16 surrogate encoded in UTF-8
    b"\xe2\x82",  # truncated 3-byte sequence
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\x80",  # lone continuation byte
]


def _random_text(rng: random.Random, size: int) -> str:
    alphabet = rng.choice(
        [
            "abcdefghijklmnopqrstuvwxyz",
            "{}[]:,\"'\\ 0123456789tfn",
            "é漢字💥\u200b\u202e\ufeff",
            "".join(_CONTROL) + "abc",
        ]
    )
    return "".join(rng.choice(alphabet) for _ in range(size))


# ---------------------------------------------------------------- generators


def out_of_state(rng: random.Random) -> FuzzFrame:
    """A well-formed frame that is not valid while idle (extra fields are ignored)."""
    value = valid_dict(rng)
    if rng.random() < 0.3:
        value[rng.choice(["x", "extra", "protocol", "roomId"])] = rng.choice(
            [*_NOT_STRINGS, "join"]
        )
    return _text("out-of-state", _dumps(value), _STATE)


def _wrong_value(rng: random.Random, allowed_null: bool, is_string: bool) -> object:
    values = [v for v in _NOT_STRINGS if not (v is None and allowed_null)]
    if not is_string:
        values.append(rng.choice([*_ODD_TEXT, "x"]))
    return rng.choice(values)


def wrong_type(rng: random.Random) -> FuzzFrame:
    """Valid JSON, a known type, one field of the wrong type."""
    value = valid_dict(rng)
    kind = value["type"]
    paths: list[tuple[str, ...]] = [("type",)]
    if kind in ("offer", "answer"):
        paths += [("sdp",), ("sdp", "type"), ("sdp", "sdp")]
    elif kind == "ice-candidate" and value["candidate"] is not None:
        paths += [("candidate",), ("candidate", "candidate")]
        paths += [("candidate", k) for k in ("sdpMid", "sdpMLineIndex", "usernameFragment")]
    elif kind == "ice-candidate":
        paths += [("candidate",)]
    path = rng.choice(paths)
    target = value
    for key in path[:-1]:
        target = target[key]
    leaf = path[-1]
    if path == ("type",):
        target[leaf] = rng.choice([v for v in _NOT_STRINGS])
    elif leaf in ("sdp", "candidate") and len(path) == 1:
        # the object itself replaced by a non-object (null is a valid candidate)
        target[leaf] = rng.choice([v for v in (*_NOT_STRINGS, "x") if v not in ({}, None)])
    elif path == ("sdp", "type"):
        other = "answer" if kind == "offer" else "offer"
        target[leaf] = rng.choice([*_NOT_STRINGS, other, "pranswer", "rollback", ""])
    elif leaf == "sdpMLineIndex":
        target[leaf] = rng.choice([True, 1.5, "0", [], {}, -0.5])
    else:
        nullable = leaf in ("sdpMid", "usernameFragment")
        target[leaf] = _wrong_value(rng, nullable, is_string=True)
    return _text("wrong-type", _dumps(value), _MESSAGE)


def missing_field(rng: random.Random) -> FuzzFrame:
    value = valid_dict(rng)
    if value["type"] in ("offer", "answer"):
        target, key = rng.choice([(value, "sdp"), (value["sdp"], "type"), (value["sdp"], "sdp")])
    elif value["type"] == "ice-candidate" and value["candidate"] is not None:
        target, key = rng.choice([(value, "candidate"), (value["candidate"], "candidate")])
    elif value["type"] == "ice-candidate":
        target, key = value, "candidate"
    else:
        target, key = value, "type"
    del target[key]
    return _text("missing-field", _dumps(value), _MESSAGE)


def unknown_type(rng: random.Random) -> FuzzFrame:
    name = rng.choice(
        [
            _random_text(rng, rng.randrange(0, 40)),
            rng.choice(_ODD_TEXT),
            rng.choice(sorted(p.CLIENT_TYPES)) + rng.choice([*_CONTROL, " ", "\u0000", "s"]),
            rng.choice(["welcome", "waiting", "matched", "partner-left", "error", "ping"]),
        ]
    )
    if name in p.CLIENT_TYPES:
        name += "!"
    # control characters escaped (\u0001), so this is still valid JSON
    return _text("unknown-type", json.dumps({"type": name}).encode(), _UNKNOWN)


def not_an_object(rng: random.Random) -> FuzzFrame:
    value: object = rng.choice([[], [valid_dict(rng)], 0, -1.5, "join", None, True, [[[]]]])
    return _text("not-an-object", _dumps(value), _JSON)


def not_json(rng: random.Random) -> FuzzFrame:
    frame = valid_frame(rng)
    payload = rng.choice(
        [
            frame[: rng.randrange(0, len(frame) - 1)],  # truncated: never a complete text
            b"}" + _random_text(rng, rng.randrange(0, 64)).encode(),
            frame.replace(b'"', b"'"),
            frame + b"}",
            frame + b"\x00",
            b"\xef\xbb\xbf" + frame,  # a byte-order mark is not JSON
            b'{"type":"next",}',
            b'{"type":"next" "x":1}',
            b"NaN",
            b'{"type":"next","x":NaN}',
            b'{"type":"next","x":Infinity}',
            b'{"type":"\\ud800"}',  # a lone surrogate escape
        ]
    )
    return _text("not-json", payload, _JSON)


def control_chars(rng: random.Random) -> FuzzFrame:
    """A raw control character (not \\t \\n \\r) is invalid anywhere in a JSON text."""
    frame = valid_frame(rng).decode()
    at = rng.randrange(0, len(frame) + 1)
    chars = "".join(rng.choice(_CONTROL) for _ in range(rng.randrange(1, 4)))
    return _text("control-chars", (frame[:at] + chars + frame[at:]).encode(), _JSON)


def missing_type(rng: random.Random) -> FuzzFrame:
    value = {k: v for k, v in valid_dict(rng).items() if k != "type"}
    value[rng.choice(["Type", "TYPE", "kind", " type"])] = "next"
    return _text("missing-type", _dumps(value), _MESSAGE)


def _depth(rng: random.Random, per_level: int) -> int:
    """A nesting depth from shallow to as deep as fits in the largest accepted frame."""
    deepest = (MAX_FRAME_BYTES - 64) // per_level
    return min(deepest, rng.choice([64, 500, 1_000, 5_000, deepest]))


def deep_nesting(rng: random.Random) -> FuzzFrame:
    opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
    depth = _depth(rng, len(opener) + len(closer))
    nested = opener * depth + ("1" if opener != "[" else "") + closer * depth
    where = rng.choice(["top", "type", "sdp"])
    if where == "top":
        # an object without "type" (too deep to parse: not JSON we accept)
        return _text("deep-nesting", nested.encode(), _MESSAGE if opener != "[" else _JSON, _JSON)
    if where == "type":
        # a deep value where a string is required: wrong type, or too deep to parse
        return _text("deep-nesting", f'{{"type":{nested}}}'.encode(), _MESSAGE, _JSON)
    body = f'{{"type":"offer","sdp":{nested}}}'.encode()
    return _text("deep-nesting", body, _MESSAGE, _JSON)


def deep_nesting_ignored(rng: random.Random) -> FuzzFrame:
    """Deep nesting in an unknown (ignored) field: still the frame's own answer, or refused."""
    depth = _depth(rng, 2)
    body = f'{{"type":"next","x":{"[" * depth}{"]" * depth}}}'.encode()
    return _text("deep-nesting-ignored", body, _STATE, _JSON, _MESSAGE)


def huge_string(rng: random.Random) -> FuzzFrame:
    char = rng.choice(["a", "é", "漢", "💥"])  # 1 to 4 bytes in UTF-8
    budget = rng.randrange(1_000, MAX_FRAME_BYTES - 100)
    text = char * (budget // len(char.encode()))
    where = rng.choice(["type", "sdp", "extra"])
    if where == "type":
        return _text("huge-string", _dumps({"type": text}), _UNKNOWN)
    if where == "sdp":
        value: dict[str, object] = {"type": "offer", "sdp": {"type": "offer", "sdp": text}}
    else:
        value = {"type": "leave", "padding": text}
    return _text("huge-string", _dumps(value), _STATE)


def size_boundary(rng: random.Random) -> FuzzFrame:
    """Exactly the largest accepted frame (65,536 bytes): answered, not closed."""
    head = b'{"type":"next","pad":"'
    payload = head + b"x" * (MAX_FRAME_BYTES - len(head) - 2) + b'"}'
    assert len(payload) == MAX_FRAME_BYTES
    return _text("size-boundary", payload, _STATE)


def oversized(rng: random.Random) -> FuzzFrame:
    size = MAX_FRAME_BYTES + rng.choice([1, 2, 1000, MAX_FRAME_BYTES])
    payload = b'{"type":"next","pad":"' + b"y" * size + b'"}'
    opcode = rng.choice([TEXT, BINARY])
    if rng.random() < 0.5:
        return _closing("oversized", (WireFrame(opcode, payload),), TOO_BIG)
    return _closing("oversized", _split(rng, opcode, payload), TOO_BIG)


def invalid_utf8(rng: random.Random) -> FuzzFrame:
    frame = valid_frame(rng)
    at = rng.randrange(0, len(frame) + 1)
    payload = frame[:at] + rng.choice(_BAD_UTF8) + frame[at:]
    frames = (WireFrame(TEXT, payload),) if rng.random() < 0.6 else _split(rng, TEXT, payload)
    return _closing("invalid-utf8", frames, INVALID_TEXT)


def binary(rng: random.Random) -> FuzzFrame:
    payload = rng.choice([valid_frame(rng), rng.randbytes(rng.randrange(0, 256)), b""])
    return FuzzFrame("binary", (WireFrame(BINARY, payload),), frozenset({_MESSAGE}))


def fragmented(rng: random.Random, inner: Generator | None = None) -> FuzzFrame:
    """An answered frame, split into continuation frames (maybe mid-character)."""
    frame = (inner or rng.choice(_ANSWERED))(rng)
    (only,) = frame.frames
    return replace(frame, kind="fragmented", frames=_split(rng, only.opcode, only.payload))


def protocol_violation(rng: random.Random) -> FuzzFrame:
    frame = valid_frame(rng)
    choice = rng.randrange(8)
    frames: tuple[WireFrame, ...]
    if choice == 0:  # continuation with nothing to continue
        frames = (WireFrame(CONTINUATION, frame),)
    elif choice == 1:  # reserved data and control opcodes
        frames = (WireFrame(rng.choice([3, 4, 5, 6, 7, 0xB, 0xC, 0xF]), frame),)
    elif choice == 2:  # reserved bits without a negotiated extension
        frames = (WireFrame(TEXT, frame, rsv=rng.choice([1, 2, 4, 7])),)
    elif choice == 3:  # a fragmented control frame
        frames = (WireFrame(PING, b"x", fin=False),)
    elif choice == 4:  # a control frame over 125 bytes
        frames = (WireFrame(PING, b"p" * 126),)
    elif choice == 5:  # a new message before the fragmented one ended
        frames = (WireFrame(TEXT, frame[:5], fin=False), WireFrame(TEXT, frame[5:]))
    elif choice == 6:  # a close with a code that must not be sent
        # (1006 is left out: aiohttp accepts it from a client, against RFC 6455 7.4.1)
        code = rng.choice([0, 999, 1004, 1005, 1015, 1016, 2999])
        frames = (WireFrame(CLOSE, code.to_bytes(2, "big")),)
    else:  # a one-byte close payload
        frames = (WireFrame(CLOSE, b"\x03"),)
    return _closing("protocol-violation", frames, PROTOCOL_ERROR)


def byte_mutation(rng: random.Random) -> FuzzFrame:
    """A valid frame with random byte edits: any client error, or 1007 if no longer UTF-8."""
    for _ in range(100):
        data = bytearray(valid_frame(rng))
        for _ in range(rng.randrange(1, 5)):
            op = rng.randrange(5)
            at = rng.randrange(0, len(data))
            if op == 0:
                data[at] ^= 1 << rng.randrange(8)
            elif op == 1:
                data.insert(at, rng.randrange(256))
            elif op == 2 and len(data) > 1:
                del data[at]
            elif op == 3:
                end = min(len(data), at + rng.randrange(1, 16))
                data[at:at] = data[at:end]
            else:
                data[at] = rng.choice(b'{}[]",:\\0tfn')
        payload = bytes(data)
        if is_join(payload):
            continue
        if not _is_utf8(payload):
            return _closing("byte-mutation", (WireFrame(TEXT, payload),), INVALID_TEXT)
        return _text("byte-mutation", payload, *CLIENT_ERRORS)
    return out_of_state(rng)


def _split(rng: random.Random, opcode: int, payload: bytes) -> tuple[WireFrame, ...]:
    pieces = rng.randrange(2, 7)
    cuts = sorted(rng.randrange(0, len(payload) + 1) for _ in range(pieces - 1))
    bounds = [0, *cuts, len(payload)]
    chunks = [payload[a:b] for a, b in itertools.pairwise(bounds)]
    last = len(chunks) - 1
    return tuple(
        WireFrame(opcode if i == 0 else CONTINUATION, chunk, fin=i == last)
        for i, chunk in enumerate(chunks)
    )


Generator = Callable[[random.Random], FuzzFrame]

#: Generators whose frame is answered with an error frame (and can be fragmented).
_ANSWERED: Final[list[Generator]] = [
    out_of_state,
    wrong_type,
    missing_field,
    missing_type,
    unknown_type,
    not_an_object,
    not_json,
    control_chars,
    deep_nesting,
    huge_string,
    binary,
]

#: name -> (relative weight, generator). Large frames are weighted down: they
#: cost the most time for the least new behaviour.
KINDS: Final[dict[str, tuple[float, Generator]]] = {
    "out-of-state": (6, out_of_state),
    "wrong-type": (10, wrong_type),
    "missing-field": (5, missing_field),
    "missing-type": (3, missing_type),
    "unknown-type": (5, unknown_type),
    "not-an-object": (3, not_an_object),
    "not-json": (6, not_json),
    "control-chars": (4, control_chars),
    "deep-nesting": (2, deep_nesting),
    "deep-nesting-ignored": (1, deep_nesting_ignored),
    "huge-string": (0.5, huge_string),
    "size-boundary": (0.2, size_boundary),
    "oversized": (0.3, oversized),
    "invalid-utf8": (1, invalid_utf8),
    "binary": (3, binary),
    "fragmented": (4, fragmented),
    "protocol-violation": (1, protocol_violation),
    "byte-mutation": (12, byte_mutation),
}


class FrameSource:
    """Draws fuzz frames of the chosen kinds, reproducibly from a seed."""

    def __init__(self, rng: random.Random, kinds: frozenset[str] | None = None) -> None:
        chosen = sorted(kinds) if kinds else sorted(KINDS)
        unknown = set(chosen) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fuzz kinds: {sorted(unknown)}")
        self.rng = rng
        self._names = chosen
        self._weights = [KINDS[name][0] for name in chosen]
        # Fragments carry only frames of the chosen kinds (or all answered kinds).
        self._inner = [g for g in _ANSWERED if g.__name__.replace("_", "-") in chosen]
        self._inner = self._inner or list(_ANSWERED)

    def next(self) -> FuzzFrame:
        name = self.rng.choices(self._names, self._weights)[0]
        if name == "fragmented":
            frame = fragmented(self.rng, self.rng.choice(self._inner))
        else:
            frame = KINDS[name][1](self.rng)
        if frame.error_codes and any(
            f.opcode == TEXT and is_join(f.payload) for f in frame.frames
        ):  # pragma: no cover - the generators never build a join
            return self.next()
        return frame


__all__ = ["DOCUMENTED_CLOSES", "KINDS", "FrameSource", "FuzzFrame", "WireFrame"]

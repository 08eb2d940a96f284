"""TURN servers as drift reads them from ``welcome``, and how a probe of one ends.

No socket and no aioice here: the coordinating process of ``drift simulate``
needs these names (a peer's failure kinds, the preflight's TURN check) without
paying ~40 ms of CPU to import the STUN stack that :mod:`drift.turn.probe`
needs for the allocation itself.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from drift.core import protocol as p


class TurnProblem(enum.StrEnum):
    """Why a TURN allocation failed; the values are simulate's failure kinds too."""

    AUTH_REJECTED = "turn-auth-rejected"
    UNREACHABLE = "turn-unreachable"
    ALLOCATION_REFUSED = "turn-allocation-refused"


@dataclass(frozen=True, slots=True)
class TurnTarget:
    """One TURN server with the credentials to use on it."""

    url: str
    host: str
    port: int
    transport: str  # udp | tcp
    secure: bool  # turns:
    username: str
    credential: str = ""

    def __repr__(self) -> str:
        # the credential is a bearer token until it expires: never in a log line
        return f"TurnTarget({self.url!r}, username={self.username!r})"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    target: TurnTarget
    problem: TurnProblem | None
    detail: str
    relayed: tuple[str, int] | None = None
    mapped: tuple[str, int] | None = None
    lifetime: int | None = None
    elapsed_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.problem is None


def parse_turn_url(url: str) -> tuple[str, int, str, bool]:
    """(host, port, transport, secure) exactly as aiortc reads the URL; ValueError if bad."""
    from aiortc.rtcicetransport import parse_stun_turn_uri

    parsed = parse_stun_turn_uri(url)
    if parsed["scheme"] not in ("turn", "turns"):
        raise ValueError(f"{url!r} is not a turn: or turns: URL")
    return (
        str(parsed["host"]),
        int(parsed["port"]),
        str(parsed["transport"]),
        (parsed["scheme"] == "turns"),
    )


def pick_turn_target(servers: Sequence[p.IceServer]) -> TurnTarget | None:
    """The TURN server aiortc will use: the first usable turn(s): URL with credentials."""
    for server in servers:
        if not isinstance(server.username, str) or not isinstance(server.credential, str):
            continue
        urls = [server.urls] if isinstance(server.urls, str) else list(server.urls)
        for url in urls:
            try:
                host, port, transport, secure = parse_turn_url(url)
            except ValueError:
                continue
            if transport not in ("udp", "tcp") or (secure and transport != "tcp"):
                continue  # aiortc skips these too
            return TurnTarget(
                url, host, port, transport, secure, server.username, server.credential
            )
    return None

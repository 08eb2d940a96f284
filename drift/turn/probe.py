"""One TURN Allocate over UDP with long-term credentials, to say *why* a relay is missing.

aiortc hides TURN failures: a refused or unanswered allocation just leaves no
relay candidate in the SDP. This probe makes the same allocation aiortc would
(the first usable ``turn:`` URL, as :mod:`aiortc.rtcicetransport` picks it) and
names the problem as one of :class:`TurnProblem`, in one readable line:

- ``turn-auth-rejected``: 401 to an authenticated Allocate; the detail says
  whether the username's expiry has passed or the HMAC (the shared secret) is
  wrong;
- ``turn-unreachable``: ICMP port unreachable, a name that does not resolve,
  or no answer before the timeout;
- ``turn-allocation-refused``: any other error response (403 forbidden, 442
  unsupported transport, 486 quota, 508 no relay ports, ...).

A successful allocation is deleted at once (Refresh with LIFETIME 0), so a
probe never holds one of coturn's relay ports. Used by ``drift turn-check``
and by ``drift simulate`` when a relay-only peer gathered no relay candidate.
STUN encoding is aioice's (RFC 5389/8656), the transport is a plain UDP socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from typing import Final

from aioice import stun
from aioice.turn import make_integrity_key

from drift.turn.targets import ProbeResult, TurnProblem, TurnTarget

#: REQUESTED-TRANSPORT: UDP (17) in the protocol byte, RFC 8656 section 18.7
_UDP: Final = 17 << 24
#: first retransmission after this many seconds, then doubling (RFC 5389 RTO, shortened
#: because a probe runs on a known path and an operator is waiting)
_RTO: Final = 0.25
_SOFTWARE: Final = "drift turn probe"


class _Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()
        self.error: OSError | None = None
        self.errored = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.replies.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable arrives here on a connected UDP socket
        if isinstance(exc, OSError):
            self.error = exc
            self.errored.set()


class _Unreachable(Exception):
    pass


class _Session:
    """One UDP 5-tuple (coturn's nonce belongs to it)."""

    def __init__(self, transport: asyncio.DatagramTransport, proto: _Udp, deadline: float):
        self.transport, self.proto, self.deadline = transport, proto, deadline

    async def exchange(self, request: stun.Message) -> stun.Message:
        """Send with retransmissions until a reply with our transaction id, or the deadline."""
        data = bytes(request)
        rto = _RTO
        loop = asyncio.get_running_loop()
        while True:
            self.transport.sendto(data)
            wait = min(rto, self.deadline - loop.time())
            if wait <= 0:
                raise _Unreachable("timeout")
            end = loop.time() + wait
            while (left := end - loop.time()) > 0:
                got = asyncio.ensure_future(self.proto.replies.get())
                err = asyncio.ensure_future(self.proto.errored.wait())
                done, _ = await asyncio.wait(
                    {got, err}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                for fut in (got, err):
                    if fut not in done:
                        fut.cancel()
                if self.proto.error is not None:
                    raise _Unreachable("refused")
                if got in done:
                    with contextlib.suppress(ValueError):
                        reply = stun.parse_message(got.result())
                        if reply.transaction_id == request.transaction_id:
                            return reply
            rto *= 2


def _error(reply: stun.Message) -> tuple[int, str]:
    code = reply.attributes.get("ERROR-CODE")
    if isinstance(code, tuple) and len(code) == 2:
        return int(code[0]), str(code[1])
    return 0, "no ERROR-CODE"


def _auth_detail(username: str, wall_now: float, code: int, reason: str) -> str:
    """Tell an expired username from a wrong secret: coturn answers 401 to both."""
    head, _, _ = username.partition(":")
    try:
        expiry = int(head)
    except ValueError:
        return f"credentials rejected ({code} {reason}): username {username!r} has no expiry"
    if expiry <= wall_now:
        return (
            f"credentials rejected ({code} {reason}): the username expired "
            f"{wall_now - expiry:.0f} s ago (check --turn-ttl and both machines' clocks)"
        )
    return (
        f"credentials rejected ({code} {reason}): the credential does not match — drift's "
        "--turn-secret must equal coturn's static-auth-secret (with use-auth-secret)"
    )


async def allocate_once(
    target: TurnTarget, *, timeout: float = 5.0, wall_now: float | None = None
) -> ProbeResult:
    """Allocate a relay on ``target`` with its credentials, then delete it. Never raises."""
    started = time.monotonic()
    now = time.time() if wall_now is None else wall_now
    where = f"{target.host}:{target.port}/{target.transport}"

    def result(problem: TurnProblem | None, detail: str, **kw: object) -> ProbeResult:
        elapsed = (time.monotonic() - started) * 1000.0
        return ProbeResult(target, problem, detail, elapsed_ms=elapsed, **kw)  # type: ignore[arg-type]

    if target.transport != "udp" or target.secure:
        return result(
            TurnProblem.ALLOCATION_REFUSED,
            f"{target.url}: the probe speaks TURN over UDP only; not checked",
        )
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(target.host, target.port, type=socket.SOCK_DGRAM), timeout
        )
    except (OSError, TimeoutError) as exc:
        return result(TurnProblem.UNREACHABLE, f"cannot resolve {target.host}: {exc}")
    family, _, _, _, addr = infos[0]
    remote = (str(addr[0]), int(addr[1]))
    try:
        transport, proto = await loop.create_datagram_endpoint(
            _Udp, remote_addr=remote, family=family
        )
    except OSError as exc:
        return result(TurnProblem.UNREACHABLE, f"cannot open a UDP socket to {where}: {exc}")
    session = _Session(transport, proto, loop.time() + timeout)
    try:
        return await _allocate(session, target, now, result)
    except _Unreachable as exc:
        if str(exc) == "refused":
            detail = f"nothing listens on {where} (ICMP port unreachable)"
        else:
            detail = f"no answer from {where} within {timeout:g} s"
        return result(TurnProblem.UNREACHABLE, detail)
    finally:
        transport.close()


def _request(method: stun.Method, attrs: dict[str, object]) -> stun.Message:
    msg = stun.Message(message_method=method, message_class=stun.Class.REQUEST)
    msg.attributes.update(attrs)
    return msg


async def _allocate(
    session: _Session,
    target: TurnTarget,
    now: float,
    result: Callable[..., ProbeResult],
) -> ProbeResult:
    base = {"LIFETIME": 600, "REQUESTED-TRANSPORT": _UDP, "SOFTWARE": _SOFTWARE}
    reply = await session.exchange(_request(stun.Method.ALLOCATE, dict(base)))
    key: bytes | None = None
    for _ in range(3):  # the challenge, then at most one stale-nonce retry
        if reply.message_class == stun.Class.RESPONSE:
            break
        code, reason = _error(reply)
        challenge = (code == 401 and key is None) or code == 438
        if not challenge or "NONCE" not in reply.attributes:
            if code == 401:
                return result(
                    TurnProblem.AUTH_REJECTED,
                    _auth_detail(target.username, now, code, reason),
                )
            return result(TurnProblem.ALLOCATION_REFUSED, f"allocation refused ({code} {reason})")
        realm = str(reply.attributes.get("REALM", ""))
        key = make_integrity_key(target.username, realm, target.credential)
        request = _request(
            stun.Method.ALLOCATE,
            {
                **base,
                "USERNAME": target.username,
                "REALM": realm,
                "NONCE": reply.attributes["NONCE"],
            },
        )
        request.add_message_integrity(key)
        reply = await session.exchange(request)
    if reply.message_class != stun.Class.RESPONSE:
        code, reason = _error(reply)
        return result(TurnProblem.ALLOCATION_REFUSED, f"allocation refused ({code} {reason})")
    if key is not None and not reply.check_message_integrity(key):
        return result(
            TurnProblem.ALLOCATION_REFUSED, "the allocation response failed MESSAGE-INTEGRITY"
        )
    relayed = reply.attributes.get("XOR-RELAYED-ADDRESS")
    mapped = reply.attributes.get("XOR-MAPPED-ADDRESS")
    lifetime = reply.attributes.get("LIFETIME")
    if relayed is None:
        return result(TurnProblem.ALLOCATION_REFUSED, "the allocation response has no relay")
    done = result(
        None,
        f"relayed address {relayed[0]}:{relayed[1]}",
        relayed=tuple(relayed),
        mapped=tuple(mapped) if mapped else None,
        lifetime=int(lifetime) if lifetime is not None else None,
    )
    if key is not None:
        # give the relay port back at once (best effort: it expires anyway)
        refresh = _request(
            stun.Method.REFRESH,
            {
                "LIFETIME": 0,
                "USERNAME": target.username,
                "REALM": request.attributes["REALM"],
                "NONCE": request.attributes["NONCE"],
            },
        )
        refresh.add_message_integrity(key)
        with contextlib.suppress(_Unreachable):
            session.deadline = min(session.deadline, asyncio.get_running_loop().time() + 1.0)
            await session.exchange(refresh)
    return done

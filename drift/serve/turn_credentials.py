"""Time-limited TURN credentials in coturn's ``use-auth-secret`` scheme (TURN REST API).

username   = "<expiry unix time>:<peer id>"
credential = base64(HMAC-SHA1(secret, username))

coturn recomputes the HMAC with the same shared secret and refuses the
allocation once the expiry has passed, so a leaked credential dies by itself.
Pure: the caller passes the wall-clock time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from drift.core.protocol import IceServer


def turn_credential(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def turn_username(peer_id: str, wall_now: float, ttl: float) -> str:
    return f"{int(wall_now + ttl)}:{peer_id}"


@dataclass(frozen=True, slots=True)
class IceServerSource:
    """Builds the ``iceServers`` list of a ``welcome``.

    ``secret`` is kept out of ``repr`` so it cannot reach a log line by accident.
    """

    stun_urls: Sequence[str] = ()
    turn_urls: Sequence[str] = ()
    turn_secret: str | None = None
    turn_ttl: float = 3600.0

    def __repr__(self) -> str:
        secret = "set" if self.turn_secret else "unset"
        return (
            f"IceServerSource(stun_urls={list(self.stun_urls)!r}, "
            f"turn_urls={list(self.turn_urls)!r}, turn_secret=<{secret}>, turn_ttl={self.turn_ttl})"
        )

    def __call__(self, peer_id: str, wall_now: float) -> list[IceServer]:
        servers: list[IceServer] = []
        if self.stun_urls:
            servers.append(IceServer(urls=list(self.stun_urls)))
        if self.turn_urls and self.turn_secret:
            username = turn_username(peer_id, wall_now, self.turn_ttl)
            servers.append(
                IceServer(
                    urls=list(self.turn_urls),
                    username=username,
                    credential=turn_credential(self.turn_secret, username),
                )
            )
        return servers

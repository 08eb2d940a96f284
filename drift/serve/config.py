"""Settings of ``drift serve``: one frozen dataclass, built by the CLI (flags or ``DRIFT_*``).

Defaults live here only; the CLI reads them from the dataclass fields so a
default is never written twice.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass
from typing import Final

from drift.core.lobby import Fault, LobbyConfig
from drift.errors import ConfigError
from drift.serve.turn_credentials import IceServerSource

#: What a browser sends as ``Origin``: scheme://host[:port], lower case, no path.
#: Any scheme, for hybrid apps (capacitor://localhost); never "null", which
#: every sandboxed iframe sends.
_ORIGIN: Final = re.compile(r"[a-z][a-z0-9+.-]*://([a-z0-9.-]+|\[[0-9a-f:.]+\])(:[0-9]{1,5})?")


class Unsafe(enum.StrEnum):
    """Protections of ``drift serve`` that a test can switch off, one at a time.

    TESTING ONLY: each brings back a defect that ``drift fuzz --attack`` must
    catch, to prove the attack finds it (like :class:`~drift.core.lobby.Fault`
    for the protocol checkers).
    """

    FREE_CONTROL_FRAMES = "free-control-frames"  # pings, pongs, fragments cost nothing
    READ_AFTER_CLOSE = "read-after-close"  # keep parsing a peer the server is closing
    AWAIT_WRITES = "await-writes"  # a frame's sender waits for its receiver to read
    UNBOUNDED_UPGRADES = "unbounded-upgrades"  # no deadline or cap before the upgrade


#: The matchmaking defaults are the core's own (LobbyConfig): written once, there.
_LOBBY: Final = LobbyConfig()


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    rematch_cooldown: float = _LOBBY.rematch_cooldown
    log_level: str = "info"
    log_format: str = "json"
    max_connections: int = _LOBBY.max_connections
    max_connections_per_ip: int = _LOBBY.max_connections_per_ip
    trust_proxy: bool = False
    rate_limit: float = _LOBBY.rate_limit
    rate_burst: int = _LOBBY.rate_burst
    max_queue: int = _LOBBY.max_queue
    queue_timeout: float = _LOBBY.queue_timeout
    allowed_origins: tuple[str, ...] = ()
    heartbeat: float = 20.0
    shutdown_timeout: float = 10.0
    stun_urls: tuple[str, ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_secret: str | None = dataclasses.field(default=None, repr=False)
    turn_ttl: float = 3600.0
    faults: frozenset[Fault] = frozenset()
    redis_url: str | None = None
    workers: int = 1
    #: name of this node in a cluster (Redis backend); random when unset
    node_id: str | None = None
    #: SO_REUSEPORT, so several worker processes share one port
    reuse_port: bool = False
    #: unsent bytes to one peer after which it counts as not reading and is cut
    #: off; 0 = never (a send then waits, and so does whoever sent it)
    max_pending_bytes: int = 128 * 1024
    #: seconds after which a node that stopped heartbeating counts as dead
    node_ttl: float = 5.0
    #: seconds a peer's unsent frames may wait without one byte being taken
    #: before it counts as not reading and is cut off; 0 = never
    send_timeout: float = 10.0
    #: seconds a new socket has to finish its first HTTP request (the upgrade)
    upgrade_timeout: float = 10.0
    #: seconds an HTTP socket may stay idle between two requests
    keepalive_timeout: float = 5.0
    #: sockets that have not finished their first request yet (also per address,
    #: at most ``max_connections_per_ip`` each, unless ``trust_proxy``)
    max_handshakes: int = 512
    unsafe: frozenset[Unsafe] = frozenset()

    def __post_init__(self) -> None:
        for origin in self.allowed_origins:
            # Matching is exact, so "https://Chat.example.com/" would silently
            # refuse every browser: say so at startup instead.
            if not _ORIGIN.fullmatch(origin):
                raise ConfigError(
                    f"--allowed-origin {origin!r} is not an origin: write scheme://host[:port] "
                    "in lower case, with no path or trailing slash (https://chat.example.com)"
                )

    def lobby_config(self) -> LobbyConfig:
        return LobbyConfig(
            rematch_cooldown=self.rematch_cooldown,
            max_queue=self.max_queue,
            queue_timeout=self.queue_timeout,
            rate_limit=self.rate_limit,
            rate_burst=self.rate_burst,
            max_connections=self.max_connections,
            max_connections_per_ip=self.max_connections_per_ip,
            faults=self.faults,
        )

    def ice_servers(self) -> IceServerSource:
        return IceServerSource(
            stun_urls=self.stun_urls,
            turn_urls=self.turn_urls,
            turn_secret=self.turn_secret,
            turn_ttl=self.turn_ttl,
        )

    def replace(self, **changes: object) -> ServerConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


DEFAULTS = ServerConfig()

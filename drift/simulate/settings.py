"""The settings of ``drift simulate``: one frozen object, each default written once.

The click options of :mod:`drift.simulate.command` take their defaults from
this class (``default=Settings.timeout``), worker processes receive it inside a
:class:`~drift.simulate.runner.RunSpec`, and every peer reads its own knobs
(``timeout``, ``hold``, ``trickle``, ``ice_policy``) from it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

#: One process runs ~250 pairs in a couple of seconds on one core; below a few
#: hundred peers a second process costs more to start than it saves.
AUTO_PROCS_FROM: Final = 200
AUTO_PROCS_MAX: Final = 4


def auto_procs(peers: int) -> int:
    """The default --procs: every core for a large run (measured: docs/performance.md)."""
    if peers < AUTO_PROCS_FROM:
        return 1
    return max(1, min(os.cpu_count() or 1, AUTO_PROCS_MAX, peers // 100))


@dataclass(frozen=True)
class Settings:
    # Not slots=True: the click options read these defaults as class attributes.
    peers: int = 500
    #: servers to check; empty = the embedded reference server
    urls: tuple[str, ...] = ()
    #: peers per second; None = all at once
    arrival_rate: float | None = None
    #: seconds a verified pair stays connected
    hold: float = 0.0
    next_fraction: float = 0.0
    #: seconds each pair has from matched to verified (and each step of a peer)
    timeout: float = 20.0
    trickle: bool = True
    media_fraction: float = 0.02
    #: worker processes; None = :func:`auto_procs` (resolved by :meth:`resolved`)
    procs: int | None = None
    concurrency: int = 500
    #: None = every judged peer must verify
    min_success: float | None = None
    real_interfaces: bool = False
    server_faults: tuple[str, ...] = ()
    report_dir: Path | None = None
    live: bool = True
    seed: int = 0
    #: "all" or "relay" (only candidates relayed by the TURN server of welcome)
    ice_policy: str = "all"
    #: TURN for the embedded server's welcome (with --url the target hands out its own)
    turn_urls: tuple[str, ...] = ()
    turn_secret: str | None = dataclasses.field(default=None, repr=False)
    turn_ttl: float | None = None
    #: a network profile (shipped name or TOML path): one lab home per peer (drift.netlab)
    network: str | None = None
    #: with ``network``: welcome hands out STUN only, to show who fails without TURN
    no_turn: bool = False

    def resolved(self) -> Settings:
        """These settings with ``procs`` decided (the figure a report prints)."""
        if self.procs is not None:
            return self
        return dataclasses.replace(self, procs=auto_procs(self.peers))

    def report_options(self) -> dict[str, Any]:
        """The settings as a report shows them: never the TURN secret."""
        options = dataclasses.asdict(self)
        for key in ("urls", "report_dir", "live", "server_faults", "turn_secret"):
            options.pop(key)
        return options

    def for_peers(self) -> Settings:
        """What peer processes get: everything but the TURN secret, which they never need."""
        return dataclasses.replace(self, turn_secret=None)

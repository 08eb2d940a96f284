"""The seam between ``drift simulate`` and a lab: open it around a run, seat the peers.

:func:`open_lab` builds the lab and moves the calling (main) thread onto the
lab's internet *before* the run starts its event loop, so every thread and
child process of the run (the embedded server, worker processes) lives there
too and the signaling WebSockets go straight to the server on 198.18.0.1.
:class:`LabNetwork` is simulate's ``PeerNetwork`` for a lab: picklable for
worker processes, it moves a worker onto the internet and seats each peer's
task in that peer's home.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from drift.netlab import namespaces as ns
from drift.netlab import seat as seating
from drift.netlab.lab import SERVICE_IP, NetworkLab, Seat
from drift.netlab.profile import Profile, load_profile


@dataclass(frozen=True, slots=True)
class LabNetwork:
    """Peers in lab homes (implements simulate's ``PeerNetwork``)."""

    internet: str
    seats: tuple[Seat, ...]
    cafile: str

    def apply(self) -> None:
        fd = ns.open_ns(self.internet)
        try:
            ns.setns(fd)  # a worker process's loop thread joins the lab's internet
        finally:
            os.close(fd)
        seating.install(self.cafile)

    def seat(self, index: int) -> None:
        seating.set_seat(self.seats[index])


def peer_network(lab: NetworkLab) -> LabNetwork:
    assert lab.coturn is not None
    return LabNetwork(lab.internet, tuple(lab.seats), str(lab.coturn.cert))


def turn_transports(lab: NetworkLab) -> dict[int, str]:
    """Peer index -> the transport its relay candidate uses (peers with TURN only)."""
    offered = {seating.transport_of(u) for u in lab.turn_urls}
    out: dict[int, str] = {}
    for seat in lab.seats:
        usable = [t for t in seat.turn if t in offered]
        if usable:
            out[seat.index] = usable[0]
    return out


@contextlib.contextmanager
def open_lab(profile: Profile, peers: int, *, turn: bool) -> Iterator[NetworkLab]:
    """Build, enter, and always leave and remove the lab (success, error, Ctrl-C, SIGTERM)."""
    with NetworkLab(profile, peers, turn=turn) as lab:
        lab.enter()
        try:
            yield lab
        finally:
            lab.leave()
            seating.close_homes()


__all__ = ["SERVICE_IP", "LabNetwork", "load_profile", "open_lab", "peer_network"]

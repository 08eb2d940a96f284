"""Where a peer process gathers its ICE host candidates: 127.0.0.1 unless told otherwise.

aioice never offers 127.0.0.1 as a host candidate and otherwise gathers on every
real interface of the machine. Synthetic peers that all run on one machine
should not depend on (or leak to) those interfaces, so by default
``aioice.ice.get_host_addresses`` is replaced with one that returns loopback
only; ``--real-interfaces`` keeps aioice's own for runs whose pairs span
machines.

A :class:`PeerNetwork` is the one seam for "where do a peer's sockets live and
which host addresses does it gather": :meth:`~PeerNetwork.apply` once per peer
process (patching aioice is process-wide, which is why every worker process
applies its network itself), then :meth:`~PeerNetwork.seat` in each peer's own
task before it opens anything (a network that places peers in different homes
keys them off a context variable there). :class:`HostAddresses` is the plain
kind simulate itself uses: a fixed list of addresses, or the machine's own.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

#: aioice's own get_host_addresses, kept by the first :func:`_aioice_ice`
_original: Callable[[bool, bool], list[str]] | None = None


def _aioice_ice() -> Any:  # the module, whose attribute the networks replace
    """aioice's ICE module: imported by peer processes only, when a network is applied.

    The coordinating process of ``drift simulate`` imports this module for
    :func:`network_for` and would otherwise pay ~40 ms for the STUN stack
    (aioice and dnspython) on the run's start-up path.
    """
    global _original
    import aioice.ice

    if _original is None:
        _original = aioice.ice.get_host_addresses
    return aioice.ice


class PeerNetwork(Protocol):
    """Where the peers of one process gather their ICE candidates."""

    def apply(self) -> None:
        """Install this network for the whole process, before any peer starts."""
        ...

    def seat(self, index: int) -> None:
        """Place peer ``index``: called in that peer's own task, before it connects."""
        ...


@dataclass(frozen=True, slots=True)
class HostAddresses:
    """Host candidates on these addresses; ``None`` = every real interface (aioice's own)."""

    addresses: tuple[str, ...] | None = ("127.0.0.1",)

    def apply(self) -> None:
        global _applied
        _applied = self
        ice = _aioice_ice()
        addresses = self.addresses
        if addresses is None:
            ice.get_host_addresses = _original
            return
        v4 = [a for a in addresses if ipaddress.ip_address(a).version == 4]
        v6 = [a for a in addresses if ipaddress.ip_address(a).version == 6]

        def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
            return (v4 if use_ipv4 else []) + (v6 if use_ipv6 else [])

        ice.get_host_addresses = host_addresses

    def seat(self, index: int) -> None:
        pass  # every peer of the process shares the addresses


LOOPBACK: Final = HostAddresses()
REAL_INTERFACES: Final = HostAddresses(None)
_applied: HostAddresses | None = None


def network_for(real_interfaces: bool) -> HostAddresses:
    """The network of ``--real-interfaces`` (or of its absence)."""
    return REAL_INTERFACES if real_interfaces else LOOPBACK


def configure_interfaces(real_interfaces: bool = False) -> None:
    """Loopback-only host candidates (default), or aioice's real interfaces."""
    network_for(real_interfaces).apply()


def loopback_only() -> bool:
    return _applied == LOOPBACK and _aioice_ice().get_host_addresses is not _original

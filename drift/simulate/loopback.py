"""Keep aiortc's ICE candidates on 127.0.0.1 unless told otherwise.

aioice never offers 127.0.0.1 as a host candidate and otherwise gathers on every
real interface of the machine. Synthetic peers that all run on one machine
should not depend on (or leak to) those interfaces, so by default
``aioice.ice.get_host_addresses`` is replaced with one that returns loopback
only; ``--real-interfaces`` keeps aioice's own for runs whose pairs span
machines. Patching is process-wide, which is why every worker process calls
:func:`configure_interfaces` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import aioice.ice

_ORIGINAL: Final[Callable[[bool, bool], list[str]]] = aioice.ice.get_host_addresses


def _loopback_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["127.0.0.1"] if use_ipv4 else []


def configure_interfaces(real_interfaces: bool = False) -> None:
    """Loopback-only host candidates (default), or aioice's real interfaces."""
    chosen = _ORIGINAL if real_interfaces else _loopback_addresses
    aioice.ice.get_host_addresses = chosen  # type: ignore[assignment]


def loopback_only() -> bool:
    return aioice.ice.get_host_addresses is _loopback_addresses

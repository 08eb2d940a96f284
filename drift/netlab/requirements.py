"""What the lab needs from the machine; each missing piece is one line saying how to get it.

Checked before anything is created, so a run without them stops with exit 2
instead of half-building a lab.
"""

from __future__ import annotations

import os
import shutil

from drift.errors import ConfigError

#: capability bits of /proc/self/status CapEff
_CAP_NET_ADMIN = 12
_CAP_SYS_ADMIN = 21  # mounting the namespace names under /run/netns

_BINARIES = (
    ("nft", "nftables (Debian/Ubuntu: apt-get install nftables)"),
    ("ip", "iproute2 (Debian/Ubuntu: apt-get install iproute2)"),
    ("tc", "iproute2 (Debian/Ubuntu: apt-get install iproute2)"),
    ("turnserver", "coturn (Debian/Ubuntu: apt-get install coturn)"),
)


class LabUnavailable(ConfigError):
    """The machine lacks something the lab needs (exit 2, naming it)."""


def _effective_caps() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def missing() -> list[str]:
    """Every missing requirement, as readable lines (empty: the lab can be built)."""
    problems: list[str] = []
    caps = _effective_caps()
    if os.geteuid() != 0 and not (caps >> _CAP_NET_ADMIN & 1 and caps >> _CAP_SYS_ADMIN & 1):
        problems.append(
            "root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) to create network namespaces: "
            "run as root, e.g. sudo drift simulate --network ..."
        )
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        problems.append("the Python package pyroute2 (pip install 'drift-signal[network]')")
    for binary, how in _BINARIES:
        if shutil.which(binary) is None:
            problems.append(f"`{binary}` from {how}")
    return problems


def require() -> None:
    problems = missing()
    if problems:
        raise LabUnavailable("--network needs " + "; ".join(problems))

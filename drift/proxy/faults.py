"""The wire faults ``drift proxy`` can inject, and the failure kind simulate names for each.

Each fault is one lie a server could tell; none of them exists in drift's own
server code, which is what makes the proxy a test of the *checker*.
"""

from __future__ import annotations

import enum
import re
from typing import Final


class WireFault(enum.StrEnum):
    NONE = "none"  # pass every frame through unchanged
    SWAP_ROLES = "swap-roles"  # flip the role in every matched
    DROP_RELAY = "drop-relay"  # swallow the offer of each room (its candidates still pass)
    DUPLICATE_RELAY = "duplicate-relay"  # deliver every offer/answer/candidate twice
    TAMPER_FINGERPRINT = "tamper-fingerprint"  # change a=fingerprint in offers and answers
    FALSE_PARTNER_LEFT = "false-partner-left"  # tell the answerer its partner left; it did not
    DELAY_MATCHED = "delay-matched"  # hold back the waiter's matched while later frames pass
    CROSS_ROOM = "cross-room"  # also deliver each relay to a peer of another room


#: what ``drift simulate`` reports for each fault (docs/simulate.md, tests/simulate)
EXPECTED_KIND: Final[dict[WireFault, str]] = {
    WireFault.SWAP_ROLES: "swapped-roles",
    WireFault.DROP_RELAY: "relay-dropped",
    WireFault.DUPLICATE_RELAY: "relay-duplicated",
    WireFault.TAMPER_FINGERPRINT: "dtls-failed",
    WireFault.FALSE_PARTNER_LEFT: "false-partner-left",
    WireFault.DELAY_MATCHED: "late-matched",
    WireFault.CROSS_ROOM: "cross-wired",
}

_FINGERPRINT: Final = re.compile(r"(a=fingerprint:\S+ )([0-9A-Fa-f]{2})")


def tamper_fingerprint(sdp: str) -> str:
    """``sdp`` with the first byte of every DTLS fingerprint changed (a different cert)."""

    def flip(m: re.Match[str]) -> str:
        return m.group(1) + f"{int(m.group(2), 16) ^ 0xFF:02X}"

    return _FINGERPRINT.sub(flip, sdp)

"""The nftables script of one home's router: NAT type, firewall and loss, in one table.

Pure text, so a test can read the rules without a kernel. The router has two
links: ``lan`` (to the home) and ``wan`` (to the internet namespace).

* NAT ``cone``: ``masquerade`` keeps the source port (endpoint-independent
  mapping) while conntrack only lets in replies from the address and port a
  packet went to (address-and-port-dependent filtering): RFC 4787's
  "port-restricted cone".
* NAT ``symmetric``: ``masquerade random,fully-random`` maps every new
  destination to a new random port (endpoint-dependent mapping).
* Unsolicited new packets from the internet are dropped, both forwarded ones
  and those for the router's own address: without the latter, a partner's
  early check creates a conntrack entry on the router that makes masquerade
  move the port, and cone↔cone fails where real cone NATs connect.
* Loss is a random drop in the *forward* chain with a named counter per
  direction (a drop in a host's own output path would return EPERM to the
  sender instead of losing the packet silently).
* ``udp-blocked`` lets only TCP to the TURN ports of the lab's server leave.
"""

from __future__ import annotations

from typing import Final

from drift.netlab.profile import Group

TABLE: Final = "drift"
#: ``numgen random mod`` resolution for loss: hundredths of a percent
_LOSS_SCALE: Final = 10_000


def router_script(group: Group, *, service_ip: str, turn_tcp_ports: tuple[int, ...]) -> str:
    forward: list[str] = [
        'iifname "lan" counter name "seen_up"',
        'iifname "wan" counter name "seen_down"',
    ]
    if group.loss > 0:
        threshold = round(group.loss * _LOSS_SCALE / 100)
        forward += [
            f'iifname "lan" numgen random mod {_LOSS_SCALE} < {threshold} '
            'counter name "lost_up" drop',
            f'iifname "wan" numgen random mod {_LOSS_SCALE} < {threshold} '
            'counter name "lost_down" drop',
        ]
    forward.append("ct state established,related accept")
    if group.nat != "none":
        forward.append('iifname "wan" drop')
    if group.firewall == "udp-blocked":
        ports = ", ".join(str(p) for p in turn_tcp_ports)
        forward.append(f'iifname "lan" ip daddr {service_ip} tcp dport {{ {ports} }} accept')
        forward.append('iifname "lan" drop')
    nat: list[str] = []
    if group.nat == "cone":
        nat.append('oifname "wan" masquerade')
    elif group.nat == "symmetric":
        nat.append('oifname "wan" masquerade random,fully-random')
    lines = [
        f"table ip {TABLE} {{",
        *(f"\tcounter {name} {{ }}" for name in COUNTERS),
        "\tchain inbound {",
        "\t\ttype filter hook input priority filter; policy accept;",
        '\t\tiifname "wan" ct state new drop',
        "\t}",
        "\tchain forward_home {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        *(f"\t\t{rule}" for rule in forward),
        "\t}",
    ]
    if nat:
        lines += [
            "\tchain postrouting {",
            "\t\ttype nat hook postrouting priority srcnat; policy accept;",
            *(f"\t\t{rule}" for rule in nat),
            "\t}",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


#: named counters every router has: packets seen and dropped for loss, each way
COUNTERS: Final = ("seen_up", "seen_down", "lost_up", "lost_down")

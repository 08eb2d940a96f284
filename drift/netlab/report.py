"""What a network run showed, per group and per pairing of groups, and its verdict.

A room's *pairing* is the two groups of its peers, in profile order
(``cone↔symmetric``). Its *path* is how the selected candidate pair went:
``relay`` when either side's pair has a relay candidate (it used TURN),
``host`` when both sides reached the other's host candidate (impossible
between two homes unless the lab leaked), else ``reflexive`` (server- or
peer-reflexive: NAT traversal without TURN).

The verdict of a network run is the profile's expectations — explicit ones,
plus, for every group that has none, "every room with a peer of it verifies"
(or ``--min-success``) — and never a failure that no network explains: a
signaling error, swapped roles or a cross-wired relay is a server bug on any
network, so it fails the run whatever the expectations say.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Final

from rich.console import Console
from rich.table import Table

from drift.netlab.lab import Seat
from drift.netlab.profile import Expectation, Profile
from drift.report.html import Section, table_html
from drift.report.junit import Case
from drift.report.stats import percentile
from drift.simulate.records import Failure, Outcome, RoundRecord
from drift.simulate.verify import RoomView, Verdict

#: failure kinds no network explains
SERVER_BUGS: Final = frozenset(
    {
        Failure.SIGNALING_ERROR.value,
        Failure.SWAPPED_ROLES.value,
        Failure.CROSS_WIRED.value,
        Failure.NEVER_MATCHED.value,
        Failure.UNREACHABLE.value,
        # a server event or relay contradicted by the other side's own record
        Failure.LATE_MATCHED.value,
        Failure.FALSE_PARTNER_LEFT.value,
        Failure.RELAY_ALTERED.value,
        Failure.RELAY_DUPLICATED.value,
        Failure.RELAY_DROPPED.value,
    }
)


#: kinds that mean "ICE found no path" (a timeout while checks ran counts too)
ICE_KINDS: Final = frozenset(
    {Failure.ICE_FAILED.value, Failure.TIMEOUT.value, Failure.CANDIDATES_DROPPED.value}
)


def pairing_label(a: str, b: str, order: Sequence[str]) -> str:
    first, second = sorted((a, b), key=order.index)
    return f"{first}↔{second}"


def _side_label(rnd: RoundRecord) -> str | None:
    if rnd.selected_local_type is None:
        return None
    return f"{rnd.selected_local_type}/{rnd.selected_remote_type}"


def room_path(room: RoomView) -> str | None:
    sides = [rnd for _, rnd in room.members if rnd.selected_local_type is not None]
    if not sides:
        return None
    types = {t for rnd in sides for t in (rnd.selected_local_type, rnd.selected_remote_type)}
    if "relay" in types:
        return "relay"
    if len(sides) == 2 and all(rnd.selected_remote_type == "host" for rnd in sides):
        return "host"
    return "reflexive"


def _ms(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        **{f"p{p}": round(percentile(values, p), 1) for p in (50, 90, 99)},
    }


def network_summary(
    verdict: Verdict,
    seats: Sequence[Seat],
    profile: Profile,
    *,
    turn: bool,
    turn_transport: Mapping[int, str],
    loss: Mapping[str, Mapping[str, int]],
    min_success: float | None,
) -> dict[str, Any]:
    order = [g.name for g in profile.groups]
    group_of = {s.index: s.group for s in seats}
    groups: dict[str, dict[str, Any]] = {
        name: {"peers": 0, "verified": 0, "failed": 0, "failures": Counter()} for name in order
    }
    for rec in verdict.peers:
        g = groups[group_of[rec.index]]
        g["peers"] += 1
        g["verified"] += rec.outcome == Outcome.VERIFIED
        if rec.outcome == Outcome.FAILED:
            g["failed"] += 1
            g["failures"][rec.failure_kind or "?"] += 1
    for g in groups.values():
        judged = g["verified"] + g["failed"]
        g["verified_share"] = round(g["verified"] / judged, 4) if judged else None
        g["failures"] = dict(g["failures"])

    pairings: dict[str, dict[str, Any]] = {}
    times: dict[str, list[float]] = {}
    room_rows: list[tuple[str, RoomView, str | None]] = []
    for room in verdict.rooms.values():
        if len(room.members) != 2:
            continue
        a, b = (group_of[rec.index] for rec, _ in room.members)
        label = pairing_label(a, b, order)
        path = room_path(room)
        room_rows.append((label, room, path))
        p = pairings.setdefault(
            label,
            {
                "rooms": 0, "verified": 0, "selected": Counter(), "paths": Counter(),
                "relay_transports": Counter(), "failures": Counter(), "used_turn": 0,
            },
        )  # fmt: skip
        p["rooms"] += 1
        for rec, rnd in room.members:
            if (side := _side_label(rnd)) is not None:
                p["selected"][side] += 1
            if rnd.selected_local_type == "relay":
                p["relay_transports"][turn_transport.get(rec.index, "?")] += 1
            if rnd.t_connected is not None and rnd.t_matched is not None:
                times.setdefault(label, []).append((rnd.t_connected - rnd.t_matched) * 1000)
        if room.verified:
            p["verified"] += 1
            p["paths"][path or "unknown"] += 1
            p["used_turn"] += path == "relay"
        else:
            p["failures"][room.failure or "not-verified"] += 1
    for label, p in pairings.items():
        p["verified_share"] = round(p["verified"] / p["rooms"], 4)
        p["matched_to_connected_ms"] = _ms(times.get(label, []))
        for key in ("selected", "paths", "relay_transports", "failures"):
            p[key] = dict(sorted(p[key].items()))
    ordered = {
        pairing_label(a, b, order): pairings[pairing_label(a, b, order)]
        for i, a in enumerate(order)
        for b in order[i:]
        if pairing_label(a, b, order) in pairings
    }
    verified_rooms = sum(p["verified"] for p in ordered.values())
    used = sum(p["used_turn"] for p in ordered.values())
    rooms = sum(p["rooms"] for p in ordered.values())
    # Without TURN, the rooms ICE could not connect are the ones that need it.
    ice_failed = sum(
        n for p in ordered.values() for kind, n in p["failures"].items() if kind in ICE_KINDS
    )
    results = [
        _check(e, room_rows, order)
        for e in (*profile.expectations, *_implicit(profile, min_success))
    ]
    bugs = {kind: n for kind, n in verdict.failures.items() if kind in SERVER_BUGS}
    loss_applied = {
        group: {
            "dropped_up": c.get("lost_up", 0),
            "seen_up": c.get("seen_up", 0),
            "dropped_down": c.get("lost_down", 0),
            "seen_down": c.get("seen_down", 0),
            "applied_pct": round(
                100
                * (c.get("lost_up", 0) + c.get("lost_down", 0))
                / max(1, c.get("seen_up", 0) + c.get("seen_down", 0)),
                2,
            ),
        }
        for group, c in loss.items()
    }
    return {
        "profile": profile.name,
        "source": profile.source,
        "description": profile.description,
        "turn": turn,
        "groups_config": [
            {
                "name": g.name,
                "share": g.share,
                "nat": g.nat,
                "firewall": g.firewall,
                "loss_pct": g.loss,
                "rate_bps": g.rate_bps,
                "delay_ms": g.delay_ms,
                "jitter_ms": g.jitter_ms,
            }
            for g in profile.groups
        ],
        "groups": groups,
        "pairings": ordered,
        "verified_rooms": verified_rooms,
        "rooms": rooms,
        "used_turn": used,
        "used_turn_share": round(used / verified_rooms, 4) if verified_rooms else 0.0,
        "needed_turn": None if turn else ice_failed,
        "needed_turn_share": None if turn else (round(ice_failed / rooms, 4) if rooms else 0.0),
        "failing_pairings": [k for k, p in ordered.items() if p["verified"] < p["rooms"]],
        "loss": loss_applied,
        "expectations": results,
        "server_bugs": bugs,
        "passed": all(r["passed"] for r in results) and not bugs,
    }


def _implicit(profile: Profile, min_success: float | None) -> list[Expectation]:
    named = {e.groups[0] for e in profile.expectations if len(e.groups) == 1}
    floor = 1.0 if min_success is None else min_success
    return [Expectation((g.name,), floor) for g in profile.groups if g.name not in named]


def _check(
    expect: Expectation, rows: list[tuple[str, RoomView, str | None]], order: Sequence[str]
) -> dict[str, Any]:
    if len(expect.groups) == 2:
        wanted = pairing_label(expect.groups[0], expect.groups[1], order)
        rooms = [(room, path) for label, room, path in rows if label == wanted]
    else:
        name = expect.groups[0]
        rooms = [(room, path) for label, room, path in rows if name in label.split("↔")]
    verified = [path for room, path in rooms if room.verified]
    share = len(verified) / len(rooms) if rooms else 1.0
    why: list[str] = []
    if share + 1e-9 < expect.min_verified:
        why.append(f"verified {len(verified)}/{len(rooms)} rooms, below {expect.min_verified:g}")
    if expect.use == "relay" and any(p != "relay" for p in verified):
        n = sum(p != "relay" for p in verified)
        why.append(f"{n} verified rooms did not use a relay candidate")
    if expect.use == "direct" and any(p in ("relay", "host") for p in verified):
        n = sum(p in ("relay", "host") for p in verified)
        why.append(f"{n} verified rooms used relay or host candidates, not NAT traversal")
    return {
        "expect": expect.label,
        "min_verified": expect.min_verified,
        "use": expect.use,
        "rooms": len(rooms),
        "verified_share": round(share, 4),
        "passed": not why,
        "why": "; ".join(why),
    }


def network_cases(summary: Mapping[str, Any]) -> list[Case]:
    """One junit case per expectation, and one for failures no network explains."""
    net = summary["network"]
    cases = [
        Case(
            name=f"expect {r['expect']}: verified >= {r['min_verified']:g}"
            + (f", use {r['use']}" if r["use"] else ""),
            classname=f"drift.simulate.network.{net['profile']}",
            failure=r["why"] or None,
            failure_type="expectation" if r["why"] else None,
        )
        for r in net["expectations"]
    ]
    if net["server_bugs"]:
        text = ", ".join(f"{k}: {v}" for k, v in net["server_bugs"].items())
        cases.append(
            Case(
                "no server-side failure kinds",
                "drift.simulate.network",
                failure=text,
                failure_type="server-bug",
            )
        )
    return cases


def network_sections(summary: Mapping[str, Any]) -> list[Section]:
    """The group × group matrix, per-group and per-pairing tables, loss and expectations."""
    net = summary["network"]
    names = [g["name"] for g in net["groups_config"]]
    matrix: list[list[object]] = []
    for a in names:
        row: list[object] = [a]
        for b in names:
            p = net["pairings"].get(pairing_label(a, b, names))
            if p is None:
                row.append("-")
                continue
            paths = ", ".join(f"{k} {v}" for k, v in p["paths"].items())
            row.append(f"{p['verified']}/{p['rooms']} verified" + (f" ({paths})" if paths else ""))
        matrix.append(row)
    pair_rows = [
        [
            label,
            p["rooms"],
            p["verified_share"],
            ", ".join(f"{k}: {v}" for k, v in p["selected"].items()),
            ", ".join(f"{k}: {v}" for k, v in p["relay_transports"].items()),
            p["used_turn"],
            *(p["matched_to_connected_ms"].get(k, "") for k in ("p50", "p90", "p99")),
            ", ".join(f"{k}: {v}" for k, v in p["failures"].items()),
        ]
        for label, p in net["pairings"].items()
    ]
    group_rows = [
        [
            g["name"], g["nat"], g["firewall"], g["loss_pct"], g["rate_bps"] or "",
            net["groups"][g["name"]]["peers"], net["groups"][g["name"]]["verified_share"],
            ", ".join(f"{k}: {v}" for k, v in net["groups"][g["name"]]["failures"].items()),
        ]
        for g in net["groups_config"]
    ]  # fmt: skip
    expect_rows = [
        [r["expect"], r["min_verified"], r["use"] or "", r["rooms"], r["verified_share"],
         "pass" if r["passed"] else f"FAIL: {r['why']}"]
        for r in net["expectations"]
    ]  # fmt: skip
    loss_rows = [
        [g, c["seen_up"], c["dropped_up"], c["seen_down"], c["dropped_down"], c["applied_pct"]]
        for g, c in net["loss"].items()
    ]
    body = (
        f"<p>profile <b>{net['profile']}</b> ({net['source']}), TURN "
        + turn_line(net)
        + "</p>"
        + table_html(["group \\ group", *names], matrix)
    )
    sections = [
        Section("Network: group × group", body),
        Section(
            "Network: pairings",
            table_html(
                [
                    "pairing",
                    "rooms",
                    "verified",
                    "selected (local/remote)",
                    "relay transport",
                    "used TURN",
                    "p50 ms",
                    "p90 ms",
                    "p99 ms",
                    "failures",
                ],
                pair_rows,
            )
            + table_html(
                [
                    "group",
                    "nat",
                    "firewall",
                    "loss %",
                    "rate bit/s",
                    "peers",
                    "verified",
                    "failures",
                ],
                group_rows,
            ),
        ),
        Section(
            "Network: expectations",
            table_html(
                ["expectation", "min verified", "use", "rooms", "verified", "result"], expect_rows
            ),
        ),
    ]
    if loss_rows:
        sections.append(
            Section(
                "Network: loss applied by the routers",
                table_html(
                    ["group", "packets up", "dropped up", "packets down", "dropped down", "%"],
                    loss_rows,
                ),
            )
        )
    return sections


def print_network(console: Console, summary: Mapping[str, Any]) -> None:
    """Per pairing on the terminal, then every expectation that failed."""
    net = summary["network"]
    table = Table(title=f"drift simulate --network {net['profile']}: pairings")
    for col in ("pairing", "verified", "paths", "relay via", "p50 ms", "p90 ms", "failures"):
        table.add_column(
            col, justify="left" if col in ("pairing", "paths", "failures") else "right"
        )
    for label, p in net["pairings"].items():
        ms = p["matched_to_connected_ms"]
        table.add_row(
            label,
            f"{p['verified']}/{p['rooms']}",
            ", ".join(f"{k} {v}" for k, v in p["paths"].items()),
            ", ".join(f"{k} {v}" for k, v in p["relay_transports"].items()),
            str(ms.get("p50", "")),
            str(ms.get("p90", "")),
            ", ".join(f"{k} {v}" for k, v in p["failures"].items()),
        )
    console.print(table)
    console.print(turn_line(net))
    for group, c in net["loss"].items():
        console.print(
            f"loss applied to {group}: {c['dropped_up']}/{c['seen_up']} up, "
            f"{c['dropped_down']}/{c['seen_down']} down ({c['applied_pct']} %)"
        )
    for r in net["expectations"]:
        if not r["passed"]:
            console.print(f"[red]expectation failed[/] {r['expect']}: {r['why']}")
    if net["failing_pairings"]:
        console.print(f"failing pairings: {', '.join(net['failing_pairings'])}")


def turn_line(net: Mapping[str, Any]) -> str:
    """What the run says about TURN: who used it (TURN on) or who needs it (--no-turn).

    With TURN on, aioice nominates the first pair whose check succeeds, and a
    relay pair often wins that race against a reflexive pair whose first check
    the partner's NAT dropped: "used" is an upper bound of "needed". The
    --no-turn run measures "needed": the rooms ICE could not connect without it.
    """
    if net["turn"]:
        return (
            f"TURN on: {net['used_turn']}/{net['verified_rooms']} verified pairs used a relay "
            f"({100 * net['used_turn_share']:.1f} %)"
        )
    return (
        f"TURN off (--no-turn): {net['needed_turn']}/{net['rooms']} pairs found no path "
        f"without TURN, i.e. needed it ({100 * net['needed_turn_share']:.1f} %)"
    )

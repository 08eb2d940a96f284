"""Figures of a finished run, and its files: summary.json, peers.csv, junit.xml, report.html.

Everything here reads the classified records (:mod:`drift.simulate.verify`);
nothing is measured twice. The same :func:`summarize_run` dict feeds the JSON,
the HTML page and the terminal table, so they cannot disagree.
"""

from __future__ import annotations

import bisect
import csv
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from drift.report import charts
from drift.report.html import Section, table_html, write_page
from drift.report.junit import Case, write_junit
from drift.report.stats import summarize
from drift.simulate.records import Failure, Outcome, PeerRecord, RoundRecord
from drift.simulate.settings import Settings
from drift.simulate.verify import Verdict

#: (key, title) of each latency figure, in milliseconds
LATENCIES: tuple[tuple[str, str], ...] = (
    ("join_to_matched", "join → matched"),
    ("matched_to_ice_connected", "matched → ICE connected"),
    ("matched_to_verified", "matched → verified"),
    ("datachannel_rtt", "data-channel RTT"),
)
# in the charts' palette order: blue, orange, red, teal, green
_TIMELINE_STATES = ("waiting", "negotiating", "failed", "verified", "done")


def _ms(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else (b - a) * 1000.0


def latency_samples(records: Sequence[PeerRecord]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {key: [] for key, _ in LATENCIES}
    for rec in records:
        for rnd in rec.rounds:
            pairs = (
                ("join_to_matched", _ms(rnd.t_join, rnd.t_matched)),
                ("matched_to_ice_connected", _ms(rnd.t_matched, rnd.t_ice_connected)),
                (
                    "matched_to_verified",
                    _ms(rnd.t_matched, rnd.t_verified if rnd.verified else None),
                ),
                ("datachannel_rtt", rnd.rtt_ms),
            )
            for key, value in pairs:
                if value is not None:
                    out[key].append(value)
    return out


#: candidate types of RFC 8445, in the order the report lists them
CANDIDATE_TYPES: tuple[str, ...] = ("host", "srflx", "prflx", "relay")


def pair_label(rnd: RoundRecord) -> str:
    """``local/remote`` types of the selected candidate pair, as this side saw it."""
    if rnd.selected_local_type is None:
        return ""
    return f"{rnd.selected_local_type}/{rnd.selected_remote_type}"


def candidate_summary(verdict: Verdict) -> dict[str, Any]:
    """Selected candidate pairs: per connected side, and rooms where both sides relayed."""
    types = dict.fromkeys(CANDIDATE_TYPES, 0)
    pairs: dict[str, int] = {}
    unknown = 0
    for rec in verdict.peers:
        for rnd in rec.rounds:
            if rnd.t_connected is None:
                continue
            if rnd.selected_local_type is None:
                unknown += 1
                continue
            types[rnd.selected_local_type] = types.get(rnd.selected_local_type, 0) + 1
            label = pair_label(rnd)
            pairs[label] = pairs.get(label, 0) + 1
    relayed = sum(
        1
        for room in verdict.rooms.values()
        if len(room.members) == 2
        and all(rnd.selected_local_type == "relay" for _, rnd in room.members)
    )
    return {
        "local_types": types,
        "pairs": dict(sorted(pairs.items())),
        "unknown": unknown,
        "relayed_rooms": relayed,
    }


def failure_examples(records: Sequence[PeerRecord]) -> dict[str, str]:
    """The first detail seen for each failure kind: the reason, not just a count."""
    found: dict[str, str] = {}
    for rec in records:
        kind, detail = rec.failure_kind, rec.failure_detail or ""
        # prefer the side that saw the cause over one that names its partner's
        if kind and (kind not in found or found[kind].startswith("partner saw:")):
            found[kind] = detail
    return dict(sorted(found.items()))


#: the per-address cap of a default ``drift serve`` (``--max-connections-per-ip``)
DEFAULT_PER_ADDRESS_CAP = 20


def refusal_hint(records: Sequence[PeerRecord]) -> str | None:
    """Why peers were closed with 1013 before ``welcome``, and the flag that lifts it.

    The server refuses a connection over one of its caps before it says welcome.
    All synthetic peers connect from one address, so against a server run with its
    defaults the per-address cap is the usual cause.
    """
    refused = sum(
        1
        for rec in records
        if rec.failure_detail
        and "before welcome" in rec.failure_detail
        and "code 1013" in rec.failure_detail
    )
    if not refused:
        return None
    return (
        f"{refused} peer(s) refused before welcome (close 1013): the server is at a "
        "connection cap. Every synthetic peer connects from this machine's one address, "
        f"and a default drift serve accepts {DEFAULT_PER_ADDRESS_CAP} connections per "
        "address: run the server with --max-connections-per-ip 0 (or raise "
        "--max-connections), or lower --peers"
    )


def summarize_run(
    verdict: Verdict,
    *,
    settings: Mapping[str, Any],
    target: Mapping[str, Any],
    wall_s: float,
    worker_rss: Sequence[int],
    server_rss: int | None,
    passed: bool,
    exit_code: int,
) -> dict[str, Any]:
    records = verdict.peers
    samples = latency_samples(records)
    verified = verdict.outcomes.get(Outcome.VERIFIED.value, 0)
    media_rooms = [r for r in verdict.rooms.values() if any(m[1].media for m in r.members)]
    total_rss = sum(worker_rss)
    return {
        "kind": "simulate",
        "verdict": "pass" if passed else "fail",
        "exit_code": exit_code,
        "target": dict(target),
        "settings": dict(settings),
        "peers": len(records),
        "outcomes": {o.value: verdict.outcomes.get(o.value, 0) for o in Outcome},
        "failures": {k: v for k, v in sorted(verdict.failures.items())},
        "failure_examples": failure_examples(records),
        "run_failures": list(verdict.run_failures),
        "hints": [hint for hint in (refusal_hint(records),) if hint],
        "rooms": len(verdict.rooms),
        "verified_pairs": verdict.verified_pairs,
        "next_pressed": sum(1 for r in records for rnd in r.rounds if rnd.pressed_next),
        "media_pairs": len(media_rooms),
        "media_pairs_verified": sum(1 for r in media_rooms if r.verified),
        "ice_policy": settings.get("ice_policy", Settings.ice_policy),
        "candidate_pairs": candidate_summary(verdict),
        "success_ratio": round(verdict.success_ratio(), 6),
        "latency_ms": {key: summarize(samples[key]) for key, _ in LATENCIES},
        "wall_s": round(wall_s, 3),
        "peers_per_s": round(verified / wall_s, 2) if wall_s > 0 else 0.0,
        "peak_rss_bytes": {
            "workers": list(worker_rss),
            "workers_total": total_rss,
            "server": server_rss,
            "per_peer": round(total_rss / len(records)) if records else 0,
        },
    }


# ---------------------------------------------------------------------- terminal


def print_summary(console: Console, summary: Mapping[str, Any]) -> None:
    outcomes = Table(title="drift simulate: outcomes", show_header=True, header_style="bold")
    outcomes.add_column("outcome / failure kind")
    outcomes.add_column("peers", justify="right")
    for name, count in summary["outcomes"].items():
        style = {"verified": "green", "failed": "red"}.get(name, "yellow")
        outcomes.add_row(f"[{style}]{name}[/]", str(count))
    for name, count in summary["failures"].items():
        outcomes.add_row(f"  [red]{name}[/]", str(count))
    for item in summary["run_failures"]:
        outcomes.add_row(f"  [red]{item}[/]", "run")
    outcomes.add_row("pairs verified", f"{summary['verified_pairs']} / {summary['rooms']}")
    if summary["media_pairs"]:
        outcomes.add_row(
            "media pairs verified", f"{summary['media_pairs_verified']} / {summary['media_pairs']}"
        )
    if summary["next_pressed"]:
        outcomes.add_row("peers that pressed next", str(summary["next_pressed"]))
    cands = summary["candidate_pairs"]
    if cands["pairs"] or cands["unknown"]:
        seen = ", ".join(f"{k} {v}" for k, v in cands["pairs"].items())
        if cands["unknown"]:
            seen += f"{', ' if seen else ''}unknown {cands['unknown']}"
        outcomes.add_row("selected candidate pairs (local/remote)", seen)
        outcomes.add_row(
            f"pairs relayed on both sides (ICE policy {summary['ice_policy']})",
            f"{cands['relayed_rooms']} / {summary['rooms']}",
        )
    console.print(outcomes)
    for kind, detail in summary.get("failure_examples", {}).items():
        console.print(f"[red]{escape(kind)}[/], e.g.: {escape(detail)}", highlight=False)
    for hint in summary.get("hints", []):
        console.print(f"[yellow]likely cause:[/] {escape(hint)}", highlight=False)

    lat = Table(title="latency (ms)", header_style="bold")
    for col in ("", "count", "p50", "p95", "p99", "max"):
        lat.add_column(col, justify="right" if col else "left")
    for key, title in LATENCIES:
        s = summary["latency_ms"][key]
        lat.add_row(title, str(s["count"]), *(f"{s[k]:.1f}" for k in ("p50", "p95", "p99", "max")))
    console.print(lat)
    rss = summary["peak_rss_bytes"]
    server = f", server {rss['server'] / 2**20:.0f} MiB" if rss["server"] else ""
    console.print(
        f"{summary['peers']} peers in {summary['wall_s']:.2f} s "
        f"({summary['peers_per_s']:.1f} verified peers/s); peak RSS of peer processes "
        f"{rss['workers_total'] / 2**20:.0f} MiB ({rss['per_peer'] / 2**20:.3f} MiB per peer)"
        f"{server}"
    )
    note = summary["target"].get("note")
    if note:
        console.print(f"target: {note}")


# ---------------------------------------------------------------------- files


def write_reports(folder: Path, summary: Mapping[str, Any], verdict: Verdict) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "summary": folder / "summary.json",
        "peers": folder / "peers.csv",
        "junit": folder / "junit.xml",
        "html": folder / "report.html",
    }
    paths["summary"].write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    write_peers_csv(paths["peers"], verdict.peers)
    write_junit_report(paths["junit"], summary, verdict)
    write_html(paths["html"], summary, verdict)
    return paths


_CSV_COLUMNS = (
    "index", "worker", "peer_id", "url", "outcome", "failure_kind", "failure_detail",
    "next_selected", "rounds", "round", "room_id", "role", "waited", "partner_peer_id",
    "join_to_matched_ms", "matched_to_ice_connected_ms", "matched_to_verified_ms", "rtt_ms",
    "candidates_sent", "candidates_received", "media", "media_frames_sent", "media_frames_ok",
    "pressed_next", "ended_by", "local_failure", "local_detail",
    "local_candidate_types", "selected_local_type", "selected_remote_type",
    "own_end", "partner_left_reason", "relays_sent", "relays_received",
)  # fmt: skip


def _round_row(rnd: RoundRecord | None) -> list[object]:
    if rnd is None:
        return [""] * (len(_CSV_COLUMNS) - 9)

    def r(v: float | None) -> object:
        return "" if v is None else round(v, 2)

    return [
        rnd.number, rnd.room_id or "", rnd.role or "", rnd.waited, rnd.hello_peer or "",
        r(_ms(rnd.t_join, rnd.t_matched)), r(_ms(rnd.t_matched, rnd.t_ice_connected)),
        r(_ms(rnd.t_matched, rnd.t_verified)), r(rnd.rtt_ms),
        rnd.candidates_sent, rnd.candidates_received, rnd.media, rnd.media_frames_sent,
        rnd.media_frames_ok, rnd.pressed_next, rnd.ended_by or "", rnd.failure or "",
        rnd.detail or "", " ".join(rnd.local_candidate_types), rnd.selected_local_type or "",
        rnd.selected_remote_type or "", rnd.own_end or "", rnd.partner_left_reason or "",
        len(rnd.relays_sent), len(rnd.relays_received),
    ]  # fmt: skip


def write_peers_csv(path: Path, records: Sequence[PeerRecord]) -> None:
    """One row per peer and round (a peer that pressed next has two rows)."""
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(_CSV_COLUMNS)
        for rec in records:
            head = [
                rec.index, rec.worker, rec.peer_id or "", rec.url, rec.outcome or "",
                rec.failure_kind or "", rec.failure_detail or "", rec.next_selected,
                len(rec.rounds),
            ]  # fmt: skip
            rounds: list[RoundRecord | None] = list(rec.rounds) or [None]
            for rnd in rounds:
                out.writerow(head + _round_row(rnd))


def write_junit_report(path: Path, summary: Mapping[str, Any], verdict: Verdict) -> None:
    """One case per room (pair), per unpaired peer, and per run-level check."""
    cases: list[Case] = []
    for room in verdict.rooms.values():
        members = [rec for rec, _ in room.members]
        name = f"room {room.room_id}: " + " + ".join(m.peer_id or f"#{m.index}" for m in members)
        labels = [pair_label(rnd) for _, rnd in room.members if pair_label(rnd)]
        if labels:
            name += f" [{', '.join(labels)}]"
        times = [
            rnd.t_end - rnd.t_matched for _, rnd in room.members if rnd.t_end and rnd.t_matched
        ]
        failure = None
        if not room.verified:
            details = sorted(
                {f"{m.failure_kind}: {m.failure_detail}" for m in members if m.failure_kind}
            )
            failure = "; ".join(details) or "not verified"
        cases.append(
            Case(
                name=name,
                classname="drift.simulate.pair",
                time_s=max(times, default=0.0),
                failure=failure,
                failure_type=room.failure if failure else None,
            )
        )
    for rec in verdict.peers:
        if any(rnd.room_id for rnd in rec.rounds):
            continue
        name = f"peer #{rec.index} {rec.peer_id or ''}".strip()
        if rec.outcome == Outcome.WAITING:
            cases.append(
                Case(name, "drift.simulate.peer", skipped="left waiting: nobody to pair with")
            )
        elif rec.outcome == Outcome.FAILED:
            cases.append(
                Case(
                    name,
                    "drift.simulate.peer",
                    failure=f"{rec.failure_kind}: {rec.failure_detail}",
                    failure_type=rec.failure_kind,
                )
            )
    for item in verdict.run_failures:
        cases.append(Case(item, "drift.simulate.run", failure=item, failure_type="run-check"))
    if "network" in summary:  # --network: one case per expectation of the profile
        from drift.netlab.report import network_cases

        cases += network_cases(summary)
    props = {
        "peers": summary["peers"],
        "verdict": summary["verdict"],
        "target": ", ".join(summary["target"].get("urls", [])),
    }
    write_junit(path, "drift simulate", cases, props, wall_s=summary["wall_s"])


def timeline(
    records: Sequence[PeerRecord], points: int = 120
) -> dict[str, list[tuple[float, float]]]:
    """Peer states over time (seconds since the first peer started), for a stacked chart."""
    if not records:
        return {s: [] for s in _TIMELINE_STATES}
    t0 = min(r.t_start for r in records)
    t1 = max((r.t_done or r.t_start) for r in records)
    span = max(t1 - t0, 1e-3)
    grid = [t0 + span * i / (points - 1) for i in range(points)]
    series: dict[str, list[tuple[float, float]]] = {s: [] for s in _TIMELINE_STATES}
    intervals: list[tuple[str, float, float]] = []
    for rec in records:
        end = rec.t_done or t1
        for rnd in rec.rounds:
            matched = rnd.t_matched or rnd.t_end or end
            intervals.append(("waiting", rnd.t_join, matched))
            if rnd.t_matched is not None:
                verified = rnd.t_verified if rnd.verified and rnd.t_verified else rnd.t_end or end
                intervals.append(("negotiating", rnd.t_matched, verified))
                if rnd.verified and rnd.t_verified:
                    intervals.append(("verified", rnd.t_verified, rnd.t_end or end))
        final = "failed" if rec.outcome == Outcome.FAILED else "done"
        intervals.append((final, end, t1 + 1.0))
    # A state's count at t is how many of its intervals began at or before t
    # minus how many ended by then: two sorted lists and a bisection per grid
    # point, rather than every interval at every point (0.7 s at 10,000 peers).
    starts: dict[str, list[float]] = {s: [] for s in _TIMELINE_STATES}
    ends: dict[str, list[float]] = {s: [] for s in _TIMELINE_STATES}
    for state, a, b in intervals:
        if a < b:
            starts[state].append(a)
            ends[state].append(b)
    for state in _TIMELINE_STATES:
        begun, over = sorted(starts[state]), sorted(ends[state])
        for t in grid:
            count = bisect.bisect_right(begun, t) - bisect.bisect_right(over, t)
            series[state].append((t - t0, float(count)))
    return series


def write_html(path: Path, summary: Mapping[str, Any], verdict: Verdict) -> None:
    samples = latency_samples(verdict.peers)
    lat_rows = []
    for key, title in LATENCIES:
        s = summary["latency_ms"][key]
        lat_rows.append(
            [title, s["count"], *(round(s[k], 1) for k in ("p50", "p95", "p99", "max"))]
        )
    counts_rows: list[list[object]] = [[k, v] for k, v in summary["outcomes"].items()]
    counts_rows += [[f"failed: {k}", v] for k, v in summary["failures"].items()]
    counts_rows += [[f"run check failed: {item}", ""] for item in summary["run_failures"]]
    sections = [
        Section(
            "Outcomes",
            table_html(["outcome / failure kind", "peers"], counts_rows)
            + (
                charts.bar_chart(
                    "Failure kinds",
                    {k.value: summary["failures"].get(k.value, 0) for k in Failure},
                    y_label="peers",
                )
                if summary["failures"]
                else ""
            ),
        ),
        Section(
            "Latency (ms)",
            table_html(["", "count", "p50", "p95", "p99", "max"], lat_rows)
            + charts.cdf_chart(
                "Latency CDF",
                {title: samples[key] for key, title in LATENCIES[:3]},
                x_label="ms",
            )
            + "".join(
                charts.histogram(title, samples[key], x_label="ms") for key, title in LATENCIES
            ),
        ),
        Section(
            "Timeline of peer states",
            charts.stacked_area_chart(
                "Peers by state", timeline(verdict.peers), x_label="seconds", y_label="peers"
            ),
        ),
    ]
    if "network" in summary:  # --network: the group × group matrix right after outcomes
        from drift.netlab.report import network_sections

        sections[1:1] = network_sections(summary)
    cands = summary["candidate_pairs"]
    if cands["pairs"] or cands["unknown"]:
        rows: list[list[object]] = [[f"pairs {k}", v] for k, v in cands["pairs"].items()]
        rows += [[f"local {k}", v] for k, v in cands["local_types"].items()]
        rows += [["unknown pair", cands["unknown"]]] if cands["unknown"] else []
        rows.append(
            ["rooms relayed on both sides", f"{cands['relayed_rooms']} / {summary['rooms']}"]
        )
        per_room = [
            [
                room.room_id,
                *(
                    f"{rec.peer_id or rec.index}: {pair_label(rnd) or '-'}"
                    for rec, rnd in room.members
                ),
            ]
            for room in list(verdict.rooms.values())[:200]
        ]
        per_room = [row + [""] * (3 - len(row)) for row in per_room]
        sections.append(
            Section(
                f"ICE candidate pairs (policy {summary['ice_policy']})",
                table_html(["selected (local/remote)", "peers"], rows)
                + table_html(["room (first 200)", "side", "side"], per_room),
            )
        )
    if summary.get("hints"):
        hints = "".join(f"<p>{html.escape(h)}</p>" for h in summary["hints"])
        sections.insert(1, Section("Likely cause", hints))
    failing = [r for r in verdict.peers if r.outcome == Outcome.FAILED][:100]
    if failing:
        sections.append(
            Section(
                f"Failed peers (first {len(failing)})",
                table_html(
                    ["#", "peer", "kind", "detail"],
                    [[r.index, r.peer_id or "", r.failure_kind, r.failure_detail] for r in failing],
                ),
            )
        )
    sections.append(
        Section(
            "Settings",
            table_html(
                ["setting", "value"],
                [[k, v] for k, v in {**summary["settings"], **summary["target"]}.items()],
            ),
        )
    )
    top = {
        "peers": summary["peers"],
        "pairs verified": f"{summary['verified_pairs']} / {summary['rooms']}",
        "waiting (odd one out)": summary["outcomes"].get("waiting", 0),
        "failed": summary["outcomes"].get("failed", 0),
        "wall time (s)": summary["wall_s"],
        "verified peers/s": summary["peers_per_s"],
        "peak RSS per peer (MiB)": round(summary["peak_rss_bytes"]["per_peer"] / 2**20, 3),
    }
    write_page(
        path,
        "drift simulate",
        sections=sections,
        summary=top,
        verdict=summary["verdict"],
        subtitle=summary["target"].get("note") or ", ".join(summary["target"].get("urls", [])),
    )

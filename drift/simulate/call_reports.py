"""The synthetic peers' call reports, and the run's check of what the server made of them.

Each peer reports every call attempt it can put an outcome on (docs/protocol.md,
``call-report``): connected, or failed at the ICE, DTLS, data-channel or media
layer. Rounds that ended before that (no answer, the partner gone first, a
signaling failure) are not call outcomes and are not reported.

At the end of the run the server's figures must equal the sum of the reports
the peers sent: ``calls`` of ``/stats`` after the run minus before it, on every
target, against :class:`~drift.core.call_report.CallStats` fed with the sent
reports. Both sides bucket the same numbers with the same bounds, so counts
and histogram buckets must agree exactly; a server that loses, doubles or
misfiles a report fails the run (``call-report-mismatch``). A target that does
not announce ``call-report`` in ``welcome`` is not checked, and the summary
says so. The check assumes nobody else reports to the targets during the run.
"""

from __future__ import annotations

import asyncio
import json
import math
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from msgspec import UNSET

from drift.client import urls as url_tools
from drift.client.signaling import SignalingClient
from drift.core import protocol as p
from drift.core.call_report import CallStats, merge_snapshots
from drift.errors import DriftError
from drift.simulate.records import Failure, PeerRecord, RoundRecord

#: Failures that name the layer a call attempt stopped at.
LAYER_OF: Final[dict[str, p.FailureLayer]] = {
    Failure.ICE_FAILED.value: "ice",
    Failure.DTLS_FAILED.value: "dtls",
    Failure.DATACHANNEL_FAILED.value: "datachannel",
    Failure.MEDIA_FAILED.value: "media",
}
_CANDIDATE_TYPES: Final[dict[str | None, p.CandidateType]] = {
    "host": "host",
    "srflx": "srflx",
    "prflx": "prflx",
    "relay": "relay",
}
#: seconds to read a target's /stats
STATS_TIMEOUT: Final = 5.0
_READ_ERRORS: Final = (OSError, ValueError, TimeoutError, aiohttp.ClientError)
#: how long a cluster's summed figures may lag behind (its nodes publish them
#: every heartbeat: node TTL / 5, 1 s by default), and how often to look again
SETTLE_S: Final = 15.0
SETTLE_POLL_S: Final = 0.25


def relay_protocol(servers: Sequence[p.IceServer]) -> p.RelayProtocol | None:
    """How aiortc reaches the TURN server of ``servers``: the one (first usable) it uses."""
    from aiortc import RTCIceServer
    from aiortc.rtcicetransport import connection_kwargs

    ice = [
        RTCIceServer(
            urls=list(s.urls),
            username=s.username if isinstance(s.username, str) else None,
            credential=s.credential if isinstance(s.credential, str) else None,
        )
        for s in servers
    ]
    kwargs = connection_kwargs(ice)
    if "turn_server" not in kwargs:
        return None
    if kwargs.get("turn_ssl"):
        return "tls"
    return "tcp" if kwargs.get("turn_transport") == "tcp" else "udp"


def report_for(rnd: RoundRecord, relay: p.RelayProtocol | None) -> p.CallReport | None:
    """This round's report, or None when the round is no call outcome (see the module)."""
    if rnd.room_id is None or rnd.t_matched is None:
        return None
    layer = LAYER_OF.get(rnd.failure or "")
    if layer is None and rnd.failure == Failure.TIMEOUT.value and rnd.t_answer is not None:
        layer = _stalled_layer(rnd)
    if layer is not None:
        return p.CallReport(roomId=rnd.room_id, outcome="failed", layer=layer)
    local = _CANDIDATE_TYPES.get(rnd.selected_local_type)
    remote = _CANDIDATE_TYPES.get(rnd.selected_remote_type)
    if rnd.t_connected is None or local is None or remote is None:
        return None
    if local == "relay" and relay is None:
        return None  # a relay pair through a TURN server we cannot name: not reportable
    connect_ms = round((rnd.t_connected - rnd.t_matched) * 1000)
    return p.CallReport(
        roomId=rnd.room_id,
        outcome="connected",
        connectMs=min(p.MAX_CONNECT_MS, max(0, connect_ms)),
        localCandidate=local,
        remoteCandidate=remote,
        relayProtocol=relay if local == "relay" and relay is not None else UNSET,
        rttMs=UNSET if rnd.rtt_ms is None else min(p.MAX_RTT_MS, max(0.0, rnd.rtt_ms)),
    )


def _stalled_layer(rnd: RoundRecord) -> p.FailureLayer:
    """The layer a call that timed out after the answer stopped at (as verify words it)."""
    if rnd.t_ice_connected is None:
        return "ice"
    if rnd.t_connected is None:
        return "dtls"
    return "datachannel"


def expected(records: Iterable[PeerRecord]) -> CallStats:
    """What the server must have counted: every report the peers sent."""
    stats = CallStats()
    for rec in records:
        for rnd in rec.rounds:
            if rnd.call_report is not None:
                stats.add(rnd.call_report)
    return stats


def delta(after: Mapping[str, Any], before: Mapping[str, Any]) -> dict[str, Any]:
    """``after - before`` of two ``calls`` snapshots, key by key (histograms bucket by bucket)."""
    out: dict[str, Any] = {}
    for key, value in after.items():
        old = before.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float | dict | list):
            out[key] = value
        elif isinstance(value, dict):
            out[key] = delta(value, old if isinstance(old, dict) else {})
        elif isinstance(value, list):
            prior = old if isinstance(old, list) and len(old) == len(value) else [0] * len(value)
            out[key] = value if key == "le" else [a - b for a, b in zip(value, prior, strict=True)]
        else:
            out[key] = value - (old if isinstance(old, int | float) else 0)
    return out


def mismatches(server: Mapping[str, Any], peers: Mapping[str, Any], path: str = "") -> list[str]:
    """Where two ``calls`` snapshots differ ("path: server N, peers M"); sums to rounding."""
    out: list[str] = []
    for key in sorted(set(server) | set(peers)):
        here = f"{path}.{key}" if path else key
        a, b = server.get(key), peers.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += mismatches(a, b, here)
        elif isinstance(a, float) or isinstance(b, float):
            if not (
                isinstance(a, int | float)
                and isinstance(b, int | float)
                and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
            ):
                out.append(f"{here}: server {a}, peers {b}")
        elif a != b:
            out.append(f"{here}: server {a}, peers {b}")
    return out


@dataclass(slots=True)
class CallReportCheck:
    """Before/after readings of the targets' ``calls``; :meth:`finish` gives run failures.

    A target whose ``/stats`` has ``cluster`` figures (``--redis``, or
    ``--workers``: another node or worker may answer, and peers' reports land
    on whichever node holds their socket) is read through ``cluster.calls``,
    the sum over the live nodes; all such targets are taken to be nodes of one
    cluster, read once. That sum is refreshed by each node's heartbeat, so the
    after-reading is retried until it matches or :data:`SETTLE_S` passes.
    """

    #: source ("cluster" or an HTTP base) -> (HTTP base to read, ``calls`` before the run)
    before: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    #: why the check does not run (a target without the feature), else ""
    skipped: str = ""
    #: what the run checked, for the summary
    outcome: dict[str, Any] = field(default_factory=dict)

    @classmethod
    async def start(cls, urls: Sequence[str], timeout: float = STATS_TIMEOUT) -> CallReportCheck:
        check = cls()
        for url in urls:
            base = url_tools.http_base(url)
            try:
                client = await SignalingClient.connect(url, timeout=timeout)
                try:
                    announced = p.FEATURE_CALL_REPORT in client.features
                finally:
                    await client.close()
                if announced:
                    source, calls = await read_calls(base, timeout)
                    check.before.setdefault(source, (base, calls))
            except (*_READ_ERRORS, DriftError) as exc:
                check.skipped = f"cannot read {base}/stats ({exc})"
            else:
                if not announced:
                    check.skipped = f"{url} does not announce call-report in welcome"
            if check.skipped:
                check.before.clear()
                return check
        return check

    async def finish(self, records: Sequence[PeerRecord]) -> list[str]:
        """Compare the targets' change with the peers' reports; run failures (or none)."""
        if self.skipped:
            self.outcome = {"checked": False, "note": f"call-report check skipped: {self.skipped}"}
            return []
        sent = expected(records)
        peers = sent.snapshot()
        lagging = "cluster" in self.before
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (SETTLE_S if lagging else 0.0)
        while True:
            try:
                changes = [
                    delta((await read_calls(base))[1], old) for base, old in self.before.values()
                ]
            except _READ_ERRORS as exc:
                self.outcome = {"checked": False, "note": f"call-report check failed: {exc}"}
                return [f"call-report-check: cannot read /stats after the run ({exc})"]
            # merged even when there is one target: a server without figures reads as zeros
            problems = mismatches(merge_snapshots(changes), peers)
            if not problems or loop.time() >= deadline:
                break
            await asyncio.sleep(SETTLE_POLL_S)  # the next heartbeat publishes the sum
        reports = sent.connected + sum(sent.failed.values())
        self.outcome = {"checked": True, "reports": reports, "mismatches": problems}
        if not problems:
            return []
        more = f"; +{len(problems) - 4} more" if len(problems) > 4 else ""
        return [
            "call-report-mismatch: the server's call figures differ from the peers' reports: "
            + "; ".join(problems[:4])
            + more
        ]


async def read_calls(base: str, timeout: float = STATS_TIMEOUT) -> tuple[str, dict[str, Any]]:
    """Where a target's call figures come from ("cluster" or ``base``), and the figures."""

    def fetch() -> tuple[str, dict[str, Any]]:
        with urllib.request.urlopen(base + "/stats", timeout=timeout) as resp:
            value = json.loads(resp.read())
        if not isinstance(value, dict):
            return base, {}
        cluster = value.get("cluster")
        if isinstance(cluster, dict):
            calls = cluster.get("calls")
            return "cluster", calls if isinstance(calls, dict) else {}
        calls = value.get("calls")
        return base, calls if isinstance(calls, dict) else {}

    return await asyncio.to_thread(fetch)

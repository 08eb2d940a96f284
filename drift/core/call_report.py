"""Call reports: which reports the core accepts, and the counters they add up to. Pure.

A client reports each call attempt once (``call-report``, docs/protocol.md).
The frame's own fields are checked by the one decode step
(:func:`drift.core.protocol.decode`); what needs memory is here: a report is
accepted only for the room the peer is in or was in last, and only once per
side and room. Accepted reports only add to :class:`CallStats`, plain counters
and fixed-bucket histograms that ``/stats`` and ``/metrics`` read at scrape
time and that the Redis backend sums over nodes (:func:`merge_snapshots`).
Nothing that identifies a person is kept: no address, no candidate, no SDP.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, get_args

from drift.core import protocol as p

#: Upper bounds of the histogram buckets (a last, open bucket follows each).
#: Clients that cross-check the server (``drift simulate``) bucket with these.
CONNECT_MS_BUCKETS: Final = (100, 250, 500, 1000, 2000, 3000, 5000, 10_000, 20_000, 30_000)
RTT_MS_BUCKETS: Final = (10, 25, 50, 100, 200, 400, 800, 1600)
LOSS_PCT_BUCKETS: Final = (0.1, 0.5, 1, 2, 5, 10, 20, 50)
BITRATE_KBPS_BUCKETS: Final = (50, 150, 300, 600, 1200, 2500, 5000, 10_000)

LAYERS: Final[tuple[str, ...]] = get_args(p.FailureLayer)
RELAY_PROTOCOLS: Final[tuple[str, ...]] = get_args(p.RelayProtocol)


def bucket_index(bounds: tuple[float, ...], value: float) -> int:
    """The bucket ``value`` falls in: the first bound >= value (Prometheus ``le``)."""
    return bisect.bisect_left(bounds, value)


@dataclass(slots=True)
class Histogram:
    """Counts per bucket (not cumulative; the last is above every bound) and their sum."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bucket_index(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def snapshot(self) -> dict[str, object]:
        return {"le": list(self.bounds), "counts": list(self.counts), "sum": self.total}


@dataclass(slots=True)
class CallStats:
    """Totals of accepted reports: one report per side, so a call counts up to twice."""

    connected: int = 0
    failed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LAYERS, 0))
    #: connected reports whose local candidate was a TURN relay, by relay transport
    relayed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RELAY_PROTOCOLS, 0))
    #: connected reports by selected pair, "local/remote" candidate types
    pairs: dict[str, int] = field(default_factory=dict)
    connect_ms: Histogram = field(default_factory=lambda: Histogram(CONNECT_MS_BUCKETS))
    rtt_ms: Histogram = field(default_factory=lambda: Histogram(RTT_MS_BUCKETS))
    loss_pct: Histogram = field(default_factory=lambda: Histogram(LOSS_PCT_BUCKETS))
    bitrate_kbps: Histogram = field(default_factory=lambda: Histogram(BITRATE_KBPS_BUCKETS))

    def add(self, msg: p.CallReport) -> None:
        if msg.outcome == "failed":
            assert isinstance(msg.layer, str)  # call_report_problem guarantees it
            self.failed[msg.layer] += 1
            return
        assert isinstance(msg.connectMs, int)
        self.connected += 1
        self.connect_ms.observe(msg.connectMs)
        pair = f"{msg.localCandidate}/{msg.remoteCandidate}"
        self.pairs[pair] = self.pairs.get(pair, 0) + 1
        if isinstance(msg.relayProtocol, str):
            self.relayed[msg.relayProtocol] += 1
        for value, histogram in (
            (msg.rttMs, self.rtt_ms),
            (msg.lossPct, self.loss_pct),
            (msg.bitrateKbps, self.bitrate_kbps),
        ):
            if isinstance(value, float | int):
                histogram.observe(value)

    def snapshot(self) -> dict[str, object]:
        """A JSON-ready copy: what ``/stats`` shows and a node publishes to the cluster."""
        return {
            "connected": self.connected,
            "failed": dict(self.failed),
            "relayed": dict(self.relayed),
            "pairs": dict(sorted(self.pairs.items())),
            "connect_ms": self.connect_ms.snapshot(),
            "rtt_ms": self.rtt_ms.snapshot(),
            "loss_pct": self.loss_pct.snapshot(),
            "bitrate_kbps": self.bitrate_kbps.snapshot(),
        }


def merge_snapshots(snapshots: Iterable[Mapping[str, object]]) -> dict[str, object]:
    """Sum snapshots of several nodes; a malformed or missing part counts as zero.

    The figures come from other nodes through Redis, so a node of an older
    version (no ``calls``) or a garbled value must not break the sum.
    """
    total = CallStats()
    for snap in snapshots:
        connected = snap.get("connected")
        if isinstance(connected, int):
            total.connected += connected
        for key, into in (
            ("failed", total.failed),
            ("relayed", total.relayed),
            ("pairs", total.pairs),
        ):
            part = snap.get(key)
            if isinstance(part, dict):
                for name, n in part.items():
                    if isinstance(name, str) and isinstance(n, int):
                        into[name] = into.get(name, 0) + n
        for key, histogram in (
            ("connect_ms", total.connect_ms),
            ("rtt_ms", total.rtt_ms),
            ("loss_pct", total.loss_pct),
            ("bitrate_kbps", total.bitrate_kbps),
        ):
            _merge_histogram(histogram, snap.get(key))
    return total.snapshot()


def _merge_histogram(into: Histogram, part: object) -> None:
    if not isinstance(part, dict):
        return
    counts, le, total = part.get("counts"), part.get("le"), part.get("sum")
    if le != list(into.bounds) or not isinstance(counts, list) or len(counts) != len(into.counts):
        return  # other buckets (another version): not summable, so not summed
    if not all(isinstance(n, int) for n in counts) or not isinstance(total, float | int):
        return
    into.counts = [a + b for a, b in zip(into.counts, counts, strict=True)]
    into.total += total


class CallLedger:
    """Which room each peer may still report on, and the totals of what was reported.

    One entry per connected peer: the id of its current room, or of the last
    one once it ended, until it reports (then the entry is marked) or goes away.
    """

    __slots__ = ("_rooms", "stats")

    def __init__(self) -> None:
        self.stats = CallStats()
        #: peer id -> (room id it may report on, whether it already did)
        self._rooms: dict[str, tuple[str, bool]] = {}

    def matched(self, peer_id: str, room_id: str) -> None:
        self._rooms[peer_id] = (room_id, False)

    def forget(self, peer_id: str) -> None:
        self._rooms.pop(peer_id, None)

    def accept(self, peer_id: str, msg: p.CallReport, *, count: bool = True) -> str | None:
        """Take ``peer_id``'s report; the reason it is out of state, or None when taken.

        ``count=False`` takes it without counting (the test-only fault that
        proves ``drift simulate`` notices a server that loses reports).
        """
        entry = self._rooms.get(peer_id)
        if entry is None:
            return "call-report without a room to report on"
        room_id, reported = entry
        if msg.roomId != room_id:
            return "call-report for a room that is not this peer's current or last one"
        if reported:
            return "call-report sent twice for one room"
        self._rooms[peer_id] = (room_id, True)
        if count:
            self.stats.add(msg)
        return None

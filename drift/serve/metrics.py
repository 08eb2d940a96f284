"""Prometheus metrics for one server, read from the same figures as ``/stats``.

Gauges and counters are collected at scrape time from the core's own counters
(no second bookkeeping that could disagree with ``/stats``); only the wait-time
histogram is fed per match. One registry per server, so several servers in one
test process do not collide.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from drift.core.call_report import CallStats, merge_snapshots
from drift.core.lobby import Lobby

if TYPE_CHECKING:
    from drift.serve.http import SocketGate

# A *_created series per counter and histogram doubles the series count for a
# start time that process_start_time_seconds already gives.
disable_created_metrics()  # type: ignore[no-untyped-call]  # (the library leaves it untyped)

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Current resident set size of this process (not the peak)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _LobbyCollector(Collector):
    def __init__(self, lobby: Callable[[], Lobby]) -> None:
        self._lobby = lobby

    def collect(self) -> Iterator[Metric]:
        lobby = self._lobby()
        c = lobby.counters
        yield GaugeMetricFamily(
            "drift_connections", "Open WebSocket connections", lobby.connections
        )
        yield GaugeMetricFamily("drift_waiting", "Peers waiting in the queue", lobby.waiting)
        yield GaugeMetricFamily("drift_rooms", "Rooms with two matched peers", len(lobby.rooms))
        yield CounterMetricFamily("drift_matches", "Rooms created", c.matches)
        messages = CounterMetricFamily(
            "drift_messages", "Valid client messages by type", labels=["type"]
        )
        for kind, n in sorted(c.messages.items()):
            messages.add_metric([kind], n)
        yield messages
        errors = CounterMetricFamily("drift_errors", "Error frames sent by code", labels=["code"])
        for code, n in sorted(c.errors.items()):
            errors.add_metric([code], n)
        yield errors
        closes = CounterMetricFamily(
            "drift_closes", "Server-initiated closes by code", labels=["code"]
        )
        for close_code, n in sorted(c.closes.items()):
            closes.add_metric([str(close_code)], n)
        yield closes
        yield from call_metrics(lobby.calls.stats)


def _histogram(
    name: str, doc: str, snapshot: Mapping[str, Any], scale: float = 1.0
) -> HistogramMetricFamily:
    """A fixed-bucket histogram of the core; ``scale`` converts ms to seconds."""
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip([*snapshot["le"], float("inf")], snapshot["counts"], strict=True):
        running += n
        buckets.append((str(float(bound) * scale) if bound != float("inf") else "+Inf", running))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=snapshot["sum"] * scale)


def call_metrics(stats: CallStats, prefix: str = "drift_call") -> Iterator[Metric]:
    """The call-report figures (docs/protocol.md, ``call-report``): one report per side."""
    yield from _call_families(stats.snapshot(), prefix)


def _call_families(snap: Mapping[str, Any], prefix: str) -> Iterator[Metric]:
    reports = CounterMetricFamily(
        f"{prefix}_reports",
        "Call reports by outcome and failure layer (one per side of a call)",
        labels=["outcome", "layer"],
    )
    reports.add_metric(["connected", ""], snap["connected"])
    for layer, n in snap["failed"].items():
        reports.add_metric(["failed", layer], n)
    yield reports
    relayed = CounterMetricFamily(
        f"{prefix}_relayed",
        "Connected call reports whose selected pair used a TURN relay, by relay transport",
        labels=["transport"],
    )
    for transport, n in snap["relayed"].items():
        relayed.add_metric([transport], n)
    yield relayed
    pairs = CounterMetricFamily(
        f"{prefix}_candidate_pairs",
        "Connected call reports by selected candidate pair types",
        labels=["local", "remote"],
    )
    for pair, n in snap["pairs"].items():
        local, _, remote = pair.partition("/")
        pairs.add_metric([local, remote], n)
    yield pairs
    yield _histogram(
        f"{prefix}_connect_seconds",
        "Seconds from matched to connected, as each side measured it",
        snap["connect_ms"],
        scale=0.001,
    )
    yield _histogram(
        f"{prefix}_rtt_seconds",
        "Round-trip time reported by connected calls",
        snap["rtt_ms"],
        scale=0.001,
    )
    yield _histogram(
        f"{prefix}_packet_loss_percent", "Packet loss reported by connected calls", snap["loss_pct"]
    )
    yield _histogram(
        f"{prefix}_bitrate_kbps",
        "Receive bitrate reported by connected calls",
        snap["bitrate_kbps"],
    )


class _ClusterCollector(Collector):
    """Cluster-wide figures of the Redis backend, as of its last heartbeat."""

    def __init__(self, cluster: Callable[[], Mapping[str, Any] | None]) -> None:
        self._cluster = cluster

    def collect(self) -> Iterator[Metric]:
        cluster = self._cluster()
        if not cluster:
            return
        info = GaugeMetricFamily(
            "drift_node_info", "This node's id in the cluster", labels=["node"]
        )
        info.add_metric([str(cluster.get("node", ""))], 1)
        yield info
        for key, name, doc in (
            ("nodes", "drift_cluster_nodes", "Live nodes sharing the queue"),
            ("queue", "drift_cluster_queue_length", "Peers waiting in the shared queue (Redis)"),
            ("connections", "drift_cluster_connections", "Open WebSockets on all nodes"),
            ("rooms", "drift_cluster_rooms", "Rooms on all nodes"),
        ):
            yield GaugeMetricFamily(name, doc, float(cluster.get(key, 0)))
        # a counter: exposed as drift_cluster_matches_total
        yield CounterMetricFamily(
            "drift_cluster_matches", "Rooms created by all nodes", cluster.get("matches_total", 0)
        )
        calls = cluster.get("calls")
        if isinstance(calls, Mapping):
            # already summed by the backend; merged once more only to fill in defaults
            yield from _call_families(merge_snapshots([calls]), "drift_cluster_call")


class _SocketCollector(Collector):
    """Sockets that have not finished their HTTP request (the upgrade) yet."""

    def __init__(self, gate: SocketGate) -> None:
        self._gate = gate

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "drift_http_pending_sockets",
            "Sockets that have not finished their first HTTP request yet",
            self._gate.pending,
        )
        dropped = CounterMetricFamily(
            "drift_http_sockets_dropped",
            "Sockets dropped before their first request: over the cap, or past the deadline",
            labels=["reason"],
        )
        for reason, n in sorted(self._gate.dropped.items()):
            dropped.add_metric([reason], n)
        yield dropped


class Metrics:
    def __init__(
        self,
        lobby: Callable[[], Lobby],
        cluster: Callable[[], Mapping[str, Any] | None] | None = None,
        gate: SocketGate | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_LobbyCollector(lobby))
        if gate is not None:
            self.registry.register(_SocketCollector(gate))
        if cluster is not None:
            self.registry.register(_ClusterCollector(cluster))
        ProcessCollector(registry=self.registry)
        self.wait = Histogram(
            "drift_match_wait_seconds",
            # Per peer, not per room: the waiter's figure is the queue time a
            # user feels; the newcomer's (~0) shows how often nobody waits.
            "Seconds from join (or next) to matched, one observation per matched peer",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition the scraper's Accept header asks for, and its content type,
        both chosen by prometheus_client (text 0.0.4 without a header)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

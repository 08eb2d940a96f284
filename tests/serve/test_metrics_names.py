"""/metrics follows Prometheus naming and the library's own exposition."""

from __future__ import annotations

import aiohttp
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS
from prometheus_client.parser import text_string_to_metric_families

from drift.client.urls import ws_url
from drift.serve.metrics import _ClusterCollector
from tests.conftest import MakeServer
from tests.support.wsclient import pair


async def test_exposition_content_type_and_names_are_the_librarys(
    make_server: MakeServer,
) -> None:
    server = await make_server(max_connections_per_ip=0)
    offerer, answerer = await pair(ws_url(server.url))
    async with aiohttp.ClientSession() as session:
        async with session.get(server.url + "/metrics") as resp:
            assert resp.headers["Content-Type"] == CONTENT_TYPE_PLAIN_0_0_4
            text = await resp.text()
        headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
        async with session.get(server.url + "/metrics", headers=headers) as resp:
            assert resp.headers["Content-Type"].split(";")[0] == OPENMETRICS.split(";")[0]
            assert (await resp.text()).rstrip().endswith("# EOF")
    await offerer.close()
    await answerer.close()
    samples = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert "drift_matches_total" in samples and "drift_match_wait_seconds_count" in samples
    # no *_created series, and the standard process metric instead of drift_rss_bytes
    assert [name for name in samples if name.endswith("_created")] == []
    assert "drift_rss_bytes" not in samples and "process_resident_memory_bytes" in samples


def test_cluster_matches_is_a_counter_with_total() -> None:
    registry = CollectorRegistry()
    registry.register(_ClusterCollector(lambda: {"node": "n1", "nodes": 2, "matches_total": 7}))
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    matches = families["drift_cluster_matches"]
    assert matches.type == "counter"
    assert [(s.name, s.value) for s in matches.samples] == [("drift_cluster_matches_total", 7.0)]

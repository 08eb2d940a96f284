"""docs/grafana/drift-dashboard.json only queries metrics a live server exports.

A dashboard whose query names a metric that was renamed (or never existed)
shows "No data" forever, which looks the same as "nothing happened": so every
metric name in every panel's query is checked against a real scrape of
``/metrics``, with the suffix its type allows (``_total`` for counters,
``_bucket``/``_sum``/``_count`` for histograms).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from drift.client import urls
from drift.serve.server import Server
from tests.conftest import MakeServer
from tests.support.wsclient import WsClient

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "drift-dashboard.json"
#: What the issue asks the dashboard to show, each by the title of a panel.
REQUIRED_PANELS = {
    "Connections",
    "Queue",
    "Wait for a partner",
    "Matches",
    "Call success rate",
    "Time to connect",
    "Relay share",
    "Error frames by code",
    "Close codes",
}
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}
_METRIC = re.compile(r"\b(?:drift|process)_[a-zA-Z0-9_]+")
_LABELS = re.compile(r"\{[^}]*\}")


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out += panel.get("panels", [])  # a collapsed row keeps its panels inside
    return out


def queried_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label matchers dropped first)."""
    return set(_METRIC.findall(_LABELS.sub("", expr)))


async def exported(server: Server) -> set[str]:
    async with aiohttp.ClientSession() as session, session.get(server.url + "/metrics") as resp:
        text = await resp.text()
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


async def some_traffic(server: Server) -> None:
    """A match, a call report, an error frame and a close, so every family has samples."""
    url = urls.ws_url(server.url)
    answerer = await WsClient.connect(url)
    await answerer.send({"type": "join"})
    await answerer.expect("waiting")
    offerer = await WsClient.connect(url)
    await offerer.send({"type": "join"})
    room = (await offerer.expect("matched"))["roomId"]
    await answerer.expect("matched")
    await offerer.send({"type": "call-report", "roomId": room, "outcome": "failed", "layer": "ice"})
    await offerer.send({"type": "nonsense"})
    await offerer.expect_error("unknown-type")
    await answerer.send_raw("x" * 70_000)  # over the frame limit: close 1009
    assert await answerer.expect_close() == 1009
    await offerer.close()
    await answerer.close()


def test_the_dashboard_is_grafana_json_with_the_panels_the_issue_names() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["schemaVersion"] >= 36
    titles = {panel["title"] for panel in panels(dashboard)}
    assert titles >= REQUIRED_PANELS, REQUIRED_PANELS - titles
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert queried_metrics(target["expr"]), (panel["title"], target["expr"])


async def test_every_query_names_a_metric_the_server_exports(make_server: MakeServer) -> None:
    server = await make_server()
    await some_traffic(server)
    names = await exported(server)
    dashboard = json.loads(DASHBOARD.read_text())
    queried: dict[str, set[str]] = {}
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            for name in queried_metrics(target["expr"]):
                queried.setdefault(name, set()).add(panel["title"])
    variables = dashboard["templating"]["list"]
    for variable in variables:
        definition = variable.get("definition", "")
        for name in queried_metrics(definition):
            queried.setdefault(name, set()).add(f"${variable['name']}")
    missing = {name: sorted(where) for name, where in queried.items() if name not in names}
    assert missing == {}, f"queried but not exported: {missing}"


def test_the_checker_would_catch_a_renamed_metric() -> None:
    assert queried_metrics('sum(rate(drift_call_report_total{outcome="x"}[5m]))') == {
        "drift_call_report_total"
    }
    assert queried_metrics('x{job=~"drift_fake_label"}') == set()

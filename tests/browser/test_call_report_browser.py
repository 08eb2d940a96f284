"""The browser client reports each call attempt (``call-report``), and the server counts it.

Two Chromium pages that connect report ``connected`` with their pair's types
and a quality sample, on both backends; a page whose ICE never connects
reports ``failed/ice`` once its timeout and one restart gave up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright

from drift.core.lobby import Fault
from drift.serve.server import Server
from tests.support.browser import T, Tab, Tabs, drift_server, launch, poll

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await launch(pw.chromium, fake_devices=True, fake_ui=True)
        yield b
        await b.close()


@pytest_asyncio.fixture(loop_scope="module")
async def tabs(browser: Browser) -> AsyncIterator[Tabs]:
    t = Tabs(browser)
    yield t
    try:
        for tab in t.tabs:
            if not tab.page.is_closed():
                assert tab.page_errors == []
                assert [e for e in tab.console_errors if not t.allow_console(e)] == []
    finally:
        await t.close()


def calls(server: Server) -> dict[str, Any]:
    value = server.stats()["calls"]
    assert isinstance(value, dict)
    return value


async def _calls(server: Server) -> dict[str, Any]:
    return calls(server)


async def _sent_reports(tab: Tab) -> list[dict[str, Any]]:
    return tab.frames("call-report", sent=True)


async def _sent_kinds(tab: Tab) -> list[str]:
    return [str(f["type"]) for f in tab.sent]


async def test_two_connected_pages_report_and_the_server_counts_them(
    tabs: Tabs, backend: dict[str, Any]
) -> None:
    async with drift_server(node_ttl=1.0, **backend) as server:
        first = await tabs.open(server.url)
        await first.wait_state("ready")
        await first.page.click("#start")
        await first.wait_state("waiting")
        second = await tabs.open(server.url)
        await second.wait_state("ready")
        await second.page.click("#start")
        await first.wait_state("connected")
        await second.wait_state("connected")
        await poll(
            lambda: _calls(server), lambda c: c["connected"] == 2, what="two connected reports"
        )
        room = first.frames("matched")[0]["roomId"]
        for tab in (first, second):
            # Playwright hands over the page's frames on its own schedule
            await poll(lambda t=tab: _sent_reports(t), bool, what="the page's call-report frame")
            (report,) = tab.frames("call-report", sent=True)
            assert report["roomId"] == room
            assert report["outcome"] == "connected"
            assert report["localCandidate"] == "host"  # loopback: no STUN, no TURN
            assert report["remoteCandidate"] in ("host", "prflx")
            assert 0 <= report["connectMs"] < T * 1000
            assert "relayProtocol" not in report
            # one quality sample came before the report (fake camera: real bitrate)
            assert report["bitrateKbps"] > 0 and 0 <= report["lossPct"] <= 100
        got = calls(server)
        assert sum(got["failed"].values()) == 0
        assert sum(got["pairs"].values()) == 2
        assert sum(got["connect_ms"]["counts"]) == 2
        assert sum(got["bitrate_kbps"]["counts"]) == 2
        assert server.lobby.counters.errors == {}  # both reports were taken
        text = server.metrics.render()[0].decode()
        assert 'drift_call_reports_total{layer="",outcome="connected"} 2.0' in text
        if server.backend is not None:

            async def cluster_sum() -> int:
                return int(server.stats()["cluster"]["calls"]["connected"])  # type: ignore[index]

            await poll(cluster_sum, lambda n: n == 2, what="cluster-wide sum")


async def test_a_page_whose_ice_gives_up_reports_an_ice_failure(tabs: Tabs) -> None:
    # The server swallows every ice-candidate frame, so ICE can never connect.
    async with drift_server(faults=frozenset({Fault.DROP_CANDIDATES})) as server:
        patient = await tabs.open(server.url + "/?iceTimeout=60")
        await patient.wait_state("ready")
        await patient.page.click("#start")
        await patient.wait_state("waiting")
        hasty = await tabs.open(server.url + "/?iceTimeout=1.5")
        await hasty.wait_state("ready")
        await hasty.page.click("#start")
        await hasty.wait_state("error", timeout=T)
        await poll(
            lambda: _sent_kinds(hasty),
            lambda kinds: {"call-report", "leave"} <= set(kinds),
            what="the page's call-report and leave frames",
        )
        (report,) = hasty.frames("call-report", sent=True)
        assert report == {
            "type": "call-report",
            "roomId": hasty.frames("matched")[0]["roomId"],
            "outcome": "failed",
            "layer": "ice",
        }
        # sent while the room was still the page's: before its leave
        kinds = [f["type"] for f in hasty.sent]
        assert kinds.index("call-report") < kinds.index("leave")
        await poll(lambda: _calls(server), lambda c: c["failed"]["ice"] == 1, what="ice failure")
        assert calls(server)["connected"] == 0
        await patient.wait_state("partner-left")
        assert patient.frames("call-report", sent=True) == []  # it never had an outcome

"""drift simulate against a correct server behind the fault proxy: every wire lie is named.

Real sockets, a real in-process ``drift serve``, the real proxy and real aiortc
peers. Each fault must fail the run with its own failure kind, shown in
summary.json, junit.xml and report.html; the clean pass-through must pass
twenty runs in a row.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from rich.console import Console

from drift.client.urls import endpoint, ws_url
from drift.exitcodes import ExitCode
from drift.harness.child import Child
from drift.proxy.faults import EXPECTED_KIND, WireFault
from drift.proxy.server import FaultProxy
from drift.serve.server import Server
from drift.simulate.run import Settings, SimulateResult, simulate_run

MakeServer = Callable[..., Awaitable[Server]]
Proxied = Callable[..., Awaitable[FaultProxy]]


@pytest.fixture
async def proxied(make_server: MakeServer) -> AsyncIterator[Proxied]:
    """A correct server on a free port, and a fault proxy in front of it (port 0, read back)."""
    proxies: list[FaultProxy] = []

    async def factory(fault: WireFault, delay: float = 1.0) -> FaultProxy:
        server = await make_server()
        proxy = FaultProxy(ws_url(server.url), fault, delay=delay)
        await proxy.start()
        proxies.append(proxy)
        return proxy

    yield factory
    for proxy in proxies:
        await proxy.stop()


async def simulate(url: str, folder: Path, *, peers: int, hold: float) -> SimulateResult:
    settings = Settings(
        peers=peers,
        urls=(url,),
        hold=hold,
        timeout=6.0,
        media_fraction=0.0,
        procs=1,
        live=False,
        report_dir=folder,
    )
    return await simulate_run(settings, Console(quiet=True))


# (fault, peers, hold, proxy delay): cross-room needs two rooms at once
CASES = [
    (WireFault.SWAP_ROLES, 2, 0.5, 1.0),
    (WireFault.DROP_RELAY, 2, 0.5, 1.0),
    (WireFault.DUPLICATE_RELAY, 2, 0.5, 1.0),
    (WireFault.TAMPER_FINGERPRINT, 2, 0.5, 1.0),
    (WireFault.FALSE_PARTNER_LEFT, 2, 3.0, 1.5),
    (WireFault.DELAY_MATCHED, 2, 0.5, 1.0),
    (WireFault.CROSS_ROOM, 6, 0.5, 1.0),
]


@pytest.mark.parametrize(("fault", "peers", "hold", "delay"), CASES, ids=[c[0] for c in CASES])
async def test_each_wire_fault_fails_with_its_own_kind(
    proxied: Proxied, tmp_path: Path, fault: WireFault, peers: int, hold: float, delay: float
) -> None:
    proxy = await proxied(fault, delay=delay)
    result = await simulate(proxy.url, tmp_path, peers=peers, hold=hold)
    kind = EXPECTED_KIND[fault]
    assert proxy.counters.get(fault.value, 0) >= 1, "the proxy never injected the fault"
    assert result.exit_code == ExitCode.CHECK_FAILED, result.summary
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["verdict"] == "fail"
    # its own kind, and only it: every side of every room the lie touched names it
    assert set(summary["failures"]) == {kind}, summary["failure_examples"]
    assert f'type="{kind}"' in (tmp_path / "junit.xml").read_text()
    assert kind in (tmp_path / "report.html").read_text()


async def test_a_false_partner_left_names_the_lie_and_the_broken_hold(
    proxied: Proxied, tmp_path: Path
) -> None:
    proxy = await proxied(WireFault.FALSE_PARTNER_LEFT, delay=1.5)
    result = await simulate(proxy.url, tmp_path, peers=2, hold=3.0)
    assert result.exit_code == ExitCode.CHECK_FAILED
    failures = result.summary["failures"]
    # the lied-to answerer: the lie; the offerer: its call was cut short (explained by the lie)
    assert failures == {"false-partner-left": 2}, result.summary["failure_examples"]
    detail = result.summary["failure_examples"]["false-partner-left"]
    assert "never sent leave" in detail and "timeout" not in detail


async def test_drift_proxy_the_command_tells_the_lie(
    make_server: MakeServer, tmp_path: Path
) -> None:
    """``drift proxy`` as a user runs it: a real process, its URL read from its output."""
    server = await make_server()
    argv = [sys.executable, "-m", "drift", "proxy", "--upstream", server.url]
    argv += ["--fault", "false-partner-left", "--delay", "1.5"]
    with Child(argv, name="drift proxy", log_path=tmp_path / "proxy.log") as child:
        ready = re.compile(r"drift proxy: (ws://\S+) -> ")
        match = await asyncio.to_thread(child.wait_for_line, ready, 60.0)
        result = await simulate(match.group(1), tmp_path / "run", peers=2, hold=3.0)
    assert result.exit_code == ExitCode.CHECK_FAILED
    assert set(result.summary["failures"]) == {"false-partner-left"}


async def test_the_proxy_forwards_http_paths(proxied: Proxied) -> None:
    proxy = await proxied(WireFault.NONE)
    async with (
        aiohttp.ClientSession() as session,
        session.get(endpoint(proxy.url, "/healthz")) as resp,
    ):
        assert resp.status == 200


@pytest.mark.parametrize("run", range(20))
async def test_clean_pass_through_passes(proxied: Proxied, tmp_path: Path, run: int) -> None:
    proxy = await proxied(WireFault.NONE)
    result = await simulate(proxy.url, tmp_path, peers=4, hold=0.2)
    assert result.exit_code == ExitCode.OK, result.summary["failure_examples"]
    assert result.summary["outcomes"]["verified"] == 4

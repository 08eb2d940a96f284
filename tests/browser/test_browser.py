"""The browser client (static/) in Debian's Chromium, against real servers and real peers.

One Chromium is shared by the module (a launch costs about a second); each
page gets a fresh browser context, so pages share no state. Run in the
loopback-only namespace like the rest of the suite:

    scripts/loopback-only python -m pytest -q tests/browser/test_browser.py
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright

from drift.client.urls import ws_url
from drift.core.lobby import Fault
from drift.serve.server import CONTENT_SECURITY_POLICY, Server
from drift.simulate.interop import PeerOutcome, run_one_peer
from tests.support.browser import (
    SELECTED_REMOTE_TYPE_JS,
    EarlyCandidatesAnswerer,
    T,
    Tab,
    Tabs,
    TcpProxy,
    drift_server,
    launch,
    poll,
    save_screenshot,
)

# No skip when Chromium is missing: scripts/test installs it, and a browser suite
# that silently skips in CI would prove nothing.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def playwright_chromium() -> AsyncIterator[Any]:
    async with async_playwright() as pw:
        yield pw.chromium


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(playwright_chromium: Any) -> AsyncIterator[Browser]:
    """The usual test browser: fake camera and microphone, permission prompts auto-accepted."""
    b = await launch(playwright_chromium, fake_devices=True, fake_ui=True)
    yield b
    await b.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def strict_browser(playwright_chromium: Any) -> AsyncIterator[Browser]:
    """Fake devices, but no auto-accepted prompts: each context's permissions decide."""
    b = await launch(playwright_chromium, fake_devices=True, fake_ui=False)
    yield b
    await b.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deviceless_browser(playwright_chromium: Any) -> AsyncIterator[Browser]:
    """A machine with no camera and no microphone at all."""
    b = await launch(playwright_chromium, fake_devices=False, fake_ui=True)
    yield b
    await b.close()


@pytest_asyncio.fixture(loop_scope="module")
async def server() -> AsyncIterator[Server]:
    async with drift_server() as s:
        yield s


@pytest_asyncio.fixture(loop_scope="module")
async def tabs(browser: Browser) -> AsyncIterator[Tabs]:
    """Pages for one test. At the end, no page may have logged a CSP violation or error."""
    t = Tabs(browser)
    yield t
    try:
        for tab in t.tabs:
            if tab.page.is_closed():
                continue
            assert await tab.csp_violations() == []
            assert tab.page_errors == []
            assert [e for e in tab.console_errors if not t.allow_console(e)] == []
    finally:
        await t.close()


async def connected_pair(tabs: Tabs, url: str, second_url: str | None = None) -> tuple[Tab, Tab]:
    """Two pages in one call: (first, waited -> answerer; second, newcomer -> offerer)."""
    first = await tabs.open(url)
    await first.wait_state("ready")
    await first.page.click("#start")
    await first.wait_state("waiting")
    second = await tabs.open(second_url or url)
    await second.wait_state("ready")
    await second.page.click("#start")
    await first.wait_state("connected")
    await second.wait_state("connected")
    assert first.frames("matched")[0]["role"] == "answerer"
    assert second.frames("matched")[0]["role"] == "offerer"
    return first, second


# ---------------------------------------------------------------------- tests


async def test_page_loads_under_strict_csp_without_errors(server: Server, tabs: Tabs) -> None:
    tab = await tabs.open(server.url)
    await tab.wait_state("ready")
    headers = (await tab.page.request.get(server.url)).headers
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    # Everything came from our own origin, including the favicon (a 404 would log an error).
    favicon = await tab.page.request.get(server.url + "/favicon.ico")
    assert favicon.ok
    # The shortcuts are shown to the user, not only wired up.
    for key in ("Enter", "N", "Esc"):
        assert key in await tab.page.inner_text(".buttons")
    assert await tab.page.is_disabled("#next")
    assert await tab.page.is_disabled("#chat-input")
    # Pressing Enter starts: the camera comes on and the page queues.
    await tab.page.keyboard.press("Enter")
    await tab.wait_state("waiting")
    assert [f["type"] for f in tab.sent] == ["join"]
    await poll(
        lambda: tab.page.evaluate("() => document.getElementById('local').videoWidth"),
        lambda w: w > 0,
        what="local preview",
    )
    # Checked again by the fixture at teardown, after all of the above ran.
    assert await tab.csp_violations() == []
    assert tab.console_errors == []

    # The detectors work: an inline script is refused, reported and logged.
    canary = await tabs.open(server.url)
    await canary.page.evaluate(INLINE_SCRIPT_JS)
    violations = await poll(canary.csp_violations, bool, what="the canary's CSP violation")
    assert violations[0].startswith("script-src")
    assert await canary.page.evaluate("() => window.inlineRan") is None
    await poll(lambda: _async(canary.console_errors), bool, what="the canary's console error")
    await canary.page.close()  # the teardown check skips closed pages


async def test_two_pages_see_each_other_and_chat(server: Server, tabs: Tabs) -> None:
    first, second = await connected_pair(tabs, server.url)
    await first.assert_receiving_video()
    await second.assert_receiving_video()

    # Trickle ICE both ways, ending with the null end-of-candidates marker.
    for tab in (first, second):
        sent = tab.frames("ice-candidate", sent=True)
        assert any(f["candidate"] is not None for f in sent)
        assert sent[-1]["candidate"] is None
    assert len(second.frames("offer", sent=True)) == 1
    assert len(first.frames("answer", sent=True)) == 1
    assert first.frames("offer", sent=True) == []

    await first.chat("hello from the first page")
    await second.wait_chat("them", "hello from the first page")
    # "/" jumps to the chat box from anywhere; Enter sends.
    await second.page.keyboard.press("/")
    await second.page.keyboard.type("hi back <b>not bold</b>")
    await second.page.keyboard.press("Enter")
    await first.wait_chat("them", "hi back <b>not bold</b>")
    assert await first.page.locator("#chat-log b").count() == 0  # text, never markup

    # The quality indicator is live: RTT, loss and bitrate from getStats().
    await poll(
        lambda: first.text("#quality"),
        lambda q: "RTT –" not in q and "loss" in q and ("kb/s" in q or "Mb/s" in q),
        what="quality indicator",
    )
    assert await first.page.get_attribute("#quality", "data-level") in ("good", "fair", "poor")
    # ... and it is refreshed (once a second): the figures change while we watch.
    shown = await first.text("#quality")
    await poll(lambda: first.text("#quality"), lambda q: q != shown, what="a quality update")

    png = await first.page.screenshot()
    save_screenshot(png, "browser-call.png", docs_name="call.png")


async def test_phone_layout(server: Server, tabs: Tabs) -> None:
    """A 390x844 phone: both videos, all three buttons and the chat fit on screen."""
    first = await tabs.open(server.url)
    await first.wait_state("ready")
    await first.page.click("#start")
    await first.wait_state("waiting")
    phone = await tabs.open(server.url, viewport=(390, 844), mobile=True)
    await phone.wait_state("ready")
    await phone.page.tap("#start")
    await phone.wait_state("connected")
    await phone.assert_receiving_video()
    await first.chat("hello phone")
    await phone.wait_chat("them", "hello phone")
    for selector in ("#remote", "#local", "#start", "#next", "#stop", "#chat-input"):
        box = await phone.page.locator(selector).bounding_box()
        assert box is not None, selector
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390 + 0.5, (selector, box)
        assert box["y"] >= 0 and box["y"] + box["height"] <= 844 + 0.5, (selector, box)
    width = await phone.page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390  # no sideways scrolling
    save_screenshot(await phone.page.screenshot(), "browser-call-phone.png")


async def test_next_gives_both_a_new_state(server: Server, tabs: Tabs) -> None:
    first, second = await connected_pair(tabs, server.url)
    await second.page.keyboard.press("n")
    await second.wait_state("waiting")
    await first.wait_state("partner-left")
    await poll(lambda: _async(first.frames("partner-left")), bool, what="partner-left frame")
    assert first.frames("partner-left")[0]["reason"] == "next"
    assert await first.page.is_enabled("#start")
    assert await first.page.evaluate("() => document.getElementById('remote').srcObject") is None

    # A newcomer meets the one who pressed Next (the rematch cooldown keeps the
    # old pair apart), and the one who was left can stop with Escape.
    third = await tabs.open(server.url)
    await third.wait_state("ready")
    await third.page.click("#start")
    await third.wait_state("connected")
    await second.wait_state("connected")
    await second.assert_receiving_video()
    await first.page.keyboard.press("Escape")
    await first.wait_state("ready")
    assert await first.page.is_disabled("#stop")


async def test_closing_a_page_notifies_the_partner(server: Server, tabs: Tabs) -> None:
    first, second = await connected_pair(tabs, server.url)
    await second.page.close()
    await first.wait_state("partner-left")
    await poll(lambda: _async(first.frames("partner-left")), bool, what="partner-left frame")
    assert first.frames("partner-left")[0]["reason"] == "disconnected"
    await poll(lambda: _async(server.stats()["connections"]), lambda n: n == 1, what="1 conn")
    # The page offers the next partner right away.
    assert await first.page.is_enabled("#start")
    await first.page.click("#start")
    await first.wait_state("waiting")


async def test_ice_timeout_restarts_once_then_gives_up(tabs: Tabs) -> None:
    # The server swallows every ice-candidate frame, so ICE can never connect.
    async with drift_server(faults=frozenset({Fault.DROP_CANDIDATES})) as server:
        patient = await tabs.open(server.url + "/?iceTimeout=60")
        await patient.wait_state("ready")
        await patient.page.click("#start")
        await patient.wait_state("waiting")
        hasty = await tabs.open(server.url + "/?iceTimeout=1.5")
        await hasty.wait_state("ready")
        await hasty.page.click("#start")  # the newcomer: offerer
        await hasty.wait_state("error", timeout=T)
        assert "ICE restart" in await hasty.status_text()
        offers = hasty.frames("offer", sent=True)
        assert len(offers) == 2, [f["type"] for f in hasty.sent]
        assert _ufrag(offers[0]) != _ufrag(offers[1])  # the second one is a real ICE restart
        assert hasty.frames("leave", sent=True)
        await patient.wait_state("partner-left")
        assert await hasty.page.is_enabled("#start")


async def test_signaling_drop_keeps_the_call_and_reconnects_with_backoff(
    server: Server, tabs: Tabs
) -> None:
    proxy = TcpProxy(server.port)
    await proxy.start()
    # A WebSocket that cannot connect is logged by Chromium itself as a console error.
    tabs.allow_console = lambda text: "WebSocket connection to" in text
    try:
        direct, proxied = await connected_pair(tabs, server.url, proxy.url + "/?backoff=200")
        assert proxied.sockets == 1
        proxy.refusing = True
        attempts_before = len(proxy.attempts)
        assert proxy.cut() > 0
        await poll(
            lambda: proxied.page.get_attribute("#signal", "data-online"),
            lambda v: v == "false",
            what="signal offline",
        )
        # Backoff: each retry waits about twice as long as the one before.
        await poll(
            lambda: _async(len(proxy.attempts) - attempts_before),
            lambda n: n >= 4,
            what="4 reconnect attempts",
        )
        times = proxy.attempts[attempts_before:]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # Delays of 0.4, 0.8, 1.6 s (+-25 % jitter) plus connect time: never a tight
        # loop, and clearly growing (the ratio is kept loose for a loaded machine).
        assert min(gaps) > 0.2, gaps
        assert gaps[-1] > 1.5 * gaps[0], gaps
        proxy.refusing = False
        await poll(
            lambda: proxied.page.get_attribute("#signal", "data-online"),
            lambda v: v == "true",
            what="signal online again",
        )
        await poll(lambda: _async(len(proxied.frames("welcome"))), lambda n: n == 2, what="welcome")

        # The server told the partner "disconnected", but the call itself is alive.
        await poll(lambda: _async(direct.frames("partner-left")), bool, what="partner-left")
        assert direct.frames("partner-left")[0]["reason"] == "disconnected"
        await poll(
            lambda: direct.text("#notice"),
            lambda n: n == "Your partner lost the server; the call goes on.",
            what="probe answered",
        )
        for tab in (direct, proxied):
            assert await tab.state() == "connected"
            await tab.frames_advance()
        await proxied.chat("still here")
        await direct.wait_chat("them", "still here")
        assert server.stats()["connections"] == 2

        # Hanging up still reaches the partner, now over the data channel alone.
        await proxied.page.click("#next")
        await proxied.wait_state("waiting")
        await direct.wait_state("partner-left")
    finally:
        await proxy.close()


async def test_a_waiting_page_rejoins_the_queue_after_reconnecting(
    server: Server, tabs: Tabs
) -> None:
    proxy = TcpProxy(server.port)
    await proxy.start()
    try:
        tab = await tabs.open(proxy.url + "/?backoff=100")
        await tab.wait_state("ready")
        await tab.page.click("#start")
        await tab.wait_state("waiting")
        assert proxy.cut() > 0
        await poll(lambda: _async(len(tab.frames("welcome"))), lambda n: n == 2, what="welcome")
        await poll(lambda: _async(tab.frames("waiting")), lambda w: len(w) == 2, what="waiting")
        assert [f["type"] for f in tab.sent] == ["join", "join"]
        assert await tab.state() == "waiting"
        assert server.stats()["waiting"] == 1
    finally:
        await proxy.close()


async def test_camera_denied_falls_back_to_audio_only(
    server: Server, tabs: Tabs, strict_browser: Browser
) -> None:
    audio = await tabs.open(server.url, browser=strict_browser, permissions=["microphone"])
    await audio.wait_state("ready")
    await audio.page.click("#start")
    await audio.wait_state("waiting")
    notice = await audio.page.text_content("#notice")
    assert notice == "Audio only: camera unavailable (permission was denied)."
    assert await audio.page.is_visible("#notice")
    assert await audio.page.get_attribute("body", "data-media") == "audio-only"
    assert await audio.page.text_content("#local-note") == "Camera off (audio only)"

    # The call still happens: the partner hears us, and we see the partner.
    full = await tabs.open(server.url)
    await full.wait_state("ready")
    await full.page.click("#start")
    await audio.wait_state("connected")
    await full.wait_state("connected")
    await audio.assert_receiving_video()
    remote = await poll(full.remote_video, lambda v: v["tracks"] != [], what="partner tracks")
    assert remote["tracks"] == ["audio"]


async def test_no_devices_falls_back_to_receive_only(
    server: Server, tabs: Tabs, deviceless_browser: Browser
) -> None:
    viewer = await tabs.open(server.url, browser=deviceless_browser)
    await viewer.wait_state("ready")
    await viewer.page.click("#start")
    await viewer.wait_state("waiting")
    notice = await viewer.page.text_content("#notice")
    assert notice == "Receive-only: no camera or microphone (no device was found)."
    assert await viewer.page.get_attribute("body", "data-media") == "receive-only"

    full = await tabs.open(server.url)
    await full.wait_state("ready")
    await full.page.click("#start")  # the offerer sends; the receive-only page only receives
    await viewer.wait_state("connected")
    await full.wait_state("connected")
    await viewer.assert_receiving_video()
    await full.chat("can you see me?")
    await viewer.wait_chat("them", "can you see me?")


async def test_everything_denied_is_receive_only_with_the_reason(
    server: Server, tabs: Tabs, strict_browser: Browser
) -> None:
    tab = await tabs.open(server.url, browser=strict_browser, permissions=[])
    await tab.wait_state("ready")
    await tab.page.click("#start")
    await tab.wait_state("waiting")
    notice = await tab.page.text_content("#notice")
    assert notice == "Receive-only: no camera or microphone (permission was denied)."
    assert await tab.page.text_content("#local-note") == "Receive-only"


@pytest.mark.parametrize("browser_role", ["answerer", "offerer"])
async def test_browser_and_aiortc_synthetic_peer_interop(
    server: Server, tabs: Tabs, browser_role: str
) -> None:
    """Chromium <-> aiortc (drift simulate's peer), with the browser in either role."""
    signaling_url = ws_url(server.url)
    tab = await tabs.open(server.url)
    await tab.wait_state("ready")

    def synthetic_peer() -> asyncio.Task[PeerOutcome]:
        return asyncio.create_task(run_one_peer(signaling_url, media=True, hold=5.0, timeout=T))

    if browser_role == "answerer":
        await tab.page.click("#start")
        await tab.wait_state("waiting")
        peer = synthetic_peer()
    else:
        peer = synthetic_peer()
        await poll(lambda: _async(server.stats()["waiting"]), lambda n: n == 1, what="peer waits")
        await tab.page.click("#start")
    try:
        await tab.wait_state("connected")
        assert tab.frames("matched")[0]["role"] == browser_role
        await tab.assert_receiving_video()
        # The aiortc peer pings over the browser's chat channel; the page answers.
        outcome = await asyncio.wait_for(asyncio.shield(peer), T + 10)
    finally:
        if not peer.done():
            peer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await peer
    assert outcome.failure is None, (outcome.failure, outcome.detail)
    assert outcome.connected
    assert outcome.role == ("offerer" if browser_role == "answerer" else "answerer")
    assert outcome.media_frames_sent > 5
    assert outcome.media_frames_received > 0  # the browser's fake camera reached aiortc
    assert outcome.record.rounds[-1].rtt_ms is not None  # our page answered its ping
    await tab.wait_state("partner-left")


async def test_candidates_that_arrive_before_the_answer_are_queued(
    server: Server, tabs: Tabs
) -> None:
    signaling_url = ws_url(server.url)
    peer = EarlyCandidatesAnswerer(signaling_url)
    waiting = asyncio.Event()
    task = asyncio.create_task(peer.run(waiting=waiting))
    try:
        await asyncio.wait_for(waiting.wait(), T)
        tab = await tabs.open(server.url)
        await tab.wait_state("ready")
        await tab.page.click("#start")  # the newcomer: offerer
        await tab.wait_state("connected")
        assert peer.role == "answerer" and peer.candidates_sent > 0
        received = [f["type"] for f in tab.received]
        assert received.index("ice-candidate") < received.index("answer")
        # The browser reached aiortc at an address it only knew from those early
        # candidates: a signalled host candidate, not a peer-reflexive guess.
        assert await tab.page.evaluate(SELECTED_REMOTE_TYPE_JS) == "host"
        assert not any("candidate refused" in w for w in tab.console_warnings)
    finally:
        peer.done.set()
        await asyncio.wait_for(task, T)


# ---------------------------------------------------------------------- helpers


async def _async(value: Any) -> Any:
    return value


INLINE_SCRIPT_JS = """() => {
  const script = document.createElement("script");
  script.textContent = "window.inlineRan = true";
  document.body.append(script);
}"""


def _ufrag(offer: dict[str, Any]) -> str:
    sdp: str = offer["sdp"]["sdp"]
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:"):
            return line.split(":", 1)[1]
    raise AssertionError("offer without ice-ufrag")

"""Helpers for driving the drift page in Debian's Chromium through Playwright.

Nothing here reaches into the page's modules: tests observe what a user or the
network would see (the DOM, the WebSocket frames, the media stats). The one
instrumentation is an init script, injected by Playwright before any page
script runs and outside the page's CSP, that records CSP violations and keeps a
reference to every ``RTCPeerConnection`` so tests can read its ``getStats()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, WebSocket

from drift.serve.config import ServerConfig
from drift.serve.server import Server

CHROMIUM = "/usr/bin/chromium"
#: Flags of every browser here; the fake-device/fake-UI flags are added per browser.
BASE_ARGS = [
    "--no-sandbox",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FAKE_DEVICES = "--use-fake-device-for-media-stream"
FAKE_UI = "--use-fake-ui-for-media-stream"
#: Chromium hides its addresses behind mDNS names unless the page may use media,
#: and on a loopback-only machine it then has no usable candidate at all.
MEDIA_PERMISSIONS = ["camera", "microphone"]

#: One timing unit for browser waits: generous, because the machine is shared.
T = 20.0

REPO = Path(__file__).resolve().parents[2]
REPORTS = REPO / "reports"
DOCS_IMG = REPO / "docs" / "img"

INIT_SCRIPT = """
(() => {
  window.__cspViolations = [];
  document.addEventListener("securitypolicyviolation", (e) => {
    window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI}`);
  });
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) {
      super(...args);
      window.__pcs.push(this);
    }
  };
})();
"""

# Sum of decoded video frames over the page's open peer connections.
FRAMES_DECODED_JS = """async () => {
  let frames = 0;
  for (const pc of window.__pcs) {
    if (pc.connectionState === "closed") continue;
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") frames += s.framesDecoded || 0;
    });
  }
  return frames;
}"""

REMOTE_VIDEO_JS = """() => {
  const v = document.getElementById("remote");
  return { width: v.videoWidth, height: v.videoHeight, paused: v.paused,
           tracks: v.srcObject ? v.srcObject.getTracks().map((t) => t.kind).sort() : [] };
}"""

# The candidate type ("host", "prflx", ...) of the remote end of the selected ICE pair.
SELECTED_REMOTE_TYPE_JS = """async () => {
  const pc = window.__pcs[window.__pcs.length - 1];
  const report = await pc.getStats();
  let pairId = null;
  report.forEach((s) => { if (s.type === "transport") pairId = s.selectedCandidatePairId; });
  const pair = pairId && report.get(pairId);
  const remote = pair && report.get(pair.remoteCandidateId);
  return remote ? remote.candidateType : null;
}"""

X = TypeVar("X")


async def poll(
    probe: Callable[[], Awaitable[X]],
    ok: Callable[[X], bool] = bool,
    *,
    timeout: float = T,
    interval: float = 0.1,
    what: str = "condition",
) -> X:
    """Re-evaluate ``probe`` until ``ok`` holds; fail with the last value after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if ok(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}; last: {value!r}"
            )
        await asyncio.sleep(interval)


@dataclass
class Tab:
    """One page plus everything it logged and every WebSocket frame it exchanged."""

    page: Page
    console_errors: list[str] = field(default_factory=list)
    console_warnings: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    sockets: int = 0

    def attach(self) -> None:
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        self.page.on("websocket", self._on_websocket)

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)
        elif message.type == "warning":
            self.console_warnings.append(message.text)

    def _on_websocket(self, ws: WebSocket) -> None:
        self.sockets += 1
        ws.on("framesent", lambda payload: self.sent.append(_frame(payload)))
        ws.on("framereceived", lambda payload: self.received.append(_frame(payload)))

    # ---------------------------------------------------------------- reading the page

    async def state(self) -> str:
        return await self.page.get_attribute("#status", "data-state") or ""

    async def text(self, selector: str) -> str:
        return await self.page.text_content(selector) or ""

    async def status_text(self) -> str:
        return await self.text("#status")

    async def wait_state(self, *states: str, timeout: float = T) -> str:
        async def probe() -> str:
            return await self.state()

        return await poll(probe, lambda s: s in states, timeout=timeout, what=f"state {states}")

    async def frames_decoded(self) -> int:
        return int(await self.page.evaluate(FRAMES_DECODED_JS))

    async def remote_video(self) -> dict[str, Any]:
        value = await self.page.evaluate(REMOTE_VIDEO_JS)
        assert isinstance(value, dict)
        return value

    async def assert_receiving_video(self) -> None:
        """The partner's video is really playing: it has a size and frames keep decoding."""
        video = await poll(
            self.remote_video, lambda v: v["width"] > 0 and not v["paused"], what="remote video"
        )
        assert video["height"] > 0
        await poll(self.frames_decoded, lambda n: n > 0, what="decoded frames")
        await self.frames_advance()

    async def frames_advance(self, count: int = 5) -> None:
        """More video frames get decoded: the call is alive right now."""
        first = await self.frames_decoded()
        await poll(self.frames_decoded, lambda n: n >= first + count, what="more decoded frames")

    async def csp_violations(self) -> list[str]:
        value = await self.page.evaluate("() => window.__cspViolations")
        assert isinstance(value, list)
        return [str(v) for v in value]

    def frames(self, kind: str, *, sent: bool = False) -> list[dict[str, Any]]:
        return [f for f in (self.sent if sent else self.received) if f.get("type") == kind]

    # ---------------------------------------------------------------- acting on it

    async def chat(self, text: str) -> None:
        await self.page.fill("#chat-input", text)
        await self.page.press("#chat-input", "Enter")

    async def wait_chat(self, who: str, text: str) -> None:
        async def lines() -> list[str]:
            return await self.page.locator(f"#chat-log li.{who}").all_text_contents()

        await poll(lines, lambda got: text in got, what=f"chat line {text!r} from {who}")


def _frame(payload: str | bytes) -> dict[str, Any]:
    try:
        value = json.loads(payload)
    except ValueError:
        return {"type": "<not json>", "raw": str(payload)[:200]}
    return value if isinstance(value, dict) else {"type": "<not an object>"}


async def launch(playwright_chromium: Any, *, fake_devices: bool, fake_ui: bool) -> Browser:
    args = list(BASE_ARGS)
    if fake_devices:
        args.append(FAKE_DEVICES)
    if fake_ui:
        args.append(FAKE_UI)
    browser: Browser = await playwright_chromium.launch(executable_path=CHROMIUM, args=args)
    return browser


class Tabs:
    """Opens pages in fresh contexts and closes them all at the end of a test."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []
        self.tabs: list[Tab] = []
        #: Console errors a test expects (e.g. Chromium's own WebSocket failure lines).
        self.allow_console: Callable[[str], bool] = lambda text: False

    async def open(
        self,
        url: str,
        *,
        browser: Browser | None = None,
        permissions: list[str] | None = None,
        viewport: tuple[int, int] = (1280, 800),
        mobile: bool = False,
    ) -> Tab:
        context = await (browser or self.browser).new_context(
            permissions=MEDIA_PERMISSIONS if permissions is None else permissions,
            viewport={"width": viewport[0], "height": viewport[1]},
            is_mobile=mobile,
            has_touch=mobile,
            device_scale_factor=2 if mobile else 1,
        )
        self.contexts.append(context)
        await context.add_init_script(INIT_SCRIPT)
        page = await context.new_page()
        tab = Tab(page)
        tab.attach()
        self.tabs.append(tab)
        response = await page.goto(url)
        assert response is not None and response.ok, url
        return tab

    async def close(self) -> None:
        for context in self.contexts:
            with contextlib.suppress(Exception):
                await context.close()


@contextlib.asynccontextmanager
async def drift_server(**overrides: Any) -> AsyncIterator[Server]:
    """An in-process server on a free loopback port, like conftest's ``make_server``.

    The browser tests share one Chromium per module, so they run in a module-scoped
    event loop; conftest's function-loop fixture cannot be used from there.
    """
    config = ServerConfig(port=0, log_level="warning").replace(**overrides)
    server = Server(config)
    await server.start()
    try:
        yield server
    finally:
        await server.shutdown()


class TcpProxy:
    """A TCP forwarder in front of the server whose connections a test can cut.

    Cutting (a TCP reset, no WebSocket close frame) is what a dropped Wi-Fi or a
    restarted load balancer looks like to the page. While ``refusing``, new
    connections are accepted and closed at once, and each attempt is timed.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.url = ""
        self.refusing = False
        self.attempts: list[float] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.attempts.append(asyncio.get_running_loop().time())
        if self.refusing:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers.update((writer, up_writer))
        pumps = [
            asyncio.create_task(_pump(reader, up_writer)),
            asyncio.create_task(_pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            self._tasks.difference_update(pumps)
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    def cut(self) -> int:
        """Reset every open connection; returns how many there were."""
        writers = list(self._writers)
        for w in writers:
            w.transport.abort()
        return len(writers)

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()


def save_screenshot(png: bytes, name: str, *, docs_name: str | None = None) -> Path:
    """Write a screenshot to reports/; with DRIFT_UPDATE_SCREENSHOTS=1 also to docs/img/."""
    REPORTS.mkdir(exist_ok=True)
    path = REPORTS / name
    path.write_bytes(png)
    if docs_name and os.environ.get("DRIFT_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMG / docs_name)
    return path


class EarlyCandidatesAnswerer:
    """An aiortc answerer that trickles its ICE candidates *before* its answer.

    docs/protocol.md relays frames in order but does not promise that candidates
    follow the description, so a client must queue candidates that arrive
    before its remote description is set. This peer also ignores the browser's
    candidates: the call can then only connect if the page kept the early ones
    and applied them after the answer (the browser checks those addresses and
    aiortc learns the browser's as peer-reflexive).
    """

    def __init__(self, ws_url: str) -> None:
        self.ws_url = ws_url
        self.role = ""
        self.candidates_sent = 0
        self.connected = asyncio.Event()
        self.done = asyncio.Event()

    async def run(self, *, waiting: asyncio.Event, timeout: float = T) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        from drift.simulate.loopback import configure_interfaces
        from drift.simulate.sdp import split_candidates

        configure_interfaces(real_interfaces=False)  # 127.0.0.1 candidates only
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))

        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc.connectionState == "connected":
                self.connected.set()

        async with aiohttp.ClientSession() as session, session.ws_connect(self.ws_url) as ws:
            try:
                async with asyncio.timeout(timeout):
                    await _expect(ws, "welcome")
                    await ws.send_json({"type": "join"})
                    await _expect(ws, "waiting")
                    waiting.set()
                    self.role = (await _expect(ws, "matched"))["role"]
                    offer = await _expect(ws, "offer", skip=("ice-candidate",))
                    await pc.setRemoteDescription(
                        RTCSessionDescription(sdp=offer["sdp"]["sdp"], type="offer")
                    )
                    await pc.setLocalDescription(await pc.createAnswer())
                    sdp, candidates = split_candidates(pc.localDescription.sdp)
                    for cand in candidates:
                        await ws.send_json({"type": "ice-candidate", "candidate": _init(cand)})
                        self.candidates_sent += 1
                    await ws.send_json({"type": "ice-candidate", "candidate": None})
                    await ws.send_json({"type": "answer", "sdp": {"type": "answer", "sdp": sdp}})
                    await self.connected.wait()
                await self.done.wait()
            finally:
                await pc.close()


def _init(cand: Any) -> dict[str, Any]:
    return {
        "candidate": cand.candidate,
        "sdpMid": cand.sdpMid,
        "sdpMLineIndex": cand.sdpMLineIndex,
        "usernameFragment": cand.usernameFragment,
    }


async def _expect(
    ws: aiohttp.ClientWebSocketResponse, kind: str, *, skip: tuple[str, ...] = ()
) -> dict[str, Any]:
    while True:
        msg = await ws.receive_json()
        assert isinstance(msg, dict)
        if msg.get("type") in skip:
            continue
        assert msg.get("type") == kind, f"expected {kind!r}, got {msg!r}"
        return msg

// drift browser client: wires the signaling socket, the camera and one Call
// at a time to the page. Protocol: docs/protocol.md (version 1, with call-report).
//
// Query parameters (for tests and debugging, all optional):
//   iceTimeout=<seconds>  ICE connection timeout before the one restart (default 15)
//   backoff=<ms>          first WebSocket reconnect delay (default 500, doubles per try)

import { Call } from "./call.js";
import { openMedia, stopMedia } from "./media.js";
import { describe } from "./quality.js";
import { Signaling, serverUrl } from "./signaling.js";

const params = new URLSearchParams(window.location.search);
const ICE_TIMEOUT_MS = seconds(params.get("iceTimeout"), 15) * 1000;
const BACKOFF_MS = Math.min(10000, Math.max(50, Number(params.get("backoff")) || 500));
const CHAT_MAX = 500;

function seconds(raw, fallback) {
  const value = Number(raw);
  return Number.isFinite(value) && value > 0 ? Math.min(value, 300) : fallback;
}

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"),
  notice: $("notice"),
  signal: $("signal"),
  quality: $("quality"),
  local: $("local"),
  remote: $("remote"),
  localNote: $("local-note"),
  remoteNote: $("remote-note"),
  start: $("start"),
  next: $("next"),
  stop: $("stop"),
  chatLog: $("chat-log"),
  chatForm: $("chat-form"),
  chatInput: $("chat-input"),
  chatSend: $("chat-send"),
};

// ------------------------------------------------------------------ state

const state = {
  iceServers: [],
  serverState: "idle", // what the server thinks: idle | waiting | matched
  searching: false, // the user asked for a partner and has not stopped
  started: false, // camera/microphone acquired (or given up on) for this session
  busy: false, // getUserMedia in progress
  media: { stream: null, mode: "receive-only", reason: "" },
  call: null,
  features: [], // protocol additions the server announced in welcome
  session: 0, // counts welcomes: a new one means the server forgot our rooms
};

const signaling = new Signaling(serverUrl(), {
  onMessage: (msg) => {
    // Frames are handled strictly in order: an ice-candidate must not
    // overtake the offer it belongs to while that offer is still being applied.
    inbox = inbox.then(() => handle(msg)).catch((error) => {
      setStatus("error", `Something went wrong: ${error.message}`);
    });
  },
  onStatus: (s) => showSignal(s),
  baseMs: BACKOFF_MS,
});
let inbox = Promise.resolve();

// ------------------------------------------------------------------ UI helpers

const STATUS_TEXT = {
  connecting: "Connecting to the server…",
  ready: "Ready. Press Start to meet someone.",
  waiting: "Waiting for a partner…",
  negotiating: "Partner found, connecting…",
  connected: "Connected",
  "partner-left": "Your partner left. Press Start or Next to meet someone new.",
  error: "Error",
};

function setStatus(kind, text = STATUS_TEXT[kind]) {
  ui.status.dataset.state = kind;
  ui.status.textContent = text;
  document.body.dataset.state = kind;
  document.body.dataset.started = String(state.started);
  render();
}

function setNotice(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = text === "";
}

function showSignal({ online, retryInMs }) {
  if (online) {
    ui.signal.dataset.online = "true";
    ui.signal.textContent = "server: online";
    return;
  }
  ui.signal.dataset.online = "false";
  ui.signal.textContent = `server: offline, retrying in ${(retryInMs / 1000).toFixed(1)} s`;
  state.serverState = "idle"; // the server forgets a peer whose socket closed
  const call = state.call;
  if (call && call.connected) {
    setNotice("Lost the server; your call goes on, reconnecting in the background.");
  } else if (call) {
    // Negotiation needs the server: this half-built call cannot finish.
    endCall(false);
    setStatus("connecting", "Lost the server while connecting; retrying…");
  } else {
    setStatus("connecting", "Lost the server; reconnecting…");
  }
}

function render() {
  const inCall = state.call !== null;
  const kind = ui.status.dataset.state;
  ui.start.disabled = state.busy || state.searching || inCall;
  ui.next.disabled = state.busy || !state.started;
  ui.stop.disabled = state.busy || !state.started;
  ui.start.textContent = "";
  ui.start.append(state.started ? "Find partner " : "Start ", kbd("Enter"));
  ui.remoteNote.textContent =
    kind === "connected" ? "" : kind === "waiting" ? "Waiting for a partner…" : remoteHint(kind);
  ui.remoteNote.hidden = ui.remoteNote.textContent === "";
}

function remoteHint(kind) {
  if (kind === "negotiating") return "Connecting…";
  if (kind === "partner-left") return "Partner left";
  if (kind === "error") return "No call";
  if (!state.started) return "Press Start to meet someone";
  return "";
}

function kbd(text) {
  const el = document.createElement("kbd");
  el.textContent = text;
  return el;
}

function addChatLine(who, text) {
  const li = document.createElement("li");
  li.className = who;
  // textContent, never innerHTML: chat text comes from a stranger.
  li.textContent = text;
  ui.chatLog.append(li);
  ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
}

function setChatOpen(open) {
  ui.chatInput.disabled = !open;
  ui.chatSend.disabled = !open;
  ui.chatInput.placeholder = open ? "Say hi… (Enter to send)" : "Chat opens in a call";
}

function showQuality(sample) {
  ui.quality.hidden = false;
  ui.quality.dataset.level = sample.level;
  ui.quality.textContent = describe(sample);
  ui.quality.title = `${sample.level} connection, ${Math.round(sample.fps)} video frames/s received`;
}

function showLocalMedia() {
  const { stream, mode, reason } = state.media;
  ui.local.srcObject = stream && stream.getVideoTracks().length > 0 ? stream : null;
  ui.localNote.textContent =
    mode === "full" ? "" : mode === "audio-only" ? "Camera off (audio only)" : "Receive-only";
  ui.localNote.hidden = ui.localNote.textContent === "";
  document.body.dataset.media = mode;
  setNotice(reason);
}

// ------------------------------------------------------------------ calls

/** Sends one call's report for roomId, if the server takes reports and still knows us. */
function reporter(roomId) {
  const session = state.session;
  return (fields) => {
    if (!state.features.includes("call-report") || state.session !== session) return;
    signaling.send({ type: "call-report", roomId, ...fields });
  };
}

function newCall(role, roomId) {
  endCall(false);
  ui.chatLog.replaceChildren();
  const call = new Call({
    role,
    iceServers: state.iceServers,
    stream: state.media.stream,
    iceTimeoutMs: ICE_TIMEOUT_MS,
    send: (msg) => signaling.send(msg),
    report: reporter(roomId),
    events: {
      onConnected: () => {
        if (state.call !== call) return;
        setStatus("connected");
        addChatLine("system", "Connected. Say hi!");
      },
      onRetrying: () => {
        if (state.call !== call) return;
        setStatus("negotiating", "Connection is slow, retrying (ICE restart)…");
      },
      onFailed: (message) => {
        if (state.call !== call) return;
        state.call = null;
        state.searching = false;
        leaveRoom();
        resetRemote();
        setStatus("error", `${message} Press Start to try someone else.`);
      },
      onEnded: (why) => partnerGone(call, why),
      onRemoteStream: (stream) => {
        if (state.call === call && ui.remote.srcObject !== stream) ui.remote.srcObject = stream;
      },
      onChat: (text) => {
        if (state.call === call) addChatLine("them", text);
      },
      onChatOpen: (open) => {
        if (state.call === call) setChatOpen(open);
      },
      onQuality: (sample) => {
        if (state.call === call) showQuality(sample);
      },
    },
  });
  state.call = call;
  call.start();
  return call;
}

function resetRemote() {
  ui.remote.srcObject = null;
  ui.quality.hidden = true;
  setChatOpen(false);
}

/** Hang up the current call, if any; notify = tell the partner over the data channel. */
function endCall(notify = true) {
  const call = state.call;
  state.call = null;
  if (call) call.close(notify);
  resetRemote();
}

function partnerGone(call, why) {
  if (state.call !== call) return;
  console.info(`drift: call ended (${why})`);
  endCall(false);
  addChatLine("system", "Your partner left.");
  state.searching = false;
  setStatus("partner-left");
}

/** Leave the server-side room or queue, so the partner learns at once. */
function leaveRoom() {
  if (state.serverState !== "idle") signaling.send({ type: "leave" });
  state.serverState = "idle";
}

function join() {
  state.searching = true;
  if (!signaling.online) {
    setStatus("connecting", "Waiting for the server…"); // joins after the next welcome
    return;
  }
  // From a room, `next` ends it and re-queues in one step; `join` is only valid when idle.
  signaling.send({ type: state.serverState === "idle" ? "join" : "next" });
  setStatus("waiting");
}

// ------------------------------------------------------------------ server frames

async function handle(msg) {
  switch (msg.type) {
    case "welcome":
      state.iceServers = Array.isArray(msg.iceServers) ? msg.iceServers : [];
      state.features = Array.isArray(msg.features) ? msg.features : [];
      state.session += 1;
      state.serverState = "idle";
      if (state.call && state.call.connected) {
        setNotice(state.media.reason); // drop the "lost the server" notice
      } else if (state.searching) {
        join();
      } else if (ui.status.dataset.state === "connecting") {
        setStatus("ready");
      }
      return;
    case "waiting":
      state.serverState = "waiting";
      if (!state.call) setStatus("waiting");
      return;
    case "matched":
      state.serverState = "matched";
      newCall(msg.role === "offerer" ? "offerer" : "answerer", String(msg.roomId));
      setStatus("negotiating");
      return;
    case "offer":
    case "answer":
    case "ice-candidate": {
      const call = state.call;
      if (!call) return;
      try {
        await call.handle(msg);
      } catch (error) {
        // e.g. a description this browser cannot use: this call cannot work.
        call.fail(`Could not set up the call (${error.message}).`);
      }
      return;
    }
    case "partner-left":
      state.serverState = "idle";
      // Not awaited: a liveness probe takes up to 3 s, and the frames that
      // answer the user's next click must not wait behind it.
      partnerLeft(msg.reason).catch((error) => setStatus("error", error.message));
      return;
    case "error":
      serverError(msg);
      return;
    default:
      // Forward compatibility: unknown server frames are ignored.
      return;
  }
}

async function partnerLeft(reason) {
  const call = state.call;
  if (call && call.connected && (reason === "disconnected" || reason === "timeout")) {
    // Only the partner's *server* connection may be gone; ask the partner
    // directly before hanging up a call that works.
    if (await call.probe()) {
      if (state.call === call) setNotice("Your partner lost the server; the call goes on.");
      return;
    }
  }
  if (call && state.call === call) partnerGone(call, `server: ${reason}`);
  else if (!state.call && state.serverState === "idle" && state.searching) {
    // partner-left reached us between matched and any call: find the next one.
    join();
  } else if (!state.call) {
    state.searching = false;
    setStatus("partner-left");
  }
}

function serverError(msg) {
  const code = String(msg.code);
  if (code === "queue-timeout") {
    state.serverState = "idle";
    state.searching = false;
    setStatus("ready", "Nobody showed up in time. Press Start to try again.");
  } else if (code === "queue-full") {
    state.serverState = "idle";
    state.searching = false;
    setStatus("error", "The server is full right now. Please try again in a minute.");
  } else if (code === "rate-limited") {
    setNotice("Slow down a little: the server is rate-limiting this tab.");
  } else {
    // invalid-state etc. come from harmless races (e.g. a click while the
    // partner-left frame is in flight); they change nothing on the server.
    console.warn(`drift: server error ${code}: ${msg.message}`);
  }
}

// ------------------------------------------------------------------ user actions

async function ensureMedia() {
  if (state.started) return;
  state.busy = true;
  render();
  setStatus(ui.status.dataset.state, "Asking for camera and microphone…");
  try {
    state.media = await openMedia();
  } finally {
    state.busy = false;
  }
  state.started = true;
  showLocalMedia();
}

async function start() {
  if (state.busy || state.searching || state.call) return;
  await ensureMedia();
  join();
}

async function next() {
  if (state.busy) return;
  await ensureMedia();
  endCall(true);
  join();
}

function stop() {
  if (!state.started) return;
  endCall(true);
  leaveRoom();
  state.searching = false;
  state.started = false;
  stopMedia(state.media.stream);
  state.media = { stream: null, mode: "receive-only", reason: "" };
  ui.local.srcObject = null;
  ui.localNote.hidden = true;
  setNotice("");
  setStatus(signaling.online ? "ready" : "connecting", signaling.online ? "Stopped." : undefined);
}

function sendChat() {
  const text = ui.chatInput.value.trim().slice(0, CHAT_MAX);
  if (text === "" || !state.call) return;
  if (state.call.sendChat(text)) {
    addChatLine("me", text);
    ui.chatInput.value = "";
  }
}

ui.start.addEventListener("click", () => start());
ui.next.addEventListener("click", () => next());
ui.stop.addEventListener("click", () => stop());
ui.chatForm.addEventListener("submit", (event) => {
  event.preventDefault(); // never a real submission (the CSP says form-action 'none')
  sendChat();
});

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
  const target = event.target;
  const typing = target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement;
  if (typing) {
    if (event.key === "Escape") target.blur(); // a second Escape then stops
    return;
  }
  // A focused button handles its own Enter/Space; don't run the shortcut twice.
  if (target instanceof HTMLButtonElement && (event.key === "Enter" || event.key === " ")) return;
  if (event.key === "Enter") {
    event.preventDefault();
    start();
  } else if (event.key === "n" || event.key === "N") {
    event.preventDefault();
    next();
  } else if (event.key === "Escape") {
    event.preventDefault();
    stop();
  } else if (event.key === "/" && !ui.chatInput.disabled) {
    event.preventDefault();
    ui.chatInput.focus();
  }
});

// Closing the tab: hang up first, so the partner hears it over the data
// channel at once instead of after the server notices the socket is gone.
window.addEventListener("pagehide", () => {
  endCall(true);
  signaling.close();
});

setChatOpen(false);
setStatus("connecting");
signaling.connect();

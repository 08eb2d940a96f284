// The WebSocket to the drift server, with reconnect and exponential backoff.
//
// Signaling is only needed to find a partner and set up a call: once the
// peer-to-peer connection is up, losing the server must not end the call. So a
// dropped socket is reported and silently re-opened; the caller decides what a
// new `welcome` means for its state (the server forgets us on disconnect).

export class Signaling {
  #url;
  #onMessage;
  #onStatus;
  #baseMs;
  #maxMs;
  #ws = null;
  #attempt = 0;
  #timer = null;
  #stopped = false;

  /**
   * @param {string} url ws:// or wss:// URL of the server's /ws endpoint
   * @param {{onMessage: (msg: object) => void,
   *          onStatus: (s: {online: boolean, retryInMs?: number, code?: number}) => void,
   *          baseMs?: number, maxMs?: number}} options
   */
  constructor(url, { onMessage, onStatus, baseMs = 500, maxMs = 15000 }) {
    this.#url = url;
    this.#onMessage = onMessage;
    this.#onStatus = onStatus;
    this.#baseMs = baseMs;
    this.#maxMs = maxMs;
  }

  get online() {
    return this.#ws !== null && this.#ws.readyState === WebSocket.OPEN;
  }

  connect() {
    this.#stopped = false;
    clearTimeout(this.#timer);
    const ws = new WebSocket(this.#url);
    this.#ws = ws;
    ws.addEventListener("message", (event) => {
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        console.warn("drift: ignoring a frame that is not JSON");
        return;
      }
      if (msg === null || typeof msg !== "object" || typeof msg.type !== "string") return;
      // A welcome proves the server is really serving us (a 1013 close comes
      // before any welcome), so only then is the backoff reset.
      if (msg.type === "welcome") this.#attempt = 0;
      this.#onMessage(msg);
    });
    ws.addEventListener("open", () => this.#onStatus({ online: true }));
    ws.addEventListener("close", (event) => {
      if (this.#ws !== ws) return; // an old socket we already replaced
      this.#ws = null;
      if (this.#stopped) return;
      this.#attempt += 1;
      const delay = this.#delay(this.#attempt);
      this.#onStatus({ online: false, retryInMs: delay, code: event.code });
      this.#timer = setTimeout(() => this.connect(), delay);
    });
  }

  // Full exponential backoff with +-25 % jitter, so that a restarted server is
  // not hit by every tab at the same instant.
  #delay(attempt) {
    const exp = Math.min(this.#maxMs, this.#baseMs * 2 ** (attempt - 1));
    return Math.round(exp * (0.75 + Math.random() * 0.5));
  }

  /** Send one frame; false when the socket is down (the frame is dropped, not queued:
   *  a stale join or candidate replayed after a reconnect would be wrong). */
  send(msg) {
    if (!this.online) return false;
    this.#ws.send(JSON.stringify(msg));
    return true;
  }

  close() {
    this.#stopped = true;
    clearTimeout(this.#timer);
    if (this.#ws !== null) this.#ws.close(1000, "bye");
    this.#ws = null;
  }
}

/** The server's /ws URL on the page's own origin (what the CSP's connect-src 'self' allows). */
export function serverUrl(loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${loc.host}/ws`;
}

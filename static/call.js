// One call with one partner: an RTCPeerConnection negotiated by role.
//
// Roles come from the server's `matched` frame and never change within a
// call: only the offerer ever creates offers (including the ICE-restart one),
// so the two sides can never both offer at once ("glare") and no rollback
// logic is needed. The offerer also creates the chat data channel.

import { QualityMeter } from "./quality.js";

const PROBE_MS = 3000;
// How long a connected call waits for its first quality sample before it
// reports without one (the meter needs two readings, one second apart).
const REPORT_WAIT_MS = 3000;
const CANDIDATE_TYPES = new Set(["host", "srflx", "prflx", "relay"]);
const RELAY_PROTOCOLS = new Set(["udp", "tcp", "tls"]);

const clamp = (value, low, high) => Math.min(high, Math.max(low, value));

export class Call {
  /**
   * @param {{role: "offerer"|"answerer", iceServers: RTCIceServer[], stream: MediaStream|null,
   *          iceTimeoutMs: number, send: (msg: object) => boolean, events: object,
   *          report?: (fields: object) => void}} options
   * events: onConnected(), onRetrying(), onFailed(message), onEnded(why),
   *         onRemoteStream(stream), onChat(text), onChatOpen(open), onQuality(sample)
   * report: called at most once with this call's outcome (the fields of a
   *         `call-report` frame without type and roomId, docs/protocol.md)
   */
  constructor({ role, iceServers, stream, iceTimeoutMs, send, events, report = null }) {
    this.role = role;
    this.connected = false;
    this.closed = false;
    this.stream = stream;
    this.iceTimeoutMs = iceTimeoutMs;
    this.send = send;
    this.events = events;
    this.pc = new RTCPeerConnection({ iceServers });
    this.channel = null;
    this.pending = []; // remote candidates that arrived before the remote description
    this.tracksAdded = false;
    this.restarted = false;
    this.iceTimer = null;
    this.remote = null;
    this.probes = new Map();
    this.probeSeq = 0;
    // The call report: time from matched (this call's birth) to connected, the
    // selected pair's candidate types, and the first quality sample if any.
    this.report = report;
    this.reported = false;
    this.matchedAt = performance.now();
    this.connectedAt = null;
    this.pairInfo = null;
    this.lastSample = null;
    this.reportTimer = null;
    this.meter = new QualityMeter(this.pc, (s) => {
      this.lastSample = s;
      this.events.onQuality(s);
      if (this.pairInfo) this.#reportConnected();
    });

    const pc = this.pc;
    pc.addEventListener("icecandidate", (event) => {
      // Trickle ICE: every candidate goes out as soon as it is found; the null
      // at the end tells the partner that gathering is complete.
      if (event.candidate && event.candidate.candidate === "") return;
      this.send({
        type: "ice-candidate",
        candidate: event.candidate ? event.candidate.toJSON() : null,
      });
    });
    pc.addEventListener("track", (event) => this.#onTrack(event));
    pc.addEventListener("iceconnectionstatechange", () => this.#watchIce());
    pc.addEventListener("connectionstatechange", () => this.#watchConnection());
    pc.addEventListener("datachannel", (event) => this.#useChannel(event.channel));
    if (role === "offerer") {
      pc.addEventListener("negotiationneeded", () => this.#offer());
    }
    this.#armIceTimer();
  }

  /** Offerer: add media and the chat channel; negotiationneeded then sends the offer. */
  start() {
    if (this.role !== "offerer") return;
    this.#useChannel(this.pc.createDataChannel("chat"));
    this.#addMedia();
  }

  // Without local tracks for a kind, still ask to *receive* it, so an
  // audio-only or receive-only user sees the partner's camera.
  #addMedia() {
    if (this.tracksAdded) return;
    this.tracksAdded = true;
    const kinds = new Set();
    if (this.stream) {
      for (const track of this.stream.getTracks()) {
        this.pc.addTrack(track, this.stream);
        kinds.add(track.kind);
      }
    }
    if (this.role === "offerer") {
      for (const kind of ["audio", "video"]) {
        if (!kinds.has(kind)) this.pc.addTransceiver(kind, { direction: "recvonly" });
      }
    }
  }

  async #offer() {
    if (this.closed) return;
    try {
      await this.pc.setLocalDescription();
      if (this.closed) return;
      this.send({ type: "offer", sdp: this.pc.localDescription.toJSON() });
    } catch (error) {
      this.fail(`Could not create an offer: ${error.message}`);
    }
  }

  /** Apply one signaling frame from the partner (offer, answer or ice-candidate). */
  async handle(msg) {
    if (this.closed) return;
    if (msg.type === "offer") {
      if (this.role !== "answerer") {
        console.warn("drift: ignoring an offer sent to the offerer");
        return;
      }
      await this.pc.setRemoteDescription(msg.sdp);
      // Added only now, so addTrack reuses the transceivers the offer created
      // (an answerer cannot add m-lines of its own).
      this.#addMedia();
      await this.#flushCandidates();
      await this.pc.setLocalDescription();
      if (!this.closed) this.send({ type: "answer", sdp: this.pc.localDescription.toJSON() });
    } else if (msg.type === "answer") {
      if (this.pc.signalingState !== "have-local-offer") {
        console.warn("drift: ignoring an answer without a pending offer");
        return;
      }
      await this.pc.setRemoteDescription(msg.sdp);
      await this.#flushCandidates();
    } else if (msg.type === "ice-candidate") {
      if (!this.pc.remoteDescription) {
        this.pending.push(msg.candidate);
      } else {
        await this.#addCandidate(msg.candidate);
      }
    }
  }

  async #flushCandidates() {
    const queued = this.pending;
    this.pending = [];
    for (const candidate of queued) await this.#addCandidate(candidate);
  }

  async #addCandidate(candidate) {
    try {
      // null = the partner finished gathering; addIceCandidate() with no
      // argument is the end-of-candidates signal.
      if (candidate === null) await this.pc.addIceCandidate();
      else await this.pc.addIceCandidate(candidate);
    } catch (error) {
      // One bad candidate (e.g. of an old ICE generation) must not end the call.
      console.warn(`drift: candidate refused: ${error.message}`);
    }
  }

  #onTrack(event) {
    let stream = event.streams[0];
    if (!stream) {
      // A sender without a stream id: collect its tracks in one stream ourselves.
      this.remote ??= new MediaStream();
      this.remote.addTrack(event.track);
      stream = this.remote;
    }
    this.events.onRemoteStream(stream);
  }

  // ICE watchdog: a call that is not connected within iceTimeoutMs gets one
  // ICE restart, and if that does not help either, the call is given up with
  // a message instead of a page that spins forever.
  #armIceTimer() {
    if (this.iceTimer !== null || this.closed) return;
    this.iceTimer = setTimeout(() => this.#iceTimeout(), this.iceTimeoutMs);
  }

  #clearIceTimer() {
    clearTimeout(this.iceTimer);
    this.iceTimer = null;
  }

  #iceTimeout() {
    this.iceTimer = null;
    if (this.closed) return;
    if (!this.restarted) {
      this.restarted = true;
      this.events.onRetrying();
      // On the offerer this fires negotiationneeded -> an offer with fresh
      // ICE credentials. The answerer only ever answers: its call is a no-op
      // for the wire, it picks up the new credentials from that offer.
      this.pc.restartIce();
      this.#armIceTimer();
      return;
    }
    this.fail(
      "Could not connect to your partner, even after an ICE restart " +
        "(a firewall may block peer-to-peer traffic).",
      "ice",
    );
  }

  #watchIce() {
    const state = this.pc.iceConnectionState;
    if (state === "connected" || state === "completed") {
      this.#clearIceTimer();
      if (!this.connected) {
        this.connected = true;
        this.meter.start();
        this.events.onConnected();
      }
    } else if (state === "failed") {
      this.#clearIceTimer();
      this.#iceTimeout();
    } else if (state === "disconnected" || state === "checking" || state === "new") {
      this.#armIceTimer();
    }
  }

  #watchConnection() {
    const state = this.pc.connectionState;
    if (state === "connected" && this.connectedAt === null) {
      this.connectedAt = performance.now();
      this.#notePair().catch(() => {}); // no stats: no pair, so no connected report
    } else if (state === "failed" && this.connectedAt === null) {
      const ice = this.pc.iceConnectionState;
      // ICE found a path but the DTLS handshake over it failed.
      if (ice === "connected" || ice === "completed") {
        this.fail("Could not secure the connection to your partner (DTLS failed).", "dtls");
      }
    } else if (state === "closed" && !this.closed) {
      this.#end("connection-closed");
    }
  }

  // The selected candidate pair's types, read once when the call connects.
  async #notePair() {
    const stats = await this.pc.getStats();
    let pair = null;
    for (const s of stats.values()) {
      if (s.type === "transport" && s.selectedCandidatePairId) {
        pair = stats.get(s.selectedCandidatePairId) ?? null;
      }
    }
    if (!pair) {
      pair = [...stats.values()].find(
        (s) => s.type === "candidate-pair" && s.nominated && s.state === "succeeded",
      );
    }
    const local = pair && stats.get(pair.localCandidateId);
    const remote = pair && stats.get(pair.remoteCandidateId);
    if (!local || !remote || this.closed) return;
    if (!CANDIDATE_TYPES.has(local.candidateType) || !CANDIDATE_TYPES.has(remote.candidateType)) {
      return;
    }
    const info = { localCandidate: local.candidateType, remoteCandidate: remote.candidateType };
    if (local.candidateType === "relay") {
      if (!RELAY_PROTOCOLS.has(local.relayProtocol)) return;
      info.relayProtocol = local.relayProtocol;
    }
    this.pairInfo = info;
    if (this.lastSample) this.#reportConnected();
    else this.reportTimer = setTimeout(() => this.#reportConnected(), REPORT_WAIT_MS);
  }

  #reportConnected() {
    if (this.reported || !this.pairInfo || this.connectedAt === null) return;
    const fields = {
      outcome: "connected",
      connectMs: Math.round(clamp(this.connectedAt - this.matchedAt, 0, 600000)),
      ...this.pairInfo,
    };
    const s = this.lastSample;
    if (s) {
      if (typeof s.rttMs === "number") fields.rttMs = clamp(s.rttMs, 0, 60000);
      fields.lossPct = clamp(s.lossPct, 0, 100);
      fields.bitrateKbps = clamp(s.inKbps, 0, 1000000);
    }
    this.#sendReport(fields);
  }

  #sendReport(fields) {
    if (this.reported || !this.report) return;
    this.reported = true;
    clearTimeout(this.reportTimer);
    this.report(fields);
  }

  #useChannel(channel) {
    this.channel = channel;
    channel.addEventListener("open", () => this.events.onChatOpen(true));
    channel.addEventListener("close", () => {
      this.events.onChatOpen(false);
      // The partner closed its RTCPeerConnection (tab closed, Next, Stop):
      // that is the quickest "partner left" signal there is.
      if (!this.closed && this.connected) this.#end("partner-closed");
    });
    channel.addEventListener("message", (event) => this.#onChannelMessage(event.data));
  }

  #onChannelMessage(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (msg.t === "chat" && typeof msg.text === "string") {
      this.events.onChat(msg.text.slice(0, 500));
    } else if (msg.t === "ping") {
      this.#channelSend({ t: "pong", n: msg.n });
    } else if (msg.t === "pong") {
      this.probes.get(msg.n)?.(true);
    } else if (msg.t === "bye") {
      this.#end("partner-bye");
    }
  }

  #channelSend(msg) {
    if (!this.channel || this.channel.readyState !== "open") return false;
    this.channel.send(JSON.stringify(msg));
    return true;
  }

  sendChat(text) {
    return this.#channelSend({ t: "chat", text });
  }

  /**
   * Is the partner still there? The server says `partner-left/disconnected`
   * both when the partner closed the tab and when only its WebSocket dropped;
   * in the second case the peer-to-peer call is fine and should go on.
   */
  probe(timeoutMs = PROBE_MS) {
    const n = ++this.probeSeq;
    return new Promise((resolve) => {
      const done = (alive) => {
        clearTimeout(timer);
        this.probes.delete(n);
        resolve(alive);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      this.probes.set(n, done);
      if (!this.#channelSend({ t: "ping", n })) done(false);
    });
  }

  /**
   * Give up on this call with a message for the user (the app then leaves the room);
   * layer ("ice", "dtls") reports the failure first, while the room is still ours.
   */
  fail(message, layer = null) {
    if (this.closed) return;
    if (layer) this.#sendReport({ outcome: "failed", layer });
    this.close();
    this.events.onFailed(message);
  }

  #end(why) {
    if (this.closed) return;
    this.close(false);
    this.events.onEnded(why);
  }

  /** Hang up; with notify, tell the partner directly over the data channel first. */
  close(notify = true) {
    if (this.closed) return;
    if (notify) this.#channelSend({ t: "bye" });
    // A connected call still waiting for its quality sample reports now, before
    // the app's next/leave: a report is only taken for this room or the last one.
    this.#reportConnected();
    clearTimeout(this.reportTimer);
    this.closed = true;
    this.#clearIceTimer();
    this.meter.stop();
    for (const done of this.probes.values()) done(false);
    this.pc.close();
  }
}

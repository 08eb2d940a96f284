// Connection quality from RTCPeerConnection.getStats(), sampled once a second.
//
// Counters in the stats are cumulative, so loss and bitrate are computed from
// the difference between two samples; RTT comes from the selected ICE pair.

export const SAMPLE_MS = 1000;

function totals(report) {
  const t = { at: 0, recvPackets: 0, lostPackets: 0, recvBytes: 0, sentBytes: 0, frames: 0 };
  let pairId = null;
  const pairs = new Map();
  for (const s of report.values()) {
    t.at = Math.max(t.at, s.timestamp);
    if (s.type === "inbound-rtp") {
      t.recvPackets += s.packetsReceived || 0;
      t.lostPackets += Math.max(0, s.packetsLost || 0);
      t.recvBytes += s.bytesReceived || 0;
      if (s.kind === "video") t.frames += s.framesDecoded || 0;
    } else if (s.type === "outbound-rtp") {
      t.sentBytes += s.bytesSent || 0;
    } else if (s.type === "transport" && s.selectedCandidatePairId) {
      pairId = s.selectedCandidatePairId;
    } else if (s.type === "candidate-pair") {
      pairs.set(s.id, s);
    }
  }
  // Older stacks have no selectedCandidatePairId: fall back to the nominated pair.
  let pair = pairId ? pairs.get(pairId) : undefined;
  if (!pair) pair = [...pairs.values()].find((p) => p.nominated && p.state === "succeeded");
  t.rttMs = pair && typeof pair.currentRoundTripTime === "number"
    ? pair.currentRoundTripTime * 1000
    : null;
  return t;
}

export function level(sample) {
  const rtt = sample.rttMs ?? 0;
  if (sample.lossPct < 2 && rtt < 250) return "good";
  if (sample.lossPct < 8 && rtt < 500) return "fair";
  return "poor";
}

export class QualityMeter {
  #pc;
  #onSample;
  #timer = null;
  #last = null;

  /** @param {(s: {rttMs: number|null, lossPct: number, inKbps: number, outKbps: number,
   *                fps: number, level: string}) => void} onSample */
  constructor(pc, onSample) {
    this.#pc = pc;
    this.#onSample = onSample;
  }

  start() {
    if (this.#timer !== null) return;
    this.#timer = setInterval(() => this.#sample(), SAMPLE_MS);
    this.#sample();
  }

  stop() {
    clearInterval(this.#timer);
    this.#timer = null;
  }

  async #sample() {
    let now;
    try {
      now = totals(await this.#pc.getStats());
    } catch {
      return; // the connection was closed between two samples
    }
    const last = this.#last;
    this.#last = now;
    if (last === null || this.#timer === null) return;
    const seconds = Math.max(0.001, (now.at - last.at) / 1000);
    const lost = now.lostPackets - last.lostPackets;
    const got = now.recvPackets - last.recvPackets;
    const sample = {
      rttMs: now.rttMs,
      lossPct: lost + got > 0 ? (100 * Math.max(0, lost)) / (lost + got) : 0,
      inKbps: ((now.recvBytes - last.recvBytes) * 8) / 1000 / seconds,
      outKbps: ((now.sentBytes - last.sentBytes) * 8) / 1000 / seconds,
      fps: (now.frames - last.frames) / seconds,
    };
    sample.level = level(sample);
    this.#onSample(sample);
  }
}

function rate(kbps) {
  return kbps >= 1000 ? `${(kbps / 1000).toFixed(1)} Mb/s` : `${Math.round(kbps)} kb/s`;
}

export function describe(sample) {
  const rtt = sample.rttMs === null ? "–" : `${Math.round(sample.rttMs)} ms`;
  return `RTT ${rtt} · loss ${sample.lossPct.toFixed(1)}% · ↓ ${rate(sample.inKbps)} · ↑ ${rate(sample.outKbps)}`;
}

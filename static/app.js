// Minimal client; the full one (chat, quality, reconnect) replaces it.
const $ = (id) => document.getElementById(id);
const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
let pc = null; let iceServers = []; let local = null;
const send = (m) => ws.send(JSON.stringify(m));
const status = (s) => { $("status").textContent = s; };
ws.onmessage = async (ev) => {
  const m = JSON.parse(ev.data);
  if (m.type === "welcome") { iceServers = m.iceServers; status("ready"); }
  else if (m.type === "waiting") status("waiting");
  else if (m.type === "matched") {
    pc = new RTCPeerConnection({ iceServers });
    if (local) local.getTracks().forEach((t) => pc.addTrack(t, local));
    pc.ontrack = (e) => { $("remote").srcObject = e.streams[0]; };
    pc.onicecandidate = (e) => send({ type: "ice-candidate", candidate: e.candidate ? e.candidate.toJSON() : null });
    pc.onconnectionstatechange = () => { if (pc && pc.connectionState === "connected") status("connected"); };
    if (m.role === "offerer") { await pc.setLocalDescription(); send({ type: "offer", sdp: pc.localDescription.toJSON() }); }
  } else if (m.type === "offer") { await pc.setRemoteDescription(m.sdp); await pc.setLocalDescription(); send({ type: "answer", sdp: pc.localDescription.toJSON() }); }
  else if (m.type === "answer") await pc.setRemoteDescription(m.sdp);
  else if (m.type === "ice-candidate") { if (m.candidate) await pc.addIceCandidate(m.candidate); }
  else if (m.type === "partner-left") { pc?.close(); pc = null; status("partner left"); }
  else if (m.type === "error") status(`error: ${m.message}`);
};
$("start").onclick = async () => {
  try { local = await navigator.mediaDevices.getUserMedia({ video: true, audio: true }); $("local").srcObject = local; } catch { local = null; }
  send({ type: "join" }); $("next").disabled = false; $("stop").disabled = false;
};
$("next").onclick = () => { pc?.close(); pc = null; send({ type: "next" }); };
$("stop").onclick = () => { pc?.close(); pc = null; send({ type: "leave" }); status("stopped"); };

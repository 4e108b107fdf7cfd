// facestream webcam filter: camera -> WebRTC -> server pipeline -> processed video back.
"use strict";

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token") || localStorage.getItem("facestream-token") || "";
if (token) localStorage.setItem("facestream-token", token);
{ // the token leaves the address bar (history, bookmarks, any later Referer); ?effect= stays
  const query = new URLSearchParams(location.search);
  if (query.has("token")) {
    query.delete("token");
    const rest = query.toString();
    history.replaceState(null, "", location.pathname + (rest ? `?${rest}` : "") + location.hash);
  }
}

const state = { effects: [], pc: null, channel: null, stream: null, sessionId: null, params: {} };

function authHeaders(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function setStatus(text) { $("status").textContent = text; }

async function detailOf(response) {
  try { const body = await response.json(); return body.detail ? JSON.stringify(body.detail) : response.statusText; }
  catch { return response.statusText; }
}

// ---- effects and their parameter controls (web/effects.js), generated from GET /effects ----

function renderParams() {
  state.params = facestreamEffects.renderParams(state.effects, {
    seedDefaults: true,
    onChange: (name, v) => { state.params[name] = v; sendEffect(); },
  });
}

async function loadEffects() {
  state.effects = await facestreamEffects.loadEffects(detailOf);
  renderParams();
}

function effectChoice() { return { name: $("effect").value, params: { ...state.params } }; }

function sendEffect() {
  if (state.channel && state.channel.readyState === "open") {
    state.channel.send(JSON.stringify({ effect: effectChoice() }));
  }
}

// ---- swap source upload ----

async function uploadFace() {
  if (await facestreamEffects.uploadFace(state.params, authHeaders, detailOf)) sendEffect();
}

// ---- WebRTC session ----

function waitForIce(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") { pc.removeEventListener("icegatheringstatechange", done); resolve(); } };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 3000);
  });
}

async function openCamera() {
  try {
    return await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480, frameRate: 30 }, audio: false });
  } catch (error) {
    if (error.name === "NotAllowedError") throw new Error("Camera permission was denied. Allow the camera for this site in the browser's address bar, then press Start again.");
    if (error.name === "NotFoundError") throw new Error("No camera was found. Plug one in, or use 'convert a file'.");
    throw new Error(`Could not open the camera: ${error.message}`);
  }
}

async function start() {
  showError("");
  $("start").disabled = true;
  try {
    setStatus("opening camera…");
    state.stream = await openCamera();
    $("local").srcObject = state.stream;
    const pc = new RTCPeerConnection();
    state.pc = pc;
    pc.addTransceiver(state.stream.getVideoTracks()[0], { direction: "sendrecv" });
    pc.ontrack = (event) => { $("remote").srcObject = event.streams[0] || new MediaStream([event.track]); };
    pc.onconnectionstatechange = () => {
      setStatus(pc.connectionState);
      if (pc.connectionState === "failed") showError("The connection to the server failed. Check that the server is running and reachable, then press Start again.");
    };
    state.channel = pc.createDataChannel("control");
    state.channel.onopen = pingLoop;
    state.channel.onmessage = onControlMessage;
    setStatus("connecting…");
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIce(pc);
    const response = await fetch("/offer", {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer", effect: effectChoice() }),
    });
    if (!response.ok) throw new Error(`The server refused the connection: ${await detailOf(response)}`);
    const answer = await response.json();
    state.sessionId = answer.session_id;
    $("session").textContent = answer.session_id;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    $("stop").disabled = false;
  } catch (error) {
    showError(error.message);
    await stop();
  }
}

async function stop() {
  if (state.sessionId) {
    fetch(`/sessions/${state.sessionId}`, { method: "DELETE", headers: authHeaders() }).catch(() => {});
  }
  if (state.pc) state.pc.close();
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  Object.assign(state, { pc: null, channel: null, stream: null, sessionId: null });
  $("start").disabled = false;
  $("stop").disabled = true;
  setStatus("idle");
}

// ---- readouts: received fps and round-trip latency over the control channel ----

function onControlMessage(event) {
  const message = JSON.parse(event.data);
  if ("pong" in message) $("rtt").textContent = Math.round(performance.now() - message.pong);
  else if (message.ok === false) showError(`Effect not changed: ${message.detail}`);
  else if (message.ok) showError("");
}

function pingLoop() {
  const timer = setInterval(() => {
    if (!state.channel || state.channel.readyState !== "open") { clearInterval(timer); return; }
    state.channel.send(JSON.stringify({ ping: performance.now() }));
  }, 1000);
}

let lastFrames = 0;
setInterval(async () => {
  if (!state.pc) { $("fps").textContent = "0"; return; }
  const stats = await state.pc.getStats();
  stats.forEach((report) => {
    if (report.type === "inbound-rtp" && report.kind === "video") {
      const frames = report.framesDecoded || 0;
      $("fps").textContent = String(frames - lastFrames);
      lastFrames = frames;
    }
  });
}, 1000);

$("start").onclick = start;
$("stop").onclick = stop;
$("effect").onchange = () => { renderParams(); sendEffect(); };
$("face-send").onclick = uploadFace;
window.addEventListener("beforeunload", () => { if (state.sessionId) navigator.sendBeacon && stop(); });
loadEffects().catch((error) => showError(error.message));

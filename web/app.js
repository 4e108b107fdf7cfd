// facestream webcam filter: camera -> WebRTC -> server pipeline -> processed video back.
"use strict";

const $ = (id) => document.getElementById(id);
const fx = facestreamEffects;
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

// applied: the effect choice the server runs now (from the accepted offer and each "ok" reply);
// pending: control messages sent and not answered yet, by id; offered: what the offer carried.
const state = {
  effects: [], pc: null, channel: null, stream: null, sessionId: null, params: {},
  applied: null, offered: null, pending: new Map(), seq: 0, lastFrames: 0,
};
const NO_EFFECT = { name: "none", params: {} };

function authHeaders(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function setStatus(text) { $("status").textContent = text; }

const detailOf = fx.detailOf;

// A server refusal in words for this page (the server's texts are written for API users).
function pageMessage(detail) {
  if (/needs a source face/.test(detail)) return "swap needs a face: upload a face photo below (tick the consent box), and swap starts once it is ready.";
  if (/unknown source face/.test(detail)) {
    fx.forgetFace();
    return "the uploaded face is no longer on the server: upload the photo again below.";
  }
  return detail;
}

// ---- effects and their parameter controls (web/effects.js), generated from GET /effects ----

function renderParams() {
  state.params = fx.renderParams(state.effects, {
    seedDefaults: true,
    onChange: (name, v) => { state.params[name] = v; sendEffect(); },
  });
}

async function loadEffects() {
  state.effects = await fx.loadEffects(detailOf);
  renderParams();
  showFaceHint();
}

function effectChoice() { return { name: $("effect").value, params: { ...state.params } }; }

// False while the chosen effect needs an uploaded face and none is ready.
function canRun(choice) { return !fx.needsFace(fx.effectNamed(state.effects, choice.name)) || fx.hasFace(); }

function showFaceHint() {
  const choice = effectChoice();
  const box = $("effect-pending");
  if (canRun(choice)) { box.hidden = true; return; }
  const now = state.applied ? ` Until then the video shows ${state.applied.name}.` : "";
  box.textContent = `${choice.name} starts once a face is ready: upload a face photo below and tick the consent box.${now}`;
  box.hidden = false;
}

// The menu's choice to the server over the control channel. Nothing is sent while a needed face
// is missing (the upload sends it) or while the channel is still opening (its onopen sends it).
function sendEffect() {
  showFaceHint();
  const choice = effectChoice();
  if (!canRun(choice) || !state.channel || state.channel.readyState !== "open") return;
  const id = ++state.seq;
  state.pending.set(id, choice);
  state.channel.send(JSON.stringify({ id, effect: choice }));
}

// The menu and its parameters back to the effect the server runs.
function showApplied() {
  if (!state.applied) return;
  fx.remember(state.applied.name, state.applied.params);
  $("effect").value = state.applied.name;
  renderParams();
  showFaceHint();
}

// ---- swap source upload ----

async function uploadFace() {
  if (await fx.uploadFace(state.params, authHeaders, detailOf)) sendEffect();
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

function openControl(pc) {
  const channel = pc.createDataChannel("control");
  channel.onopen = () => {
    pingLoop(channel);
    // a change made while connecting: the offer carried the older choice
    if (JSON.stringify(effectChoice()) !== JSON.stringify(state.offered)) sendEffect();
  };
  channel.onmessage = onControlMessage;
  channel.onclose = () => {
    if (state.channel === channel) stop("The server ended this session. Press Start to begin a new one.");
  };
  return channel;
}

function watchConnection(pc) {
  pc.ontrack = (event) => { $("remote").srcObject = event.streams[0] || new MediaStream([event.track]); };
  pc.onconnectionstatechange = () => {
    if (pc !== state.pc) return;
    setStatus(pc.connectionState);
    if (pc.connectionState === "failed") stop("The connection to the server failed. Check that the server is running and reachable, then press Start again.");
  };
}

async function start() {
  showError("");
  resetReadouts();
  $("start").disabled = true;
  let pc = null;
  try {
    setStatus("opening camera…");
    state.stream = await openCamera();
    $("local").srcObject = state.stream;
    pc = new RTCPeerConnection();
    state.pc = pc;
    pc.addTransceiver(state.stream.getVideoTracks()[0], { direction: "sendrecv" });
    watchConnection(pc);
    state.channel = openControl(pc);
    setStatus("connecting…");
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIce(pc);
    const choice = effectChoice();
    const effect = canRun(choice) ? choice : NO_EFFECT; // swap waits for its face
    const response = await fetch("/offer", {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer", effect }),
    });
    if (!response.ok) throw new Error(`The server refused the connection: ${pageMessage(await detailOf(response))}`);
    const answer = await response.json();
    if (pc !== state.pc) { endSession(answer.session_id); return; } // stopped meanwhile
    Object.assign(state, { sessionId: answer.session_id, offered: effect, applied: effect });
    $("session").textContent = answer.session_id;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    showFaceHint();
    $("stop").disabled = false;
  } catch (error) {
    if (state.pc === pc) await stop(error.message); // else already stopped, with its reason
  }
}

function endSession(sessionId, options = {}) {
  return fetch(`/sessions/${sessionId}`, { method: "DELETE", headers: authHeaders(), ...options }).catch(() => {});
}

// Ends the session (DELETE first, so the server frees the slot, then the peer connection),
// resets the readouts and leaves Start usable; `message` is shown as the reason.
async function stop(message = "") {
  const { pc, stream, sessionId } = state;
  Object.assign(state, { pc: null, channel: null, stream: null, sessionId: null, applied: null, offered: null });
  state.pending.clear();
  $("stop").disabled = true;
  if (sessionId) await endSession(sessionId, { signal: AbortSignal.timeout(3000) });
  if (pc) pc.close();
  if (stream) stream.getTracks().forEach((t) => t.stop());
  $("local").srcObject = null;
  $("remote").srcObject = null;
  resetReadouts();
  showError(message);
  showFaceHint();
  setStatus("idle");
  $("start").disabled = false;
}

function resetReadouts() {
  state.lastFrames = 0;
  $("fps").textContent = "0";
  $("rtt").textContent = "–";
  $("session").textContent = "–";
}

// ---- control replies and readouts: received fps and the control channel's round trip ----

function onControlMessage(event) {
  const message = JSON.parse(event.data);
  if ("pong" in message) { $("rtt").textContent = Math.round(performance.now() - message.pong); return; }
  if (message.withdrawn) {  // the face was deleted (consent withdrawn): the server stopped the swap
    state.applied = { name: message.effect, params: {} };
    fx.forgetFace();
    showApplied();
    showError(`No effect now: ${message.detail}. Upload a face photo again to swap.`);
    return;
  }
  const choice = state.pending.get(message.id);
  state.pending.delete(message.id);
  const newest = message.id === state.seq;
  if (message.ok && choice) {
    state.applied = choice;
    if (newest) showError("");
    showFaceHint();
  } else if (message.ok === false) {
    const reason = pageMessage(message.detail);
    if (newest) showApplied();
    showError(`Effect not changed: ${reason}`);
  }
}

function pingLoop(channel) {
  const timer = setInterval(() => {
    if (channel.readyState !== "open") { clearInterval(timer); return; }
    channel.send(JSON.stringify({ ping: performance.now() }));
  }, 1000);
}

setInterval(async () => {
  const pc = state.pc;
  if (!pc) return;
  const stats = await pc.getStats();
  if (pc !== state.pc) return;
  stats.forEach((report) => {
    if (report.type === "inbound-rtp" && report.kind === "video") {
      const frames = report.framesDecoded || 0;
      $("fps").textContent = String(Math.max(0, frames - state.lastFrames));
      state.lastFrames = frames;
    }
  });
}, 1000);

$("start").onclick = start;
$("stop").onclick = () => stop();
$("effect").onchange = () => { renderParams(); sendEffect(); };
$("face-send").onclick = uploadFace;
// A closing tab frees its slot at once: keepalive lets the DELETE outlive the page.
window.addEventListener("pagehide", () => {
  if (state.sessionId) endSession(state.sessionId, { keepalive: true });
  if (state.pc) state.pc.close();
});
loadEffects().catch((error) => showError(error.message));

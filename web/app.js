// facestream webcam filter: camera -> WebRTC -> server pipeline -> processed video back.
"use strict";

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token") || localStorage.getItem("facestream-token") || "";
if (token) localStorage.setItem("facestream-token", token);

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

// ---- effects and their parameter controls, generated from GET /effects ----

function rgbToHex(rgb) { return "#" + rgb.map((c) => c.toString(16).padStart(2, "0")).join(""); }
function hexToRgb(hex) { return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)); }

function controlFor(name, spec, value, onChange) {
  const row = document.createElement("label");
  row.className = "param";
  row.append(Object.assign(document.createElement("span"), { textContent: name }));
  const out = document.createElement("output");
  let input;
  if (spec.type === "color") {
    input = Object.assign(document.createElement("input"), { type: "color", value: rgbToHex(value) });
    input.oninput = () => onChange(hexToRgb(input.value));
  } else if (spec.type === "bool") {
    input = Object.assign(document.createElement("input"), { type: "checkbox", checked: !!value });
    input.onchange = () => onChange(input.checked);
  } else if (spec.type === "choice") {
    input = document.createElement("select");
    for (const c of spec.choices) input.append(new Option(c, c, false, c === value));
    input.onchange = () => onChange(input.value);
  } else if (spec.type === "face") {
    input = Object.assign(document.createElement("input"), { type: "text", value: value || "", placeholder: "upload a face below", readOnly: true });
    input.dataset.faceParam = name;
  } else {
    const step = spec.type === "int" ? 1 : (spec.max - spec.min) / 100;
    input = Object.assign(document.createElement("input"), { type: "range", min: spec.min, max: spec.max, step, value });
    out.textContent = value;
    input.oninput = () => { out.textContent = input.value; onChange(Number(input.value)); };
  }
  input.name = name;
  row.append(input, out);
  return row;
}

function renderParams() {
  const effect = state.effects.find((e) => e.name === $("effect").value);
  const box = $("params");
  box.replaceChildren();
  state.params = {};
  if (!effect) return;
  $("effect-description").textContent = effect.available ? effect.description : `unavailable: ${effect.reason}`;
  let needsFace = false;
  for (const [name, spec] of Object.entries(effect.params)) {
    state.params[name] = spec.default;
    if (spec.type === "face") needsFace = true;
    box.append(controlFor(name, spec, spec.default, (v) => { state.params[name] = v; sendEffect(); }));
  }
  $("face-upload").hidden = !needsFace;
}

async function loadEffects() {
  const response = await fetch("/effects");
  if (!response.ok) throw new Error(`could not list effects: ${await detailOf(response)}`);
  state.effects = await response.json();
  const select = $("effect");
  select.replaceChildren();
  for (const e of state.effects) {
    const option = new Option(e.available ? e.name : `${e.name} (unavailable)`, e.name);
    option.disabled = !e.available;
    select.append(option);
  }
  const wanted = new URLSearchParams(location.search).get("effect");
  if (wanted && state.effects.some((e) => e.name === wanted && e.available)) select.value = wanted;
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
  const file = $("face-file").files[0];
  if (!file) { $("face-status").textContent = "choose a photo first"; return; }
  if (!$("face-consent").checked) { $("face-status").textContent = "tick the consent box first"; return; }
  const form = new FormData();
  form.append("file", file);
  form.append("consent", "true");
  $("face-status").textContent = "uploading…";
  const response = await fetch("/faces", { method: "POST", body: form, headers: authHeaders() });
  if (!response.ok) { $("face-status").textContent = `rejected: ${await detailOf(response)}`; return; }
  const { face_id } = await response.json();
  for (const input of document.querySelectorAll("[data-face-param]")) {
    input.value = face_id;
    state.params[input.dataset.faceParam] = face_id;
  }
  $("face-status").textContent = "face ready";
  sendEffect();
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

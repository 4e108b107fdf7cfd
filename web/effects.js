// facestream: the effect menu, its parameter controls and the swap-face upload, built from GET /effects.
// Shared by the webcam page (app.js) and the convert page; it works on the elements #effect,
// #effect-description, #params, #face-upload, #face-file, #face-consent and #face-status.
"use strict";

const facestreamEffects = (() => {
  const $ = (id) => document.getElementById(id);
  const rgbToHex = (rgb) => "#" + rgb.map((c) => c.toString(16).padStart(2, "0")).join("");
  const hexToRgb = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));

  // One labelled control for the parameter `name`; onChange(value) on every edit.
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

  // Rebuilds #params for the effect chosen in #effect and returns the new parameter object:
  // every default when seedDefaults, else empty (the server fills in the rest).
  // onChange(name, value) on every edit.
  function renderParams(effects, { seedDefaults, onChange }) {
    const effect = effects.find((e) => e.name === $("effect").value);
    const params = {};
    const box = $("params");
    box.replaceChildren();
    if (!effect) return params;
    $("effect-description").textContent = effect.available ? effect.description : `unavailable: ${effect.reason}`;
    let needsFace = false;
    for (const [name, spec] of Object.entries(effect.params)) {
      if (seedDefaults) params[name] = spec.default;
      if (spec.type === "face") needsFace = true;
      box.append(controlFor(name, spec, spec.default, (v) => onChange(name, v)));
    }
    $("face-upload").hidden = !needsFace;
    return params;
  }

  // GET /effects into the #effect menu (the page's ?effect= chosen when available); returns the list.
  async function loadEffects(detailOf) {
    const response = await fetch("/effects");
    if (!response.ok) throw new Error(`could not list effects: ${await detailOf(response)}`);
    const effects = await response.json();
    const select = $("effect");
    select.replaceChildren();
    for (const e of effects) {
      const option = new Option(e.available ? e.name : `${e.name} (unavailable)`, e.name);
      option.disabled = !e.available;
      select.append(option);
    }
    const wanted = new URLSearchParams(location.search).get("effect");
    if (wanted && effects.some((e) => e.name === wanted && e.available)) select.value = wanted;
    return effects;
  }

  // POST the chosen photo (with consent) to /faces and put its face_id into every face parameter
  // control and into `params`; true when the face is ready.
  async function uploadFace(params, authHeaders, detailOf) {
    const file = $("face-file").files[0];
    if (!file) { $("face-status").textContent = "choose a photo first"; return false; }
    if (!$("face-consent").checked) { $("face-status").textContent = "tick the consent box first"; return false; }
    const form = new FormData();
    form.append("file", file);
    form.append("consent", "true");
    $("face-status").textContent = "uploading…";
    const response = await fetch("/faces", { method: "POST", body: form, headers: authHeaders() });
    if (!response.ok) { $("face-status").textContent = `rejected: ${await detailOf(response)}`; return false; }
    const { face_id } = await response.json();
    for (const input of document.querySelectorAll("[data-face-param]")) {
      input.value = face_id;
      params[input.dataset.faceParam] = face_id;
    }
    $("face-status").textContent = "face ready";
    return true;
  }

  return { renderParams, loadEffects, uploadFace };
})();

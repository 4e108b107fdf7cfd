// facestream: the effect menu, its parameter controls and the swap-face upload, built from GET /effects.
// Shared by the webcam page (app.js) and the convert page; it works on the elements #effect,
// #effect-description, #params, #face-upload, #face-file, #face-consent and #face-status
// (and adds #effect-notes after #effect-description for unavailable effects and ?effect= notices).
// Each effect's parameter values and the uploaded face are remembered while the page is open,
// so switching to another effect and back keeps them. A face parameter shows the uploaded photo
// (name and thumbnail) or that none is there yet; its face id stays in a hidden input.
"use strict";

const facestreamEffects = (() => {
  const $ = (id) => document.getElementById(id);
  const rgbToHex = (rgb) => "#" + rgb.map((c) => c.toString(16).padStart(2, "0")).join("");
  const hexToRgb = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  const remembered = {}; // effect name -> {param: value} the user has set
  let faceId = ""; // the uploaded swap source (POST /faces), "" before one is ready
  let faceName = ""; // the uploaded photo's file name, shown to the user (the id never is)
  let facePreview = ""; // a blob: URL of that photo, for a thumbnail

  // A request's error body as plain text: a string detail as is, FastAPI's validation list as
  // "where: what" lines joined with "; ".
  function detailText(detail) {
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail.map((d) => {
        if (!d || typeof d !== "object") return String(d);
        const where = (d.loc || []).filter((p) => p !== "body").join(".");
        return where ? `${where}: ${d.msg}` : String(d.msg);
      }).join("; ");
    }
    return detail == null ? "" : JSON.stringify(detail);
  }

  async function detailOf(response) {
    try { const body = await response.json(); return body.detail ? detailText(body.detail) : response.statusText; }
    catch { return response.statusText; }
  }

  const decimals = (x) => { const s = String(x); return s.includes(".") ? s.split(".")[1].length : 0; };

  // A slider step on whose grid min, max and the default all sit: the finest of their decimals,
  // refined by tens until the range has at least 20 steps.
  function stepFor(spec) {
    if (spec.type === "int") return 1;
    let places = Math.max(decimals(spec.min), decimals(spec.max), decimals(spec.default));
    while ((spec.max - spec.min) * 10 ** places < 20 && places < 6) places += 1;
    return Number((10 ** -places).toFixed(places));
  }

  const labelOf = (name) => name.replace(/_/g, " ");
  const helpOf = (spec) => (spec.type === "face" ? "" : spec.help || "");

  // The face a face parameter uses, in words (and a thumbnail): never the internal face id.
  function showFaceChoice(box) {
    box.replaceChildren();
    box.classList.toggle("face-missing", !faceId);
    if (!faceId) {
      box.textContent = "no face yet: upload a photo below";
      return;
    }
    if (facePreview) {
      const thumb = Object.assign(document.createElement("img"), { src: facePreview, alt: "" });
      Object.assign(thumb.style, { height: "2.5rem", maxWidth: "4rem", objectFit: "cover", borderRadius: "4px", verticalAlign: "middle", marginRight: "0.5rem" });
      box.append(thumb);
    }
    box.append(`${faceName || "the uploaded photo"} (ready)`);
  }

  // One labelled control for the parameter `name`; onChange(value) on every edit.
  function controlFor(name, spec, value, onChange) {
    const row = document.createElement("label");
    row.className = "param";
    const help = helpOf(spec);
    if (help) row.title = help;
    row.append(Object.assign(document.createElement("span"), { textContent: labelOf(name) }));
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
      for (const c of spec.choices) input.append(new Option(labelOf(c), c, false, c === value));
      input.onchange = () => onChange(input.value);
    } else if (spec.type === "face") { // the id rides in a hidden input; the user sees the photo
      input = Object.assign(document.createElement("input"), { type: "hidden", value: value || "" });
      input.dataset.faceParam = name;
      out.dataset.faceChoice = name;
      out.style.gridColumn = "2 / -1";
      showFaceChoice(out);
    } else {
      input = Object.assign(document.createElement("input"), { type: "range", min: spec.min, max: spec.max, step: stepFor(spec), value });
      out.textContent = value;
      input.oninput = () => { out.textContent = input.value; onChange(Number(input.value)); };
    }
    input.name = name;
    row.append(input, out);
    if (help) row.append(Object.assign(document.createElement("small"), { className: "param-help", textContent: help }));
    return row;
  }

  const effectNamed = (effects, name) => effects.find((e) => e.name === name);
  const needsFace = (effect) => !!effect && Object.values(effect.params).some((s) => s.type === "face");

  // The values the controls of `effect` show: the remembered ones, the uploaded face, else defaults.
  function valuesOf(effect) {
    const values = {};
    for (const [name, spec] of Object.entries(effect.params)) {
      values[name] = spec.type === "face" ? faceId : (remembered[effect.name] || {})[name] ?? spec.default;
    }
    return values;
  }

  // Rebuilds #params for the effect chosen in #effect and returns its parameter object:
  // every value when seedDefaults, else only the ones the user set (the server fills in the rest).
  // onChange(name, value) on every edit; the value is remembered for this effect.
  function renderParams(effects, { seedDefaults, onChange }) {
    const effect = effectNamed(effects, $("effect").value);
    const box = $("params");
    box.replaceChildren();
    if (!effect) return {};
    $("effect-description").textContent = effect.available ? effect.description : `unavailable: ${effect.reason}`;
    const values = valuesOf(effect);
    const params = {};
    for (const [name, spec] of Object.entries(effect.params)) {
      const set = spec.type === "face" ? !!faceId : name in (remembered[effect.name] || {});
      if (seedDefaults || set) params[name] = values[name];
      const remember = (v) => { (remembered[effect.name] ||= {})[name] = v; onChange(name, v); };
      box.append(controlFor(name, spec, values[name], remember));
    }
    $("face-upload").hidden = !needsFace(effect);
    return params;
  }

  // The note under the menu (#effect-notes, added on first use): unavailable effects and why,
  // and a notice when the address's ?effect= could not be used.
  function notesBox() {
    let box = $("effect-notes");
    if (!box) {
      box = Object.assign(document.createElement("div"), { id: "effect-notes", className: "hint" });
      $("effect-description").after(box);
    }
    return box;
  }

  function showNotes(effects, wanted) {
    const para = (text) => Object.assign(document.createElement("p"), { textContent: text });
    const notes = [];
    if (wanted) {
      const asked = effectNamed(effects, wanted);
      const fallback = $("effect").value;
      if (!asked) notes.push(para(`The address asks for the effect "${wanted}", which this server does not have; showing ${fallback} instead.`));
      else if (!asked.available) notes.push(para(`The address asks for ${wanted}, which is not available here (${asked.reason}); showing ${fallback} instead.`));
    }
    const missing = effects.filter((x) => !x.available);
    if (missing.length) { // the names at a glance, the reasons (often long) one click away
      const details = document.createElement("details");
      details.append(Object.assign(document.createElement("summary"), { textContent: `unavailable here: ${missing.map((e) => e.name).join(", ")} (why?)` }));
      details.append(...missing.map((e) => para(`${e.name}: ${e.reason}`)));
      notes.push(details);
    }
    const box = notesBox();
    box.replaceChildren(...notes);
    box.hidden = !notes.length;
  }

  // GET /effects into the #effect menu (the page's ?effect= chosen when available); returns the list.
  async function loadEffects(detailOfResponse = detailOf) {
    const response = await fetch("/effects");
    if (!response.ok) throw new Error(`could not list effects: ${await detailOfResponse(response)}`);
    const effects = await response.json();
    const select = $("effect");
    select.replaceChildren();
    for (const e of effects) {
      const option = new Option(e.available ? e.name : `${e.name} (unavailable)`, e.name);
      option.disabled = !e.available;
      option.title = e.available ? e.description || "" : `unavailable: ${e.reason}`;
      select.append(option);
    }
    const wanted = new URLSearchParams(location.search).get("effect");
    if (wanted && effects.some((e) => e.name === wanted && e.available)) select.value = wanted;
    showNotes(effects, wanted);
    return effects;
  }

  // `file`: the uploaded photo (its name and a thumbnail are shown), none when forgetting.
  function setFace(id, params, file = null) {
    faceId = id;
    faceName = file ? file.name : "";
    if (facePreview) URL.revokeObjectURL(facePreview);
    facePreview = file ? URL.createObjectURL(file) : "";
    for (const input of document.querySelectorAll("[data-face-param]")) {
      input.value = id;
      if (params) params[input.dataset.faceParam] = id;
    }
    for (const box of document.querySelectorAll("[data-face-choice]")) showFaceChoice(box);
    $("face-status").textContent = id ? "face ready" : "";
  }

  // POST the chosen photo (with consent) to /faces and put its face_id into every face parameter
  // (hidden inputs) and into `params`, and show the photo as the chosen face; true when the face
  // is ready. A failed upload keeps an earlier face.
  async function uploadFace(params, authHeaders, detailOfResponse = detailOf) {
    const file = $("face-file").files[0];
    if (!file) { $("face-status").textContent = "choose a photo first"; return false; }
    if (!$("face-consent").checked) { $("face-status").textContent = "tick the consent box first"; return false; }
    const form = new FormData();
    form.append("file", file);
    form.append("consent", "true");
    $("face-status").textContent = "uploading…";
    let response;
    try {
      response = await fetch("/faces", { method: "POST", body: form, headers: authHeaders() });
    } catch {
      $("face-status").textContent = "the upload failed: the server could not be reached";
      return false;
    }
    if (!response.ok) {
      const kept = faceId ? " (the face uploaded before is still used)" : "";
      $("face-status").textContent = `rejected: ${await detailOfResponse(response)}${kept}`;
      return false;
    }
    setFace((await response.json()).face_id, params, file);
    return true;
  }

  // Set the remembered values of `name` to `params` (its face parameters stay the uploaded face).
  function remember(name, params) { remembered[name] = { ...params }; }

  return {
    renderParams, loadEffects, uploadFace, detailOf, detailText, stepFor, needsFace, effectNamed, remember,
    hasFace: () => !!faceId,
    forgetFace: () => setFace("", null),
  };
})();

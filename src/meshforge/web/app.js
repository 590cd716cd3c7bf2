// meshforge studio: submit pictures to the job service, follow the jobs, look at the assets.
import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
import { RoomEnvironment } from "three/addons/environments/RoomEnvironment.js";

const API = "/v1/jobs";
const FORMATS = ["glb", "obj", "ply", "stl"];
const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

const KEY_STORE = "meshforge.apiKey";

const $ = (id) => document.getElementById(id);
const jobs = new Map(); // id → job JSON
const streams = new Map(); // id → AbortController of its event stream
let selected = null;

// state for automated checks (the browser test waits on it); events: SSE events received per job
window.__studio = { viewer: "idle", jobId: null, error: null, events: {} };
function setViewerState(state) {
  window.__studio = { ...state, events: window.__studio.events };
}

// ---------------------------------------------------------------- the API key
// Kept in this tab's sessionStorage (gone when the tab closes) and sent as "Authorization: Bearer" on
// every request. Event streams are read with fetch() (EventSource cannot send headers), so the key is
// never put in a URL, where logs and browser history would keep it.
let apiKey = sessionStorage.getItem(KEY_STORE) || "";
$("api-key").value = apiKey;

function authHeaders(headers = {}) {
  return apiKey ? { ...headers, Authorization: `Bearer ${apiKey}` } : headers;
}

let keyAsked = false;
function askForKey() {
  keyAsked = true;
  $("key-form").classList.add("needed");
  showMessage(apiKey
    ? "The server refused this API key: enter a valid key in the “API key” field at the top."
    : "This server needs an API key: enter it in the “API key” field at the top.");
  $("api-key").focus();
}

async function api(path, init = {}) {
  const response = await fetch(path, { ...init, headers: authHeaders(init.headers) });
  if (response.status === 401) askForKey();
  return response;
}

async function objectUrl(path) {
  // a file of a job as a blob: URL (an <img src> or a download link cannot send the key)
  const r = await api(path);
  if (!r.ok) throw new Error(await problemText(r));
  return URL.createObjectURL(await r.blob());
}

$("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  apiKey = $("api-key").value.trim();
  if (apiKey) sessionStorage.setItem(KEY_STORE, apiKey);
  else sessionStorage.removeItem(KEY_STORE);
  $("key-form").classList.remove("needed");
  keyAsked = false;
  showMessage("");
  // start over with the new key: another key sees other jobs
  for (const ctrl of streams.values()) ctrl.abort();
  streams.clear();
  jobs.clear();
  $("jobs").replaceChildren();
  unselect();
  loadBackends();
  loadJobs();
});

// ---------------------------------------------------------------- messages and API helpers
function showMessage(text) {
  const box = $("message");
  box.textContent = text || "";
  box.hidden = !text;
}

async function problemText(response) {
  try {
    const body = await response.json();
    return body.detail || body.title || `${response.status} ${response.statusText}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

function withName(name, detail) {
  // "<name>: <reason>", without repeating the name when the server's one-line detail starts with it
  const stem = name.replace(/\.[^.]+$/, "");
  for (const prefix of [`${name}:`, `${stem}:`]) {
    if (detail.startsWith(prefix)) detail = detail.slice(prefix.length).trim();
  }
  return `${name}: ${detail}`;
}

// ---------------------------------------------------------------- the option form
// The ranges, choices, defaults and help of the options come from the server (GET /v1/options: the one
// option table that also builds the API's form fields and the CLI, each maximum lowered to this server's
// cap); none of them is written in the studio.
function numberField(input, o, value = o.default) {
  input.min = o.minimum ?? "";
  if (o.maximum != null) input.max = o.maximum;
  else input.removeAttribute("max");
  input.value = value;
  input.title = o.help;
}

function textureSizes(o) {
  // the powers of two the table and this server allow
  const sizes = [];
  for (let size = 1; size <= o.maximum; size *= 2) if (size >= o.minimum) sizes.push(size);
  return sizes;
}

function choiceField(select, values, value, help) {
  select.replaceChildren(...values.map((v) => new Option(String(v), String(v), false, String(v) === String(value))));
  select.title = help;
}

async function loadOptions() {
  let r;
  try { r = await fetch("/v1/options"); } catch { r = null; }
  if (!r || !r.ok) {
    showMessage(`cannot read this server's options: ${r ? await problemText(r) : "offline"}`);
    return;
  }
  const { options: o, presets } = await r.json();
  const form = $("options").elements;
  numberField(form.resolution, o.resolution);
  numberField(form.faces, o.faces);
  numberField(form.foreground_ratio, o.foreground_ratio);
  choiceField(form.texture_size, textureSizes(o.texture_size), o.texture_size.default, o.texture_size.help);
  choiceField(form.background, o.background.choices, o.background.default, o.background.help);
  form.no_texture.checked = !o.textures.default;
  // the re-export panel: the same ranges; its values are the selected job's (see fillReexport)
  numberField($("rx-faces"), o.faces);
  choiceField($("rx-texture-size"), textureSizes(o.texture_size), o.texture_size.default, o.texture_size.help);
  $("rx-preset").replaceChildren(
    new Option("custom", "", true, true),
    ...Object.entries(presets).map(([name, b]) => Object.assign(new Option(name, name), { title: `${b.faces} faces · ${b.texture_size}px` })),
  );
  $("options").dataset.loaded = "true";
}

let reexportFor = null;
function fillReexport(job) {
  // what is not changed is the job's, as in the API: start from its budgets (once per selected job, so a
  // later refresh never overwrites what the user typed)
  if (reexportFor === job.id) return;
  reexportFor = job.id;
  const o = job.options || {};
  if (o.faces != null) $("rx-faces").value = o.faces;
  if (o.texture_size != null) $("rx-texture-size").value = String(o.texture_size);
}

function optionsForm() {
  const form = new FormData($("options"));
  const out = {};
  for (const [k, v] of form.entries()) out[k] = v;
  out.no_texture = $("options").elements.no_texture.checked ? "true" : "false";
  return out;
}

async function submit(file) {
  const body = new FormData();
  body.append("file", file, file.name);
  for (const [k, v] of Object.entries(optionsForm())) body.append(k, v);
  const response = await api(API, { method: "POST", body });
  if (!response.ok) {
    if (response.status !== 401) showMessage(withName(file.name, await problemText(response)));
    return;
  }
  const job = await response.json();
  job._name = file.name;
  upsert(job);
  follow(job.id);
  if (!selected) select(job.id);
}

async function submitPrompt(prompt) {
  // a prompt job: the server's text-to-image model makes the picture, then the same stages as an upload
  const body = new FormData();
  body.append("prompt", prompt);
  for (const [k, v] of Object.entries(optionsForm())) body.append(k, v);
  const response = await api(API, { method: "POST", body });
  if (!response.ok) {
    if (response.status !== 401) showMessage(withName(prompt, await problemText(response)));
    return;
  }
  const job = await response.json();
  job._name = prompt;
  upsert(job);
  follow(job.id);
  if (!selected) select(job.id);
}

function errorText(error) {
  if (typeof error === "string") return error;
  return error.message || error.detail || JSON.stringify(error);
}

// ---------------------------------------------------------------- the job list
function budget(job) {
  // an export's options, short: "5000 faces · 512px"
  const o = job.options || {};
  return `${o.faces} faces · ${o.textures ? `${o.texture_size}px` : "vertex colours"}${o.preset ? ` (${o.preset})` : ""}`;
}

function label(job) {
  if (job.parent) {
    // an export: its parent's name and its budget
    const parent = jobs.get(job.parent);
    const name = parent ? label(parent) : (job.input && job.input.name) || job.id.slice(0, 8);
    return `${name} · ${budget(job)}`;
  }
  return job._name || (job.input && job.input.name) || job.id.slice(0, 8);
}

function upsert(job) {
  const old = jobs.get(job.id) || {};
  jobs.set(job.id, { ...old, ...job, _name: old._name || job._name });
  render(job.id);
}

function render(id) {
  const job = jobs.get(id);
  let li = document.querySelector(`li[data-id="${id}"]`);
  if (!li) {
    li = document.createElement("li");
    li.className = job.parent ? "job export" : "job";
    li.dataset.id = id;
    li.addEventListener("click", () => select(id));
    const parentLi = job.parent && document.querySelector(`li[data-id="${job.parent}"]`);
    if (parentLi) {
      // nested under its parent, after the parent's earlier exports
      let after = parentLi;
      while (after.nextElementSibling && after.nextElementSibling.dataset.parent === job.parent) after = after.nextElementSibling;
      li.dataset.parent = job.parent;
      after.after(li);
    } else {
      $("jobs").prepend(li);
    }
  }
  const p = job.progress || {};
  const pct = job.state === "succeeded" ? 100 : Math.round(p.percent || 0);
  const detail = job.state === "queued" && p.queue_position != null ? `queue position ${p.queue_position}`
    : job.state === "running" ? `${p.stage || "starting"} · ${pct}%`
    : job.state === "succeeded" ? `${job.cached ? "cached · " : ""}${job.degraded ? "degraded · " : ""}done`
    : "";
  const warnings = job.warnings || [];
  li.classList.toggle("selected", id === selected);
  li.innerHTML = `
    <div class="row"><span class="name"></span><span class="tags">${job.parent ? '<span class="badge export">re-export</span>' : ""}${warnings.length ? `<span class="badge warn">⚠ ${warnings.length}</span>` : ""}<span class="state ${job.state}">${job.state}</span></span></div>
    <div class="bar"><div style="width:${pct}%"></div></div>
    <div class="row"><span class="detail">${detail}</span><span class="actions">${TERMINAL.has(job.state) ? "" : '<button data-cancel>cancel</button>'}<button data-delete title="delete the job and its files">delete</button></span></div>
    ${job.error ? '<div class="error"></div>' : ""}`;
  // an export sits under its parent: its budget says which one it is
  li.querySelector(".name").textContent = job.parent && li.dataset.parent ? budget(job) : label(job);
  li.querySelector(".name").title = label(job);
  if (warnings.length) li.querySelector(".badge").title = warnings.join("\n");
  if (job.error) li.querySelector(".error").textContent = errorText(job.error);
  const cancel = li.querySelector("[data-cancel]");
  if (cancel) {
    cancel.addEventListener("click", async (ev) => {
      ev.stopPropagation();
      const r = await api(`${API}/${id}/cancel`, { method: "POST" });
      if (r.ok) upsert(await r.json());
      else if (r.status !== 401) showMessage(await problemText(r));
    });
  }
  li.querySelector("[data-delete]").addEventListener("click", async (ev) => {
    ev.stopPropagation();
    if (!confirm(`Delete ${label(job)} and all its files? This cannot be undone.`)) return;
    const r = await api(`${API}/${id}`, { method: "DELETE" });
    if (r.ok || r.status === 404) forget(id);
    else if (r.status !== 401) showMessage(await problemText(r));
  });
}

function forget(id) {
  // the job is gone (deleted, expired): drop it from the list, and from the viewer when shown; its
  // exports went with it
  for (const other of [...jobs.values()]) if (other.parent === id) forget(other.id);
  const ctrl = streams.get(id);
  if (ctrl) ctrl.abort();
  streams.delete(id);
  jobs.delete(id);
  document.querySelector(`li[data-id="${id}"]`)?.remove();
  if (selected === id) unselect();
}

function parseEvent(block) {
  // one Server-Sent Events block (WHATWG HTML, "Server-sent events"): "event:" and "data:" lines
  const ev = { name: "message", data: "" };
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue; // comments are keep-alives
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") ev.name = value;
    else if (field === "data") data.push(value);
  }
  ev.data = data.join("\n");
  return ev;
}

async function follow(id) {
  // the job's event stream, read with fetch() so it carries the API key (EventSource cannot send headers)
  if (streams.has(id)) return;
  const ctrl = new AbortController();
  streams.set(id, ctrl);
  let ended = false;
  try {
    const r = await api(`${API}/${id}/events`, { signal: ctrl.signal, headers: { Accept: "text/event-stream" } });
    if (r.status === 404) { forget(id); return; }
    if (r.status === 401) return;
    if (!r.ok || !r.body) throw new Error(`${r.status}`);
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    while (!ended) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let cut;
      while (!ended && (cut = buffer.indexOf("\n\n")) >= 0) {
        const ev = parseEvent(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
        ended = onEvent(id, ev);
      }
    }
    if (ended) ctrl.abort();
  } catch {
    // a dropped connection: fall through to the retry below
  } finally {
    if (streams.get(id) === ctrl) streams.delete(id);
  }
  if (ended || ctrl.signal.aborted) return;
  setTimeout(() => refresh(id).then(() => {
    const job = jobs.get(id);
    if (job && !TERMINAL.has(job.state)) follow(id);
    else if (job && id === selected) show(id);
  }), 1000);
}

function onEvent(id, ev) {
  // returns true when the stream is over for this job
  const counts = window.__studio.events;
  counts[id] = (counts[id] || 0) + 1;
  if (ev.name === "error") { forget(id); return true; } // expired or deleted while followed
  let job;
  try { job = JSON.parse(ev.data); } catch { return false; }
  if (!job.id) job.id = id;
  upsert(job);
  const stage = job.progress && job.progress.stage;
  if (id === selected && job.links && job.links.picture && stage && stage !== "text_to_image" && !pictures["input-image"]) {
    showPicture("input-image", job.links.picture, id); // the generated picture, as soon as it is made
  }
  if (!TERMINAL.has(job.state)) return false;
  refresh(id).then(() => { if (id === selected) show(id); });
  return true;
}

async function refresh(id) {
  const r = await api(`${API}/${id}`);
  if (r.ok) upsert(await r.json());
  else if (r.status === 404) forget(id);
}

async function loadJobs() {
  const r = await api(`${API}?limit=50`);
  if (!r.ok) return;
  const body = await r.json();
  const list = body.jobs || body.items || body;
  for (const job of [...list].reverse()) {
    upsert(job);
    if (!TERMINAL.has(job.state)) follow(job.id);
  }
}

function select(id) {
  selected = id;
  for (const li of document.querySelectorAll(".job")) li.classList.toggle("selected", li.dataset.id === id);
  show(id);
}

async function loadBackends() {
  // offer only the backends that can run here; say why the others cannot
  const r = await api("/v1/backends");
  if (!r.ok) return;
  const body = await r.json();
  const select = $("options").elements.backend;
  select.replaceChildren();
  const notes = [];
  for (const b of body.items) {
    if (!b.available) { notes.push(b.note); continue; }
    const option = new Option(b.resolves_to ? `${b.name} (→ ${b.resolves_to})` : b.name, b.name);
    option.title = b.note;
    option.selected = b.name === body.default;
    select.append(option);
  }
  $("backend-note").textContent = notes.join("\n");
}

// ---------------------------------------------------------------- the viewer
const canvas = $("canvas");
const renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
renderer.setPixelRatio(Math.min(window.devicePixelRatio, 2));
renderer.outputColorSpace = THREE.SRGBColorSpace;
renderer.toneMapping = THREE.ACESFilmicToneMapping;
const scene = new THREE.Scene();
scene.background = new THREE.Color(0x2a2e36);
const pmrem = new THREE.PMREMGenerator(renderer);
scene.environment = pmrem.fromScene(new RoomEnvironment(), 0.04).texture;
const sun = new THREE.DirectionalLight(0xffffff, 1.2);
sun.position.set(-2, 3, 4);
scene.add(sun);
const camera = new THREE.PerspectiveCamera(35, 1, 0.01, 100);
camera.position.set(0, 0.2, 2.2);
const controls = new OrbitControls(camera, canvas);
controls.enableDamping = true;
let model = null;
const originals = new Map(); // mesh → its PBR material

function resize() {
  const box = $("viewer").getBoundingClientRect();
  renderer.setSize(box.width, box.height, false);
  camera.aspect = box.width / Math.max(box.height, 1);
  camera.updateProjectionMatrix();
}
new ResizeObserver(resize).observe($("viewer"));

renderer.setAnimationLoop(() => {
  controls.update();
  renderer.render(scene, camera);
});

function texelMaterial(texture, swizzle) {
  // show a data texture's stored values as they are (no colour management, no tone mapping):
  // "rgb" for the normal map, "ggg" for roughness and "bbb" for metallic (glTF's metallicRoughness)
  return new THREE.ShaderMaterial({
    uniforms: { map: { value: texture } },
    vertexShader: "varying vec2 vUv; void main() { vUv = uv; gl_Position = projectionMatrix * modelViewMatrix * vec4(position, 1.0); }",
    fragmentShader: `uniform sampler2D map; varying vec2 vUv;
      void main() { gl_FragColor = vec4(texture2D(map, vUv).${swizzle}, 1.0); }`,
  });
}

function applyView() {
  if (!model) return;
  const mode = document.querySelector('input[name="map"]:checked').value;
  const wire = $("wireframe").checked;
  model.traverse((obj) => {
    if (!obj.isMesh) return;
    const pbr = originals.get(obj);
    let mat = pbr;
    const flat = (value) => new THREE.MeshBasicMaterial({ color: new THREE.Color().setScalar(value), toneMapped: false });
    if (mode === "base") mat = new THREE.MeshBasicMaterial({ map: pbr.map, vertexColors: !pbr.map && pbr.vertexColors, toneMapped: false });
    else if (mode === "roughness") mat = pbr.roughnessMap ? texelMaterial(pbr.roughnessMap, "ggg") : flat(pbr.roughness);
    else if (mode === "metallic") mat = pbr.metalnessMap ? texelMaterial(pbr.metalnessMap, "bbb") : flat(pbr.metalness);
    else if (mode === "normal") mat = pbr.normalMap ? texelMaterial(pbr.normalMap, "rgb") : new THREE.MeshNormalMaterial();
    mat.wireframe = wire;
    if (mat !== pbr) pbr.wireframe = false;
    obj.material = mat;
  });
}
$("wireframe").addEventListener("change", applyView);
for (const radio of document.querySelectorAll('input[name="map"]')) radio.addEventListener("change", applyView);

function frame(object) {
  const box = new THREE.Box3().setFromObject(object);
  const size = box.getSize(new THREE.Vector3()).length() || 1;
  const centre = box.getCenter(new THREE.Vector3());
  controls.target.copy(centre);
  camera.near = size / 100;
  camera.far = size * 100;
  // the bounding sphere (radius size/2) fits the vertical field of view with a margin
  const distance = (0.5 * size) / Math.sin(THREE.MathUtils.degToRad(camera.fov / 2)) * 1.05;
  camera.position.copy(centre).add(new THREE.Vector3(0.35, 0.2, 1).normalize().multiplyScalar(distance));
  camera.updateProjectionMatrix();
}

function clearModel(note) {
  // an empty viewer (nothing selected, or a job without a model), with an optional note over it
  if (model) scene.remove(model);
  model = null;
  originals.clear();
  $("viewer-note").textContent = note || "";
  $("viewer-note").hidden = !note;
}

const pictures = { "input-image": null, "cutout-image": null }; // img id → its blob: URL
const picturePaths = { "input-image": null, "cutout-image": null }; // img id → the API path shown (or loading)

async function showPicture(imgId, path, id) {
  const img = $(imgId);
  // the same picture already on screen (or on its way): keep it — a job's every update re-shows it, and a
  // reload would blank it for a moment
  if (path && path === picturePaths[imgId]) return;
  if (pictures[imgId]) URL.revokeObjectURL(pictures[imgId]);
  pictures[imgId] = null;
  picturePaths[imgId] = path || null;
  img.removeAttribute("src");
  if (!path) return;
  try {
    const url = await objectUrl(path);
    if (selected !== id || picturePaths[imgId] !== path) {
      URL.revokeObjectURL(url);
      if (picturePaths[imgId] === path) picturePaths[imgId] = null;
      return;
    }
    pictures[imgId] = url;
    img.src = url;
  } catch {
    // no picture to show (an optimize job's mesh input, an expired file): leave it empty
    if (picturePaths[imgId] === path) picturePaths[imgId] = null;
  }
}

function showWarnings(warnings) {
  const list = $("warnings");
  list.replaceChildren(...warnings.map((w) => Object.assign(document.createElement("li"), { textContent: w })));
  list.hidden = !warnings.length;
}

function unselect() {
  selected = null;
  for (const li of document.querySelectorAll(".job.selected")) li.classList.remove("selected");
  $("title").textContent = "Pick a job to view its asset";
  $("downloads").replaceChildren();
  $("report").textContent = "";
  $("reexport").hidden = true;
  showWarnings([]);
  showPicture("input-image", null, null);
  showPicture("cutout-image", null, null);
  clearModel("");
  setViewerState({ viewer: "empty", jobId: null, error: null });
}

async function download(id, fmt, filename) {
  try {
    const url = await objectUrl(`${API}/${id}/result?format=${fmt}`);
    const a = Object.assign(document.createElement("a"), { href: url, download: filename });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (err) {
    showMessage(`cannot download ${filename}: ${err.message || err}`);
  }
}

async function show(id) {
  const job = jobs.get(id);
  if (!job) return;
  $("title").textContent = `${job.parent ? "re-export of " : ""}${label(job)} — ${job.state}`;
  // an export shows its parent's pictures
  const source = job.parent ? jobs.get(job.parent) || { id: job.parent } : job;
  const isImage = job.parent || (job.input && String(job.input.media_type || "").startsWith("image/"));
  // a prompt job shows the picture its text-to-image stage made (there once that stage is done)
  const generated = source.links && source.links.picture;
  $("input-caption").textContent = generated ? "generated picture" : "input";
  const pictureReady = generated && (TERMINAL.has(source.state) || (source.progress && source.progress.stage && source.progress.stage !== "text_to_image"));
  showPicture("input-image", generated ? (pictureReady ? generated : null) : isImage ? `${API}/${source.id}/input` : null, id);
  showPicture("cutout-image", job.parent ? `${API}/${job.parent}/cutout` : job.links && job.links.cutout, id);
  $("reexport").hidden = !(job.kind === "generate" && job.state === "succeeded");
  if (!$("reexport").hidden) fillReexport(job);
  showWarnings(job.warnings || []);
  $("downloads").replaceChildren();
  $("report").textContent = "";
  if (job.state !== "succeeded") {
    // never leave the previous job's model on screen
    const note = job.error ? `${job.state}: ${errorText(job.error)}`
      : TERMINAL.has(job.state) ? job.state : "the model appears here when the job is done";
    clearModel(note);
    if (job.error) $("report").textContent = errorText(job.error);
    setViewerState({ viewer: "empty", jobId: id, error: job.error ? errorText(job.error) : null });
    return;
  }
  clearModel("loading…");
  for (const fmt of FORMATS) {
    const a = document.createElement("a");
    const stem = label(source).replace(/\.[^.]+$/, "") + (job.parent ? `.${job.options.faces}f` : "");
    const filename = `${stem}.${fmt === "obj" ? "zip" : fmt}`;
    a.href = `${API}/${id}/result?format=${fmt}`;
    a.download = filename;
    a.textContent = `⬇ ${fmt.toUpperCase()}`;
    a.dataset.format = fmt;
    a.addEventListener("click", (ev) => { ev.preventDefault(); download(id, fmt, filename); });
    $("downloads").append(a);
  }
  const rep = job.report;
  if (rep && rep.stages) {
    $("report").textContent = rep.stages.map((s) => `${s.name.padEnd(12)} ${s.seconds.toFixed(3)} s  ${Math.round(s.peak_rss_mb)} MB`).join("\n")
      + `\ntotal        ${(rep.total_seconds || 0).toFixed(3)} s`;
  }
  setViewerState({ viewer: "loading", jobId: id, error: null });
  try {
    const loader = new GLTFLoader().setRequestHeader(authHeaders());
    const gltf = await loader.loadAsync(`${API}/${id}/result?format=glb`);
    if (selected !== id) return;
    clearModel("");
    model = gltf.scene;
    model.traverse((obj) => { if (obj.isMesh) originals.set(obj, obj.material); });
    scene.add(model);
    frame(model);
    applyView();
    setViewerState({ viewer: "ready", jobId: id, error: null, meshes: originals.size });
  } catch (err) {
    if (selected !== id) return;
    clearModel(`cannot load the asset: ${err.message || err}`);
    setViewerState({ viewer: "error", jobId: id, error: String(err) });
  }
}

// ---------------------------------------------------------------- re-export
// a finished generate job's raw reconstruction finished again with other budgets: a new job of kind
// "export" (POST /v1/jobs/{id}/exports), listed under its parent and shown when done
const reexportForm = $("reexport");
$("rx-preset").addEventListener("change", () => {
  // a preset sets both budgets: the custom fields do not apply
  const custom = !$("rx-preset").value;
  $("rx-faces").disabled = !custom;
  $("rx-texture-size").disabled = !custom;
});
reexportForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const parent = selected && jobs.get(selected);
  if (!parent || parent.kind !== "generate") return;
  showMessage("");
  const body = new FormData();
  if ($("rx-preset").value) body.append("preset", $("rx-preset").value);
  else {
    body.append("faces", $("rx-faces").value);
    body.append("texture_size", $("rx-texture-size").value);
  }
  const r = await api(`${API}/${parent.id}/exports`, { method: "POST", body });
  if (!r.ok) {
    if (r.status !== 401) showMessage(withName(label(parent), await problemText(r)));
    return;
  }
  const job = await r.json();
  upsert(job);
  if (!TERMINAL.has(job.state)) follow(job.id);
  select(job.id);
});

// ---------------------------------------------------------------- picking files
const drop = $("drop");
drop.addEventListener("click", () => $("file").click());
drop.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") $("file").click(); });
$("file").addEventListener("change", () => {
  showMessage("");
  for (const file of $("file").files) submit(file);
  $("file").value = "";
});
for (const name of ["dragenter", "dragover"]) drop.addEventListener(name, (ev) => { ev.preventDefault(); drop.classList.add("over"); });
for (const name of ["dragleave", "drop"]) drop.addEventListener(name, () => drop.classList.remove("over"));
$("prompt-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  showMessage("");
  const prompt = $("prompt").value;
  submitPrompt(prompt);
  $("prompt").value = "";
});
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  showMessage("");
  for (const file of ev.dataTransfer.files) submit(file);
});

// ---------------------------------------------------------------- health
async function health() {
  try {
    const r = await fetch("/readyz");
    const body = await r.json().catch(() => ({}));
    $("health").className = `health ${r.ok ? "ok" : "bad"}`;
    const depth = body.queue_depth != null ? ` · queue ${body.queue_depth}` : "";
    $("health").textContent = `${r.ok ? "ready" : "not ready"}${depth}`;
  } catch {
    $("health").className = "health bad";
    $("health").textContent = "offline";
  }
}
health();
setInterval(health, 5000);
loadOptions();
loadBackends();
loadJobs();

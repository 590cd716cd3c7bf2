// meshforge studio: submit pictures to the job service, follow the jobs, look at the assets.
import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
import { RoomEnvironment } from "three/addons/environments/RoomEnvironment.js";

const API = "/v1/jobs";
const FORMATS = ["glb", "obj", "ply", "stl"];
const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

const $ = (id) => document.getElementById(id);
const jobs = new Map(); // id → job JSON
const streams = new Map(); // id → EventSource
let selected = null;

// state for automated checks (the browser test waits on it)
window.__studio = { viewer: "idle", jobId: null, error: null };

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
  const response = await fetch(API, { method: "POST", body });
  if (!response.ok) {
    showMessage(withName(file.name, await problemText(response)));
    return;
  }
  const job = await response.json();
  job._name = file.name;
  upsert(job);
  follow(job.id);
  if (!selected) select(job.id);
}

function errorText(error) {
  if (typeof error === "string") return error;
  return error.message || error.detail || JSON.stringify(error);
}

// ---------------------------------------------------------------- the job list
function label(job) {
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
    li.className = "job";
    li.dataset.id = id;
    li.addEventListener("click", () => select(id));
    $("jobs").prepend(li);
  }
  const p = job.progress || {};
  const pct = job.state === "succeeded" ? 100 : Math.round(p.percent || 0);
  const detail = job.state === "queued" && p.queue_position != null ? `queue position ${p.queue_position}`
    : job.state === "running" ? `${p.stage || "starting"} · ${pct}%`
    : job.state === "succeeded" ? `${job.cached ? "cached · " : ""}${job.degraded ? "degraded · " : ""}done`
    : "";
  li.classList.toggle("selected", id === selected);
  li.innerHTML = `
    <div class="row"><span class="name"></span><span class="state ${job.state}">${job.state}</span></div>
    <div class="bar"><div style="width:${pct}%"></div></div>
    <div class="row"><span class="detail">${detail}</span>${TERMINAL.has(job.state) ? "" : '<button data-cancel>cancel</button>'}</div>
    ${job.error ? '<div class="error"></div>' : ""}`;
  li.querySelector(".name").textContent = label(job);
  if (job.error) li.querySelector(".error").textContent = errorText(job.error);
  const cancel = li.querySelector("[data-cancel]");
  if (cancel) {
    cancel.addEventListener("click", async (ev) => {
      ev.stopPropagation();
      const r = await fetch(`${API}/${id}/cancel`, { method: "POST" });
      if (r.ok) upsert(await r.json());
      else showMessage(await problemText(r));
    });
  }
}

function follow(id) {
  if (streams.has(id)) return;
  const source = new EventSource(`${API}/${id}/events`);
  streams.set(id, source);
  const onData = (ev) => {
    let data;
    try { data = JSON.parse(ev.data); } catch { return; }
    const job = data.job || data;
    if (!job.id) job.id = id;
    upsert(job);
    if (TERMINAL.has(job.state)) {
      source.close();
      streams.delete(id);
      refresh(id).then(() => { if (id === selected) show(id); });
    }
  };
  source.onmessage = onData;
  for (const name of ["progress", "state", "job", "done"]) source.addEventListener(name, onData);
  source.onerror = () => { source.close(); streams.delete(id); setTimeout(() => refresh(id).then(() => {
    const job = jobs.get(id);
    if (job && !TERMINAL.has(job.state)) follow(id);
    else if (id === selected) show(id);
  }), 1000); };
}

async function refresh(id) {
  const r = await fetch(`${API}/${id}`);
  if (r.ok) upsert(await r.json());
}

async function loadJobs() {
  const r = await fetch(`${API}?limit=50`);
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

async function show(id) {
  const job = jobs.get(id);
  if (!job) return;
  $("title").textContent = `${label(job)} — ${job.state}`;
  $("input-image").src = `${API}/${id}/input`;
  $("downloads").innerHTML = "";
  $("report").textContent = "";
  if (job.state !== "succeeded") {
    if (job.error) $("report").textContent = errorText(job.error);
    return;
  }
  for (const fmt of FORMATS) {
    const a = document.createElement("a");
    a.href = `${API}/${id}/result?format=${fmt}`;
    a.download = `${label(job).replace(/\.[^.]+$/, "")}.${fmt === "obj" ? "zip" : fmt}`;
    a.textContent = `⬇ ${fmt.toUpperCase()}`;
    a.dataset.format = fmt;
    $("downloads").append(a);
  }
  const rep = job.report;
  if (rep && rep.stages) {
    $("report").textContent = rep.stages.map((s) => `${s.name.padEnd(12)} ${s.seconds.toFixed(3)} s  ${Math.round(s.peak_rss_mb)} MB`).join("\n")
      + `\ntotal        ${(rep.total_seconds || 0).toFixed(3)} s`
      + (rep.warnings && rep.warnings.length ? `\nwarnings: ${rep.warnings.join("; ")}` : "");
  }
  window.__studio = { viewer: "loading", jobId: id, error: null };
  try {
    const gltf = await new GLTFLoader().loadAsync(`${API}/${id}/result?format=glb`);
    if (selected !== id) return;
    if (model) scene.remove(model);
    model = gltf.scene;
    originals.clear();
    model.traverse((obj) => { if (obj.isMesh) originals.set(obj, obj.material); });
    scene.add(model);
    frame(model);
    applyView();
    window.__studio = { viewer: "ready", jobId: id, error: null, meshes: originals.size };
  } catch (err) {
    showMessage(`cannot load the asset: ${err.message || err}`);
    window.__studio = { viewer: "error", jobId: id, error: String(err) };
  }
}

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
loadJobs();

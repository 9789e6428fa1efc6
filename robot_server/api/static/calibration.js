// Calibration page: workspace box, home pose, camera crops, hand-eye samples. Plain JS, no build step.
"use strict";

// Click handlers: api() has already shown a failure to the operator, so it is not rethrown.
const guard = (fn) => async (...args) => {
  try { await fn(...args); } catch (_) { /* shown in #message */ }
};

const fmt = (v) => (v === null || v === undefined ? "–" : Array.isArray(v) ? "[" + v.map((x) => Number(x).toFixed(3)).join(", ") + "]" : String(v));
const fmtBox = (b) => (b ? `low ${fmt(b.low)} high ${fmt(b.high)}` : "–");

function savedNote(r) {
  const warn = r.warning ? ` — ${r.warning}` : "";
  showMessage(`${r.note} (${r.config_path})${warn}`, Boolean(r.warning));
}

// ---------------------------------------------------------------- token
function initToken() {
  mountTokenBox(refreshAll);
}

// ---------------------------------------------------------------- arm and workspace
async function pollArm() {
  try {
    const st = await api("GET", "/status", undefined, { quiet: true });
    const arm = st.arm || {};
    $("arm-mode").textContent = arm.mode || "–";
    $("arm-pos").textContent = fmt(arm.position);
  } catch (_) {
    $("arm-mode").textContent = "?";
  }
}

function margin() {
  const m = parseFloat($("margin").value);
  return Number.isFinite(m) && m >= 0 ? m : 0;
}

async function refreshWorkspace() {
  const ws = await api("GET", "/calibration/workspace?margin=" + margin(), undefined, { quiet: true });
  const list = $("points");
  list.textContent = "";
  for (const p of ws.points) {
    const li = document.createElement("li");
    li.textContent = fmt(p.position);
    list.appendChild(li);
  }
  $("box").textContent = ws.box ? fmtBox(ws.box) + ` size ${fmt(ws.box.size)}` : ws.problem || "–";
}

async function refreshOverview() {
  const ov = await api("GET", "/calibration", undefined, { quiet: true });
  $("config-path").textContent = ov.config_path || "(no config file)";
  $("box-current").textContent = fmtBox(ov.workspace);
  $("box-saved").textContent = fmtBox(ov.workspace_saved);
  $("home-current").textContent = fmt(ov.home_joints);
  $("home-saved").textContent = fmt(ov.home_joints_saved);
  return ov;
}

function initWorkspace() {
  $("btn-mark").addEventListener("click", guard(async () => {
    const r = await api("POST", "/calibration/workspace/points");
    showMessage(`point ${r.count}: ${fmt(r.point.position)}`, false);
    await refreshWorkspace();
  }));
  $("btn-clear").addEventListener("click", guard(async () => {
    await api("DELETE", "/calibration/workspace/points");
    await refreshWorkspace();
  }));
  $("margin").addEventListener("change", guard(refreshWorkspace));
  $("btn-save-ws").addEventListener("click", guard(async () => {
    savedNote(await api("POST", "/calibration/workspace/save", { margin_m: margin() }));
    await refreshOverview();
  }));
  $("btn-save-home").addEventListener("click", guard(async () => {
    savedNote(await api("POST", "/calibration/home/save"));
    await refreshOverview();
  }));
}

// ---------------------------------------------------------------- keyboard jog
// The same axes as the operator page: +x toward the operator, +y to their right, +z up.
const KEY_AXES = { w: ["x", -1], s: ["x", 1], a: ["y", -1], d: ["y", 1], q: ["z", 1], e: ["z", -1] };
const keys = new Set();
let kbTimer = null;

function axes() {
  const a = { x: 0, y: 0, z: 0, yaw: 0 };
  for (const k of keys) a[KEY_AXES[k][0]] += KEY_AXES[k][1];
  return a;
}

function sendKeys(holdS = 0.3) {
  api("POST", "/teleop/keyboard", { ...axes(), hold_s: holdS }, { quiet: true }).catch(() => {});
}

function kbStop() {
  const had = keys.size > 0;
  keys.clear();
  clearInterval(kbTimer);
  kbTimer = null;
  if (had) sendKeys(0.05);
}

function initKeyboard() {
  document.addEventListener("keydown", (e) => {
    const tag = (e.target && e.target.tagName) || "";
    if (!$("kb-enable").checked || (tag === "INPUT" && e.target.type !== "checkbox")) return;
    const k = e.key.toLowerCase();
    if (!(k in KEY_AXES) || keys.has(k)) return;
    e.preventDefault();
    keys.add(k);
    sendKeys();
    if (!kbTimer) kbTimer = setInterval(() => sendKeys(), 100);
  });
  document.addEventListener("keyup", (e) => {
    const k = e.key.toLowerCase();
    if (!keys.delete(k)) return;
    if (!keys.size) kbStop();
    else sendKeys();
  });
  window.addEventListener("blur", kbStop);
  $("kb-enable").addEventListener("change", () => { if (!$("kb-enable").checked) kbStop(); });
}

// ---------------------------------------------------------------- crops
// One editor per camera: the full view on a canvas at full resolution, the rectangle over it.
class CropEditor {
  constructor(cam, parent) {
    this.cam = cam;
    this.aspect = cam.output.width / cam.output.height;
    this.rect = { ...(cam.crop_saved || cam.crop) };
    this.image = null;
    this.drag = null;
    const fig = document.createElement("figure");
    fig.className = "crop-fig";
    this.canvas = document.createElement("canvas");
    this.canvas.id = `crop-canvas-${cam.name}`;
    this.canvas.width = cam.width;
    this.canvas.height = cam.height;
    const cap = document.createElement("figcaption");
    this.label = document.createElement("span");
    this.label.id = `crop-rect-${cam.name}`;
    const save = document.createElement("button");
    save.type = "button";
    save.id = `crop-save-${cam.name}`;
    save.textContent = "Save crop";
    save.addEventListener("click", guard(() => this.save()));
    const reload = document.createElement("button");
    reload.type = "button";
    reload.textContent = "New snapshot";
    reload.addEventListener("click", guard(() => this.load()));
    cap.append(`${cam.name} (${cam.width}×${cam.height} → ${cam.output.width}×${cam.output.height}): `,
      this.label, " ", save, " ", reload);
    fig.append(this.canvas, cap);
    parent.appendChild(fig);
    this.canvas.addEventListener("pointerdown", (e) => this.down(e));
    this.canvas.addEventListener("pointermove", (e) => this.move(e));
    this.canvas.addEventListener("pointerup", (e) => this.up(e));
    this.draw();
  }

  async load() {
    try {
      const resp = await fetch(`/cameras/${this.cam.name}/snapshot?view=full`, { headers: authHeaders() });
      if (!resp.ok) throw new Error(`${resp.status}`);
      this.image = await createImageBitmap(await resp.blob());
      this.draw();
    } catch (err) {
      showMessage(`snapshot of ${this.cam.name}: ${err.message}`, true);
    }
  }

  point(e) {
    const b = this.canvas.getBoundingClientRect();
    const x = ((e.clientX - b.left) / b.width) * this.cam.width;
    const y = ((e.clientY - b.top) / b.height) * this.cam.height;
    return { x: Math.max(0, Math.min(this.cam.width, x)), y: Math.max(0, Math.min(this.cam.height, y)) };
  }

  inside(p) {
    const r = this.rect;
    return p.x >= r.x && p.x <= r.x + r.w && p.y >= r.y && p.y <= r.y + r.h;
  }

  down(e) {
    const p = this.point(e);
    this.canvas.setPointerCapture(e.pointerId);
    this.drag = this.inside(p) ? { mode: "move", p0: p, r0: { ...this.rect } } : { mode: "draw", p0: p };
  }

  move(e) {
    if (!this.drag) return;
    const p = this.point(e);
    const W = this.cam.width, H = this.cam.height;
    if (this.drag.mode === "move") {
      const r0 = this.drag.r0;
      const x = Math.round(Math.max(0, Math.min(W - r0.w, r0.x + p.x - this.drag.p0.x)));
      const y = Math.round(Math.max(0, Math.min(H - r0.h, r0.y + p.y - this.drag.p0.y)));
      this.rect = { x, y, w: r0.w, h: r0.h };
    } else {
      const p0 = this.drag.p0;
      const sx = p.x >= p0.x ? 1 : -1, sy = p.y >= p0.y ? 1 : -1;
      // The larger drag extent decides the size, at the output's aspect ratio, then it is
      // shrunk to stay inside the frame on the side it grows toward.
      let w = Math.max(Math.abs(p.x - p0.x), Math.abs(p.y - p0.y) * this.aspect);
      const roomX = sx > 0 ? W - p0.x : p0.x, roomY = sy > 0 ? H - p0.y : p0.y;
      w = Math.min(w, roomX, roomY * this.aspect);
      w = Math.max(1, Math.floor(w));
      const h = Math.max(1, Math.min(Math.floor(roomY), Math.round(w / this.aspect)));
      const x = Math.round(sx > 0 ? p0.x : p0.x - w), y = Math.round(sy > 0 ? p0.y : p0.y - h);
      this.rect = { x: Math.max(0, Math.min(W - w, x)), y: Math.max(0, Math.min(H - h, y)), w, h };
    }
    this.draw();
  }

  up(e) {
    if (this.drag) this.move(e);
    this.drag = null;
  }

  draw() {
    const ctx = this.canvas.getContext("2d");
    ctx.clearRect(0, 0, this.cam.width, this.cam.height);
    if (this.image) ctx.drawImage(this.image, 0, 0, this.cam.width, this.cam.height);
    const r = this.rect;
    ctx.fillStyle = "rgba(0,0,0,0.45)"; // dim what the policy will not see
    ctx.fillRect(0, 0, this.cam.width, r.y);
    ctx.fillRect(0, r.y + r.h, this.cam.width, this.cam.height - r.y - r.h);
    ctx.fillRect(0, r.y, r.x, r.h);
    ctx.fillRect(r.x + r.w, r.y, this.cam.width - r.x - r.w, r.h);
    ctx.strokeStyle = "#ff3030";
    ctx.lineWidth = Math.max(1, Math.round(Math.min(this.cam.width, this.cam.height) / 160));
    ctx.strokeRect(r.x + 0.5, r.y + 0.5, r.w - 1, r.h - 1);
    this.label.textContent = `x ${r.x}, y ${r.y}, w ${r.w}, h ${r.h}`;
  }

  async save() {
    const r = await api("PUT", `/calibration/crop/${this.cam.name}`, this.rect);
    savedNote(r);
  }
}

const editors = {};

function initCrops(ov) {
  const names = ov.cameras.map((c) => c.name).join(",");
  if (Object.keys(editors).join(",") === names && names) {
    for (const ed of Object.values(editors)) ed.load(); // same cameras: keep the edits, new pictures
    return;
  }
  const box = $("crops");
  box.textContent = "";
  for (const k of Object.keys(editors)) delete editors[k];
  for (const cam of ov.cameras) {
    editors[cam.name] = new CropEditor(cam, box);
    editors[cam.name].load();
  }
  if (!ov.cameras.length) box.textContent = "no cameras configured";
}

// ---------------------------------------------------------------- hand-eye samples
function initSamples(ov) {
  const box = $("samples");
  box.textContent = "";
  for (const cam of ov.cameras) {
    const row = document.createElement("div");
    row.className = "row";
    const btn = document.createElement("button");
    btn.type = "button";
    btn.id = `sample-${cam.name}`;
    btn.textContent = `Save ${cam.name} sample`;
    const count = document.createElement("span");
    count.id = `sample-count-${cam.name}`;
    count.className = "muted";
    count.textContent = `${cam.handeye_samples} saved`;
    btn.addEventListener("click", guard(async () => {
      const r = await api("POST", "/calibration/handeye/samples", { camera: cam.name });
      count.textContent = `${r.count} saved in ${r.directory}`;
      showMessage(`sample ${r.sample} saved: ${r.image}`, false);
    }));
    row.append(btn, count);
    box.appendChild(row);
  }
}

// ---------------------------------------------------------------- start
async function refreshAll() {
  try {
    const ov = await refreshOverview();
    initCrops(ov);
    initSamples(ov);
    await refreshWorkspace();
  } catch (err) {
    showMessage(String(err.message || err), true);
  }
}

function init() {
  initToken();
  initWorkspace();
  initKeyboard();
  refreshAll();
  pollArm();
  setInterval(pollArm, 500);
}

document.addEventListener("DOMContentLoaded", init);

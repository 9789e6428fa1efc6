// Operator page: drives the robot server's HTTP API and shows its telemetry. Plain JS, no build step.
"use strict";

// A button that calls the API and confirms what happened.
function action(id, fn, confirmText) {
  $(id).addEventListener("click", async () => {
    try {
      const result = await fn();
      showMessage(typeof confirmText === "function" ? confirmText(result) : confirmText, false);
    } catch (_) {
      // already shown by api()
    }
  });
}

// ---------------------------------------------------------------- token
function initToken() {
  mountTokenBox(() => {
    connectTelemetry(true);
    // Reads need the token too when the server binds beyond loopback (server.read_access): retry
    // what failed without it, and reopen the streams with it.
    if (cameraViews.size) showCameras();
    else initCameras();
    loadEpisodes();
    loadEvalResults();
  });
}

// ---------------------------------------------------------------- controls
function initControls() {
  action("btn-estop", () => api("POST", "/estop", { reason: "operator pressed e-stop on the page" }),
    "EMERGENCY STOP sent");
  action("btn-release", () => api("POST", "/estop/release"), "e-stop released");

  action("btn-start", () => api("POST", "/sessions", { policy: $("policy").value }),
    (s) => `session ${s.id} started (${$("policy").value} policy)`);
  action("btn-pause", () => api("POST", "/sessions/current/pause"), "session paused");
  action("btn-resume", () => api("POST", "/sessions/current/resume"), "session resumed");
  action("btn-stop", () => api("POST", "/sessions/current/stop"),
    (s) => `session stopped after ${s.total_steps} steps`);
  action("btn-reset-request", () => {
    const reason = $("reset-reason").value.trim();
    return api("POST", "/sessions/current/reset-request", reason ? { reason } : {});
  }, "manual reset requested for the next forward phase");
  action("btn-reset-done", () => api("POST", "/sessions/current/reset-done"), "reset confirmed");
  action("btn-success", () => api("POST", "/sessions/current/success", {}),
    (r) => `${r.direction} success confirmed at step ${r.step}`);

  action("btn-eval-start", () => {
    const body = {};
    for (const [key, id] of [["episodes", "eval-episodes"], ["horizon", "eval-horizon"]]) {
      const v = $(id).value.trim();
      if (v) body[key] = Number(v);
    }
    return api("POST", "/evals", body);
  }, (e) => `eval ${e.id} started: ${e.episodes} episodes of at most ${e.horizon} steps`);
  action("btn-eval-reset-done", () => api("POST", "/evals/current/reset-done"), "scene reset confirmed");
  action("btn-eval-success", () => api("POST", "/evals/current/verdict", { success: true }), "verdict: success");
  action("btn-eval-failure", () => api("POST", "/evals/current/verdict", { success: false }), "verdict: failure");
  action("btn-eval-stop", () => api("POST", "/evals/current/stop"),
    (e) => `eval stopped: ${e.successes} of ${e.results.length} episodes succeeded`);

  action("btn-demo-start", () => api("POST", "/demos", {
    direction: $("demo-direction").value, source: $("demo-source").value,
  }), (d) => `recording a ${d.direction} demo (${d.source})`);
  action("btn-demo-success", () => api("POST", "/demos/current/finish", { success: true }),
    (d) => (d.closed ? `demo saved as success (${d.steps} steps)`
      : `holding the goal ${d.hold_steps_left} more steps, then the demo is saved`));
  action("btn-demo-failure", () => api("POST", "/demos/current/finish", { success: false }),
    (d) => `demo saved as failure (${d.steps} steps)`);
  action("btn-demo-discard", () => api("POST", "/demos/current/discard"), "demo discarded");

  action("btn-intervention", async () => {
    const reason = $("iv-reason").value.trim();
    if (!reason) {
      showMessage("write what you had to do before recording an intervention", true);
      throw new Error("no reason");
    }
    const iv = await api("POST", "/interventions", { reason });
    $("iv-reason").value = "";
    return iv;
  }, "intervention recorded");

  action("btn-home", () => api("POST", "/arm/home"), "arm going home");
  action("btn-arm-resume", () => api("POST", "/arm/resume"), "arm resumed");
}

// ---------------------------------------------------------------- cameras
const cameraViews = new Map(); // name -> {img, caption, pollTimer}

function cameraView() {
  return document.querySelector('input[name="view"]:checked').value;
}

let camerasLoading = false;

async function initCameras() {
  if (camerasLoading) return;
  camerasLoading = true;
  let data;
  try {
    data = await api("GET", "/cameras", undefined, { quiet: true });
  } catch (err) {
    camerasLoading = false;
    $("cameras").innerHTML = "";
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = `cameras unavailable: ${err.message}`;
    $("cameras").appendChild(p);
    return;
  }
  const box = $("cameras");
  box.innerHTML = "";
  for (const cam of data.cameras) {
    const fig = document.createElement("figure");
    fig.className = "cam";
    const img = document.createElement("img");
    img.alt = `camera ${cam.name}`;
    img.dataset.camera = cam.name;
    const caption = document.createElement("figcaption");
    fig.append(img, caption);
    box.appendChild(fig);
    const entry = { cam, img, caption, pollTimer: null };
    // If the stream fails (no or a wrong token, a proxy that buffers it), fall back to snapshots
    // fetched with the Authorization header.
    img.addEventListener("error", () => startSnapshots(entry));
    cameraViews.set(cam.name, entry);
  }
  if (!data.cameras.length) box.innerHTML = '<p class="muted">no cameras configured</p>';
  camerasLoading = false;
  showCameras();
}

function showCameras() {
  const view = cameraView();
  for (const entry of cameraViews.values()) {
    stopSnapshots(entry);
    const { cam, img, caption } = entry;
    const [w, h] = view === "cropped" ? [cam.output.width, cam.output.height] : [cam.width, cam.height];
    const size = `${w}×${h}`;
    img.style.aspectRatio = `${w} / ${h}`;
    caption.textContent = `${cam.name} · ${view} ${size} · live stream`;
    // An <img> cannot send the Authorization header: the stream takes the token as ?token=.
    const q = new URLSearchParams({ view, fps: "10", t: String(Date.now()) });
    if (token()) q.set("token", token());
    img.src = `/cameras/${encodeURIComponent(cam.name)}/stream?${q}`;
  }
}

function startSnapshots(entry) {
  if (entry.pollTimer) return;
  const view = cameraView();
  entry.caption.textContent = `${entry.cam.name} · ${view} · snapshots`;
  let busy = false;
  entry.pollTimer = setInterval(async () => {
    if (busy) return;
    busy = true;
    try {
      const resp = await fetch(`/cameras/${encodeURIComponent(entry.cam.name)}/snapshot?view=${view}`,
        { headers: authHeaders() });
      if (resp.ok) {
        const url = URL.createObjectURL(await resp.blob());
        const old = entry.img.src;
        entry.img.src = url;
        if (old.startsWith("blob:")) URL.revokeObjectURL(old);
      }
    } catch (_) {
      // the server is away; telemetry shows that
    } finally {
      busy = false;
    }
  }, 250);
}

function stopSnapshots(entry) {
  if (entry.pollTimer) clearInterval(entry.pollTimer);
  entry.pollTimer = null;
}

// ---------------------------------------------------------------- telemetry
let ws = null;
let wsRetry = 1000;
let wsTimer = null;
let everConnected = false;

function connectTelemetry(force) {
  if (ws && !force) return;
  if (ws) {
    ws.onclose = null;
    ws.close();
  }
  clearTimeout(wsTimer);
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const q = new URLSearchParams({ interval: "0.25" });
  if (token()) q.set("token", token());
  ws = new WebSocket(`${proto}//${location.host}/telemetry?${q}`);
  ws.onopen = () => {
    wsRetry = 1000;
    setConn(true);
    if (everConnected) showCameras(); // the server may have restarted: reopen the streams
    everConnected = true;
  };
  ws.onmessage = (ev) => {
    try {
      render(JSON.parse(ev.data));
    } catch (err) {
      console.error("bad telemetry message", err);
    }
  };
  ws.onclose = (ev) => {
    setConn(false, ev.reason);
    ws = null;
    wsTimer = setTimeout(() => connectTelemetry(false), wsRetry);
    wsRetry = Math.min(wsRetry * 2, 5000);
  };
}

function setConn(ok, reason) {
  const el = $("conn");
  el.textContent = ok ? "live" : "offline" + (reason ? `: ${reason}` : "");
  el.className = "pill " + (ok ? "pill-good" : "pill-bad");
}

function text(id, value) {
  const el = $(id);
  const s = value === undefined || value === null || value === "" ? "–" : String(value);
  if (el.textContent !== s) el.textContent = s;
}

function num(v, digits) {
  return typeof v === "number" ? v.toFixed(digits) : v;
}

function fmtTime(t) {
  if (typeof t !== "number") return "–";
  return new Date(t * 1000).toLocaleTimeString();
}

let lastEpisodesClosed = -1;
let lastGripperClosed = false;

function render(m) {
  text("mode", m.mode);
  text("stage", m.stage);
  const arm = m.arm || {};
  text("arm-mode", arm.mode);
  $("estop-banner").hidden = m.mode !== "estop";

  const helps = m.help_requests || [];
  $("help").hidden = helps.length === 0;
  const list = $("help-list");
  const items = helps.map((h) => `${h.source}: ${h.reason}`);
  if (list.dataset.items !== JSON.stringify(items)) {
    list.dataset.items = JSON.stringify(items);
    list.innerHTML = "";
    for (const it of items) {
      const li = document.createElement("li");
      li.textContent = it;
      list.appendChild(li);
    }
  }

  const s = m.session;
  text("s-id", s ? `${s.id} (${s.params.policy})` : "none");
  text("s-direction", s ? s.direction : null);
  text("s-phase", s ? `${s.phase} · step ${s.phase_step}/${s.phase_steps}` : null);
  text("s-steps", s ? s.total_steps : null);
  text("action-source", m.action_source + (m.takeover ? " (operator takeover)" : ""));

  const ev = m.eval;
  text("eval-info", ev ? `eval ${ev.id}, policy v${ev.policy_version ?? "–"}: episode ${ev.episode + 1} of `
    + `${ev.episodes}, ${ev.stage}, step ${ev.steps}/${ev.horizon}; ${ev.successes} successes so far`
    : "no eval running");

  const d = m.demo;
  text("demo-info", d ? `recording ${d.direction} demo by ${d.source}: ${d.stage}, ${d.steps} steps`
    : "no demo recording");

  const c = m.counters || {};
  text("c-interventions", c.interventions);
  text("c-takeovers", c.takeovers);
  text("c-manual-resets", c.manual_resets);
  text("c-demos", c.demos_recorded);
  text("c-estops", c.estops);
  const st = m.store || {};
  text("c-steps", st.steps_written);
  text("c-episodes", st.episodes_closed);
  text("c-backlog", st.backlog);

  const t = m.tick || {};
  text("t-ticks", t.ticks);
  text("t-err-p99", num(t.period_error_ms_p99, 2));
  text("t-work-p99", num(t.work_ms_p99, 2));
  text("t-late", t.late);
  text("t-stale", t.stale_frames);
  text("t-skipped", t.skipped);
  $("t-late").parentElement.classList.toggle("warn", t.late > 0);
  $("t-stale").parentElement.classList.toggle("warn", t.stale_frames > 0);
  text("t-camera-resets", c.stale_camera_resets);
  $("t-camera-resets").parentElement.classList.toggle("warn", c.stale_camera_resets > 0);

  const p = m.policies || {};
  const pol = (x) => (x ? `v${x.version}` + (x.training_step != null ? ` (training step ${x.training_step})` : "") : "none");
  text("p-forward", pol(p.forward));
  text("p-backward", pol(p.backward));
  text("p-swaps", `${p.swaps ?? "–"} / ${p.rejected ?? "–"}`);
  const l = m.learner;
  const behind = l && l.behind_steps ? Object.values(l.behind_steps).reduce((a, b) => a + b, 0) : 0;
  const dropped = l && l.dropped ? Object.values(l.dropped).reduce((a, b) => a + b, 0) : 0;
  text("p-learner", l ? `step ${l.step}, reported ${fmtTime(l.received_at)}`
    + (behind || dropped ? `; behind ${behind} steps, ${dropped} dropped` : "") : "no report");

  text("arm-pos", arm.position ? arm.position.map((v) => v.toFixed(3)).join(", ") : null);
  text("arm-gripper", arm.gripper_width !== undefined
    ? `${arm.gripper_closed ? "closed" : "open"} (${(arm.gripper_width * 1000).toFixed(1)} mm)` : null);
  text("arm-reflexes", arm.reflexes !== undefined ? `${arm.reflexes} / ${arm.recoveries}` : null);
  if (arm.gripper_closed !== undefined && arm.gripper_closed !== lastGripperClosed) {
    lastGripperClosed = arm.gripper_closed;
    if (!keys.size) kbGripper = arm.gripper_closed ? "close" : "open";
    text("kb-gripper", kbGripper === "close" ? "closed" : "open");
  }

  renderEvents(m.recent_events || []);

  if (st.episodes_closed !== undefined && st.episodes_closed !== lastEpisodesClosed) {
    lastEpisodesClosed = st.episodes_closed;
    loadEpisodes();
    loadEvalResults();
  }
}

function renderEvents(events) {
  const ol = $("events");
  const key = events.length ? `${events.length}:${events[events.length - 1].t}` : "0";
  if (ol.dataset.key === key) return;
  ol.dataset.key = key;
  ol.innerHTML = "";
  if (!events.length) {
    ol.innerHTML = '<li class="muted">none yet</li>';
    return;
  }
  for (const ev of events.slice().reverse()) {
    const li = document.createElement("li");
    const time = document.createElement("time");
    time.textContent = fmtTime(ev.t);
    const rest = Object.entries(ev).filter(([k]) => k !== "t" && k !== "event")
      .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
    li.append(time, document.createTextNode(ev.event + (rest ? " · " + rest : "")));
    ol.appendChild(li);
  }
}

// ---------------------------------------------------------------- episodes
let episodesBusy = false;

async function loadEpisodes() {
  if (episodesBusy) return;
  episodesBusy = true;
  try {
    const data = await api("GET", "/episodes?limit=15", undefined, { quiet: true });
    const kinds = Object.entries(data.by_kind).map(([k, n]) => `${k}: ${n}`).join(", ");
    text("episodes-total", `${data.total} closed episodes` + (kinds ? ` · ${kinds}` : ""));
    const body = $("episodes").tBodies[0];
    body.innerHTML = "";
    if (!data.episodes.length) {
      body.innerHTML = '<tr><td colspan="8" class="muted">no episodes recorded yet</td></tr>';
    }
    for (const e of data.episodes) {
      const tr = document.createElement("tr");
      const cells = [e.id, e.kind, e.direction, e.length,
        e.success === null || e.success === undefined ? "–" : e.success ? "yes" : "no",
        e.duration_s ?? "–", fmtTime(e.ended_at), e.end_reason ?? "–"];
      cells.forEach((v, i) => {
        const td = document.createElement("td");
        td.textContent = String(v);
        if (i === 4 && v !== "–") td.className = v === "yes" ? "yes" : "no";
        tr.appendChild(td);
      });
      body.appendChild(tr);
    }
  } catch (err) {
    text("episodes-total", `episodes unavailable: ${err.message}`);
  } finally {
    episodesBusy = false;
  }
}

// ---------------------------------------------------------------- eval results
let evalBusy = false;

async function loadEvalResults() {
  if (evalBusy) return;
  evalBusy = true;
  const body = $("eval-results").tBodies[0];
  try {
    const data = await api("GET", "/evals/results", undefined, { quiet: true });
    body.innerHTML = "";
    if (!data.versions.length) {
      body.innerHTML = '<tr><td colspan="5" class="muted">no policy evaluated yet</td></tr>';
    }
    for (const r of data.versions.slice().reverse()) { // newest version first
      const tr = document.createElement("tr");
      for (const v of [`v${r.version}`, r.episodes, r.successes, `${(100 * r.success_rate).toFixed(0)} %`,
        fmtTime(r.last_at)]) {
        const td = document.createElement("td");
        td.textContent = String(v);
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  } catch (err) {
    body.innerHTML = "";
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 5;
    td.className = "muted";
    td.textContent = `eval results unavailable: ${err.message}`;
    tr.appendChild(td);
    body.appendChild(tr);
  } finally {
    evalBusy = false;
  }
}

// ---------------------------------------------------------------- keyboard teleop
// Held keys become axes in [-1, 1], repeated while held; the server lets them expire, so a lost
// connection or a closed tab stops the arm by itself.
// Robot base frame as teleop.mapping defines it for an operator facing the robot: +x toward
// them, +y to their right, +z up. So W/up (away from the operator) is -x and D/right is +y.
const KEY_AXES = {
  w: ["x", -1], arrowup: ["x", -1], s: ["x", 1], arrowdown: ["x", 1],
  a: ["y", -1], arrowleft: ["y", -1], d: ["y", 1], arrowright: ["y", 1],
  q: ["z", 1], e: ["z", -1], z: ["yaw", 1], x: ["yaw", -1],
};
const REPEAT_MS = 100;
const HOLD_S = 0.3;
const keys = new Set();
let kbTimer = null;
let kbGripper = "open";
let kbErrorShownAt = 0;

function kbEnabled() {
  return $("kb-enable").checked;
}

function typingInField(e) {
  const tag = (e.target && e.target.tagName) || "";
  if (tag === "INPUT") return e.target.type !== "checkbox" && e.target.type !== "radio";
  return tag === "SELECT" || tag === "TEXTAREA";
}

function axes() {
  const a = { x: 0, y: 0, z: 0, yaw: 0 };
  for (const k of keys) {
    const [axis, sign] = KEY_AXES[k];
    a[axis] = Math.max(-1, Math.min(1, a[axis] + sign));
  }
  return a;
}

async function sendKeyboard(extra = {}) {
  try {
    await api("POST", "/teleop/keyboard", { ...axes(), hold_s: HOLD_S, ...extra }, { quiet: true });
  } catch (err) {
    if (Date.now() - kbErrorShownAt > 3000) {
      kbErrorShownAt = Date.now();
      showMessage(`keyboard teleop: ${err.message}`, true);
    }
  }
}

function kbStop() {
  const had = keys.size > 0;
  keys.clear();
  clearInterval(kbTimer);
  kbTimer = null;
  if (had) sendKeyboard({ hold_s: 0.05 }); // all zeros: stop now rather than after HOLD_S
}

function initKeyboard() {
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      $("btn-estop").click();
      return;
    }
    if (!kbEnabled() || typingInField(e) || e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key.toLowerCase();
    if (k === " ") {
      e.preventDefault();
      if (e.repeat) return;
      kbGripper = kbGripper === "close" ? "open" : "close";
      text("kb-gripper", kbGripper === "close" ? "closed" : "open");
      sendKeyboard({ gripper: kbGripper });
      return;
    }
    if (!(k in KEY_AXES)) return;
    e.preventDefault();
    if (keys.has(k)) return;
    keys.add(k);
    sendKeyboard();
    if (!kbTimer) kbTimer = setInterval(() => sendKeyboard(), REPEAT_MS);
  });
  document.addEventListener("keyup", (e) => {
    const k = e.key.toLowerCase();
    // A focused button or checkbox acts on the space keyup: here space is the gripper.
    if (k === " " && kbEnabled() && !typingInField(e)) e.preventDefault();
    if (!keys.has(k)) return;
    keys.delete(k);
    if (!keys.size) kbStop();
    else sendKeyboard();
  });
  window.addEventListener("blur", kbStop);
  $("kb-enable").addEventListener("change", () => {
    $("kb-enable").blur(); // so that space does not toggle the checkbox itself
    if (!kbEnabled()) kbStop();
  });
}

// ---------------------------------------------------------------- morning report
// Without a token the link opens the report itself. With one (reads may be protected, and a link
// cannot send a header) the page is fetched with it and shown from memory: its plots are embedded,
// only its links to the PNG files and report.json then need the token-free route.
function initReportLink() {
  $("report-link").addEventListener("click", async (e) => {
    if (!token()) return;
    e.preventDefault();
    const win = window.open("", "_blank"); // now, inside the click: a later window.open is blocked
    try {
      const resp = await fetch("/reports/latest/", { headers: authHeaders() });
      if (!resp.ok) {
        let why = resp.statusText;
        try { why = describeDetail((await resp.json()).detail) || why; } catch (_) { /* not JSON */ }
        throw new Error(`${resp.status}: ${why}`);
      }
      win.location = URL.createObjectURL(await resp.blob());
    } catch (err) {
      if (win) win.close();
      showMessage(`morning report: ${err.message}`, true);
    }
  });
}

// ---------------------------------------------------------------- start
function init() {
  initToken();
  initControls();
  initReportLink();
  initKeyboard();
  for (const r of document.querySelectorAll('input[name="view"]')) r.addEventListener("change", showCameras);
  connectTelemetry(false);
  loadEpisodes();
  loadEvalResults();
  setInterval(loadEpisodes, 10000);
  setInterval(loadEvalResults, 10000);
}

document.addEventListener("DOMContentLoaded", init);
// Streams start after the load event so an endless MJPEG response never holds the page "loading".
window.addEventListener("load", initCameras);

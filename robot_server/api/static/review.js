// Episode review page: play a recorded episode's stored views with each step's data and both
// classifiers' scores, and label it (episode success / failure, frame ranges goal / not goal).
// Plain JS, no build step; API calls and the token come from common.js.
"use strict";

const WHO_KEY = "review-who";
const FRAME_CACHE = 400; // decoded frames kept (a few MB at policy-view sizes)
const PREFETCH = 8; // frames fetched ahead while playing
const SCORE_COLORS = { forward: "#1f5fbf", backward: "#d9480f" };
const PLOT_PAD = { left: 34, right: 10, top: 14, bottom: 18 }; // px of the plot canvas around the axes

const state = {
  ep: null, // GET /episodes/{id}/steps
  labels: null, // GET /episodes/{id}/labels
  cur: 0,
  playing: false,
  timer: null,
  range: { start: null, end: null },
  frames: new Map(), // "episode/step/camera" -> Promise<ImageBitmap>
  canvases: new Map(), // camera -> canvas
};

// Click handlers: api() has already shown a failure to the operator, so it is not rethrown.
const guard = (fn) => async (...args) => {
  try { await fn(...args); } catch (_) { /* shown in #message */ }
};

const fmtTime = (t) => (typeof t === "number" ? new Date(t * 1000).toLocaleTimeString() : "–");

// ---------------------------------------------------------------- token and name
function initToken() {
  mountTokenBox(() => {
    // Reads may need the token too (server.protect_reads): retry what failed without it.
    loadEpisodes();
    loadClassifiers();
    if (state.ep) selectEpisode(state.ep.episode, true);
  });
  $("who").value = localStorage.getItem(WHO_KEY) || "";
  $("who").addEventListener("change", () => localStorage.setItem(WHO_KEY, $("who").value.trim()));
}

// ---------------------------------------------------------------- episode list
async function loadEpisodes() {
  const q = new URLSearchParams({ limit: "500" });
  if ($("f-kind").value) q.set("kind", $("f-kind").value);
  if ($("f-direction").value) q.set("direction", $("f-direction").value);
  if ($("f-open").checked) q.set("include_open", "true");
  const body = $("episode-list").tBodies[0];
  let data;
  try {
    data = await api("GET", `/episodes?${q}`, undefined, { quiet: true });
  } catch (err) {
    body.innerHTML = "";
    body.appendChild(cellRow(`episodes unavailable: ${err.message}`));
    return;
  }
  $("episodes-total").textContent = `${data.total} episode${data.total === 1 ? "" : "s"}`
    + (data.episodes.length < data.total ? `, newest ${data.episodes.length} shown` : "");
  body.innerHTML = "";
  if (!data.episodes.length) body.appendChild(cellRow("no episodes match"));
  for (const e of data.episodes) {
    const tr = document.createElement("tr");
    tr.dataset.id = e.id;
    const success = e.success === true ? "yes" : e.success === false ? "no" : "–";
    const cells = [e.id, e.kind, e.direction, e.closed ? e.length : `${e.length} (recording)`, success];
    for (const c of cells) {
      const td = document.createElement("td");
      td.textContent = String(c);
      tr.appendChild(td);
    }
    tr.cells[4].className = e.success === true ? "yes" : e.success === false ? "no" : "";
    tr.title = e.closed ? `ended ${fmtTime(e.ended_at)}` + (e.end_reason ? ` (${e.end_reason})` : "") : "being recorded";
    tr.classList.toggle("selected", state.ep !== null && state.ep.episode === e.id);
    tr.addEventListener("click", () => selectEpisode(e.id));
    body.appendChild(tr);
  }
}

function cellRow(text) {
  const tr = document.createElement("tr");
  const td = document.createElement("td");
  td.colSpan = 5;
  td.className = "muted";
  td.textContent = text;
  tr.appendChild(td);
  return tr;
}

async function loadClassifiers() {
  try {
    const c = await api("GET", "/classifiers", undefined, { quiet: true });
    const part = (name, x) => `${name} ${x ? "v" + x.version : "none"}`;
    $("clf-info").textContent = `classifiers: ${part("goal", c.forward)} · ${part("state-matching", c.backward)}`;
  } catch (err) {
    $("clf-info").textContent = `classifiers: ${err.message}`;
  }
}

// ---------------------------------------------------------------- one episode
async function selectEpisode(id, keepCursor) {
  pause();
  let ep;
  let labels;
  try {
    [ep, labels] = await Promise.all([
      api("GET", `/episodes/${encodeURIComponent(id)}/steps`),
      api("GET", `/episodes/${encodeURIComponent(id)}/labels`),
    ]);
  } catch (_) {
    return; // shown by api()
  }
  const same = state.ep && state.ep.episode === ep.episode;
  if (!same) {
    for (const p of state.frames.values()) p.then((b) => b.close(), () => {});
    state.frames.clear();
    state.range = { start: null, end: null };
  }
  state.ep = ep;
  state.labels = labels;
  history.replaceState(null, "", `#episode=${ep.episode}`);
  for (const tr of $("episode-list").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.id === ep.episode);

  $("ep-title").textContent = `Episode ${ep.episode}`;
  const clfs = Object.entries(ep.classifiers).map(([d, c]) => `${d} classifier v${c.version}`);
  $("ep-meta").textContent = `${ep.kind} · ${ep.direction}` + (ep.phase !== null ? ` · phase ${ep.phase}` : "")
    + ` · ${ep.length} steps${ep.closed ? "" : " (recording)"} · `
    + (clfs.length ? `scored by ${clfs.join(", ")}` : "no classifiers loaded: no scores yet");
  buildViews(ep.cameras);
  const last = Math.max(ep.length - 1, 0);
  $("step-slider").max = String(last);
  $("step-last").textContent = ep.length ? String(last) : "–";
  for (const id2 of ["btn-play", "step-slider", "btn-reload", "btn-success", "btn-failure", "btn-range-start",
    "btn-range-end", "btn-goal", "btn-not-goal"]) {
    $(id2).disabled = !ep.length && id2 !== "btn-reload";
  }
  renderLabels();
  show(keepCursor && same ? Math.min(state.cur, last) : 0);
}

function buildViews(cameras) {
  const box = $("views");
  box.innerHTML = "";
  state.canvases.clear();
  for (const cam of cameras) {
    const fig = document.createElement("figure");
    fig.className = "view";
    const canvas = document.createElement("canvas");
    canvas.dataset.camera = cam;
    const cap = document.createElement("figcaption");
    cap.textContent = `${cam} · stored policy view`;
    fig.append(canvas, cap);
    box.appendChild(fig);
    state.canvases.set(cam, canvas);
  }
}

function frame(step, camera) {
  const ep = state.ep;
  const key = `${ep.episode}/${step}/${camera}`;
  let p = state.frames.get(key);
  if (p) {
    state.frames.delete(key); // most recently used last
  } else {
    const url = `/episodes/${encodeURIComponent(ep.episode)}/frames/${step}.jpg?camera=${encodeURIComponent(camera)}`;
    p = fetch(url, { headers: authHeaders() }).then(async (resp) => {
      if (!resp.ok) throw new Error(`frame ${step} of ${camera}: HTTP ${resp.status}`);
      return createImageBitmap(await resp.blob());
    });
    p.catch(() => state.frames.delete(key)); // fetch it again next time
  }
  state.frames.set(key, p);
  while (state.frames.size > FRAME_CACHE) {
    const [oldKey, old] = state.frames.entries().next().value;
    state.frames.delete(oldKey);
    old.then((b) => b.close(), () => {});
  }
  return p;
}

function drawFrames(step) {
  const epId = state.ep.episode;
  for (const [cam, canvas] of state.canvases) {
    frame(step, cam).then((bmp) => {
      if (!state.ep || state.ep.episode !== epId || state.cur !== step) return; // the cursor moved on
      if (canvas.width !== bmp.width || canvas.height !== bmp.height) {
        canvas.width = bmp.width;
        canvas.height = bmp.height;
      }
      canvas.getContext("2d").drawImage(bmp, 0, 0);
    }, (err) => {
      if (state.cur === step) showMessage(err.message, true);
    });
  }
}

// ---------------------------------------------------------------- cursor, panel, playback
function show(step) {
  const ep = state.ep;
  if (!ep || !ep.length) {
    drawPlot();
    return;
  }
  state.cur = Math.max(0, Math.min(ep.length - 1, Math.round(step)));
  const s = ep.steps[state.cur];
  $("step-slider").value = String(state.cur);
  $("step-now").textContent = String(state.cur);
  $("f-step").textContent = `${s.index} of ${ep.length}`;
  $("f-time").textContent = `${(s.timestamp - ep.steps[0].timestamp).toFixed(2)} s`;
  $("f-phase").textContent = `${s.phase ?? "–"} · ${s.direction}`;
  $("f-action").textContent = "[" + s.action.map((a) => a.toFixed(3)).join(", ") + "]";
  $("f-policy").textContent = s.policy_version < 0 ? "none (no learned policy)" : `v${s.policy_version}`;
  $("f-intervention").textContent = s.intervention ? "yes" : "no";
  $("f-intervention").className = s.intervention ? "flag-on" : "";
  for (const d of ["forward", "backward"]) {
    const p = s.scores[d];
    const c = ep.classifiers[d];
    $(`f-score-${d}`).textContent = p === undefined ? "not loaded" : `${p.toFixed(3)} (v${c.version})`;
  }
  drawFrames(state.cur);
  drawPlot();
}

function play() {
  const ep = state.ep;
  if (!ep || !ep.length) return;
  if (state.cur >= ep.length - 1) show(0); // from the start again
  state.playing = true;
  $("btn-play").textContent = "Pause";
  tick();
}

function pause() {
  state.playing = false;
  clearTimeout(state.timer);
  $("btn-play").textContent = "Play";
}

function tick() {
  const ep = state.ep;
  if (!state.playing || !ep) return;
  for (let k = 1; k <= PREFETCH && state.cur + k < ep.length; k++) {
    for (const cam of state.canvases.keys()) frame(state.cur + k, cam);
  }
  const period = 1000 / ((ep.rate_hz || 10) * Number($("speed").value));
  state.timer = setTimeout(() => {
    if (!state.playing) return;
    if (state.cur >= ep.length - 1) {
      pause();
      return;
    }
    show(state.cur + 1);
    tick();
  }, period);
}

// ---------------------------------------------------------------- the score plot
function plotGeometry(canvas) {
  const n = state.ep ? state.ep.length : 0;
  const w = canvas.clientWidth - PLOT_PAD.left - PLOT_PAD.right;
  const h = canvas.clientHeight - PLOT_PAD.top - PLOT_PAD.bottom;
  const x = (i) => PLOT_PAD.left + (n > 1 ? (i / (n - 1)) * w : w / 2);
  const y = (p) => PLOT_PAD.top + (1 - p) * h;
  const stepAt = (px) => (n > 1 ? ((px - PLOT_PAD.left) / w) * (n - 1) : 0);
  return { n, w, h, x, y, stepAt };
}

// Runs of consecutive frame numbers as [first, last] pairs.
function runs(frames) {
  const out = [];
  for (const f of frames) {
    if (out.length && out[out.length - 1][1] === f - 1) out[out.length - 1][1] = f;
    else out.push([f, f]);
  }
  return out;
}

function drawPlot() {
  const canvas = $("plot");
  const dpr = window.devicePixelRatio || 1;
  const cw = Math.round(canvas.clientWidth * dpr);
  const ch = Math.round(canvas.clientHeight * dpr);
  if (canvas.width !== cw || canvas.height !== ch) {
    canvas.width = cw;
    canvas.height = ch;
  }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, canvas.clientWidth, canvas.clientHeight);
  const ep = state.ep;
  const { n, w, h, x, y } = plotGeometry(canvas);
  const half = n > 1 ? w / (n - 1) / 2 : 2; // a frame's half width on the x axis
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = "#667085";
  if (!ep || !n) {
    g.fillText(ep ? "this episode has no committed steps yet" : "pick an episode", PLOT_PAD.left, PLOT_PAD.top + 14);
    return;
  }

  // Labels: current goal / not-goal frames as bands, the range being marked, the verdict.
  const band = (first, last, color, alpha) => {
    g.globalAlpha = alpha;
    g.fillStyle = color;
    g.fillRect(x(first) - half, PLOT_PAD.top, x(last) - x(first) + 2 * half, h);
    g.globalAlpha = 1;
    g.fillRect(x(first) - half, PLOT_PAD.top - 6, x(last) - x(first) + 2 * half, 5);
  };
  const lb = state.labels || { goal_frames: [], not_goal_frames: [] };
  for (const [a, b] of runs(lb.goal_frames)) band(a, b, "#1a7f37", 0.15);
  for (const [a, b] of runs(lb.not_goal_frames)) band(a, b, "#c01c28", 0.15);
  const r = markedRange();
  if (r) band(r.start, r.stop - 1, "#7c8ea8", 0.25);

  // Axes: 0, 0.5, 1 and the step ticks.
  g.strokeStyle = "#d8dce3";
  g.fillStyle = "#667085";
  g.lineWidth = 1;
  for (const p of [0, 0.5, 1]) {
    g.beginPath();
    g.setLineDash(p === 0.5 ? [4, 4] : []);
    g.moveTo(PLOT_PAD.left, y(p));
    g.lineTo(PLOT_PAD.left + w, y(p));
    g.stroke();
    g.fillText(p.toFixed(1), 4, y(p) + 4);
  }
  g.setLineDash([]);
  const every = Math.max(1, Math.ceil(n / 10 / 10) * 10);
  for (let i = 0; i < n; i += every) g.fillText(String(i), x(i) - 4, PLOT_PAD.top + h + 13);

  // Interventions: ticks along the bottom.
  g.fillStyle = "#a15c00";
  ep.steps.forEach((s, i) => { if (s.intervention) g.fillRect(x(i) - 1, PLOT_PAD.top + h - 6, 2, 6); });

  // The scores.
  for (const d of Object.keys(ep.classifiers)) {
    g.strokeStyle = SCORE_COLORS[d] || "#333";
    g.lineWidth = 1.5;
    g.beginPath();
    ep.steps.forEach((s, i) => (i ? g.lineTo(x(i), y(s.scores[d])) : g.moveTo(x(i), y(s.scores[d]))));
    if (n === 1) g.arc(x(0), y(ep.steps[0].scores[d]), 2, 0, 2 * Math.PI);
    g.stroke();
  }
  if (!Object.keys(ep.classifiers).length) {
    g.fillStyle = "#667085";
    g.fillText("no classifiers loaded: the learner pushes them as it trains", PLOT_PAD.left + 6, PLOT_PAD.top + 14);
  }

  const verdict = lb.verdict;
  if (verdict) {
    g.font = "bold 12px system-ui, sans-serif";
    g.fillStyle = verdict === "success" ? "#1a7f37" : "#c01c28";
    const t = `episode: ${verdict}`;
    g.fillText(t, PLOT_PAD.left + w - g.measureText(t).width - 4, PLOT_PAD.top + 12);
  }

  // The cursor.
  g.strokeStyle = "#1d2330";
  g.lineWidth = 1.5;
  g.beginPath();
  g.moveTo(x(state.cur), PLOT_PAD.top - 8);
  g.lineTo(x(state.cur), PLOT_PAD.top + h);
  g.stroke();
}

function initPlot() {
  const canvas = $("plot");
  let dragging = false;
  const scrub = (ev) => {
    if (!state.ep || !state.ep.length) return;
    const rect = canvas.getBoundingClientRect();
    show(plotGeometry(canvas).stepAt(ev.clientX - rect.left));
  };
  canvas.addEventListener("pointerdown", (ev) => {
    dragging = true;
    canvas.setPointerCapture(ev.pointerId);
    pause();
    scrub(ev);
  });
  canvas.addEventListener("pointermove", (ev) => { if (dragging) scrub(ev); });
  const stop = () => { dragging = false; };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
  window.addEventListener("resize", drawPlot);
}

// ---------------------------------------------------------------- labels
function markedRange() {
  const { start, end } = state.range;
  if (start === null || end === null) return null;
  return { start: Math.min(start, end), stop: Math.max(start, end) + 1 };
}

function renderRange() {
  const { start, end } = state.range;
  const r = markedRange();
  $("range").textContent = r ? `frames ${r.start}–${r.stop - 1} (${r.stop - r.start})`
    : start !== null ? `from ${start}, set the end` : end !== null ? `to ${end}, set the start` : "–";
  drawPlot();
}

function renderLabels() {
  const lb = state.labels;
  const v = lb ? lb.verdict : null;
  $("verdict").textContent = v || "none";
  $("verdict").className = v ? `verdict-${v}` : "";
  const text = (frames) => (frames.length ? runs(frames).map(([a, b]) => (a === b ? `${a}` : `${a}–${b}`)).join(", ") : "none");
  $("goal-frames").textContent = lb ? text(lb.goal_frames) : "–";
  $("not-goal-frames").textContent = lb ? text(lb.not_goal_frames) : "–";
  const ol = $("label-history");
  ol.innerHTML = "";
  const items = lb ? lb.labels.slice().reverse() : [];
  if (!items.length) ol.innerHTML = '<li class="muted">no labels</li>';
  for (const l of items) {
    const li = document.createElement("li");
    const t = document.createElement("time");
    t.textContent = fmtTime(l.time);
    const what = l.start === null ? `episode ${l.verdict}` : `${l.verdict.replace("_", " ")} frames ${l.start}–${l.stop - 1}`;
    li.append(t, `${what} by ${l.who}`);
    ol.appendChild(li);
  }
  renderRange();
}

function who() {
  const name = $("who").value.trim();
  if (!name) {
    showMessage("write your name before labelling: it is kept with the label", true);
    $("who").focus();
    throw new Error("no name");
  }
  localStorage.setItem(WHO_KEY, name);
  return name;
}

async function addLabel(verdict, range) {
  const ep = state.ep;
  const body = { verdict, who: who() };
  if (range) Object.assign(body, range);
  const r = await api("POST", `/episodes/${encodeURIComponent(ep.episode)}/labels`, body);
  if (!state.ep || state.ep.episode !== ep.episode) return;
  state.labels = { verdict: r.verdict, goal_frames: r.goal_frames, not_goal_frames: r.not_goal_frames, labels: r.labels };
  renderLabels();
  showMessage(range ? `frames ${range.start}–${range.stop - 1} of episode ${ep.episode} labelled ${verdict.replace("_", " ")}`
    : `episode ${ep.episode} marked ${verdict}`, false);
}

function labelRange(verdict) {
  const r = markedRange();
  if (!r) {
    showMessage("set the range start and end at the cursor first", true);
    throw new Error("no range");
  }
  return addLabel(verdict, r);
}

// ---------------------------------------------------------------- wiring
function initControls() {
  for (const id of ["f-kind", "f-direction", "f-open"]) $(id).addEventListener("change", loadEpisodes);
  $("btn-refresh").addEventListener("click", () => { loadEpisodes(); loadClassifiers(); });
  $("btn-reload").addEventListener("click", () => state.ep && selectEpisode(state.ep.episode, true));
  $("btn-play").addEventListener("click", () => (state.playing ? pause() : play()));
  $("step-slider").addEventListener("input", () => { pause(); show(Number($("step-slider").value)); });
  $("btn-range-start").addEventListener("click", () => { state.range.start = state.cur; renderRange(); });
  $("btn-range-end").addEventListener("click", () => { state.range.end = state.cur; renderRange(); });
  $("btn-success").addEventListener("click", guard(() => addLabel("success")));
  $("btn-failure").addEventListener("click", guard(() => addLabel("failure")));
  $("btn-goal").addEventListener("click", guard(() => labelRange("goal")));
  $("btn-not-goal").addEventListener("click", guard(() => labelRange("not_goal")));
  // Arrow keys step through the episode (not while typing).
  document.addEventListener("keydown", (e) => {
    if (!state.ep || ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName)) return;
    if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
      e.preventDefault();
      pause();
      show(state.cur + (e.key === "ArrowRight" ? 1 : -1));
    }
  });
}

initToken();
initControls();
initPlot();
drawPlot();
loadClassifiers();
loadEpisodes().then(() => {
  const m = location.hash.match(/episode=([A-Za-z0-9_.-]+)/);
  if (m) selectEpisode(m[1]);
});

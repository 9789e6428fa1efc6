// Shared by the operator, calibration and review pages (app.js, calibration.js, review.js): the
// bearer token in localStorage and its box in the header, API calls that show the server's
// `detail` on failure, and messages.
"use strict";

const TOKEN_KEY = "robot-server-token";
const $ = (id) => document.getElementById(id);

function token() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

function authHeaders() {
  const t = token();
  return t ? { Authorization: "Bearer " + t } : {};
}

function describeDetail(detail) {
  if (detail === undefined || detail === null) return "";
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => (d.loc ? d.loc.join(".") + ": " : "") + (d.msg || JSON.stringify(d))).join("; ");
  }
  return JSON.stringify(detail);
}

// Calls the API; on an error shows the server's `detail` to the operator and throws.
async function api(method, path, body, { quiet = false } = {}) {
  const headers = { ...authHeaders() };
  const opts = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, opts);
  } catch (err) {
    showMessage(`${method} ${path}: server unreachable (${err.message})`, true);
    throw err;
  }
  let data = null;
  const text = await resp.text();
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = text;
  }
  if (!resp.ok) {
    const why = (data && typeof data === "object" ? describeDetail(data.detail) : String(data || "")) || resp.statusText;
    if (!quiet) showMessage(`${method} ${path} → ${resp.status}: ${why}`, true);
    const err = new Error(why);
    err.status = resp.status;
    throw err;
  }
  return data;
}

let messageTimer = null;
function showMessage(text, isError) {
  const el = $("message");
  el.textContent = text;
  el.className = "message " + (isError ? "error" : "ok");
  el.hidden = false;
  clearTimeout(messageTimer);
  // Errors stay until the next message; confirmations fade after a few seconds.
  if (!isError) messageTimer = setTimeout(() => { el.hidden = true; }, 4000);
}

// Builds the token box every page has in its header (after the title) and calls `onSave` once a
// token typed there is saved (Save or Enter): the page reloads what needed it.
function mountTokenBox(onSave) {
  const box = document.createElement("div");
  box.className = "token";
  box.innerHTML = '<label for="token">Token</label>' +
    '<input id="token" type="password" autocomplete="off" placeholder="server.token" size="18">' +
    '<button id="save-token" type="button">Save</button>';
  document.querySelector("header.topbar .title").after(box);
  $("token").value = token();
  const save = () => {
    localStorage.setItem(TOKEN_KEY, $("token").value.trim());
    showMessage("token saved in this browser", false);
    onSave();
  };
  $("save-token").addEventListener("click", save);
  $("token").addEventListener("keydown", (e) => { if (e.key === "Enter") save(); });
}

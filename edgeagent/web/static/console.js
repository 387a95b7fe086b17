// The edgeagent web console: pair, connect over WebRTC (one POST of the offer, WHIP style),
// show state, transcripts and latency, chat, and edit the config over the data channel.
// Plain JS, no build step. What the page measured is kept in window.edgeagent (tests read it).
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "edgeagent.token";
const SPEECH_RMS = 0.0056; // -45 dBFS: mic sound above is speech (scripts/bench's silence threshold)
const REPLY_RMS = 0.001; // -60 dBFS: the agent's reply has started (as scripts/bench-room times it)
const QUIET_MS = 300; // the agent's voice after this much quiet is a new reply
const BURST_GAP_MS = 700; // mic sound after this much quiet starts a new utterance

const ea = (window.edgeagent = {
  state: "offline", connected: false, paired: false, errors: [],
  transcripts: [], metrics: [], replies: [], micBursts: [], micPeak: 0, agentPeak: 0, agentEnergy: 0,
  lastMicSpeech: null, configRevision: null, lastConfigResult: null,
});

let token = localStorage.getItem(TOKEN_KEY) || "";
let pc = null, channel = null, location_ = null, localStream = null, audioCtx = null, meterTimer = null;
let rpcId = 0;
const pending = new Map();
let schema = null, current = null;

function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers.Authorization = "Bearer " + token;
  return fetch(path, Object.assign({}, options, { headers }));
}

async function errorText(resp) {
  try { const body = await resp.json(); return body.message || body.error || resp.statusText; }
  catch (e) { return resp.status + " " + resp.statusText; }
}

function showError(where, text) {
  $(where).textContent = text;
  if (text) ea.errors.push({ where, text });
}

// -- pairing ------------------------------------------------------------------------------

function showPaired(paired) {
  ea.paired = paired;
  $("pair-card").hidden = paired;
  for (const id of ["talk-card", "chat-card", "latency-card", "config-card"]) $(id).hidden = !paired;
}

async function checkToken() {
  if (!token) return showPaired(false);
  const resp = await api("/api/info");
  if (resp.ok) { ea.info = await resp.json(); showPaired(true); }
  else { token = ""; localStorage.removeItem(TOKEN_KEY); showPaired(false); }
}

$("pair-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  showError("pair-error", "");
  const resp = await fetch("/api/pair", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ code: $("pair-code").value }),
  });
  if (!resp.ok) return showError("pair-error", await errorText(resp));
  token = (await resp.json()).token;
  localStorage.setItem(TOKEN_KEY, token);
  $("pair-code").value = "";
  await checkToken();
});

// -- connecting ---------------------------------------------------------------------------

function setState(state) {
  ea.state = state;
  $("state").textContent = state;
  $("state").dataset.state = state;
}

function rms(analyser, buf) {
  analyser.getFloatTimeDomainData(buf);
  let sum = 0;
  for (let i = 0; i < buf.length; i++) sum += buf[i] * buf[i];
  return Math.sqrt(sum / buf.length);
}

function startMeters(remoteStream) {
  audioCtx = audioCtx || new AudioContext();
  audioCtx.resume();
  const mic = audioCtx.createAnalyser(), agent = audioCtx.createAnalyser();
  mic.fftSize = agent.fftSize = 512;
  audioCtx.createMediaStreamSource(localStream).connect(mic);
  audioCtx.createMediaStreamSource(remoteStream).connect(agent);
  const buf = new Float32Array(512);
  let lastAgentSound = -1e9;
  meterTimer = setInterval(() => {
    const now = performance.now();
    const m = rms(mic, buf), a = rms(agent, buf);
    ea.micPeak = Math.max(ea.micPeak, m);
    ea.agentPeak = Math.max(ea.agentPeak, a);
    ea.agentEnergy += a * a;
    if (m > SPEECH_RMS) {
      const last = ea.micBursts[ea.micBursts.length - 1];
      if (last && now - last.end < BURST_GAP_MS) last.end = now;
      else ea.micBursts.push({ start: now, end: now });
      ea.lastMicSpeech = now;
    }
    if (a > REPLY_RMS) {
      if (now - lastAgentSound > QUIET_MS) {
        const latency = ea.lastMicSpeech === null ? null : Math.round(now - ea.lastMicSpeech);
        ea.replies.push({ at: now, latency_ms: latency, mic_end: ea.lastMicSpeech });
        addPageLatency(latency);
      }
      lastAgentSound = now;
    }
    $("mic-level").style.width = Math.min(100, m * 400) + "%";
    $("agent-level").style.width = Math.min(100, a * 400) + "%";
  }, 10);
}

async function waitForIce(conn, ms) {
  if (conn.iceGatheringState === "complete") return;
  await new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    conn.addEventListener("icegatheringstatechange", () => {
      if (conn.iceGatheringState === "complete") { clearTimeout(t); resolve(); }
    });
  });
}

async function connect() {
  showError("conn-error", "");
  $("connect").disabled = true;
  try {
    localStream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    const info = ea.info || {};
    pc = new RTCPeerConnection({ iceServers: info.ice_servers || [] });
    localStream.getAudioTracks().forEach((t) => pc.addTrack(t, localStream));
    const remoteStream = new MediaStream();
    pc.addEventListener("track", (ev) => {
      // A LAN has next to no jitter: ask the browser to hold as little of the agent's voice as it can.
      if ("jitterBufferTarget" in ev.receiver) ev.receiver.jitterBufferTarget = 0;
      remoteStream.addTrack(ev.track);
      $("remote-audio").srcObject = remoteStream; // Chrome plays remote WebRTC audio through an element
      startMeters(remoteStream);
    });
    pc.addEventListener("connectionstatechange", () => {
      $("conn-status").textContent = pc ? pc.connectionState : "closed";
      if (pc && pc.connectionState === "failed") { showError("conn-error", "the connection failed"); disconnect(); }
    });
    channel = pc.createDataChannel("edgeagent");
    channel.addEventListener("message", (ev) => onMessage(JSON.parse(ev.data)));
    channel.addEventListener("open", () => { ea.connected = true; loadConfig(); });
    channel.addEventListener("close", () => { ea.connected = false; });
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIce(pc, 3000);
    const resp = await api("/whip", {
      method: "POST", headers: { "Content-Type": "application/sdp" }, body: pc.localDescription.sdp,
    });
    if (!resp.ok) throw new Error(await errorText(resp));
    location_ = resp.headers.get("Location");
    await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
    $("disconnect").disabled = false;
  } catch (err) {
    showError("conn-error", String(err.message || err));
    await disconnect(true);
  }
}

async function disconnect(failed) {
  if (location_) { const url = location_; location_ = null; try { await api(url, { method: "DELETE" }); } catch (e) { /* gone */ } }
  if (meterTimer) clearInterval(meterTimer);
  meterTimer = null;
  if (pc) pc.close();
  pc = null; channel = null; ea.connected = false;
  if (localStream) localStream.getTracks().forEach((t) => t.stop());
  localStream = null;
  setState("offline");
  $("connect").disabled = false;
  $("disconnect").disabled = true;
  $("config-save").disabled = $("config-reload").disabled = true;
  if (!failed) $("conn-status").textContent = "not connected";
}

// Closing or reloading the page hangs up at once, so the board's place is free for the next page.
window.addEventListener("pagehide", () => {
  if (location_) fetch(location_, { method: "DELETE", keepalive: true, headers: { Authorization: "Bearer " + token } });
});

$("connect").addEventListener("click", connect);
$("disconnect").addEventListener("click", () => disconnect());

// -- messages from the board --------------------------------------------------------------

function transcriptItem(msg) {
  let li = document.querySelector(`#transcript li[data-segment="${msg.segment}"]`);
  if (!li) {
    li = document.createElement("li");
    li.dataset.segment = msg.segment;
    li.className = msg.role;
    $("transcript").appendChild(li);
  }
  li.textContent = msg.text;
  li.classList.toggle("interim", !msg.final);
  $("transcript").scrollTop = $("transcript").scrollHeight;
}

function onMessage(msg) {
  if (msg.type === "hello") { ea.configAccess = msg.config_access; setState(msg.state); }
  else if (msg.type === "state") setState(msg.state);
  else if (msg.type === "transcript") { ea.transcripts.push(msg); if (msg.text) transcriptItem(msg); }
  else if (msg.type === "metrics") { msg.received_at = performance.now(); ea.metrics.push(msg); addMetrics(msg); }
  else if (msg.type === "rpc") {
    const done = pending.get(msg.id);
    pending.delete(msg.id);
    if (done) done(msg);
  } else if (msg.type === "config") {
    const notice = JSON.parse(msg.payload);
    if (notice.revision !== ea.configRevision) loadConfig();
  } else if (msg.type === "error") showError("conn-error", msg.message);
}

// -- latency ------------------------------------------------------------------------------

let pageLatencies = [];
function cell(v) { return v === null || v === undefined ? "–" : String(v); }

function addMetrics(m) {
  const row = document.createElement("tr");
  row.dataset.turn = m.turn_id;
  const values = [m.turn_id.replace(/^turn_/, ""), m.e2e_latency_ms, pageLatencies.shift(), m.end_of_utterance_delay_ms,
    m.transcription_delay_ms, m.llm_ttft_ms, m.tts_ttfa_ms];
  for (const v of values) { const td = document.createElement("td"); td.textContent = cell(v); row.appendChild(td); }
  $("latency").querySelector("tbody").prepend(row);
}

function addPageLatency(ms) {
  // The board's metrics for a turn arrive about when its reply starts playing; fill the
  // newest row's page column if it is still empty, else keep the figure for the next row.
  const row = $("latency").querySelector("tbody tr");
  if (row && row.children[2].textContent === "–") row.children[2].textContent = cell(ms);
  else pageLatencies.push(ms);
}

// -- chat ---------------------------------------------------------------------------------

$("chat-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("chat-text").value.trim();
  if (!text || !channel || channel.readyState !== "open") return;
  channel.send(JSON.stringify({ type: "chat", text }));
  transcriptItem({ segment: "chat-" + Date.now(), role: "user", text, final: true });
  $("chat-text").value = "";
});

// -- config -------------------------------------------------------------------------------

function rpc(method, payload) {
  return new Promise((resolve, reject) => {
    if (!channel || channel.readyState !== "open") return reject(new Error("not connected"));
    const id = ++rpcId;
    const timer = setTimeout(() => { pending.delete(id); reject(new Error(method + " timed out")); }, 15000);
    pending.set(id, (msg) => { clearTimeout(timer); resolve(msg); });
    channel.send(JSON.stringify({ type: "rpc", id, method, payload: JSON.stringify(payload) }));
  });
}

function typesOf(node) { return Array.isArray(node.type) ? node.type : [node.type]; }

function fieldFor(section, name, node, value) {
  const path = section + "." + name;
  const wrap = document.createElement("div");
  wrap.className = "field";
  const label = document.createElement("label");
  label.textContent = name.replace(/_/g, " ");
  const id = "cfg-" + path.replace(/\./g, "-");
  label.htmlFor = id;
  let input;
  const types = typesOf(node);
  if (node.enum) {
    input = document.createElement("select");
    for (const choice of node.enum) { const o = document.createElement("option"); o.value = o.textContent = choice; input.appendChild(o); }
    input.value = value;
  } else if (types.includes("boolean")) {
    input = document.createElement("input"); input.type = "checkbox"; input.checked = !!value;
  } else if (types.includes("number") || types.includes("integer")) {
    input = document.createElement("input"); input.type = "number";
    input.step = types.includes("integer") ? "1" : "any";
    if (node.minimum !== undefined) input.min = node.minimum;
    if (node.maximum !== undefined) input.max = node.maximum;
    input.value = value === null ? "" : value;
  } else if (types.includes("array")) {
    input = document.createElement("input"); input.value = (value || []).join(", ");
    input.placeholder = "comma separated";
  } else if ((node.maxLength || 0) > 256) {
    input = document.createElement("textarea"); input.value = value === null ? "" : value;
  } else {
    input = document.createElement("input"); input.value = value === null ? "" : value;
    if (node.secret) { input.type = "password"; input.autocomplete = "off"; }
  }
  input.id = id;
  input.dataset.path = path;
  input.disabled = node.writable === false || ea.configAccess !== "set";
  const doc = document.createElement("div");
  doc.className = "doc";
  doc.textContent = node.description + (node.needs_reload ? " (applies at the next quiet moment)" : "");
  const problem = document.createElement("div");
  problem.className = "problem";
  problem.id = id + "-problem";
  wrap.append(label, input, doc, problem);
  return wrap;
}

function readField(input, node) {
  const types = typesOf(node);
  if (node.enum) return input.value;
  if (types.includes("boolean")) return input.checked;
  if (types.includes("number") || types.includes("integer")) {
    if (input.value.trim() === "") return types.includes("null") ? null : NaN;
    return Number(input.value);
  }
  if (types.includes("array")) return input.value.split(",").map((s) => s.trim()).filter((s) => s);
  if (input.value === "" && types.includes("null")) return null;
  return input.value;
}

function renderConfig() {
  const form = $("config-form");
  form.textContent = "";
  for (const [section, table] of Object.entries(schema.properties)) {
    const details = document.createElement("details");
    details.dataset.section = section;
    const summary = document.createElement("summary");
    summary.textContent = section;
    summary.title = table.description;
    details.appendChild(summary);
    for (const [name, node] of Object.entries(table.properties)) {
      const value = ((current || {})[section] || {})[name];
      details.appendChild(fieldFor(section, name, node, value === undefined ? node.default : value));
    }
    form.appendChild(details);
  }
  $("config-save").disabled = ea.configAccess !== "set";
  $("config-reload").disabled = false;
}

async function loadConfig() {
  try {
    const s = await rpc("edgeagent.config.schema", { v: 1 });
    const g = await rpc("edgeagent.config.get", { v: 1 });
    if (!s.ok || !g.ok) { $("config-status").textContent = (s.ok ? g : s).message; ea.configAccess = "none"; return; }
    schema = JSON.parse(s.payload).schema;
    const got = JSON.parse(g.payload);
    current = got.config;
    ea.configRevision = got.revision;
    $("config-revision").textContent = "revision " + got.revision;
    renderConfig();
    ea.configLoaded = true;
  } catch (err) { $("config-status").textContent = String(err.message || err); }
}

async function saveConfig() {
  const patch = {};
  for (const input of $("config-form").querySelectorAll("[data-path]")) {
    const [section, name] = input.dataset.path.split(".");
    const node = schema.properties[section].properties[name];
    if (input.disabled) continue;
    $(input.id + "-problem").textContent = "";
    const value = readField(input, node);
    const was = current[section] ? current[section][name] : undefined;
    if (JSON.stringify(value) === JSON.stringify(was)) continue;
    (patch[section] = patch[section] || {})[name] = value;
  }
  if (!Object.keys(patch).length) { $("config-status").textContent = "nothing changed"; return; }
  $("config-status").textContent = "saving…";
  const res = await rpc("edgeagent.config.set", { v: 1, base_revision: ea.configRevision, patch });
  const body = JSON.parse(res.payload);
  ea.lastConfigResult = body;
  if (res.ok) {
    const later = body.reload.length ? "; at the next quiet moment: " + body.reload.join(", ") : "";
    $("config-status").textContent = `saved (revision ${body.revision}): ${body.changed.map((c) => c.path).join(", ")}${later}`;
    await loadConfig();
  } else {
    $("config-status").textContent = `refused (${res.code}): ${res.message}`;
    for (const p of body.error.problems || []) {
      const el = $("cfg-" + p.path.replace(/\./g, "-") + "-problem");
      if (el) el.textContent = p.reason;
    }
    if (body.error.code === "stale_revision") await loadConfig();
  }
}

$("config-save").addEventListener("click", () => saveConfig().catch((e) => { $("config-status").textContent = String(e.message || e); }));
$("config-reload").addEventListener("click", loadConfig);

checkToken();

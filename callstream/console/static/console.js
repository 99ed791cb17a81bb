// callstream console: plain JS, no build step. Everything shown comes from the server's
// feed (/console/feed, Server-Sent Events); every button calls the REST API (/v2/...)
// with the session cookie and the session's CSRF header. Data is only ever written with
// textContent: SIP headers (from, to) and transcripts come from outside.
"use strict";

const MAX_LOG_LINES = 200;
const FLOOR_DB = -90;  // what the feed sends for silence (console/levels.py)
const METER_RANGE_DB = 60;  // the bars show -60..0 dBFS
const state = { csrf: null, source: null, calls: new Map(), interim: new Map() };

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  return node;
}

function short(id) { return id ? String(id).replace(/^v3:/, "").slice(0, 8) : ""; }

function seconds(value) {
  if (value === null || value === undefined) return "–";
  const s = Math.floor(value);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function prepend(list, item) {
  list.prepend(item);
  while (list.children.length > MAX_LOG_LINES) list.lastChild.remove();
}

// -- signing in --------------------------------------------------------------

async function checkSession() {
  const response = await fetch("/console/session", { cache: "no-store" });
  if (response.ok) {
    state.csrf = (await response.json()).csrf;
    showConsole();
  } else {
    showLogin(location.hash === "#link-expired"
      ? "That login link was used already or has expired: sign in with an API key." : "");
  }
}

function showLogin(message) {
  if (state.source) { state.source.close(); state.source = null; }
  $("console").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  setLink("offline", false);
  $("api-key").focus();
}

function showConsole() {
  $("login").hidden = true;
  $("console").hidden = false;
  $("logout").hidden = false;
  if (location.hash) history.replaceState(null, "", "/console");
  connect();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  const response = await fetch("/console/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ api_key: key }),
  });
  $("api-key").value = "";
  if (response.ok) {
    state.csrf = (await response.json()).csrf;
    showConsole();
  } else {
    showLogin(await errorText(response));
  }
});

$("logout").addEventListener("click", async () => {
  await post("/console/logout");
  showLogin("Signed out.");
});

async function errorText(response) {
  try {
    const body = await response.json();
    const error = body.errors[0];
    return `${error.title}${error.detail ? ": " + error.detail : ""} (${response.status})`;
  } catch (_) {
    return `HTTP ${response.status}`;
  }
}

// -- the feed ----------------------------------------------------------------

function setLink(text, live) {
  $("link").textContent = text;
  $("link").className = live ? "link on" : "link off";
}

function connect() {
  if (state.source) state.source.close();
  const source = new EventSource("/console/feed");
  state.source = source;
  source.onopen = () => setLink("live", true);
  source.onerror = async () => {
    setLink("reconnecting…", false);
    const response = await fetch("/console/session", { cache: "no-store" });
    if (response.status === 401) showLogin("Your session ended: sign in again.");
  };
  source.addEventListener("signed-out", () => showLogin("Your session ended: sign in again."));
  source.addEventListener("calls", (e) => renderCalls(JSON.parse(e.data)));
  source.addEventListener("levels", (e) => renderLevels(JSON.parse(e.data)));
  source.addEventListener("webhook", (e) => onWebhook(JSON.parse(e.data)));
  source.addEventListener("deliveries", (e) => renderDeliveries(JSON.parse(e.data)));
}

// -- calls -------------------------------------------------------------------

function renderCalls(calls) {
  const box = $("calls");
  const seen = new Set();
  for (const call of calls) {
    seen.add(call.call_control_id);
    let card = state.calls.get(call.call_control_id);
    if (!card) {
      card = buildCard(call);
      state.calls.set(call.call_control_id, card);
      box.append(card.root);
    }
    updateCard(card, call);
  }
  for (const [id, card] of state.calls) {
    if (!seen.has(id)) { card.root.remove(); state.calls.delete(id); }
  }
  $("no-calls").hidden = calls.length > 0;
  $("call-count").textContent = calls.length ? `(${calls.length})` : "";
}

function meter(label) {
  const bar = el("span", { class: "bar" });
  const value = el("span", { class: "db" }, "–");
  return { root: el("div", { class: "meter" }, el("span", { class: "track" }, label),
                    el("span", { class: "well" }, bar), value), bar, value };
}

function buildCard(call) {
  const id = call.call_control_id;
  const card = {
    state: el("span", { class: "state" }),
    time: el("span", { class: "time" }),
    features: el("span", { class: "features" }),
    inbound: meter("in"),
    outbound: meter("out"),
    buttons: {},
  };
  const button = (name, label, handler) => {
    const b = el("button", { type: "button", "data-action": name }, label);
    b.addEventListener("click", () => handler(id, card));
    card.buttons[name] = b;
    return b;
  };
  card.root = el("article", { class: "call", "data-call": id },
    el("div", { class: "head" },
      el("code", { title: id }, short(id)),
      el("span", { class: "who" }, `${call.direction === "incoming" ? "⇠" : "⇢"} ${call.from} → ${call.to}`),
      card.state, card.time),
    card.inbound.root, card.outbound.root,
    card.features,
    el("div", { class: "actions" },
      button("answer", "Answer", (cid) => action(cid, "answer")),
      button("stream", "Start stream", toggleStream),
      button("fork", "Fork", toggleFork),
      button("transcription", "Transcribe", toggleTranscription),
      button("hangup", "Hang up", (cid) => action(cid, "hangup"))));
  return card;
}

function updateCard(card, call) {
  card.call = call;
  card.state.textContent = call.state;
  card.state.className = `state ${call.state}`;
  card.time.textContent = call.talk_s !== null ? `talking ${seconds(call.talk_s)}`
                                               : `ringing ${seconds(call.duration_s)}`;
  const parts = [];
  for (const s of call.streams) parts.push(`stream ${short(s)}`);
  if (call.fork) parts.push("fork");
  if (call.transcription) parts.push("transcription");
  card.features.textContent = parts.length ? parts.join(" · ") : "no streams, forks or transcription";
  const answered = call.state === "answered";
  card.buttons.answer.hidden = call.direction !== "incoming" || call.state !== "parked";
  card.buttons.stream.textContent = call.streams.length ? "Stop stream" : "Start stream";
  card.buttons.fork.textContent = call.fork ? "Stop fork" : "Fork";
  card.buttons.transcription.textContent = call.transcription ? "Stop transcription" : "Transcribe";
  for (const name of ["stream", "fork", "transcription"]) card.buttons[name].disabled = !answered;
}

function renderLevels(levels) {
  for (const [id, tracks] of Object.entries(levels)) {
    const card = state.calls.get(id);
    if (!card) continue;
    for (const track of ["inbound", "outbound"]) {
      const db = tracks[track];
      const m = card[track];
      const share = Math.max(0, Math.min(1, (db + METER_RANGE_DB) / METER_RANGE_DB));
      m.bar.style.width = `${(share * 100).toFixed(1)}%`;
      m.value.textContent = db <= FLOOR_DB ? "silent" : `${db.toFixed(1)} dBFS`;
    }
  }
}

// -- actions (the REST API, with the session) ---------------------------------

function post(path, body) {
  return fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json", "x-callstream-csrf": state.csrf || "" },
    body: JSON.stringify(body || {}),
  });
}

async function action(id, name, body) {
  const response = await post(`/v2/calls/${encodeURIComponent(id)}/actions/${name}`, body);
  if (!response.ok) {
    const toast = $("action-error");
    toast.textContent = `${name}: ${await errorText(response)}`;
    toast.hidden = false;
    setTimeout(() => { toast.hidden = true; }, 6000);
  }
  return response.ok;
}

function toggleStream(id, card) {
  if (card.call.streams.length) return action(id, "streaming_stop", {});
  const url = prompt("Stream the call's audio to which WebSocket URL?", "ws://127.0.0.1:8765/");
  if (url) {
    return action(id, "streaming_start", {
      stream_url: url, stream_track: "both_tracks",
      stream_bidirectional_mode: "rtp", stream_bidirectional_codec: "PCMU",
    });
  }
}

function toggleFork(id, card) {
  if (card.call.fork) return action(id, "fork_stop", {});
  const target = prompt("Fork the call's RTP to which UDP target?", "udp:127.0.0.1:9000");
  if (target) return action(id, "fork_start", { target });
}

function toggleTranscription(id, card) {
  if (card.call.transcription) return action(id, "transcription_stop", {});
  return action(id, "transcription_start", {
    transcription_engine: "B", transcription_tracks: "both",
    transcription_engine_config: { transcription_engine: "B", interim_results: true },
  });
}

// -- events, transcript, deliveries ----------------------------------------------

function onWebhook(event) {
  const payload = event.payload || {};
  const call = payload.call_control_id || payload.CallSid || "";
  const time = (event.occurred_at || "").slice(11, 19);
  prepend($("events"), el("li", { "data-event": event.event_type },
    el("time", {}, time), " ", el("b", {}, event.event_type), " ", el("code", {}, short(call)),
    payload.hangup_cause ? ` (${payload.hangup_cause})` : ""));
  if (event.event_type === "call.transcription") onTranscript(call, payload.transcription_data || {});
}

// The softphone's own call reads as "you" (inbound: what it sends) and "heard".
function trackName(call, track) {
  const mine = window.phone && window.phone.call && window.phone.call.callControlId === call;
  if (!mine) return track;
  return track === "inbound" ? "you" : track === "outbound" ? "heard" : track;
}

function onTranscript(call, data) {
  const key = `${call}/${data.transcription_track || ""}`;
  let line = state.interim.get(key);
  if (!line) {
    line = el("li", { class: "interim" });
    prepend($("transcript"), line);
  }
  line.replaceChildren(el("code", {}, short(call)), " ",
    el("span", { class: "track" }, trackName(call, data.transcription_track || "")), " ",
    el("span", { class: "text" }, data.transcript || ""));
  if (data.is_final) {
    line.className = "final";
    state.interim.delete(key);
  } else {
    state.interim.set(key, line);
  }
}

function renderDeliveries(list) {
  const body = $("deliveries").tBodies[0];
  body.replaceChildren(...list.map((d) => {
    const redeliver = el("button", { type: "button", "data-action": "redeliver" }, "Redeliver");
    redeliver.disabled = d.status === "pending";
    redeliver.addEventListener("click", async () => {
      const response = await post(`/v2/webhook_deliveries/${encodeURIComponent(d.id)}/redeliver`);
      redeliver.textContent = response.ok ? "Queued" : `Failed (${response.status})`;
      redeliver.disabled = true;
    });
    const last = d.last_status ? `HTTP ${d.last_status}` : (d.last_error || "");
    return el("tr", { class: d.status, "data-delivery": d.id },
      el("td", {}, d.event_type), el("td", {}, el("code", {}, short(d.call_control_id))),
      el("td", { class: "status" }, d.status), el("td", { class: "attempts" }, d.attempts), el("td", {}, last),
      el("td", {}, redeliver));
  }));
}

checkSession();

// Live events: GET /api/events read with fetch() (EventSource cannot send the Authorization header), parsed as
// Server-Sent Events. The stream ends when the access token expires; it is reopened with Last-Event-ID, after a
// renewal when needed, with backoff on errors. While it is down, views poll instead (see `whenOffline`).

import { accessToken, renew, secondsLeft } from "./session.js";

const MAX_BACKOFF_MS = 30000;
const UNAVAILABLE_RETRY_MS = 60000;
const handlers = new Map(); // type -> Set(fn); "*" for every event, "resync" after a gap, "status" on state change
let lastEventId = null;
let controller = null;
let running = false;
let status = "offline"; // "connecting" | "live" | "offline"
let retryTimer = null;

export function liveStatus() {
  return status;
}

export function on(type, fn) {
  if (!handlers.has(type)) handlers.set(type, new Set());
  handlers.get(type).add(fn);
  return () => handlers.get(type).delete(fn);
}

function emit(type, payload) {
  for (const fn of handlers.get(type) || []) {
    try {
      fn(payload);
    } catch (err) {
      console.error(err);
    }
  }
}

function setStatus(next) {
  if (next === status) return;
  status = next;
  emit("status", status);
}

export function start() {
  if (running) return;
  running = true;
  connect(0);
}

export function stop() {
  running = false;
  clearTimeout(retryTimer);
  if (controller) controller.abort();
  controller = null;
  lastEventId = null;
  setStatus("offline");
}

function retry(attempt, delayMs) {
  clearTimeout(retryTimer);
  if (!running) return;
  retryTimer = setTimeout(() => connect(attempt), delayMs);
}

function backoff(attempt) {
  const base = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** Math.min(attempt, 5));
  return base / 2 + Math.random() * base / 2;
}

async function connect(attempt) {
  if (!running) return;
  setStatus("connecting");
  if (!accessToken() || secondsLeft() < 15) {
    if (!(await renew())) {
      setStatus("offline");
      retry(attempt + 1, backoff(attempt));
      return;
    }
  }
  controller = new AbortController();
  const headers = { Accept: "text/event-stream", Authorization: `Bearer ${accessToken()}` };
  if (lastEventId) headers["Last-Event-ID"] = lastEventId;
  let response;
  try {
    response = await fetch("/api/events", { headers, signal: controller.signal, cache: "no-store" });
  } catch {
    setStatus("offline");
    retry(attempt + 1, backoff(attempt));
    return;
  }
  if (response.status === 401) {
    setStatus("offline");
    if (await renew()) retry(attempt + 1, 200);
    else retry(attempt + 1, backoff(attempt));
    return;
  }
  if (response.status === 404 || response.status === 501) { // no live events on this server: poll
    setStatus("offline");
    retry(0, UNAVAILABLE_RETRY_MS);
    return;
  }
  const type = response.headers.get("Content-Type") || "";
  if (!response.ok || !response.body || !type.includes("text/event-stream")) {
    setStatus("offline");
    retry(attempt + 1, backoff(attempt));
    return;
  }
  let clean = false;
  try {
    await read(response.body);
    clean = true;
  } catch (err) {
    if (err.name === "AbortError" || !running) return;
  }
  setStatus("offline");
  // A clean end is the token running out: reconnect at once (renewing first); a broken one backs off.
  retry(clean ? 0 : attempt + 1, clean ? 100 : backoff(attempt));
}

async function read(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let message = { id: null, event: "message", data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let newline;
    while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
      if (line === "") {
        if (message.data.length || message.event !== "message") dispatch(message);
        message = { id: null, event: "message", data: [] };
        continue;
      }
      if (line.startsWith(":")) continue; // keepalive comment
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? "" : line.slice(colon + 1);
      if (val.startsWith(" ")) val = val.slice(1);
      if (field === "id") message.id = val;
      else if (field === "event") message.event = val;
      else if (field === "data") message.data.push(val);
    }
  }
}

function dispatch(message) {
  if (message.id) lastEventId = message.id;
  let payload = null;
  try {
    payload = message.data.length ? JSON.parse(message.data.join("\n")) : null;
  } catch {
    return;
  }
  if (message.event === "ready") {
    setStatus("live");
    if (!payload || !payload.resumed) emit("resync", payload);
    return;
  }
  const type = (payload && payload.type) || message.event;
  emit(type, payload);
  emit("*", payload);
}

/**
 * Run `fn` every `intervalMs` while live events are not flowing (and once when they come back after a gap);
 * returns the function that stops it. Views use it to stay current whatever the server offers.
 */
export function whenOffline(fn, intervalMs = 4000) {
  let timer = null;
  const tick = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      if (status !== "live" && document.visibilityState !== "hidden") {
        try { await fn(); } catch { /* the next tick tries again */ }
      }
      tick();
    }, intervalMs);
  };
  tick();
  const offResync = on("resync", () => fn());
  return () => { clearTimeout(timer); offResync(); };
}

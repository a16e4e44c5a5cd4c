// What the playground, deployments, evaluations and job pages share about serving: the models list, starting a
// deployment, the live events of deployments and evaluations, and a poll that backs off while they are missing.

import { api } from "./api.js";
import { h } from "./dom.js";
import { DEPLOYMENT_EVENTS, EVALUATION_EVENTS } from "./events.js";
import * as live from "./sse.js";

export const ACTIVE_DEPLOYMENT = new Set(["creating", "in_service"]);
export const BUSY_DEPLOYMENT = new Set(["creating", "deleting"]);
export const BUSY_EVALUATION = new Set(["queued", "running"]);

function onAny(types, fn) {
  const offs = types.map((t) => live.on(t, fn));
  return () => offs.forEach((off) => off());
}

/** Calls `fn(event)` for each inference.deployment.* event on the live stream; returns the unsubscribe. */
export function onDeploymentEvents(fn) {
  return onAny(DEPLOYMENT_EVENTS, fn);
}

export function onEvaluationEvents(fn) {
  return onAny(EVALUATION_EVENTS, fn);
}

/** Whether live events of this kind will arrive now (the stream is up and the server names them). */
export function liveFor(kind) {
  const names = kind === "deployment" ? DEPLOYMENT_EVENTS : EVALUATION_EVENTS;
  return names.length > 0 && live.liveStatus() === "live";
}

/**
 * Call `fn` after 1 s, 2 s, 4 s... (at most `maxMs` apart) for as long as it resolves to true; a `kick()` starts
 * the ladder again from the bottom (something changed: look soon). Returns {stop, kick}.
 */
export function pollWithBackoff(fn, { firstMs = 1000, maxMs = 15000 } = {}) {
  let timer = null;
  let delay = firstMs;
  let stopped = false;
  const schedule = () => {
    clearTimeout(timer);
    if (stopped) return;
    timer = setTimeout(async () => {
      let again = true;
      try { again = await fn(); } catch { /* the next round tries again */ }
      delay = Math.min(maxMs, delay * 2);
      if (again) schedule();
    }, delay);
  };
  schedule();
  return {
    stop: () => { stopped = true; clearTimeout(timer); },
    kick: () => { delay = firstMs; schedule(); },
  };
}

export async function listModels() {
  return (await api("/v1/models")).data;
}

export function fineTuned(models) {
  return models.filter((m) => m.kind === "fine-tuned");
}

export function baseModels(models) {
  return models.filter((m) => m.kind !== "fine-tuned");
}

/** Options for a model <select>: the caller's fine-tuned models, then the base models. */
export function modelOptions(models, { fineTunedOnly = false } = {}) {
  const groups = [["Your fine-tuned models", fineTuned(models)], ["Base models", fineTunedOnly ? [] : baseModels(models)]];
  return groups.filter(([, list]) => list.length).map(([label, list]) => h("optgroup", { label },
    list.map((m) => h("option", { value: m.id }, m.id))));
}

/** POST /api/deployments: 201 a new deployment, 200 the active one of the same model. */
export async function deployModel(model, { instanceType, idleMinutes } = {}) {
  const json = { model };
  if (instanceType) json.instance_type = instanceType;
  if (idleMinutes) json.idle_minutes = idleMinutes;
  return api("/api/deployments", { method: "POST", json });
}

/** A deployment, fetched again whenever it may have changed, until it is in service (or failed, deleted). */
export function watchDeployment(id, onChange) {
  let done = false;
  const check = async () => {
    if (done) return false;
    const dep = await api(`/api/deployments/${encodeURIComponent(id)}`);
    onChange(dep);
    done = !BUSY_DEPLOYMENT.has(dep.status);
    return !done;
  };
  const poller = pollWithBackoff(check, { firstMs: 1000, maxMs: 10000 });
  const off = onDeploymentEvents((event) => {
    const d = (event && event.data) || {};
    if (d.deployment_id === id) check();
  });
  return () => { done = true; poller.stop(); off(); };
}

// Playground: a fine-tuned model and, beside it, its base (or any model), asked the same thing side by side.
// Answers stream token by token; each side keeps its own history; a system prompt, temperature and max tokens
// apply to both; Stop aborts both streams; the chat is written out for the openai SDK with a copy button.

import { ApiError, api, describeError } from "./api.js";
import { chatSnippet, streamChat } from "./chat.js";
import { h, replace, formatUsd } from "./dom.js";
import { navigate } from "./router.js";
import { ACTIVE_DEPLOYMENT, BUSY_DEPLOYMENT, deployModel, listModels, modelOptions, onDeploymentEvents,
  watchDeployment } from "./serving.js";
import { announce, card, codeBlock, errorState, loading, pageHeader, statusBadge, toast } from "./ui.js";

const DEFAULT_TEMPERATURE = 0.7;
const DEFAULT_MAX_TOKENS = 256;

function numberField(id, label, { min, max, step, value, hint = "" }) {
  const input = h("input", { id, type: "number", class: "input input-number", min, max, step, value, inputmode: "decimal" });
  const hintText = h("p", { class: "field-hint" }, hint);
  return { input, hint: hintText, element: h("div", { class: "field" }, h("label", { for: id }, label), input, hintText) };
}

function clampNumber(input, fallback) {
  const v = Number(input.value);
  if (input.value === "" || !Number.isFinite(v)) return fallback;
  return Math.min(Number(input.max), Math.max(Number(input.min), v));
}

/** One side of the playground: its model, its own history and the chat log that shows it. */
class ChatSide {
  constructor(name, label) {
    this.name = name;
    this.model = null;
    this.history = [];
    this.failedTurn = null; // the user message of a turn that failed (retried once the model is deployed)
    this.heading = h("span", { class: "mono break" });
    this.status = h("span", { class: "status-host" });
    this.log = h("div", { class: "chat chat-log", role: "log", "aria-live": "off", "aria-label": `${label} conversation`,
      "data-side": name });
    this.element = h("section", { class: "card chat-panel", "data-side": name },
      h("div", { class: "card-header chat-panel-header" }, h("h2", { class: "card-title" }, label), this.heading, this.status),
      h("div", { class: "card-body" }, this.log));
    this.clear();
  }

  clear() {
    this.epoch = (this.epoch || 0) + 1; // a stream still running for the old conversation leaves the new one alone
    this.history = [];
    this.failedTurn = null;
    replace(this.log, h("p", { class: "muted small chat-empty" }, this.model ? "Send a message to start." : "No model chosen."));
  }

  setModel(model) {
    this.model = model;
    this.heading.textContent = model ? model.id : "—";
    this.element.hidden = !model;
    replace(this.status, model && model.deployment ? statusBadge(model.deployment.status) : null);
    this.clear();
  }

  addBubble(role, text = "") {
    this.log.querySelector(".chat-empty")?.remove();
    const body = h("div", { class: "bubble-text" }, text);
    const meta = h("div", { class: "bubble-meta muted small" });
    const bubble = h("div", { class: ["bubble", `bubble-${role}`] }, h("div", { class: "bubble-role" }, role), body, meta);
    this.log.append(bubble);
    this.log.scrollTop = this.log.scrollHeight;
    return { bubble, body, meta };
  }
}

export async function playgroundView(main, params, query, isCurrent) {
  main.append(pageHeader("Playground", "Chat with a fine-tuned model and its base side by side."), loading("Loading models…"));
  let models;
  let catalog = null;
  try {
    [models, catalog] = await Promise.all([listModels(), api("/api/serving/catalog").catch(() => null)]);
  } catch (err) {
    if (isCurrent()) replace(main, pageHeader("Playground"), errorState(describeError(err), () => navigate("/playground")));
    return undefined;
  }
  if (!isCurrent()) return undefined;
  const byId = new Map(models.map((m) => [m.id, m]));
  const sides = [new ChatSide("a", "Model A"), new ChatSide("b", "Model B")];

  const modelA = h("select", { id: "pg-model-a", class: "input", name: "model" }, modelOptions(models));
  const modelB = h("select", { id: "pg-model-b", class: "input", name: "compare" },
    h("option", { value: "" }, "None: one model only"), modelOptions(models));
  const system = h("textarea", { id: "pg-system", class: "input", rows: 2, placeholder: "You are a helpful assistant." });
  const temperature = numberField("pg-temperature", "Temperature", { min: 0, max: 2, step: 0.1, value: DEFAULT_TEMPERATURE,
    hint: "0 answers the same way every time." });
  const maxTokens = numberField("pg-max-tokens", "Max tokens", { min: 1, max: 4096, step: 1, value: DEFAULT_MAX_TOKENS });
  const message = h("textarea", { id: "pg-message", class: "input", rows: 2, placeholder: "Ask both models something…" });
  const sendBtn = h("button", { type: "submit", class: "btn btn-primary" }, "Send");
  const stopBtn = h("button", { type: "button", class: "btn btn-secondary", disabled: true }, "Stop");
  const newChat = h("button", { type: "button", class: "btn btn-ghost" }, "New chat");
  const snippetFor = h("select", { id: "pg-snippet-model", class: "input input-inline", "aria-label": "Code for model" });
  const snippet = codeBlock("", "Python · openai SDK");
  const snippetCode = snippet.querySelector("code");
  const onDemandHint = catalog && catalog.on_demand
    ? h("p", { class: "field-hint" }, "This server deploys a model on its first message: that first answer can take a minute.")
    : h("p", { class: "field-hint" }, "A model answers once it is deployed (see Deployments); a price per hour applies while it runs.");

  const form = h("form", { class: "composer", "aria-label": "Send a message" },
    h("div", { class: "field grow" }, h("label", { for: "pg-message" }, "Message"), message),
    h("div", { class: "composer-actions" }, sendBtn, stopBtn, newChat));

  replace(main,
    pageHeader("Playground", "Chat with a fine-tuned model and its base side by side: the same message goes to both."),
    models.some((m) => m.kind === "fine-tuned") ? null : h("div", { class: "notice notice-warning" },
      h("span", "You have no fine-tuned model yet: you can chat with the base models, or train one first."),
      h("a", { class: "btn btn-secondary btn-sm", href: "#/train" }, "Train a model")),
    card(null, h("div", { class: "playground-controls" },
      h("div", { class: "field" }, h("label", { for: "pg-model-a" }, "Model A"), modelA),
      h("div", { class: "field" }, h("label", { for: "pg-model-b" }, "Model B (compare with)"), modelB),
      temperature.element, maxTokens.element,
      h("div", { class: "field field-wide" }, h("label", { for: "pg-system" }, "System prompt"), system, onDemandHint))),
    h("div", { class: "chat-panels" }, sides.map((s) => s.element)),
    card(null, form),
    card(h("div", { class: "card-title-row" }, h("h2", { class: "card-title" }, "Copy as code"), snippetFor),
      h("p", { class: "muted small" }, "The same conversation from Python, with the official openai SDK."), snippet));

  // ---- choosing models ----
  const firstFineTuned = models.find((m) => m.kind === "fine-tuned");
  const wantA = query.get("model");
  modelA.value = byId.has(wantA) ? wantA : (firstFineTuned || models[0] || {}).id || "";
  const defaultB = (a) => (a && a.kind === "fine-tuned" && byId.has(a.base_model) ? a.base_model : "");
  const wantB = query.get("compare");
  modelB.value = wantB !== null && (wantB === "" || byId.has(wantB)) ? wantB : defaultB(byId.get(modelA.value));

  // The completion must fit in the context with the prompt: the default leaves half of the smaller one for it.
  let maxTokensEdited = false;
  maxTokens.input.addEventListener("input", () => { maxTokensEdited = true; });
  function fitMaxTokens() {
    const contexts = sides.filter((s) => s.model && s.model.context_length).map((s) => s.model.context_length);
    const ctx = contexts.length ? Math.min(...contexts) : null;
    maxTokens.input.max = ctx ? ctx - 1 : 4096;
    if (!maxTokensEdited) maxTokens.input.value = ctx ? Math.min(DEFAULT_MAX_TOKENS, Math.floor(ctx / 2)) : DEFAULT_MAX_TOKENS;
    maxTokens.hint.textContent = ctx ? `Context: ${ctx} tokens, the prompt included.` : "";
  }

  function applyModels() {
    sides[0].setModel(byId.get(modelA.value) || null);
    sides[1].setModel(byId.get(modelB.value) || null);
    fitMaxTokens();
    replace(snippetFor, sides.filter((s) => s.model).map((s) => h("option", { value: s.name }, s.model.id)));
    updateSnippet();
  }
  modelA.addEventListener("change", () => {
    modelB.value = defaultB(byId.get(modelA.value)) || modelB.value;
    applyModels();
  });
  modelB.addEventListener("change", applyModels);

  // ---- the code snippet ----
  function conversation(side, draft) {
    const sys = system.value.trim();
    return [...(sys ? [{ role: "system", content: sys }] : []), ...side.history,
      ...(draft ? [{ role: "user", content: draft }] : [])];
  }
  function updateSnippet() {
    const side = sides.find((s) => s.name === snippetFor.value && s.model) || sides[0];
    if (!side.model) { snippetCode.textContent = "# Choose a model above."; return; }
    const draft = message.value.trim() || (side.history.length ? "" : "Hello!");
    snippetCode.textContent = chatSnippet({ model: side.model.id, messages: conversation(side, draft),
      temperature: clampNumber(temperature.input, DEFAULT_TEMPERATURE), maxTokens: clampNumber(maxTokens.input, DEFAULT_MAX_TOKENS) });
  }
  for (const el of [system, message, temperature.input, maxTokens.input]) el.addEventListener("input", updateSnippet);
  snippetFor.addEventListener("change", updateSnippet);

  // ---- sending ----
  let controller = null;
  const watchers = new Set();

  async function runTurn(side, signal) {
    const epoch = side.epoch;
    const { body, meta } = side.addBubble("assistant");
    body.classList.add("streaming");
    const wait = h("span", { class: "loading-inline" }, h("span", { class: "spinner", "aria-hidden": "true" }), "Waiting for the model…");
    meta.append(wait);
    const started = performance.now();
    let firstTokenAt = null;
    let received = "";
    try {
      const result = await streamChat({ model: side.model.id, messages: conversation(side, ""),
        temperature: clampNumber(temperature.input, DEFAULT_TEMPERATURE), maxTokens: clampNumber(maxTokens.input, DEFAULT_MAX_TOKENS),
        signal, onDelta: (piece) => {
          if (firstTokenAt === null) { firstTokenAt = performance.now(); wait.remove(); }
          received += piece;
          body.append(piece);
          side.log.scrollTop = side.log.scrollHeight;
        } });
      if (side.epoch !== epoch) return;
      side.history.push({ role: "assistant", content: result.text });
      side.failedTurn = null;
      const seconds = (performance.now() - started) / 1000;
      const tokens = result.usage ? result.usage.completion_tokens : null;
      replace(meta, [tokens !== null ? `${tokens} tokens` : null, `${seconds.toFixed(1)} s`,
        firstTokenAt !== null ? `first token ${((firstTokenAt - started) / 1000).toFixed(1)} s` : null,
        result.finishReason ? `finish: ${result.finishReason}` : null].filter(Boolean).join(" · "));
    } catch (err) {
      if (side.epoch !== epoch) return;
      if (err.name === "AbortError") {
        if (received) side.history.push({ role: "assistant", content: received });
        else side.history.pop(); // nothing came back: the turn did not happen
        replace(meta, "Stopped.");
        return;
      }
      const turn = side.history.pop();
      side.failedTurn = turn;
      if (!received) body.parentElement.remove();
      else replace(meta, "Cut off.");
      showError(side, err);
    } finally {
      body.classList.remove("streaming");
    }
  }

  function showError(side, err) {
    const notice = h("div", { class: "notice notice-danger chat-error", role: "alert", "data-code": err.code || "" },
      h("span", describeError(err)));
    side.log.append(notice);
    side.log.scrollTop = side.log.scrollHeight;
    if (!(err instanceof ApiError)) return;
    if (err.code === "model_not_deployed") {
      const deploy = h("button", { type: "button", class: "btn btn-primary btn-sm" }, "Deploy");
      deploy.addEventListener("click", () => startDeployment(side, notice, deploy));
      notice.append(deploy);
    } else if (err.code === "model_not_ready") { // being deployed already: follow that deployment
      api("/api/deployments").then(({ data }) => {
        const dep = data.find((d) => d.model === side.model.id && ACTIVE_DEPLOYMENT.has(d.status));
        if (dep) follow(side, notice, dep);
      }).catch(() => {});
    }
  }

  async function startDeployment(side, notice, button) {
    button.disabled = true;
    try {
      follow(side, notice, await deployModel(side.model.id));
    } catch (err) {
      button.disabled = false;
      toast(describeError(err), "error");
    }
  }

  /** Show a deployment's progress in the notice; once in service, send the failed message again. */
  function follow(side, notice, dep) {
    const model = side.model;
    const price = formatUsd(dep.additional_price_per_hour ?? dep.price_per_hour);
    const setNotice = (tone, ...content) => { notice.className = `notice notice-${tone} chat-error`; replace(notice, ...content); };
    setNotice("info", h("span", { class: "spinner", "aria-hidden": "true" }),
      h("span", `Deploying ${model.id} on ${dep.instance_type} (${price}/h)…`));
    const stop = watchDeployment(dep.id, (fresh) => {
      model.deployment = { id: fresh.id, status: fresh.status, instance_type: fresh.instance_type };
      if (side.model === model) replace(side.status, statusBadge(fresh.status));
      if (fresh.status === "in_service") {
        const again = h("button", { type: "button", class: "btn btn-secondary btn-sm", hidden: !side.failedTurn },
          "Send again");
        again.addEventListener("click", () => { again.hidden = true; if (side.failedTurn && !controller) retry(side); });
        setNotice("success", h("span", `${model.id} is in service.`), again);
        announce(`${model.id} is in service.`);
        if (side.failedTurn && side.model === model && !controller) { again.hidden = true; retry(side); }
      } else if (!BUSY_DEPLOYMENT.has(fresh.status)) {
        setNotice("danger", h("span", `The deployment ${fresh.status}: ${fresh.failure_reason || fresh.delete_reason || "no reason given"}.`));
      }
    });
    watchers.add(stop);
  }

  async function retry(side) {
    const turn = side.failedTurn;
    side.failedTurn = null;
    side.history.push(turn);
    await withController((signal) => runTurn(side, signal));
  }

  async function withController(work) {
    controller = new AbortController();
    sendBtn.disabled = true;
    stopBtn.disabled = false;
    try {
      await work(controller.signal);
    } finally {
      controller = null;
      sendBtn.disabled = false;
      stopBtn.disabled = true;
      updateSnippet();
    }
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = message.value.trim();
    const active = sides.filter((s) => s.model);
    if (!text || !active.length || controller) return;
    message.value = "";
    for (const side of active) {
      side.log.querySelectorAll(".chat-error").forEach((n) => n.remove());
      side.failedTurn = null;
      side.history.push({ role: "user", content: text });
      side.addBubble("user", text);
    }
    await withController((signal) => Promise.all(active.map((side) => runTurn(side, signal))));
    if (isCurrent()) message.focus({ preventScroll: true });
  });
  message.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); form.requestSubmit(); }
  });
  stopBtn.addEventListener("click", () => { if (controller) controller.abort(); });
  newChat.addEventListener("click", () => { if (controller) controller.abort(); sides.forEach((s) => s.clear()); updateSnippet(); });

  // A deployment that changes elsewhere (another tab, the idle stop) shows in the panels' badges.
  const offDeployments = onDeploymentEvents(async () => {
    try {
      const fresh = await listModels();
      for (const m of fresh) if (byId.has(m.id)) byId.get(m.id).deployment = m.deployment;
      for (const s of sides) if (s.model) replace(s.status, s.model.deployment ? statusBadge(s.model.deployment.status) : null);
    } catch { /* the badges stay as they were */ }
  });

  applyModels();
  return () => { if (controller) controller.abort(); offDeployments(); watchers.forEach((stop) => stop()); };
}

// Evaluations: held-out chat examples run through up to four models, scored by exact match and (where the model
// exposes it) loss on the reference answers. The list, a form that starts one, and an evaluation's page with its
// side-by-side table; the job page shows a job's automatic evaluation with the same tables.

import { api, ApiError, describeError } from "./api.js";
import { h, replace, formatDate, formatNumber, relativeTime } from "./dom.js";
import { navigate } from "./router.js";
import * as live from "./sse.js";
import { BUSY_EVALUATION, fineTuned, listModels, liveFor, onEvaluationEvents, pollWithBackoff } from "./serving.js";
import { announce, badge, card, emptyState, errorState, loading, pageHeader, statusBadge, toast } from "./ui.js";

const MAX_MODELS = 4;
const DEFAULT_EXAMPLES = 50;
const MAX_EXAMPLES = 500;

export function formatExactMatch(v) {
  return typeof v === "number" ? `${(Math.round(v * 1000) / 10).toFixed(1)}%` : "—";
}

export function formatLoss(v) {
  return typeof v === "number" ? v.toFixed(3) : "—";
}

function lastUserMessage(prompt) {
  const users = (prompt || []).filter((m) => m.role === "user");
  const last = users.length ? users[users.length - 1] : null;
  if (!last) return "";
  return typeof last.content === "string" ? last.content : JSON.stringify(last.content);
}

/** Per model: exact match, loss and the examples scored. */
export function summaryTable(evaluation) {
  const rows = evaluation.summary || [];
  if (!rows.length) return h("p", { class: "muted" }, BUSY_EVALUATION.has(evaluation.status) ? "Scores appear when it finishes." : "No scores.");
  const best = Math.max(...rows.map((r) => r.exact_match ?? -1));
  return h("div", { class: "table-scroll-x" }, h("table", { class: "table table-compact eval-summary" },
    h("thead", h("tr", h("th", { scope: "col" }, "Model"), h("th", { scope: "col", class: "num" }, "Exact match"),
      h("th", { scope: "col", class: "num" }, "Loss"), h("th", { scope: "col", class: "num" }, "Examples"))),
    h("tbody", rows.map((r) => h("tr", { "data-model": r.model },
      h("td", { class: "mono break eval-model" }, r.model, rows.length > 1 && r.exact_match === best ? [" ", badge("best", "success")] : null),
      h("td", { class: "num strong", "data-metric": "exact_match" }, formatExactMatch(r.exact_match)),
      h("td", { class: "num", "data-metric": "loss" }, formatLoss(r.loss)),
      h("td", { class: "num" }, formatNumber(r.examples)))))));
}

function verdict(ok) {
  return h("span", { class: ["verdict", ok ? "verdict-ok" : "verdict-no"], role: "img",
    "aria-label": ok ? "exact match" : "no match", title: ok ? "Exact match" : "Differs from the reference" }, ok ? "✓" : "✗");
}

/** Per example, side by side: the prompt, the reference, each model's answer with ✓ or ✗. */
export function examplesTable(evaluation, limit = Infinity) {
  const results = evaluation.results || [];
  if (!results.length) return h("p", { class: "muted" }, "No examples yet.");
  const shown = results.slice(0, limit);
  return h("div", { class: "table-scroll-x" }, h("table", { class: "table table-compact eval-examples" },
    h("thead", h("tr", h("th", { scope: "col", class: "num" }, "#"), h("th", { scope: "col" }, "Prompt"),
      h("th", { scope: "col" }, "Reference"),
      evaluation.models.map((m) => h("th", { scope: "col", class: "mono eval-model-col" }, m)))),
    h("tbody", shown.map((r) => h("tr", { "data-example": r.index },
      h("td", { class: "num muted" }, r.index),
      h("td", { class: "eval-text" }, lastUserMessage(r.prompt)),
      h("td", { class: "eval-text" }, r.reference),
      evaluation.models.map((m) => {
        const out = (r.outputs || {})[m];
        return h("td", { class: "eval-text", "data-model": m }, out
          ? [verdict(out.exact_match), " ", h("span", out.text)] : h("span", { class: "muted" }, "—"));
      }))))),
  shown.length < results.length ? h("p", { class: "muted small" }, `Showing ${shown.length} of ${results.length} examples.`) : null);
}

// ---- the list and the form ----------------------------------------------------------------------------------

function newEvaluationForm(models, files, query) {
  const wanted = new Set((query.get("models") || "").split(",").filter(Boolean));
  if (!wanted.size) {
    const ft = fineTuned(models)[0];
    if (ft) { wanted.add(ft.id); if (ft.base_model) wanted.add(ft.base_model); }
  }
  const boxes = models.map((m) => h("input", { type: "checkbox", class: "checkbox", name: "models", value: m.id,
    id: `eval-model-${m.id}`, checked: wanted.has(m.id) }));
  const modelList = h("fieldset", { class: "model-checks" }, h("legend", `Models (1 to ${MAX_MODELS})`),
    boxes.map((box, i) => h("label", { class: "model-check", for: box.id }, box,
      h("span", { class: "mono break" }, models[i].id), models[i].kind === "fine-tuned" ? badge("fine-tuned", "info") : null)));
  const file = h("select", { id: "eval-file", class: "input", name: "file" },
    files.map((f) => h("option", { value: f.id }, `${f.filename} · ${f.id}`)));
  if (query.get("file") && files.some((f) => f.id === query.get("file"))) file.value = query.get("file");
  const maxExamples = h("input", { id: "eval-max-examples", type: "number", class: "input input-number", min: 1,
    max: MAX_EXAMPLES, step: 1, value: DEFAULT_EXAMPLES });
  const error = h("p", { class: "form-error", role: "alert" });
  const submit = h("button", { type: "submit", class: "btn btn-primary" }, "Start evaluation");
  const form = h("form", { class: "eval-form", "aria-label": "New evaluation" }, modelList,
    h("div", { class: "deploy-grid" },
      h("div", { class: "field" }, h("label", { for: "eval-file" }, "Held-out chat file"), file,
        h("p", { class: "field-hint" }, "A validated fine-tune file; its last assistant message is each example's reference.")),
      h("div", { class: "field" }, h("label", { for: "eval-max-examples" }, "Max examples"), maxExamples)),
    error, submit);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const chosen = boxes.filter((b) => b.checked).map((b) => b.value);
    if (!chosen.length || chosen.length > MAX_MODELS) { error.textContent = `Choose between 1 and ${MAX_MODELS} models.`; return; }
    if (!file.value) { error.textContent = "Upload a validated chat file first."; return; }
    error.textContent = "";
    submit.disabled = true;
    try {
      const evaluation = await api("/api/evaluations", { method: "POST",
        json: { models: chosen, file: file.value, max_examples: Number(maxExamples.value) || DEFAULT_EXAMPLES } });
      toast("Evaluation started.", "success");
      navigate(`/evaluations/${encodeURIComponent(evaluation.id)}`);
    } catch (err) {
      error.textContent = describeError(err);
      submit.disabled = false;
    }
  });
  return form;
}

export async function evaluationsView(main, params, query, isCurrent) {
  main.append(pageHeader("Evaluations", "Models against held-out examples, side by side."), loading("Loading evaluations…"));
  let models;
  let files;
  try {
    [models, files] = await Promise.all([listModels(), api("/v1/files?purpose=fine-tune")]);
  } catch (err) {
    if (isCurrent()) replace(main, pageHeader("Evaluations"), errorState(describeError(err), () => navigate("/evaluations")));
    return undefined;
  }
  if (!isCurrent()) return undefined;
  const ready = files.data.filter((f) => f.status === "processed" && f.purpose === "fine-tune");
  const tableHost = h("div", { class: "table-host" }, loading("Loading evaluations…"));
  replace(main, pageHeader("Evaluations", "Models against held-out examples: exact match and loss, side by side."),
    card("Evaluations", tableHost),
    card("New evaluation", ready.length ? newEvaluationForm(models, ready, query)
      : emptyState("No validated file", "Upload a chat file of held-out examples on the Data page.",
        h("a", { class: "btn btn-secondary", href: "#/files" }, "Upload data"))));

  let list = null;
  async function refresh() {
    try {
      list = (await api("/api/evaluations")).data;
      render();
    } catch (err) {
      if (!list) replace(tableHost, errorState(describeError(err), refresh));
    }
    return list ? list.some((e) => BUSY_EVALUATION.has(e.status)) : true;
  }
  function render() {
    if (!list.length) { replace(tableHost, emptyState("No evaluations yet", "Start one below; every job with a validation set gets one automatically.")); return; }
    replace(tableHost, h("div", { class: "table-scroll-x" }, h("table", { class: "table" },
      h("thead", h("tr", h("th", { scope: "col" }, "Evaluation"), h("th", { scope: "col" }, "Status"),
        h("th", { scope: "col" }, "Exact match"), h("th", { scope: "col", class: "hide-sm" }, "Created"))),
      h("tbody", list.map((e) => h("tr", { "data-evaluation-id": e.id },
        h("td", h("a", { href: `#/evaluations/${encodeURIComponent(e.id)}`, class: "strong mono" }, e.id),
          h("div", { class: "muted small break" }, e.job_id ? `automatic, job ${e.job_id}` : `${e.file} · up to ${e.max_examples} examples`)),
        h("td", statusBadge(e.status)),
        h("td", { class: "small" }, (e.summary && e.summary.length ? e.summary : e.models.map((model) => ({ model })))
          .map((s) => h("div", { class: "break" }, h("span", { class: "mono" }, s.model), ": ", formatExactMatch(s.exact_match)))),
        h("td", { class: "hide-sm", title: formatDate(e.created_at) }, relativeTime(e.created_at))))))));
  }

  const poller = pollWithBackoff(async () => (liveFor("evaluation") ? true : refresh()));
  await refresh();
  const offEvents = onEvaluationEvents(() => refresh());
  const offPoll = live.whenOffline(refresh, 5000);
  return () => { poller.stop(); offEvents(); offPoll(); };
}

// ---- one evaluation -----------------------------------------------------------------------------------------

export async function evaluationView(main, { id }, query, isCurrent) {
  main.append(loading("Loading evaluation…"));
  const path = `/api/evaluations/${encodeURIComponent(id)}`;
  let evaluation;
  try {
    evaluation = await api(path);
  } catch (err) {
    if (!isCurrent()) return undefined;
    replace(main, pageHeader("Evaluation not found"), err instanceof ApiError && err.status === 404
      ? card(null, emptyState("Evaluation not found", "It does not exist, or it belongs to another account.",
        h("a", { class: "btn btn-secondary", href: "#/evaluations" }, "Back to evaluations")))
      : errorState(describeError(err), () => navigate(`/evaluations/${id}`)));
    return undefined;
  }
  if (!isCurrent()) return undefined;
  const statusHost = h("span", { class: "status-host", "aria-live": "polite" });
  const subtitle = h("p", { class: "page-subtitle" });
  const errorHost = h("div");
  const summaryHost = h("div");
  const examplesHost = h("div");
  replace(main,
    h("nav", { class: "breadcrumb", "aria-label": "Breadcrumb" }, h("a", { href: "#/evaluations" }, "Evaluations"), h("span", "/"),
      h("span", { "aria-current": "page", class: "mono" }, evaluation.id)),
    h("header", { class: "page-header" }, h("div", { class: "page-heading" },
      h("h1", { class: "page-title title-with-badge", tabindex: "-1" }, h("span", { class: "break" }, evaluation.id), statusHost), subtitle)),
    errorHost, card("Scores", summaryHost), card("Examples, side by side", examplesHost));

  function render() {
    replace(statusHost, statusBadge(evaluation.status));
    replace(subtitle, `${evaluation.models.length} model${evaluation.models.length > 1 ? "s" : ""} on `,
      h("a", { href: `#/files/${encodeURIComponent(evaluation.file)}`, class: "mono" }, evaluation.file),
      ` · up to ${evaluation.max_examples} examples`,
      evaluation.job_id ? [" · automatic, for ", h("a", { href: `#/jobs/${encodeURIComponent(evaluation.job_id)}`, class: "mono" }, evaluation.job_id)] : null);
    replace(errorHost, evaluation.error ? h("div", { class: "notice notice-danger", role: "alert" }, h("strong", "Failed: "), evaluation.error) : null);
    replace(summaryHost, summaryTable(evaluation));
    replace(examplesHost, BUSY_EVALUATION.has(evaluation.status)
      ? h("div", { class: "validating", role: "status" }, h("span", { class: "spinner", "aria-hidden": "true" }),
        evaluation.status === "queued" ? "Queued…" : "Running the examples through each model…")
      : examplesTable(evaluation));
  }
  async function reload() {
    const before = evaluation.status;
    evaluation = await api(path);
    if (!isCurrent()) return false;
    render();
    if (before !== evaluation.status) announce(`Evaluation ${evaluation.status}.`);
    return BUSY_EVALUATION.has(evaluation.status);
  }
  render();
  const poller = BUSY_EVALUATION.has(evaluation.status) ? pollWithBackoff(reload, { firstMs: 1000, maxMs: 10000 }) : null;
  const offEvents = onEvaluationEvents((event) => {
    const d = (event && event.data) || {};
    if (d.evaluation_id === evaluation.id) reload();
  });
  return () => { if (poller) poller.stop(); offEvents(); };
}

/** The job page's card: the job's automatic evaluation (base against tuned), compact. */
export async function jobEvaluation(host, job, isCurrent) {
  replace(host, loading("Loading the evaluation…"));
  const list = (await api(`/api/evaluations?job_id=${encodeURIComponent(job.id)}`)).data;
  if (!isCurrent()) return null;
  if (!list.length) {
    replace(host, h("p", { class: "muted" }, job.validation_file
      ? "The automatic evaluation starts once the job has succeeded." : "This job had no validation set, so no automatic evaluation ran."),
    h("a", { class: "btn btn-secondary btn-sm", href: `#/evaluations?models=${encodeURIComponent([job.fine_tuned_model, job.model].join(","))}` },
      "Evaluate it"));
    return null;
  }
  const evaluation = await api(`/api/evaluations/${encodeURIComponent(list[0].id)}`);
  if (!isCurrent()) return null;
  replace(host, h("p", { class: "muted small" }, statusBadge(evaluation.status), " ",
    h("a", { href: `#/evaluations/${encodeURIComponent(evaluation.id)}`, class: "mono" }, evaluation.id)),
  summaryTable(evaluation), evaluation.status === "succeeded" ? examplesTable(evaluation, 5) : null);
  return evaluation;
}

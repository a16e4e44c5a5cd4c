// A job's page, beyond one uninterrupted run: Pause and Resume, Retry (with a new budget cap) of a failed or
// cancelled job, its parts (each SageMaker training job it took: a start, a resume, a retry) with what each was
// billed, where a part starts on the loss chart, a DPO run's reward accuracy, and the links that continue
// training from the fine-tuned model or from one of its checkpoints.

import { api, describeError } from "./api.js";
import { LossChart } from "./chart.js";
import { h, replace, formatDate, formatDuration, formatNumber, formatUsd, nextId } from "./dom.js";
import { badge, statusBadge, toast } from "./ui.js";

const PART_KINDS = { start: "Start", resume: "Resume", retry: "Retry" };
const RETRYABLE = new Set(["failed", "cancelled"]);

export function methodType(job) {
  return (job.method && job.method.type) || "supervised";
}

/** The hyperparameters the job ran with: inside its method (OpenAI's shape), else the older top-level copy. */
export function methodHyperparameters(job) {
  const type = methodType(job);
  return (job.method && job.method[type] && job.method[type].hyperparameters) || job.hyperparameters || {};
}

export function methodBadge(job) {
  return methodType(job) === "dpo" ? badge("DPO", "info", "Preference training (DPO)") : null;
}

function trainHref(params) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== ""));
  return `#/train?${query}`;
}

/** The train page, set to go on from this job's fine-tuned model. */
export function continueHref(job) {
  return trainHref({ model: job.fine_tuned_model, base: job.base_model, file: job.training_file, method: methodType(job) });
}

/** The train page, set to go on from one of this job's checkpoints (on the model the job trained). */
export function checkpointHref(job, checkpoint) {
  return trainHref({ checkpoint: checkpoint.id, model: job.model, base: job.base_model, step: checkpoint.step_number,
    job: job.id, file: job.training_file, method: methodType(job) });
}

/** Where each later part starts on the chart: at the step after the one it resumed from. */
export function partMarkers(job) {
  return (job.parts || []).filter((p) => p.part > 1 && p.from_step !== null && p.from_step !== undefined)
    .map((p) => ({ step: p.from_step + 1, label: `Part ${p.part}` }));
}

/** Pause (running), Resume (paused) and Retry (failed or cancelled, optionally with a new budget cap). */
export function lifecycleControls({ path, retryPath, onJob }) {
  const pauseBtn = h("button", { type: "button", class: "btn btn-secondary", hidden: true }, "Pause");
  const resumeBtn = h("button", { type: "button", class: "btn btn-primary", hidden: true }, "Resume");
  const capId = nextId("retry-cap");
  const cap = h("input", { id: capId, type: "number", class: "input", min: 0.01, step: 0.01, placeholder: "Keep the current cap",
    inputmode: "decimal" });
  const retryBtn = h("button", { type: "submit", class: "btn btn-primary" }, "Retry job");
  const retryError = h("p", { class: "field-error", role: "alert" });
  const retryForm = h("form", { class: "card retry-panel", hidden: true, novalidate: true, "aria-label": "Retry this job" },
    h("div", { class: "card-body" },
      h("p", { class: "strong" }, "Run this job again"),
      h("p", { class: "muted small" }, "It resumes from its last checkpoint when it has one, under the same job ID."),
      h("div", { class: "inline-form" },
        h("div", { class: "field grow" }, h("label", { for: capId }, "New budget cap (USD, optional)"), cap, retryError),
        retryBtn)));
  const message = h("div", { "aria-live": "polite" });

  async function act(button, request, done) {
    button.disabled = true;
    try {
      const answer = await request();
      done(answer);
      onJob(answer);
    } catch (err) {
      toast(describeError(err), "error");
    } finally {
      button.disabled = false;
    }
  }
  pauseBtn.addEventListener("click", () => act(pauseBtn, () => api(`${path}/pause`, { method: "POST" }),
    () => toast("Pausing: training stops once it has saved a checkpoint.", "success")));
  resumeBtn.addEventListener("click", () => act(resumeBtn, () => api(`${path}/resume`, { method: "POST" }),
    () => toast("Resuming from the last checkpoint.", "success")));
  retryForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    retryError.textContent = "";
    if (cap.value !== "" && !(Number(cap.value) > 0)) {
      retryError.textContent = "The budget cap must be above $0.";
      return;
    }
    const json = cap.value === "" ? {} : { max_cost_usd: Number(cap.value) };
    act(retryBtn, () => api(retryPath, { method: "POST", json }), (answer) => {
      const text = (answer.retry && answer.retry.message) || "Retrying.";
      replace(message, h("p", { class: "notice notice-info", "data-testid": "retry-message" }, text));
      toast(text, "success");
      cap.value = "";
    });
  });

  return {
    actions: [pauseBtn, resumeBtn],
    panel: h("div", retryForm, message),
    render(job) {
      pauseBtn.hidden = job.status !== "running" || Boolean(job.cancel_requested_at);
      resumeBtn.hidden = job.status !== "paused" || Boolean(job.cancel_requested_at);
      retryForm.hidden = !RETRYABLE.has(job.status);
      if (job.status === "running") replace(message); // a retry's message has served once the new part runs
    },
  };
}

/** Each part of the job (empty before its first launch), with the billed total. */
export function partsTable(job) {
  const parts = job.parts || [];
  if (!parts.length) return h("p", { class: "muted" }, "The job's runs appear here once it starts.");
  return h("div", { class: "table-scroll" }, h("table", { class: "table table-compact parts" },
    h("thead", h("tr", h("th", { scope: "col" }, "Part"), h("th", { scope: "col" }, "Kind"),
      h("th", { scope: "col", class: "num" }, "From step"), h("th", { scope: "col" }, "Status"),
      h("th", { scope: "col", class: "hide-sm" }, "Started"), h("th", { scope: "col", class: "hide-sm" }, "Ended"),
      h("th", { scope: "col", class: "num" }, "Billed"), h("th", { scope: "col", class: "num" }, "Cost"))),
    h("tbody", parts.map((p) => h("tr", { "data-part": p.part, "data-kind": p.kind },
      h("td", h("span", { class: "strong" }, `Part ${p.part}`), h("div", { class: "muted small mono part-name" }, p.sagemaker_job_name)),
      h("td", PART_KINDS[p.kind] || p.kind),
      h("td", { class: "num" }, p.from_step === null || p.from_step === undefined ? "—" : formatNumber(p.from_step)),
      h("td", statusBadge(p.status)),
      h("td", { class: "hide-sm small" }, formatDate(p.started_at)),
      h("td", { class: "hide-sm small" }, formatDate(p.ended_at)),
      h("td", { class: "num" }, formatDuration(p.billed_seconds)),
      h("td", { class: "num" }, formatUsd(p.billed_cost_usd))))),
    h("tfoot", h("tr", h("th", { scope: "row", colspan: 7 }, "Total billed"),
      h("td", { class: "num strong", "data-testid": "billed-total" }, formatUsd(job.billed_cost_usd))))));
}

/** A DPO run's reward accuracy by step, and the last step's reward figures. */
export function rewardPanel() {
  const chart = new LossChart({ series: [{ key: "reward_accuracy", label: "Reward accuracy", cls: "train", higherIsBetter: true }],
    yLabel: "Accuracy", yRange: [0, 1], title: "Reward accuracy by step", emptyText: "Reward accuracy appears here once training starts" });
  const latest = h("dl", { class: "facts reward-latest", "data-testid": "reward-latest" });
  let last = null;
  const fmt = (v, digits = 3) => (typeof v === "number" ? v.toFixed(digits) : "—");
  return {
    element: h("div", latest, chart.element),
    setMarkers: (markers) => chart.setMarkers(markers),
    add(points) {
      chart.add(points);
      for (const p of points) if (p && typeof p.reward_accuracy === "number" && (!last || p.step >= last.step)) last = p;
      if (!last) return;
      replace(latest, [["Step", formatNumber(last.step)], ["Reward accuracy", fmt(last.reward_accuracy)],
        ["Reward margin", fmt(last.reward_margin)], ["Chosen log-prob", fmt(last.chosen_logps, 2)],
        ["Rejected log-prob", fmt(last.rejected_logps, 2)]].map(([k, v]) => h("div", { class: "fact" }, h("dt", k), h("dd", v))));
    },
  };
}

// Jobs: the list with live status badges, and a job's page: status, live loss chart, timeline, log tail,
// checkpoints, downloads, cancel, pause, resume and retry with the job's parts (job-runs.js), the openai SDK call
// that creates the same job, and once it has succeeded its automatic evaluation (base against tuned), a link to
// the playground, a Deploy button and Continue training.

import { api, ApiError, describeError } from "./api.js";
import { LossChart } from "./chart.js";
import { h, replace, formatBytes, formatDate, formatDuration, formatTime, relativeTime, formatUsd } from "./dom.js";
import { navigate } from "./router.js";
import { BUSY_EVALUATION, deployModel, onEvaluationEvents, pollWithBackoff } from "./serving.js";
import * as live from "./sse.js";
import { JOB_METRICS, JOB_STATUS_EVENTS } from "./events.js";
import { jobEvaluation } from "./views-evaluations.js";
import { checkpointHref, continueHref, lifecycleControls, methodBadge, methodHyperparameters, methodType, partMarkers,
  partsTable, rewardPanel } from "./job-runs.js";
import { announce, badge, card, codeBlock, confirmDialog, emptyState, errorState, facts, loading, pageHeader,
  statusBadge, toast } from "./ui.js";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const JOB_EVENTS = JOB_STATUS_EVENTS;
const LOG_POLL_MS = 3000;
const EVALUATION_WAIT_S = 600;

function onJobEvents(fn) {
  const offs = JOB_EVENTS.map((t) => live.on(t, fn));
  return () => offs.forEach((off) => off());
}

function jobTitle(job) {
  return job.user_provided_suffix ? `${job.user_provided_suffix} · ${job.id}` : job.id;
}

function elapsed(job) {
  const end = job.finished_at || Math.floor(Date.now() / 1000);
  return formatDuration(end - job.created_at);
}

// ---- the list ---------------------------------------------------------------------------------------------

export async function jobsView(main) {
  const host = h("div", { class: "table-host" }, loading("Loading jobs…"));
  main.append(pageHeader("Fine-tuning jobs", "Every job you launched, live.",
    h("a", { class: "btn btn-primary", href: "#/train" }, "New job")), card(null, host));
  const progress = new Map();
  let jobs = null;

  async function refresh() {
    try {
      jobs = (await api("/v1/fine_tuning/jobs?limit=100")).data;
      render();
    } catch (err) {
      if (!jobs) replace(host, errorState(describeError(err), refresh));
    }
  }

  function render() {
    if (!jobs.length) {
      replace(host, emptyState("No jobs yet", "Launch your first fine-tuning job from a validated file.",
        h("a", { class: "btn btn-primary", href: "#/train" }, "Train a model")));
      return;
    }
    replace(host, h("table", { class: "table" },
      h("thead", h("tr", h("th", { scope: "col" }, "Job"), h("th", { scope: "col" }, "Status"),
        h("th", { scope: "col", class: "hide-sm" }, "Base model"), h("th", { scope: "col", class: "hide-sm" }, "Instance"),
        h("th", { scope: "col", class: "hide-sm" }, "Created"), h("th", { scope: "col", class: "num hide-sm" }, "Duration"))),
      h("tbody", jobs.map((j) => {
        const p = progress.get(j.id);
        return h("tr", { "data-job-id": j.id },
          h("td", h("a", { href: `#/jobs/${encodeURIComponent(j.id)}`, class: "strong mono break" }, jobTitle(j)),
            h("div", { class: "muted small break" }, j.fine_tuned_model || j.model)),
          h("td", statusBadge(j.status), methodBadge(j) ? [" ", methodBadge(j)] : null, j.status === "running" && p && p.total_steps
            ? h("div", { class: "mini-progress", title: `Step ${p.step} of ${p.total_steps}` },
              h("progress", { max: p.total_steps, value: p.step, "aria-label": `${j.id} progress` })) : null),
          h("td", { class: "hide-sm mono small" }, j.base_model || j.model),
          h("td", { class: "hide-sm small" }, j.instance_type || "—", j.spot ? [" ", badge("spot", "info")] : null),
          h("td", { class: "hide-sm", title: formatDate(j.created_at) }, relativeTime(j.created_at)),
          h("td", { class: "num hide-sm" }, elapsed(j)));
      }))));
  }

  await refresh();
  let pending = null;
  const soon = () => { clearTimeout(pending); pending = setTimeout(refresh, 250); };
  const offJobs = onJobEvents((event) => {
    const d = (event && event.data) || {};
    if (d.job_id && d.status) announce(`Job ${d.job_id} is ${d.status}.`);
    soon();
  });
  const offMetrics = live.on(JOB_METRICS, (event) => {
    const d = (event && event.data) || {};
    progress.set(d.job_id, d);
    if (jobs) render();
  });
  const offPoll = live.whenOffline(refresh, 4000);
  return () => { offJobs(); offMetrics(); offPoll(); clearTimeout(pending); };
}

// ---- one job ----------------------------------------------------------------------------------------------

export async function jobView(main, { id }, query, isCurrent) {
  main.append(loading("Loading job…"));
  const path = `/v1/fine_tuning/jobs/${encodeURIComponent(id)}`;
  let job;
  try {
    job = await api(path);
  } catch (err) {
    if (!isCurrent()) return undefined;
    replace(main, pageHeader("Job not found"), err instanceof ApiError && err.status === 404
      ? card(null, emptyState("Job not found", "This job does not exist, or it belongs to another account.",
        h("a", { class: "btn btn-secondary", href: "#/jobs" }, "Back to jobs")))
      : errorState(describeError(err), () => navigate(`/jobs/${id}`)));
    return undefined;
  }
  if (!isCurrent()) return undefined;

  const chart = new LossChart();
  const rewards = rewardPanel();
  const rewardCard = card("Reward accuracy", rewards.element);
  const partsHost = h("div");
  const runs = lifecycleControls({ path, retryPath: `/api/jobs/${encodeURIComponent(id)}/retry`,
    onJob: (fresh) => { job = fresh; renderJob(); } });
  const continueLink = h("a", { class: "btn btn-secondary", hidden: true }, "Continue training");
  const statusHost = h("span", { class: "status-host", "aria-live": "polite" });
  const titleText = h("span", { class: "break" });
  const secondary = h("p", { class: "page-subtitle" });
  const progressHost = h("div", { class: "job-progress" });
  const cancelBtn = h("button", { type: "button", class: "btn btn-secondary btn-danger-outline" }, "Cancel job");
  const playLink = h("a", { class: "btn btn-secondary", hidden: true }, "Try in playground");
  const deployBtn = h("button", { type: "button", class: "btn btn-primary", hidden: true }, "Deploy");
  const evaluationHost = h("div");
  const evaluationCard = card("Evaluation: base against tuned", evaluationHost);
  const detailsHost = h("div");
  const timelineHost = h("ol", { class: "timeline", "aria-label": "Job events, newest first" });
  const logBox = h("pre", { class: "log", tabindex: "0", "aria-label": "Log tail", "aria-live": "off" });
  const logStatus = h("p", { class: "muted small" });
  const checkpointsHost = h("div", loading("Loading checkpoints…"));
  const artifactsHost = h("div");
  const sdkHost = h("div");
  const errorHost = h("div");

  replace(main,
    h("nav", { class: "breadcrumb", "aria-label": "Breadcrumb" }, h("a", { href: "#/jobs" }, "Jobs"), h("span", "/"),
      h("span", { "aria-current": "page", class: "mono" }, job.id)),
    h("header", { class: "page-header" },
      h("div", { class: "page-heading" },
        h("h1", { class: "page-title title-with-badge", tabindex: "-1" }, titleText, statusHost), secondary),
      h("div", { class: "page-actions" },
        h("a", { class: "btn btn-secondary", href: `#/train?file=${encodeURIComponent(job.training_file)}` }, "Train again"),
        continueLink, playLink, deployBtn, runs.actions, cancelBtn)),
    errorHost, runs.panel, progressHost,
    card("Loss", chart.element),
    rewardCard,
    card("Runs", partsHost),
    evaluationCard,
    h("div", { class: "grid grid-2" },
      card("Timeline", timelineHost),
      card("Details", detailsHost)),
    card(h("div", { class: "card-title-row" }, h("h2", { class: "card-title" }, "Logs"), logStatus), logBox),
    h("div", { class: "grid grid-2" }, card("Downloads", artifactsHost), card("Checkpoints", checkpointsHost)),
    card("Use the API", sdkHost));

  cancelBtn.addEventListener("click", async () => {
    const ok = await confirmDialog({ title: "Cancel this job?", danger: true, confirmLabel: "Cancel job",
      message: "Training stops and the instance is released. Checkpoints saved so far stay available." });
    if (!ok) return;
    cancelBtn.disabled = true;
    try {
      job = await api(`${path}/cancel`, { method: "POST" });
      toast("Cancellation requested.", "success");
      renderJob();
    } catch (err) {
      toast(describeError(err), "error");
      cancelBtn.disabled = false;
    }
  });

  deployBtn.addEventListener("click", async () => {
    deployBtn.disabled = true;
    try {
      const dep = await deployModel(job.fine_tuned_model);
      toast(`Deploying ${dep.model} on ${dep.instance_type}.`, "success");
      navigate(`/deployments`);
    } catch (err) {
      toast(describeError(err), "error");
      deployBtn.disabled = false;
    }
  });

  // The automatic evaluation: looked up once the job has succeeded, again while it runs (or, for a few minutes
  // after the job ended, until it appears).
  let evaluationPoller = null;
  async function loadEvaluation() {
    try {
      const evaluation = await jobEvaluation(evaluationHost, job, isCurrent);
      if (evaluation) return BUSY_EVALUATION.has(evaluation.status);
      return Date.now() / 1000 - (job.finished_at || 0) < EVALUATION_WAIT_S;
    } catch (err) {
      replace(evaluationHost, err instanceof ApiError && err.status === 404
        ? h("p", { class: "muted" }, "Evaluations are not available on this server.") : errorState(describeError(err), loadEvaluation));
      return false;
    }
  }
  async function showSucceeded() {
    const ready = job.status === "succeeded" && Boolean(job.fine_tuned_model) && !job.model_deleted_at;
    playLink.hidden = !ready;
    deployBtn.hidden = !ready;
    continueLink.hidden = !ready;
    if (ready) continueLink.href = continueHref(job);
    evaluationCard.hidden = job.status !== "succeeded";
    if (job.status !== "succeeded" || evaluationPoller) return;
    playLink.href = `#/playground?model=${encodeURIComponent(job.fine_tuned_model)}`;
    evaluationPoller = { stop() {} }; // one lookup at a time
    if (await loadEvaluation() && isCurrent()) evaluationPoller = pollWithBackoff(loadEvaluation, { firstMs: 2000, maxMs: 15000 });
  }

  let lastStatus = null;
  let lastMetrics = null;
  let pausingTimer = null;
  function renderJob() {
    document.title = `${jobTitle(job)} · LLM Tuner`;
    titleText.textContent = jobTitle(job);
    replace(statusHost, statusBadge(job.status), methodBadge(job));
    runs.render(job);
    replace(partsHost, partsTable(job));
    chart.setMarkers(partMarkers(job));
    rewards.setMarkers(partMarkers(job));
    rewardCard.hidden = methodType(job) !== "dpo";
    // Paused is reached when SageMaker has stopped after its last checkpoint: looked up until then.
    clearTimeout(pausingTimer);
    if (job.status === "pausing") pausingTimer = setTimeout(reloadJob, 2000);
    secondary.textContent = [job.secondary_status ? `SageMaker: ${job.secondary_status}` : null,
      job.cancel_requested_at && !TERMINAL.has(job.status) ? "cancelling…" : null,
      `${job.model} on ${job.instance_type}${job.spot ? " (spot)" : ""}`].filter(Boolean).join(" · ");
    cancelBtn.hidden = TERMINAL.has(job.status) || Boolean(job.cancel_requested_at);
    replace(errorHost, job.error && job.error.message ? h("div", { class: "notice notice-danger", role: "alert" },
      h("strong", "Failed: "), job.error.message, job.error.code ? h("code", { class: "small" }, ` ${job.error.code}`) : null) : null);
    const hp = methodHyperparameters(job);
    replace(detailsHost, facts([
      ["Job ID", h("code", job.id)], ["Status", job.status],
      ["Method", methodType(job) === "dpo" ? `Preference (DPO), beta ${hp.beta ?? "auto"}` : "Supervised (SFT)"],
      ["Base model", job.base_model || job.model],
      job.base_model && job.model !== job.base_model ? ["Continues from", h("code", { class: "break" }, job.model)] : null,
      job.from_checkpoint ? ["From checkpoint", h("code", { class: "break" }, job.from_checkpoint)] : null,
      ["Fine-tuned model", job.fine_tuned_model], ["Training file", h("a", { href: `#/files/${encodeURIComponent(job.training_file)}`, class: "mono" }, job.training_file)],
      job.validation_file ? ["Validation file", h("a", { href: `#/files/${encodeURIComponent(job.validation_file)}`, class: "mono" }, job.validation_file)] : null,
      ["Instance", `${job.instance_type}${job.instance_count > 1 ? ` × ${job.instance_count}` : ""}${job.spot ? " · spot" : ""}`],
      job.max_cost_usd ? ["Budget cap", formatUsd(job.max_cost_usd)] : null,
      job.billed_cost_usd !== undefined ? ["Billed", formatUsd(job.billed_cost_usd)] : null,
      ["Created", formatDate(job.created_at)], ["Finished", job.finished_at ? formatDate(job.finished_at) : null],
      ["Duration", elapsed(job)], ["Trained tokens", job.trained_tokens],
      ["Epochs", hp.n_epochs], ["Batch size", hp.batch_size], ["Learning-rate multiplier", hp.learning_rate_multiplier],
      ["LoRA r / alpha / dropout", [hp.lora_r, hp.lora_alpha, hp.lora_dropout].map((v) => v ?? "auto").join(" / ")],
      ["Seed", job.seed]]));
    replace(sdkHost, h("p", { class: "muted" }, "The same job from Python, with the official openai SDK (use an API key from your Account page):"),
      codeBlock(sdkSnippet(job), "Python"));
    renderProgress();
    showSucceeded();
    if (lastStatus && lastStatus !== job.status) announce(`Job status: ${job.status}`);
    if (lastStatus && TERMINAL.has(lastStatus) && !TERMINAL.has(job.status) && logsAvailable) loadLogs(); // retried
    if (lastStatus && lastStatus !== job.status) {
      if (job.status === "succeeded") loadArtifacts();
      // the last points may have been recorded as it finished or paused
      if (TERMINAL.has(job.status) || job.status === "paused") loadMetrics();
    }
    lastStatus = job.status;
  }

  function renderProgress() {
    chart.setEmptyText(TERMINAL.has(job.status) ? "No loss values were recorded for this job"
      : job.status === "running" ? "Waiting for the first training steps…" : "Loss appears here once training starts");
    const m = lastMetrics;
    if (job.status !== "running" || !m || !m.total_steps) { replace(progressHost); return; }
    const eta = m.estimated_finish || job.estimated_finish;
    replace(progressHost, h("div", { class: "progress-card" },
      h("div", { class: "progress-text" }, `Step ${m.step} of ${m.total_steps}`,
        eta ? h("span", { class: "muted" }, ` · about ${formatDuration(eta - Date.now() / 1000)} left`) : null),
      h("progress", { max: m.total_steps, value: m.step, "aria-label": "Training progress" })));
  }

  async function reloadJob() {
    try {
      job = await api(path);
      if (isCurrent()) renderJob();
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) navigate("/jobs");
    }
  }

  // The job's story, newest first: `type=message` leaves out the per-step metrics events (the chart has those).
  async function fetchEvents() {
    return (await api(`${path}/events?limit=100&type=message`)).data;
  }

  async function loadEvents() {
    try {
      const events = await fetchEvents();
      if (!isCurrent()) return events;
      const shown = events.filter((e) => e.type !== "metrics");
      replace(timelineHost, shown.length ? shown.map((e) => h("li", { class: ["timeline-item", `level-${e.level}`] },
        h("span", { class: "timeline-dot", "aria-hidden": "true" }),
        h("div", { class: "timeline-body" }, h("p", { class: "timeline-message" }, e.message),
          h("time", { class: "muted small", datetime: new Date(e.created_at * 1000).toISOString() }, formatDate(e.created_at)))))
        : h("li", { class: "muted" }, "No events yet."));
      return events;
    } catch (err) {
      replace(timelineHost, h("li", errorState(describeError(err), loadEvents)));
      return [];
    }
  }

  async function loadMetrics() {
    try {
      const metrics = (await api(`/api/jobs/${encodeURIComponent(job.id)}/metrics`)).data;
      chart.add(metrics);
      rewards.add(metrics);
      if (metrics.length) lastMetrics = metrics[metrics.length - 1];
    } catch (err) {
      toast(`Could not load the loss history: ${describeError(err)}`, "error");
    }
    renderProgress();
  }

  let logTimer = null;
  let logsAvailable = true;
  async function loadLogs() {
    clearTimeout(logTimer);
    try {
      const logs = (await api(`/api/jobs/${encodeURIComponent(job.id)}/logs?limit=200`)).data;
      if (!isCurrent()) return;
      const atBottom = logBox.scrollHeight - logBox.scrollTop - logBox.clientHeight < 24;
      logBox.textContent = logs.length ? logs.map((l) => `${formatTime(l.timestamp)}  ${l.message}`).join("\n")
        : (TERMINAL.has(job.status) ? "No log lines." : "Waiting for the first log lines…");
      if (atBottom) logBox.scrollTop = logBox.scrollHeight;
      logStatus.textContent = TERMINAL.has(job.status) ? "Last 200 lines" : "Live: refreshed every few seconds";
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        logsAvailable = false;
        logBox.textContent = "Logs are not available on this server yet.";
        logStatus.textContent = "";
        return;
      }
      logStatus.textContent = describeError(err);
    }
    if (isCurrent() && !TERMINAL.has(job.status)) logTimer = setTimeout(loadLogs, LOG_POLL_MS);
  }

  async function loadCheckpoints() {
    try {
      const list = (await api(`${path}/checkpoints?limit=20`)).data;
      if (!isCurrent()) return;
      replace(checkpointsHost, list.length ? h("table", { class: "table table-compact" },
        h("thead", h("tr", h("th", { scope: "col", class: "num" }, "Step"), h("th", { scope: "col", class: "num" }, "Train loss"),
          h("th", { scope: "col", class: "num" }, "Valid loss"), h("th", { scope: "col", class: "hide-sm" }, "Saved"),
          h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Actions")))),
        h("tbody", list.map((c) => h("tr", { "data-checkpoint-id": c.id },
          h("td", { class: "num" }, c.step_number),
          h("td", { class: "num" }, fmtLoss(c.metrics && c.metrics.train_loss)),
          h("td", { class: "num" }, fmtLoss(c.metrics && (c.metrics.valid_loss ?? c.metrics.full_valid_loss))),
          h("td", { class: "hide-sm small", title: c.fine_tuned_model_checkpoint }, relativeTime(c.created_at)),
          h("td", h("a", { class: "btn btn-ghost btn-sm checkpoint-continue", href: checkpointHref(job, c),
            "aria-label": `Continue from this checkpoint (step ${c.step_number})` }, "Continue from this checkpoint"))))))
        : h("p", { class: "muted" }, TERMINAL.has(job.status) ? "No checkpoints were saved." : "Checkpoints appear as training saves them."));
    } catch (err) {
      replace(checkpointsHost, errorState(describeError(err), loadCheckpoints));
    }
  }

  let artifactsTimer = null;
  async function loadArtifacts() {
    clearTimeout(artifactsTimer);
    if (job.status !== "succeeded") {
      replace(artifactsHost, h("p", { class: "muted" }, job.status === "failed" || job.status === "cancelled"
        ? "This job produced no model." : "The adapter can be downloaded here once the job succeeds."));
      return;
    }
    replace(artifactsHost, loading("Preparing links…"));
    try {
      const list = (await api(`/api/jobs/${encodeURIComponent(job.id)}/artifacts`)).data;
      if (!isCurrent()) return;
      const labels = { adapter: "LoRA adapter", merged_model: "Merged model", results: "Training results (CSV)" };
      replace(artifactsHost, list.length ? h("ul", { class: "downloads" }, list.map((a) => h("li", { class: "download" },
        h("div", h("div", { class: "strong" }, labels[a.kind] || a.kind), h("div", { class: "muted small mono" }, `${a.name} · ${formatBytes(a.bytes)}`)),
        h("a", { class: "btn btn-secondary btn-sm", href: a.url, download: a.name, rel: "noopener", "data-kind": a.kind }, "Download"))))
        : h("p", { class: "muted" }, "No files were found for this job."),
      h("p", { class: "muted small" }, "Links are valid for 15 minutes and renew while this page is open."));
      artifactsTimer = setTimeout(loadArtifacts, 10 * 60 * 1000);
    } catch (err) {
      replace(artifactsHost, errorState(describeError(err), loadArtifacts));
    }
  }

  renderJob();
  await loadEvents();
  await loadMetrics();
  loadLogs();
  loadCheckpoints();
  loadArtifacts();

  let pending = null;
  const refreshAll = async () => {
    await reloadJob();
    const evs = await loadEvents();
    if (TERMINAL.has(job.status) || job.status === "paused") { loadCheckpoints(); if (logsAvailable) loadLogs(); }
    return evs;
  };
  const soon = () => { clearTimeout(pending); pending = setTimeout(refreshAll, 200); };
  const offJobs = onJobEvents((event) => { if (event && event.data && event.data.job_id === job.id) soon(); });
  const offMetrics = live.on(JOB_METRICS, (event) => {
    const d = event && event.data;
    if (!d || d.job_id !== job.id) return;
    chart.add([d]);
    rewards.add([d]);
    lastMetrics = d;
    renderProgress();
  });
  const offResync = live.on("resync", async () => { const evs = await refreshAll(); await loadMetrics(evs); });
  const offEvaluations = onEvaluationEvents((event) => {
    const d = (event && event.data) || {};
    if (job.status === "succeeded" && (!d.job_id || d.job_id === job.id)) loadEvaluation();
  });
  const offPoll = live.whenOffline(async () => {
    if (TERMINAL.has(job.status)) return;
    const evs = await refreshAll();
    await loadMetrics(evs);
  }, 3000);
  return () => {
    offJobs(); offMetrics(); offResync(); offEvaluations(); offPoll();
    clearTimeout(pending); clearTimeout(logTimer); clearTimeout(artifactsTimer); clearTimeout(pausingTimer);
    if (evaluationPoller) evaluationPoller.stop();
    document.title = "LLM Tuner";
  };
}

function fmtLoss(v) {
  return typeof v === "number" ? v.toFixed(4) : "—";
}

function py(value) {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (Array.isArray(value)) return `[${value.map(py).join(", ")}]`;
  if (typeof value === "number") return String(value);
  return JSON.stringify(String(value));
}

/** The openai SDK call that creates this job again, with the values it ran with. */
export function sdkSnippet(job) {
  const hp = { ...methodHyperparameters(job) };
  delete hp.packing;
  delete hp.seed; // passed as `seed=`
  if (hp.learning_rate !== undefined && hp.learning_rate !== "auto") delete hp.learning_rate_multiplier;
  const hpLines = Object.entries(hp).filter(([, v]) => v !== "auto" && v !== null && v !== undefined)
    .map(([k, v]) => `        ${JSON.stringify(k)}: ${py(v)},`);
  const extra = [`        "instance_type": ${py(job.instance_type)},`, `        "spot": ${py(Boolean(job.spot))},`];
  if (job.instance_count > 1) extra.splice(1, 0, `        "instance_count": ${job.instance_count},`);
  if (job.max_cost_usd) extra.push(`        "max_cost_usd": ${py(job.max_cost_usd)},`);
  if (job.from_checkpoint) extra.push(`        "from_checkpoint": ${py(job.from_checkpoint)},`);
  const dpo = methodType(job) === "dpo";
  // A DPO job's hyperparameters go inside `method` (OpenAI's shape); a supervised one's as `hyperparameters=`.
  const hpOpen = dpo ? "    method={\"type\": \"dpo\", \"dpo\": {\"hyperparameters\": {" : "    hyperparameters={";
  const hpClose = dpo ? "    }}}," : "    },";
  const lines = [
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url=${py(`${location.origin}/v1`)}, api_key="sk-...")  # an API key from your Account page`,
    "",
    "job = client.fine_tuning.jobs.create(",
    `    model=${py(job.model)},`,
    `    training_file=${py(job.training_file)},`,
    job.validation_file ? `    validation_file=${py(job.validation_file)},` : null,
    job.user_provided_suffix ? `    suffix=${py(job.user_provided_suffix)},` : null,
    `    seed=${py(job.seed)},`,
    hpLines.length || dpo ? hpOpen : null, ...hpLines, hpLines.length || dpo ? hpClose : null,
    "    extra_body={", ...extra, "    },",
    ")",
    "print(job.id, job.status)",
  ];
  return lines.filter((l) => l !== null).join("\n");
}

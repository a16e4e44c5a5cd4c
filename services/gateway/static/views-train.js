// Train: the method (supervised or DPO) and the training data it takes, the base model (or the fine-tuned model
// or checkpoint a job continues from), instance type, hyperparameters ("auto" unless set), spot and a budget cap,
// with a live estimate of duration and cost; launch creates the job and opens its page.

import { api, ApiError, describeError } from "./api.js";
import { h, replace, formatBytes, formatDuration, formatNumber, formatParams, formatUsd, nextId } from "./dom.js";
import { navigate } from "./router.js";
import * as live from "./sse.js";
import { FILE_VALIDATED } from "./events.js";
import { badge, card, emptyState, errorState, loading, pageHeader, toast } from "./ui.js";
import { betaControl, catalogMethods, continueNotice, continueSource, fitsMethod, loadExampleTypes, methodBody,
  methodPicker, noFilesText } from "./train-method.js";

const SCHEDULERS = ["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
  "inverse_sqrt"];

// The main knobs, as sliders. `fallback` is what the slider shows while "auto" (until an estimate tells the
// value auto resolves to).
const SLIDERS = [
  { name: "n_epochs", label: "Epochs", min: 1, max: 50, step: 1, fallback: 3, integer: true,
    help: "Passes over the training data. Auto picks from the number of examples." },
  { name: "learning_rate_multiplier", label: "Learning-rate multiplier", min: 0.1, max: 10, step: 0.1, fallback: 1,
    help: "Scales the model's recommended learning rate (from the catalog)." },
  { name: "batch_size", label: "Batch size", min: 1, max: 64, step: 1, fallback: 4, numberMax: 256, integer: true,
    help: "Examples per optimizer step. Auto: steps of a fixed number of tokens, sized to the file." },
  { name: "lora_r", label: "LoRA rank (r)", min: 1, max: 128, step: 1, fallback: 8, numberMax: 256, integer: true,
    help: "Adapter capacity: higher learns more and trains slower." },
  { name: "lora_alpha", label: "LoRA alpha", min: 1, max: 256, step: 1, fallback: 16, numberMax: 1024, integer: true,
    help: "Adapter scaling; auto is twice the rank." },
  { name: "lora_dropout", label: "LoRA dropout", min: 0, max: 0.5, step: 0.01, fallback: 0.05,
    help: "Regularisation inside the adapter." },
];

const ADVANCED_NUMBERS = [
  { name: "max_seq_length", label: "Max sequence length", min: 16, step: 1, integer: true,
    help: "Longer conversations are truncated, longer texts split. Auto: the model's context, at most 2048." },
  { name: "warmup_ratio", label: "Warmup ratio", min: 0, max: 0.5, step: 0.01 },
  { name: "weight_decay", label: "Weight decay", min: 0, max: 1, step: 0.01 },
  { name: "gradient_accumulation_steps", label: "Gradient accumulation steps", min: 1, max: 64, step: 1, integer: true },
  { name: "seed", label: "Seed", min: 0, max: 2147483647, step: 1, integer: true, random: true,
    help: "Same seed, same run. Auto picks one at random." },
];

export async function trainView(main, params, query, isCurrent) {
  main.append(pageHeader("Train a model", "Pick your data and a base model; everything else has a sensible default."),
    loading("Loading the catalog…"));
  let catalog;
  let files;
  let types;
  try {
    [catalog, files] = await Promise.all([api("/api/catalog"), api("/v1/files?purpose=fine-tune")]);
    types = await loadExampleTypes(files.data.filter((f) => f.status === "processed" && f.purpose === "fine-tune"));
  } catch (err) {
    if (isCurrent()) replace(main, pageHeader("Train a model"), errorState(describeError(err), () => navigate("/train")));
    return undefined;
  }
  if (!isCurrent()) return undefined;
  const ready = files.data.filter((f) => f.status === "processed" && f.purpose === "fine-tune");
  if (!ready.length) {
    replace(main, pageHeader("Train a model"), card(null, emptyState("No training data ready yet",
      "Upload a file on the Data page; once it is validated you can train on it.",
      h("a", { class: "btn btn-primary", href: "#/files" }, "Upload data"))));
    const off = live.on(FILE_VALIDATED, () => navigate("/train", { replace: true }));
    return off;
  }

  const errors = new Map(); // param -> element showing its error
  const errorFor = (param) => {
    const el = h("p", { class: "field-error", id: nextId("err"), "aria-live": "polite" });
    errors.set(param, el);
    return el;
  };
  const changed = () => scheduleEstimate();

  // ---- method and data: each method offers only the files of its example type ----
  const source = continueSource(query);
  const wanted = query.get("file");
  const methods = catalogMethods(catalog);
  const initialMethod = query.get("method") || (wanted && types.get(wanted) === "preference" ? "dpo" : "supervised");
  const method = methodPicker(methods, initialMethod, () => { renderFileOptions(); showBeta(); changed(); });
  const beta = betaControl(methods, errorFor("hyperparameters.beta"), changed);
  const showBeta = () => { beta.element.hidden = method.value() !== "dpo"; };
  showBeta();
  const fileSelect = h("select", { id: "training-file", class: "input", name: "training_file" });
  const noFiles = h("div", { "data-testid": "no-matching-files", "aria-live": "polite" });
  const trainingErr = errorFor("training_file");
  fileSelect.setAttribute("aria-describedby", trainingErr.id);

  const validationMode = h("select", { id: "validation-mode", class: "input" },
    h("option", { value: "none" }, "None"), h("option", { value: "split" }, "Hold out part of the training file"),
    h("option", { value: "file" }, "A separate validation file"));
  const splitInput = h("input", { id: "validation-split", type: "number", class: "input", min: 0.01, max: 0.5, step: 0.01, value: 0.1 });
  const validationFile = h("select", { id: "validation-file", class: "input" });
  const usableFiles = () => ready.filter((f) => fitsMethod(methods, types.get(f.id), method.value()));
  function renderFileOptions() {
    const usable = usableFiles();
    for (const [select, label] of [[fileSelect, (f) => `${f.filename} · ${formatBytes(f.bytes)} · ${f.id}`],
      [validationFile, (f) => `${f.filename} · ${f.id}`]]) {
      const keep = select.value || (select === fileSelect ? wanted : null);
      replace(select, usable.map((f) => h("option", { value: f.id }, label(f))));
      if (usable.some((f) => f.id === keep)) select.value = keep;
      select.disabled = !usable.length;
    }
    replace(noFiles, usable.length ? null : h("p", { class: "notice notice-warning" }, noFilesText(method.value()),
      h("a", { class: "btn btn-secondary btn-sm", href: "#/files" }, "Upload data")));
  }
  renderFileOptions();
  const splitRow = h("div", { class: "field", hidden: true }, h("label", { for: "validation-split" }, "Fraction held out"),
    splitInput, errorFor("hyperparameters.validation_split"));
  const valFileRow = h("div", { class: "field", hidden: true }, h("label", { for: "validation-file" }, "Validation file"),
    validationFile, errorFor("validation_file"));
  validationMode.addEventListener("change", () => {
    splitRow.hidden = validationMode.value !== "split";
    valFileRow.hidden = validationMode.value !== "file";
    changed();
  });

  // ---- model ----
  const modelGroup = h("div", { class: "choice-grid", role: "radiogroup", "aria-labelledby": "model-heading" });
  for (const m of catalog.models) {
    const id = nextId("model");
    const input = h("input", { type: "radio", name: "model", value: m.id, id, class: "choice-input" });
    modelGroup.append(h("label", { class: "choice", for: id, "data-model": m.id }, input,
      h("span", { class: "choice-body" },
        h("span", { class: "choice-title" }, m.name,
          m.gated ? badge("gated", "warning", "Needs a Hugging Face token configured on the server") : null),
        h("span", { class: "choice-sub mono" }, m.id),
        h("span", { class: "choice-meta" },
          `${formatParams(m.parameters)} params · ${formatNumber(m.context_length)} ctx · ${m.license}`),
        m.description ? h("span", { class: "choice-desc" }, m.description) : null,
        h("span", { class: "choice-meta" }, `Needs ~${m.memory_needed_gib} GiB · from ${m.min_instance_type}`))));
  }
  // A job that continues from a fine-tuned model or a checkpoint trains on that model's base: no other to pick.
  const first = catalog.models.find((m) => source && m.id === source.base) || catalog.models[0];
  modelGroup.querySelector(`input[value="${CSS.escape(first.id)}"]`).checked = true;
  if (source) for (const input of modelGroup.querySelectorAll("input")) input.disabled = !input.checked;
  const modelErr = errorFor("model");
  const clearSource = () => navigate(`/train?${new URLSearchParams({ file: fileSelect.value, method: method.value() })}`);

  // ---- instance ----
  const instanceHost = h("div", { class: "instance-list", role: "radiogroup", "aria-labelledby": "instance-heading" });
  const instanceErr = errorFor("instance_type");
  const selectedModel = () => catalog.models.find((m) => m.id === modelGroup.querySelector("input:checked").value);
  function renderInstances() {
    const model = selectedModel();
    const previous = instanceHost.querySelector("input:checked");
    // The platform's allow-list (ALLOWED_INSTANCE_TYPES; null: every type) narrows what fits.
    const allowed = catalog.limits && catalog.limits.allowed_instance_types;
    const fits = new Set((model.fits_instance_types || []).filter((id) => !allowed || allowed.includes(id)));
    replace(instanceHost, catalog.instance_types.map((t) => {
      const id = nextId("inst");
      const ok = fits.has(t.id);
      const notAllowed = allowed && !allowed.includes(t.id);
      return h("label", { class: ["instance", !ok && "instance-disabled"], for: id, "data-instance": t.id },
        h("input", { type: "radio", name: "instance_type", value: t.id, id, disabled: !ok, class: "choice-input" }),
        h("span", { class: "instance-name mono" }, t.id),
        h("span", { class: "instance-spec" }, `${t.vcpu} vCPU · ${t.memory_gib} GiB`,
          t.gpus ? ` · ${t.gpus}× GPU ${t.gpu_memory_gib} GiB` : " · CPU"),
        h("span", { class: "instance-price" }, `${formatUsd(t.price_per_hour)}/h`),
        h("span", { class: "instance-tags" },
          t.needs_quota_increase ? badge("quota increase", "warning", "New AWS accounts need a Service Quotas increase for this type") : null,
          notAllowed ? badge("not allowed", "neutral", "This platform's administrator allows other instance types")
            : (!ok ? badge("too small", "neutral") : null)));
    }));
    const keep = previous && fits.has(previous.value) ? previous.value
      : (fits.has(model.min_instance_type) ? model.min_instance_type : [...fits][0]);
    const input = keep && instanceHost.querySelector(`input[value="${CSS.escape(keep)}"]`);
    if (input) input.checked = true;
  }
  renderInstances();
  modelGroup.addEventListener("change", () => { renderInstances(); changed(); });
  instanceHost.addEventListener("change", changed);
  // Several instances train together (SageMaker's InstanceCount): one process per GPU on each, data parallel, or
  // sharded where the model does not fit one GPU. The price is the whole cluster's.
  const countInput = h("input", { id: "instance-count", type: "number", class: "input input-narrow", min: 1, max: 16,
    step: 1, value: 1, inputmode: "numeric", "aria-describedby": "instance-count-hint" });
  countInput.addEventListener("input", changed);
  const instanceCount = () => Math.max(1, Math.floor(Number(countInput.value) || 1));

  // ---- hyperparameters ----
  const controls = new Map(); // name -> {value(): "auto"|value, setAuto(resolved)}
  const sliderRows = SLIDERS.map((s) => sliderControl(s, controls, errorFor(`hyperparameters.${s.name}`), changed));
  const advanced = ADVANCED_NUMBERS.map((s) => numberControl(s, controls, errorFor(`hyperparameters.${s.name}`), changed));
  const schedulerId = nextId("sched");
  const scheduler = h("select", { id: schedulerId, class: "input" }, h("option", { value: "auto" }, "Auto (linear)"),
    SCHEDULERS.map((s) => h("option", { value: s }, s)));
  controls.set("lr_scheduler", { value: () => scheduler.value });
  scheduler.addEventListener("change", changed);
  const targetsId = nextId("targets");
  const targets = h("input", { id: targetsId, class: "input mono", placeholder: "auto", autocomplete: "off",
    "aria-describedby": `${targetsId}-hint` });
  controls.set("target_modules", { value: () => {
    const v = targets.value.trim();
    if (!v || v === "auto") return "auto";
    if (v === "all-linear") return v;
    return v.split(/[\s,]+/).filter(Boolean);
  } });
  targets.addEventListener("input", changed);
  const mergeId = nextId("merge");
  const merge = h("input", { id: mergeId, type: "checkbox", class: "checkbox" });
  controls.set("merge_adapter", { value: () => (merge.checked ? true : "auto") });
  merge.addEventListener("change", changed);
  const suffixId = nextId("suffix");
  const suffix = h("input", { id: suffixId, class: "input", maxlength: 64, placeholder: "my-model", autocomplete: "off" });

  // ---- cost ----
  const spot = h("input", { id: "spot", type: "checkbox", class: "switch-input", role: "switch" });
  spot.addEventListener("change", changed);
  const budget = h("input", { id: "max-cost", type: "number", class: "input", min: 0.01, step: 0.01, placeholder: "No cap",
    inputmode: "decimal" });
  budget.addEventListener("input", changed);

  // ---- estimate + launch ----
  const estimateHost = h("div", { class: "estimate", "aria-live": "polite" });
  const launch = h("button", { type: "submit", class: "btn btn-primary btn-block btn-lg" }, "Launch fine-tuning job");
  const launchError = h("div", { class: "form-error", role: "alert" });

  const form = h("form", { class: "train-layout", novalidate: true },
    h("div", { class: "train-main" },
      section("1", "Method and training data", "Validated files of the kind the method trains on.",
        h("h3", { id: "method-heading", class: "sr-only" }, "Training method"), method.element,
        h("div", { class: "field method-file" }, h("label", { for: "training-file" }, "Training file"), fileSelect, noFiles, trainingErr),
        h("div", { class: "field" }, h("label", { for: "validation-mode" }, "Validation"), validationMode),
        splitRow, valFileRow),
      section("2", "Base model", source ? "Set by the model this job continues from." : null,
        source ? continueNotice(source, clearSource) : null,
        h("h3", { id: "model-heading", class: "sr-only" }, "Base model"), modelGroup, modelErr),
      section("3", "Instance type", "Only types the model fits on can be picked. Prices are on-demand, per hour.",
        h("h3", { id: "instance-heading", class: "sr-only" }, "Instance type"), instanceHost, instanceErr,
        h("div", { class: "field" }, h("label", { for: "instance-count" }, "Instances"), countInput,
          h("p", { class: "field-hint", id: "instance-count-hint" },
            "More than one trains in parallel (torchrun on every instance); the price is per instance."),
          errorFor("instance_count")),
        h("p", { class: "muted small" }, catalog.prices_note || "", catalog.as_of ? ` Prices as of ${catalog.as_of}.` : "")),
      section("4", "Hyperparameters", "Leave “Auto” on to use defaults tuned to your data.",
        h("div", { class: "slider-grid" }, sliderRows), beta.element,
        h("details", { class: "advanced" }, h("summary", "Advanced"),
          h("div", { class: "advanced-grid" }, advanced,
            h("div", { class: "field" }, h("label", { for: schedulerId }, "Learning-rate scheduler"), scheduler,
              errorFor("hyperparameters.lr_scheduler")),
            h("div", { class: "field" }, h("label", { for: targetsId }, "LoRA target modules"), targets,
              h("p", { class: "field-hint", id: `${targetsId}-hint` }, "auto, all-linear, or names such as q_proj, v_proj."),
              errorFor("hyperparameters.target_modules")),
            h("div", { class: "field" }, h("label", { for: suffixId }, "Model name suffix"), suffix, errorFor("suffix")),
            h("div", { class: "field field-check" }, merge, h("label", { for: mergeId }, "Also publish a merged model"),
              h("p", { class: "field-hint" }, "The base model with the adapter merged in, as a second download."))))),
      section("5", "Cost controls", null,
        h("div", { class: "field field-switch" }, spot,
          h("label", { for: "spot" }, "Use managed spot training"),
          h("p", { class: "field-hint" }, catalog.spot_note || "Cheaper; may be interrupted and resumed from a checkpoint.")),
        h("div", { class: "field" }, h("label", { for: "max-cost" }, "Budget cap (USD)"), budget,
          h("p", { class: "field-hint" }, "The job stops before it would cost more than this."), errorFor("max_cost_usd")))),
    h("aside", { class: "train-side" },
      h("div", { class: "card sticky" }, h("div", { class: "card-header" }, h("h2", { class: "card-title" }, "Estimate")),
        h("div", { class: "card-body" }, estimateHost, launchError, launch))));
  replace(main, pageHeader("Train a model", "Pick your data and a base model; everything else has a sensible default."), form);

  function hyperparameters() {
    const out = {};
    for (const [name, control] of controls) {
      const v = control.value();
      if (v !== "auto") out[name] = v;
    }
    if (validationMode.value === "split") out.validation_split = Number(splitInput.value);
    return out;
  }

  function body() {
    const cost = budget.value ? Number(budget.value) : null;
    const b = { model: source ? source.model : selectedModel().id, training_file: fileSelect.value,
      method: methodBody(method.value(), hyperparameters(), beta.value()),
      instance_type: (instanceHost.querySelector("input:checked") || {}).value, spot: spot.checked };
    if (instanceCount() > 1) b.instance_count = instanceCount();
    if (source && source.checkpoint) b.from_checkpoint = source.checkpoint;
    if (validationMode.value === "file") b.validation_file = validationFile.value;
    if (cost) b.max_cost_usd = cost;
    if (suffix.value.trim()) b.suffix = suffix.value.trim();
    return b;
  }

  function clearErrors() {
    for (const el of errors.values()) el.textContent = "";
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    launchError.textContent = "";
  }

  function showError(err) {
    // A hyperparameter inside `method` is named method.<type>.hyperparameters.<name>: the same field on this page.
    const param = err instanceof ApiError && err.param ? err.param.replace(/^method\.\w+\.(?=hyperparameters\.)/, "") : null;
    const el = param ? errors.get(param) : null;
    if (el) {
      el.textContent = err.message;
      const input = el.parentElement && el.parentElement.querySelector("input:not([type=checkbox]):not([type=radio]), select");
      if (input) input.setAttribute("aria-invalid", "true");
      return el;
    }
    launchError.textContent = describeError(err);
    return null;
  }

  // Debounced, and a newer request cancels an older one still in flight.
  let timer = null;
  let inflight = null;
  function scheduleEstimate() {
    clearTimeout(timer);
    timer = setTimeout(runEstimate, 350);
  }
  /** Bounds checked here first: a message next to each field, and no request while any is wrong. */
  function localErrors() {
    const found = [];
    for (const [name, control] of controls) {
      const message = control.check ? control.check() : null;
      if (message) found.push([`hyperparameters.${name}`, message]);
    }
    if (validationMode.value === "split") {
      const split = outOfRange({ label: "The held-out fraction", min: 0.01 }, splitInput.value, 0.5);
      if (split) found.push(["hyperparameters.validation_split", split]);
    }
    if (method.value() === "dpo" && beta.check()) found.push(["hyperparameters.beta", beta.check()]);
    if (budget.value !== "" && !(Number(budget.value) > 0)) found.push(["max_cost_usd", "The budget cap must be above $0."]);
    clearErrors();
    for (const [param, message] of found) showError(new ApiError(400, { error: { message, param } }, null));
    return found.length;
  }

  async function runEstimate() {
    if (inflight) inflight.abort();
    if (localErrors() || !fileSelect.value) {
      inflight = null;
      replace(estimateHost, h("p", { class: "muted" }, fileSelect.value ? "Fix the highlighted field to see the estimate."
        : "Pick a training file to see the estimate."));
      return;
    }
    const controller = new AbortController();
    inflight = controller;
    const b = body();
    estimateHost.classList.add("is-stale");
    if (!estimateHost.firstChild) replace(estimateHost, loading("Estimating…"));
    try {
      const est = await api("/api/estimates", { method: "POST", signal: controller.signal,
        // The cost is the base model's, whatever the job continues from.
        json: { model: selectedModel().id, training_file: b.training_file, method: b.method,
          instance_type: b.instance_type, instance_count: b.instance_count, spot: b.spot } });
      if (controller !== inflight) return;
      clearErrors();
      renderEstimate(est, b);
      for (const [name, control] of controls) if (control.setAuto) control.setAuto(est.hyperparameters && est.hyperparameters[name]);
    } catch (err) {
      if (err.name === "AbortError" || controller !== inflight) return;
      clearErrors();
      const placed = showError(err);
      replace(estimateHost, h("p", { class: "muted" }, placed ? "Fix the highlighted field to see the estimate." : "No estimate."));
    } finally {
      if (controller === inflight) { inflight = null; estimateHost.classList.remove("is-stale"); }
    }
  }

  function renderEstimate(est, b) {
    const capped = b.max_cost_usd !== undefined;
    const over = capped && est.estimated_cost_usd > b.max_cost_usd;
    replace(estimateHost,
      h("div", { class: "estimate-main" },
        h("div", { class: "estimate-figure" }, h("span", { class: "estimate-label" }, "Duration"),
          h("span", { class: "estimate-value", "data-testid": "estimate-duration" }, formatDuration(est.estimated_duration_s))),
        h("div", { class: "estimate-figure" }, h("span", { class: "estimate-label" }, b.spot ? "Cost (spot)" : "Cost"),
          h("span", { class: "estimate-value", "data-testid": "estimate-cost" }, formatUsd(est.estimated_cost_usd)))),
      h("dl", { class: "estimate-rows" },
        row("On demand", formatUsd(est.cost_on_demand_usd), !b.spot),
        row("On spot", formatUsd(est.cost_spot_usd), b.spot),
        row("Trained tokens", formatNumber(est.trained_tokens)),
        row("Steps", formatNumber(est.steps)),
        row("Examples", formatNumber(est.training_examples ?? est.examples)),
        row("Instance", est.instance_count > 1 ? `${est.instance_type} × ${est.instance_count}` : est.instance_type),
        est.processes > 1 ? row("Processes", `${est.processes}` +
          (est.memory && est.memory.strategy ? ` · ${est.memory.strategy.toUpperCase().replace("_", " + ")}` : "")) : null,
        est.memory ? row("Memory", `${est.memory.predicted_peak_gib} GiB predicted peak` +
          (est.memory.gradient_checkpointing ? ", gradient checkpointing on" : "")) : null),
      capped ? h("p", { class: ["notice", over ? "notice-warning" : "notice-success"] },
        over ? `Over the ${formatUsd(b.max_cost_usd)} cap: the job would stop early.` : `Within the ${formatUsd(b.max_cost_usd)} cap.`) : null,
      h("p", { class: "muted small" }, `Throughput: ${est.inputs ? est.inputs.throughput_source : "catalog"} figure; `,
        `prices as of ${est.as_of}. Estimates, not quotes.`));
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!fileSelect.value) {
      launchError.textContent = noFilesText(method.value());
      return;
    }
    if (localErrors()) {
      const first = [...errors.values()].find((el) => el.textContent);
      if (first) first.scrollIntoView({ block: "center" });
      return;
    }
    launch.disabled = true;
    launch.textContent = "Launching…";
    try {
      const job = await api("/v1/fine_tuning/jobs", { method: "POST", json: body() });
      toast(`Job ${job.id} created.`, "success");
      navigate(`/jobs/${encodeURIComponent(job.id)}`);
    } catch (err) {
      const el = showError(err);
      if (el) el.scrollIntoView({ block: "center", behavior: matchMedia("(prefers-reduced-motion: reduce)").matches ? "auto" : "smooth" });
      toast(describeError(err), "error");
    } finally {
      launch.disabled = false;
      launch.textContent = "Launch fine-tuning job";
    }
  });
  for (const el of [fileSelect, validationFile, splitInput, suffix]) el.addEventListener("change", changed);
  runEstimate();
  return () => { clearTimeout(timer); if (inflight) inflight.abort(); };
}

/** A friendlier message than the server's for a value outside a field's bounds (checked before any request). */
function outOfRange(spec, raw, max) {
  const value = Number(raw);
  if (raw === "" || !Number.isFinite(value)) return `${spec.label}: enter a number.`;
  if (spec.integer && !Number.isInteger(value)) return `${spec.label} must be a whole number.`;
  if (value < spec.min || (max !== undefined && value > max)) {
    return max !== undefined ? `${spec.label} must be between ${spec.min} and ${max}.` : `${spec.label} must be at least ${spec.min}.`;
  }
  return null;
}

function row(label, value, strong = false) {
  return h("div", { class: ["estimate-row", strong && "strong"] }, h("dt", label), h("dd", value));
}

function section(number, title, hint, ...body) {
  return h("section", { class: "card form-section" },
    h("div", { class: "card-header" }, h("h2", { class: "card-title" }, h("span", { class: "step-number", "aria-hidden": "true" }, number), title),
      hint ? h("p", { class: "card-hint" }, hint) : null),
    h("div", { class: "card-body" }, body));
}

function sliderControl(spec, controls, error, changed) {
  const id = nextId(spec.name);
  const autoId = `${id}-auto`;
  const range = h("input", { id, type: "range", min: spec.min, max: spec.max, step: spec.step, value: spec.fallback,
    disabled: true, class: "range", "aria-describedby": `${id}-help ${error.id}` });
  const number = h("input", { type: "number", min: spec.min, max: spec.numberMax || spec.max, step: spec.step,
    value: spec.fallback, disabled: true, class: "input input-number", "aria-label": `${spec.label} value` });
  const auto = h("input", { id: autoId, type: "checkbox", checked: true, class: "checkbox" });
  let autoValue = spec.fallback;
  const sync = (v) => { range.value = v; number.value = v; };
  auto.addEventListener("change", () => {
    range.disabled = auto.checked;
    number.disabled = auto.checked;
    if (auto.checked) sync(autoValue);
    changed();
  });
  range.addEventListener("input", () => { number.value = range.value; changed(); });
  number.addEventListener("input", () => { if (number.value !== "") { range.value = number.value; changed(); } });
  controls.set(spec.name, {
    check: () => (auto.checked ? null : outOfRange(spec, number.value, spec.numberMax || spec.max)),
    value: () => (auto.checked ? "auto" : Number(number.value)),
    setAuto: (resolved) => {
      if (resolved === undefined || resolved === null) return;
      autoValue = Number(Number(resolved).toPrecision(4));
      if (auto.checked) sync(autoValue);
    },
  });
  return h("div", { class: "slider-field", "data-param": spec.name },
    h("div", { class: "slider-head" }, h("label", { for: id, class: "slider-label" }, spec.label),
      h("span", { class: "auto-toggle" }, auto, h("label", { for: autoId }, "Auto", h("span", { class: "sr-only" }, ` ${spec.label.toLowerCase()}`)))),
    h("div", { class: "slider-row" }, range, number),
    h("p", { class: "field-hint", id: `${id}-help` }, spec.help || ""), error);
}

function numberControl(spec, controls, error, changed) {
  const id = nextId(spec.name);
  const input = h("input", { id, type: "number", class: "input", min: spec.min, max: spec.max, step: spec.step,
    placeholder: "auto", inputmode: spec.integer ? "numeric" : "decimal", "aria-describedby": `${id}-help ${error.id}` });
  input.addEventListener("input", changed);
  controls.set(spec.name, {
    check: () => (input.value === "" ? null : outOfRange(spec, input.value, spec.max)),
    value: () => (input.value === "" ? "auto" : Number(input.value)),
    setAuto: (resolved) => {
      if (!spec.random && resolved !== undefined && resolved !== null) input.placeholder = `auto (${resolved})`;
    },
  });
  return h("div", { class: "field" }, h("label", { for: id }, spec.label), input,
    h("p", { class: "field-hint", id: `${id}-help` }, spec.help || ""), error);
}

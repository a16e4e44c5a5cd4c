// The train page's training method (supervised or DPO) and what a new job continues from: which validated files
// each method can train on (their validation report's example type), DPO's beta, and the "Continue from …"
// notice with its way back to a fresh job.

import { api } from "./api.js";
import { h, nextId } from "./dom.js";

// What an older catalog (before `methods`) stands for.
const FALLBACK_METHODS = [{ id: "supervised", label: "Supervised (SFT)", example_types: ["chat", "text"] },
  { id: "dpo", label: "Preference (DPO)", example_types: ["preference"], beta: { default: 0.1, min_exclusive: 0, max: 2 } }];
const METHOD_HINTS = {
  supervised: "Learns to answer like your examples: chat or text files.",
  dpo: "Learns to prefer the chosen answer over the rejected one: files of preference pairs.",
};
const NO_FILES = {
  supervised: "No validated chat or text files yet: upload conversations or texts on the Data page.",
  dpo: "No validated preference files yet: upload prompts with a chosen and a rejected answer on the Data page.",
};

export function catalogMethods(catalog) {
  return catalog.methods && catalog.methods.length ? catalog.methods : FALLBACK_METHODS;
}

// A processed file's example type never changes: looked up once per page load of the app.
const exampleTypes = new Map();

/** Each file's example type (chat, text or preference) by id: the file's own field, else its validation report. */
export async function loadExampleTypes(files) {
  await Promise.all(files.filter((f) => !exampleTypes.has(f.id)).map(async (f) => {
    if (f.example_type !== undefined) { exampleTypes.set(f.id, f.example_type); return; }
    try {
      exampleTypes.set(f.id, (await api(`/api/files/${encodeURIComponent(f.id)}/report`)).example_type || null);
    } catch {
      exampleTypes.set(f.id, null); // no report to read: offered as the chat file it most likely is
    }
  }));
  return exampleTypes;
}

/** Whether a file of `type` trains with the method (a file validated before example types were recorded is chat). */
export function fitsMethod(methods, type, methodId) {
  const fallback = FALLBACK_METHODS.find((m) => m.id === methodId) || FALLBACK_METHODS[0];
  const method = methods.find((m) => m.id === methodId) || fallback;
  return (method.example_types || fallback.example_types).includes(type || "chat");
}

export function noFilesText(method) {
  return NO_FILES[method] || NO_FILES.supervised;
}

/** The method's radio cards; `value()` the chosen method's id. */
export function methodPicker(methods, initial, onChange) {
  const group = h("div", { class: "choice-grid", role: "radiogroup", "aria-labelledby": "method-heading" });
  for (const m of methods) {
    const id = nextId("method");
    group.append(h("label", { class: "choice", for: id, "data-method": m.id },
      h("input", { type: "radio", name: "method", value: m.id, id, class: "choice-input", checked: m.id === initial }),
      h("span", { class: "choice-body" }, h("span", { class: "choice-title" }, m.label),
        h("span", { class: "choice-desc" }, METHOD_HINTS[m.id] || ""))));
  }
  if (!group.querySelector("input:checked")) group.querySelector("input").checked = true;
  group.addEventListener("change", onChange);
  return { element: group, value: () => group.querySelector("input:checked").value };
}

/** DPO's beta: empty is "auto" (the catalog's default); otherwise within the catalog's bounds. */
export function betaControl(methods, error, changed) {
  const spec = (methods.find((m) => m.id === "dpo") || FALLBACK_METHODS[1]).beta || FALLBACK_METHODS[1].beta;
  const id = nextId("beta");
  const input = h("input", { id, type: "number", class: "input", min: spec.min_exclusive, max: spec.max, step: 0.01,
    placeholder: `auto (${spec.default})`, inputmode: "decimal", "aria-describedby": `${id}-help ${error.id}` });
  input.addEventListener("input", changed);
  const element = h("div", { class: "field beta-field", "data-param": "beta" }, h("label", { for: id }, "Beta"), input,
    h("p", { class: "field-hint", id: `${id}-help` },
      "How far training may move away from the starting model: lower moves further. Auto uses the default."), error);
  return {
    element,
    value: () => (input.value === "" ? "auto" : Number(input.value)),
    check: () => {
      if (input.value === "") return null;
      const v = Number(input.value);
      return Number.isFinite(v) && v > spec.min_exclusive && v <= spec.max ? null
        : `Beta must be above ${spec.min_exclusive} and at most ${spec.max}.`;
    },
  };
}

/**
 * What the page's address says the new job continues from: `?model=ft:…` (a fine-tuned model) or
 * `?checkpoint=ftckpt_…&model=…` (one of a job's checkpoints); `base` names the catalog model under either.
 */
export function continueSource(query) {
  const model = query.get("model");
  const checkpoint = query.get("checkpoint");
  if (!checkpoint && !(model && model.startsWith("ft:"))) return null;
  return { model, checkpoint, base: query.get("base") || baseOf(model), step: query.get("step"), job: query.get("job") };
}

/** The catalog model under an `ft:{base}:{user}:{suffix}:{id}` name (a base id itself is its own base). */
function baseOf(model) {
  if (!model || !model.startsWith("ft:")) return model;
  return model.slice(3).split(":")[0];
}

/** The notice at the top of the model section: what the job continues from, and a button to start afresh. */
export function continueNotice(source, onClear) {
  const what = source.checkpoint
    ? [h("code", { class: "break" }, source.checkpoint), source.step ? ` (step ${source.step}` : " (",
      source.job ? [" of ", h("a", { href: `#/jobs/${encodeURIComponent(source.job)}`, class: "mono" }, source.job)] : null, ")"]
    : [h("code", { class: "break" }, source.model)];
  return h("div", { class: "notice notice-info continue-from", "data-testid": "continue-from" },
    h("span", h("strong", source.checkpoint ? "Continue from checkpoint " : "Continue from "), what,
      h("span", { class: "muted small block" }, `Trains further on ${source.base || "its base model"}; `,
        "the base model and its instance types follow from it.")),
    h("button", { type: "button", class: "btn btn-secondary btn-sm", onClick: onClear }, "Start from a base model instead"));
}

/** The request's `method`, OpenAI's shape: the hyperparameters inside it (with beta for DPO). */
export function methodBody(method, hyperparameters, beta) {
  if (method === "dpo") {
    const hp = { ...hyperparameters };
    if (beta !== "auto") hp.beta = beta;
    return { type: "dpo", dpo: { hyperparameters: hp } };
  }
  return { type: "supervised", supervised: { hyperparameters } };
}

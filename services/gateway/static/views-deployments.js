// Deployments: what is serving a model now (status, instance, price per hour, the idle stop), a Stop button, and a
// form that deploys a model with its price shown before anything starts. Live from the event stream; without it,
// a poll that backs off while a deployment is being created or deleted.

import { api, describeError } from "./api.js";
import { h, replace, formatDate, formatUsd, relativeTime } from "./dom.js";
import { navigate } from "./router.js";
import * as live from "./sse.js";
import { ACTIVE_DEPLOYMENT, BUSY_DEPLOYMENT, deployModel, listModels, liveFor, modelOptions, onDeploymentEvents,
  pollWithBackoff } from "./serving.js";
import { announce, card, confirmDialog, emptyState, errorState, loading, pageHeader, statusBadge, toast } from "./ui.js";

const RECENTLY_DELETED = 5;

function priceCell(dep) {
  const extra = dep.additional_price_per_hour;
  return h("td", { class: "num" }, h("span", { class: "strong" }, `${formatUsd(dep.price_per_hour)}/h`),
    typeof extra === "number" && extra !== dep.price_per_hour
      ? h("div", { class: "muted small", title: "It shares an endpoint already running: this is what it adds" },
        extra === 0 ? "no extra cost (shared endpoint)" : `+${formatUsd(extra)}/h additional`) : null);
}

function deploymentRow(dep, onStop) {
  const stop = ACTIVE_DEPLOYMENT.has(dep.status)
    ? h("button", { type: "button", class: "btn btn-secondary btn-sm btn-danger-outline", "aria-label": `Stop ${dep.model}`,
      onClick: () => onStop(dep) }, "Stop") : null;
  const idle = dep.idle_minutes ? `${dep.idle_minutes} min` : "—";
  return h("tr", { "data-deployment-id": dep.id, class: dep.status === "deleted" ? "row-faded" : null },
    h("td", { class: "deployment-model" }, h("div", { class: "strong mono break" }, dep.model),
      dep.base_model && dep.base_model !== dep.model ? h("div", { class: "muted small break" }, `on ${dep.base_model}`) : null,
      h("div", { class: "muted small mono" }, dep.id)),
    h("td", statusBadge(dep.status), dep.status === "failed" && dep.failure_reason
      ? h("div", { class: "small danger-text break failure-reason" }, dep.failure_reason) : null,
    ["deleting", "deleted"].includes(dep.status) && dep.delete_reason
      ? h("div", { class: "small muted break failure-reason" }, dep.delete_reason) : null),
    h("td", { class: "small" }, dep.instance_type),
    priceCell(dep),
    h("td", { class: "num hide-sm nowrap", title: "Taken down after this long without a request" }, idle),
    h("td", { class: "hide-sm", title: dep.last_used_at ? formatDate(dep.last_used_at) : "" },
      dep.last_used_at ? relativeTime(dep.last_used_at) : "never"),
    h("td", { class: "hide-sm", title: formatDate(dep.created_at) }, relativeTime(dep.created_at)),
    h("td", { class: "actions" }, stop));
}

/** Every deployment still up (or failed), newest first, then the last few taken down. */
function shown(list) {
  const newest = [...list].sort((a, b) => b.created_at - a.created_at);
  return [...newest.filter((d) => d.status !== "deleted"),
    ...newest.filter((d) => d.status === "deleted").slice(0, RECENTLY_DELETED)];
}

function deploymentsTable(list, onStop) {
  return h("div", { class: "table-scroll-x" }, h("table", { class: "table deployments-table" },
    h("thead", h("tr", h("th", { scope: "col" }, "Model"), h("th", { scope: "col" }, "Status"),
      h("th", { scope: "col" }, "Instance"), h("th", { scope: "col", class: "num" }, "Price"),
      h("th", { scope: "col", class: "num hide-sm" }, "Idle stop"), h("th", { scope: "col", class: "hide-sm" }, "Last used"),
      h("th", { scope: "col", class: "hide-sm" }, "Created"), h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Actions")))),
    h("tbody", list.map((d) => deploymentRow(d, onStop)))));
}

/** The deploy form: a model, an instance type that fits it with its price, the idle stop. */
function deployForm(models, catalog, query, onDeployed) {
  const model = h("select", { id: "deploy-model", class: "input", name: "model", required: true }, modelOptions(models));
  const instance = h("select", { id: "deploy-instance", class: "input", name: "instance_type" });
  const idle = h("input", { id: "deploy-idle", type: "number", class: "input input-number", min: 5, max: 10080, step: 1,
    value: catalog.default_idle_minutes || 60 });
  const price = h("p", { class: "deploy-price", "data-testid": "deploy-price", "aria-live": "polite" });
  const error = h("p", { class: "form-error", role: "alert" });
  const submit = h("button", { type: "submit", class: "btn btn-primary" }, "Deploy");
  const types = new Map((catalog.instance_types || []).map((t) => [t.id, t]));
  const wanted = query.get("model");
  if (wanted && models.some((m) => m.id === wanted)) model.value = wanted;

  function catalogEntry() {
    const m = models.find((x) => x.id === model.value);
    const base = m && m.kind === "fine-tuned" ? m.base_model : model.value;
    return (catalog.models || []).find((c) => c.id === base) || null;
  }
  function fillInstances() {
    const entry = catalogEntry();
    const fits = entry ? entry.instance_types : [...types.keys()];
    replace(instance, fits.filter((id) => types.has(id)).map((id) => {
      const t = types.get(id);
      return h("option", { value: id }, `${id} · ${t.gpus ? `${t.gpus} GPU` : "CPU"} · ${formatUsd(t.price_per_hour)}/h`);
    }));
    if (entry && entry.default_instance_type && fits.includes(entry.default_instance_type)) instance.value = entry.default_instance_type;
    showPrice();
  }
  function showPrice() {
    const t = types.get(instance.value);
    replace(price, t ? [h("strong", `${formatUsd(t.price_per_hour)} per hour`),
      ` while it runs (about ${formatUsd(t.price_per_hour * 24)} a day). `,
      h("span", { class: "muted" }, "A model that shares a running endpoint adds less; it stops itself after the idle time."),
      catalog.prices_note ? h("span", { class: "muted small price-note" }, catalog.prices_note) : null]
      : h("span", { class: "muted" }, "No instance type fits this model."));
    submit.disabled = !t;
  }
  model.addEventListener("change", fillInstances);
  instance.addEventListener("change", showPrice);
  fillInstances();

  const form = h("form", { class: "deploy-form", "aria-label": "Deploy a model" },
    h("div", { class: "deploy-grid" },
      h("div", { class: "field" }, h("label", { for: "deploy-model" }, "Model"), model),
      h("div", { class: "field" }, h("label", { for: "deploy-instance" }, "Instance type"), instance),
      h("div", { class: "field" }, h("label", { for: "deploy-idle" }, "Stop after idle (minutes)"), idle)),
    price, error, submit);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    submit.disabled = true;
    try {
      const dep = await deployModel(model.value, { instanceType: instance.value, idleMinutes: Number(idle.value) || undefined });
      toast(`Deploying ${dep.model} on ${dep.instance_type}.`, "success");
      onDeployed(dep);
    } catch (err) {
      error.textContent = describeError(err);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

export async function deploymentsView(main, params, query, isCurrent) {
  main.append(pageHeader("Deployments", "Models being served, what they cost, and when they stop."), loading("Loading deployments…"));
  let models;
  let catalog;
  try {
    [models, catalog] = await Promise.all([listModels(), api("/api/serving/catalog")]);
  } catch (err) {
    if (isCurrent()) replace(main, pageHeader("Deployments"), errorState(describeError(err), () => navigate("/deployments")));
    return undefined;
  }
  if (!isCurrent()) return undefined;
  const tableHost = h("div", { class: "table-host" }, loading("Loading deployments…"));
  let deployments = null;

  async function refresh() {
    try {
      deployments = shown((await api("/api/deployments?include_deleted=true")).data);
      render();
    } catch (err) {
      if (!deployments) replace(tableHost, errorState(describeError(err), refresh));
    }
    return deployments ? deployments.some((d) => BUSY_DEPLOYMENT.has(d.status)) : true;
  }

  async function stopDeployment(dep) {
    const cost = dep.additional_price_per_hour ?? dep.price_per_hour;
    const ok = await confirmDialog({ title: "Stop this deployment?", danger: true, confirmLabel: "Stop deployment",
      message: `${dep.model} stops answering. ${cost > 0 ? `Its ${formatUsd(cost)}/h stops being charged.`
        : "Its endpoint is shared and bills until the last model on it stops."} You can deploy it again later.` });
    if (!ok) return;
    try {
      await api(`/api/deployments/${encodeURIComponent(dep.id)}`, { method: "DELETE" });
      toast(`Stopping ${dep.model}.`, "success");
    } catch (err) {
      toast(describeError(err), "error");
    }
    refresh();
    poller.kick();
  }

  function render() {
    if (!deployments.length) {
      replace(tableHost, emptyState("Nothing deployed", "Deploy a model below, or send it a message in the playground.",
        h("a", { class: "btn btn-secondary", href: "#/playground" }, "Open the playground")));
      return;
    }
    replace(tableHost, deploymentsTable(deployments, stopDeployment));
  }

  replace(main,
    pageHeader("Deployments", "Models being served, what they cost, and when they stop.",
      h("a", { class: "btn btn-secondary", href: "#/playground" }, "Playground")),
    card("Deployments", tableHost),
    card("Deploy a model", models.length ? deployForm(models, catalog, query, () => { refresh(); poller.kick(); })
      : h("p", { class: "muted" }, "No model can be served yet.")));

  // Live events when the server sends them; otherwise (and as a safety net) a poll that backs off while a
  // deployment is on its way up or down.
  const poller = pollWithBackoff(async () => (liveFor("deployment") ? true : refresh()), { firstMs: 1000, maxMs: 15000 });
  await refresh();
  let pending = null;
  const offEvents = onDeploymentEvents((event) => {
    const d = (event && event.data) || {};
    if (d.model && d.status) announce(`${d.model}: ${d.status.replace("_", " ")}.`);
    clearTimeout(pending);
    pending = setTimeout(refresh, 200);
  });
  const offPoll = live.whenOffline(refresh, 5000);
  return () => { poller.stop(); offEvents(); offPoll(); clearTimeout(pending); };
}

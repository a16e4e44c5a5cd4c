// Shared pieces of the interface: toasts, confirmation dialogs, badges, empty and loading states, copy buttons.

import { h, replace } from "./dom.js";

// ---- toasts ----------------------------------------------------------------------------------------------

export function toast(message, kind = "info", timeoutMs = 6000) {
  const region = document.getElementById("toasts");
  const close = h("button", { class: "toast-close", type: "button", "aria-label": "Dismiss" }, "×");
  const item = h("div", { class: ["toast", `toast-${kind}`] },
    h("span", { class: "toast-text" }, message), close);
  const remove = () => item.remove();
  close.addEventListener("click", remove);
  region.append(item);
  if (timeoutMs) setTimeout(remove, timeoutMs);
  return remove;
}

// ---- dialogs ---------------------------------------------------------------------------------------------

/**
 * A modal confirmation; resolves true when confirmed. `input` asks for a value (a password) first:
 * then it resolves to that value, or null when cancelled.
 */
export function confirmDialog({ title, message, confirmLabel = "Confirm", danger = false, input = null }) {
  return new Promise((resolve) => {
    const field = input ? h("input", { id: "dialog-input", type: input.type || "text", required: true,
      autocomplete: input.autocomplete || "off", class: "input" }) : null;
    const form = h("form", { method: "dialog", class: "dialog-body" },
      h("h2", { class: "dialog-title", id: "dialog-title" }, title),
      h("p", { class: "dialog-text", id: "dialog-text" }, message),
      field ? h("div", { class: "field" }, h("label", { for: "dialog-input" }, input.label), field) : null,
      h("div", { class: "dialog-actions" },
        h("button", { type: "button", class: "btn btn-secondary", value: "cancel", "data-action": "cancel" }, "Cancel"),
        h("button", { type: "submit", class: ["btn", danger ? "btn-danger" : "btn-primary"], value: "ok" },
          confirmLabel)));
    const dialog = h("dialog", { class: "dialog", "aria-labelledby": "dialog-title", "aria-describedby": "dialog-text" },
      form);
    let result = input ? null : false;
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      if (field && !field.value) { field.focus(); return; }
      result = field ? field.value : true;
      dialog.close();
    });
    form.querySelector("[data-action=cancel]").addEventListener("click", () => dialog.close());
    dialog.addEventListener("close", () => { dialog.remove(); resolve(result); });
    document.body.append(dialog);
    dialog.showModal();
    (field || form.querySelector("[data-action=cancel]")).focus();
  });
}

// ---- small components ------------------------------------------------------------------------------------

const STATUS_LABELS = {
  uploading: "Uploading", uploaded: "Validating", processed: "Ready", error: "Rejected",
  validating_files: "Validating files", queued: "Queued", running: "Running", succeeded: "Succeeded",
  failed: "Failed", cancelled: "Cancelled", pausing: "Pausing", paused: "Paused",
  creating: "Creating", in_service: "In service", deleting: "Deleting", deleted: "Deleted",
};
const STATUS_TONES = {
  uploading: "info", uploaded: "info", processed: "success", error: "danger", validating_files: "info",
  queued: "neutral", running: "info", succeeded: "success", failed: "danger", cancelled: "neutral",
  pausing: "warning", paused: "warning",
  creating: "info", in_service: "success", deleting: "warning", deleted: "neutral",
};

export function statusBadge(status) {
  const busy = ["uploading", "uploaded", "validating_files", "queued", "running", "pausing", "creating",
    "deleting"].includes(status);
  return h("span", { class: ["badge", `badge-${STATUS_TONES[status] || "neutral"}`, busy && "badge-busy"],
    "data-status": status }, h("span", { class: "badge-dot", "aria-hidden": "true" }), STATUS_LABELS[status] || status);
}

export function badge(text, tone = "neutral", title = null) {
  return h("span", { class: ["badge", `badge-${tone}`], title }, text);
}

export function emptyState(title, text, action = null) {
  return h("div", { class: "empty" },
    h("div", { class: "empty-icon", "aria-hidden": "true" }),
    h("p", { class: "empty-title" }, title),
    text ? h("p", { class: "empty-text" }, text) : null,
    action);
}

export function loading(label = "Loading…") {
  return h("div", { class: "loading", role: "status" }, h("span", { class: "spinner", "aria-hidden": "true" }), label);
}

export function errorState(message, retry) {
  return h("div", { class: "notice notice-danger", role: "alert" },
    h("span", message),
    retry ? h("button", { type: "button", class: "btn btn-secondary btn-sm", onClick: retry }, "Try again") : null);
}

export function card(title, ...body) {
  const heading = title ? h("div", { class: "card-header" }, typeof title === "string" ? h("h2", { class: "card-title" }, title) : title) : null;
  return h("section", { class: "card" }, heading, h("div", { class: "card-body" }, ...body));
}

export function pageHeader(title, subtitle, ...actions) {
  return h("header", { class: "page-header" },
    h("div", { class: "page-heading" }, h("h1", { class: "page-title", tabindex: "-1" }, title),
      subtitle ? h("p", { class: "page-subtitle" }, subtitle) : null),
    actions.length ? h("div", { class: "page-actions" }, actions) : null);
}

export function copyButton(getText, label = "Copy") {
  const button = h("button", { type: "button", class: "btn btn-secondary btn-sm copy-btn" }, label);
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(typeof getText === "function" ? getText() : getText);
      replace(button, "Copied");
    } catch {
      replace(button, "Select and copy");
    }
    setTimeout(() => replace(button, label), 2000);
  });
  return button;
}

export function codeBlock(text, label) {
  const code = h("code", text);
  return h("div", { class: "code-block" },
    h("div", { class: "code-toolbar" }, h("span", { class: "code-label" }, label || ""), copyButton(() => code.textContent)),
    h("pre", { tabindex: "0" }, code));
}

/** A read-only definition list from [label, value] pairs. */
export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).map(([k, v]) => h("div", { class: "fact" },
    h("dt", k), h("dd", v instanceof Node ? v : (v === null || v === undefined || v === "" ? "—" : String(v))))));
}

/** Announce a change to screen readers without moving focus. */
export function announce(message) {
  const region = document.getElementById("live-region");
  if (!region) return;
  region.textContent = "";
  setTimeout(() => { region.textContent = message; }, 50);
}

// Data: upload (drag and drop or picker, with progress), the file list with live statuses, and a file's page
// with its validation report and a preview of its examples rendered as a chat.

import { api, ApiError, describeError } from "./api.js";
import { h, replace, formatBytes, formatDate, relativeTime, formatNumber, nextId } from "./dom.js";
import * as live from "./sse.js";
import { FILE_EVENTS, FILE_REJECTED, FILE_VALIDATED } from "./events.js";
import { navigate } from "./router.js";
import { accessToken, renew, secondsLeft } from "./session.js";
import { uploadFile } from "./upload.js";
import { announce, badge, card, confirmDialog, emptyState, errorState, facts, loading, pageHeader, statusBadge,
  toast } from "./ui.js";

const ACCEPT = ".jsonl,.json,.csv,.txt,application/json,text/csv,text/plain";

function fileEvents(fn) {
  const offs = FILE_EVENTS.map((t) => live.on(t, fn));
  return () => offs.forEach((off) => off());
}

export async function deleteFile(file) {
  const ok = await confirmDialog({ title: "Delete this file?", danger: true, confirmLabel: "Delete file",
    message: `“${file.filename}” will be removed from storage. Jobs that already used it keep their results.` });
  if (!ok) return false;
  try {
    await api(`/v1/files/${encodeURIComponent(file.id)}`, { method: "DELETE" });
    toast(`Deleted ${file.filename}.`, "success");
    return true;
  } catch (err) {
    toast(describeError(err), "error");
    return false;
  }
}

// ---- the list ---------------------------------------------------------------------------------------------

export async function filesView(main) {
  const uploads = h("ul", { class: "upload-list", "aria-label": "Uploads in progress" });
  const input = h("input", { type: "file", id: "file-input", class: "sr-only", multiple: true, accept: ACCEPT });
  const drop = h("div", { class: "dropzone" },
    input,
    h("div", { class: "dropzone-icon", "aria-hidden": "true" }),
    h("p", { class: "dropzone-title" }, "Drag and drop training data here"),
    h("p", { class: "dropzone-text" }, "JSONL, JSON, CSV or plain text: chat, prompt/completion, Alpaca, Q/A or text examples."),
    h("label", { for: "file-input", class: "btn btn-secondary" }, "Choose files"));
  const tableHost = h("div", { class: "table-host" }, loading("Loading files…"));

  main.append(pageHeader("Data", "Upload training data. Each file is checked line by line before it can be used."),
    card(null, drop, uploads), card("Files", tableHost));

  const start = (files) => { for (const f of files) startUpload(f); };
  input.addEventListener("change", () => { start([...input.files]); input.value = ""; });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (ev) => { ev.preventDefault(); drop.classList.add("dragging"); });
  }
  for (const type of ["dragleave", "drop"]) drop.addEventListener(type, () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (ev) => { ev.preventDefault(); start([...ev.dataTransfer.files]); });

  const controllers = new Set();
  function startUpload(file) {
    const controller = new AbortController();
    controllers.add(controller);
    const progressId = nextId("progress");
    const bar = h("progress", { id: progressId, max: file.size || 1, value: 0, "aria-label": `Uploading ${file.name}` });
    const pct = h("span", { class: "upload-pct" }, "0%");
    const cancel = h("button", { type: "button", class: "btn btn-ghost btn-sm" }, "Cancel");
    const row = h("li", { class: "upload-item" },
      h("div", { class: "upload-meta" }, h("span", { class: "upload-name" }, file.name),
        h("span", { class: "muted" }, formatBytes(file.size))), bar, pct, cancel);
    uploads.append(row);
    cancel.addEventListener("click", () => controller.abort());
    uploadFile(file, { signal: controller.signal, onProgress: (sent) => {
      bar.value = sent;
      pct.textContent = `${Math.floor((sent / (file.size || 1)) * 100)}%`;
    } }).then((created) => {
      row.remove();
      announce(`${file.name} uploaded; validating.`);
      toast(`Uploaded ${file.name}. Validating…`, "success", 3000);
      if (created) refresh();
    }).catch((err) => {
      if (err.name === "AbortError") { row.remove(); toast(`Upload of ${file.name} cancelled.`); return; }
      row.classList.add("upload-failed");
      replace(pct, "Failed");
      replace(cancel, "Dismiss");
      cancel.addEventListener("click", () => row.remove());
      toast(`${file.name}: ${describeError(err)}`, "error", 10000);
    }).finally(() => controllers.delete(controller));
  }

  let files = null;
  async function refresh() {
    try {
      const list = await api("/v1/files?order=desc");
      files = list.data;
      renderTable();
    } catch (err) {
      if (!files) replace(tableHost, errorState(describeError(err), refresh));
    }
  }

  function renderTable() {
    if (!files.length) {
      replace(tableHost, emptyState("No files yet", "Upload a JSONL file of chat examples to get started."));
      return;
    }
    const rows = files.map((f) => h("tr", { "data-file-id": f.id },
      h("td", h("a", { href: `#/files/${encodeURIComponent(f.id)}`, class: "strong file-name", title: f.filename }, f.filename),
        h("div", { class: "mono muted small file-id", title: f.id }, f.id)),
      h("td", statusBadge(f.status), f.status === "error" && f.status_details
        ? h("div", { class: "small danger-text clamp", title: f.status_details }, f.status_details) : null),
      h("td", { class: "hide-md" }, f.purpose === "fine-tune-results" ? badge("results", "neutral") : f.purpose),
      h("td", { class: "num hide-sm nowrap" }, formatBytes(f.bytes)),
      h("td", { class: "hide-md", title: formatDate(f.created_at) }, relativeTime(f.created_at)),
      h("td", { class: "actions" },
        f.status === "processed" && f.purpose === "fine-tune"
          ? h("a", { class: "btn btn-secondary btn-sm", href: `#/train?file=${encodeURIComponent(f.id)}` }, "Train") : null,
        h("button", { type: "button", class: "btn btn-ghost btn-sm", "aria-label": `Delete ${f.filename}`,
          onClick: async () => { if (await deleteFile(f)) refresh(); } }, "Delete"))));
    // Fixed columns: a long name wraps (two lines, then an ellipsis) instead of pushing Delete out of the window.
    replace(tableHost, h("table", { class: "table files-table" },
      h("thead", h("tr", h("th", { scope: "col" }, "Name"), h("th", { scope: "col", class: "col-status" }, "Status"),
        h("th", { scope: "col", class: "hide-md col-purpose" }, "Purpose"), h("th", { scope: "col", class: "num hide-sm col-size" }, "Size"),
        h("th", { scope: "col", class: "hide-md col-created" }, "Created"),
        h("th", { scope: "col", class: "col-actions" }, h("span", { class: "sr-only" }, "Actions")))),
      h("tbody", rows)));
  }

  await refresh();
  let pending = null;
  const soon = () => { clearTimeout(pending); pending = setTimeout(refresh, 250); };
  const offEvents = fileEvents((event) => {
    const data = (event && event.data) || {};
    if (event.type === FILE_VALIDATED) announce(`${data.filename || "A file"} is ready.`);
    if (event.type === FILE_REJECTED) announce(`${data.filename || "A file"} was rejected.`);
    soon();
  });
  const offPoll = live.whenOffline(refresh, 3000);
  return () => { offEvents(); offPoll(); clearTimeout(pending); for (const c of controllers) c.abort(); };
}

// ---- one file ---------------------------------------------------------------------------------------------

/** The file's bytes need the Authorization header, so they come through fetch() and leave as a blob link. */
async function downloadContent(file, button) {
  button.disabled = true;
  try {
    const token = accessToken() && secondsLeft() > 10 ? accessToken() : ((await renew()) && accessToken());
    const response = await fetch(`/v1/files/${encodeURIComponent(file.id)}/content`, {
      headers: token ? { Authorization: `Bearer ${token}` } : {} });
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null), response.headers);
    const url = URL.createObjectURL(await response.blob());
    const link = h("a", { href: url, download: file.filename, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 30000);
  } catch (err) {
    toast(describeError(err), "error");
  } finally {
    button.disabled = false;
  }
}

export async function fileView(main, { id }, query, isCurrent) {
  main.append(loading("Loading file…"));
  let file;
  try {
    file = await api(`/v1/files/${encodeURIComponent(id)}`);
  } catch (err) {
    if (!isCurrent()) return undefined;
    replace(main, pageHeader("File not found"), err instanceof ApiError && err.status === 404
      ? emptyState("This file does not exist", "It may have been deleted, or it belongs to another account.",
        h("a", { class: "btn btn-secondary", href: "#/files" }, "Back to data"))
      : errorState(describeError(err), () => navigate(`/files/${id}`)));
    return undefined;
  }
  if (!isCurrent()) return undefined;
  const badgeHost = h("span", { class: "status-host", "aria-live": "polite" }, statusBadge(file.status));
  const trainLink = h("a", { class: "btn btn-primary", href: `#/train?file=${encodeURIComponent(file.id)}`,
    hidden: !(file.status === "processed" && file.purpose === "fine-tune") }, "Train on this file");
  const del = h("button", { type: "button", class: "btn btn-secondary", onClick: async () => {
    if (await deleteFile(file)) navigate("/files");
  } }, "Delete");
  const download = h("button", { type: "button", class: "btn btn-secondary", onClick: () => downloadContent(file, download) },
    "Download");
  const details = h("div");
  const reportHost = h("div", loading("Loading report…"));
  const previewHost = h("div");
  const title = h("span", { class: "title-with-badge" }, file.filename, badgeHost);
  replace(main,
    h("nav", { class: "breadcrumb", "aria-label": "Breadcrumb" }, h("a", { href: "#/files" }, "Data"), h("span", "/"),
      h("span", { "aria-current": "page" }, file.filename)),
    pageHeader(title, null, trainLink, download, del),
    h("div", { class: "grid grid-2" }, card("Details", details), card("Validation report", reportHost)),
    card("Preview", previewHost));

  function renderDetails() {
    replace(details, facts([["File ID", h("code", file.id)], ["Size", formatBytes(file.bytes)],
      ["Purpose", file.purpose], ["Uploaded", formatDate(file.created_at)],
      file.status_details ? ["Status details", file.status_details] : null]));
  }
  renderDetails();

  let reportTimer = null;
  async function loadReport() {
    clearTimeout(reportTimer);
    try {
      const report = await api(`/api/files/${encodeURIComponent(file.id)}/report`);
      if (!isCurrent()) return;
      renderReport(reportHost, report);
      if (report.status === "processed") loadPreview();
      else replace(previewHost, h("p", { class: "muted" }, "No preview: the file was rejected. Fix the errors above and upload it again."));
    } catch (err) {
      if (!isCurrent()) return;
      if (err instanceof ApiError && err.code === "validation_in_progress") {
        replace(reportHost, h("div", { class: "validating", role: "status" }, h("span", { class: "spinner", "aria-hidden": "true" }),
          "Validating… every line is being checked."));
        replace(previewHost, h("p", { class: "muted" }, "The preview appears once validation finishes."));
        reportTimer = setTimeout(loadReport, (err.retryAfter || 2) * 1000);
      } else if (err instanceof ApiError && err.code === "report_not_available") {
        replace(reportHost, h("p", { class: "muted" }, err.message));
        replace(previewHost, h("p", { class: "muted" }, "Only fine-tune files have a preview."));
      } else {
        replace(reportHost, errorState(describeError(err), loadReport));
      }
    }
  }

  async function loadPreview() {
    replace(previewHost, loading("Loading examples…"));
    try {
      const preview = await api(`/api/files/${encodeURIComponent(file.id)}/preview?limit=10`);
      if (isCurrent()) renderPreview(previewHost, preview);
    } catch (err) {
      if (isCurrent()) replace(previewHost, errorState(describeError(err), loadPreview));
    }
  }

  async function reloadFile() {
    try {
      const fresh = await api(`/v1/files/${encodeURIComponent(file.id)}`);
      const changed = fresh.status !== file.status;
      file = fresh;
      replace(badgeHost, statusBadge(file.status));
      trainLink.hidden = !(file.status === "processed" && file.purpose === "fine-tune");
      renderDetails();
      if (changed) { announce(`File status: ${file.status}`); loadReport(); }
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) navigate("/files");
    }
  }

  await loadReport();
  const offEvents = fileEvents((event) => { if (event && event.data && event.data.file_id === file.id) reloadFile(); });
  const offPoll = live.whenOffline(() => (["uploaded", "uploading"].includes(file.status) ? reloadFile() : null), 3000);
  return () => { offEvents(); offPoll(); clearTimeout(reportTimer); };
}

function renderReport(host, report) {
  const counts = report.counts || {};
  const stats = report.statistics || {};
  const tokens = stats.tokens_per_example || {};
  const summary = h("div", { class: "stat-row" },
    stat("Examples", formatNumber(counts.examples)),
    stat("Errors", formatNumber(counts.errors), counts.errors ? "danger" : null),
    stat("Warnings", formatNumber(counts.warnings), counts.warnings ? "warning" : null),
    stat("Est. tokens", formatNumber(stats.estimated_tokens)));
  const meta = facts([["Format", report.format], ["Layout", report.layout], ["Example type", report.example_type],
    tokens.max !== undefined ? ["Tokens per example", `min ${tokens.min} · mean ${tokens.mean} · max ${tokens.max}`] : null]);
  const parts = [report.status === "processed"
    ? h("div", { class: "notice notice-success" }, "Valid: ready for training.")
    : h("div", { class: "notice notice-danger" }, "Rejected: fix these errors and upload again."), summary, meta];
  if (report.errors && report.errors.length) {
    parts.push(h("h3", { class: "section-title" }, "Errors"),
      h("div", { class: "table-scroll" }, h("table", { class: "table table-compact report-errors" },
        h("thead", h("tr", h("th", { scope: "col", class: "num" }, "Line"), h("th", { scope: "col" }, "Code"),
          h("th", { scope: "col" }, "Message"))),
        h("tbody", report.errors.map((e) => h("tr", { class: "report-error" },
          h("td", { class: "num mono" }, e.line ?? "—"), h("td", h("code", e.code)), h("td", e.message)))))));
    if (report.errors_not_listed) parts.push(h("p", { class: "muted small" }, `${formatNumber(report.errors_not_listed)} more errors not listed.`));
  }
  if (report.warnings && report.warnings.length) {
    parts.push(h("h3", { class: "section-title" }, "Warnings"), h("ul", { class: "warning-list" },
      report.warnings.map((w) => h("li", { class: "warning-item" }, h("code", w.code), " ", w.message,
        w.lines && w.lines.length ? h("span", { class: "muted" }, ` (lines ${w.lines.slice(0, 10).join(", ")}${w.lines.length > 10 ? ", …" : ""})`) : null))));
  }
  replace(host, ...parts);
}

function stat(label, value, tone) {
  return h("div", { class: ["stat", tone && `stat-${tone}`] }, h("div", { class: "stat-value" }, value),
    h("div", { class: "stat-label" }, label));
}

function bubble(message) {
  const role = message.role || "user";
  const content = typeof message.content === "string" ? message.content
    : Array.isArray(message.content) ? message.content.map((p) => (p && p.text) || JSON.stringify(p)).join("\n")
      : JSON.stringify(message.content ?? message.tool_calls ?? "");
  return h("div", { class: ["bubble", `bubble-${role}`] },
    h("div", { class: "bubble-role" }, role, message.weight === 0 ? h("span", { class: "muted" }, " · not trained") : null),
    h("div", { class: "bubble-text" }, content));
}

function renderPreview(host, preview) {
  if (!preview.data.length) {
    replace(host, emptyState("No examples", "This file has no examples to show."));
    return;
  }
  const items = preview.data.map((item) => {
    const ex = item.example || {};
    let body;
    if (ex.type === "text") body = h("pre", { class: "text-example" }, ex.text);
    else if (ex.type === "preference") {
      body = h("div", { class: "chat" }, (ex.messages || []).map(bubble),
        h("div", { class: "pref" }, h("div", { class: "pref-label success-text" }, "Preferred"), bubble(ex.chosen || {})),
        h("div", { class: "pref" }, h("div", { class: "pref-label danger-text" }, "Not preferred"), bubble(ex.rejected || {})));
    } else body = h("div", { class: "chat" }, (ex.messages || []).map(bubble));
    return h("article", { class: "example" },
      h("h3", { class: "example-title" }, `Example ${item.index}`,
        item.truncated && item.truncated.length ? badge("shortened", "neutral", "Long texts are cut in the preview") : null,
        item.formula_like && item.formula_like.length ? badge("formula-like cells", "warning",
          "Some strings start with a character a spreadsheet would run as a formula.") : null),
      body);
  });
  replace(host, h("div", { class: "examples" }, items),
    preview.has_more ? h("p", { class: "muted small" }, `Showing the first ${preview.data.length} examples.`) : null);
}

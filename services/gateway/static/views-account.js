// Account: profile and sign-in providers, password change, API keys (the secret shown once), the security
// activity (GET /api/audit, newest first, paged), sign out, delete the account.

import { api, ApiError, describeError } from "./api.js";
import { h, replace, formatDate, relativeTime, nextId } from "./dom.js";
import { navigate } from "./router.js";
import { setUser, signOut } from "./session.js";
import { badge, card, codeBlock, confirmDialog, emptyState, errorState, facts, loading, pageHeader, toast } from "./ui.js";

const PROVIDERS = { password: "Email and password", google: "Google" };
const AUDIT_EVENTS = {
  "account.created": "Account created",
  "sign_in.succeeded": "Signed in",
  "sign_in.failed": "Failed sign-in",
  "sign_in.new_address": "Sign-in from a new address",
  "password.changed": "Password changed",
  "api_key.created": "API key created",
  "api_key.revoked": "API key revoked",
  "google.linked": "Google account linked",
};
const AUDIT_TONES = { "sign_in.failed": "danger", "sign_in.new_address": "warning", "password.changed": "info" };
const AUDIT_PAGE = 20;

function auditDetail(event) {
  const d = event.details || {};
  if (d.name) return `“${d.name}”${d.prefix ? ` (${d.prefix}…)` : ""}`;
  if (d.key_id) return d.key_id;
  if (d.provider === "google") return "with Google";
  return "";
}

function auditRow(event) {
  return h("tr", { "data-audit-id": event.id, "data-audit-type": event.type },
    h("td", h("span", { title: formatDate(event.created_at) }, relativeTime(event.created_at))),
    h("td", badge(AUDIT_EVENTS[event.type] || event.type, AUDIT_TONES[event.type] || "neutral"),
      auditDetail(event) ? h("span", { class: "muted audit-detail" }, ` ${auditDetail(event)}`) : null),
    h("td", h("code", event.ip_address || "—")),
    h("td", { class: "hide-sm audit-agent", title: event.user_agent || "" }, event.user_agent || "—"));
}

export async function accountView(main, params, query, isCurrent) {
  const profileHost = h("div", loading("Loading profile…"));
  const keysHost = h("div", loading("Loading API keys…"));
  const newKeyHost = h("div", { "aria-live": "polite" });
  const keyNameId = nextId("key-name");
  const keyName = h("input", { id: keyNameId, class: "input", maxlength: 100, placeholder: "e.g. laptop, CI", required: true,
    autocomplete: "off" });
  const keyError = h("p", { class: "field-error", "aria-live": "polite" });
  const createKey = h("form", { class: "inline-form", novalidate: true },
    h("div", { class: "field grow" }, h("label", { for: keyNameId }, "Key name"), keyName, keyError),
    h("button", { type: "submit", class: "btn btn-primary" }, "Create key"));

  const auditHost = h("div", loading("Loading security activity…"));
  const auditRows = h("tbody");
  const olderBtn = h("button", { type: "button", class: "btn btn-secondary btn-sm", hidden: true }, "Show older");
  const auditTable = h("div", { class: "audit-log" }, h("table", { class: "table" },
    h("thead", h("tr", h("th", { scope: "col" }, "When"), h("th", { scope: "col" }, "Event"),
      h("th", { scope: "col" }, "Address"), h("th", { scope: "col", class: "hide-sm" }, "Browser"))), auditRows),
  h("div", { class: "audit-more" }, olderBtn));

  const currentPw = h("input", { id: nextId("current-password"), class: "input", type: "password", required: true,
    autocomplete: "current-password" });
  const newPw = h("input", { id: nextId("new-password"), class: "input", type: "password", required: true, minlength: 8,
    autocomplete: "new-password" });
  const passwordError = h("p", { class: "field-error", "aria-live": "polite" });
  const passwordForm = h("form", { class: "inline-form", novalidate: true },
    h("div", { class: "field grow" }, h("label", { for: currentPw.id }, "Current password"), currentPw),
    h("div", { class: "field grow" }, h("label", { for: newPw.id }, "New password"), newPw, passwordError),
    h("button", { type: "submit", class: "btn btn-secondary" }, "Change password"));
  const passwordHost = h("div", h("p", { class: "muted" }, "Changing it signs out every other session."), passwordForm);

  const signOutBtn = h("button", { type: "button", class: "btn btn-secondary" }, "Sign out");
  const deleteBtn = h("button", { type: "button", class: "btn btn-danger" }, "Delete account");

  main.append(pageHeader("Account", "Your profile, password, API keys, session and security activity."),
    h("div", { class: "grid grid-2" }, card("Profile", profileHost),
      card("Session", h("p", { class: "muted" }, "Signing out ends this session on every server within seconds."), signOutBtn)),
    card("API keys", h("p", { class: "muted" }, "Use an API key as the openai SDK's api_key with base_url ",
      h("code", `${location.origin}/v1`), ". Keys are shown once; store them in a secret manager."),
    createKey, newKeyHost, keysHost),
    card("Password", passwordHost),
    card("Security activity", h("p", { class: "muted" }, "Sign-ins, failed attempts, new addresses, password and key ",
      "changes on your account. If you do not recognise one, change your password and revoke your keys."), auditHost),
    h("section", { class: "card card-danger" }, h("div", { class: "card-header" }, h("h2", { class: "card-title" }, "Danger zone")),
      h("div", { class: "card-body danger-row" },
        h("p", "Deleting your account removes all your files, jobs, models and API keys. This cannot be undone."),
        deleteBtn)));

  let user = null;
  async function loadProfile() {
    try {
      user = await api("/auth/me");
      if (!isCurrent()) return;
      setUser(user);
      passwordHost.hidden = !(user.providers || []).includes("password");
      replace(profileHost, facts([["Email", user.email], ["Name", user.name], ["User ID", h("code", user.id)],
        ["Member since", formatDate(user.created_at)],
        ["Sign-in methods", h("span", { class: "badge-row" }, (user.providers || []).map((p) => badge(PROVIDERS[p] || p, "info")))]]));
    } catch (err) {
      replace(profileHost, errorState(describeError(err), loadProfile));
    }
  }

  async function loadKeys() {
    try {
      const keys = (await api("/auth/api-keys")).data;
      if (!isCurrent()) return;
      replace(keysHost, keys.length ? h("table", { class: "table" },
        h("thead", h("tr", h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "Key"),
          h("th", { scope: "col", class: "hide-sm" }, "Created"), h("th", { scope: "col", class: "hide-sm" }, "Last used"),
          h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Actions")))),
        h("tbody", keys.map((k) => h("tr", { "data-key-id": k.id },
          h("td", { class: "strong" }, k.name),
          h("td", h("code", k.prefix ? `${k.prefix}…` : k.redacted_value || k.id)),
          h("td", { class: "hide-sm" }, formatDate(k.created_at)),
          h("td", { class: "hide-sm" }, k.last_used_at ? relativeTime(k.last_used_at) : "Never"),
          h("td", { class: "actions" }, h("button", { type: "button", class: "btn btn-ghost btn-sm", "aria-label": `Revoke ${k.name}`,
            onClick: () => revoke(k) }, "Revoke"))))))
        : emptyState("No API keys", "Create one to use the API from a program."));
    } catch (err) {
      replace(keysHost, errorState(describeError(err), loadKeys));
    }
  }

  let auditAfter = null;
  async function loadAudit(more = false) {
    olderBtn.disabled = true;
    try {
      const after = more && auditAfter ? `&after=${encodeURIComponent(auditAfter)}` : "";
      const page = await api(`/api/audit?limit=${AUDIT_PAGE}${after}`);
      if (!isCurrent()) return;
      if (!more) auditRows.replaceChildren();
      auditRows.append(...page.data.map(auditRow));
      auditAfter = page.last_id || auditAfter;
      olderBtn.hidden = !page.has_more;
      if (!more) replace(auditHost, auditRows.children.length ? auditTable : emptyState("No activity yet", "Sign-ins and changes to your account appear here."));
    } catch (err) {
      if (more) toast(describeError(err), "error");
      else replace(auditHost, errorState(describeError(err), () => loadAudit()));
    } finally {
      olderBtn.disabled = false;
    }
  }
  olderBtn.addEventListener("click", () => loadAudit(true));

  passwordForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    passwordError.textContent = "";
    if (!currentPw.value || !newPw.value) { passwordError.textContent = "Enter your current and your new password."; return; }
    try {
      await api("/auth/password", { method: "POST", json: { current_password: currentPw.value, new_password: newPw.value },
        quiet401: true });
      currentPw.value = ""; newPw.value = "";
      toast("Password changed. Other sessions were signed out.", "success");
      loadAudit();
    } catch (err) {
      passwordError.textContent = err instanceof ApiError && err.code === "invalid_credentials"
        ? "The current password is not right." : describeError(err);
    }
  });

  async function revoke(key) {
    const ok = await confirmDialog({ title: `Revoke “${key.name}”?`, danger: true, confirmLabel: "Revoke key",
      message: "Programs using this key stop working within seconds." });
    if (!ok) return;
    try {
      await api(`/auth/api-keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
      if (newKeyHost.dataset.keyId === key.id) { replace(newKeyHost); delete newKeyHost.dataset.keyId; }
      toast(`Revoked ${key.name}.`, "success");
      loadKeys();
      loadAudit();
    } catch (err) {
      toast(describeError(err), "error");
    }
  }

  createKey.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    keyError.textContent = "";
    const name = keyName.value.trim();
    if (!name) { keyError.textContent = "Give the key a name."; keyName.focus(); return; }
    try {
      const created = await api("/auth/api-keys", { method: "POST", json: { name } });
      keyName.value = "";
      newKeyHost.dataset.keyId = created.id;
      replace(newKeyHost, h("div", { class: "notice notice-success new-key" },
        h("p", h("strong", "Copy your new key now. "), "It will not be shown again."),
        codeBlock(created.key || created.secret || created.value || "", `API key · ${created.name || name}`)));
      loadKeys();
      loadAudit();
    } catch (err) {
      keyError.textContent = describeError(err);
    }
  });

  signOutBtn.addEventListener("click", async () => {
    signOutBtn.disabled = true;
    await signOut().catch(() => {});
    navigate("/signin", { replace: true });
  });

  deleteBtn.addEventListener("click", async () => {
    const hasPassword = !user || (user.providers || []).includes("password");
    const answer = await confirmDialog({ title: "Delete your account?", danger: true, confirmLabel: "Delete everything",
      message: "All files, jobs, models and API keys are removed everywhere. This cannot be undone.",
      input: hasPassword ? { label: "Confirm with your password", type: "password", autocomplete: "current-password" } : null });
    if (!answer) return;
    try {
      await api("/auth/me", { method: "DELETE", json: hasPassword ? { password: answer } : {}, quiet401: true });
      await signOut().catch(() => {});
      toast("Your account was deleted.", "success");
      navigate("/signin", { replace: true });
    } catch (err) {
      toast(err instanceof ApiError && err.code === "invalid_credentials" ? "Wrong password: the account was not deleted."
        : describeError(err), "error");
    }
  });

  await Promise.all([loadProfile(), loadKeys(), loadAudit()]);
  return undefined;
}

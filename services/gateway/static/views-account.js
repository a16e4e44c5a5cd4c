// Account: profile and sign-in providers, API keys (the secret shown once), sign out, delete the account.

import { api, ApiError, describeError } from "./api.js";
import { h, replace, formatDate, relativeTime, nextId } from "./dom.js";
import { navigate } from "./router.js";
import { setUser, signOut } from "./session.js";
import { badge, card, codeBlock, confirmDialog, emptyState, errorState, facts, loading, pageHeader, toast } from "./ui.js";

const PROVIDERS = { password: "Email and password", google: "Google" };

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

  const signOutBtn = h("button", { type: "button", class: "btn btn-secondary" }, "Sign out");
  const deleteBtn = h("button", { type: "button", class: "btn btn-danger" }, "Delete account");

  main.append(pageHeader("Account", "Your profile, API keys and session."),
    h("div", { class: "grid grid-2" }, card("Profile", profileHost),
      card("Session", h("p", { class: "muted" }, "Signing out ends this session on every server within seconds."), signOutBtn)),
    card("API keys", h("p", { class: "muted" }, "Use an API key as the openai SDK's api_key with base_url ",
      h("code", `${location.origin}/v1`), ". Keys are shown once; store them in a secret manager."),
    createKey, newKeyHost, keysHost),
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

  async function revoke(key) {
    const ok = await confirmDialog({ title: `Revoke “${key.name}”?`, danger: true, confirmLabel: "Revoke key",
      message: "Programs using this key stop working within seconds." });
    if (!ok) return;
    try {
      await api(`/auth/api-keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
      if (newKeyHost.dataset.keyId === key.id) { replace(newKeyHost); delete newKeyHost.dataset.keyId; }
      toast(`Revoked ${key.name}.`, "success");
      loadKeys();
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

  await Promise.all([loadProfile(), loadKeys()]);
  return undefined;
}

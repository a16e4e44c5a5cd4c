// Sign in and sign up: email and password, and Google when the server has it on.

import { api, ApiError, describeError } from "./api.js";
import { h, nextId } from "./dom.js";
import { setSession } from "./session.js";
import { navigate } from "./router.js";

let googleError = null;
/** A Google sign-in that failed lands on /login?error=<code>; app.js hands the code over. */
export function setGoogleError(code) {
  googleError = code;
}

const GOOGLE_ERRORS = {
  google_not_configured: "Google sign-in is not configured on this server.",
  google_unavailable: "Google could not be reached. Try again in a moment.",
  google_email_unverified: "Google does not vouch for an email address on that account.",
  google_account_conflict: "That email belongs to an account linked to another Google identity.",
  google_state_expired: "The sign-in took too long. Try again.",
  google_state_mismatch: "The sign-in could not be matched to this browser. Try again.",
};

function safeNext(query) {
  const next = query.get("next") || "";
  return next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/signin") && !next.startsWith("/signup")
    ? next : "/jobs";
}

function field({ label, type, name, autocomplete, hint }) {
  const id = nextId(name);
  const errorId = `${id}-error`;
  const hintId = hint ? `${id}-hint` : null;
  const input = h("input", { id, name, type, autocomplete, required: true, class: "input",
    "aria-describedby": [hintId, errorId].filter(Boolean).join(" ") });
  const error = h("p", { class: "field-error", id: errorId, "aria-live": "polite" });
  return { input, error, element: h("div", { class: "field" }, h("label", { for: id }, label), input,
    hint ? h("p", { class: "field-hint", id: hintId }, hint) : null, error) };
}

export async function authView(main, params, query, mode) {
  const signUp = mode === "signup";
  const next = safeNext(query);
  const email = field({ label: "Email", type: "email", name: "email", autocomplete: "email" });
  const password = field({ label: "Password", type: "password", name: "password",
    autocomplete: signUp ? "new-password" : "current-password", hint: signUp ? "At least 8 characters." : null });
  const formError = h("div", { class: "form-error", role: "alert" });
  const submit = h("button", { type: "submit", class: "btn btn-primary btn-block" }, signUp ? "Create account" : "Sign in");
  const form = h("form", { class: "auth-form", novalidate: true }, email.element, password.element, formError, submit);
  const google = h("div", { class: "auth-alt" });
  const otherHash = `#/${signUp ? "signin" : "signup"}${query.get("next") ? `?next=${encodeURIComponent(query.get("next"))}` : ""}`;

  main.append(h("div", { class: "auth-page" },
    h("div", { class: "auth-card" },
      h("div", { class: "auth-brand" }, h("span", { class: "brand-mark", "aria-hidden": "true" }), "LLM Tuner"),
      h("h1", { class: "auth-title", tabindex: "-1" }, signUp ? "Create your account" : "Sign in"),
      h("p", { class: "auth-subtitle" }, signUp ? "Fine-tune open models with LoRA on your own AWS account."
        : "Welcome back. Sign in to your dashboard."),
      google, form,
      h("p", { class: "auth-switch" }, signUp ? "Already have an account? " : "New here? ",
        h("a", { href: otherHash }, signUp ? "Sign in" : "Create an account")))));

  if (googleError) {
    formError.textContent = GOOGLE_ERRORS[googleError] || "Google sign-in did not complete. Try again.";
    googleError = null;
  }

  api("/auth/providers", { auth: false }).then((providers) => {
    if (!providers || !providers.google) return;
    const href = `/auth/google/login?${new URLSearchParams({ mode: "redirect", next: `/#${next}` })}`;
    google.append(h("a", { class: "btn btn-secondary btn-block btn-google", href },
      h("span", { class: "google-mark", "aria-hidden": "true" }, "G"), signUp ? "Sign up with Google" : "Sign in with Google"),
    h("div", { class: "divider" }, h("span", "or")));
  }).catch(() => {});

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const f of [email, password]) { f.error.textContent = ""; f.input.removeAttribute("aria-invalid"); }
    formError.textContent = "";
    if (!email.input.value.trim()) return invalid(email, "Enter your email address.");
    if (!password.input.value) return invalid(password, "Enter your password.");
    if (signUp && password.input.value.length < 8) return invalid(password, "Password must be at least 8 characters.");
    submit.disabled = true;
    submit.textContent = signUp ? "Creating account…" : "Signing in…";
    try {
      const grant = await api(signUp ? "/auth/register" : "/auth/login", { method: "POST", auth: false,
        json: { email: email.input.value.trim(), password: password.input.value } });
      setSession(grant);
      navigate(next, { replace: true });
    } catch (err) {
      showError(err);
    } finally {
      submit.disabled = false;
      submit.textContent = signUp ? "Create account" : "Sign in";
    }
  });

  function invalid(f, message) {
    f.error.textContent = message;
    f.input.setAttribute("aria-invalid", "true");
    f.input.focus();
  }

  function showError(err) {
    if (err instanceof ApiError && err.status !== 429) {
      if (err.code === "email_taken") return invalid(email, "An account with this email already exists. Sign in instead?");
      if (err.param === "email") return invalid(email, err.message);
      if (err.param === "password") return invalid(password, err.message);
      if (err.code === "invalid_credentials") {
        formError.textContent = "Incorrect email or password.";
        password.input.focus();
        return undefined;
      }
    }
    formError.textContent = describeError(err);
    return undefined;
  }

  email.input.focus();
}

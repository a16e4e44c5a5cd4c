// The signed-in session. The access token lives in memory only; the refresh token is an HttpOnly cookie the page
// never sees. A renewal is scheduled shortly before the token expires, and one is shared by concurrent callers.

const RENEW_BEFORE_S = 60;
const listeners = new Set();
let state = { token: null, expiresAt: 0, user: null };
let renewTimer = null;
let inflight = null;

export function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === "llmt_csrf") return decodeURIComponent(rest.join("="));
  }
  return "";
}

export function accessToken() {
  return state.token;
}

export function currentUser() {
  return state.user;
}

export function isSignedIn() {
  return Boolean(state.token);
}

/** Seconds until the access token expires (negative once it has). */
export function secondsLeft() {
  return (state.expiresAt - Date.now()) / 1000;
}

export function onSessionChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function notify() {
  for (const fn of listeners) fn(state);
}

function schedule(expiresIn) {
  clearTimeout(renewTimer);
  const delay = Math.max(5, expiresIn - RENEW_BEFORE_S) * 1000;
  renewTimer = setTimeout(() => { renew(); }, delay);
}

/** Keep a grant from /auth/login, /auth/register or /auth/refresh. */
export function setSession(grant) {
  const hadUser = Boolean(state.user);
  state = { token: grant.access_token, expiresAt: Date.now() + grant.expires_in * 1000, user: grant.user || state.user };
  schedule(grant.expires_in);
  if (!hadUser || grant.user) notify();
}

export function setUser(user) {
  state = { ...state, user };
  notify();
}

export function clearSession() {
  clearTimeout(renewTimer);
  const had = Boolean(state.token);
  state = { token: null, expiresAt: 0, user: null };
  if (had) notify();
}

function refreshRequest() {
  return fetch("/auth/refresh", {
    method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrfToken() },
  });
}

/** A new access token from the refresh cookie; resolves true or false, never throws. One at a time. */
export function renew() {
  if (inflight) return inflight;
  inflight = (async () => {
    try {
      // The refresh token rotates on every use and a reused one ends the session: tabs take turns (the cookie a
      // tab sends is whatever the previous tab's renewal left).
      const response = navigator.locks
        ? await navigator.locks.request("llmt-refresh", () => refreshRequest())
        : await refreshRequest();
      if (!response.ok) {
        // 401: the session is over. Anything else (429, 5xx): keep what we have and let the caller decide.
        if (response.status === 401 || response.status === 403) clearSession();
        return false;
      }
      setSession(await response.json());
      return true;
    } catch {
      return false;
    } finally {
      inflight = null;
    }
  })();
  return inflight;
}

export async function signOut() {
  clearTimeout(renewTimer);
  const headers = { "X-CSRF-Token": csrfToken() };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  try {
    await fetch("/auth/logout", { method: "POST", credentials: "same-origin", headers });
  } finally {
    clearSession();
  }
}

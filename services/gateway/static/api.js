// The API client: JSON in and out, the access token attached, one silent renewal on a 401, errors as ApiError
// carrying the envelope's message, type, param and code.

import { accessToken, clearSession, renew, secondsLeft } from "./session.js";

export class ApiError extends Error {
  constructor(status, body, headers) {
    const error = (body && body.error) || {};
    super(error.message || (status ? `Request failed (${status}).` : "Network error: the server could not be reached."));
    this.status = status;
    this.type = error.type || null;
    this.param = error.param || null;
    this.code = error.code || null;
    const retry = headers ? Number(headers.get("Retry-After")) : NaN;
    this.retryAfter = Number.isFinite(retry) && retry > 0 ? retry : null;
  }
}

let onExpired = () => {};
/** Called when the session cannot be renewed: the router sends the person to sign in. */
export function setExpiredHandler(fn) {
  onExpired = fn;
}

async function authHeaders() {
  if (accessToken() && secondsLeft() < 10) await renew();
  const token = accessToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function parse(response) {
  if (response.status === 204) return null;
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { error: { message: text.slice(0, 300) } };
  }
}

/** Send a request with the session's token; one silent renewal on a 401. Returns the Response, whatever its status. */
async function request(path, options) {
  const { method = "GET", json, body, signal, auth = true, headers = {}, quiet401 = false } = options;
  const send = async () => {
    const all = { Accept: "application/json", ...headers, ...(auth ? await authHeaders() : {}) };
    let payload = body;
    if (json !== undefined) {
      all["Content-Type"] = "application/json";
      payload = JSON.stringify(json);
    }
    return fetch(path, { method, headers: all, body: payload, signal, credentials: "same-origin" });
  };
  let response;
  try {
    response = await send();
    if (response.status === 401 && auth && !quiet401) {
      if (await renew()) response = await send();
      if (response.status === 401) {
        clearSession();
        onExpired();
      }
    }
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, null, null);
  }
  return response;
}

/**
 * api("/v1/files") / api("/api/estimates", {method: "POST", json: {...}, signal})
 * `auth: false` for the sign-in routes; `quiet401` keeps a 401 from ending the session (a wrong password).
 */
export async function api(path, options = {}) {
  const response = await request(path, options);
  const data = await parse(response);
  if (!response.ok) throw new ApiError(response.status, data, response.headers);
  return data;
}

/** As api(), for a streamed answer: resolves to the Response once its status is a success (its body unread). */
export async function apiStream(path, options = {}) {
  const response = await request(path, { ...options, headers: { Accept: "text/event-stream", ...(options.headers || {}) } });
  if (!response.ok) throw new ApiError(response.status, await parse(response), response.headers);
  return response;
}

export function describeError(err) {
  if (!(err instanceof ApiError)) return String(err && err.message ? err.message : err);
  if (err.status === 429) {
    return err.retryAfter ? `Too many attempts. Try again in ${humanWait(err.retryAfter)}.` : "Too many attempts. Try again later.";
  }
  return err.message;
}

function humanWait(seconds) {
  if (seconds < 90) return `${Math.ceil(seconds)} seconds`;
  return `${Math.ceil(seconds / 60)} minutes`;
}

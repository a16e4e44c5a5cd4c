// Uploads with real progress. Small files: multipart POST /v1/files through the gateway (XMLHttpRequest, for
// upload progress events). Big files: straight to S3 over presigned part URLs (/api/uploads), several parts at
// a time, then complete; a cancelled or failed direct upload is aborted so its quota is released.

import { api, ApiError } from "./api.js";
import { accessToken, renew, secondsLeft } from "./session.js";

export const DIRECT_UPLOAD_BYTES = 8 * 1024 * 1024;
const PARALLEL_PARTS = 3;

function xhr({ method, url, body, headers = {}, onProgress, signal }) {
  return new Promise((resolve, reject) => {
    const req = new XMLHttpRequest();
    req.open(method, url);
    for (const [k, v] of Object.entries(headers)) req.setRequestHeader(k, v);
    req.upload.addEventListener("progress", (ev) => { if (ev.lengthComputable && onProgress) onProgress(ev.loaded); });
    req.addEventListener("load", () => resolve(req));
    req.addEventListener("error", () => reject(new ApiError(0, null, null)));
    req.addEventListener("abort", () => reject(new DOMException("Upload cancelled", "AbortError")));
    if (signal) {
      if (signal.aborted) { reject(new DOMException("Upload cancelled", "AbortError")); return; }
      signal.addEventListener("abort", () => req.abort(), { once: true });
    }
    req.send(body);
  });
}

function errorOf(req) {
  let body = null;
  try { body = JSON.parse(req.responseText); } catch { body = null; }
  const headers = { get: (name) => req.getResponseHeader(name) };
  return new ApiError(req.status, body, headers);
}

async function viaGateway(file, purpose, onProgress, signal) {
  for (let attempt = 0; attempt < 2; attempt += 1) {
    if (!accessToken() || secondsLeft() < 30) await renew();
    const form = new FormData();
    form.append("purpose", purpose);
    form.append("file", file, file.name);
    const req = await xhr({ method: "POST", url: "/v1/files", body: form, signal, onProgress,
      headers: { Authorization: `Bearer ${accessToken()}`, Accept: "application/json" } });
    if (req.status === 401 && attempt === 0 && (await renew())) continue;
    if (req.status < 200 || req.status >= 300) throw errorOf(req);
    return JSON.parse(req.responseText);
  }
  throw new ApiError(401, null, null);
}

async function direct(file, purpose, onProgress, signal) {
  const upload = await api("/api/uploads", { method: "POST", signal,
    json: { filename: file.name, purpose, bytes: file.size } });
  const loaded = new Array(upload.parts.length).fill(0);
  const report = () => onProgress(loaded.reduce((a, b) => a + b, 0));
  const etags = [];
  let offset = 0;
  const jobs = upload.parts.map((part, i) => {
    const start = offset;
    offset += part.bytes;
    return { part, i, start, end: offset };
  });
  try {
    const queue = [...jobs];
    const worker = async () => {
      while (queue.length) {
        const { part, i, start, end } = queue.shift();
        const req = await xhr({ method: "PUT", url: part.url, body: file.slice(start, end), signal,
          onProgress: (n) => { loaded[i] = n; report(); } }).catch((err) => {
          if (err.name === "AbortError") throw err;
          throw new ApiError(0, { error: { message: `Storage could not be reached for part ${part.part_number} `
            + "(network, or the bucket's CORS rules do not allow this site)." } }, null);
        });
        if (req.status < 200 || req.status >= 300) throw new ApiError(req.status, { error: {
          message: `Storage refused part ${part.part_number} (${req.status}).` } }, null);
        const etag = req.getResponseHeader("ETag");
        if (!etag) throw new ApiError(0, { error: { message: "Storage did not return the part's ETag (check the bucket's CORS ExposeHeaders)." } }, null);
        loaded[i] = part.bytes;
        report();
        etags.push({ part_number: part.part_number, etag });
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL_PARTS, jobs.length) }, worker));
    etags.sort((a, b) => a.part_number - b.part_number);
    const done = await api(`/api/uploads/${encodeURIComponent(upload.id)}/complete`, { method: "POST",
      json: { parts: etags } });
    return done.file;
  } catch (err) {
    api(`/api/uploads/${encodeURIComponent(upload.id)}`, { method: "DELETE" }).catch(() => {});
    throw err;
  }
}

/** Upload one file; `onProgress(bytesSent)`; cancel with the AbortSignal. Resolves to the FileObject. */
export function uploadFile(file, { purpose = "fine-tune", onProgress = () => {}, signal } = {}) {
  return file.size >= DIRECT_UPLOAD_BYTES ? direct(file, purpose, onProgress, signal)
    : viaGateway(file, purpose, onProgress, signal);
}

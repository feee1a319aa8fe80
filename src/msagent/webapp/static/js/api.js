// HTTP calls to the msagent server (same origin), with the API key as a Bearer token.
//
// Errors come back as ApiError(status, code, detail): the server's JSON error body
// {"detail", "code"}, or a network failure (status 0).

const KEY_STORAGE = "msagent.apiKey";

// The server root: the page lives at <root>/ui/, so a reverse-proxy prefix is kept.
export const BASE = location.pathname.replace(/\/ui(\/.*)?$/, "");

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail);
    this.status = status;
    this.code = code;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

function headers(extra = {}) {
  const key = getKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function errorOf(response) {
  let detail = `${response.status} ${response.statusText}`;
  let code = `http_${response.status}`;
  try {
    const body = await response.json();
    if (body && body.detail) detail = String(body.detail);
    if (body && body.code) code = String(body.code);
  } catch (_) {
    /* not JSON: keep the status line */
  }
  if (response.status === 401) {
    detail = `${detail} — enter the server's API key in the key field at the top right.`;
  }
  return new ApiError(response.status, code, detail);
}

// fetch(path) with the key; resolves to the Response when it is OK, else throws ApiError.
export async function request(path, { method = "GET", json, form, signal } = {}) {
  const init = { method, headers: headers(), signal };
  if (json !== undefined) {
    init.headers = headers({ "Content-Type": "application/json" });
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  }
  let response;
  try {
    response = await fetch(BASE + path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network",
      "Cannot reach the msagent server (is `msagent serve` still running?): " + err.message);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function getJSON(path, options) {
  return (await request(path, options)).json();
}

export async function postJSON(path, json, options = {}) {
  return (await request(path, { ...options, method: "POST", json })).json();
}

export async function postForm(path, form, options = {}) {
  return (await request(path, { ...options, method: "POST", form })).json();
}

// Read an NDJSON response line by line, calling onItem(object) for each.
export async function readNdjson(response, onItem) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (value) buffer += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      if (line) onItem(JSON.parse(line));
    }
    if (done) break;
  }
  if (buffer.trim()) onItem(JSON.parse(buffer));
}

// The file name of a Content-Disposition header (RFC 6266: filename*=UTF-8''... first, then
// the ASCII filename="..."), or the fallback.
export function fileNameOf(response, fallback) {
  const header = response.headers.get("Content-Disposition") || "";
  const encoded = /filename\*=UTF-8''([^;\s]+)/i.exec(header);
  if (encoded) {
    try {
      return decodeURIComponent(encoded[1]);
    } catch {
      // a malformed encoding: use the ASCII name
    }
  }
  const match = /filename="([^"]*)"|filename=([^;\s]+)/.exec(header);
  return match ? match[1] ?? match[2] : fallback;
}

// Let the browser save a blob as a file.
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

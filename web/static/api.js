// The HTTP API: URLs relative to the page (so a sub-path like /warden/ works), JSON errors.

import { noteServerDate } from "./time.js";

// The server gives index.html a <base href> of the page's root in every view, so "." is the base of every API path.
export const base = new URL(".", document.baseURI);

export function url(path) {
  return new URL(path, base);
}

class ApiError extends Error {
  constructor(status, body) {
    super(body.error || `HTTP ${status}`);
    this.status = status;
    this.issues = Array.isArray(body.issues) ? body.issues : [];
  }
}

let onUnauthorized = () => {};

// Called whenever the session is missing or expired, so the page can ask for the token.
export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

// Returns the Response when it is 2xx; otherwise throws an ApiError carrying the server's message.
export async function request(method, path, { json, text, headers = {}, signIn = false } = {}) {
  const init = { method, headers: { ...headers }, credentials: "same-origin" };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (text !== undefined) {
    init.body = text;
    init.headers["Content-Type"] = "text/yaml";
  }
  let response;
  try {
    response = await fetch(url(path), init);
  } catch (error) {
    throw new ApiError(0, { error: `Cannot reach Warden (${error.message})` });
  }
  noteServerDate(response.headers.get("Date"));
  if (response.ok) return response;
  const body = await response.json().catch(() => ({}));
  const error = new ApiError(response.status, { error: `${response.status} ${response.statusText}`, ...body });
  // A wrong token typed into the sign-in form is that form's business, not a new prompt.
  if (response.status === 401 && !signIn) onUnauthorized();
  throw error;
}

export async function getJSON(path) {
  return (await request("GET", path)).json();
}

export async function sendJSON(method, path, body, headers) {
  return (await request(method, path, { json: body, headers })).json();
}

// Calls to the /v1 API: the bearer token, and errors turned into sentences.

const TOKEN_KEY = "sandbox-agent.token";

export function loadSetting(key, fallback) {
  try {
    const value = localStorage.getItem(key);
    return value === null ? fallback : value;
  } catch {
    return fallback; // storage disabled: the page still works, it just forgets
  }
}

export function saveSetting(key, value) {
  try {
    if (value === null || value === "") localStorage.removeItem(key);
    else localStorage.setItem(key, value);
  } catch {
    // storage disabled or full: nothing to do but keep the value in memory
  }
}

/**
 * kind is "unreachable" (no answer at all), "unauthorized" (401) or "http" (any other
 * error status; `detail` holds the server's problem+json explanation).
 */
export class ApiError extends Error {
  constructor(kind, message, { status = 0, detail = "" } = {}) {
    super(message);
    this.name = "ApiError";
    this.kind = kind;
    this.status = status;
    this.detail = detail;
  }
}

export const UNAUTHORIZED_MESSAGE =
  "This server needs a token, and the one given is missing or wrong. Enter it in the Token field " +
  "at the top of the page (it is the value the server was started with: --token or SANDBOX_AGENT_TOKEN).";

export function unreachableMessage() {
  return `Cannot reach the sandbox-agent server at ${location.origin}. Check that it is still running; the page keeps retrying.`;
}

function sentence(text) {
  const trimmed = text.trim();
  if (!trimmed) return trimmed;
  const first = trimmed[0].toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(first) ? first : `${first}.`;
}

async function problemFrom(response) {
  let problem = {};
  try {
    problem = await response.json();
  } catch {
    // not problem+json (a proxy's page, say): fall back on the status line
  }
  const detail = typeof problem.detail === "string" ? problem.detail : "";
  if (response.status === 401) return new ApiError("unauthorized", UNAUTHORIZED_MESSAGE, { status: 401, detail });
  const message = detail
    ? sentence(detail)
    : `The server answered ${response.status} ${response.statusText || problem.title || ""}`.trim() + ".";
  return new ApiError("http", message, { status: response.status, detail });
}

export class Api {
  constructor() {
    this.token = loadSetting(TOKEN_KEY, "");
  }

  setToken(token) {
    this.token = token.trim();
    saveSetting(TOKEN_KEY, this.token);
  }

  headers(extra = {}) {
    const headers = new Headers(extra);
    if (this.token) headers.set("Authorization", `Bearer ${this.token}`);
    return headers;
  }

  /** The raw Response of a successful call; throws ApiError otherwise. */
  async fetch(method, path, { body, headers, signal } = {}) {
    const init = { method, headers: this.headers(headers), signal, cache: "no-store" };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers.set("Content-Type", "application/json");
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      if (err?.name === "AbortError") throw err;
      throw new ApiError("unreachable", unreachableMessage());
    }
    if (!response.ok) throw await problemFrom(response);
    return response;
  }

  /** The parsed JSON of a successful call (null for 204). */
  async json(method, path, options) {
    const response = await this.fetch(method, path, options);
    if (response.status === 204) return null;
    try {
      return await response.json();
    } catch (err) {
      if (err?.name === "AbortError") throw err;
      throw new ApiError("unreachable", unreachableMessage());
    }
  }

  /** `params`: the list's filters (URLSearchParams of status, label, name), if any. */
  list(params) {
    const query = params?.toString();
    return this.json("GET", query ? `/v1/process?${query}` : "/v1/process");
  }

  health() {
    return this.json("GET", "/v1/health");
  }

  start(body) {
    return this.json("POST", "/v1/process", { body });
  }

  stop(id) {
    return this.json("POST", `/v1/process/${encodeURIComponent(id)}/stop`);
  }

  kill(id) {
    return this.json("POST", `/v1/process/${encodeURIComponent(id)}/kill`);
  }

  remove(id) {
    return this.json("DELETE", `/v1/process/${encodeURIComponent(id)}`);
  }

  // The terminal parts speak the current dialect, /v1/processes (same ids, same processes).

  /** `{processes: [ProcessInfo]}`: what /v1/process does not tell, such as tty and interactive. */
  processes() {
    return this.json("GET", "/v1/processes");
  }

  /** Start with a terminal (`tty`) or with stdin open (`interactive`). */
  create(body) {
    return this.json("POST", "/v1/processes", { body });
  }

  /** Text to a process's stdin (or terminal); `eof` closes stdin after it. */
  input(id, text, { eof = false } = {}) {
    const body = { data: text, encoding: "utf8" };
    if (eof) body.eof = true;
    return this.json("POST", `/v1/processes/${encodeURIComponent(id)}/input`, { body });
  }
}

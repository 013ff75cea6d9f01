// The processes' lifecycle from /v1/events, so the list changes the moment a process starts,
// becomes ready, restarts, exits or is deleted. The list is fetched again on each event (and
// on each connection, for whatever happened while away) rather than patched from the event:
// the server applies the filters, and one code path shows the list. The 5 s poll stays as
// the fallback (and for CPU and memory, which change without events).

import { SSEParser } from "./sse.js";

const STALL_MS = 45_000; // the server sends a keepalive every ~15 s
const BACKOFF_MS = [500, 1000, 2000, 5000, 10_000];
const KINDS = new Set(["created", "ready", "restarted", "exited", "deleted", "reset"]);

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}

/**
 * Watches /v1/events until stop(). Calls:
 *   onChange(kind)   on connecting (kind "connected") and on each lifecycle event
 *   onState(state)   "connecting" | "live" | "reconnecting" | "unauthorized" | "unsupported"
 * It gives up on a 401 (start() again once there is a token) and on a server without the
 * route (404); otherwise it reconnects with a growing pause.
 */
export class EventWatch {
  constructor(api, { onChange, onState }) {
    this.api = api;
    this.onChange = onChange;
    this.onState = onState;
    this.controller = null;
  }

  get running() {
    return this.controller !== null && !this.controller.signal.aborted;
  }

  start() {
    if (this.running) return;
    const controller = new AbortController();
    this.controller = controller;
    this.run(controller.signal).catch((err) => console.warn("event stream", err));
  }

  stop() {
    this.controller?.abort();
  }

  async run(signal) {
    let attempt = 0;
    while (!signal.aborted) {
      this.onState(attempt === 0 ? "connecting" : "reconnecting");
      try {
        if (await this.connect(signal)) attempt = 0;
      } catch (err) {
        if (signal.aborted) return;
        if (err?.kind === "unauthorized") return this.giveUp("unauthorized");
        if (err?.kind === "http" && (err.status === 404 || err.status === 405)) return this.giveUp("unsupported");
        if (err?.kind !== "unreachable" && err?.kind !== "http") throw err;
      }
      if (signal.aborted) return;
      this.onState("reconnecting");
      await sleep(BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)], signal);
      attempt += 1;
    }
  }

  giveUp(state) {
    this.controller?.abort();
    this.onState(state);
  }

  /** One connection until it ends or stalls; true if it got as far as the stream. */
  async connect(signal) {
    const attempt = new AbortController();
    const abort = () => attempt.abort();
    signal.addEventListener("abort", abort, { once: true });
    let watchdog = setTimeout(abort, STALL_MS);
    const parser = new SSEParser((event) => {
      if (KINDS.has(event.type)) this.onChange(event.type);
    });
    try {
      const headers = { Accept: "text/event-stream" };
      const response = await this.api.fetch("GET", "/v1/events", { headers, signal: attempt.signal });
      this.onState("live");
      this.onChange("connected");
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          clearTimeout(watchdog);
          watchdog = setTimeout(abort, STALL_MS);
          parser.push(decoder.decode(value, { stream: true }));
        }
      } finally {
        reader.cancel().catch(() => {});
      }
      return true;
    } catch (err) {
      if (err?.name === "AbortError" || err instanceof TypeError) return false; // dropped or stalled
      throw err;
    } finally {
      clearTimeout(watchdog);
      signal.removeEventListener("abort", abort);
    }
  }
}

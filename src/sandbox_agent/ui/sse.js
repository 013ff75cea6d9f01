// Following a log over Server-Sent Events with fetch(), so the stream can carry the
// Authorization header (EventSource cannot), resuming with Last-Event-ID when it drops.

/**
 * An incremental parser of the text/event-stream format (WHATWG HTML, "event stream
 * interpretation"). Feed it decoded text in chunks of any size; it calls onEvent({type,
 * data, id}) per event and onComment(text) per comment line. A line can be megabytes
 * long (a whole snapshot), so the unfinished line is kept as a list of pieces and joined
 * once, never re-scanned.
 */
export class SSEParser {
  constructor(onEvent, onComment = () => {}) {
    this.onEvent = onEvent;
    this.onComment = onComment;
    this.pieces = [];
    this.afterCR = false;
    this.data = [];
    this.type = "";
    this.lastEventId = null;
  }

  push(chunk) {
    let start = 0;
    if (this.afterCR) {
      this.afterCR = false;
      if (chunk.startsWith("\n")) start = 1; // the LF of a CRLF split across chunks
    }
    const eol = /\r\n|\r|\n/g;
    eol.lastIndex = start;
    for (let m = eol.exec(chunk); m !== null; m = eol.exec(chunk)) {
      let line = chunk.slice(start, m.index);
      if (this.pieces.length) {
        this.pieces.push(line);
        line = this.pieces.join("");
        this.pieces = [];
      }
      start = m.index + m[0].length;
      if (m[0] === "\r" && start === chunk.length) this.afterCR = true;
      this.line(line);
    }
    if (start < chunk.length) this.pieces.push(chunk.slice(start));
  }

  line(line) {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (line.startsWith(":")) {
      this.onComment(line.slice(1));
      return;
    }
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.type = value;
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
  }

  dispatch() {
    const type = this.type || "message";
    this.type = "";
    if (!this.data.length) return;
    const data = this.data.join("\n");
    this.data = [];
    this.onEvent({ type, data, id: this.lastEventId });
  }
}

const STALL_MS = 45_000; // the server sends a keepalive every ~15 s
const BACKOFF_MS = [250, 500, 1000, 2000, 3000];

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
 * Follows /v1/process/{id}/logs?follow=true until the process's exit event, or until
 * close(). Calls:
 *   onSnapshot({content, lines})  the first event of a fresh (not resumed) stream
 *   onLine(text)                  one per log line after it
 *   onExit({status, exitCode, exitSignal})
 *   onState(state, error?)        "connecting" | "live" | "reconnecting" | "ended" |
 *                                 "unauthorized" | "gone" | "error"
 */
export class LogFollower {
  constructor(api, processId, { stream, strip, tail }, handlers) {
    this.api = api;
    this.processId = processId;
    this.options = { stream, strip, tail };
    this.handlers = handlers;
    this.controller = new AbortController();
    this.done = this.run().catch((err) => this.handlers.onState("error", err));
  }

  close() {
    this.controller.abort();
  }

  get closed() {
    return this.controller.signal.aborted;
  }

  url(resuming) {
    const params = new URLSearchParams({ follow: "true", stream: this.options.stream });
    if (this.options.strip) params.set("strip_timestamps", "true");
    if (!resuming && this.options.tail !== null) params.set("tail", String(this.options.tail));
    return `/v1/process/${encodeURIComponent(this.processId)}/logs?${params}`;
  }

  async run() {
    const { onState } = this.handlers;
    let resumeId = null;
    let attempt = 0;
    while (!this.closed) {
      onState(resumeId === null && attempt === 0 ? "connecting" : "reconnecting");
      let outcome;
      try {
        outcome = await this.connect(resumeId, (id) => {
          resumeId = id;
          attempt = 0;
        });
      } catch (err) {
        if (this.closed) return;
        if (err?.kind === "unauthorized") return onState("unauthorized", err);
        if (err?.kind === "http" && err.status === 404) return onState("gone", err);
        if (err?.kind === "http" && err.status === 400 && resumeId !== null) {
          resumeId = null; // the id is not understood: start over with a snapshot
          continue;
        }
        if (err?.kind !== "unreachable") return onState("error", err);
        outcome = "dropped";
      }
      if (outcome === "exited") return onState("ended");
      if (this.closed) return;
      onState("reconnecting");
      await sleep(BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)], this.controller.signal);
      attempt += 1;
    }
  }

  /** One connection: resolves "exited" after the exit event, "dropped" if it ends early. */
  async connect(resumeId, onId) {
    const { onSnapshot, onLine, onExit, onState } = this.handlers;
    const attempt = new AbortController();
    const abort = () => attempt.abort();
    this.controller.signal.addEventListener("abort", abort, { once: true });
    let watchdog = setTimeout(abort, STALL_MS);
    const alive = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(abort, STALL_MS);
    };
    let expectSnapshot = resumeId === null;
    let exited = false;
    const parser = new SSEParser((event) => {
      if (event.type === "exit") {
        exited = true;
        onExit(JSON.parse(event.data));
      } else if (event.type !== "message") {
        // A kind this page does not show (a "gap": lines dropped from a capped log): its id still counts.
      } else if (expectSnapshot) {
        expectSnapshot = false;
        onSnapshot(JSON.parse(event.data));
        onState("live");
      } else {
        onLine(event.data);
      }
      if (event.id !== null) onId(event.id);
    });
    try {
      const headers = { Accept: "text/event-stream" };
      if (resumeId !== null) headers["Last-Event-ID"] = resumeId;
      const response = await this.api.fetch("GET", this.url(resumeId !== null), { headers, signal: attempt.signal });
      if (resumeId !== null) onState("live");
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          alive();
          parser.push(decoder.decode(value, { stream: true }));
          if (exited) break;
        }
      } finally {
        reader.cancel().catch(() => {});
      }
      parser.push(decoder.decode());
      return exited ? "exited" : "dropped";
    } catch (err) {
      if (this.closed) return "closed";
      if (err?.name === "AbortError" || err instanceof TypeError) return exited ? "exited" : "dropped";
      throw err;
    } finally {
      clearTimeout(watchdog);
      this.controller.signal.removeEventListener("abort", abort);
    }
  }
}

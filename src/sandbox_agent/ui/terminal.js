// A tty process's terminal in the page: xterm.js on /v1/processes/{id}/terminal/ws.
//
// Output arrives as binary frames and goes to the emulator as bytes; keys and pastes go back
// as input frames, and the emulator's size (it follows its box) as resize frames. When the
// socket drops (network, server restart) it reconnects with ?replay=, which sends the most
// recent output again: the screen is rebuilt from it and the session goes on.

import { allowScriptStyles } from "./csp.js";

/** How much recent output a (re)connection asks for: enough for a full-screen program's redraws. */
export const REPLAY_BYTES = 256 * 1024;
const BACKOFF_MS = [250, 500, 1000, 2000, 3000];
// A Sec-WebSocket-Protocol entry must be an HTTP token; a token with other characters goes
// in ?access_token= instead (the server takes it there on this path only).
const PROTOCOL_SAFE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

let loading = null;

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.append(script);
  });
}

/** xterm.js and its fit addon, loaded the first time a terminal opens (half a megabyte). */
export function loadXterm() {
  if (!loading) {
    loading = (async () => {
      allowScriptStyles();
      await loadScript("vendor/xterm.js");
      await loadScript("vendor/addon-fit.js");
      return { Terminal: window.Terminal, FitAddon: window.FitAddon.FitAddon };
    })();
    loading.catch(() => (loading = null));
  }
  return loading;
}

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

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
 * The terminal of one process. `onState(state, detail?)`: "connecting" | "live" |
 * "reconnecting" | "exited" | "unauthorized" | "gone" | "error". `onExit(exitCode)` once the
 * process is seen to end.
 */
export class TerminalView {
  constructor(api, process, { onState = () => {}, onExit = () => {} } = {}) {
    this.api = api;
    this.process = process;
    this.onState = onState;
    this.onExit = onExit;
    this.controller = new AbortController();
    this.socket = null;
    this.state = "connecting";
    this.el = element("div", "term-box");
    this.host = element("div", "term-host");
    this.host.setAttribute("role", "region");
    this.host.setAttribute("aria-label", `Terminal of ${process.command}`);
    this.el.append(this.host);
    /** Settles once the emulator is in the page (it can take the focus then). */
    this.opened = this.open();
    this.opened.then(() => this.run()).catch((err) => this.setState("error", err?.message ?? String(err)));
  }

  setState(state, detail = "") {
    this.state = state;
    this.host.dataset.state = state;
    this.onState(state, detail);
  }

  get closed() {
    return this.controller.signal.aborted;
  }

  async open() {
    const { Terminal, FitAddon } = await loadXterm();
    if (this.closed) return;
    const term = new Terminal({
      cursorBlink: true,
      convertEol: false,
      scrollback: 5000,
      fontFamily: getComputedStyle(this.el).getPropertyValue("--mono").trim() || "monospace",
      fontSize: 13,
      theme: { background: "#0d1117", foreground: "#d5dce4", cursor: "#d5dce4", selectionBackground: "#264f78" },
    });
    this.term = term;
    this.fit = new FitAddon();
    term.loadAddon(this.fit);
    term.open(this.host);
    // For tests and the browser console: the live Terminal (its buffer API reads the screen).
    this.host.terminal = term;
    window.__terminal = term;
    term.onData((data) => this.send({ type: "input", data }));
    // Some mouse reports are raw bytes, not text.
    term.onBinary((data) => this.send({ type: "input", data: btoa(data), encoding: "base64" }));
    term.onResize(({ cols, rows }) => this.send({ type: "resize", cols, rows }));
    this.resizer = new ResizeObserver(() => this.refit());
    this.resizer.observe(this.host);
    this.refit();
  }

  refit() {
    if (!this.term || this.closed || !this.host.isConnected || this.host.clientWidth === 0) return;
    try {
      this.fit.fit();
    } catch {
      // not laid out yet (hidden): the next resize fits it
    }
  }

  focus() {
    this.term?.focus();
  }

  send(frame) {
    if (this.socket?.readyState === WebSocket.OPEN && this.state === "live") this.socket.send(JSON.stringify(frame));
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const params = new URLSearchParams({ replay: String(REPLAY_BYTES) });
    const token = this.api.token;
    const asProtocol = Boolean(token) && PROTOCOL_SAFE.test(token);
    if (token && !asProtocol) params.set("access_token", token);
    const path = `/v1/processes/${encodeURIComponent(this.process.id)}/terminal/ws`;
    return { url: `${scheme}//${location.host}${path}?${params}`, protocols: asProtocol ? [`bearer.${token}`] : [] };
  }

  async run() {
    if (this.closed) return;
    let attempt = 0;
    while (!this.closed) {
      this.setState(attempt === 0 ? "connecting" : "reconnecting");
      const outcome = await this.connect(() => (attempt = 0));
      if (outcome === "exited" || this.closed) return;
      if (outcome === "refused") {
        // The handshake failed: ask the API why (a WebSocket is not told).
        const why = await this.diagnose();
        if (why) return;
      }
      this.setState("reconnecting");
      await sleep(BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)], this.controller.signal);
      attempt += 1;
    }
  }

  /** After a refused handshake: true if it is final (token, gone, exited) and said so. */
  async diagnose() {
    try {
      const info = await this.api.json("GET", `/v1/processes/${encodeURIComponent(this.process.id)}`);
      if (!info.tty) {
        this.setState("error", "This process has no terminal.");
        return true;
      }
      return false; // it exists and has a terminal: the socket itself failed, try again
    } catch (err) {
      if (err?.kind === "unauthorized") {
        this.setState("unauthorized", err.message);
        return true;
      }
      if (err?.kind === "http" && err.status === 404) {
        this.setState("gone", err.message);
        return true;
      }
      return false;
    }
  }

  /** One connection: "exited" after the exit frame, "dropped" after a live session, "refused" before one. */
  connect(onLive) {
    return new Promise((resolve) => {
      const { url, protocols } = this.url();
      let socket;
      try {
        socket = new WebSocket(url, protocols);
      } catch (err) {
        this.setState("error", err.message);
        resolve("exited");
        return;
      }
      socket.binaryType = "arraybuffer";
      this.socket = socket;
      let live = false;
      let exited = false;
      const abort = () => socket.close(1000);
      this.controller.signal.addEventListener("abort", abort, { once: true });
      socket.onmessage = (event) => {
        if (typeof event.data !== "string") {
          this.term.write(new Uint8Array(event.data));
          return;
        }
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch {
          return;
        }
        if (frame.type === "ready") {
          live = true;
          onLive();
          // The replay that follows redraws the screen from scratch.
          this.term.reset();
          this.setState("live");
          this.send({ type: "resize", cols: this.term.cols, rows: this.term.rows });
        } else if (frame.type === "exit") {
          exited = true;
          const code = frame.exitCode == null ? "" : ` with code ${frame.exitCode}`;
          this.term.write(`\r\n\x1b[2m[process exited${code}]\x1b[0m\r\n`);
          this.setState("exited");
          this.onExit(frame.exitCode);
        } else if (frame.type === "error") {
          this.term.write(`\r\n\x1b[31m[${frame.message}]\x1b[0m\r\n`);
        }
      };
      socket.onclose = () => {
        this.controller.signal.removeEventListener("abort", abort);
        if (this.socket === socket) this.socket = null;
        resolve(exited ? "exited" : live ? "dropped" : "refused");
      };
    });
  }

  destroy() {
    this.controller.abort();
    this.resizer?.disconnect();
    if (window.__terminal === this.term) window.__terminal = null;
    this.term?.dispose();
  }
}

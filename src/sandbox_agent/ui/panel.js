// The expanded part of a process row: its facts, the log toolbar and the live log.

import { loadSetting, saveSetting } from "./api.js";
import { commandLine, formatCount, formatStartLong, isExited, plural, signalName } from "./format.js";
import { LogView, collapseReturns } from "./logview.js";
import { downloadLog, fetchEarlier } from "./logfetch.js";
import { LogFollower } from "./sse.js";
import { TerminalView } from "./terminal.js";

const FIRST_TAIL = 1000;
const EARLIER_STEP = 10_000;
const STREAM_KEY = "sandbox-agent.stream";
const STRIP_KEY = "sandbox-agent.strip";
const WRAP_KEY = "sandbox-agent.wrap";

function element(tag, attributes = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "className") el.className = value;
    else if (name === "text") el.textContent = value;
    else el.setAttribute(name, value);
  }
  el.append(...children);
  return el;
}

function exitText(process) {
  let text = exitOnly(process);
  if (process.descendantsRunning) text += "; processes it started still run (Delete kills them)";
  if (process.stateUnsaved) text += "; not yet recorded on disk (the disk is full)";
  return text;
}

function exitOnly(process) {
  const at = process.stoppedAt ? `, ${formatStartLong(process.stoppedAt)}` : "";
  if (process.status === "killed") return `killed (SIGKILL)${at}`;
  if (process.exitCode !== null && process.exitCode !== undefined) return `exit code ${process.exitCode}${at}`;
  if (process.exitSignal) return `ended by ${signalName(process.exitSignal)}${at}`;
  return `exit status unknown${at}`;
}

/** A path's text with a line break opportunity after each slash; other text as it is. */
function breakable(text, className) {
  if (!className.includes("path")) return [text];
  return text.split(/(?<=\/)/).flatMap((part, i) => (i ? [document.createElement("wbr"), part] : [part]));
}

export class ProcessPanel {
  /** `onExit` is called when the followed process is seen to exit. */
  constructor(api, process, { onExit }) {
    this.api = api;
    this.process = process;
    this.onExit = onExit;
    this.generation = 0;
    this.follower = null;
    this.tail = FIRST_TAIL;
    this.state = "connecting";
    const stream = loadSetting(STREAM_KEY, "combined");
    this.options = {
      stream: ["combined", "stdout", "stderr"].includes(stream) ? stream : "combined",
      strip: loadSetting(STRIP_KEY, "") === "true",
    };
    const id = process.id;

    this.facts = element("dl", { className: "facts" });
    this.note = element("p", { className: "panel-note" });

    // Folded on narrow screens, where it would push the log below the fold.
    const details = element("details", { className: "facts-box" }, element("summary", { text: "Details" }), this.facts);
    details.open = matchMedia("(min-width: 760px)").matches;
    this.el = element("div", { className: "panel", id: `panel-${id}` }, details, this.note);
    if (process.tty) this.buildTerminal();
    else this.buildLog();
    this.update(process);
  }

  buildTerminal() {
    this.stateText = element("span", { className: "follow-state", role: "status" });
    this.terminal = new TerminalView(this.api, this.process, {
      onState: (state, detail) => {
        this.state = state;
        this.showState(detail ? { message: detail } : undefined);
      },
      onExit: (exitCode) => {
        this.exitInfo = { exitCode };
        this.onExit(this.exitInfo);
      },
    });
    this.error = element("p", { className: "log-error", role: "alert" });
    this.error.hidden = true;
    const help = "Click the terminal to type; it follows this panel's size (drag its corner).";
    const toolbar = element(
      "div",
      { className: "log-toolbar" },
      element("span", { className: "tool term-help", text: help }),
      this.stateText,
    );
    this.el.append(toolbar, this.terminal.el, this.error);
  }

  buildLog() {
    const id = this.process.id;
    this.streamSelect = element(
      "select",
      { id: `stream-${id}`, className: "select" },
      ...["combined", "stdout", "stderr"].map((name) => element("option", { value: name, text: name })),
    );
    this.streamSelect.value = this.options.stream;
    this.stripBox = element("input", { type: "checkbox", id: `strip-${id}` });
    this.stripBox.checked = this.options.strip;
    this.wrapBox = element("input", { type: "checkbox", id: `wrap-${id}` });
    this.wrapBox.checked = loadSetting(WRAP_KEY, "") === "true";
    this.refreshButton = element("button", { type: "button", className: "btn", text: "Refresh" });
    this.downloadButton = element("button", { type: "button", className: "btn", text: "Download" });
    this.downloadButton.title = "The whole log of this stream, as a file";
    this.stateText = element("span", { className: "follow-state", role: "status" });
    this.countText = element("span", { className: "line-count" });
    const toolbar = element(
      "div",
      { className: "log-toolbar" },
      element(
        "span",
        { className: "tool" },
        element("label", { for: this.streamSelect.id, text: "Stream" }),
        this.streamSelect,
      ),
      element(
        "span",
        { className: "tool check" },
        this.stripBox,
        element("label", { for: this.stripBox.id, text: "Strip timestamps" }),
      ),
      element(
        "span",
        { className: "tool check" },
        this.wrapBox,
        element("label", { for: this.wrapBox.id, text: "Wrap long lines" }),
      ),
      this.refreshButton,
      this.downloadButton,
      this.stateText,
      this.countText,
    );

    this.earlierButton = element("button", {
      type: "button",
      className: "btn btn-small",
      text: `Load ${formatCount(EARLIER_STEP)} earlier lines`,
    });
    this.allButton = element("button", { type: "button", className: "btn btn-small", text: "Load all lines" });
    this.earlierText = element("span", {}, "Earlier lines are not loaded.");
    this.earlier = element(
      "div",
      { className: "log-earlier" },
      this.earlierText,
      this.earlierButton,
      this.allButton,
    );
    this.earlier.hidden = true;

    this.searchBox = element("input", {
      type: "search",
      id: `search-${id}`,
      className: "search-box",
      placeholder: "Search the log",
      "aria-label": "Search the log",
      autocomplete: "off",
      spellcheck: "false",
    });
    this.prevButton = element("button", { type: "button", className: "btn btn-small", text: "Previous" });
    this.prevButton.setAttribute("aria-label", "Previous match");
    this.nextButton = element("button", { type: "button", className: "btn btn-small", text: "Next" });
    this.nextButton.setAttribute("aria-label", "Next match");
    this.matchText = element("span", { className: "match-count", role: "status" });
    const search = element(
      "div",
      { className: "log-search", role: "search" },
      this.searchBox,
      this.prevButton,
      this.nextButton,
      this.matchText,
    );

    this.view = new LogView(`Log output of ${commandLine(this.process)}`);
    this.view.onChange = () => this.showCount();
    this.view.onMatches = () => this.showMatches();
    if (this.wrapBox.checked) this.view.setWrap(true);
    this.error = element("p", { className: "log-error", role: "alert" });
    this.error.hidden = true;

    this.el.append(toolbar, search, this.earlier, this.view.el, this.error);
    if (this.process.interactive) this.el.append(this.buildStdin());

    this.streamSelect.addEventListener("change", () => {
      this.options.stream = this.streamSelect.value;
      saveSetting(STREAM_KEY, this.options.stream);
      this.reload();
    });
    this.stripBox.addEventListener("change", () => {
      this.options.strip = this.stripBox.checked;
      saveSetting(STRIP_KEY, String(this.options.strip));
      this.reload();
    });
    this.refreshButton.addEventListener("click", () => this.reload());
    this.wrapBox.addEventListener("change", () => {
      saveSetting(WRAP_KEY, String(this.wrapBox.checked));
      this.view.setWrap(this.wrapBox.checked);
    });
    this.downloadButton.addEventListener("click", () => this.download());
    let searching = 0;
    this.searchBox.addEventListener("input", () => {
      clearTimeout(searching);
      searching = setTimeout(() => this.view.setQuery(this.searchBox.value), 150);
    });
    this.searchBox.addEventListener("keydown", (event) => {
      if (event.key !== "Enter") return;
      event.preventDefault();
      clearTimeout(searching);
      if (this.view.query !== this.searchBox.value) this.view.setQuery(this.searchBox.value);
      else this.view.step(event.shiftKey ? -1 : 1);
    });
    this.prevButton.addEventListener("click", () => this.view.step(-1));
    this.nextButton.addEventListener("click", () => this.view.step(1));
    this.showMatches();
    this.earlierButton.addEventListener("click", () => this.loadEarlier(EARLIER_STEP));
    this.allButton.addEventListener("click", () => this.loadEarlier(null));
    this.reload();
  }

  update(process) {
    this.process = process;
    const facts = [
      ["Command line", commandLine(process), "mono"],
      ["Process ID", process.pid ?? "unknown", "mono"],
      ["ID", process.id, "mono"],
      ["Directory", process.cwd ?? "the server's", "mono"],
      ["Started", formatStartLong(process.startedAt), ""],
    ];
    if (isExited(process)) facts.push(["Exited", exitText(process), ""]);
    facts.push(["Log file", process.logPaths?.combined ?? "", "mono path"]);
    // Rebuilt only on change, so a refresh never drops a selection being copied.
    const key = JSON.stringify(facts);
    if (key === this.factsKey) return this.showState();
    this.factsKey = key;
    this.facts.replaceChildren(
      ...facts.map(([term, value, className]) =>
        element("div", {}, element("dt", { text: term }), element("dd", { className }, ...breakable(String(value), className))),
      ),
    );
    this.note.textContent = isExited(process)
      ? ""
      : "Delete is offered once the process has exited: stop or kill it first. Its logs go with it.";
    this.note.hidden = isExited(process);
    if (isExited(process)) this.disableStdin("the process has exited");
    this.showState();
  }

  showMatches() {
    const { matches, current, query } = this.view;
    this.prevButton.disabled = this.nextButton.disabled = !matches.length;
    this.matchText.textContent = !query
      ? ""
      : matches.length
        ? `${current < 0 ? 0 : current + 1} of ${formatCount(matches.length)}`
        : "No matches";
  }

  async download() {
    this.downloadButton.disabled = true;
    this.error.hidden = true;
    try {
      await downloadLog(this.api, this.process.id, this.options);
    } catch (err) {
      this.error.textContent = `Could not download the log: ${err.message ?? err}`;
      this.error.hidden = false;
    } finally {
      this.downloadButton.disabled = false;
    }
  }

  /** Fetch only the lines before the first one shown (`count` of them, or all), and put them first. */
  async loadEarlier(count) {
    const buttons = [this.earlierButton, this.allButton];
    for (const b of buttons) b.disabled = true;
    const generation = this.generation;
    try {
      const known = this.view.lines.slice(0, 20);
      const have = { known, have: this.view.count };
      const older = await fetchEarlier(this.api, this.process.id, this.options, have, count, collapseReturns);
      if (generation !== this.generation) return;
      if (older === null) {
        // The log moved on too far to find where the page's lines begin: load afresh.
        this.tail = count === null ? null : this.view.count + count;
        this.reload({ keepPlace: true });
        return;
      }
      this.view.prepend(older);
      const reachedStart = count === null || older.length < count;
      this.tail = reachedStart ? null : this.view.count;
      this.showEarlier(reachedStart ? 0 : Infinity);
    } catch (err) {
      this.error.textContent = `Could not load earlier lines: ${err.message ?? err}`;
      this.error.hidden = false;
    } finally {
      for (const b of buttons) b.disabled = false;
    }
  }

  /** An input line for a process that reads stdin (without a terminal), and "Close stdin". */
  buildStdin() {
    const id = this.process.id;
    this.stdinLine = element("input", {
      id: `stdin-${id}`,
      className: "stdin-line mono",
      autocomplete: "off",
      spellcheck: "false",
      placeholder: "a line of input",
    });
    const send = element("button", { type: "submit", className: "btn", text: "Send" });
    this.closeStdin = element("button", { type: "button", className: "btn", text: "Close stdin" });
    const said = element("p", { className: "stdin-message", role: "alert" });
    said.hidden = true;
    const say = (text) => {
      said.textContent = text;
      said.hidden = !text;
    };
    const form = element(
      "form",
      { className: "stdin-form", autocomplete: "off" },
      element("label", { for: this.stdinLine.id, text: "Send to stdin" }),
      this.stdinLine,
      send,
      this.closeStdin,
      said,
    );
    this.stdinControls = [this.stdinLine, send, this.closeStdin];
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      say("");
      const text = this.stdinLine.value;
      try {
        await this.api.input(id, `${text}\n`);
        if (this.stdinLine.value === text) this.stdinLine.value = "";
      } catch (err) {
        say(err.message ?? String(err));
      }
    });
    this.closeStdin.addEventListener("click", async () => {
      say("");
      try {
        await this.api.input(id, "", { eof: true });
        this.disableStdin("stdin is closed: the process has read its last line.");
      } catch (err) {
        say(err.message ?? String(err));
      }
    });
    this.stdinSay = say;
    return form;
  }

  disableStdin(why) {
    for (const control of this.stdinControls ?? []) control.disabled = true;
    if (this.stdinLine) this.stdinLine.placeholder = why;
  }

  /** (Re)open the log with the current options; `keepPlace` keeps the view's position. */
  reload({ keepPlace = false } = {}) {
    this.follower?.close();
    const generation = ++this.generation;
    const current = (fn) =>
      (...args) => {
        if (generation === this.generation) fn(...args);
      };
    const before = this.view.count;
    const sticking = this.view.stick;
    this.exitInfo = null;
    this.error.hidden = true;
    this.follower = new LogFollower(
      this.api,
      this.process.id,
      { ...this.options, tail: this.tail },
      {
        onSnapshot: current(({ content, lines }) => {
          const all = content.split("\n");
          all.pop();
          const shift = keepPlace && !sticking ? all.length - before : null;
          this.view.reset(all, { ...this.options, shift });
          this.showEarlier(lines);
        }),
        onLine: current((line) => this.view.append(line)),
        onExit: current((info) => {
          this.exitInfo = info;
          this.onExit(info);
        }),
        onState: current((state, error) => {
          this.state = state;
          this.showState(error);
        }),
      },
    );
  }

  showEarlier(lines) {
    const more = this.tail !== null && lines >= this.tail;
    const capped = this.view.dropped > 0;
    this.earlier.hidden = !more && !capped;
    this.earlierButton.hidden = this.allButton.hidden = capped;
    this.earlierText.textContent = capped
      ? `Showing the last ${formatCount(this.view.count)} lines, the most this viewer keeps.`
      : "Earlier lines are not loaded.";
  }

  showCount() {
    this.countText.textContent = plural(this.view.count, "line");
    this.showState();
  }

  showState(error) {
    const running = !isExited(this.process) && !this.exitInfo;
    const texts = {
      connecting: this.terminal ? "Connecting…" : "Loading…",
      live: this.terminal ? (running ? "Connected" : "Connected · the process has exited") : running ? "Live" : "Loaded",
      exited: "Complete: the process has exited",
      reconnecting: "Connection lost, reconnecting…",
      ended: "Complete: the process has exited",
      unauthorized: "Token needed",
      gone: "This process no longer exists",
      error: this.terminal ? "Could not open the terminal" : "Could not load the log",
    };
    let text = texts[this.state] ?? "";
    if (this.state === "live" && running && this.view && !this.view.stick) text += " · auto-scroll paused";
    this.stateText.textContent = text;
    this.stateText.dataset.state = this.state === "live" && running ? "live" : this.state;
    if (error && (this.state === "error" || this.state === "gone" || this.state === "unauthorized")) {
      this.error.textContent = error.message;
      this.error.hidden = false;
    }
  }

  /** Start over after the token changed, if the last attempt was refused. */
  retryIfRefused() {
    if (this.state !== "unauthorized" && this.state !== "error" && this.state !== "gone") return;
    if (!this.terminal) return this.reload();
    this.terminal.destroy();
    this.terminal.el.remove();
    this.error.remove();
    const toolbar = this.stateText.parentElement;
    toolbar.remove();
    this.buildTerminal();
  }

  destroy() {
    this.generation += 1;
    this.follower?.close();
    this.view?.destroy();
    this.terminal?.destroy();
  }
}

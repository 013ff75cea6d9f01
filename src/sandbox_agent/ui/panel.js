// The expanded part of a process row: its facts, the log toolbar and the live log.

import { loadSetting, saveSetting } from "./api.js";
import { commandLine, formatCount, formatStartLong, isExited, plural, signalName } from "./format.js";
import { LogView } from "./logview.js";
import { LogFollower } from "./sse.js";

const FIRST_TAIL = 1000;
const EARLIER_STEP = 10_000;
const STREAM_KEY = "sandbox-agent.stream";
const STRIP_KEY = "sandbox-agent.strip";

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

    this.streamSelect = element(
      "select",
      { id: `stream-${id}`, className: "select" },
      ...["combined", "stdout", "stderr"].map((name) => element("option", { value: name, text: name })),
    );
    this.streamSelect.value = this.options.stream;
    this.stripBox = element("input", { type: "checkbox", id: `strip-${id}` });
    this.stripBox.checked = this.options.strip;
    this.refreshButton = element("button", { type: "button", className: "btn", text: "Refresh" });
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
      this.refreshButton,
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

    this.view = new LogView(`Log output of ${commandLine(process)}`);
    this.view.onChange = () => this.showCount();
    this.error = element("p", { className: "log-error", role: "alert" });
    this.error.hidden = true;

    // Folded on narrow screens, where it would push the log below the fold.
    const details = element("details", { className: "facts-box" }, element("summary", { text: "Details" }), this.facts);
    details.open = matchMedia("(min-width: 760px)").matches;
    this.el = element(
      "div",
      { className: "panel", id: `panel-${id}` },
      details,
      this.note,
      toolbar,
      this.earlier,
      this.view.el,
      this.error,
    );

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
    this.earlierButton.addEventListener("click", () => {
      this.tail = this.view.count + EARLIER_STEP;
      this.reload({ keepPlace: true });
    });
    this.allButton.addEventListener("click", () => {
      this.tail = null;
      this.reload({ keepPlace: true });
    });
    this.update(process);
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
    facts.push(["Log file", process.logPaths?.combined ?? "", "mono"]);
    // Rebuilt only on change, so a refresh never drops a selection being copied.
    const key = JSON.stringify(facts);
    if (key === this.factsKey) return this.showState();
    this.factsKey = key;
    this.facts.replaceChildren(
      ...facts.map(([term, value, className]) =>
        element("div", {}, element("dt", { text: term }), element("dd", { className, text: String(value) })),
      ),
    );
    this.note.textContent = isExited(process)
      ? ""
      : "Delete is offered once the process has exited: stop or kill it first. Its logs go with it.";
    this.note.hidden = isExited(process);
    this.showState();
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
      connecting: "Loading…",
      live: running ? "Live" : "Loaded",
      reconnecting: "Connection lost, reconnecting…",
      ended: "Complete: the process has exited",
      unauthorized: "Token needed",
      gone: "This process no longer exists",
      error: "Could not load the log",
    };
    let text = texts[this.state] ?? "";
    if (this.state === "live" && running && !this.view.stick) text += " · auto-scroll paused";
    this.stateText.textContent = text;
    this.stateText.dataset.state = this.state === "live" && running ? "live" : this.state;
    if (error && (this.state === "error" || this.state === "gone" || this.state === "unauthorized")) {
      this.error.textContent = error.message;
      this.error.hidden = false;
    }
  }

  /** Start over after the token changed, if the last attempt was refused. */
  retryIfRefused() {
    if (this.state === "unauthorized" || this.state === "error") this.reload();
  }

  destroy() {
    this.generation += 1;
    this.follower?.close();
    this.view.destroy();
  }
}

// The Processes page: the list, its rows and actions, the start form, the token.

import { Api } from "./api.js";
import { EventWatch } from "./events.js";
import {
  commandLine,
  elapsed,
  formatBytes,
  formatCpu,
  formatDuration,
  formatStart,
  formatStartLong,
  isExited,
  parseEnv,
  parseLabels,
  portUrl,
  splitArgs,
  statusLabel,
  statusTone,
} from "./format.js";
import { ProcessPanel } from "./panel.js";

const REFRESH_MS = 5000;

const api = new Api();
const events = new EventWatch(api, {
  onChange: () => refreshList(),
  onState: (state) => ($("conn").dataset.events = state),
});
const $ = (id) => document.getElementById(id);
const rows = new Map(); // process id -> Row
// What /v1/process does not say and never changes: id -> {tty, interactive}, from /v1/processes.
const kinds = new Map();
let expanded = null; // the Row whose panel is open (one at a time: each holds a stream)

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

/** Set text only when it changed: a refresh of hundreds of rows then costs no layout. */
function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function button(text, className, onClick) {
  const b = element("button", `btn ${className}`, text);
  b.type = "button";
  b.addEventListener("click", onClick);
  return b;
}

// ---- connection state: the header indicator and the banner -------------------------

let bannerKind = null;

/** The Token field shows once a server asks for one, or when one is kept: no clutter otherwise. */
function showTokenField() {
  $("token-form").hidden = false;
}

function setConnection(state, message = "") {
  if (state === "unauthorized") showTokenField();
  const conn = $("conn");
  conn.dataset.state = state;
  const version = conn.dataset.version ? ` · v${conn.dataset.version}` : "";
  $("conn-text").textContent =
    { ok: `Connected${version}`, unauthorized: "Token needed", unreachable: "Server unreachable" }[state] ?? "";
  if (state === "ok") {
    if (bannerKind === "unauthorized" || bannerKind === "unreachable") hideBanner();
  } else {
    showBanner(state, message);
  }
}

function showBanner(kind, message) {
  bannerKind = kind;
  const banner = $("banner");
  banner.dataset.kind = kind;
  $("banner-text").textContent = message;
  $("banner-token").hidden = kind !== "unauthorized";
  banner.hidden = false;
}

function hideBanner() {
  bannerKind = null;
  $("banner").hidden = true;
}

/** Report an error from any call; returns its message for showing next to the action. */
function report(err) {
  if (err?.kind === "unauthorized" || err?.kind === "unreachable") setConnection(err.kind, err.message);
  else if (err?.kind === "http") setConnection("ok");
  else console.warn(err); // a bug of ours: keep it visible to whoever debugs the page
  return err?.message ?? String(err);
}

// ---- the list -----------------------------------------------------------------------

class Row {
  constructor(process) {
    this.id = process.id;
    this.li = element("li", "proc");
    this.li.dataset.id = process.id;

    this.toggle = element("button", "proc-toggle");
    this.toggle.type = "button";
    this.toggle.setAttribute("aria-expanded", "false");
    this.toggle.setAttribute("aria-controls", `panel-${process.id}`);
    const chevron = element("span", "chevron");
    chevron.setAttribute("aria-hidden", "true");
    this.badge = element("span", "badge");
    this.command = element("span", "proc-cmd");
    this.kind = element("span", "kind");
    this.name = element("span", "proc-name");
    this.commandText = element("span", "proc-cmd-text");
    this.command.append(this.name, this.kind, this.commandText);
    this.pid = element("span", "proc-pid");
    this.started = element("time", "proc-start");
    this.duration = element("span", "proc-dur");
    const meta = element("span", "proc-meta");
    meta.append(this.labelled("pid ", this.pid), this.labelled("started ", this.started));
    meta.append(this.labelled("", this.duration));
    this.durationLabel = meta.lastChild.firstChild;
    this.toggle.append(chevron, this.badge, this.command, meta);
    this.toggle.addEventListener("click", () => setExpanded(this, !this.panel));

    this.actions = element("div", "proc-actions");
    this.message = element("p", "proc-message");
    this.message.setAttribute("role", "alert");
    this.message.hidden = true;
    this.note = element("p", "proc-note");
    this.note.setAttribute("role", "status");
    const line = element("div", "proc-row");
    line.append(this.toggle, this.actions);
    this.service = new ServiceLine();
    this.li.append(line, this.service.el, this.note, this.message);
    this.panel = null;
    this.exited = null;
    this.update(process);
  }

  labelled(label, value) {
    const wrap = element("span", "meta-item");
    wrap.append(element("span", "meta-label", label), value);
    return wrap;
  }

  update(process) {
    this.process = process;
    const tone = statusTone(process);
    this.li.dataset.status = process.status;
    this.badge.className = `badge tone-${tone}`;
    setText(this.badge, statusLabel(process));
    const line = commandLine(process);
    setText(this.commandText, line);
    setText(this.name, process.name ?? "");
    this.name.hidden = !process.name;
    this.command.title = process.name ? `${process.name}: ${line}` : line;
    const kind = process.tty ? "TTY" : process.interactive ? "stdin" : "";
    setText(this.kind, kind);
    this.kind.hidden = !kind;
    this.kind.title = process.tty ? "Runs in a terminal" : process.interactive ? "Takes input on stdin" : "";
    setText(this.pid, String(process.pid ?? "–"));
    setText(this.started, formatStart(process.startedAt));
    this.started.dateTime = new Date(process.startedAt * 1000).toISOString();
    this.started.title = formatStartLong(process.startedAt);
    const exited = isExited(process);
    if (exited !== this.exited) {
      this.exited = exited;
      const hadFocus = this.actions.contains(document.activeElement);
      this.actions.replaceChildren(
        ...(exited
          ? [button("Delete", "btn-danger", () => this.remove())]
          : [button("Stop", "", () => this.signal("stop")), button("Kill", "btn-danger", () => this.signal("kill"))]),
      );
      if (hadFocus) this.actions.firstChild.focus();
      if (exited) this.note.textContent = "";
    }
    this.service.update(process, exited);
    this.tick();
    this.panel?.update(process);
  }

  tick() {
    setText(this.durationLabel, this.exited ? "ran " : "for ");
    setText(this.duration, formatDuration(elapsed(this.process)));
  }

  say(text) {
    this.message.textContent = text;
    this.message.hidden = !text;
  }

  async signal(action) {
    this.say("");
    try {
      await (action === "stop" ? api.stop(this.id) : api.kill(this.id));
      if (!this.exited) {
        this.note.textContent =
          action === "stop"
            ? "Stop sent (SIGTERM): waiting for it to exit, or for its stop timeout to kill it."
            : "Kill sent (SIGKILL).";
      }
      settleSoon();
    } catch (err) {
      this.say(report(err));
    }
  }

  async remove() {
    const confirmed = await confirmDelete(this.process);
    if (!confirmed) return;
    this.say("");
    try {
      await api.remove(this.id);
      dropRow(this, true);
      refreshList();
    } catch (err) {
      this.say(report(err));
    }
  }
}

/**
 * The line under a row for what services have (SPEC section 8): ready or not, the ports as
 * links, CPU and memory, restarts and labels. Empty, and hidden, for a plain process.
 */
class ServiceLine {
  constructor() {
    this.el = element("div", "proc-extra");
    this.ready = element("span", "chip");
    this.ports = element("span", "proc-ports");
    this.cpu = element("span", "proc-cpu");
    this.memory = element("span", "proc-mem");
    this.restarts = element("span", "proc-restarts");
    this.labels = element("span", "proc-labels");
    this.labels.setAttribute("aria-label", "Labels");
    this.portsKey = null;
    this.labelsKey = null;
    this.el.append(this.ready, this.ports, this.cpu, this.memory, this.restarts, this.labels);
  }

  update(process, exited) {
    // Readiness matters while it runs; ports and usage are only sampled then.
    const ready = !exited && typeof process.ready === "boolean" ? process.ready : null;
    this.ready.hidden = ready === null;
    if (ready !== null) {
      this.ready.className = `chip ready tone-${ready ? "live" : "info"}`;
      setText(this.ready, ready ? "ready" : "not ready");
      this.ready.title = ready ? "Its wait-for condition held" : "Waiting for its wait-for condition";
    }
    this.showPorts(exited ? [] : (process.ports ?? []));
    const usage = exited ? null : process.usage;
    this.cpu.hidden = this.memory.hidden = !usage;
    if (usage) {
      setText(this.cpu, `CPU ${formatCpu(usage.cpuPercent)}`);
      setText(this.memory, `Memory ${formatBytes(usage.rssBytes)}`);
      this.cpu.title = "CPU of the process and its descendants over the last second (100% is one core)";
      this.memory.title = "Resident memory of the process and its descendants";
    }
    // Restarts so far, and whether it waits out a restart's backoff now (no run, no pid).
    const restarts = process.restarts ?? 0;
    const restarting = !exited && process.restarting === true;
    this.restarts.hidden = restarts <= 0 && !restarting;
    let said = restarts <= 0 ? "" : restarts === 1 ? "restarted once" : `restarted ${restarts} times`;
    if (restarting) said = said ? `${said}, restarting…` : "restarting…";
    setText(this.restarts, said);
    this.showLabels(process.labels ?? {});
    this.el.hidden = ready === null && this.ports.hidden && !usage && this.restarts.hidden && this.labels.hidden;
  }

  showPorts(ports) {
    const key = ports.join(",");
    if (key === this.portsKey) return;
    this.portsKey = key;
    this.ports.hidden = !ports.length;
    // Rebuilt only when the ports change, so a focused link stays focused across refreshes.
    this.ports.replaceChildren(
      ...ports.map((port) => {
        const href = portUrl(port);
        const a = element("a", "port", `:${port}`);
        a.href = href;
        a.target = "_blank";
        a.rel = "noopener noreferrer";
        a.title = `Open ${href} in a new tab`;
        a.setAttribute("aria-label", `Port ${port}, open ${href} in a new tab`);
        return a;
      }),
    );
  }

  showLabels(labels) {
    const entries = Object.entries(labels);
    const key = JSON.stringify(entries);
    if (key === this.labelsKey) return;
    this.labelsKey = key;
    this.labels.hidden = !entries.length;
    this.labels.replaceChildren(...entries.map(([k, v]) => element("span", "label", `${k}=${v}`)));
  }
}

function setExpanded(row, open) {
  if (expanded && expanded !== row) setExpanded(expanded, false);
  if (open && !row.panel) {
    row.panel = new ProcessPanel(api, row.process, { onExit: () => refreshList() });
    row.panel.el.addEventListener("keydown", (event) => {
      // Escape in a terminal belongs to the program there (vim needs it).
      if (event.key !== "Escape" || event.target.closest?.(".term-host")) return;
      setExpanded(row, false);
      row.toggle.focus();
    });
    row.li.append(row.panel.el);
    row.li.classList.add("open");
    expanded = row;
  } else if (!open && row.panel) {
    row.panel.destroy();
    row.panel.el.remove();
    row.panel = null;
    row.li.classList.remove("open");
    if (expanded === row) expanded = null;
  }
  row.toggle.setAttribute("aria-expanded", String(open));
}

function dropRow(row, moveFocus) {
  const hadFocus = row.li.contains(document.activeElement);
  const next = row.li.nextElementSibling ?? row.li.previousElementSibling;
  setExpanded(row, false);
  row.li.remove();
  rows.delete(row.id);
  if (moveFocus && hadFocus) {
    const target = next ? rows.get(next.dataset.id)?.toggle : $("processes-title");
    target?.focus();
  }
}

function showList(processes) {
  const list = $("proc-list");
  const seen = new Set();
  let cursor = list.firstElementChild;
  for (const process of processes) {
    seen.add(process.id);
    let row = rows.get(process.id);
    if (row) row.update(process);
    else {
      row = new Row(process);
      rows.set(process.id, row);
    }
    if (row.li === cursor) cursor = cursor.nextElementSibling;
    else list.insertBefore(row.li, cursor); // only new or reordered rows move
  }
  for (const row of [...rows.values()]) if (!seen.has(row.id)) dropRow(row, true);
  $("empty").hidden = processes.length > 0;
  setText($("empty"), filtering() ? "No processes match these filters." : "No processes yet. Start one with the form.");
  $("process-count").textContent = processes.length ? `(${processes.length})` : "";
  $("updated").textContent = `Updated ${new Date().toLocaleTimeString(undefined, { hourCycle: "h23" })}`;
}

let inFlight = null;
let again = false;

/** Fetch the list now; a call made while one is running is folded into one more. */
function refreshList() {
  if (inFlight) {
    again = true;
    return inFlight;
  }
  inFlight = (async () => {
    try {
      let processes;
      try {
        ({ processes } = await api.list(filters()));
        showFilterError("");
      } catch (err) {
        // A filter the server refuses (a malformed label) is the filter's fault: say so there.
        if (err?.kind !== "http" || err.status !== 400 || !filtering()) throw err;
        showFilterError(err.message);
        processes = [];
      }
      setConnection("ok");
      if (processes.some((p) => !kinds.has(p.id))) await learnKinds();
      showList(processes.map((p) => ({ ...p, ...kinds.get(p.id) })));
    } catch (err) {
      report(err);
    } finally {
      inFlight = null;
      if (again) {
        again = false;
        refreshList();
      }
    }
  })();
  return inFlight;
}

function learnKind(info) {
  kinds.set(info.id, { tty: Boolean(info.tty), interactive: Boolean(info.interactive) });
}

/** Ask /v1/processes for the kind of every process; without it they show as plain ones. */
async function learnKinds() {
  try {
    const { processes } = await api.processes();
    for (const info of processes) learnKind(info);
  } catch (err) {
    console.info("could not tell which processes have a terminal", err);
  }
}

// ---- filters: the API's own (?status=, ?label= repeated, ?name=) ---------------------

function filters() {
  const params = new URLSearchParams();
  const status = $("filter-status").value;
  if (status) params.set("status", status);
  // Terms are split as arguments are, so a value with a space can be quoted: env="a b".
  for (const term of splitArgs($("filter-label").value).args ?? []) if (term) params.append("label", term);
  const name = $("filter-name").value.trim();
  if (name) params.set("name", name);
  return params;
}

function filtering() {
  return [...filters().keys()].length > 0;
}

function showFilterError(text) {
  const error = $("filter-error");
  setText(error, text);
  error.hidden = !text;
}

let filterTimer = null;

function filtersChanged() {
  clearTimeout(filterTimer);
  filterTimer = null;
  $("filter-clear").hidden = !filtering();
  const split = splitArgs($("filter-label").value);
  if (split.error) return showFilterError(split.error);
  refreshList();
}

/** Typing filters after a short pause, so each key is not a request. */
function filtersTyped() {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(filtersChanged, 300);
}

function clearFilters() {
  $("filter-status").value = "";
  $("filter-label").value = "";
  $("filter-name").value = "";
  filtersChanged();
  $("filter-status").focus();
}

/** After stop or kill: look again shortly, so the badge changes without waiting 5 s. */
function settleSoon() {
  for (const ms of [150, 600, 1500]) setTimeout(refreshList, ms);
}

// ---- delete confirmation ------------------------------------------------------------

function confirmDelete(process) {
  const dialog = $("confirm-delete");
  const opener = document.activeElement;
  $("confirm-command").textContent = commandLine(process);
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        if (opener?.isConnected) opener.focus();
        resolve(dialog.returnValue === "delete");
      },
      { once: true },
    );
    dialog.showModal();
  });
}

// ---- the start form -----------------------------------------------------------------

function showArgsPreview() {
  const preview = $("f-args-preview");
  const { args } = splitArgs($("f-args").value);
  preview.replaceChildren(...(args ?? []).map((arg) => element("li", "", arg || "(empty)")));
  preview.hidden = !args?.length;
}

async function startProcess(event) {
  event.preventDefault();
  const error = $("start-error");
  const say = (text) => {
    error.textContent = text;
    error.hidden = !text;
  };
  say("");
  $("start-status").textContent = "";
  const command = $("f-command").value.trim();
  if (!command) {
    say("Enter a command to run, for example python3.");
    $("f-command").focus();
    return;
  }
  const split = splitArgs($("f-args").value);
  if (split.error) {
    say(split.error);
    $("f-args").focus();
    return;
  }
  const parsed = parseEnv($("f-env").value);
  if (parsed.error) {
    say(parsed.error);
    $("f-env").focus();
    return;
  }
  const body = { command, args: split.args };
  const cwd = $("f-cwd").value.trim();
  if (cwd) body.cwd = cwd;
  if (Object.keys(parsed.env).length) body.env = parsed.env;
  const service = serviceFields();
  if (service.error) {
    $("service-details").open = true;
    say(service.error);
    $(service.field).focus();
    return;
  }
  Object.assign(body, service.fields);
  const mode = new FormData($("start-form")).get("mode");
  if (mode === "tty") {
    body.tty = true;
    body.terminalSize = TERMINAL_SIZE;
  } else if (mode === "interactive") body.interactive = true;
  await launch(body, $("start-button"), say);
}

/** Name, labels and waitFor from the form: {fields} or {error, field}. */
function serviceFields() {
  const fields = {};
  const name = $("f-name").value.trim();
  if (name) fields.name = name; // the server says what a name may be
  const parsed = parseLabels($("f-labels").value);
  if (parsed.error) return { error: parsed.error, field: "f-labels" };
  if (Object.keys(parsed.labels).length) fields.labels = parsed.labels;
  const waitFor = {};
  const port = $("f-wait-port").value.trim();
  if (port) {
    if (!/^\d+$/.test(port) || Number(port) < 1 || Number(port) > 65535) {
      return { error: "The port to wait for is a number from 1 to 65535.", field: "f-wait-port" };
    }
    waitFor.port = Number(port);
  }
  const pattern = $("f-wait-log").value;
  if (pattern.trim()) waitFor.logPattern = pattern;
  const url = $("f-wait-http").value.trim();
  if (url) waitFor.httpGet = url;
  const timeout = $("f-wait-timeout").value.trim();
  if (timeout) {
    const seconds = Number(timeout);
    if (!Object.keys(waitFor).length) {
      return { error: "A timeout needs something to wait for: a port, a log line or a URL.", field: "f-wait-timeout" };
    }
    if (!Number.isFinite(seconds) || seconds < 0 || seconds > 300) {
      return { error: "The timeout is a number of seconds from 0 to 300.", field: "f-wait-timeout" };
    }
    waitFor.timeoutMs = Math.round(seconds * 1000);
  }
  if (Object.keys(waitFor).length) fields.waitFor = waitFor;
  return { fields };
}

// The terminal fits itself to the panel once open; until then a common size.
const TERMINAL_SIZE = { cols: 100, rows: 30 };
// $SHELL is the server's, so the server's sh picks it; bash when it is not set.
const SHELL = { command: "sh", args: ["-c", 'exec "${SHELL:-bash}"'] };

/** Start `body` (through /v1/processes when it has a terminal or stdin) and open its row. */
async function launch(body, submit, say) {
  submit.disabled = true;
  if (body.waitFor) {
    const seconds = (body.waitFor.timeoutMs ?? 60_000) / 1000;
    $("start-status").textContent = `Starting; waiting until it is ready (at most ${seconds} s)…`;
  }
  try {
    let id;
    if (body.tty || body.interactive) {
      const info = await api.create(body);
      learnKind(info);
      id = info.id;
    } else {
      id = (await api.start(body)).id;
    }
    setConnection("ok");
    $("start-status").textContent = `Started ${id}.`;
    await refreshList();
    const row = rows.get(id);
    if (row) {
      setExpanded(row, true);
      row.panel.terminal?.opened.then(() => row.panel?.terminal?.focus());
    }
  } catch (err) {
    $("start-status").textContent = "";
    say(report(err));
    if (err?.status === 504) refreshList(); // not ready in time, but started and still running
  } finally {
    submit.disabled = false;
  }
}

function openShell() {
  const error = $("start-error");
  const say = (text) => {
    error.textContent = text;
    error.hidden = !text;
  };
  say("");
  const body = { ...SHELL, tty: true, terminalSize: TERMINAL_SIZE };
  const cwd = $("f-cwd").value.trim();
  if (cwd) body.cwd = cwd;
  return launch(body, $("open-shell"), say);
}

// ---- the token ----------------------------------------------------------------------

function saveToken(event) {
  event.preventDefault();
  api.setToken($("token").value);
  $("token-saved").textContent = api.token ? "Saved." : "Cleared.";
  setTimeout(() => ($("token-saved").textContent = ""), 3000);
  for (const row of rows.values()) row.say("");
  refreshList().then(() => expanded?.panel?.retryIfRefused());
  events.start(); // after a 401 it had given up
}

// ---- start-up -----------------------------------------------------------------------

function main() {
  $("token").value = api.token;
  if (api.token) showTokenField();
  $("token-form").addEventListener("submit", saveToken);
  $("banner-token").addEventListener("click", () => $("token").focus());
  $("start-form").addEventListener("submit", startProcess);
  $("open-shell").addEventListener("click", openShell);
  $("f-args").addEventListener("input", showArgsPreview);
  $("refresh-list").addEventListener("click", () => refreshList());
  $("filter-status").addEventListener("change", filtersChanged);
  for (const id of ["filter-label", "filter-name"]) {
    $(id).addEventListener("input", filtersTyped);
    $(id).addEventListener("change", filtersChanged);
  }
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    filtersChanged();
  });
  $("filter-clear").addEventListener("click", clearFilters);
  if (!matchMedia("(min-width: 900px)").matches) $("start-details").open = false;
  showArgsPreview();

  api
    .health()
    .then((health) => {
      $("conn").dataset.version = health.version;
      if ($("conn").dataset.state === "ok") setConnection("ok");
    })
    .catch(report);
  refreshList();
  events.start();
  // A hidden tab does not poll; it catches up the moment it is shown again.
  setInterval(() => document.hidden || refreshList(), REFRESH_MS);
  document.addEventListener("visibilitychange", () => document.hidden || refreshList());
  setInterval(() => {
    for (const row of rows.values()) if (!row.exited) row.tick();
  }, 1000);
}

main();

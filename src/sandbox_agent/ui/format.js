// Pure helpers: how processes, times and arguments are written and read back.

const SIGNALS = {
  1: "SIGHUP",
  2: "SIGINT",
  3: "SIGQUIT",
  6: "SIGABRT",
  9: "SIGKILL",
  11: "SIGSEGV",
  13: "SIGPIPE",
  14: "SIGALRM",
  15: "SIGTERM",
};

export function signalName(number) {
  return SIGNALS[number] ?? `signal ${number}`;
}

/** The statuses of an exited process (the server's on-disk format has the same set; a test holds them equal). */
export const EXITED_STATUSES = ["stopped", "killed"];

export function isExited(process) {
  return EXITED_STATUSES.includes(process.status);
}

/** The badge text: `running`, `stopped (3)`, `stopped (SIGTERM)`, `killed`, `starting`. */
export function statusLabel(process) {
  if (process.status === "stopped") {
    if (process.exitCode !== null && process.exitCode !== undefined) return `stopped (${process.exitCode})`;
    if (process.exitSignal) return `stopped (${signalName(process.exitSignal)})`;
  }
  return process.status;
}

/** A colour family for the badge: live, info, ok, warn, bad. */
export function statusTone(process) {
  switch (process.status) {
    case "running":
      return "live";
    case "starting":
      return "info";
    case "killed":
      return "bad";
    default:
      return process.exitCode === 0 ? "ok" : "warn";
  }
}

/** Seconds as `42s`, `3m 05s`, `2h 03m`, `3d 4h`. */
export function formatDuration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const pad = (n) => String(n).padStart(2, "0");
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

/** How long it ran (exited) or has been running, in seconds. */
export function elapsed(process, nowSeconds = Date.now() / 1000) {
  const end = isExited(process) ? (process.stoppedAt ?? process.startedAt) : nowSeconds;
  return end - process.startedAt;
}

const timeOfDay = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  hourCycle: "h23",
});
const dayAndTime = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  hourCycle: "h23",
});
// 24-hour, as in the list: "Nov 28, 2026, 19:44:45", never "7:44:45 PM" next to "19:44:45".
const fullDate = new Intl.DateTimeFormat(undefined, {
  year: "numeric",
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  hourCycle: "h23",
});

/** A start time as the time of day when it is today, else as a short date and time. */
export function formatStart(unixSeconds, now = new Date()) {
  const date = new Date(unixSeconds * 1000);
  return date.toDateString() === now.toDateString() ? timeOfDay.format(date) : dayAndTime.format(date);
}

export function formatStartLong(unixSeconds) {
  const date = new Date(unixSeconds * 1000);
  return fullDate.format(date);
}

export function formatCount(n) {
  return n.toLocaleString("en-US");
}

export function plural(n, word) {
  return `${formatCount(n)} ${word}${n === 1 ? "" : "s"}`;
}

const SAFE_ARG = /^[\w@%+=:,./-]+$/;

/** One argument as a shell would need it written. */
export function quoteArg(arg) {
  if (SAFE_ARG.test(arg)) return arg;
  return `'${arg.replaceAll("'", `'\\''`)}'`;
}

export function commandLine(process) {
  return [process.command, ...process.args].map(quoteArg).join(" ");
}

/**
 * Split a line into arguments the way a POSIX shell would (quotes and backslashes, no
 * expansion): `-c "print('hi there')"` gives ["-c", "print('hi there')"].
 * Returns {args} or {error}.
 */
export function splitArgs(text) {
  const args = [];
  let current = "";
  let inWord = false;
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "'") {
      const end = text.indexOf("'", i + 1);
      if (end === -1) return { error: "An argument opens a single quote (') that is never closed." };
      current += text.slice(i + 1, end);
      inWord = true;
      i = end + 1;
    } else if (c === '"') {
      i += 1;
      let closed = false;
      while (i < text.length) {
        const d = text[i];
        if (d === '"') {
          closed = true;
          i += 1;
          break;
        }
        if (d === "\\" && i + 1 < text.length && '"\\$`\n'.includes(text[i + 1])) {
          if (text[i + 1] !== "\n") current += text[i + 1];
          i += 2;
        } else {
          current += d;
          i += 1;
        }
      }
      if (!closed) return { error: 'An argument opens a double quote (") that is never closed.' };
      inWord = true;
    } else if (c === "\\") {
      if (i + 1 >= text.length) return { error: "The arguments end with a lone backslash (\\)." };
      if (text[i + 1] !== "\n") current += text[i + 1];
      inWord = true;
      i += 2;
    } else if (/\s/.test(c)) {
      if (inWord) args.push(current);
      current = "";
      inWord = false;
      i += 1;
    } else {
      current += c;
      inWord = true;
      i += 1;
    }
  }
  if (inWord) args.push(current);
  return { args };
}

/**
 * `NAME=value` lines into an object; blank lines and `#` comments are skipped.
 * Returns {env} or {error}.
 */
export function parseEnv(text) {
  const env = {};
  const lines = text.split("\n");
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n].replace(/\r$/, "");
    if (!line.trim() || line.trimStart().startsWith("#")) continue;
    const eq = line.indexOf("=");
    const name = eq === -1 ? "" : line.slice(0, eq).trim();
    if (!name) return { error: `Environment line ${n + 1} should look like NAME=value: ${JSON.stringify(line)}.` };
    env[name] = line.slice(eq + 1);
  }
  return { env };
}

/**
 * `key=value` lines into labels; blank lines and `#` comments are skipped.
 * Returns {labels} or {error}.
 */
export function parseLabels(text) {
  const labels = {};
  const lines = text.split("\n");
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n].trim();
    if (!line || line.startsWith("#")) continue;
    const eq = line.indexOf("=");
    const key = eq === -1 ? "" : line.slice(0, eq).trim();
    if (!key) return { error: `Label line ${n + 1} should look like key=value: ${JSON.stringify(line)}.` };
    labels[key] = line.slice(eq + 1).trim();
  }
  return { labels };
}

/** Resident memory as `512 B`, `8.0 KiB`, `21.4 MiB`, `1.25 GiB`. */
export function formatBytes(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = Math.max(0, bytes);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  if (unit === 0) return `${Math.round(value)} B`;
  return `${value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

/** CPU use as `0.4%`, `12%`, `180%` (100% is one core busy). */
export function formatCpu(percent) {
  const p = Math.max(0, percent);
  return `${p < 10 ? p.toFixed(1) : Math.round(p)}%`;
}

/**
 * Where a port the process listens on opens: the host this page was loaded from (so an
 * inspector reached through a name or a forwarded address sends the browser to the same
 * machine), 127.0.0.1 when there is none. Always plain http: a dev server seldom has TLS.
 */
export function portUrl(port, where = location) {
  const host = where.hostname || "127.0.0.1"; // an IPv6 hostname comes with its brackets
  return `http://${host}:${port}/`;
}

// Whole logs and older parts of them, read off /v1/process/{id}/logs piece by piece.
//
// The answer is {"content": "...", "lines": N}, and a large one streams out from the server
// in pieces. Reading its content string as it arrives lets a download start at once without
// one huge JSON.parse, and lets "load earlier lines" stop as soon as it reaches the lines the
// page already has: only the older part is transferred (plus what one read brings).

const CONTENT = '"content":"';

/** Where the JSON string ends (an unescaped quote), or -1. */
function closingQuote(text) {
  for (let at = text.indexOf('"'); at !== -1; at = text.indexOf('"', at + 1)) {
    let slashes = 0;
    while (at - slashes - 1 >= 0 && text[at - slashes - 1] === "\\") slashes += 1;
    if (slashes % 2 === 0) return at;
  }
  return -1;
}

/** The longest prefix of an unfinished JSON string body that does not cut an escape short. */
function safeCut(text) {
  const last = text.lastIndexOf("\\");
  if (last === -1 || last < text.length - 6) return text.length;
  let run = 1;
  while (last - run >= 0 && text[last - run] === "\\") run += 1;
  if (run % 2 === 0) return text.length; // an escaped backslash, complete
  const needed = text[last + 1] === "u" ? 6 : 2;
  return last + needed <= text.length ? text.length : last;
}

/**
 * Call `onPiece(text)` with the log's content as it arrives. `onPiece` returning false stops
 * the read (the rest is not downloaded). Resolves true once the whole content was read.
 */
export async function readContent(response, onPiece) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let started = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      if (!started) {
        const at = buffer.indexOf(CONTENT);
        if (at === -1) {
          if (done) throw new Error("the server's answer holds no log content");
          continue;
        }
        buffer = buffer.slice(at + CONTENT.length);
        started = true;
      }
      const end = closingQuote(buffer);
      const cut = end === -1 ? safeCut(buffer) : end;
      if (cut > 0) {
        const more = onPiece(JSON.parse(`"${buffer.slice(0, cut)}"`));
        buffer = buffer.slice(cut);
        if (more === false) return false;
      }
      if (end !== -1) return true;
      if (done) throw new Error("the log ended before its content did");
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** Splits pieces of text into lines (without their "\n"); the last, unfinished one is held back. */
export class LineSplitter {
  constructor(onLine) {
    this.onLine = onLine;
    this.rest = "";
  }

  /** Returns false as soon as `onLine` does. */
  push(piece) {
    let start = 0;
    for (let nl = piece.indexOf("\n"); nl !== -1; nl = piece.indexOf("\n", start)) {
      const line = this.rest + piece.slice(start, nl);
      this.rest = "";
      start = nl + 1;
      if (this.onLine(line) === false) return false;
    }
    this.rest += piece.slice(start);
    return true;
  }
}

export function logPath(processId, { stream, strip, tail = null }) {
  const params = new URLSearchParams({ stream });
  if (strip) params.set("strip_timestamps", "true");
  if (tail !== null) params.set("tail", String(tail));
  return `/v1/process/${encodeURIComponent(processId)}/logs?${params}`;
}

/** The whole log as a file the browser saves. */
export async function downloadLog(api, processId, options) {
  const response = await api.fetch("GET", logPath(processId, options));
  const pieces = [];
  await readContent(response, (piece) => {
    pieces.push(piece);
  });
  const blob = new Blob(pieces, { type: "text/plain;charset=utf-8" });
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = `${processId}-${options.stream}.log`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return blob.size;
}

/**
 * The lines just before the `have` lines the page has (`known`: the first of them, oldest
 * first): at most `count` of them, all when `count` is null. Reads from the start of the last
 * `have + count` lines and stops where `known` begins. Returns null if `known` was never met (the log moved
 * on too far meanwhile): the caller then reloads instead.
 */
export async function fetchEarlier(api, processId, options, { known, have }, count, normalise = (line) => line) {
  const tail = count === null ? null : have + count;
  // Met where the last known.length lines read are `known`; a few lines are enough to be sure.
  const probe = known.slice(0, Math.min(known.length, 20));
  const older = [];
  let met = false;
  const splitter = new LineSplitter((raw) => {
    older.push(normalise(raw));
    const n = older.length;
    if (n < probe.length || older[n - 1] !== probe[probe.length - 1]) return true;
    for (let k = 0; k < probe.length; k++) if (older[n - probe.length + k] !== probe[k]) return true;
    met = true;
    older.length = n - probe.length;
    return false;
  });
  const response = await api.fetch("GET", logPath(processId, { ...options, tail }));
  await readContent(response, (piece) => splitter.push(piece));
  return met ? older : null;
}

// A log viewer that stays fast with hundreds of thousands of lines: the lines live in an
// array, and only the ones in view (plus a margin) exist as DOM nodes. Every line has the
// same height, so a line's position is its index times that height.

import { PLAIN, isPlain, parseAnsi, renderRuns } from "./ansi.js";
import { formatCount } from "./format.js";

const PREFIX = /^(\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] )?(\[std(?:out|err)\] )?/;
const OVERSCAN = 40;
/** The most lines kept in memory; older ones are dropped past it. */
export const MAX_LINES = 500_000;

/**
 * A carriage return inside a line (a progress bar redrawing itself) arrives as "\r" in a
 * snapshot and as "\n" in a live event. Show what a terminal would end up showing: each
 * piece written over the one before, after the line's timestamp and stream tag.
 */
export function collapseReturns(line) {
  if (!line.includes("\r") && !line.includes("\n")) return line;
  const prefix = PREFIX.exec(line)[0];
  let shown = "";
  for (const piece of line.slice(prefix.length).split(/[\r\n]/)) {
    shown = piece + shown.slice(piece.length);
  }
  return prefix + shown;
}

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

/** Wrap the text between each [start, end) of `el`'s text in <mark> (across element boundaries). */
function highlight(el, hits) {
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  const nodes = [];
  let offset = 0;
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    nodes.push([node, offset]);
    offset += node.data.length;
  }
  // From the last hit back, so earlier offsets stay valid as nodes split.
  for (const [start, end, current] of [...hits].reverse()) {
    for (let n = nodes.length - 1; n >= 0; n--) {
      const [node, at] = nodes[n];
      const from = Math.max(start, at);
      const to = Math.min(end, at + node.data.length);
      if (from >= to) continue;
      const range = document.createRange();
      range.setStart(node, from - at);
      range.setEnd(node, to - at);
      const mark = element("mark", current ? "hit current" : "hit");
      range.surroundContents(mark);
    }
  }
}

export class LogView {
  /** `label` names the scrollable region for assistive technology. */
  constructor(label) {
    this.el = element("div", "logview");
    this.el.dataset.stream = "combined";
    this.el.logView = this; // lets tests and the browser console read `lines`
    this.scroller = element("div", "log-scroller");
    this.scroller.tabIndex = 0;
    this.scroller.setAttribute("role", "region");
    this.scroller.setAttribute("aria-label", label);
    this.sizer = element("div", "log-sizer");
    this.rows = element("div", "log-rows");
    this.empty = element("p", "log-empty", "No output yet.");
    this.sizer.append(this.rows);
    this.scroller.append(this.sizer, this.empty);
    this.jump = element("button", "btn log-jump");
    this.jump.type = "button";
    this.jump.hidden = true;
    this.el.append(this.scroller, this.jump);

    this.stream = "combined";
    this.strip = false;
    this.lines = [];
    this.styles = []; // the ANSI style a line starts in, when not plain
    this.ends = { stdout: PLAIN, stderr: PLAIN, other: PLAIN };
    this.carrying = false;
    this.maxChars = 0;
    this.dropped = 0;
    this.stick = true;
    this.unseen = 0;
    this.first = 0;
    this.last = 0;
    this.lastTop = 0;
    this.pinnedUntil = 0;
    this.dirty = true;
    this.frame = 0;
    this.onChange = () => {};
    this.onMatches = () => {};
    // Search: every match as [line index, start, end] in the line's shown text.
    this.query = "";
    this.matches = [];
    this.current = -1;
    // Wrapping: each line takes as many rows as its shown text needs at this width;
    // tops[i] is the row line i starts on (a prefix sum), so positions stay arithmetic.
    this.wrap = false;
    this.perRow = 0;
    this.tops = [0];
    this.probe = element("span", "log-probe", "0".repeat(50));
    this.probe.setAttribute("aria-hidden", "true");
    this.scroller.append(this.probe);

    this.scroller.addEventListener("scroll", () => this.onScroll(), { passive: true });
    this.scroller.addEventListener("keydown", (event) => this.onKey(event));
    this.jump.addEventListener("click", () => {
      this.scrollToEnd();
      this.scroller.focus();
    });
    this.resizer = new ResizeObserver(() => {
      if (this.wrap && this.measure()) this.relayout();
      this.schedule();
    });
    this.resizer.observe(this.scroller);
  }

  get count() {
    return this.lines.length;
  }

  get lineHeight() {
    if (!this._lineHeight) {
      const value = Number.parseFloat(getComputedStyle(this.scroller).getPropertyValue("--log-line"));
      if (value > 0) this._lineHeight = value;
    }
    return this._lineHeight || 18;
  }

  /** Replace every line. `shift`: keep the view where it was, moved down that many lines. */
  reset(lines, { stream, strip, shift = null }) {
    const oldTop = this.scroller.scrollTop;
    this.stream = stream;
    this.strip = strip;
    this.el.dataset.stream = stream;
    this.lines = [];
    this.styles = [];
    this.ends = { stdout: PLAIN, stderr: PLAIN, other: PLAIN };
    this.carrying = false;
    this.maxChars = 0;
    this.unseen = 0;
    const from = Math.max(0, lines.length - MAX_LINES);
    this.dropped = from;
    for (let i = from; i < lines.length; i++) this.ingest(lines[i]);
    this.relayout();
    this.research();
    this.dirty = true;
    if (shift === null) {
      this.stick = true;
    } else {
      this.stick = false;
      this.render();
      this.scroller.scrollTop = oldTop + Math.max(0, shift) * this.lineHeight;
    }
    this.render();
  }

  append(line) {
    this.ingest(line);
    const index = this.lines.length - 1;
    if (this.wrap) this.tops.push(this.tops[index] + this.rowsOf(index));
    if (this.query) {
      const before = this.matches.length;
      this.findIn(index);
      if (this.matches.length !== before) this.onMatches();
    }
    if (this.lines.length > MAX_LINES) {
      const excess = this.lines.length - MAX_LINES + Math.floor(MAX_LINES / 10);
      const rowsGone = this.rowAt(excess);
      this.lines.splice(0, excess);
      this.styles.splice(0, excess);
      this.dropped += excess;
      if (!this.stick) this.scroller.scrollTop -= rowsGone * this.lineHeight;
      this.relayout();
      this.research();
      this.dirty = true;
    }
    if (!this.stick) this.unseen += 1;
    if (this.stick || this.lines.length - 1 < this.last) this.dirty = true;
    this.schedule();
  }

  kindOf(text) {
    if (this.stream !== "combined") return this.stream;
    const tag = PREFIX.exec(text)[2];
    return tag ? tag.slice(1, -2) : "other";
  }

  parts(text) {
    const m = PREFIX.exec(text);
    const stamp = this.strip ? "" : (m[1] ?? "");
    const tag = this.stream === "combined" ? (m[2] ?? "") : "";
    // A stripped line cannot hold a timestamp, nor a single-stream line a tag: what looks
    // like one there is the program's own text.
    const rest = text.slice(stamp.length);
    return { stamp, tag: rest.startsWith(tag) ? tag : "", body: rest.slice(rest.startsWith(tag) ? tag.length : 0) };
  }

  ingest(raw) {
    const text = collapseReturns(raw);
    const hasEscape = text.includes("\x1b");
    let style;
    if (hasEscape || this.carrying) {
      const kind = this.kindOf(text);
      const start = this.ends[kind];
      style = start === PLAIN ? undefined : start;
      if (hasEscape) {
        this.ends[kind] = parseAnsi(this.parts(text).body, start).end;
        this.carrying = !isPlain(this.ends.stdout) || !isPlain(this.ends.stderr) || !isPlain(this.ends.other);
      }
    }
    this.lines.push(text);
    this.styles.push(style);
    if (text.length > this.maxChars) this.maxChars = text.length;
  }

  /** Older lines before the first one (oldest first); the view stays on what it showed. */
  prepend(older) {
    const room = MAX_LINES - this.lines.length;
    if (older.length > room) {
      this.dropped += older.length - room;
      older = older.slice(older.length - room);
    }
    if (!older.length) return;
    const lines = this.lines;
    const styles = this.styles;
    const ends = this.ends;
    const carrying = this.carrying;
    this.lines = [];
    this.styles = [];
    this.ends = { stdout: PLAIN, stderr: PLAIN, other: PLAIN };
    this.carrying = false;
    for (const line of older) this.ingest(line);
    const added = this.lines.length;
    this.lines = this.lines.concat(lines);
    this.styles = this.styles.concat(styles);
    this.ends = ends;
    this.carrying = carrying;
    const top = this.scroller.scrollTop;
    this.relayout();
    this.research();
    if (!this.stick) this.scroller.scrollTop = top + this.rowAt(added) * this.lineHeight;
    this.dirty = true;
    this.render();
  }

  /** The text a line shows (what a search looks in): no escape codes, no hidden prefix. */
  shownText(i) {
    const { stamp, tag, body } = this.parts(this.lines[i]);
    if (!body.includes("\x1b")) return stamp + tag + body;
    return stamp + tag + parseAnsi(body, this.styles[i] ?? PLAIN).runs.map((run) => run.text).join("");
  }

  // ---- search -------------------------------------------------------------------------

  setQuery(query) {
    this.query = query;
    this.research();
    if (this.matches.length) this.current = this.firstMatchFrom(this.first);
    this.dirty = true;
    this.render();
    if (this.current >= 0) this.reveal(this.current);
    this.onMatches();
  }

  research() {
    this.matches = [];
    this.current = -1;
    if (this.query) for (let i = 0; i < this.lines.length; i++) this.findIn(i);
    this.onMatches();
  }

  findIn(i) {
    const needle = this.query.toLowerCase();
    const text = this.shownText(i).toLowerCase();
    for (let at = text.indexOf(needle); at !== -1; at = text.indexOf(needle, at + needle.length)) {
      this.matches.push([i, at, at + needle.length]);
    }
  }

  firstMatchFrom(line) {
    const found = this.matches.findIndex(([i]) => i >= line);
    return found === -1 ? 0 : found;
  }

  /** Go to the next (+1) or previous (-1) match, round the ends. */
  step(direction) {
    const n = this.matches.length;
    if (!n) return;
    this.current = this.current < 0 ? 0 : (this.current + direction + n) % n;
    this.dirty = true;
    this.reveal(this.current);
    this.onMatches();
  }

  reveal(index) {
    const [line] = this.matches[index];
    this.stick = false;
    const rows = this.wrap ? this.tops[line + 1] - this.tops[line] : 1;
    const top = this.rowAt(line) * this.lineHeight;
    const { clientHeight } = this.scroller;
    this.scroller.scrollTop = Math.max(0, top - (clientHeight - rows * this.lineHeight) / 2);
    this.dirty = true;
    this.render();
  }

  // ---- wrapping -----------------------------------------------------------------------

  setWrap(wrap) {
    this.wrap = wrap;
    this.el.classList.toggle("wrapped", wrap);
    const line = this.lineAtRow(Math.floor(this.scroller.scrollTop / this.lineHeight));
    if (wrap) this.measure();
    this.relayout();
    this.dirty = true;
    this.render();
    if (!this.stick) {
      this.scroller.scrollTop = this.rowAt(line) * this.lineHeight;
      this.render();
    }
  }

  /** Characters per row at the current width; true if that changed. */
  measure() {
    const width = this.probe.getBoundingClientRect().width / 50;
    const pad = Number.parseFloat(getComputedStyle(this.scroller).getPropertyValue("--log-pad")) || 12;
    const perRow = width > 0 ? Math.max(8, Math.floor((this.scroller.clientWidth - 2 * pad) / width)) : 0;
    if (perRow === this.perRow) return false;
    this.perRow = perRow;
    return true;
  }

  rowsOf(i) {
    if (!this.perRow) return 1;
    return Math.max(1, Math.ceil(this.shownText(i).length / this.perRow));
  }

  relayout() {
    if (!this.wrap) {
      this.tops = [0];
      return;
    }
    const tops = new Array(this.lines.length + 1);
    tops[0] = 0;
    for (let i = 0; i < this.lines.length; i++) tops[i + 1] = tops[i] + this.rowsOf(i);
    this.tops = tops;
    this.dirty = true;
  }

  /** The row line i starts on. */
  rowAt(i) {
    return this.wrap ? this.tops[Math.min(i, this.lines.length)] : i;
  }

  /** The line shown on a row. */
  lineAtRow(row) {
    if (!this.wrap) return Math.min(row, Math.max(0, this.lines.length - 1));
    let lo = 0;
    let hi = this.lines.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.tops[mid] <= row) lo = mid;
      else hi = mid - 1;
    }
    return Math.max(0, lo);
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.render());
  }

  scrollToEnd() {
    // A smooth scroll already under way (PageUp just before) would carry on and undo
    // this one: for a moment, scrolling away from the end snaps back to it.
    this.pinnedUntil = performance.now() + 500;
    this.stick = true;
    this.unseen = 0;
    this.dirty = true;
    this.render();
  }

  onKey(event) {
    // Home and End jump at once: a smooth scroll to the end would land short of lines
    // that arrived while it moved, and so never resume following.
    if (event.altKey || event.shiftKey || event.metaKey) return;
    if (event.key === "End") {
      event.preventDefault();
      this.scrollToEnd();
    } else if (event.key === "Home") {
      event.preventDefault();
      this.stick = false;
      this.scroller.scrollTop = 0;
      this.onScroll();
    }
  }

  onScroll() {
    const { scrollTop, clientHeight, scrollHeight } = this.scroller;
    const distance = scrollHeight - clientHeight - scrollTop;
    const movingDown = scrollTop > this.lastTop;
    this.lastTop = scrollTop;
    // Moving down to within a few lines of the end counts as reaching it: lines keep
    // arriving while the scroll moves, so the very end is a moving target.
    const atEnd = distance <= this.lineHeight / 2 || (movingDown && distance <= 4 * this.lineHeight);
    if (this.stick && !atEnd && performance.now() < this.pinnedUntil) {
      this.dirty = true;
      this.schedule();
      return;
    }
    if (atEnd !== this.stick) {
      this.stick = atEnd;
      if (atEnd) this.unseen = 0;
      this.updateJump();
      this.onChange();
    }
    this.schedule();
  }

  updateJump() {
    const overflowing = this.scroller.scrollHeight > this.scroller.clientHeight;
    this.jump.hidden = this.stick || !overflowing;
    this.jump.textContent = this.unseen ? `Jump to latest (${formatCount(this.unseen)} new)` : "Jump to latest";
  }

  render() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    const lineHeight = this.lineHeight;
    const n = this.lines.length;
    this.sizer.style.height = `${this.rowAt(n) * lineHeight}px`;
    this.sizer.style.minWidth = this.wrap ? "" : `calc(${Math.min(this.maxChars, 100_000)}ch + 2 * var(--log-pad))`;
    this.empty.hidden = n > 0;
    if (this.stick) this.scroller.scrollTop = this.scroller.scrollHeight;
    const top = this.scroller.scrollTop;
    const height = this.scroller.clientHeight;
    const first = Math.max(0, this.lineAtRow(Math.floor(top / lineHeight)) - OVERSCAN);
    const last = Math.min(n, this.lineAtRow(Math.ceil((top + height) / lineHeight)) + 1 + OVERSCAN);
    if (this.dirty || first !== this.first || last !== this.last) {
      const fragment = document.createDocumentFragment();
      const hits = this.query ? this.hitsBetween(first, last) : null;
      for (let i = first; i < last; i++) fragment.append(this.renderLine(i, hits?.get(i)));
      this.rows.replaceChildren(fragment);
      this.rows.style.transform = `translateY(${this.rowAt(first) * lineHeight}px)`;
      this.first = first;
      this.last = last;
      this.dirty = false;
    }
    this.updateJump();
    this.onChange();
  }

  /** line index -> its matches [start, end, isCurrent], for the lines from first to last. */
  hitsBetween(first, last) {
    const hits = new Map();
    let k = this.firstMatchFrom(first);
    for (; k < this.matches.length && this.matches[k][0] < last; k++) {
      const [i, start, end] = this.matches[k];
      if (i < first) continue;
      if (!hits.has(i)) hits.set(i, []);
      hits.get(i).push([start, end, k === this.current]);
    }
    return hits;
  }

  renderLine(i, hits) {
    const text = this.lines[i];
    const line = element("div", "ln");
    const { stamp, tag, body } = this.parts(text);
    const kind = tag ? tag.slice(1, -2) : this.stream !== "combined" ? this.stream : "";
    if (kind) line.dataset.stream = kind;
    if (stamp) line.append(element("span", "ln-ts", stamp));
    if (tag) line.append(element("span", "ln-tag", tag));
    renderRuns(line, parseAnsi(body, this.styles[i] ?? PLAIN).runs);
    if (hits) highlight(line, hits);
    return line;
  }

  destroy() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.resizer.disconnect();
  }
}

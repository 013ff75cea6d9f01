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

    this.scroller.addEventListener("scroll", () => this.onScroll(), { passive: true });
    this.scroller.addEventListener("keydown", (event) => this.onKey(event));
    this.jump.addEventListener("click", () => {
      this.scrollToEnd();
      this.scroller.focus();
    });
    this.resizer = new ResizeObserver(() => this.schedule());
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
    if (this.lines.length > MAX_LINES) {
      const excess = this.lines.length - MAX_LINES + Math.floor(MAX_LINES / 10);
      this.lines.splice(0, excess);
      this.styles.splice(0, excess);
      this.dropped += excess;
      if (!this.stick) this.scroller.scrollTop -= excess * this.lineHeight;
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
    this.sizer.style.height = `${n * lineHeight}px`;
    this.sizer.style.minWidth = `calc(${Math.min(this.maxChars, 100_000)}ch + 2 * var(--log-pad))`;
    this.empty.hidden = n > 0;
    if (this.stick) this.scroller.scrollTop = this.scroller.scrollHeight;
    const top = this.scroller.scrollTop;
    const height = this.scroller.clientHeight;
    const first = Math.max(0, Math.floor(top / lineHeight) - OVERSCAN);
    const last = Math.min(n, Math.ceil((top + height) / lineHeight) + OVERSCAN);
    if (this.dirty || first !== this.first || last !== this.last) {
      const fragment = document.createDocumentFragment();
      for (let i = first; i < last; i++) fragment.append(this.renderLine(i));
      this.rows.replaceChildren(fragment);
      this.rows.style.transform = `translateY(${first * lineHeight}px)`;
      this.first = first;
      this.last = last;
      this.dirty = false;
    }
    this.updateJump();
    this.onChange();
  }

  renderLine(i) {
    const text = this.lines[i];
    const line = element("div", "ln");
    const { stamp, tag, body } = this.parts(text);
    const kind = tag ? tag.slice(1, -2) : this.stream !== "combined" ? this.stream : "";
    if (kind) line.dataset.stream = kind;
    if (stamp) line.append(element("span", "ln-ts", stamp));
    if (tag) line.append(element("span", "ln-tag", tag));
    renderRuns(line, parseAnsi(body, this.styles[i] ?? PLAIN).runs);
    return line;
  }

  destroy() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.resizer.disconnect();
  }
}

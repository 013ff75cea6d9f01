// ANSI escape sequences in log text: SGR colours and attributes become styled spans,
// every other control sequence (cursor moves, erase line, titles) is dropped.

/** A text style: fg/bg are null, a palette index 0-255, or an "rgb(...)" string. */
export const PLAIN = Object.freeze({
  fg: null,
  bg: null,
  bold: false,
  dim: false,
  italic: false,
  underline: false,
  inverse: false,
  strike: false,
});

// CSI (ESC [ params intermediates final), OSC (ESC ] ... BEL or ST), or another escape
// (ESC 7, ESC ( B). A lone ESC left over is removed with the other controls.
const ESCAPE = /\x1b(?:\[([0-?]*)[ -/]*([@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[ -/]*[0-~])/g;
// Other C0 controls (tab stays) would show as boxes or nothing at all.
const CONTROLS = /[\x00-\x08\x0b-\x1f\x7f]/g;

function extendedColour(codes, i) {
  // 38;5;n or 38;2;r;g;b (the same after 48): returns [colour, codes consumed].
  if (codes[i + 1] === 5 && codes.length > i + 2) return [codes[i + 2] & 255, 3];
  if (codes[i + 1] === 2 && codes.length > i + 4) {
    const [r, g, b] = codes.slice(i + 2, i + 5).map((c) => Math.min(255, c));
    return [`rgb(${r}, ${g}, ${b})`, 5];
  }
  return [undefined, codes.length - i];
}

/** The style after applying an SGR parameter string (`1;31`) to `style`. */
export function applySgr(style, params) {
  const codes = params === "" ? [0] : params.split(/[;:]/).map((p) => (p === "" ? 0 : Number.parseInt(p, 10)));
  const next = { ...style };
  for (let i = 0; i < codes.length; i++) {
    const code = codes[i];
    if (code === 0) Object.assign(next, PLAIN);
    else if (code === 1) next.bold = true;
    else if (code === 2) next.dim = true;
    else if (code === 3) next.italic = true;
    else if (code === 4) next.underline = true;
    else if (code === 7) next.inverse = true;
    else if (code === 9) next.strike = true;
    else if (code === 22) next.bold = next.dim = false;
    else if (code === 23) next.italic = false;
    else if (code === 24) next.underline = false;
    else if (code === 27) next.inverse = false;
    else if (code === 29) next.strike = false;
    else if (code >= 30 && code <= 37) next.fg = code - 30;
    else if (code === 39) next.fg = null;
    else if (code >= 40 && code <= 47) next.bg = code - 40;
    else if (code === 49) next.bg = null;
    else if (code >= 90 && code <= 97) next.fg = code - 90 + 8;
    else if (code >= 100 && code <= 107) next.bg = code - 100 + 8;
    else if (code === 38 || code === 48) {
      const [colour, used] = extendedColour(codes, i);
      if (colour !== undefined) next[code === 38 ? "fg" : "bg"] = colour;
      i += used - 1;
    }
  }
  return isPlain(next) ? PLAIN : next;
}

export function isPlain(style) {
  for (const key in PLAIN) if (style[key] !== PLAIN[key]) return false;
  return true;
}

/**
 * Split `text` into [{text, style}] runs, starting in `style`; also returns the style in
 * force at the end, so that colour carried over a line break continues on the next line.
 */
export function parseAnsi(text, style = PLAIN) {
  const runs = [];
  let last = 0;
  let current = style;
  const push = (chunk) => {
    const clean = chunk.replace(CONTROLS, "");
    if (clean) runs.push({ text: clean, style: current });
  };
  if (!text.includes("\x1b")) {
    push(text);
    return { runs, end: current };
  }
  ESCAPE.lastIndex = 0;
  for (let m = ESCAPE.exec(text); m !== null; m = ESCAPE.exec(text)) {
    push(text.slice(last, m.index));
    if (m[2] === "m" && /^[\d;:]*$/.test(m[1])) current = applySgr(current, m[1]);
    last = m.index + m[0].length;
  }
  push(text.slice(last));
  return { runs, end: current };
}

function cssColour(colour) {
  if (colour === null) return null;
  if (typeof colour === "string") return colour;
  if (colour < 16) return `var(--ansi-${colour})`;
  if (colour < 232) {
    const n = colour - 16;
    const level = (v) => (v === 0 ? 0 : 55 + v * 40);
    return `rgb(${level(Math.floor(n / 36))}, ${level(Math.floor(n / 6) % 6)}, ${level(n % 6)})`;
  }
  const grey = 8 + (colour - 232) * 10;
  return `rgb(${grey}, ${grey}, ${grey})`;
}

/** Append the runs to `parent` as text nodes and styled spans (never as HTML). */
export function renderRuns(parent, runs) {
  for (const { text, style } of runs) {
    if (style === PLAIN) {
      parent.append(text);
      continue;
    }
    const span = document.createElement("span");
    span.textContent = text;
    let fg = cssColour(style.fg);
    let bg = cssColour(style.bg);
    if (style.inverse) [fg, bg] = [bg ?? "var(--log-bg)", fg ?? "var(--log-fg)"];
    if (fg) span.style.color = fg;
    if (bg) span.style.backgroundColor = bg;
    if (style.bold) span.style.fontWeight = "700";
    if (style.dim) span.style.opacity = "0.7";
    if (style.italic) span.style.fontStyle = "italic";
    const lines = [style.underline && "underline", style.strike && "line-through"].filter(Boolean);
    if (lines.length) span.style.textDecoration = lines.join(" ");
    parent.append(span);
  }
}

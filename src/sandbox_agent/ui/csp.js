// xterm.js under the inspector's strict Content-Security-Policy (style-src 'self').
//
// xterm styles its screen from script in two ways a strict policy refuses: it fills <style>
// elements with text (theme, cell size) and it sets `style` attributes with setAttribute
// (24-bit colours). Styling from script through the CSSOM is never restricted by CSP, so both
// are carried out that way instead: the text of a script-made <style> goes to a constructed
// stylesheet adopted by the document, and a `style` attribute set from script goes to
// `element.style.cssText`. What the policy is there for stays refused: style in markup (an
// injected <style> element or style="..." attribute parsed from HTML).

let installed = false;

// A namespace of our own: an element in it is no HTML <style>, so inserting it is not an
// inline style to the browser (even an empty <style> of any type would be reported).
const ADOPTED = "urn:sandbox-agent:adopted-style";

/**
 * What a script gets for document.createElement("style"): an inert element whose `sheet` and
 * `textContent` are a constructed stylesheet adopted by the document.
 */
function adoptedStyle(document) {
  const styleElement = document.createElementNS(ADOPTED, "style");
  let sheet = null;
  let text = "";
  const ensure = () => {
    if (!sheet) {
      sheet = new CSSStyleSheet();
      document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
    }
    return sheet;
  };
  Object.defineProperty(styleElement, "sheet", { configurable: true, get: ensure });
  Object.defineProperty(styleElement, "textContent", {
    configurable: true,
    get: () => text,
    set: (value) => {
      text = String(value ?? "");
      ensure().replaceSync(text);
    },
  });
  const remove = Element.prototype.remove.bind(styleElement);
  styleElement.remove = () => {
    if (sheet) document.adoptedStyleSheets = document.adoptedStyleSheets.filter((s) => s !== sheet);
    sheet = null;
    remove();
  };
  return styleElement;
}

/** Install the two shims once; the inspector's own code sets neither, so nothing else changes. */
export function allowScriptStyles() {
  if (installed) return;
  installed = true;
  const createElement = Document.prototype.createElement;
  const setAttribute = Element.prototype.setAttribute;
  Document.prototype.createElement = function (tagName, options) {
    if (String(tagName).toLowerCase() === "style") return adoptedStyle(this);
    return createElement.call(this, tagName, options);
  };
  Element.prototype.setAttribute = function (name, value) {
    if (String(name).toLowerCase() === "style" && this.style) this.style.cssText = String(value);
    else setAttribute.call(this, name, value);
  };
}

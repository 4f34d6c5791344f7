// The page's few DOM helpers, in one place.

/** The element with this id. */
export const $ = (id) => document.getElementById(id);

/** A new element with properties set and children appended. */
export function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

/** A list item holding ``children``. */
export const item = (...children) => el("li", {}, ...children);

/** Sets a node's text only when it changed (no needless layout work on 10 updates a second). */
export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

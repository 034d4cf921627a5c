// Build DOM nodes. Text goes in through text nodes and attributes, never through innerHTML, so
// a value from the API is always shown as text and never parsed as markup (it is escaped by
// construction).

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) {
      element.addEventListener(name.slice(2), value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  appendChildren(element, children);
  return element;
}

export function appendChildren(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replaceChildren(element, ...children) {
  element.replaceChildren();
  appendChildren(element, children);
}

// A table with a header row. `rows` contains arrays of cells (text or nodes).
export function table(headers, rows, emptyText = "None yet.") {
  if (rows.length === 0) return h("p", { class: "muted" }, emptyText);
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, headers.map((text) => h("th", {}, text)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((cell) => h("td", {}, cell))))),
  );
}

export function tags(names) {
  if (!names || names.length === 0) return h("span", { class: "muted" }, "none");
  return names.map((name) => h("span", { class: "tag" }, name));
}

// Split "a, b c" into ["a", "b", "c"].
export function splitList(text) {
  return text.split(/[\s,]+/).filter((item) => item !== "");
}

export function formatTime(value) {
  if (!value) return "never";
  return new Date(value).toLocaleString();
}

// A form whose submit calls `onSubmit(values)`. `fields` are [name, label, attributes].
export function inlineForm(fields, submitText, onSubmit, attributes = {}) {
  const form = h(
    "form",
    { class: "inline", ...attributes },
    fields.map(([name, label, extra]) => h("label", {}, label, field(name, extra ?? {}))),
    h("button", { type: "submit" }, submitText),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = Object.fromEntries(new FormData(form).entries());
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await onSubmit(values, form);
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

function field(name, extra) {
  if (extra.options) {
    const { options, ...rest } = extra;
    return h(
      "select",
      { name, ...rest },
      options.map(([value, text]) => h("option", { value }, text)),
    );
  }
  return h("input", { name, type: "text", ...extra });
}

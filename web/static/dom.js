// Building elements safely: text always goes in as text nodes, never as markup.

const PROPERTIES = new Set(["value", "checked", "disabled", "hidden", "type", "href", "open"]);

// h("button", {class: "x", testid: "btn", onclick: fn}, "Label", child...)
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") element.className = value;
    else if (key === "text") element.textContent = value;
    else if (key === "testid") element.dataset.testid = value;
    else if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (PROPERTIES.has(key)) element[key] = value;
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  // append() turns strings into text nodes, so server text can never become markup.
  element.append(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return element;
}

// Sets text only when it changed, so a once-a-second tick does not churn the DOM.
export function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

export function show(element, visible) {
  element.hidden = !visible;
}

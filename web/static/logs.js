// Log panels: one per daemon, opened from its card. Past lines come from the API, new ones
// over the WebSocket while the panel is open.

import { getJSON, url } from "./api.js";
import { h, setText, show } from "./dom.js";
import { clockTime } from "./time.js";

const MAX_LINES = 2000; // lines kept in the page per panel; older ones are removed
const LEVELS = ["debug", "info", "warning", "error"];
const LEVEL_CHOICES = [["debug", "All levels"], ["info", "Info and above"], ["warning", "Warnings and errors"], ["error", "Errors only"]];

// Unknown levels (e.g. "critical") rank above error, so no filter hides them.
function rank(level) {
  const index = LEVELS.indexOf(String(level).toLowerCase());
  return index < 0 ? LEVELS.length : index;
}

export class LogPanels {
  constructor(container, live) {
    this.container = container;
    this.live = live;
    this.panels = new Map();
  }

  open(name, title) {
    let panel = this.panels.get(name);
    if (!panel) {
      panel = new LogPanel(name, title || name, this.live, () => this.close(name));
      this.panels.set(name, panel);
      this.container.prepend(panel.element);
      panel.start();
    }
    panel.element.scrollIntoView({ behavior: "smooth", block: "start" });
  }

  close(name) {
    this.panels.get(name)?.destroy();
    this.panels.delete(name);
  }

  receive(daemon, line) {
    this.panels.get(daemon)?.deliver([line]);
  }

  // After a reconnect: fetch what was logged while the socket was down.
  reconnected() {
    for (const panel of this.panels.values()) panel.catchUp();
  }

  gap(dropped) {
    for (const panel of this.panels.values()) panel.deliver([{ gap: dropped }]);
  }
}

class LogPanel {
  constructor(name, title, live, onClose) {
    this.name = name;
    this.live = live;
    this.entries = []; // {key, li, level, text} in display order, oldest first
    this.seen = new Set(); // keys of lines shown or buffered: API and socket lines overlap
    this.held = null; // socket lines that arrive while the API is asked: shown after its answer
    this.buffer = []; // lines received while paused
    this.queue = []; // lines waiting for the next frame
    this.frame = null;
    this.paused = false;
    this.follow = true; // keep the newest line in view until the person scrolls up
    this.lastAt = null;
    this.build(title, onClose);
  }

  build(title, onClose) {
    const path = `api/daemons/${encodeURIComponent(this.name)}/logs/download`;
    this.level = h("select", { testid: "log-level", "aria-label": "Level", onchange: () => this.filterAll() },
      LEVEL_CHOICES.map(([value, label]) => h("option", { value, text: label })));
    this.search = h("input", { type: "search", testid: "log-search", placeholder: "Search these lines", "aria-label": "Search", oninput: () => this.filterAll() });
    this.pauseButton = h("button", { type: "button", testid: "log-pause", text: "Pause", "aria-pressed": "false", onclick: () => this.togglePause() });
    this.newCount = h("span", { class: "new-count", testid: "log-new", hidden: true });
    this.list = h("ol", { class: "log-lines", testid: "log-lines", role: "log", onscroll: () => this.scrolled() });
    this.empty = h("p", { class: "empty", text: "No log lines yet." });
    this.jump = h("button", { type: "button", class: "jump-latest", text: "↓ Latest", hidden: true, onclick: () => this.scrollToEnd() });
    this.element = h("section", { class: "panel log-panel", testid: `log-panel-${this.name}`, "aria-label": `${title} log` },
      h("div", { class: "log-head" },
        h("h2", { text: `${title}: log` }),
        h("div", { class: "log-controls" },
          this.level, this.search, this.pauseButton, this.newCount,
          h("a", { class: "button quiet", testid: "log-download", href: url(path).href, download: `${this.name}.log`, text: "Download" }),
          h("button", { type: "button", class: "quiet", testid: "log-close", text: "Close", onclick: onClose }))),
      h("div", { class: "log-body" }, this.list, this.empty, this.jump));
  }

  start() {
    this.live.subscribeLogs(this.name);
    this.fetch("limit=200");
  }

  catchUp() {
    this.fetch(this.lastAt === null ? "limit=200" : `since=${this.lastAt}&limit=1000`);
  }

  async fetch(query) {
    this.held = this.held || [];
    try {
      const { lines } = await getJSON(`api/daemons/${encodeURIComponent(this.name)}/logs?${query}`);
      this.deliver(lines.reverse(), true); // the API answers newest first
    } catch (error) {
      this.deliver([{ notice: `Could not load past lines: ${error.message}` }], true);
    }
    const held = this.held;
    this.held = null;
    this.deliver(held);
  }

  // Lines in time order, from the socket or (fromApi) the API.
  deliver(lines, fromApi = false) {
    if (this.held && !fromApi) return this.held.push(...lines);
    const fresh = lines.filter((line) => {
      if (line.gap !== undefined || line.notice !== undefined) return true;
      const key = `${line.at}|${line.level}|${line.message}`;
      if (this.seen.has(key)) return false;
      this.seen.add(key);
      line.key = key;
      this.lastAt = Math.max(this.lastAt ?? 0, line.at);
      return true;
    });
    if (!this.paused) return this.render(fresh);
    this.buffer.push(...fresh);
    setText(this.newCount, `${this.buffer.length} new`);
    show(this.newCount, this.buffer.length > 0);
  }

  // Lines are drawn once per frame: a burst of hundreds costs one layout, not hundreds.
  render(lines) {
    this.queue.push(...lines);
    // Only the newest MAX_LINES can stay on the page anyway.
    for (const gone of this.queue.splice(0, Math.max(0, this.queue.length - MAX_LINES))) this.seen.delete(gone.key);
    if (this.queue.length && !this.frame) this.frame = requestAnimationFrame(() => this.draw());
  }

  draw() {
    const lines = this.queue;
    this.queue = [];
    this.frame = null;
    const fragment = document.createDocumentFragment();
    for (const line of lines) {
      const entry = line.key ? this.lineEntry(line) : this.markEntry(line);
      this.entries.push(entry);
      this.filter(entry);
      fragment.append(entry.li);
    }
    this.list.append(fragment);
    for (const old of this.entries.splice(0, Math.max(0, this.entries.length - MAX_LINES))) {
      old.li.remove();
      this.seen.delete(old.key);
    }
    show(this.empty, false);
    if (this.follow) this.scrollToEnd();
  }

  lineEntry(line) {
    const fields = Object.entries(line.fields || {})
      .map(([key, value]) => `${key}=${typeof value === "string" ? value : JSON.stringify(value)}`)
      .join(" ");
    const level = String(line.level).toLowerCase();
    const li = h("li", { class: `log-line level-${rank(level) < LEVELS.length ? level : "other"}`, testid: "log-line" },
      h("time", { text: clockTime(line.at) }),
      h("span", { class: "level", text: level }),
      h("span", { class: "message", text: line.message }),
      fields ? h("span", { class: "fields", text: fields }) : null);
    return { key: line.key, li, level, text: `${line.message} ${fields}`.toLowerCase() };
  }

  // Gaps and load failures are shown in place, whatever the filter.
  markEntry(mark) {
    const text = mark.gap !== undefined
      ? `${mark.gap} lines or events were dropped here: the page fell behind.`
      : mark.notice;
    return { key: null, li: h("li", { class: "log-mark", text }), level: null, text: "" };
  }

  filter(entry) {
    if (entry.level === null) return;
    const query = this.search.value.trim().toLowerCase();
    entry.li.hidden = rank(entry.level) < rank(this.level.value) || (query !== "" && !entry.text.includes(query));
  }

  filterAll() {
    for (const entry of this.entries) this.filter(entry);
    if (this.follow) this.scrollToEnd();
  }

  togglePause() {
    this.paused = !this.paused;
    setText(this.pauseButton, this.paused ? "Resume" : "Pause");
    this.pauseButton.setAttribute("aria-pressed", String(this.paused));
    if (this.paused) return;
    const buffered = this.buffer;
    this.buffer = [];
    show(this.newCount, false);
    this.render(buffered);
  }

  scrolled() {
    const list = this.list;
    this.follow = list.scrollHeight - list.scrollTop - list.clientHeight < 24;
    show(this.jump, !this.follow);
  }

  scrollToEnd() {
    this.list.scrollTop = this.list.scrollHeight;
    this.follow = true;
    show(this.jump, false);
  }

  destroy() {
    cancelAnimationFrame(this.frame);
    this.live.unsubscribeLogs(this.name);
    this.element.remove();
  }
}

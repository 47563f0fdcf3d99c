// One card per daemon: its state, live status and countdowns, its commands and switches.

import { h, setText, show } from "./dom.js";
import { clockTime, countdown, now, span } from "./time.js";

// Which command a person may give in which state; "wake" also needs the daemon to be asleep.
const COMMANDS = [
  { action: "start", label: "Start", pending: "Starting…", states: ["stopped", "fatal", "backoff"] },
  { action: "stop", label: "Stop", pending: "Stopping…", states: ["starting", "running", "backoff", "fatal"] },
  { action: "restart", label: "Restart", pending: "Restarting…", states: ["running", "starting"] },
  { action: "wake", label: "Run now", pending: "Waking…", states: ["running"], asleep: true },
];

const ACTIVE = ["starting", "running", "stopping"];

// The icon beside every "problem" word: with the word, a problem is not told by colour alone.
const warningIcon = () => h("span", { "aria-hidden": "true", text: "⚠\uFE0E " });

const SWITCHES = [
  { field: "enabled", label: "Enabled", testid: "toggle-enabled" },
  { field: "auto_start", label: "Auto-start", testid: "toggle-autostart" },
];

export class Card {
  // actions: command(name, action), setFlag(name, field, value): promises that throw ApiError;
  // openConfig(name, title), openLogs(name, title).
  constructor(daemon, actions) {
    this.name = daemon.name;
    this.actions = actions;
    this.pending = null; // the command whose request is in flight
    this.busySwitches = new Set();
    this.build();
    this.render(daemon);
  }

  build() {
    const part = (tag, testid, className) => h(tag, { testid, class: className });
    this.title = h("h2", { class: "card-title" });
    this.badge = part("span", "state-badge", "badge");
    this.backoff = part("span", "backoff-countdown", "countdown");
    this.message = part("span", "status-message");
    this.problemLabel = h("strong", { class: "problem-label", testid: "problem-label" }, warningIcon(), "Problem:");
    this.statusLine = h("p", { class: "status" }, this.problemLabel, this.message);
    const retrying = "The status line reports a problem; the daemon keeps retrying by itself";
    this.problemBadge = h("span", { class: "badge problem-badge", testid: "problem-badge", title: retrying }, warningIcon(), "problem");
    this.jobLink = h("a", { testid: "job-link", text: "View job" });
    this.jobType = part("span", "job-type", "job-type");
    this.job = h("p", { class: "job" }, this.jobLink, " ", this.jobType);
    this.bar = h("div", { class: "bar" });
    this.progressText = h("span", { class: "progress-text" });
    this.progressBar = h("div", { testid: "progress", class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100 }, this.bar);
    this.progress = h("div", { class: "progress-row" }, this.progressBar, this.progressText);
    this.sleeping = part("p", "sleeping", "sleeping");
    this.heartbeat = part("span", "heartbeat");
    this.uptime = part("span", "uptime");
    this.restarts = part("span", "restarts");
    this.errorText = part("span", "last-error");
    this.lastError = h("p", { class: "last-error" }, h("strong", { text: "Last error: " }), this.errorText);
    this.failure = h("p", { testid: "card-error", class: "card-error", role: "alert", hidden: true });
    this.buttons = COMMANDS.map((command) =>
      h("button", { type: "button", testid: `btn-${command.action}`, text: command.label, onclick: () => this.run(command) }),
    );
    this.switches = SWITCHES.map((entry) => {
      const input = h("input", { type: "checkbox", role: "switch", testid: entry.testid, onchange: () => this.flip(entry.field, input) });
      return { ...entry, input };
    });
    const open = (testid, label, handler) =>
      h("button", { type: "button", class: "quiet", testid, text: label, onclick: () => handler(this.name, this.data.title) });

    this.element = h(
      "article",
      { class: "card", testid: `card-${this.name}` },
      h("header", { class: "card-head" },
        h("div", { class: "card-heading" }, this.title, h("span", { class: "card-name", text: this.name })),
        h("div", { class: "card-state" }, h("span", { class: "card-badges" }, this.problemBadge, this.badge), this.backoff)),
      h("p", { class: "stale-note", testid: "stale-note", text: "May be out of date" }),
      this.statusLine,
      this.job,
      this.progress,
      this.sleeping,
      h("p", { class: "facts" }, this.heartbeat, this.uptime, this.restarts),
      this.lastError,
      this.failure,
      h("div", { class: "actions" }, this.buttons),
      h("footer", { class: "card-foot" },
        this.switches.map((s) => h("label", { class: "switch" }, s.input, h("span", { text: s.label }))),
        h("span", { class: "card-links" },
          open("open-logs", "Logs", this.actions.openLogs),
          open("open-config", "Settings", this.actions.openConfig))),
    );
  }

  render(daemon) {
    this.data = daemon;
    this.element.dataset.state = daemon.state;
    this.badge.dataset.state = daemon.state;
    setText(this.title, daemon.title || daemon.name);
    setText(this.badge, daemon.state);
    const problem = Boolean(daemon.problem);
    this.statusLine.classList.toggle("problem", problem);
    show(this.problemLabel, problem);
    show(this.problemBadge, problem);
    setText(this.message, daemon.message || "");
    show(this.statusLine, Boolean(daemon.message) || problem);

    show(this.job, Boolean(daemon.job_id));
    if (daemon.job_id) {
      this.jobLink.href = `jobs/${encodeURIComponent(daemon.job_id)}`;
      setText(this.jobType, daemon.job_type || "");
    }

    const hasProgress = typeof daemon.progress === "number";
    show(this.progress, hasProgress);
    if (hasProgress) {
      const percent = Math.min(100, Math.max(0, daemon.progress));
      this.bar.style.width = `${percent}%`;
      this.progressBar.setAttribute("aria-valuenow", String(percent));
      setText(this.progressText, `${Math.round(percent)}%`);
    }

    setText(this.restarts, daemon.restarts === 1 ? "1 restart" : `${daemon.restarts ?? 0} restarts`);
    show(this.lastError, Boolean(daemon.last_error));
    setText(this.errorText, daemon.last_error || "");

    for (const s of this.switches) {
      if (!this.busySwitches.has(s.field)) s.input.checked = Boolean(daemon[s.field]);
    }
    this.updateButtons();
    this.tick();
  }

  // The parts that age by themselves: countdowns, heartbeat age, uptime.
  tick() {
    const d = this.data;
    const t = now();
    const restartIn = d.state === "backoff" && d.next_restart_at ? d.next_restart_at - t : null;
    show(this.backoff, restartIn !== null);
    if (restartIn !== null) setText(this.backoff, restartIn > 0 ? `restart in ${span(Math.ceil(restartIn))}` : "restarting…");

    show(this.sleeping, Boolean(d.sleeping_until));
    if (d.sleeping_until) {
      const reason = d.sleep_reason ? ` — ${d.sleep_reason}` : "";
      setText(this.sleeping, `Sleeping until ${clockTime(d.sleeping_until)} · ${countdown(d.sleeping_until - t)} left${reason}`);
    }

    // A heartbeat only says something about a daemon that should be beating.
    const beating = ACTIVE.includes(d.state) && d.heartbeat_at;
    show(this.heartbeat, Boolean(beating));
    if (beating) setText(this.heartbeat, `heartbeat ${span(t - d.heartbeat_at)} ago`);

    const up = d.state === "running" && d.started_at;
    show(this.uptime, Boolean(up));
    if (up) setText(this.uptime, `up ${span(t - d.started_at)}`);
  }

  updateButtons() {
    const d = this.data;
    COMMANDS.forEach((command, index) => {
      const button = this.buttons[index];
      const allowed = command.states.includes(d.state) && (!command.asleep || Boolean(d.sleeping_until));
      button.disabled = this.pending !== null || !allowed;
      setText(button, this.pending === command ? command.pending : command.label);
    });
  }

  async run(command) {
    this.pending = command;
    this.fail(null);
    this.updateButtons();
    try {
      await this.actions.command(this.name, command.action);
    } catch (error) {
      this.fail(`${command.label} failed: ${error.message}`);
    } finally {
      this.pending = null;
      this.updateButtons();
    }
  }

  async flip(field, input) {
    const value = input.checked;
    this.busySwitches.add(field);
    input.disabled = true;
    this.fail(null);
    try {
      await this.actions.setFlag(this.name, field, value);
    } catch (error) {
      input.checked = !value;
      this.fail(`Could not change the setting: ${error.message}`);
    } finally {
      this.busySwitches.delete(field);
      input.disabled = false;
    }
  }

  fail(message) {
    show(this.failure, Boolean(message));
    setText(this.failure, message || "");
  }
}

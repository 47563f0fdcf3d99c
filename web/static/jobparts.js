// What the jobs list and a job's page share: the status badge, the progress bar, the Cancel
// button, and how a job's numbers and times are worded.

import { sendJSON } from "./api.js";
import { h, setText, show } from "./dom.js";
import { isActive } from "./jobstore.js";
import { clockTime, now, span } from "./time.js";

export function statusBadge() {
  return h("span", { class: "badge job-badge", testid: "job-status" });
}

export function renderStatus(badge, job) {
  badge.dataset.status = job.status;
  setText(badge, job.status);
}

export class Progress {
  constructor() {
    this.bar = h("div", { class: "bar" });
    this.meter = h("div", { class: "progress", testid: "job-progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100 }, this.bar);
    this.text = h("span", { class: "progress-text" });
    this.element = h("div", { class: "progress-row" }, this.meter, this.text);
  }

  // Returns whether the job has anything to show: a progress, a count of items.
  render(job) {
    const known = typeof job.progress === "number";
    const percent = known ? Math.min(100, Math.max(0, job.progress)) : 0;
    show(this.meter, known);
    this.bar.style.width = `${percent}%`;
    if (known) this.meter.setAttribute("aria-valuenow", String(percent));
    const items = itemsText(job);
    setText(this.text, [known ? `${Math.round(percent)}%` : "", items].filter(Boolean).join(" · "));
    return known || items !== "";
  }
}

export class CancelButton {
  // answered(job): the job as the answer to the request has it (it carries no seq).
  constructor(answered) {
    this.answered = answered;
    this.pending = null; // the id of the job whose cancel request is in flight
    this.button = h("button", { type: "button", testid: "job-cancel", text: "Cancel", onclick: () => this.cancel() });
    this.note = h("p", { class: "job-cancel-note", testid: "job-cancel-note", role: "status", hidden: true });
    this.element = h("div", { class: "job-actions" }, this.button, this.note);
  }

  render(job) {
    this.job = job;
    show(this.button, isActive(job));
    this.update();
  }

  // A job already asked to stop waits for the other system: asking again changes nothing.
  update() {
    const cancelling = this.pending === this.job.id || this.job.status === "cancelling";
    this.button.disabled = cancelling;
    setText(this.button, cancelling ? "Cancelling…" : "Cancel");
    show(this.element, !this.button.hidden || !this.note.hidden);
  }

  async cancel() {
    const job = this.job;
    if (!window.confirm(`Cancel the ${job.type} job “${job.key}”?`)) return;
    this.pending = job.id;
    this.say(null);
    this.update();
    try {
      const answer = await sendJSON("POST", `api/jobs/${encodeURIComponent(job.id)}/cancel`);
      if (answer.job) this.answered(answer.job);
      if (!answer.cancelled && this.job.id === job.id) this.say(`Not cancelled: ${answer.reason || "Warden gave no reason"}.`);
    } catch (error) {
      if (this.job.id === job.id) this.say(`Cancel failed: ${error.message}`);
    } finally {
      this.pending = null;
      this.update();
    }
  }

  say(text) {
    show(this.note, Boolean(text));
    setText(this.note, text || "");
  }
}

// "100 / 250", or "" when the job counts no items.
export function itemsText(job) {
  if (typeof job.items_total === "number") return `${job.items_done ?? 0} / ${job.items_total}`;
  return typeof job.items_done === "number" ? `${job.items_done} done` : "";
}

// "attempt 2 of 3", for a job that may be retried and has started.
export function attemptText(job) {
  return job.max_attempts > 1 && job.attempt > 0 ? `attempt ${job.attempt} of ${job.max_attempts}` : "";
}

export function retryText(job) {
  return job.retry_at ? `retrying at ${clockTime(job.retry_at)}` : "";
}

// Seconds it ran (so far, while active); null before it started.
export function duration(job) {
  if (!job.started_at) return null;
  return (job.finished_at ?? now()) - job.started_at;
}

// "elapsed 2 min" while it runs; "waiting 5 s" before it starts.
export function elapsedText(job) {
  return job.started_at ? `elapsed ${span(duration(job))}` : `waiting ${span(now() - job.created_at)}`;
}

export function firstLine(text) {
  return String(text ?? "").split("\n")[0];
}

// One job in the jobs list: while active, its progress, attempt, elapsed time and Cancel; once
// ended, its outcome, duration, error and when it finished.

import { h, setText, show } from "./dom.js";
import { attemptText, CancelButton, duration, elapsedText, firstLine, Progress, renderStatus, retryText, statusBadge } from "./jobparts.js";
import { isActive } from "./jobstore.js";
import { dateTime, span } from "./time.js";

export class JobRow {
  // answered(job): a state from the answer to a cancel request.
  constructor(job, answered) {
    const part = (tag, testid, className) => h(tag, { testid, class: className });
    this.type = h("span", { class: "job-type" });
    this.key = h("span", { class: "job-key" });
    this.link = h("a", { class: "job-title", testid: "job-open", href: `jobs/${encodeURIComponent(job.id)}` }, this.type, " ", this.key);
    this.badge = statusBadge();
    this.daemon = part("span", "job-daemon", "job-daemon");
    this.attempt = part("span", "job-attempt");
    this.retry = part("span", "job-retry", "countdown");
    this.elapsed = part("span", "job-elapsed");
    this.duration = part("span", "job-duration");
    this.finished = part("span", "job-finished");
    this.progress = new Progress();
    this.message = part("p", "job-message", "status");
    this.error = part("p", "job-error", "last-error");
    this.cancel = new CancelButton(answered);
    this.element = h("li", { class: "job-row", testid: `job-${job.id}`, "data-job": job.id },
      h("div", { class: "job-row-head" }, this.link, this.badge),
      h("p", { class: "facts" }, this.daemon, this.attempt, this.retry, this.elapsed, this.duration, this.finished),
      this.progress.element,
      this.message,
      this.error,
      this.cancel.element);
    this.render(job);
  }

  render(job) {
    this.job = job;
    const active = isActive(job);
    this.element.dataset.status = job.status;
    setText(this.type, job.type);
    setText(this.key, job.key);
    renderStatus(this.badge, job);
    setText(this.daemon, job.daemon || "no daemon");
    setText(this.attempt, attemptText(job));
    show(this.attempt, active && this.attempt.textContent !== "");
    setText(this.retry, retryText(job));
    show(this.retry, active && this.retry.textContent !== "");
    show(this.finished, !active && Boolean(job.finished_at));
    if (job.finished_at) setText(this.finished, `finished ${dateTime(job.finished_at)}`);
    show(this.progress.element, this.progress.render(job) && active);
    setText(this.message, job.message || "");
    show(this.message, Boolean(job.message));
    setText(this.error, firstLine(job.error));
    show(this.error, Boolean(job.error));
    this.cancel.render(job);
    this.tick();
  }

  // The times that age by themselves.
  tick() {
    const job = this.job;
    const active = isActive(job);
    show(this.elapsed, active);
    if (active) setText(this.elapsed, elapsedText(job));
    const took = active ? null : duration(job);
    show(this.duration, took !== null);
    if (took !== null) setText(this.duration, `took ${span(took)}`);
  }
}

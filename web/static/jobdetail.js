// One job's page (<base>jobs/<id>): every field, the error with its traceback, the result;
// Cancel while it is active. `job` messages keep it current.

import { getJSON } from "./api.js";
import { h, setText, show } from "./dom.js";
import { CancelButton, duration, itemsText, Progress, renderStatus, statusBadge } from "./jobparts.js";
import { isActive } from "./jobstore.js";
import { dateTime, span } from "./time.js";

const at = (time) => (time ? dateTime(time) : "");

// [label, testid suffix, the field's text ("" when not set)]
const FIELDS = [
  ["Type", "type", (job) => job.type],
  ["Key", "key", (job) => job.key],
  ["Daemon", "daemon", (job) => job.daemon],
  ["Status", "status", (job) => job.status],
  ["Items", "items", itemsText],
  ["Attempt", "attempt", (job) => `${job.attempt} of ${job.max_attempts}`],
  ["Retrying at", "retry-at", (job) => at(job.retry_at)],
  ["External id", "external-id", (job) => job.external_id],
  ["Created", "created", (job) => at(job.created_at)],
  ["Started", "started", (job) => at(job.started_at)],
  ["Finished", "finished", (job) => at(job.finished_at)],
  ["Duration", "duration", (job) => (duration(job) === null ? "" : span(duration(job)))],
  ["Updated", "updated", (job) => at(job.updated_at)],
  ["Id", "id", (job) => job.id],
];

export class JobDetail {
  constructor(element, store) {
    this.element = element;
    this.store = store;
    this.id = null; // the job shown, or null while another view is
    this.job = null;
    this.title = element.querySelector("#job-title");
    this.note = element.querySelector("#job-detail-note");
    this.body = element.querySelector("#job-body");
    this.build();
    store.subscribe((job) => {
      if (job.id === this.id) this.render(job);
    });
  }

  build() {
    this.badge = statusBadge();
    this.title.after(this.badge);
    this.progress = new Progress();
    this.message = h("p", { class: "status", testid: "job-message" });
    this.cancel = new CancelButton((answer) => this.store.fromApi(answer));
    this.fields = FIELDS.map(([label, name, text]) => ({ label, text, dd: h("dd", { testid: `job-field-${name}` }) }));
    this.errorText = h("pre", { class: "job-text job-error-text", testid: "job-error" });
    this.traceback = h("pre", { class: "job-text", testid: "job-traceback", tabindex: 0 });
    this.tracebackPart = h("div", { class: "job-part" }, h("h3", { text: "Traceback" }), this.traceback);
    this.errorPart = h("section", { class: "job-part" }, h("h3", { text: "Error" }), this.errorText, this.tracebackPart);
    this.result = h("pre", { class: "job-text", testid: "job-result", tabindex: 0 });
    this.resultPart = h("section", { class: "job-part" }, h("h3", { text: "Result" }), this.result);
    this.body.append(
      this.progress.element,
      this.message,
      this.cancel.element,
      h("dl", { class: "job-fields" }, this.fields.map((field) => h("div", {}, h("dt", { text: field.label }), field.dd))),
      this.errorPart,
      this.resultPart,
    );
  }

  // id: the job to show, or null when another view is shown.
  show(id) {
    if (id === this.id) return;
    this.id = id;
    this.job = null;
    this.cancel.say(null); // a note about another job
    if (id === null) return;
    const known = this.store.get(id);
    if (known) this.render(known);
    else this.say("Job", "Loading…");
    this.load();
  }

  // Also after a snapshot that replaced the state: a job that ended meanwhile is not in it.
  async load() {
    const id = this.id;
    if (id === null) return;
    try {
      const job = await getJSON(`api/jobs/${encodeURIComponent(id)}`);
      if (id === this.id) this.store.fromApi(job); // shown through the store, unless it has newer
    } catch (error) {
      if (id !== this.id) return;
      if (error.status === 404) this.say("No such job", `No job has the id “${id}”.`);
      else if (!this.job) this.say("Job", `Could not load the job: ${error.message}`);
    }
  }

  say(title, note) {
    this.job = null;
    setText(this.title, title);
    setText(this.note, note);
    show(this.note, true);
    show(this.badge, false);
    show(this.body, false);
  }

  render(job) {
    this.job = job;
    setText(this.title, `${job.type} · ${job.key}`);
    show(this.note, false);
    show(this.badge, true);
    show(this.body, true);
    renderStatus(this.badge, job);
    show(this.progress.element, this.progress.render(job));
    setText(this.message, job.message || "");
    show(this.message, Boolean(job.message));
    this.cancel.render(job);
    this.fill();

    setText(this.errorText, job.error || "");
    show(this.errorText, Boolean(job.error));
    setText(this.traceback, job.traceback || "");
    show(this.tracebackPart, Boolean(job.traceback));
    show(this.errorPart, Boolean(job.error || job.traceback));
    const hasResult = job.result !== null && job.result !== undefined;
    setText(this.result, hasResult ? JSON.stringify(job.result, null, 2) : "");
    show(this.resultPart, hasResult);
  }

  fill() {
    for (const field of this.fields) setText(field.dd, String(field.text(this.job) ?? "") || "—");
  }

  // An active job's duration ages by itself.
  tick() {
    if (this.job && !this.element.hidden && isActive(this.job)) this.fill();
  }
}

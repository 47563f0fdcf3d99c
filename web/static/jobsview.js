// The Jobs view: active jobs and recently ended ones, filtered by status, type and daemon. The
// newest jobs come from the API; then `job` messages keep every row current.

import { getJSON } from "./api.js";
import { h, setText, show } from "./dom.js";
import { JobRow } from "./jobrow.js";
import { isActive } from "./jobstore.js";

const LIMIT = 50; // jobs asked of the API
const KEEP_RECENT = 100; // ended jobs listed; the longest-ended go first
const FILTERS = ["status", "type", "daemon"];

export class JobsView {
  constructor(element, store) {
    this.element = element;
    this.store = store;
    this.form = element.querySelector("#job-filters");
    this.error = element.querySelector("#jobs-error");
    this.lists = {
      active: { list: element.querySelector("#jobs-active-list"), empty: element.querySelector("#jobs-active-empty"), count: element.querySelector("#jobs-active-count") },
      recent: { list: element.querySelector("#jobs-recent-list"), empty: element.querySelector("#jobs-recent-empty"), count: element.querySelector("#jobs-recent-count") },
    };
    this.suggestions = {
      type: { list: element.querySelector("#job-types"), values: new Set() },
      daemon: { list: element.querySelector("#job-daemons"), values: new Set() },
    };
    this.filter = this.filters();
    this.rows = new Map(); // id -> JobRow, for the jobs listed
    // Ended jobs created before this are listed only if they already were (they ended while
    // listed): the API's answer covers the newest only. Until the first answer, only active jobs.
    this.since = Infinity;
    this.asked = 0; // requests made: only the answer to the latest is used
    this.loading = false;
    this.typing = null;
    store.subscribe((job) => this.changed(job));
    this.form.addEventListener("submit", (event) => event.preventDefault());
    this.form.addEventListener("input", () => {
      clearTimeout(this.typing);
      this.typing = setTimeout(() => this.refilter(), 300);
    });
  }

  filters() {
    const data = new FormData(this.form);
    return Object.fromEntries(FILTERS.map((name) => [name, String(data.get(name) || "").trim()]));
  }

  matches(job) {
    return FILTERS.every((name) => !this.filter[name] || String(job[name] ?? "") === this.filter[name]);
  }

  // At start, after a snapshot that replaced the state, and when the filters change.
  async load() {
    const asked = ++this.asked;
    const query = new URLSearchParams({ limit: String(LIMIT) });
    for (const [name, value] of Object.entries(this.filter)) if (value) query.set(name, value);
    this.loading = true;
    this.counts();
    try {
      const { jobs } = await getJSON(`api/jobs?${query}`);
      if (asked !== this.asked) return;
      this.since = jobs.length < LIMIT ? -Infinity : Math.min(...jobs.map((job) => job.created_at));
      show(this.error, false);
      for (const job of jobs) this.store.fromApi(job);
      this.refresh();
    } catch (error) {
      if (asked !== this.asked) return;
      setText(this.error, `Could not load the jobs: ${error.message}`);
      show(this.error, true);
    } finally {
      if (asked === this.asked) {
        this.loading = false;
        this.counts();
      }
    }
  }

  refilter() {
    this.filter = this.filters();
    this.since = Infinity;
    // The ended jobs listed for other filters could leave holes under these: the answer brings them.
    for (const row of [...this.rows.values()]) if (!isActive(row.job)) this.drop(row);
    this.refresh();
    this.load();
  }

  // Every listed job and every known one, judged again.
  refresh() {
    for (const row of [...this.rows.values()]) this.changed(this.store.get(row.job.id) ?? row.job);
    for (const job of this.store.all()) this.changed(job);
  }

  changed(job) {
    this.suggest(job);
    let row = this.rows.get(job.id);
    const listed = this.matches(job) && (row || isActive(job) || job.created_at >= this.since);
    if (!listed) {
      if (row) this.drop(row);
      return this.counts();
    }
    if (row) row.render(job);
    else {
      row = new JobRow(job, (answer) => this.store.fromApi(answer));
      this.rows.set(job.id, row);
    }
    this.place(row);
    this.counts();
  }

  // Active jobs newest first; ended ones by when they ended, the latest first.
  place(row) {
    const active = isActive(row.job);
    const { list } = active ? this.lists.active : this.lists.recent;
    const order = (job) => (active ? job.created_at : job.finished_at ?? job.updated_at);
    const mine = order(row.job);
    const next = [...list.children].find((other) => other !== row.element && order(this.rowOf(other).job) < mine) ?? null;
    // Moving an element loses its focus: only when its place is wrong.
    if (row.element.parentNode !== list || row.element.nextElementSibling !== next) list.insertBefore(row.element, next);
    if (!active) while (list.children.length > KEEP_RECENT) this.drop(this.rowOf(list.lastElementChild));
  }

  rowOf(element) {
    return this.rows.get(element.dataset.job);
  }

  drop(row) {
    row.element.remove();
    this.rows.delete(row.job.id);
  }

  counts() {
    const filtered = Object.values(this.filter).some(Boolean) ? " match the filters" : "";
    for (const [name, { list, empty, count }] of Object.entries(this.lists)) {
      const n = list.children.length;
      setText(count, n ? `(${n})` : "");
      show(empty, n === 0);
      setText(empty, this.loading ? "Loading…" : `No ${name === "active" ? "active" : "ended"} jobs${filtered}.`);
    }
  }

  // The filters offer the types and daemons seen so far.
  suggest(job) {
    for (const [name, { list, values }] of Object.entries(this.suggestions)) {
      const value = job[name];
      if (!value || values.has(value)) continue;
      values.add(value);
      list.replaceChildren(...[...values].sort().map((option) => h("option", { value: option })));
    }
  }

  tick() {
    if (this.element.hidden) return;
    for (const row of this.rows.values()) if (isActive(row.job)) row.tick();
  }
}

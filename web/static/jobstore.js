// Jobs as this page knows them: the latest state of each, from the socket and the API, never
// replaced by an older one. The jobs list and a job's page listen to the changes.

const ACTIVE = ["pending", "running", "cancelling"];
const KEEP = 1000; // jobs remembered; beyond it the longest-ended are forgotten

export function isActive(job) {
  return ACTIVE.includes(job.status);
}

export class JobStore {
  constructor() {
    this.known = new Map(); // id -> {job, seq}; seq -1: known from the API only
    this.listeners = [];
  }

  // listener(job): called with every state taken.
  subscribe(listener) {
    this.listeners.push(listener);
  }

  get(id) {
    return this.known.get(id)?.job;
  }

  all() {
    return [...this.known.values()].map((entry) => entry.job);
  }

  // A `job` message: the socket's seq tells which state is current.
  fromSocket(job, seq) {
    const entry = this.known.get(job.id);
    if (entry && seq <= entry.seq) return;
    this.take(job, seq);
  }

  // API answers carry no seq. The list is read from a database written in batches, so it can be
  // older than what the socket brought: updated_at tells.
  fromApi(job) {
    const entry = this.known.get(job.id);
    if (entry && job.updated_at < entry.job.updated_at) return;
    this.take(job, entry?.seq ?? -1);
  }

  // The state as of seq. Its active jobs (when the server sends them) replace ours, and no seq we
  // hold may exceed it: after a restart of Warden the numbers start again.
  snapshot(jobs, seq) {
    for (const entry of this.known.values()) entry.seq = Math.min(entry.seq, seq);
    for (const job of jobs || []) this.take(job, seq);
  }

  take(job, seq) {
    this.known.set(job.id, { job, seq });
    if (this.known.size > KEEP) this.forget();
    for (const listener of this.listeners) listener(job);
  }

  forget() {
    const ended = this.all().filter((job) => !isActive(job)).sort((a, b) => a.updated_at - b.updated_at);
    for (const job of ended.slice(0, this.known.size - KEEP / 2)) this.known.delete(job.id);
  }
}

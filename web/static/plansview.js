// The Plans view (<base>plans) and one plan (<base>plans/<id>): the changes a plan proposes, scene by
// scene, to approve or reject, and "Apply now". While plan_applier applies a plan, its `apply_plan`
// job messages (key "plan <id>") make the page fetch the plan again, at most every THROTTLE ms; the
// list is fetched again when one is applied or an analysis ends.

import { getJSON, sendJSON } from "./api.js";
import { h, setText, show } from "./dom.js";
import { dateTime } from "./time.js";

const COUNTS = ["applied", "approved", "pending", "rejected", "failed", "skipped"];
const OUTCOMES = new Set(["applied", "failed", "skipped"]);
const THROTTLE = 300; // ms

// Runs `task` now, then at most once per `ms` however often it is asked for; the last ask always runs.
class Throttle {
  constructor(task, ms) {
    this.task = task;
    this.ms = ms;
    this.timer = null;
    this.again = false;
  }

  ask() {
    if (this.timer) {
      this.again = true;
      return;
    }
    this.task();
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.again) {
        this.again = false;
        this.ask();
      }
    }, this.ms);
  }
}

function clock(seconds) {
  const whole = Math.round(seconds);
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}`;
}

function describe(change) {
  const value = change.value;
  if (change.field === "tags") return `${change.action} tag ${value}`;
  if (change.field === "markers" && value && typeof value === "object") {
    const title = value.title ? ` “${value.title}”` : "";
    return `${change.action} marker ${value.primary_tag ?? ""} at ${clock(value.seconds ?? 0)}${title}`;
  }
  return `${change.action} ${change.field} ${JSON.stringify(value)}`;
}

function countCells(plan) {
  return COUNTS.map((name) => h("td", { class: "num", testid: `count-${name}`, text: String(plan.counts[name] ?? 0) }));
}

function statusBadge(status, testid) {
  return h("span", { class: "badge plan-status", testid, "data-state": status, text: status.replaceAll("_", " ") });
}

export class PlansView {
  constructor(listElement, detailElement) {
    this.element = listElement;
    this.detail = detailElement;
    this.rows = listElement.querySelector("#plans-list");
    this.empty = listElement.querySelector("#plans-empty");
    this.listError = listElement.querySelector("#plans-error");
    this.title = detailElement.querySelector("#plan-title");
    this.facts = detailElement.querySelector("#plan-facts");
    this.counts = detailElement.querySelector("#plan-counts");
    this.note = detailElement.querySelector("#plan-note");
    this.scenes = detailElement.querySelector("#plan-scenes");
    this.buttons = {
      approve: detailElement.querySelector("#plan-approve"),
      reject: detailElement.querySelector("#plan-reject"),
      apply: detailElement.querySelector("#plan-apply"),
    };
    this.buttons.approve.addEventListener("click", () => this.review("approved", {}));
    this.buttons.reject.addEventListener("click", () => this.review("rejected", {}));
    this.buttons.apply.addEventListener("click", () => this.apply());
    this.id = null; // the plan shown, or null while another view is
    this.plan = null;
    this.busy = false; // a review or apply in flight: its buttons wait
    this.asked = { list: 0, plan: 0 }; // only the answer to the latest request is used
    this.listing = new Throttle(() => this.load(), THROTTLE);
    this.refetch = new Throttle(() => this.loadPlan(), THROTTLE);
  }

  // The page's router: the view entered, and the plan to show (an id) or null.
  show(view, id) {
    if (view === "plans") this.load(); // plans made or changed while another view was shown
    if (id === this.id) return;
    this.id = id;
    this.plan = null;
    this.scenes.replaceChildren();
    this.counts.replaceChildren();
    setText(this.title, id === null ? "Plan" : `Plan ${id}`);
    this.say("");
    if (id !== null) this.loadPlan();
  }

  // A job message from the socket: an analysis that ended may have written a plan; an apply_plan
  // job changes a plan's counts.
  jobChanged(job) {
    if (job.type === "analysis" && job.finished_at) this.listing.ask();
    if (job.type !== "apply_plan") return;
    this.listing.ask();
    if (this.id !== null && job.key === `plan ${this.id}`) this.refetch.ask();
  }

  // At start and after a snapshot that replaced the state.
  reload() {
    this.load();
    if (this.id !== null) this.loadPlan();
  }

  async load() {
    const asked = ++this.asked.list;
    try {
      const { plans } = await getJSON("api/plans");
      if (asked !== this.asked.list) return;
      show(this.listError, false);
      this.rows.replaceChildren(...plans.map((plan) => this.row(plan)));
      setText(this.empty, "No plans yet: video analysis writes them.");
      show(this.empty, plans.length === 0);
    } catch (error) {
      if (asked !== this.asked.list) return;
      setText(this.listError, `Could not load the plans: ${error.message}`);
      show(this.listError, true);
    }
  }

  row(plan) {
    const link = h("a", { href: `plans/${plan.id}`, testid: `open-plan-${plan.id}`, text: plan.name });
    return h(
      "tr",
      { testid: `plan-row-${plan.id}`, "data-plan": plan.id },
      h("td", {}, link),
      h("td", { class: "muted", text: plan.source }),
      h("td", {}, statusBadge(plan.status, "plan-status")),
      ...countCells(plan),
      h("td", { class: "num", testid: "count-scenes", text: String(plan.scenes) }),
      h("td", { class: "muted", text: dateTime(plan.created_at) }),
    );
  }

  async loadPlan() {
    const id = this.id;
    const asked = ++this.asked.plan;
    try {
      const body = await getJSON(`api/plans/${encodeURIComponent(id)}`);
      if (asked === this.asked.plan && id === this.id) this.render(body);
    } catch (error) {
      if (asked !== this.asked.plan || id !== this.id) return;
      this.say(error.status === 404 ? `There is no plan ${id}.` : `Could not load the plan: ${error.message}`);
    }
  }

  render({ plan, scenes }) {
    if (this.plan?.status === "applying" && plan.status !== "applying") this.say(""); // "Applying…" is over
    this.plan = plan;
    setText(this.title, plan.name);
    this.facts.replaceChildren(
      statusBadge(plan.status, "plan-status"),
      h("span", { class: "muted", text: ` ${plan.source} · ${plan.scenes} scenes · created ${dateTime(plan.created_at)}` }),
    );
    this.counts.replaceChildren(
      ...COUNTS.map((name) =>
        h("div", { class: "plan-count", "data-count": name }, h("dt", { text: name }), h("dd", { testid: `plan-count-${name}`, text: String(plan.counts[name] ?? 0) })),
      ),
    );
    const applying = plan.status === "applying";
    this.buttons.approve.disabled = this.busy || applying;
    this.buttons.reject.disabled = this.busy || applying;
    this.buttons.apply.disabled = this.busy || applying || !plan.counts.approved;
    this.scenes.replaceChildren(...scenes.map((scene) => this.scene(scene, applying)));
  }

  scene(scene, applying) {
    const locked = this.busy || applying;
    const open = scene.changes.filter((change) => !OUTCOMES.has(change.status));
    const button = (decision, label) =>
      h("button", {
        type: "button",
        testid: `${decision === "approved" ? "approve" : "reject"}-scene`,
        disabled: locked || open.every((change) => change.status === decision),
        text: label,
        onclick: () => this.review(decision, { scene_id: scene.scene_id }),
      });
    return h(
      "section",
      { class: "plan-scene", testid: `scene-${scene.scene_id}`, "aria-label": `Scene ${scene.scene_id}` },
      h("header", { class: "plan-scene-head" }, h("h3", { text: `Scene ${scene.scene_id}` }), h("div", { class: "actions" }, button("approved", "Approve scene"), button("rejected", "Reject scene"))),
      h("ol", { class: "plan-changes" }, ...scene.changes.map((change) => this.change(change, locked))),
    );
  }

  change(change, locked) {
    const final = OUTCOMES.has(change.status);
    const button = (decision, label) =>
      h("button", {
        type: "button",
        class: "quiet",
        testid: decision === "approved" ? "approve-change" : "reject-change",
        disabled: locked || final || change.status === decision,
        text: label,
        onclick: () => this.review(decision, { change_ids: [change.id] }),
      });
    return h(
      "li",
      { class: "plan-change", testid: `change-${change.id}`, "data-status": change.status },
      h("span", { class: "plan-change-what", text: describe(change) }),
      h("span", { class: "muted", text: `${Math.round(change.confidence * 100)}%` }),
      statusBadge(change.status, "change-status"),
      change.error ? h("span", { class: "plan-change-error", testid: "change-error", text: change.error }) : null,
      final ? null : h("span", { class: "actions" }, button("approved", "Approve"), button("rejected", "Reject")),
    );
  }

  // scope: {} for the whole plan, {scene_id} or {change_ids}.
  async review(decision, scope) {
    const id = this.id;
    await this.act(async () => {
      await sendJSON("POST", `api/plans/${encodeURIComponent(id)}/review`, { decision, ...scope });
      this.say("");
    });
  }

  async apply() {
    const id = this.id;
    await this.act(async () => {
      const answer = await sendJSON("POST", `api/plans/${encodeURIComponent(id)}/apply`);
      this.say(answer.woken ? "Applying: plan_applier has started." : "plan_applier is busy; it applies this plan at its next check.");
    });
  }

  async act(task) {
    this.busy = true;
    if (this.plan) for (const button of this.detail.querySelectorAll("button")) button.disabled = true;
    try {
      await task();
    } catch (error) {
      this.say(error.message);
    } finally {
      this.busy = false;
      await this.loadPlan();
      this.load();
    }
  }

  say(text) {
    setText(this.note, text);
    show(this.note, Boolean(text));
  }
}

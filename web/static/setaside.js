// Scenes video analysis set aside (on the Plans view): their last error, and Retry per scene or for
// all. Shown only when there are any; fetched again when an analysis job ends.

import { getJSON, sendJSON } from "./api.js";
import { h, setText, show } from "./dom.js";

export class SetAsideList {
  constructor(element) {
    this.element = element;
    this.rows = element.querySelector("#set-aside-list");
    this.about = element.querySelector("#set-aside-about");
    this.note = element.querySelector("#set-aside-note");
    this.retryAll = element.querySelector("#retry-all");
    this.retryAll.addEventListener("click", () => this.retry({}));
    this.asked = 0; // only the answer to the latest request is used
    this.busy = false;
  }

  // A job message from the socket: an analysis that ended may have set scenes aside, and a
  // retry's note is then out of date.
  jobChanged(job) {
    if (job.type !== "analysis" || !job.finished_at) return;
    this.say("");
    this.load();
  }

  async load() {
    const asked = ++this.asked;
    try {
      const { max_failures: limit, scenes } = await getJSON("api/analysis/set-aside");
      if (asked !== this.asked) return;
      setText(this.about, `These scenes failed video analysis ${limit} times and are not tried again until you ask.`);
      this.rows.replaceChildren(...scenes.map((scene) => this.row(scene)));
      this.retryAll.disabled = this.busy;
      show(this.element, scenes.length > 0 || !this.note.hidden); // a retry's note stays in view
    } catch (error) {
      if (asked !== this.asked) return;
      if (error.status === 409) {
        show(this.element, false); // video_analysis is not installed
        return;
      }
      this.say(`Could not load the scenes set aside: ${error.message}`);
      show(this.element, true);
    }
  }

  row(scene) {
    const name = scene.title ? `${scene.id} · ${scene.title}` : scene.id;
    return h(
      "tr",
      { testid: `set-aside-${scene.id}` },
      h("td", { text: name }),
      h("td", { class: "muted wrap", text: scene.path ?? "no file" }),
      h("td", { class: "num", testid: "failures", text: String(scene.failures) }),
      h("td", { class: "wrap", testid: "analysis-error", text: scene.error ?? "" }),
      h("td", {}, h("button", { type: "button", class: "quiet", testid: "retry-scene", disabled: this.busy, text: "Retry", onclick: () => this.retry({ scene_ids: [scene.id] }) })),
    );
  }

  async retry(scope) {
    this.busy = true;
    for (const button of this.element.querySelectorAll("button")) button.disabled = true;
    try {
      const { retried, woken, state } = await sendJSON("POST", "api/analysis/retry", scope);
      const scenes = retried.length === 1 ? "1 scene" : `${retried.length} scenes`;
      if (state !== "running") this.say(`${scenes} will be analysed again once video_analysis runs: it is ${state}.`);
      else this.say(`${scenes} will be analysed again: ${woken ? "video_analysis has started" : "video_analysis starts at its next check"}.`);
    } catch (error) {
      this.say(error.message);
    } finally {
      this.busy = false;
      for (const button of this.element.querySelectorAll("button")) button.disabled = false;
      await this.load();
    }
  }

  say(text) {
    setText(this.note, text);
    show(this.note, Boolean(text));
  }
}

// The raw warden.yaml editor: load with its ETag, save with If-Match, explain 409 and 422.

import { request } from "./api.js";
import { h, setText, show } from "./dom.js";

export class YamlEditor {
  constructor(dialog) {
    this.dialog = dialog;
    this.editor = dialog.querySelector("#yaml-editor");
    this.error = dialog.querySelector("#yaml-error");
    this.status = dialog.querySelector("#yaml-status");
    this.saveButton = dialog.querySelector("#yaml-save");
    this.etag = null;
    this.loaded = "";
    dialog.querySelector("[data-close]").addEventListener("click", () => dialog.close());
    dialog.querySelector("#yaml-reload").addEventListener("click", () => this.reload());
    this.saveButton.addEventListener("click", () => this.save());
  }

  async open() {
    if (!this.dialog.open) this.dialog.showModal();
    await this.load();
  }

  async load() {
    this.clear();
    setText(this.status, "Loading…");
    try {
      const response = await request("GET", "api/config");
      this.etag = response.headers.get("ETag");
      this.loaded = await response.text();
      this.editor.value = this.loaded;
      setText(this.status, "");
    } catch (error) {
      setText(this.status, "");
      this.say(`Could not load the config file: ${error.message}`);
    }
  }

  reload() {
    const edited = this.editor.value !== this.loaded;
    if (edited && !window.confirm("Discard your edits and load the file as it is now?")) return;
    this.load();
  }

  async save() {
    this.clear();
    this.saveButton.disabled = true;
    setText(this.status, "Saving…");
    try {
      const response = await request("PUT", "api/config", { text: this.editor.value, headers: { "If-Match": this.etag || "" } });
      this.etag = (await response.json()).etag;
      this.loaded = this.editor.value;
      setText(this.status, "Saved.");
    } catch (error) {
      setText(this.status, "");
      this.failed(error);
    } finally {
      this.saveButton.disabled = false;
    }
  }

  failed(error) {
    if (error.status === 409) {
      const reload = h("button", { type: "button", text: "Reload the file", onclick: () => this.reload() });
      return this.say("The file was changed (in another tab, by a settings form or by hand) since you loaded it. Nothing was saved. Reload it to see the current version; copy your edits first if you need them.", reload);
    }
    if (error.status !== 422 || error.issues.length === 0) return this.say(`Nothing was saved: ${error.message}`);
    const issues = error.issues.map((issue) => {
      const where = [issue.line ? `line ${issue.line}` : "", issue.path || ""].filter(Boolean).join(", ");
      const item = h("li", {}, where ? h("strong", { text: `${where}: ` }) : null, issue.message);
      if (issue.line) {
        // Clicking an issue puts the cursor on its line.
        item.classList.add("jump");
        item.addEventListener("click", () => this.goToLine(issue.line));
      }
      return item;
    });
    this.say("Nothing was saved: the file is invalid.", h("ul", {}, issues));
  }

  goToLine(line) {
    const lines = this.editor.value.split("\n");
    const start = lines.slice(0, line - 1).reduce((total, text) => total + text.length + 1, 0);
    this.editor.focus();
    this.editor.setSelectionRange(start, start + (lines[line - 1] || "").length);
  }

  say(text, ...extra) {
    this.error.replaceChildren(h("p", { text }), ...extra);
    show(this.error, true);
  }

  clear() {
    show(this.error, false);
    this.error.replaceChildren();
  }
}

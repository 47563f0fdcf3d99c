// A daemon's settings dialog: the form generated from its schema; save, reset, server errors.

import { getJSON, sendJSON } from "./api.js";
import { h, setText, show } from "./dom.js";
import { boundsText, createInput, describeFields, FieldError, readInput, sameValue } from "./schemafields.js";

export class ConfigDialog {
  constructor(dialog) {
    this.dialog = dialog;
    this.body = dialog.querySelector("#config-body");
    this.heading = dialog.querySelector("#config-title");
    dialog.querySelector("[data-close]").addEventListener("click", () => dialog.close());
  }

  async open(name, title) {
    this.name = name;
    this.title = title || name;
    setText(this.heading, `${this.title}: settings`);
    this.body.replaceChildren(h("p", { class: "empty", text: "Loading…" }));
    if (!this.dialog.open) this.dialog.showModal();
    try {
      this.render(await getJSON(this.path()));
    } catch (error) {
      this.body.replaceChildren(h("p", { class: "form-message", role: "alert", text: `Could not load the settings: ${error.message}` }));
    }
  }

  path() {
    return `api/daemons/${encodeURIComponent(this.name)}/config`;
  }

  // config: {values, defaults, schema, etag}, as GET and PUT return it.
  render(config) {
    this.config = config;
    this.fields = describeFields(config.schema).map((field) => ({
      ...field,
      input: createInput(field, config.values[field.name]),
      error: h("p", { class: "field-error", id: `error-${field.name}`, testid: `error-${field.name}`, role: "alert", hidden: true }),
    }));
    this.message = h("div", { class: "form-message", testid: "config-message", role: "alert", hidden: true });
    this.status = h("span", { class: "saved", role: "status" });
    this.saveButton = h("button", { type: "submit", class: "primary", testid: "config-save", text: "Save" });
    this.resetButton = h("button", { type: "button", testid: "config-reset", text: "Reset to defaults", onclick: () => this.reset() });
    const form = h(
      "form",
      { class: "config-form", novalidate: true, onsubmit: (event) => { event.preventDefault(); this.save(); } },
      this.fields.map((field) => this.row(field)),
      this.message,
      h("div", { class: "dialog-actions" }, this.status, this.resetButton, this.saveButton),
    );
    this.body.replaceChildren(form);
  }

  row(field) {
    const hasDefault = field.name in (this.config.defaults || {});
    const notes = [boundsText(field.type), hasDefault ? `default: ${formatValue(this.config.defaults[field.name])}` : ""];
    const help = h("p", { class: "help", id: `help-${field.name}` },
      field.help, h("span", { class: "bounds", text: notes.filter(Boolean).join(" · ") }));
    field.input.setAttribute("aria-describedby", `help-${field.name} error-${field.name}`);
    const label = h("label", { for: field.input.id, text: field.label });
    if (field.kind === "boolean") {
      return h("div", { class: "field field-check" }, h("div", { class: "check-line" }, field.input, label), help, field.error);
    }
    if (field.kind === "lines") help.append(h("span", { class: "bounds", text: "One per line." }));
    return h("div", { class: "field" }, label, field.input, help, field.error);
  }

  async save() {
    this.clearErrors();
    const changes = {};
    let invalid = false;
    for (const field of this.fields) {
      try {
        const value = readInput(field, field.input);
        if (!sameValue(value, this.config.values[field.name])) changes[field.name] = value;
      } catch (error) {
        if (!(error instanceof FieldError)) throw error;
        this.fieldError(field, error.message);
        invalid = true;
      }
    }
    if (invalid) return this.say("Nothing was saved: correct the marked fields.");
    if (Object.keys(changes).length === 0) return setText(this.status, "No changes to save.");
    await this.send(changes, "Saved.");
  }

  async reset() {
    const { values, defaults = {} } = this.config;
    // null asks the server for the default, for exactly the fields that differ from it.
    const changes = {};
    for (const name of Object.keys(defaults)) {
      if (name in values && !sameValue(values[name], defaults[name])) changes[name] = null;
    }
    this.clearErrors();
    if (Object.keys(changes).length === 0) return setText(this.status, "Every setting already has its default.");
    // Naming the fields matters: a masked secret counts too, and resetting it clears it.
    const labels = this.fields.filter((f) => f.name in changes).map((f) => f.label);
    if (!window.confirm(`Reset these settings of ${this.title} to their defaults?\n\n${labels.join(", ")}`)) return;
    await this.send(changes, "Reset to defaults.");
  }

  async send(changes, done) {
    this.saveButton.disabled = this.resetButton.disabled = true;
    setText(this.status, "Saving…");
    try {
      const config = await sendJSON("PUT", this.path(), changes, { "If-Match": this.config.etag });
      this.render(config);
      setText(this.status, done);
    } catch (error) {
      setText(this.status, "");
      this.failed(error);
    } finally {
      this.saveButton.disabled = this.resetButton.disabled = false;
    }
  }

  failed(error) {
    if (error.status === 409) {
      const reload = h("button", { type: "button", testid: "config-reload", text: "Reload settings", onclick: () => this.open(this.name, this.title) });
      return this.say("These settings were changed elsewhere (another tab or the config file) since you opened them. Nothing was saved.", reload);
    }
    if (error.status !== 422) return this.say(`Nothing was saved: ${error.message}`);
    const general = [];
    for (const issue of error.issues) {
      // issue.path is the field name, possibly followed by an index into a list ("paths.2").
      const field = this.fields.find((f) => f.name === String(issue.path).split(".")[0]);
      if (field) this.fieldError(field, issue.message);
      else general.push(h("li", { text: issue.path ? `${issue.path}: ${issue.message}` : issue.message }));
    }
    this.say(`Nothing was saved: ${error.message}`, general.length ? h("ul", {}, general) : null);
    this.fields.find((f) => !f.error.hidden)?.input.focus();
  }

  fieldError(field, message) {
    // Several issues may name one field (e.g. two bad list items): show them all.
    const text = field.error.hidden ? message : `${field.error.textContent} ${message}`;
    setText(field.error, text);
    show(field.error, true);
    field.input.setAttribute("aria-invalid", "true");
  }

  clearErrors() {
    for (const field of this.fields) {
      show(field.error, false);
      setText(field.error, "");
      field.input.removeAttribute("aria-invalid");
    }
    show(this.message, false);
    setText(this.status, "");
  }

  say(text, ...extra) {
    this.message.replaceChildren(h("p", { text }), ...extra.filter(Boolean));
    show(this.message, true);
  }
}

function formatValue(value) {
  if (Array.isArray(value)) return value.length ? value.join(", ") : "(none)";
  if (value === null || value === undefined) return "(not set)";
  return String(value);
}

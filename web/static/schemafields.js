// JSON schema (pydantic's model_json_schema) -> one input per property, and back to values.

import { h } from "./dom.js";

// A property as the form needs it: kind of input, bounds, choices, whether null is allowed.
export function describeFields(schema) {
  return Object.entries(schema.properties || {}).map(([name, property]) => {
    let nullable = false;
    let type = resolve(property, schema);
    if (Array.isArray(type.anyOf)) {
      // Optional values are anyOf [T, null]: null is "not set", T decides the input.
      const others = type.anyOf.filter((option) => option.type !== "null");
      nullable = others.length < type.anyOf.length;
      type = others.length === 1 ? { ...resolve(others[0], schema), ...withoutAnyOf(type) } : type;
    }
    return {
      name,
      label: property.title || humanize(name),
      help: property.description || "",
      kind: kindOf(type),
      nullable,
      type,
      choices: type.enum || null,
    };
  });
}

function resolve(property, schema) {
  const ref = property.$ref || (property.allOf?.length === 1 && property.allOf[0].$ref);
  if (!ref) return property;
  const target = ref.split("/").slice(1).reduce((node, key) => node?.[key], schema) || {};
  return { ...target, ...property };
}

function humanize(name) {
  const words = name.replaceAll("_", " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function withoutAnyOf({ anyOf, ...rest }) {
  return rest;
}

function kindOf(type) {
  if (type.enum) return "enum";
  if (type.type === "boolean") return "boolean";
  if (type.type === "integer" || type.type === "number") return type.type;
  if (type.type === "string") return type.format === "password" || type.writeOnly ? "secret" : "string";
  if (type.type === "array" && (type.items?.type === "string" || !type.items)) return "lines";
  return "json"; // anything richer is edited as JSON text
}

// "≥ 1 · ≤ 86400", from the bounds pydantic exports.
export function boundsText(type) {
  const parts = [];
  if (type.minimum !== undefined) parts.push(`≥ ${type.minimum}`);
  if (type.exclusiveMinimum !== undefined) parts.push(`> ${type.exclusiveMinimum}`);
  if (type.maximum !== undefined) parts.push(`≤ ${type.maximum}`);
  if (type.exclusiveMaximum !== undefined) parts.push(`< ${type.exclusiveMaximum}`);
  return parts.join(" · ");
}

export function createInput(field, value) {
  const id = `field-${field.name}`;
  const common = { id, name: field.name, testid: id };
  const { type } = field;
  switch (field.kind) {
    case "boolean":
      return h("input", { ...common, type: "checkbox", role: "switch", checked: value === true });
    case "enum": {
      // Option values are indexes, so enum members of any JSON type come back unchanged.
      const options = field.choices.map((choice, index) => h("option", { value: String(index), text: String(choice) }));
      if (field.nullable) options.unshift(h("option", { value: "", text: "(not set)" }));
      const select = h("select", common, options);
      const index = field.choices.findIndex((choice) => choice === value);
      select.value = index >= 0 ? String(index) : "";
      return select;
    }
    case "integer":
    case "number":
      return h("input", {
        ...common,
        type: "number",
        inputmode: field.kind === "integer" ? "numeric" : "decimal",
        step: field.kind === "integer" ? "1" : "any",
        min: type.minimum ?? type.exclusiveMinimum,
        max: type.maximum ?? type.exclusiveMaximum,
        value: value === null || value === undefined ? "" : String(value),
      });
    case "lines":
      return h("textarea", { ...common, rows: 3, spellcheck: "false", value: (value || []).join("\n") });
    case "json":
      return h("textarea", { ...common, rows: 3, spellcheck: "false", value: value === undefined ? "" : JSON.stringify(value, null, 2) });
    default:
      return h("input", {
        ...common,
        type: field.kind === "secret" ? "password" : "text",
        autocomplete: "off",
        minlength: type.minLength,
        maxlength: type.maxLength,
        value: value ?? "",
      });
  }
}

export class FieldError extends Error {}

// The value an input holds, in the JSON type the server expects.
export function readInput(field, input) {
  const raw = input.value;
  const empty = raw.trim() === "";
  switch (field.kind) {
    case "boolean":
      return input.checked;
    case "enum":
      return raw === "" ? null : field.choices[Number(raw)];
    case "integer":
    case "number": {
      if (input.validity.badInput) throw new FieldError("Enter a number.");
      if (empty) return required(field);
      const number = Number(raw);
      if (field.kind === "integer" && !Number.isInteger(number)) throw new FieldError("Enter a whole number.");
      return number;
    }
    case "lines":
      return raw.split("\n").map((line) => line.trim()).filter(Boolean);
    case "json":
      if (empty) return required(field);
      try {
        return JSON.parse(raw);
      } catch {
        throw new FieldError("Enter valid JSON.");
      }
    default:
      return empty && field.nullable ? null : raw;
  }
}

function required(field) {
  if (field.nullable) return null;
  throw new FieldError("A value is required.");
}

// JSON equality is enough for config values (numbers, strings, lists, small objects).
export function sameValue(a, b) {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

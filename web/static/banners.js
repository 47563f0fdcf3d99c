// Banners for the system state the server publishes: database health, the config file, start-up, demo mode.

import { h, setText, show } from "./dom.js";

const storeBanner = document.getElementById("banner-store");
const configBanner = document.getElementById("banner-config");
const demoBanner = document.getElementById("banner-demo");
const startupBanner = document.getElementById("banner-startup");

// system: {name: value} as in the snapshot; a missing key clears its banner.
export function renderSystem(system) {
  const store = system.store;
  const failing = Boolean(store) && store.ok === false;
  show(storeBanner, failing);
  if (failing) {
    setText(storeBanner, `Database writes are failing: ${store.error || "unknown error"} — daemons keep running; changes are kept and retried`);
  }

  const error = system.config?.error;
  show(configBanner, Boolean(error));
  if (error) configBanner.replaceChildren(h("strong", { text: "The config file is invalid; Warden keeps running with the previous settings." }), ...describe(error));

  // Until the daemons set to auto-start are started (not sent by every server version).
  const startup = system.startup;
  const starting = startup?.ready === false;
  show(startupBanner, starting);
  if (starting) setText(startupBanner, startup.message || "Warden is starting");

  // Not sent by every server version: true, or an object with enabled: true and a message.
  const demo = system.demo;
  const demoOn = demo === true || demo?.enabled === true;
  show(demoBanner, demoOn);
  if (demoOn) setText(demoBanner, demo?.message || "Demo library");
}

// The error may be a message, a list of issues, or an object holding either.
function describe(error) {
  if (typeof error === "string") return [h("pre", { class: "banner-detail", text: error })];
  const issues = Array.isArray(error) ? error : error.issues || [];
  const message = error.message || error.error;
  return [
    message ? h("pre", { class: "banner-detail", text: String(message) }) : null,
    issues.length ? h("ul", {}, issues.map(issueItem)) : null,
  ].filter(Boolean);
}

function issueItem(issue) {
  const where = [issue.line ? `line ${issue.line}` : "", issue.path || ""].filter(Boolean).join(", ");
  return h("li", { text: where ? `${where}: ${issue.message}` : String(issue.message ?? issue) });
}

// Event history: the latest events from the API, then live `event` messages, newest first.

import { getJSON } from "./api.js";
import { h } from "./dom.js";
import { dateTime } from "./time.js";

const KEEP = 200; // events kept in the list

// Events from the socket carry no id: the same fact is recognised by its content.
function keyOf(event) {
  return [event.at, event.daemon, event.kind, event.from_state, event.to_state, event.message].join("|");
}

export class EventList {
  constructor(list) {
    this.list = list;
    this.events = new Map(); // key -> event
    this.loading = 0;
    this.pending = null; // a scheduled render
  }

  // Also after a gap or a reconnect that could not resume: the API has what was missed.
  async load() {
    this.loading += 1;
    if (this.events.size === 0) this.render();
    try {
      const { events } = await getJSON("api/events?limit=100");
      for (const event of events) this.events.set(keyOf(event), event);
      this.render();
    } catch (error) {
      this.list.replaceChildren(h("li", { class: "empty", text: `Could not load events: ${error.message}` }));
    } finally {
      this.loading -= 1;
    }
  }

  add(event) {
    this.events.set(keyOf(event), event);
    // "Stop all" brings a burst of events: draw the list once for the burst.
    this.pending ??= setTimeout(() => {
      this.pending = null;
      this.render();
    }, 50);
  }

  render() {
    const newest = [...this.events.values()].sort((a, b) => b.at - a.at).slice(0, KEEP);
    this.events = new Map(newest.map((event) => [keyOf(event), event]));
    if (newest.length === 0) {
      this.list.replaceChildren(h("li", { class: "empty", text: this.loading ? "Loading…" : "No events yet." }));
      return;
    }
    this.list.replaceChildren(...newest.map(eventItem));
  }
}

function eventItem(event) {
  const badge = (state) => h("span", { class: "badge", "data-state": state || "none", text: state || "–" });
  const change = event.from_state || event.to_state
    ? h("span", { class: "change" }, badge(event.from_state), " → ", badge(event.to_state))
    : null;
  return h("li", { class: "event", testid: "event" },
    h("time", { text: dateTime(event.at) }),
    h("span", { class: "daemon", text: event.daemon }),
    change,
    event.kind !== "transition" ? h("span", { class: "kind", text: event.kind }) : null,
    h("span", { class: "actor", text: event.actor }),
    event.message ? h("span", { class: "message", text: event.message }) : null);
}

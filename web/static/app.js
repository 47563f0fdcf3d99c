// The page: first paint from the API, then the WebSocket keeps every card and job current.

import { request, sendJSON, getJSON, whenUnauthorized } from "./api.js";
import { renderSystem } from "./banners.js";
import { Card } from "./cards.js";
import { ConfigDialog } from "./configform.js";
import { h, setText, show } from "./dom.js";
import { EventList } from "./events.js";
import { JobDetail } from "./jobdetail.js";
import { JobStore } from "./jobstore.js";
import { JobsView } from "./jobsview.js";
import { Live } from "./live.js";
import { askToSignIn } from "./login.js";
import { LogPanels } from "./logs.js";
import { PlansView } from "./plansview.js";
import { SetAsideList } from "./setaside.js";
import { startViews } from "./views.js";
import { YamlEditor } from "./yamleditor.js";

const PROTOCOL = 1;
const CONNECTION_TEXT = { live: "live", reconnecting: "reconnecting…", stale: "stale" };
const ALL_COMMANDS = {
  "start-all": { pending: "Starting all…" },
  "stop-all": { pending: "Stopping all…", confirm: "Stop every daemon?" },
  "restart-all": { pending: "Restarting all…", confirm: "Restart every daemon?" },
};

const cardList = document.getElementById("cards");
const connection = document.querySelector('[data-testid="connection"]');
const pageError = document.getElementById("page-error");
const headerButtons = [...document.querySelectorAll("[data-action]")];

const cards = new Map(); // name -> Card
const seqs = new Map(); // name -> seq of the state its card shows
let system = {};
let snapshots = 0;
let greeted = false;

const live = new Live({ message: onMessage, state: onConnection, hello: onHello, refused: checkSignedIn });
const events = new EventList(document.getElementById("events"));
const logs = new LogPanels(document.getElementById("log-panels"), live);
const settings = new ConfigDialog(document.getElementById("config-dialog"));
const yaml = new YamlEditor(document.getElementById("yaml-dialog"));
const jobs = new JobStore();
const jobsView = new JobsView(document.getElementById("jobs-view"), jobs);
const jobDetail = new JobDetail(document.getElementById("job-detail"), jobs);
const plansView = new PlansView(document.getElementById("plans-view"), document.getElementById("plan-detail"));
const setAside = new SetAsideList(document.getElementById("set-aside"));
const daemonPath = (name, rest) => `api/daemons/${encodeURIComponent(name)}/${rest}`;

const cardActions = {
  async command(name, action) {
    const result = await sendJSON("POST", daemonPath(name, action));
    showUnsequenced([action === "wake" ? result.daemon : result]);
  },
  setFlag: (name, field, value) => sendJSON("PUT", daemonPath(name, "config"), { [field]: value }),
  openConfig: (name, title) => settings.open(name, title),
  openLogs: (name, title) => logs.open(name, title),
};

// --- state ------------------------------------------------------------------------------

function applyAll(daemons, seq) {
  const names = new Set(daemons.map((daemon) => daemon.name));
  for (const [name, card] of cards) {
    if (names.has(name)) continue;
    card.element.remove();
    cards.delete(name);
    seqs.delete(name);
  }
  for (const daemon of daemons) {
    seqs.set(daemon.name, seq);
    upsert(daemon);
  }
  document.getElementById("cards-empty")?.remove();
  if (cards.size === 0) cardList.replaceChildren(h("p", { class: "empty", text: "No daemons are registered." }));
}

function applyDaemon(daemon, seq) {
  // A slow tab may see an older state after a newer one; the seq tells which is current.
  if (seq <= (seqs.get(daemon.name) ?? -1)) return;
  seqs.set(daemon.name, seq);
  upsert(daemon);
}

// Command answers carry no seq. While live the socket brings the same state in order; when
// not, the answer is the best there is, and the next snapshot or delta replaces it.
function showUnsequenced(daemons) {
  if (live.state === "live") return;
  for (const daemon of daemons) if (cards.has(daemon.name)) cards.get(daemon.name).render(daemon);
}

function upsert(daemon) {
  const card = cards.get(daemon.name);
  if (card) return card.render(daemon);
  cardList.querySelector(".empty")?.remove();
  cards.set(daemon.name, new Card(daemon, cardActions));
  // Cards in name order, the same in every tab.
  cardList.append(...[...cards.values()].sort((a, b) => a.name.localeCompare(b.name)).map((c) => c.element));
}

// --- live connection ----------------------------------------------------------------------

function onMessage(message) {
  switch (message.type) {
    case "snapshot":
      applyAll(message.daemons, message.seq);
      jobs.snapshot(message.jobs, message.seq); // only the active jobs, and not from every server
      system = { ...message.system };
      renderSystem(system);
      if (snapshots++ > 0) {
        // Events, and jobs that ended, while we were away are not in a snapshot.
        events.load();
        jobsView.load();
        jobDetail.load();
        plansView.reload();
        setAside.load();
      }
      break;
    case "daemon":
      applyDaemon(message.daemon, message.seq);
      break;
    case "job":
      jobs.fromSocket(message.job, message.seq);
      plansView.jobChanged(message.job);
      setAside.jobChanged(message.job);
      break;
    case "event":
      events.add(message.event);
      break;
    case "system":
      system = { ...system, [message.key]: message.value };
      renderSystem(system);
      break;
    case "log":
      logs.receive(message.daemon, message.line);
      break;
    case "gap":
      events.load();
      logs.gap(message.dropped);
      break;
    case "error":
      console.warn("Warden did not understand a message from this page:", message.message);
      break;
  }
}

function onHello(message) {
  if (message.protocol !== PROTOCOL) {
    fail(`This page speaks protocol ${PROTOCOL} but Warden speaks ${message.protocol}: reload the page.`);
  }
  if (greeted) logs.reconnected();
  greeted = true;
}

function onConnection(state) {
  setText(connection, CONNECTION_TEXT[state]);
  connection.dataset.state = state;
  document.body.dataset.connection = state;
}

// A socket that closes before its hello may have been refused for a missing session.
function checkSignedIn() {
  request("GET", "api/health").catch(() => {}); // a 401 opens the sign-in form by itself
}

// --- header and page ----------------------------------------------------------------------

async function runAll(button) {
  const command = ALL_COMMANDS[button.dataset.action];
  if (command.confirm && !window.confirm(command.confirm)) return;
  const label = button.textContent;
  for (const other of headerButtons) other.disabled = true;
  setText(button, command.pending);
  try {
    showUnsequenced((await sendJSON("POST", `api/${button.dataset.action}`)).daemons);
    fail(null);
  } catch (error) {
    fail(`${label} failed: ${error.message}`);
  } finally {
    setText(button, label);
    for (const other of headerButtons) other.disabled = false;
  }
}

function fail(message) {
  show(pageError, Boolean(message));
  pageError.replaceChildren(message || "", h("button", { type: "button", class: "quiet dismiss", "aria-label": "Dismiss", text: "✕", onclick: () => fail(null) }));
}

async function load() {
  try {
    const data = await getJSON("api/daemons");
    applyAll(data.daemons, data.seq);
    system = data.system || {};
    renderSystem(system);
  } catch (error) {
    if (error.status === 401) return; // the sign-in form is up and calls load() again
    fail(`Could not load the daemons: ${error.message}. Retrying over the live connection.`);
  }
  events.load();
  jobsView.load();
  plansView.reload();
  setAside.load();
  live.start();
}

whenUnauthorized(() => {
  live.stop();
  askToSignIn(() => {
    load();
    jobDetail.load();
  });
});

for (const button of headerButtons) button.addEventListener("click", () => runAll(button));
document.getElementById("open-yaml").addEventListener("click", () => yaml.open());
for (const dialog of document.querySelectorAll("dialog.sheet")) {
  // A tap on the backdrop closes a sheet, as on most phones.
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close();
  });
}
setInterval(() => {
  for (const card of cards.values()) card.tick();
  jobsView.tick();
  jobDetail.tick();
}, 1000);

startViews(
  { daemons: document.getElementById("daemons-view"), jobs: jobsView.element, job: jobDetail.element, plans: plansView.element, plan: plansView.detail },
  (route) => {
    jobDetail.show(route.view === "job" ? route.id : null);
    plansView.show(route.view, route.view === "plan" ? route.id : null);
    if (route.view === "plans") setAside.load();
  },
);
load();

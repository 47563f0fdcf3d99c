// Which view the page shows, from its URL: the daemons (<base>), the jobs (<base>jobs), one job
// (<base>jobs/<id>), the plans (<base>plans) or one plan (<base>plans/<id>). Links to them and the
// back button switch views in the page, so the live connection stays open.

import { base } from "./api.js";
import { show } from "./dom.js";

const TITLES = { daemons: "Warden", jobs: "Jobs · Warden", job: "Job · Warden", plans: "Plans · Warden", plan: "Plan · Warden" };
const PARENTS = { job: "jobs", plan: "plans" }; // the nav link that is current for a view of one item

// {view: "daemons" | "jobs" | "job", id}, or null for a URL that is not one of the page's.
function routeOf(target) {
  if (target.origin !== base.origin || !target.pathname.startsWith(base.pathname)) return null;
  const rest = target.pathname.slice(base.pathname.length);
  if (rest === "") return { view: "daemons" };
  if (rest === "jobs" || rest === "plans") return { view: rest };
  const match = /^(jobs|plans)\/([^/]+)$/.exec(rest);
  if (!match) return null;
  const view = match[1] === "jobs" ? "job" : "plan";
  try {
    return { view, id: decodeURIComponent(match[2]) };
  } catch {
    return { view, id: match[2] }; // not valid percent-encoding: nothing has that id
  }
}

// views: {daemons, jobs, job, plans, plan} elements; entered(route): after every switch, the first included.
export function startViews(views, entered) {
  const links = [...document.querySelectorAll(".views-nav a")];

  function render() {
    const route = routeOf(new URL(location.href)) ?? { view: "daemons" };
    for (const [name, element] of Object.entries(views)) show(element, name === route.view);
    for (const link of links) {
      const current = link.dataset.view === (PARENTS[route.view] ?? route.view);
      if (current) link.setAttribute("aria-current", route.view === link.dataset.view ? "page" : "true");
      else link.removeAttribute("aria-current");
    }
    document.title = TITLES[route.view];
    entered(route);
    return views[route.view];
  }

  // A plain click on a link to a view: no reload. Other clicks (new tab, download) are the browser's.
  document.addEventListener("click", (event) => {
    const link = event.target.closest?.("a[href]");
    if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    if (link.target || link.hasAttribute("download")) return;
    const target = new URL(link.href);
    if (!routeOf(target)) return;
    event.preventDefault();
    if (target.href !== location.href) history.pushState(null, "", target);
    const element = render();
    window.scrollTo(0, 0);
    element.focus({ preventScroll: true }); // where a screen reader carries on reading
  });
  window.addEventListener("popstate", render);
  render();
}

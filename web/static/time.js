// Server time and how the page words times and durations.

// Seconds to add to this machine's clock to get the server's. Countdowns and ages come from
// server timestamps, so a browser whose clock is off would otherwise show them wrong.
let offset = 0;

// The HTTP Date header has whole seconds: a difference under 1.5 s is noise, not skew.
export function noteServerDate(header) {
  const date = Date.parse(header || "");
  if (Number.isNaN(date)) return;
  const estimate = date / 1000 + 0.5 - Date.now() / 1000;
  offset = Math.abs(estimate) < 1.5 ? 0 : estimate;
}

export function now() {
  return Date.now() / 1000 + offset;
}

// 12:05:00 (local time of the server timestamp).
export function clockTime(at) {
  return new Date((at - offset) * 1000).toLocaleTimeString([], { hour12: false });
}

// Events from earlier days need their date.
export function dateTime(at) {
  const date = new Date((at - offset) * 1000);
  const today = new Date().toDateString() === date.toDateString();
  return today ? clockTime(at) : `${date.toLocaleDateString()} ${clockTime(at)}`;
}

// 4:12 or 1:04:12, for countdowns.
export function countdown(seconds) {
  const total = Math.max(0, Math.ceil(seconds));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

// 3 s, 5 min, 2 h 10 min, 3 d 4 h: for ages and uptimes.
export function span(seconds) {
  const total = Math.max(0, Math.floor(seconds));
  if (total < 60) return `${total} s`;
  if (total < 3600) return `${Math.floor(total / 60)} min`;
  if (total < 86400) return `${Math.floor(total / 3600)} h ${Math.floor((total % 3600) / 60)} min`;
  return `${Math.floor(total / 86400)} d ${Math.floor((total % 86400) / 3600)} h`;
}

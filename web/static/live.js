// The WebSocket: hello, snapshot and deltas; resume after a reconnect; the connection state.

import { base } from "./api.js";

const FIRST_DELAY = 500; // ms; the delay ceiling doubles per failed attempt...
const MAX_DELAY = 10_000; // ...up to this
const STALE_AFTER = 10_000; // ms without a live connection before the page calls itself stale
const PING_EVERY = 20_000; // ms; a socket silent for two of these is dead even if not closed
const TRY_AGAIN_LATER = 1013; // the server dropped us for falling behind: come straight back

export class Live {
  // handlers: message(msg) for everything but hello; state("live"|"reconnecting"|"stale");
  // hello(msg, resumed); refused() when a socket closed before its hello (maybe signed out).
  constructor(handlers) {
    this.handlers = handlers;
    this.boot = null;
    this.seq = null; // the last seq applied: where a reconnect resumes
    this.logDaemons = new Set();
    this.socket = null;
    this.greeted = false;
    this.running = false;
    this.attempt = 0;
    this.state = null;
    this.timers = {};
    window.addEventListener("online", () => this.retryNow());
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.setState("reconnecting");
    this.connect();
  }

  stop() {
    this.running = false;
    this.state = null; // so the next start() reports its state and arms the stale timer again
    for (const name of Object.keys(this.timers)) this.clearTimer(name);
    this.drop();
  }

  send(message) {
    if (this.greeted) this.socket.send(JSON.stringify(message));
  }

  subscribeLogs(name) {
    this.logDaemons.add(name);
    this.send({ type: "subscribe_logs", daemons: [name] });
  }

  unsubscribeLogs(name) {
    this.logDaemons.delete(name);
    this.send({ type: "unsubscribe_logs", daemons: [name] });
  }

  retryNow() {
    if (this.running && !this.socket) {
      this.clearTimer("retry");
      this.connect();
    }
  }

  connect() {
    const target = new URL("ws", base);
    target.protocol = base.protocol === "https:" ? "wss:" : "ws:";
    if (this.boot !== null && this.seq !== null) {
      target.searchParams.set("resume", String(this.seq));
      target.searchParams.set("boot", this.boot);
    }
    const socket = new WebSocket(target);
    this.socket = socket;
    this.greeted = false;
    socket.addEventListener("message", (event) => {
      if (this.socket === socket) this.receive(event.data);
    });
    socket.addEventListener("close", (event) => {
      if (this.socket === socket) this.lost(event.code);
    });
  }

  receive(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return; // not ours to interpret; the server never sends this
    }
    this.heardAt = Date.now();
    if (message.type === "hello") return this.hello(message);
    if (message.type === "snapshot") {
      this.seq = message.seq;
      this.handlers.message(message);
      return this.setState("live");
    }
    if (typeof message.seq === "number") this.seq = Math.max(this.seq ?? 0, message.seq);
    this.handlers.message(message);
  }

  hello(message) {
    // Same boot: the server replays what we missed (or sends a snapshot if it cannot), so the
    // state is current as soon as those follow. A new boot always answers with a snapshot.
    const resumed = this.boot === message.boot && this.seq !== null;
    this.boot = message.boot;
    this.greeted = true;
    this.attempt = 0;
    if (this.logDaemons.size) this.send({ type: "subscribe_logs", daemons: [...this.logDaemons] });
    this.timers.ping = setInterval(() => this.ping(), PING_EVERY);
    this.handlers.hello(message, resumed);
    if (resumed) this.setState("live");
  }

  ping() {
    if (Date.now() - this.heardAt > 2 * PING_EVERY) {
      const socket = this.socket;
      this.lost(0); // first, so this socket's own close event is ignored
      socket.close();
    } else {
      this.send({ type: "ping" });
    }
  }

  lost(code) {
    const greeted = this.greeted;
    this.socket = null;
    this.greeted = false;
    this.clearTimer("ping");
    if (!this.running) return;
    if (this.state === "live") this.setState("reconnecting");
    if (!greeted) this.handlers.refused();
    this.timers.retry = setTimeout(() => this.connect(), code === TRY_AGAIN_LATER ? 0 : this.nextDelay());
  }

  // Exponential backoff with "equal jitter": half the ceiling plus a random part of the other
  // half, so a server restart is not met by every tab at the same instant.
  nextDelay() {
    const ceiling = Math.min(MAX_DELAY, FIRST_DELAY * 2 ** this.attempt);
    this.attempt += 1;
    return ceiling / 2 + (Math.random() * ceiling) / 2;
  }

  drop() {
    const socket = this.socket;
    this.socket = null;
    this.greeted = false;
    if (socket) socket.close();
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.clearTimer("stale");
    if (state === "reconnecting") this.timers.stale = setTimeout(() => this.setState("stale"), STALE_AFTER);
    this.handlers.state(state);
  }

  clearTimer(name) {
    clearTimeout(this.timers[name]);
    clearInterval(this.timers[name]);
    delete this.timers[name];
  }
}

// Live progress: the WebSocket GET /api/v1/events. A browser cannot set headers on it, so a
// short-lived ticket is asked for first (POST /events/ticket, with the bearer token). When the
// socket closes it is opened again, after a backoff that grows to 30 s (with jitter).

import { post } from "./api.js";

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 30000;

export function backoffDelay(attempt) {
  const ceiling = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** attempt);
  return ceiling / 2 + (Math.random() * ceiling) / 2;
}

export class EventStream {
  // onEvent(object) for each event; onState("live" | "connecting" | "offline", reason).
  constructor(onEvent, onState) {
    this.onEvent = onEvent;
    this.onState = onState;
    this.attempt = 0;
    this.socket = null;
    this.timer = null;
    this.stopped = true;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close();
    this.socket = null;
  }

  async connect() {
    if (this.stopped) return;
    this.onState("connecting");
    let ticket;
    try {
      ticket = (await post("/events/ticket")).ticket;
    } catch (err) {
      this.again(err.message);
      return;
    }
    if (this.stopped) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/api/v1/events?ticket=${encodeURIComponent(ticket)}`);
    this.socket = socket;
    socket.onopen = () => {
      this.attempt = 0;
      this.onState("live");
    };
    socket.onmessage = (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      this.onEvent(event);
    };
    socket.onclose = (close) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.again(close.reason || `closed (${close.code})`);
    };
  }

  again(reason) {
    if (this.stopped) return;
    this.onState("offline", reason);
    this.timer = setTimeout(() => this.connect(), backoffDelay(this.attempt++));
  }
}

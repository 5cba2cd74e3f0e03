// One connection per browser origin for every tab: the tab holding a Web
// Lock runs the real client and rebroadcasts what it receives on a
// BroadcastChannel; the other tabs listen. When the leading tab closes (or
// calls close()), the lock passes to another tab, whose client resumes after
// the last id every tab heard. HTTP/1.1 allows 6 connections per origin, so
// several tabs with a stream each quickly starve the page of connections.

import { eventsOf } from "./events.js";

const RECENT = 256;

export class SharedClient {
  #key;
  #channel;
  #connect;
  #raw = null; // the real client, in the leading tab only
  #release = null;
  #closed = false;
  #handlers = new Map(); // type -> Set(handler)
  #stateHandlers = new Set();
  #errorHandlers = new Set();
  #state = { kind: "connecting", attempt: 0 };
  #lastEventId;
  #recent = [];
  #forwarded = new Set();

  /** `connect(lastEventId)` makes the real client when this tab leads. */
  constructor(key, connect, lastEventId) {
    this.#key = key;
    this.#connect = connect;
    this.#lastEventId = lastEventId;
    this.#channel = new BroadcastChannel(key);
    this.#channel.onmessage = ({ data }) => this.#receive(data);
    navigator.locks
      .request(key, () => (this.#closed ? undefined : this.#lead()))
      .catch((error) => this.#fail(error));
  }

  get isLeader() {
    return this.#raw !== null;
  }

  async #lead() {
    try {
      this.#raw = await this.#connect(this.#lastEventId);
    } catch (error) {
      this.#fail(error);
      return;
    }
    if (this.#closed) {
      this.#raw.close();
      this.#raw = null;
      return;
    }
    this.#raw.onState((state) => this.#publish({ kind: "state", state }));
    this.#raw.onError((error) =>
      this.#publish({ kind: "error", error: { message: error.message, kind: error.kind, status: error.status, eventType: error.eventType } }),
    );
    for (const type of this.#handlers.keys()) this.#forward(type);
    this.#channel.postMessage({ kind: "hello" }); // followers: say what you need
    await new Promise((resolve) => (this.#release = resolve));
  }

  #forward(type) {
    if (!this.#raw || this.#forwarded.has(type)) return;
    this.#forwarded.add(type);
    this.#raw.on(type, (data, meta) => this.#publish({ kind: "event", type, data, id: meta.id }));
  }

  /** Sends to the other tabs and handles it here too. */
  #publish(message) {
    this.#channel.postMessage(message);
    this.#receive(message);
  }

  #receive(message) {
    switch (message.kind) {
      case "hello":
        if (this.#handlers.size > 0) this.#channel.postMessage({ kind: "want", types: [...this.#handlers.keys()] });
        break;
      case "want":
        for (const type of message.types) this.#forward(type);
        // A tab that just joined learns the state too.
        if (this.#raw) this.#channel.postMessage({ kind: "state", state: this.#raw.state });
        break;
      case "event": {
        if (message.id) {
          if (this.#recent.includes(message.id)) return;
          this.#recent.push(message.id);
          if (this.#recent.length > RECENT) this.#recent.shift();
          this.#lastEventId = message.id;
        }
        for (const handler of [...(this.#handlers.get(message.type) ?? [])]) {
          try {
            handler(message.data, { id: message.id, type: message.type });
          } catch (error) {
            this.#emitError(Object.assign(new Error(String(error?.message ?? error)), { kind: "handler", eventType: message.type }));
          }
        }
        break;
      }
      case "state":
        this.#setState(message.state);
        break;
      case "error":
        this.#emitError(Object.assign(new Error(message.error.message), message.error));
        break;
    }
  }

  #setState(state) {
    this.#state = state;
    for (const handler of [...this.#stateHandlers]) handler(state);
  }

  #emitError(error) {
    for (const handler of [...this.#errorHandlers]) handler(error);
  }

  #fail(error) {
    this.#emitError(Object.assign(new Error(String(error?.message ?? error)), { kind: "config" }));
  }

  on(type, handler) {
    if (!this.#handlers.has(type)) {
      this.#handlers.set(type, new Set());
      this.#forward(type);
      this.#channel.postMessage({ kind: "want", types: [type] });
    }
    this.#handlers.get(type).add(handler);
    return () => this.off(type, handler);
  }

  off(type, handler) {
    if (handler === undefined) this.#handlers.get(type)?.clear();
    else this.#handlers.get(type)?.delete(handler);
  }

  onState(handler) {
    this.#stateHandlers.add(handler);
    return () => this.#stateHandlers.delete(handler);
  }

  onError(handler) {
    this.#errorHandlers.add(handler);
    return () => this.#errorHandlers.delete(handler);
  }

  get state() {
    return this.#closed ? { kind: "closed" } : this.#state;
  }

  get lastEventId() {
    return this.#lastEventId;
  }

  events(...types) {
    return eventsOf(this, types);
  }

  [Symbol.asyncIterator]() {
    return this.events();
  }

  /** Leaves the group; if this tab led, another tab takes over the stream. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#raw?.close();
    this.#raw = null;
    this.#release?.();
    this.#channel.close();
    this.#handlers.clear();
    this.#setState({ kind: "closed" });
    this.#stateHandlers.clear();
    this.#errorHandlers.clear();
  }
}

// The `tidings` package: a thin ES module over the WebAssembly client
// (web/pkg, built by scripts/build-web.sh). Types: ../index.d.ts.
import init, { TidingsClient } from "../pkg/tidings_wasm.js";
import { eventsOf } from "./events.js";
import { fetchPresence } from "./presence.js";

let ready;

/** Loads the WebAssembly once; `connect` calls it for you. */
export function initTidings(wasm) {
  ready ??= init(wasm === undefined ? undefined : { module_or_path: wasm });
  return ready;
}

/** Opens a stream for `options.topics` at `url` (the server's `/events`).
 * With `shared: true`, tabs of this origin asking for the same URL, topics
 * and transport with the same credentials share one connection. */
export async function connect(url, options = {}) {
  await initTidings(options.wasm);
  const open = (options) => new Client(new TidingsClient(String(url), options), url, options);
  if (options.shared) {
    // Loaded only by apps that share: bundlers split it into its own chunk.
    const { SharedClient, canShare } = await import("./shared.js");
    if (canShare()) return new SharedClient(url, options, open);
    // Unavailable here (no Web Locks, BroadcastChannel or crypto.subtle,
    // which needs a secure context): this tab holds its own connection.
    return Object.defineProperty(open(options), "isLeader", { value: true });
  }
  return open(options);
}

// Open clients, kept reachable like an open EventSource: otherwise the
// garbage collector would free (and so close) a client the app subscribed
// to without keeping a reference.
const live = new Set();

export class Client {
  #raw;
  #url;
  #options;

  constructor(raw, url, options = {}) {
    this.#raw = raw;
    this.#url = url;
    this.#options = options;
    live.add(this);
    raw.onState((state) => state.kind === "closed" && live.delete(this));
  }

  on(type, handler) {
    this.#raw.on(type, handler);
    return () => this.#raw.off(type, handler);
  }

  off(type, handler) {
    this.#raw.off(type, handler);
  }

  onState(handler) {
    this.#raw.onState(handler);
    return () => this.#raw.offState(handler);
  }

  onError(handler) {
    this.#raw.onError(handler);
    return () => this.#raw.offError(handler);
  }

  get state() {
    return this.#raw.state;
  }

  get lastEventId() {
    return this.#raw.lastEventId;
  }

  /** Who is subscribed to `topic` on every instance (`GET /presence`):
   * `{topic, clients, total, next}`; `{limit, cursor}` page through. */
  presence(topic, query = {}) {
    const { headers, withCredentials } = this.#options;
    return fetchPresence(this.#url, String(topic), query, { token: this.#raw.token, headers, withCredentials });
  }

  close() {
    this.#raw.close();
    live.delete(this);
  }

  /** Events of the given types (default `message`) as an async iterator;
   * it ends when the client closes or the loop breaks. */
  events(...types) {
    return eventsOf(this, types);
  }

  [Symbol.asyncIterator]() {
    return this.events();
  }
}

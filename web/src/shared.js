// One connection per browser origin and account: the tab holding a Web Lock
// runs the real client and rebroadcasts what it receives on a
// BroadcastChannel; the other tabs listen. When the leading tab closes (or
// its client ends), the lock passes to another tab, whose client resumes
// after the last id every tab heard. HTTP/1.1 allows 6 connections per
// origin, so several tabs with a stream each quickly starve the page.
//
// Tabs share only when they hold the same credentials: the lock and the
// channel are named by a hash of URL, topics, transport and identity (see
// `identity`), never by anything a tab without the token could use. And a
// tab joins a group only after the server accepted its own credentials
// (its own connection, closed once open): a token whose claims look like
// another tab's but that the server refuses never hears that tab's events.

import { eventsOf } from "./events.js";
import { fetchPresence } from "./presence.js";

const RECENT = 256;
const CONTROL = "tidings.";

/** Whether this browser can share (else `connect` opens a connection of its own). */
export const canShare = () =>
  typeof navigator !== "undefined" && !!navigator.locks && typeof BroadcastChannel !== "undefined" && !!globalThis.crypto?.subtle;

function base64UrlJson(part) {
  const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
  const bytes = Uint8Array.from(atob(base64 + "===".slice((base64.length + 3) % 4)), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

/** Same value, object keys sorted and string lists sorted (pattern lists are sets). */
function canonical(value) {
  if (Array.isArray(value)) {
    const items = value.map(canonical);
    return items.every((item) => typeof item === "string") ? items.sort() : items;
  }
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.keys(value).sort().map((key) => [key, canonical(value[key])]));
  }
  return value;
}

/**
 * Who a token speaks for. A JWT with a `sub` claim: its issuer, audience,
 * subject and Tidings grants, so a refreshed token of the same account (new
 * `iat`/`exp`, new signature) keeps sharing. Any other token: the token
 * itself (no sharing across refreshes, but never a wrong one). The claims
 * are read, not verified: they only pick the group, and the server checks
 * every tab's own token before it joins one.
 */
function identity(token) {
  if (typeof token !== "string" || token === "") return null;
  try {
    const claims = base64UrlJson(token.split(".")[1]);
    if (typeof claims.sub === "string" && claims.sub !== "") {
      return ["sub", claims.iss ?? null, claims.aud ?? null, claims.sub, canonical(claims.tidings ?? null)];
    }
  } catch {
    // Not a JWT: the token is its own identity.
  }
  return ["token", token];
}

/** The bearer token the client sends: `token`, else (fetch) an `Authorization: Bearer` header. */
function bearer(options, token) {
  if (token) return token;
  const header = Object.entries(options.headers ?? {}).find(([name]) => name.toLowerCase() === "authorization");
  return header && /^bearer /i.test(header[1]) ? header[1].slice(7).trim() : undefined;
}

/** The lock and channel name for these options and token: a SHA-256 hash. */
async function groupKey(url, options, token) {
  const transport = options.transport ?? "eventsource";
  const headers = Object.entries(options.headers ?? {})
    .filter(([name]) => transport === "fetch" && name.toLowerCase() !== "authorization")
    .map(([name, value]) => [name.toLowerCase(), value])
    .sort();
  const material = JSON.stringify([
    transport,
    new URL(String(url), globalThis.location?.href).href,
    [].concat(options.topics ?? []).sort(),
    !!options.withCredentials,
    headers,
    !!options.presence,
    options.presenceInfo ?? null,
    identity(bearer(options, token)),
  ]);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(material)));
  return "tidings:" + Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

const plainError = (error) => ({ message: error.message, kind: error.kind, status: error.status, eventType: error.eventType });

export class SharedClient {
  #url;
  #options;
  #open; // (options) => Client: a connection of this tab's own
  #token; // this tab's current token; never leaves the tab
  #member = 0; // current membership; callbacks of earlier ones are ignored
  #key = null; // the current membership's lock and channel name
  #abort = null; // aborts the current membership's lock request
  #channel = null;
  #raw = null; // the real client, in the leading tab only
  #check = null; // the client checking this tab's credentials before it follows
  #release = null;
  #closed = false;
  #handlers = new Map(); // type -> Set(handler)
  #stateHandlers = new Set();
  #errorHandlers = new Set();
  #state = { kind: "connecting", attempt: 0 };
  #lastEventId;
  #recent = [];
  #forwarded = new Set();

  constructor(url, options, open) {
    this.#url = url;
    this.#options = options;
    this.#open = open;
    this.#token = options.token;
    this.#lastEventId = options.lastEventId;
    this.#join().catch((error) => this.#fail(error));
  }

  get isLeader() {
    return this.#raw !== null;
  }

  #current(member) {
    return !this.#closed && member === this.#member;
  }

  /** Joins the group of the current credentials: leads it at once if no
   * tab does, else checks this tab's credentials with the server, then
   * follows and waits in line to lead. */
  async #join() {
    const member = ++this.#member;
    const key = await groupKey(this.#url, this.#options, this.#token);
    if (!this.#current(member)) return;
    this.#key = key;
    const abort = (this.#abort = new AbortController());
    const lead = () => (this.#current(member) ? this.#lead(member, key) : undefined);
    const ignoreAbort = (error) => error?.name === "AbortError" || this.#fail(error);
    const leading = await new Promise((resolve) => {
      navigator.locks
        .request(key, { ifAvailable: true }, (lock) => {
          resolve(!!lock);
          return lock ? lead() : undefined;
        })
        .catch((error) => (resolve(true), ignoreAbort(error)));
    });
    if (leading || !this.#current(member)) return;
    if (!(await this.#checkCredentials(member))) {
      if (this.#current(member)) this.close();
      return;
    }
    if (!this.#current(member)) return;
    this.#listen(key);
    navigator.locks.request(key, { signal: abort.signal }, lead).catch(ignoreAbort);
  }

  /** Opens a connection with this tab's own credentials and closes it once
   * the server accepted them; resolves whether it did. Its states and
   * errors (a 403, a `getToken` call) are this tab's. */
  #checkCredentials(member) {
    return new Promise((resolve) => {
      let check;
      try {
        check = this.#connect(member, undefined);
      } catch (error) {
        this.#fail(error);
        return resolve(false);
      }
      this.#check = check;
      check.onError((error) => this.#current(member) && this.#emitError(error));
      check.onState((state) => {
        if (state.kind === "open") {
          resolve(true); // before close(), which reports `closed`
          this.#check = null;
          check.close();
        } else if (state.kind === "closed") {
          resolve(false);
        } else if (this.#current(member)) {
          this.#setState(state);
        }
      });
    });
  }

  /** A client of this tab's own; its `getToken` watches for another account. */
  #connect(member, lastEventId) {
    const hook = this.#options.getToken;
    const getToken =
      hook &&
      (async () => {
        const token = await hook();
        if (!this.#current(member) || typeof token !== "string") return token;
        this.#token = token;
        const key = await groupKey(this.#url, this.#options, token);
        if (!this.#current(member)) return null;
        if (key !== this.#key) {
          // Another account: leave this group (another tab of it takes the
          // stream over with its own token) and join that account's.
          this.#rejoin();
          return null;
        }
        return token;
      });
    return this.#open({ ...this.#options, shared: false, token: this.#token, getToken, lastEventId });
  }

  async #lead(member, key) {
    this.#listen(key);
    let raw;
    try {
      raw = this.#connect(member, this.#lastEventId);
    } catch (error) {
      this.#fail(error);
      return;
    }
    this.#raw = raw;
    const mine = () => this.#raw === raw && this.#current(member);
    raw.onState((state) => {
      if (!mine()) return;
      if (state.kind === "closed") {
        // Closed on its own (credentials refused or expired with no new
        // token, 204): this tab is done; another one may lead.
        this.close();
      } else {
        this.#publish({ kind: "state", state });
      }
    });
    raw.onError((error) => {
      if (!mine()) return;
      // Credentials are this tab's business; stream trouble is everyone's.
      if (error.kind === "auth" || error.kind === "handler") this.#emitError(error);
      else this.#publish({ kind: "error", error: plainError(error) });
    });
    // The server's own events carry resume points every tab must know.
    for (const type of ["tidings.connected", "tidings.gap", ...this.#handlers.keys()]) this.#forward(type);
    this.#channel.postMessage({ kind: "hello" }); // followers: say what you need
    await new Promise((resolve) => (this.#release = resolve));
  }

  /** Leaves this group for the one of the current token. */
  #rejoin() {
    this.#leave();
    this.#setState({ kind: "connecting", attempt: 0 });
    this.#join().catch((error) => this.#fail(error));
  }

  /** Ends the current membership: connection, check, lock and channel. */
  #leave() {
    this.#member += 1;
    const raw = this.#raw;
    this.#raw = null;
    raw?.close();
    this.#check?.close();
    this.#check = null;
    this.#abort?.abort();
    this.#release?.();
    this.#release = null;
    this.#channel?.close();
    this.#channel = null;
    this.#forwarded.clear();
  }

  #listen(key) {
    if (this.#channel) return;
    this.#channel = new BroadcastChannel(key);
    this.#channel.onmessage = ({ data }) => this.#receive(data);
    // The leader answers with the state (and forwards these types).
    this.#channel.postMessage({ kind: "want", types: [...this.#handlers.keys()] });
  }

  #forward(type) {
    if (!this.#raw || this.#forwarded.has(type)) return;
    this.#forwarded.add(type);
    this.#raw.on(type, (data, meta) => this.#publish({ kind: "event", type, data, id: meta.id }));
  }

  /** Sends to the other tabs and handles it here too. */
  #publish(message) {
    this.#channel?.postMessage(message);
    this.#receive(message);
  }

  #receive(message) {
    switch (message.kind) {
      case "hello":
        if (this.#handlers.size > 0) this.#channel?.postMessage({ kind: "want", types: [...this.#handlers.keys()] });
        break;
      case "want":
        for (const type of message.types) this.#forward(type);
        // A tab that just joined learns the state too.
        if (this.#raw) this.#channel?.postMessage({ kind: "state", state: this.#raw.state });
        break;
      case "event": {
        if (message.id) {
          // The server's own events are never duplicates (their id may
          // repeat the resume point); they still move it.
          if (!message.type.startsWith(CONTROL)) {
            if (this.#recent.includes(message.id)) return;
            this.#recent.push(message.id);
            if (this.#recent.length > RECENT) this.#recent.shift();
          }
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
      this.#channel?.postMessage({ kind: "want", types: [type] });
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

  /** Who is subscribed to `topic` (`GET /presence`), asked with this tab's own credentials. */
  presence(topic, query = {}) {
    const { headers, withCredentials } = this.#options;
    return fetchPresence(this.#url, String(topic), query, { token: bearer(this.#options, this.#token), headers, withCredentials });
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
    this.#leave();
    this.#closed = true;
    this.#handlers.clear();
    this.#setState({ kind: "closed" });
    this.#stateHandlers.clear();
    this.#errorHandlers.clear();
  }
}

// Types for the `tidings` package (hand-written; the runtime is src/index.js).
// The TypeScript examples of README.md and web/README.md are compiled against
// this file by web/consumer-test/run.sh.

/** Message types and their data, e.g. `{ status: { state: string }; chat: Chat }`
 * (a type alias or an interface). */
export type EventMap = Record<string, unknown>;

/** The events the server itself sends, whatever your map says. */
export type TidingsEvents = {
  /** First event of every stream. */
  "tidings.connected": { connectionId: string; topics: string[] };
  /** Events were lost (the resume point left the server's history, or
   * continuity could not be proven): reload your state. */
  "tidings.gap": { lastEventId: string | null; reason?: string };
  /** The token expired; the client calls `getToken` and resumes by itself. */
  "tidings.expired": unknown;
  /** A stream subscribed to one of this stream's topics (only with `presence: true`). */
  "tidings.join": PresenceEvent;
  /** A stream left one of this stream's topics, or its instance died (only with `presence: true`). */
  "tidings.leave": PresenceEvent;
};

/** One stream subscribed to a topic, as `presence()` lists it. Type `info`
 * with `presence<Info>()` or `PresenceEvent<Info>`. */
export interface PresenceClient<Info = Record<string, unknown>> {
  /** The stream's `tidings.connected` id. */
  connectionId: string;
  /** The token's `tidings.info` claim (else `{sub}`), or an anonymous client's `presenceInfo`. */
  info: Info;
  /** When it subscribed, ms since the Unix epoch. */
  since: number;
  /** True when `info` comes from a token the server checked; false for `presenceInfo`. */
  verified: boolean;
}

/** Data of `tidings.join` and `tidings.leave`. */
export interface PresenceEvent<Info = Record<string, unknown>> extends PresenceClient<Info> {
  /** The topic joined or left. */
  topic: string;
}

/** A page of `client.presence(topic)`. */
export interface Presence<Info = Record<string, unknown>> {
  topic: string;
  /** Oldest first, up to the page's limit. */
  clients: PresenceClient<Info>[];
  /** Streams subscribed to the topic on every instance. */
  total: number;
  /** Pass as `cursor` for the next page; null on the last. */
  next: string | null;
}

/** Paging for `client.presence(topic, query)`. */
export interface PresenceQuery {
  /** Most clients in the answer (the server caps it, 100 by default). */
  limit?: number;
  /** The previous page's `next`. */
  cursor?: string;
}

/** Every event type a client of map `M` can listen to: `M`'s and the server's own. */
export type AllEvents<M extends object> = Omit<M, keyof TidingsEvents> & TidingsEvents;

/** The data of `message` events (published without a `type`): `M["message"]`, else `unknown`. */
export type MessageData<M extends object> = M extends { message: infer D } ? D : unknown;

/** An event's id and type, passed next to its data. */
export interface EventMeta<K extends string = string> {
  /** Event id; the client resumes after the last one it saw. */
  id: string | null;
  /** The message type (`event:` field). */
  type: K;
}

/** One event from `events()` or `for await (const e of client)`. */
export type TidingsEvent<M extends object, K extends keyof M & string = keyof M & string> = {
  [P in K]: EventMeta<P> & { data: M[P] };
}[K];

/** The connection state. */
export type State =
  | { kind: "connecting"; attempt: number }
  | { kind: "open" }
  | { kind: "reconnecting"; attempt: number; delayMs: number }
  | { kind: "authenticating" }
  | { kind: "closed" };

/** Errors passed to `onError`. `http` and `network` errors are followed by a reconnect. */
export interface TidingsError extends Error {
  /** `auth`: the token was refused (401/403, with `status`) or expired with
   * no `getToken` to refresh it (no `status`); the client is closed. */
  kind: "http" | "auth" | "network" | "decode" | "handler" | "config";
  /** The HTTP status for `http` (429, 502, 503...) and `auth` (401, 403). */
  status?: number;
  /** For `decode` and `handler` errors: the event type. */
  eventType?: string;
  /** For `decode` errors: the event id. */
  id?: string;
}

export interface ConnectOptions {
  /** Topics and patterns (`order:*`, `news:>`) carried by the one stream. */
  topics: string | string[];
  /** `eventsource` (default) or `fetch` (sends headers, reads `retry:`). */
  transport?: "eventsource" | "fetch";
  /** Request headers; `fetch` transport only. */
  headers?: Record<string, string>;
  /** JWT: `Authorization: Bearer` with fetch, `access_token` query parameter with EventSource. */
  token?: string;
  /** Called after a 401/403 and when the token expires on an open stream
   * (`tidings.expired`); resolve a fresh token to resume, or null to stop. */
  getToken?: () => string | null | undefined | Promise<string | null | undefined>;
  /** Send cookies cross-origin. */
  withCredentials?: boolean;
  /** Backoff: first retry waits up to this many ms (default 1000). */
  initialDelay?: number;
  /** Backoff: no wait grows beyond this many ms (default 30000), except the server's `retry:`. */
  maxDelay?: number;
  /** A connection open this long (ms, default 5000) resets the backoff. */
  resetAfter?: number;
  /** Resume after an id kept from an earlier page. */
  lastEventId?: string;
  /** Receive `tidings.join` / `tidings.leave` for this stream's topics (`presence=1`). */
  presence?: boolean;
  /** What presence shows about this client when it has no token: a JSON
   * object of at most 256 bytes once serialised; shown as unverified. */
  presenceInfo?: Record<string, unknown>;
  /** Share one connection among this origin's tabs asking for the same URL,
   * topics, transport and credentials (Web Locks + BroadcastChannel; falls
   * back to a connection of its own where those or `crypto.subtle` are
   * missing). See the package README for what "same credentials" means. */
  shared?: boolean;
  /** Where to load the `.wasm` from, if your bundler does not resolve it. */
  wasm?: string | URL | Response | BufferSource | WebAssembly.Module;
}

/** Loads the WebAssembly once; `connect` calls it for you. */
export function initTidings(wasm?: ConnectOptions["wasm"]): Promise<unknown>;

/** Opens one stream at `url` (the server's `/events`) for `options.topics`,
 * shared with this origin's other tabs that hold the same credentials. */
export function connect<M extends object = EventMap>(
  url: string | URL,
  options: ConnectOptions & { shared: true },
): Promise<SharedClient<M>>;
/** Opens one stream at `url` (the server's `/events`) for `options.topics`. */
export function connect<M extends object = EventMap>(url: string | URL, options: ConnectOptions): Promise<Client<M>>;

export class Client<M extends object = EventMap> {
  private constructor();
  /** Calls `handler(data, meta)` for each event of `type` (yours or a
   * `tidings.*` one); returns an unsubscribe function. */
  on<K extends keyof AllEvents<M> & string>(type: K, handler: (data: AllEvents<M>[K], meta: EventMeta<K>) => void): () => void;
  /** Removes `handler` (or every handler of `type`). */
  off<K extends keyof AllEvents<M> & string>(type: K, handler?: (data: AllEvents<M>[K], meta: EventMeta<K>) => void): void;
  /** Calls `handler` on every state change; returns an unsubscribe function. */
  onState(handler: (state: State) => void): () => void;
  /** Calls `handler` for every error; returns an unsubscribe function. */
  onError(handler: (error: TidingsError) => void): () => void;
  /** The connection state now. */
  readonly state: State;
  /** The id the client resumes after. */
  readonly lastEventId: string | undefined;
  /** Who is subscribed to `topic` (exactly, not through a pattern) on every
   * instance; rejects with a `TidingsError` (`auth` with 401/403). */
  presence<Info = Record<string, unknown>>(topic: string, query?: PresenceQuery): Promise<Presence<Info>>;
  /** Closes for good: no timer, listener or callback stays behind. */
  close(): void;
  /** Events of the given types (default `message`); ends when the client closes. */
  events<K extends keyof AllEvents<M> & string>(...types: K[]): AsyncIterableIterator<TidingsEvent<AllEvents<M>, K>>;
  /** `message` events (those published without a `type`); use `events(...)` for others. */
  [Symbol.asyncIterator](): AsyncIterableIterator<EventMeta<"message"> & { data: MessageData<M> }>;
}

/** A client whose connection is shared with other tabs holding the same
 * credentials: one tab (the leader) holds the stream and forwards events;
 * when it closes, another takes over and resumes after the last id every
 * tab heard. */
export interface SharedClient<M extends object = EventMap> extends Client<M> {
  /** Whether this tab holds the connection (always true when sharing is
   * not available and the client fell back to a connection of its own). */
  readonly isLeader: boolean;
}

// Helpers shared by the demo pages. The pages talk to the server only through
// the `tidings` package (served at ./tidings/, a link to web/src and web/pkg)
// and `POST /publish`.
export { connect } from "./tidings/src/index.js";

/** What the end-to-end tests read besides the DOM: state changes with times. */
export const debug = (window.tidingsDemo = { states: [], published: [], connectionId: null });

/**
 * Publishes one message (or an array) with `POST /publish` and returns the
 * server's answer (`{id}` or `{ids}`). Throws an Error carrying the server's
 * message and `status` when the server refuses. `keepalive` lets the request
 * outlive the page (used while the tab closes).
 */
export async function publish(messages, { token, keepalive = false } = {}) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch("/publish", { method: "POST", headers, body: JSON.stringify(messages), keepalive });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.error?.message ?? `publish failed with HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  debug.published.push({ at: Date.now(), ids: body.ids ?? [body.id] });
  return body;
}

const stateLabels = {
  connecting: "connecting…",
  open: "live",
  reconnecting: "reconnecting…",
  authenticating: "renewing token…",
  closed: "offline",
};

/**
 * Shows a client's connection state in `badge` and records it in
 * `debug.states`; `override(state)` may return `{kind, text}` to show instead.
 */
export function trackState(client, badge, override = () => null) {
  const show = (state) => {
    debug.states.push({ kind: state.kind, at: Date.now() });
    let text = stateLabels[state.kind] ?? state.kind;
    if (state.kind === "reconnecting") text += ` attempt ${state.attempt}, in ${(state.delayMs / 1000).toFixed(1)} s`;
    const shown = override(state) ?? { kind: state.kind, text };
    badge.dataset.state = shown.kind;
    badge.textContent = shown.text;
  };
  show(client.state);
  return client.onState(show);
}

/**
 * What `scripts/demo` wrote for this server instance (`demo-run.json`:
 * `{instance: {n, of, address, engine, streamKey?}, tenants: {name: token}}`),
 * or null when the server was started without it. Fetched anew each time: a
 * page behind a load balancer may land on another instance after a reconnect.
 */
export async function demoRun() {
  try {
    const response = await fetch("demo-run.json", { cache: "no-store" });
    return response.ok ? await response.json() : null;
  } catch {
    return null;
  }
}

/**
 * Shows in `element` which server instance serves this page: its address,
 * and with several instances its number and the shared engine. Call it on
 * every `tidings.connected` (a reconnect may land elsewhere).
 */
export async function showInstance(element) {
  const instance = (await demoRun())?.instance;
  if (!instance) {
    element.textContent = `server ${location.host}`;
    return;
  }
  const several = instance.of > 1;
  element.textContent = several ? `instance ${instance.n} of ${instance.of} · ${instance.address}` : `server ${instance.address}`;
  element.title = `connected to ${instance.address}` +
    (instance.engine === "redis"
      ? `; instances share Redis stream ${instance.streamKey}`
      : instance.engine === "nats"
        ? `; instances share NATS JetStream stream ${instance.streamKey}`
        : "; in-memory broker");
  element.dataset.address = instance.address;
  element.dataset.n = instance.n;
  debug.instance = instance;
}

/** Prepends a line to a log list: `[time] text`, with `data-kind` for styling and tests. */
export function logLine(list, kind, ...parts) {
  const item = document.createElement("li");
  item.dataset.kind = kind;
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString([], { hour12: false });
  const text = document.createElement("span");
  text.append(...parts);
  item.append(time, text);
  list.prepend(item);
  return item;
}

/** `<span class="tag CLASS">text</span>` */
export function tag(text, className = "") {
  const span = document.createElement("span");
  span.className = `tag ${className}`.trim();
  span.textContent = text;
  return span;
}

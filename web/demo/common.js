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

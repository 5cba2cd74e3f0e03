// The order-status board. Each tenant's orders are topics
// `order:status:<tenant>:<order>`; a tenant's token may subscribe and publish
// to `order:status:<tenant>:>` only, so watching another tenant is refused
// with 403. The token comes in the URL fragment (`#tenant=acme&token=...`,
// never sent to a server) and goes out in the fetch transport's
// `Authorization` header and in the publish request's. Without one, the page
// offers the demo tenants' tokens that `scripts/demo` wrote for this run
// (`demo-run.json`), or a field to paste a token.
//
// Each status change carries the time it was published (`at`), so a board
// that replays the history after a reload shows when each change happened.
import { connect, debug, demoRun, logLine, publish, showInstance, tag, trackState } from "./common.js";

const $ = (id) => document.getElementById(id);
const statusClass = { placed: "", paid: "accent", packed: "accent", shipped: "warn", delivered: "ok", cancelled: "bad" };

let token = null;
let ownTenant = null;
let client = null;
let watching = null;
let dropped = false;
let generation = 0; // bumped on every switch: a stream opened for an older one is closed
const orders = new Map(); // order -> {status, at: Date, published: bool}
const seen = new Map(); // event id -> times delivered (a duplicate would show)
const publishedOffline = new Set(); // ids published while the stream was dropped

/** The tenant in the token's grant `order:status:<tenant>:>`, for display. */
function tenantOf(jwt) {
  try {
    const claims = JSON.parse(atob(jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return claims.tidings.subscribe.map((p) => /^order:status:([^:*>]+):/.exec(p)?.[1]).find(Boolean) ?? null;
  } catch {
    return null;
  }
}

// Pasting another token link into this tab changes only the fragment: no
// reload, so the page follows the fragment itself.
addEventListener("hashchange", () => open());
open();

/** Shows the board for the token in the URL fragment, or the token chooser without one. */
function open() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  token = fragment.get("token");
  ownTenant = fragment.get("tenant") ?? tenantOf(token);
  generation++;
  client?.close();
  client = null;
  $("no-token").hidden = Boolean(token);
  $("board").hidden = !token;
  $("sign-out").hidden = !token;
  if (!token) {
    $("who").textContent = "";
    $("state").dataset.state = "closed";
    $("state").textContent = "not connected";
    offerTokens();
    return;
  }
  $("who").textContent = ownTenant ? `signed in as tenant ${ownTenant}` : "signed in";
  switchTo(ownTenant ?? "");
}

/** Lists the demo tenants of this run (links that carry their token). */
async function offerTokens() {
  const run = await demoRun();
  showInstanceOf(run);
  const tenants = Object.entries(run?.tenants ?? {});
  $("demo-tenants").replaceChildren(
    ...tenants.map(([tenant, jwt]) => {
      const link = document.createElement("a");
      link.className = "button";
      link.href = `#${new URLSearchParams({ tenant, token: jwt })}`;
      link.dataset.tenant = tenant;
      link.textContent = `Open ${tenant}'s board`;
      return link;
    }),
  );
  $("demo-tenants-intro").hidden = tenants.length === 0;
  $("no-demo-run").hidden = tenants.length > 0;
}

function showInstanceOf(run) {
  if (run) showInstance($("instance"));
  else $("instance").textContent = `server ${location.host}`;
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const pasted = $("token-input").value.trim();
  // A whole link, or only the token.
  const fragment = new URLSearchParams(pasted.includes("#") ? pasted.slice(pasted.indexOf("#") + 1) : "");
  const jwt = fragment.get("token") ?? pasted;
  const tenant = fragment.get("tenant") ?? tenantOf(jwt);
  location.hash = new URLSearchParams(tenant ? { tenant, token: jwt } : { token: jwt }).toString();
});

/** Clears the board and watches `tenant`'s orders from the retained history on. */
function switchTo(tenant) {
  generation++;
  watching = tenant;
  $("watch").value = tenant;
  orders.clear();
  seen.clear();
  publishedOffline.clear();
  render();
  $("events").replaceChildren();
  $("last-id").textContent = "–";
  $("publish-result").textContent = "";
  $("publish-result").className = "muted";
  setDropped(false);
  watch(tenant, "0-0").catch(showConnectError); // `0-0`: not an id; the server answers with all it retains
}

/** Opens the stream for `tenant`'s orders, resuming after `lastEventId`. */
async function watch(tenant, lastEventId) {
  client?.close();
  $("board-error").hidden = true;
  $("board-title").textContent = `Orders of ${tenant}`;
  const topics = [`order:status:${tenant}:>`];
  const mine = generation;
  const opened = await connect("/events", { topics, token, transport: "fetch", lastEventId, maxDelay: 5000 });
  if (mine !== generation) {
    opened.close(); // the user moved on while this one connected
    return;
  }
  client = opened;
  let denied = null;
  trackState(client, $("state"), (state) =>
    denied && state.kind === "closed" ? { kind: "denied", text: `denied (${denied})` } : null,
  );
  client.onError((error) => {
    if (error.kind === "auth") {
      denied = error.status;
      showError(`The server refused this token for ${topics[0]} (HTTP ${error.status}): ` +
        `tenant ${ownTenant} cannot see tenant ${tenant}'s orders.`);
    } else if (error.kind === "http" || error.kind === "network") {
      logLine($("events"), "error", tag("connection lost", "warn"), ` ${error.message}; reconnecting`);
    } else {
      console.error(error);
    }
  });
  client.on("tidings.connected", () => showInstance($("instance")));
  const fromStart = lastEventId === "0-0";
  let received = 0;
  client.on("tidings.gap", () => {
    // Asking for everything from `0-0` always reaches past the retained
    // history: that is the point of the first load, not a loss.
    if (fromStart && received === 0) logLine($("events"), "history", tag("history"), " the changes the server still holds:");
    else logLine($("events"), "gap", tag("gap", "bad"), " some updates are older than the server's history: reload");
  });
  client.on("status", () => received++);
  client.on("status", onStatus);
}

function onStatus(data, meta) {
  const times = (seen.get(meta.id) ?? 0) + 1;
  seen.set(meta.id, times);
  // When the change happened, as its publisher said; a message without
  // `at` (e.g. from curl) shows when it arrived.
  const published = publishedAt(data.at);
  orders.set(data.order, { status: data.status, at: published ?? new Date(), published: Boolean(published) });
  $("last-id").textContent = meta.id;
  const parts = [tag(data.status, statusClass[data.status] ?? ""), ` order ${data.order} `, code(meta.id)];
  if (publishedOffline.delete(meta.id)) parts.push(" ", tag("missed while offline, resumed", "accent"));
  if (times > 1) parts.push(" ", tag(`duplicate ×${times}`, "bad"));
  const line = logLine($("events"), "status", ...parts);
  if (published) {
    line.querySelector("time").textContent = clock(published);
    line.querySelector("time").title = "published at";
  }
  line.dataset.id = meta.id;
  line.dataset.order = data.order;
  line.dataset.status = data.status;
  render();
}

/** `at` as a Date when it is a valid time, else null. */
function publishedAt(at) {
  if (at === undefined || at === null) return null;
  const date = new Date(at);
  return Number.isNaN(date.getTime()) ? null : date;
}

const clock = (date) => date.toLocaleTimeString([], { hour12: false });

function render() {
  const rows = [...orders].sort(([a], [b]) => a.localeCompare(b, undefined, { numeric: true }));
  $("empty").hidden = rows.length > 0;
  $("received-note").hidden = rows.every(([, { published }]) => published);
  $("orders").tBodies[0].replaceChildren(
    ...rows.map(([order, { status, at, published }]) => {
      const row = document.createElement("tr");
      row.dataset.order = order;
      row.dataset.status = status;
      const when = document.createElement("time");
      when.dateTime = at.toISOString();
      when.textContent = clock(at);
      when.title = published ? `published ${at.toLocaleString()}` : "received at (the message carries no publish time)";
      for (const content of [order, tag(status, statusClass[status] ?? ""), when]) row.insertCell().append(content);
      row.cells[2].className = published ? "when" : "when received";
      return row;
    }),
  );
}

$("watch-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const tenant = $("watch").value.trim();
  if (tenant === watching && !dropped) return;
  switchTo(tenant);
});

// Drop the stream on purpose; publishing still works. Reconnecting resumes
// after the last event seen: the changes made meanwhile arrive once each.
$("drop").addEventListener("click", () => {
  debug.resumeFrom = client.lastEventId;
  client.close();
  setDropped(true);
  logLine($("events"), "drop", tag("offline", "warn"), " connection dropped; publish some changes, then reconnect");
});
$("resume").addEventListener("click", () => {
  const from = debug.resumeFrom;
  setDropped(false);
  logLine($("events"), "resume", tag("resuming", "accent"), " after ", code(from ?? "the start"));
  watch(watching, from ?? "0-0").catch(showConnectError);
});

function setDropped(value) {
  dropped = value;
  $("drop").hidden = value;
  $("resume").hidden = !value;
}

$("publish-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const order = $("order").value.trim();
  const status = $("status").value;
  const topic = `order:status:${watching}:${order}`;
  const tenant = watching;
  $("publish-result").className = "muted";
  $("publish-result").textContent = "";
  try {
    const data = { order, status, at: new Date().toISOString() };
    const { id } = await publish({ topic, type: "status", data }, { token });
    if (tenant !== watching) return; // switched meanwhile: this result is about another board
    if (dropped) publishedOffline.add(id);
    $("publish-result").textContent = `Published ${order} → ${status} as ${id}${dropped ? " (you are offline)" : ""}`;
  } catch (error) {
    if (tenant !== watching) return;
    $("publish-result").className = "alert";
    $("publish-result").textContent = `Refused (HTTP ${error.status ?? "?"}): ${error.message}`;
  }
});

function showConnectError(error) {
  showError(`Cannot connect: ${error.message}`);
}

function showError(text) {
  $("board-error").textContent = text;
  $("board-error").hidden = false;
}

function code(text) {
  const element = document.createElement("code");
  element.textContent = text;
  return element;
}

// The order-status board. Each tenant's orders are topics
// `order:status:<tenant>:<order>`; a tenant's token may subscribe and publish
// to `order:status:<tenant>:>` only, so watching another tenant is refused
// with 403. The token comes in the URL fragment (`#tenant=acme&token=...`,
// never sent to a server) and goes out in the fetch transport's
// `Authorization` header and in the publish request's.
import { connect, debug, logLine, publish, tag, trackState } from "./common.js";

const $ = (id) => document.getElementById(id);
const statusClass = { placed: "", paid: "accent", packed: "accent", shipped: "warn", delivered: "ok", cancelled: "bad" };

const fragment = new URLSearchParams(location.hash.slice(1));
const token = fragment.get("token");
const ownTenant = fragment.get("tenant") ?? tenantOf(token);

let client = null;
let watching = ownTenant;
let dropped = false;
const orders = new Map(); // order -> {status, at}
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

if (!token) {
  $("no-token").hidden = false;
} else {
  $("board").hidden = false;
  $("who").textContent = ownTenant ? `signed in as tenant ${ownTenant}` : "signed in";
  $("watch").value = watching ?? "";
  watch(watching, "0-0").catch(showConnectError); // `0-0`: replay the retained history, the board's current state
}

/** Opens the stream for `tenant`'s orders, resuming after `lastEventId`. */
async function watch(tenant, lastEventId) {
  client?.close();
  $("board-error").hidden = true;
  $("board-title").textContent = `Orders of ${tenant}`;
  const topics = [`order:status:${tenant}:>`];
  client = await connect("/events", { topics, token, transport: "fetch", lastEventId, maxDelay: 5000 });
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
  orders.set(data.order, { status: data.status, at: new Date() });
  $("last-id").textContent = meta.id;
  const parts = [tag(data.status, statusClass[data.status] ?? ""), ` order ${data.order} `, code(meta.id)];
  if (publishedOffline.delete(meta.id)) parts.push(" ", tag("missed while offline, resumed", "accent"));
  if (times > 1) parts.push(" ", tag(`duplicate ×${times}`, "bad"));
  const line = logLine($("events"), "status", ...parts);
  line.dataset.id = meta.id;
  line.dataset.order = data.order;
  line.dataset.status = data.status;
  render();
}

function render() {
  const rows = [...orders].sort(([a], [b]) => a.localeCompare(b, undefined, { numeric: true }));
  $("empty").hidden = rows.length > 0;
  $("orders").tBodies[0].replaceChildren(
    ...rows.map(([order, { status, at }]) => {
      const row = document.createElement("tr");
      row.dataset.order = order;
      row.dataset.status = status;
      const cells = [order, tag(status, statusClass[status] ?? ""), at.toLocaleTimeString([], { hour12: false })];
      for (const content of cells) row.insertCell().append(content);
      row.cells[2].className = "when";
      return row;
    }),
  );
}

$("watch-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const tenant = $("watch").value.trim();
  if (tenant === watching && !dropped) return;
  watching = tenant;
  orders.clear();
  seen.clear();
  render();
  $("events").replaceChildren();
  $("last-id").textContent = "–";
  setDropped(false);
  watch(watching, "0-0").catch(showConnectError);
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
  $("publish-result").className = "muted";
  try {
    const { id } = await publish({ topic, type: "status", data: { order, status } }, { token });
    if (dropped) publishedOffline.add(id);
    $("publish-result").textContent = `Published ${order} → ${status} as ${id}${dropped ? " (you are offline)" : ""}`;
  } catch (error) {
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

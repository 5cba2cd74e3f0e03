// The live quiz room page. The room's state is the pure `QuizRoom`
// (room.js; its players in roster.js); this page connects it to Tidings:
// one stream on `quiz:<room>:>`, `POST /publish` for what this player does.
//
// A newcomer gets the room's state from the players already there: it
// publishes `join`, and the host (or, if the host does not answer, the next
// player by seniority, a little later) answers with a `snapshot`: the room as
// it stood after that join, and the id of the last message it had applied.
// The newcomer applies what its own stream brought after that id. Nobody
// answers in an empty room: after a short wait the newcomer starts it.
//
// Who is really there comes from the server's presence: each page's stream
// also subscribes to the exact topic `quiz:<room>:here` with `presence: true`
// and says who it is (`presenceInfo: {id, name}`, unverified: the demo has
// no accounts). Every page sees the same `tidings.join` / `tidings.leave`
// events in the same order (they travel through the engine, across
// instances), and a page that arrives asks `client.presence()` who is
// there. A player whose last stream left (a closed or crashed tab, a lost
// network, a killed server instance: the server expires its entries) and
// that does not come back within a short grace is declared gone by the host
// (or the most senior player still present), which hands hosting over when
// it was the host.
import { connect, debug, logLine, publish, showInstance, tag, trackState } from "./common.js";
import { QuizRoom } from "./room.js";

const QUESTIONS = [
  { text: "What does Tidings stream to the browser?", choices: ["WebSockets", "Server-Sent Events", "Long polling", "WebRTC"], correct: 1 },
  { text: "Which header lets a reconnecting stream resume?", choices: ["If-None-Match", "Retry-After", "Last-Event-ID", "X-Resume"], correct: 2 },
  { text: "In the pattern order:>, what does > match?", choices: ["One segment", "One or more trailing segments", "Nothing", "Any character"], correct: 1 },
  { text: "What does exclude do on a publish?", choices: ["Drops the message", "Skips the sender's connection", "Delays delivery", "Hides the topic"], correct: 1 },
];

const params = new URLSearchParams(location.search);
/** How long a player may have no stream before the room counts it gone: a
 * reconnect (new stream, then the old one's leave) fits well inside it
 * (`?grace=` seconds, for tests). */
const GRACE_MS = 1000 * (Number(params.get("grace")) || 5);
/** How long a newcomer waits for a snapshot before it takes the room as empty. */
const EMPTY_ROOM_MS = 2500;
/** Delay between the snapshot answers of successive players, most senior first. */
const REPLY_STEP_MS = 700;

const $ = (id) => document.getElementById(id);

let me = null; // {id, name}
let roomName = null;
let client = null;
let connectionId = null;
let room = null; // the QuizRoom once known
let lastApplied = null; // id of the last message applied to `room`
let request = null; // this page's open request for a snapshot (see `requestSnapshot`)
let leaving = false;
const here = new Map(); // connection id -> player id, from presence
const goneTimers = new Map(); // player id -> timer of its grace period
let leftWhileAsking = null; // connections that left while `askWhoIsHere` ran
const replied = new Set(); // nonces of joins someone already answered
const replyTimers = new Map(); // nonce -> timer of this page's pending answer

const topic = (part) => `quiz:${roomName}:${part}`;
debug.room = () => room?.toJSON() ?? null;
debug.present = () => [...new Set(here.values())].sort();

showInstance($("instance"));

// Prefill from ?name=&room=&host=1 so a link can drop you into a room.
$("nickname").value = params.get("name") ?? "";
$("room-name").value = params.get("room") ?? "lobby";
$("as-host").checked = params.has("host");

$("join-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = event.submitter;
  button.disabled = true;
  $("join-error").hidden = true;
  try {
    await join($("nickname").value.trim(), $("room-name").value.trim(), $("as-host").checked);
  } catch (error) {
    showError($("join-error"), `Could not join: ${error.message}`);
    client?.close();
    client = null;
  } finally {
    button.disabled = false;
  }
});

async function join(name, nameOfRoom, wantsHost) {
  me = { id: Math.random().toString(36).slice(2, 10), name };
  roomName = nameOfRoom;
  client = await connect("/events", {
    topics: [`quiz:${roomName}:>`, `quiz:${roomName}:here`],
    maxDelay: 5000,
    presence: true,
    presenceInfo: { id: me.id, name },
  });
  trackState(client, $("state"));

  // The connection id changes on every reconnect; `exclude` needs the current one.
  const connected = new Promise((resolve, reject) => {
    client.on("tidings.connected", (data) => {
      connectionId = debug.connectionId = data.connectionId;
      showInstance($("instance"));
      // Who is there now (after a reconnect too: what went on meanwhile).
      askWhoIsHere().finally(resolve);
    });
    client.onError((error) => {
      if (error.kind === "auth" || error.kind === "config") reject(error);
    });
  });
  client.onError((error) => {
    if (error.kind === "decode" || error.kind === "handler") console.error(error);
  });
  client.on("tidings.join", (data) => data.topic === topic("here") && arrived(data.connectionId, data.info?.id));
  client.on("tidings.leave", (data) => data.topic === topic("here") && departed(data.connectionId));
  for (const type of ["join", "leave", "host", "question", "finish", "answer", "snapshot"]) {
    client.on(type, (data, meta) => receive(type, data, meta));
  }
  client.on("tidings.gap", () => {
    logLine($("activity"), "gap", "Some messages were missed: asking the room for its state again");
    if (room) requestSnapshot({ again: true }).catch(() => {});
  });
  await connected;
  await requestSnapshot({ wantsHost });

  history.replaceState(null, "", `?${new URLSearchParams({ room: roomName, name })}`);
  $("join").hidden = true;
  $("room").hidden = false;
  $("room-title").textContent = `Room “${roomName}”`;
  $("who").textContent = me.name;
  render();
  addEventListener("pagehide", leaveOnClose);
  addEventListener("beforeunload", leaveOnClose);
  checkEveryone();
}

/** Fills `here` from `GET /presence` (all pages of it). Joins and leaves
 * that arrive while it asks are newer than what it may hear: they win. */
async function askWhoIsHere() {
  const before = new Set(here.keys());
  leftWhileAsking = new Set();
  const seen = new Map();
  let cursor;
  try {
    do {
      const page = await client.presence(topic("here"), { limit: 100, cursor });
      for (const c of page.clients) if (c.info?.id) seen.set(c.connectionId, c.info.id);
      cursor = page.next ?? undefined;
    } while (cursor);
  } catch (error) {
    console.error("presence", error);
    leftWhileAsking = null;
    return;
  }
  const left = leftWhileAsking;
  leftWhileAsking = null;
  for (const connection of before) if (!seen.has(connection)) departed(connection);
  for (const [connection, id] of seen) if (!left.has(connection) && !here.has(connection)) arrived(connection, id);
  checkEveryone();
}

const isPresent = (id) => [...here.values()].includes(id);

/** A stream of player `id` joined the room. */
function arrived(connection, id) {
  if (!id) return;
  here.set(connection, id);
  clearTimeout(goneTimers.get(id));
  goneTimers.delete(id);
}

/** A stream left (or its server instance died and its entry expired). */
function departed(connection) {
  leftWhileAsking?.add(connection);
  const id = here.get(connection);
  here.delete(connection);
  if (id && !isPresent(id)) checkLater(id);
}

/** Every player of the room without a stream gets its grace period. */
function checkEveryone() {
  for (const player of room?.players ?? []) if (!isPresent(player.id)) checkLater(player.id);
}

/** After the grace, a player still without a stream is declared gone by
 * the host, else the most senior player present (every page agrees who). */
function checkLater(id) {
  if (id === me?.id || goneTimers.has(id)) return;
  goneTimers.set(
    id,
    setTimeout(() => {
      goneTimers.delete(id);
      if (!room || leaving || isPresent(id) || !room.roster.has(id)) return;
      const warden = room.roster.responders(null).find((p) => p !== id && isPresent(p));
      if (warden !== me.id) return;
      publish({ topic: topic("players"), type: "leave", data: { id, reason: "connection closed" } }).catch(() => checkLater(id));
    }, GRACE_MS),
  );
}

/**
 * Publishes this player's `join` and waits for the room's answer. Messages
 * from this `join`'s echo on are logged to be applied on top of the
 * snapshot; with no room state yet, earlier ones are skipped (the snapshot
 * holds them). `again`: a known player asking anew (after a gap, or after
 * the room counted it gone).
 */
async function requestSnapshot({ wantsHost = false, again = false } = {}) {
  const nonce = Math.random().toString(36).slice(2, 10);
  request = { nonce, wantsHost, echoed: false, log: [], timer: null };
  await publish({ topic: topic("players"), type: "join", data: { id: me.id, name: me.name, host: wantsHost, nonce, again } });
}

/** Every room message, in stream order. */
function receive(type, data, meta) {
  if (type === "snapshot") return onSnapshot(data);

  if (request && !request.echoed && type === "join" && data.nonce === request.nonce) {
    request.echoed = true;
    if (!room) request.timer = setTimeout(startEmptyRoom, EMPTY_ROOM_MS);
  }
  if (request?.echoed) {
    if (request.log.length >= 1000) request = null; // nobody answered for ages: keep what we have
    else request.log.push({ type, data, id: meta.id, shown: Boolean(room) });
  }
  if (room) applyAndReact(type, data, meta.id, true);
}

/** Applies one message to the room, logs what happened (when `show`), and does this page's part. */
function applyAndReact(type, data, id, show) {
  const wasHost = room.host === me.id;
  const notes = room.apply(type, data);
  lastApplied = id;
  if (show) for (const { kind, text, about } of notes) logLine($("activity"), kind, about === me.id ? text.replace(me.name, `${me.name} (you)`) : text);
  if (type === "join" && data.id !== me.id) scheduleReply(data);
  if (type === "join" && data.id === me.id && data.host && room.host !== me.id) {
    showNote(alreadyHosted());
  }
  if (room.host === me.id && !wasHost && !(type === "join" && data.id === me.id)) showNote("You host the room now.");
  if (type === "leave" && data.id === me.id && !leaving) {
    logLine($("activity"), "rejoin", "The room had lost sight of you: joining again");
    requestSnapshot({ again: true }).catch((error) => showError($("room-error"), `Could not rejoin: ${error.message}`));
  }
  if (show) render();
}

/** Nobody answered this page's `join`: the room was empty. Start it from the log. */
function startEmptyRoom() {
  if (room || !request) return;
  room = new QuizRoom();
  for (const entry of request.log) {
    applyAndReact(entry.type, entry.data, entry.id, true);
    entry.shown = true;
  }
  synced("You are the first in this room");
}

/** A snapshot for this page's open request replaces the room, then the log since the snapshot's point is applied. */
function onSnapshot(data) {
  replied.add(data.nonce);
  if (replied.size > 500) replied.delete(replied.values().next().value);
  clearTimeout(replyTimers.get(data.nonce));
  replyTimers.delete(data.nonce);
  if (!request || data.for !== me.id || data.nonce !== request.nonce) return;

  const first = !room;
  const { log, wantsHost } = request;
  clearTimeout(request.timer);
  request = null;
  room = QuizRoom.from(data.state);
  lastApplied = data.after;
  // Everything up to `after` is in the snapshot. Not found: it came before
  // this page's join (index 0 of the log), which the snapshot holds too.
  const at = log.findIndex((entry) => entry.id === data.after);
  for (const entry of log.slice(Math.max(at, 0) + 1)) applyAndReact(entry.type, entry.data, entry.id, !entry.shown);
  checkEveryone();
  if (first && wantsHost && room.host !== me.id) showNote(alreadyHosted());
  if (first) {
    const others = room.players.filter((p) => p.id !== me.id);
    synced(`You joined; ${others.map((p) => `${p.name}${p.id === room.host ? " (host)" : ""}`).join(", ") || "nobody else"} ${others.length === 1 ? "is" : "are"} here`);
  } else {
    logLine($("activity"), "synced", `${room.nameOf(data.from)} sent the room's state`);
    render();
  }
}

function synced(text) {
  logLine($("activity"), "self", text);
  $("room").dataset.synced = "true";
  render();
}

/**
 * Answers a newcomer's `join` with a snapshot: at once from the host (or the
 * most senior player when nobody hosts), later from the others in order of
 * seniority, unless someone answered first. The snapshot is taken when it is
 * sent, with the id of the last message it holds.
 */
function scheduleReply(joinData) {
  const { nonce, id } = joinData;
  if (replied.has(nonce) || replyTimers.has(nonce)) return;
  const rank = room.roster.responders(id).indexOf(me.id);
  if (rank < 0) return;
  const send = () => {
    replyTimers.delete(nonce);
    if (replied.has(nonce) || !room) return;
    const data = { for: id, nonce, from: me.id, after: lastApplied, state: room.toJSON() };
    publish({ topic: topic("players"), type: "snapshot", data }).catch((error) =>
      showError($("room-error"), `Could not send the room to ${joinData.name}: ${error.message}`),
    );
  };
  if (rank === 0) send();
  else replyTimers.set(nonce, setTimeout(send, rank * REPLY_STEP_MS));
}

/** Tells the room this player left; runs while the tab closes, so `keepalive`. */
function announceLeave() {
  if (!me || !connectionId) return Promise.resolve();
  const message = { topic: topic("players"), type: "leave", data: { id: me.id }, exclude: connectionId };
  return publish(message, { keepalive: true });
}

// Closing the tab: `pagehide` is the reliable signal (`beforeunload` too for
// browsers that skip it); `keepalive` lets the publish outlive the page.
function leaveOnClose() {
  if (leaving) return;
  leaving = true;
  announceLeave().catch(() => {});
}

$("leave").addEventListener("click", async () => {
  leaving = true;
  await announceLeave().catch(() => {});
  location.assign(`quiz.html?${new URLSearchParams({ room: roomName, name: me.name })}`);
});

// Host controls: the host publishes each question with the previous answer revealed.
$("start").addEventListener("click", () => hostPublish("question", questionData(0, room.round + 1)));
$("again").addEventListener("click", () => hostPublish("question", questionData(0, room.round + 1)));
$("next").addEventListener("click", () => {
  const n = room.question.n;
  if (n < QUESTIONS.length) hostPublish("question", questionData(n, room.round));
  else hostPublish("finish", { by: me.id, round: room.round, reveal: revealData(n) });
});
$("take-host").addEventListener("click", () =>
  publish({ topic: topic("players"), type: "host", data: { id: me.id } }).catch((error) =>
    showError($("room-error"), `Could not take the host seat: ${error.message}`),
  ),
);

function questionData(index, round) {
  const { text, choices } = QUESTIONS[index];
  return { by: me.id, round, n: index + 1, total: QUESTIONS.length, text, choices, reveal: index > 0 ? revealData(index) : null };
}

function revealData(n) {
  const { choices, correct } = QUESTIONS[n - 1];
  return { n, correct, answer: choices[correct] };
}

async function hostPublish(type, data) {
  $("room-error").hidden = true;
  try {
    await publish({ topic: topic("game"), type, data });
  } catch (error) {
    showError($("room-error"), `Could not publish: ${error.message}. Try again.`);
  }
}

async function answer(choice) {
  const { n } = room.question;
  $("room-error").hidden = true;
  for (const button of $("choices").children) button.disabled = true;
  $("choices").children[choice].classList.add("chosen");
  try {
    await publish({ topic: topic("answers"), type: "answer", data: { round: room.round, player: me.id, n, choice } });
  } catch (error) {
    showError($("room-error"), `Could not send your answer: ${error.message}. Try again.`);
    for (const button of $("choices").children) {
      button.disabled = false;
      button.classList.remove("chosen");
    }
  }
}

function render() {
  if (!room) {
    $("lobby").hidden = false;
    $("lobby-text").textContent = "Looking for the players in this room…";
    for (const id of ["question", "results", "host-controls", "no-host"]) $(id).hidden = true;
    return;
  }
  const hosting = room.host === me.id;
  const { phase, question } = room;
  $("who").textContent = `${me.name}${hosting ? " (host)" : ""}`;
  $("lobby").hidden = phase !== "lobby";
  $("question").hidden = phase !== "question";
  $("results").hidden = phase !== "finished";
  $("host-controls").hidden = !hosting;
  $("start").hidden = phase !== "lobby";
  $("next").hidden = phase !== "question";
  $("again").hidden = phase !== "finished";
  $("no-host").hidden = room.host !== null;
  const hostName = room.host === null ? null : room.nameOf(room.host);
  $("lobby-text").textContent = hosting
    ? "Players join with the same room name. Start when everyone is in."
    : hostName
      ? `Waiting for ${hostName} (the host) to start the quiz…`
      : "Nobody hosts this room yet.";
  if (phase === "question") {
    $("next").textContent = question.n < question.total ? "Next question" : "Finish quiz";
    $("question-number").textContent = `Question ${question.n} of ${question.total}`;
    $("question-text").textContent = question.text;
    const key = `${room.round}:${question.n}`;
    if ($("choices").dataset.key !== key) {
      $("choices").dataset.key = key;
      $("choices").replaceChildren(
        ...question.choices.map((text, i) => {
          const button = document.createElement("button");
          button.className = "secondary";
          button.textContent = text;
          button.addEventListener("click", () => answer(i));
          return button;
        }),
      );
    }
    const mine = room.answers.get(me.id);
    if (mine !== undefined) {
      for (const button of $("choices").children) button.disabled = true;
      $("choices").children[mine]?.classList.add("chosen");
    }
    const done = room.players.filter((p) => room.hasAnswered(p.id)).length;
    $("answer-note").textContent =
      mine !== undefined ? `Answer sent. ${done} of ${room.players.length} players answered.` : "Pick an answer.";
  }
  $("players").replaceChildren(
    ...room.players.map((p) => {
      const item = document.createElement("li");
      item.dataset.name = p.name;
      item.dataset.answered = String(room.hasAnswered(p.id));
      item.dataset.host = String(p.id === room.host);
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = p.name;
      name.title = p.name;
      item.append(name);
      if (p.id === me.id) item.append(tag("you", "accent"));
      if (p.id === room.host) item.append(tag("host"));
      if (phase === "question") item.append(room.hasAnswered(p.id) ? tag("✓ answered", "ok") : tag("thinking…", "warn"));
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = `${room.scores.get(p.id) ?? 0} pt`;
      item.append(score);
      return item;
    }),
  );
  if (phase === "finished") {
    $("ranking").replaceChildren(
      ...room.final.map((row) => {
        const item = document.createElement("li");
        item.value = row.rank;
        item.dataset.name = row.name;
        item.dataset.score = row.score;
        item.dataset.left = String(!room.roster.has(row.id));
        item.append(`${row.name} — ${row.score} of ${QUESTIONS.length}`);
        if (row.id === me.id) item.append(" ", tag("you", "accent"));
        if (!room.roster.has(row.id)) item.append(" ", tag("left"));
        if (row.rank === 1 && row.score > 0) item.append(" ", tag("winner", "ok"));
        return item;
      }),
    );
  }
}

function alreadyHosted() {
  return `${room.nameOf(room.host)} already hosts this room: you play. When the host leaves, the longest-present player hosts.`;
}

function showNote(text) {
  $("room-note").textContent = text;
  $("room-note").hidden = false;
}

function showError(element, text) {
  element.textContent = text;
  element.hidden = false;
}

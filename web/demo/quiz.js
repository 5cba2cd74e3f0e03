// The live quiz room. Every room is a set of topics under `quiz:<room>:`:
//   quiz:<room>:players  join (sent with `exclude`: no echo to the joiner),
//                        here (the reply that tells a newcomer who is in), leave
//   quiz:<room>:game     question, finish (from the host)
//   quiz:<room>:answers  answer
// The page subscribes to `quiz:<room>:>` with the `tidings` package and
// publishes with `POST /publish`; the server keeps no room state.
import { connect, debug, logLine, publish, tag, trackState } from "./common.js";

const QUESTIONS = [
  { text: "What does Tidings stream to the browser?", choices: ["WebSockets", "Server-Sent Events", "Long polling", "WebRTC"], correct: 1 },
  { text: "Which header lets a reconnecting stream resume?", choices: ["If-None-Match", "Retry-After", "Last-Event-ID", "X-Resume"], correct: 2 },
  { text: "In the pattern order:>, what does > match?", choices: ["One segment", "One or more trailing segments", "Nothing", "Any character"], correct: 1 },
  { text: "What does exclude do on a publish?", choices: ["Drops the message", "Skips the sender's connection", "Delays delivery", "Hides the topic"], correct: 1 },
];

const $ = (id) => document.getElementById(id);

let me = null; // {id, name, host}
let room = null;
let client = null;
let connectionId = null;
let current = null; // the question on screen: {n, total, text, choices}
let finished = false;
const players = new Map(); // id -> {id, name, host}
const answers = new Map(); // question number -> Map(player id -> choice)
const scores = new Map(); // player id -> points

const topic = (part) => `quiz:${room}:${part}`;
const nameOf = (id) => players.get(id)?.name ?? "someone";

// Prefill from ?name=&room=&host=1 so a link can drop you into a room.
const params = new URLSearchParams(location.search);
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

async function join(name, roomName, host) {
  me = { id: Math.random().toString(36).slice(2, 10), name, host };
  room = roomName;
  client = await connect("/events", { topics: [`quiz:${room}:>`], maxDelay: 5000 });
  trackState(client, $("state"));

  // The connection id changes on every reconnect; `exclude` needs the current one.
  const connected = new Promise((resolve, reject) => {
    client.on("tidings.connected", (data) => {
      connectionId = debug.connectionId = data.connectionId;
      resolve();
    });
    client.onError((error) => {
      if (error.kind === "auth" || error.kind === "config") reject(error);
    });
  });
  client.onError((error) => {
    if (error.kind === "decode" || error.kind === "handler") console.error(error);
  });
  client.on("join", onJoin);
  client.on("here", onHere);
  client.on("leave", onLeave);
  client.on("question", onQuestion);
  client.on("finish", onFinish);
  client.on("answer", onAnswer);
  client.on("tidings.gap", () => logLine($("activity"), "gap", "Some messages were missed (older than the server's history)"));
  await connected;

  players.set(me.id, me);
  await publish({ topic: topic("players"), type: "join", data: me, exclude: connectionId });

  $("join").hidden = true;
  $("room").hidden = false;
  $("room-title").textContent = `Room “${room}”`;
  $("who").textContent = `${me.name}${me.host ? " (host)" : ""}`;
  $("host-controls").hidden = !me.host;
  $("lobby-text").textContent = me.host
    ? "Players join with the same room name. Start when everyone is in."
    : "Waiting for the host to start the quiz…";
  logLine($("activity"), "self", `You joined room ${room} as ${me.name}`);
  render();
  addEventListener("pagehide", leaveOnClose);
  addEventListener("beforeunload", leaveOnClose);
}

/** Tells the room this player left; runs while the tab closes, so `keepalive`. */
function announceLeave() {
  if (!me || !connectionId) return Promise.resolve();
  const message = { topic: topic("players"), type: "leave", data: { id: me.id, name: me.name }, exclude: connectionId };
  return publish(message, { keepalive: true });
}

// Closing the tab: `pagehide` is the reliable signal (`beforeunload` too for
// browsers that skip it); `keepalive` lets the publish outlive the page.
let leaving = false;
function leaveOnClose() {
  if (leaving) return;
  leaving = true;
  announceLeave().catch(() => {});
}

$("leave").addEventListener("click", async () => {
  leaving = true;
  await announceLeave().catch(() => {});
  location.reload();
});

function onJoin(player) {
  const echo = player.id === me.id; // `exclude` should make this impossible
  players.set(player.id, player);
  logLine($("activity"), "join", `${player.name}${echo ? " (you)" : ""} joined`);
  render();
  // Let the newcomer know who is here, and, from the host, where the quiz is.
  const data = { ...me, question: me.host && !finished ? current : null };
  publish({ topic: topic("players"), type: "here", data, exclude: connectionId }).catch((error) =>
    showError($("room-error"), `Could not greet ${player.name}: ${error.message}`),
  );
}

function onHere(player) {
  if (!players.has(player.id)) {
    players.set(player.id, player);
    logLine($("activity"), "here", `${player.name} is in the room${player.host ? " (host)" : ""}`);
  }
  if (player.question && !current) showQuestion(player.question);
  render();
}

function onLeave(player) {
  if (!players.delete(player.id)) return;
  logLine($("activity"), "leave", `${player.name} left`);
  render();
}

function onQuestion(question) {
  reveal(question.reveal);
  showQuestion(question);
  logLine($("activity"), "question", `Question ${question.n} of ${question.total}`);
}

function onFinish(data) {
  reveal(data.reveal);
  finished = true;
  current = null;
  logLine($("activity"), "finish", "The quiz is over");
  render();
}

function onAnswer(answer) {
  if (!answers.has(answer.n)) answers.set(answer.n, new Map());
  answers.get(answer.n).set(answer.player, answer.choice);
  if (answer.n === current?.n) logLine($("activity"), "answer", `${nameOf(answer.player)} answered`);
  render();
}

/** Scores the answers to question `n` once the host reveals the right choice. */
function reveal(result) {
  if (!result) return;
  for (const [player, choice] of answers.get(result.n) ?? []) {
    if (choice === result.correct) scores.set(player, (scores.get(player) ?? 0) + 1);
  }
  logLine($("activity"), "reveal", `Answer to question ${result.n}: ${result.answer}`);
}

function showQuestion(question) {
  current = question;
  render();
}

// Host controls: the host publishes each question and reveals the previous answer.
$("start").addEventListener("click", () => hostPublish("question", questionData(0)));
$("next").addEventListener("click", () => {
  const n = current.n;
  if (n < QUESTIONS.length) hostPublish("question", questionData(n));
  else hostPublish("finish", { reveal: revealData(n) });
});

function questionData(index) {
  const { text, choices } = QUESTIONS[index];
  return { n: index + 1, total: QUESTIONS.length, text, choices, reveal: index > 0 ? revealData(index) : null };
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
  const n = current.n;
  $("room-error").hidden = true;
  for (const button of $("choices").children) button.disabled = true;
  $("choices").children[choice].classList.add("chosen");
  try {
    await publish({ topic: topic("answers"), type: "answer", data: { player: me.id, n, choice } });
  } catch (error) {
    showError($("room-error"), `Could not send your answer: ${error.message}. Try again.`);
    render();
  }
}

function render() {
  const answered = (id) => current && answers.get(current.n)?.has(id);
  $("lobby").hidden = Boolean(current) || finished;
  $("question").hidden = !current;
  $("results").hidden = !finished;
  $("start").hidden = Boolean(current) || finished;
  $("next").hidden = !current;
  if (current) {
    $("next").textContent = current.n < current.total ? "Next question" : "Finish quiz";
    $("question-number").textContent = `Question ${current.n} of ${current.total}`;
    $("question-text").textContent = current.text;
    if ($("choices").dataset.n !== String(current.n)) {
      $("choices").dataset.n = current.n;
      $("choices").replaceChildren(
        ...current.choices.map((text, i) => {
          const button = document.createElement("button");
          button.className = "secondary";
          button.textContent = text;
          button.addEventListener("click", () => answer(i));
          return button;
        }),
      );
    }
    const mine = answers.get(current.n)?.get(me.id);
    if (mine !== undefined) for (const button of $("choices").children) button.disabled = true;
    const done = [...players.keys()].filter(answered).length;
    $("answer-note").textContent =
      mine !== undefined ? `Answer sent. ${done} of ${players.size} players answered.` : "Pick an answer.";
  }
  $("players").replaceChildren(
    ...[...players.values()].map((p) => {
      const item = document.createElement("li");
      item.dataset.name = p.name;
      item.dataset.answered = String(Boolean(answered(p.id)));
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = p.name;
      item.append(name);
      if (p.id === me.id) item.append(tag("you", "accent"));
      if (p.host) item.append(tag("host"));
      if (current) item.append(answered(p.id) ? tag("✓ answered", "ok") : tag("thinking…", "warn"));
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = `${scores.get(p.id) ?? 0} pt`;
      item.append(score);
      return item;
    }),
  );
  if (finished) {
    const ranked = [...players.values()].sort((a, b) => (scores.get(b.id) ?? 0) - (scores.get(a.id) ?? 0));
    $("ranking").replaceChildren(
      ...ranked.map((p) => {
        const item = document.createElement("li");
        item.textContent = `${p.name} — ${scores.get(p.id) ?? 0} of ${QUESTIONS.length}`;
        return item;
      }),
    );
  }
}

function showError(element, text) {
  element.textContent = text;
  element.hidden = false;
}

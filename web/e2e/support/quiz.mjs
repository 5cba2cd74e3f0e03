// Driving the quiz page the way a player does: through its form and buttons,
// reading what it shows.
import { newPlayerPage } from "./harness.mjs";

/**
 * Opens the quiz page at `origin`, fills in the join form and waits until
 * the page knows the room (a snapshot from the room, or none: an empty room).
 * `query`: extra query parameters of the page (e.g. `{grace: 2}`).
 */
export async function joinRoom(browser, origin, { room, name, host = false, query = {} }) {
  const search = new URLSearchParams(query).toString();
  const page = await newPlayerPage(browser, `${origin}/quiz.html${search ? `?${search}` : ""}`);
  page.playerName = name;
  await page.fill("#nickname", name);
  await page.fill("#room-name", room);
  if (host) await page.check("#as-host");
  await page.click("#join-form button[type=submit]");
  await page.waitForSelector("#room[data-synced=true]", { state: "visible" });
  return page;
}

/** Waits until the page shows `name` as the room's host (and only them). */
export function waitForHost(page, name) {
  return page.waitForFunction((name) => {
    const hosts = [...document.querySelectorAll('#players li[data-host="true"]')].map((li) => li.dataset.name);
    return hosts.length === 1 && hosts[0] === name;
  }, name);
}

/** Whether the page shows the host controls. */
export function showsHostControls(page) {
  return page.locator("#host-controls").isVisible();
}

/** The final ranking on screen: `[{rank, name, score, left}]`. */
export function ranking(page) {
  return page.$$eval("#ranking li", (items) =>
    items.map((li) => ({ rank: li.value, name: li.dataset.name, score: Number(li.dataset.score), left: li.dataset.left === "true" })),
  );
}

/** The room as the page holds it (QuizRoom.toJSON()). */
export function roomState(page) {
  return page.evaluate(() => window.tidingsDemo.room());
}

/** The activity log, oldest first: `[{kind, text}]`. */
export function activity(page) {
  return page.$$eval("#activity li", (items) =>
    items.reverse().map((li) => ({ kind: li.dataset.kind, text: li.querySelector("span").textContent })),
  );
}

/** Waits until the activity log has an entry of `kind` whose text contains `text`. */
export function waitForActivity(page, kind, text) {
  return page.waitForFunction(
    ([kind, text]) =>
      [...document.querySelectorAll(`#activity li[data-kind="${kind}"]`)].some((li) => li.textContent.includes(text)),
    [kind, text],
  );
}

/** The players list: `{name: {answered, text}}`. */
export function players(page) {
  return page.$$eval("#players li", (items) =>
    Object.fromEntries(items.map((li) => [li.dataset.name, { answered: li.dataset.answered === "true", text: li.textContent }])),
  );
}

/** Waits until the players list shows `name` (answered, when `answered` is given). */
export function waitForPlayer(page, name, { answered } = {}) {
  return page.waitForFunction(
    ([name, answered]) => {
      const li = [...document.querySelectorAll("#players li")].find((li) => li.dataset.name === name);
      return li && (answered === undefined || li.dataset.answered === String(answered));
    },
    [name, answered],
  );
}

/** Waits until `name` is no longer in the players list. */
export function waitForPlayerGone(page, name) {
  return page.waitForFunction(
    (name) => ![...document.querySelectorAll("#players li")].some((li) => li.dataset.name === name),
    name,
  );
}

/** Waits for question `n` on screen. */
export function waitForQuestion(page, n) {
  return page.waitForFunction(
    (n) => !document.getElementById("question").hidden && document.getElementById("question-number").textContent.startsWith(`Question ${n} `),
    n,
  );
}

/** Clicks answer `choice` (0-based) of the question on screen. */
export async function answer(page, choice) {
  await page.locator("#choices button").nth(choice).click();
}

/** The page's connection state now (`open`, `reconnecting`, ...). */
export function connectionState(page) {
  return page.evaluate(() => window.tidingsDemo.states.at(-1)?.kind);
}

/** Waits until the page's stream is in state `kind`. */
export function waitForState(page, kind) {
  return page.waitForFunction((kind) => window.tidingsDemo.states.at(-1)?.kind === kind, kind);
}

/** When the page's stream last became `open`, as a `Date.now()` value. */
export function lastOpenedAt(page) {
  return page.evaluate(() => window.tidingsDemo.states.findLast((s) => s.kind === "open")?.at);
}

/** Entries of `kind` in the log whose text contains `text`. */
export async function countActivity(page, kind, text) {
  return (await activity(page)).filter((e) => e.kind === kind && e.text.includes(text)).length;
}

/**
 * Makes the page's stream requests fail (as if the server were still out of
 * reach) until the returned `unblock()`: the page keeps retrying with its
 * backoff, and a message published meanwhile is surely published in the gap.
 */
export async function blockStream(page) {
  const isStream = (url) => url.pathname === "/events";
  const refuse = (route) => route.abort("connectionrefused");
  await page.route(isStream, refuse);
  return () => page.unroute(isStream, refuse);
}

/** Waits until the page's header names instance `n` at `address` as the one serving it. */
export function waitForInstance(page, address, n) {
  return page.waitForFunction(
    ([address, n]) => {
      const shown = document.getElementById("instance");
      return shown.dataset.address === address && shown.dataset.n === n;
    },
    [address, n],
  );
}

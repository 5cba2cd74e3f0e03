// The live quiz room in headless Chromium against a real tidings-server
// (in-memory broker): two players in one room, and a server restart mid-quiz.
// Run: scripts/test-e2e.sh
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { screenshot, screenshotOpenPages, screenshotSideBySide, shotsOnFailure, startBrowser, startServer, unique } from "./support/harness.mjs";
import {
  activity,
  answer,
  blockStream,
  countActivity,
  joinRoom,
  lastOpenedAt,
  players,
  ranking,
  roomState,
  showsHostControls,
  waitForActivity,
  waitForHost,
  waitForPlayer,
  waitForPlayerGone,
  waitForQuestion,
  waitForState,
} from "./support/quiz.mjs";

let browser;
before(async () => {
  browser = await startBrowser();
});
after(async () => {
  await browser?.close();
});

test("two players: each sees the other join, answers reach both, a closed tab leaves", { timeout: 120_000 }, async () => {
  const server = await startServer();
  try {
    const room = "rustaceans"; // this test's own server: no other test shares the room
    const alice = await joinRoom(browser, server.origin, { room, name: "Alice", host: true });
    const bob = await joinRoom(browser, server.origin, { room, name: "Bob" });

    // Alice hears Bob's join; Bob learns about Alice from the room's snapshot.
    await waitForActivity(alice, "join", "Bob joined");
    await waitForActivity(bob, "self", "Alice (host) is here");
    assert.deepEqual(Object.keys(await players(alice)), ["Alice", "Bob"]);
    assert.deepEqual(Object.keys(await players(bob)), ["Alice", "Bob"]);
    // Both pages know from the server's presence that both players are connected.
    for (const page of [alice, bob]) await page.waitForFunction(() => window.tidingsDemo.present().length === 2);

    // The host starts; both see the question; each answer shows on both pages.
    await alice.click("#start");
    await waitForQuestion(alice, 1);
    await waitForQuestion(bob, 1);
    await answer(bob, 1);
    await waitForPlayer(alice, "Bob", { answered: true });
    await waitForPlayer(bob, "Bob", { answered: true });
    assert.equal((await players(alice)).Alice.answered, false);
    await answer(alice, 0);
    await waitForPlayer(bob, "Alice", { answered: true });
    await waitForPlayer(alice, "Alice", { answered: true });

    // Next question: the host reveals question 1 and both scores update.
    await alice.click("#next");
    await waitForQuestion(alice, 2);
    await waitForQuestion(bob, 2);
    for (const page of [alice, bob]) {
      await waitForActivity(page, "reveal", "Server-Sent Events");
      const list = await players(page);
      assert.match(list.Bob.text, /1 pt/);
      assert.match(list.Alice.text, /0 pt/);
    }
    await answer(bob, 2);
    await waitForPlayer(alice, "Bob", { answered: true });
    await screenshot(alice, "quiz-alice");
    await screenshot(bob, "quiz-bob");
    await screenshotSideBySide(browser, [alice, bob], "quiz-two-players");

    // Bob closes his tab: the page announces it while closing, Alice sees it.
    await bob.close({ runBeforeUnload: true });
    await bob.waitForEvent("close");
    await waitForActivity(alice, "leave", "Bob left");
    await waitForPlayerGone(alice, "Bob");
    await screenshot(alice, "quiz-after-leave");
    assert.deepEqual(alice.errors, []);
  } catch (error) {
    await screenshotOpenPages("failed-quiz-two-players");
    throw error;
  } finally {
    await server.stop();
  }
});

// What the in-memory server promises across a restart (its history dies with
// the process): a publish while it is down is refused, never silently lost;
// every message accepted after it is back reaches each page once, including
// those published before the page has reconnected (resume by Last-Event-ID).
// Nothing here waits for a timer: the test holds the pages' stream requests
// off while it publishes in the gap.
// Redis mode keeps the history too: see cluster.test.mjs.
test("the server restarts mid-quiz: both pages reconnect by themselves and see what was published before they did", { timeout: 120_000 }, async () => {
  let server = await startServer();
  try {
    const room = unique("room");
    const alice = await joinRoom(browser, server.origin, { room, name: "Alice", host: true });
    const bob = await joinRoom(browser, server.origin, { room, name: "Bob" });
    await waitForActivity(alice, "join", "Bob joined");
    await alice.click("#start");
    await waitForQuestion(bob, 1);

    // Crash: while the server is down, the host's "next" is refused, visibly.
    // The pages' stream requests are held off until the test has published
    // in the gap, however their backoff timers fall.
    const unblock = [await blockStream(alice), await blockStream(bob)];
    await server.stop("SIGKILL");
    await waitForState(alice, "reconnecting");
    await waitForState(bob, "reconnecting");
    await alice.click("#next");
    await alice.waitForSelector("#room-error", { state: "visible" });
    assert.match(await alice.textContent("#room-error"), /Could not publish/);

    // Back on the same address (the in-memory history starts empty). The
    // host moves on before either page has reconnected.
    server = await startServer({ listen: server.listen });
    const before = await alice.evaluate(() => window.tidingsDemo.published.length);
    await alice.click("#next");
    await alice.waitForFunction((n) => window.tidingsDemo.published.length > n, before);
    const publishedAt = (await alice.evaluate(() => window.tidingsDemo.published.at(-1))).at;
    for (const release of unblock) await release();
    await waitForQuestion(alice, 2);
    await waitForQuestion(bob, 2);
    for (const page of [alice, bob]) {
      assert.equal(await page.evaluate(() => window.tidingsDemo.states.at(-1).kind), "open");
      assert.ok((await lastOpenedAt(page)) > publishedAt, `${page.playerName} reconnected before the publish: the gap was not tested`);
      assert.equal(await countActivity(page, "question", "Question 2 of"), 1, "question 2 exactly once");
      assert.equal(await countActivity(page, "question", "Question 1 of"), 1, "question 1 exactly once");
    }

    // The room goes on: an answer after the restart reaches both.
    await answer(bob, 2);
    await waitForPlayer(alice, "Bob", { answered: true });
    await screenshot(alice, "quiz-restart-alice");
    await screenshot(bob, "quiz-restart-bob");
  } catch (error) {
    await screenshotOpenPages("failed-quiz-restart");
    throw error;
  } finally {
    await server.stop();
  }
});

/** Plays one question: each `[page, choice]` answers, then everyone sees all answers. */
async function playQuestion(n, answers, everyone) {
  for (const page of everyone) await waitForQuestion(page, n);
  for (const [page, choice] of answers) await answer(page, choice);
  for (const page of everyone) for (const [player] of answers) await waitForPlayer(page, player.playerName, { answered: true });
}

// Correct choices of the demo's four questions (quiz.js QUESTIONS).
const RIGHT = [1, 2, 1, 1];
const WRONG = [0, 0, 0, 0];

test("final scores: best first, ties share a rank, a player who leaves after the end stays in them, and the host can play again", { timeout: 180_000 }, shotsOnFailure("quiz-final-scores", async () => {
  const server = await startServer();
  try {
    const room = unique("final");
    const alice = await joinRoom(browser, server.origin, { room, name: "Alice", host: true });
    const bob = await joinRoom(browser, server.origin, { room, name: "Bob" });
    const carol = await joinRoom(browser, server.origin, { room, name: "Carol" });
    const everyone = [alice, bob, carol];
    await waitForPlayer(alice, "Carol");
    await waitForPlayer(bob, "Carol");

    // Bob gets all four right; Alice and Carol two each; the winner joined second.
    await alice.click("#start");
    for (let q = 0; q < 4; q++) {
      const right = (page, yes) => [page, yes ? RIGHT[q] : WRONG[q]];
      await playQuestion(q + 1, [right(alice, q < 2), right(bob, true), right(carol, q >= 2)], everyone);
      await alice.click("#next");
    }
    const expected = [
      { rank: 1, name: "Bob", score: 4, left: false },
      { rank: 2, name: "Alice", score: 2, left: false },
      { rank: 2, name: "Carol", score: 2, left: false },
    ];
    for (const page of everyone) {
      await page.waitForSelector("#results", { state: "visible" });
      assert.deepEqual(await ranking(page), expected, `${page.playerName}'s final scores`);
    }
    await screenshot(carol, "quiz-final-scores");

    // The winner leaves: still first, marked as gone; the players list drops him.
    await bob.close({ runBeforeUnload: true });
    for (const page of [alice, carol]) {
      await waitForPlayerGone(page, "Bob");
      assert.deepEqual(await ranking(page), [{ ...expected[0], left: true }, expected[1], expected[2]]);
    }
    await screenshot(carol, "quiz-final-scores-winner-left");

    // Only the host sees "Play again"; it starts a new game with fresh scores.
    assert.equal(await carol.locator("#again").isVisible(), false);
    await alice.click("#again");
    for (const page of [alice, carol]) {
      await waitForQuestion(page, 1);
      const list = await players(page);
      assert.deepEqual(Object.keys(list), ["Alice", "Carol"]);
      for (const name of ["Alice", "Carol"]) assert.match(list[name].text, /0 pt/);
      assert.equal(await countActivity(page, "question", "Game 2: question 1 of 4"), 1);
    }
    await screenshot(alice, "quiz-play-again");
    assert.deepEqual([...alice.errors, ...carol.errors], []);
  } finally {
    await server.stop();
  }
}));

test("a late joiner gets the room's state: the question, who already answered, the scores, and the same final ranking", { timeout: 180_000 }, shotsOnFailure("quiz-late-joiner", async () => {
  const server = await startServer();
  try {
    const room = unique("late");
    const alice = await joinRoom(browser, server.origin, { room, name: "Alice", host: true });
    const bob = await joinRoom(browser, server.origin, { room, name: "Bob" });
    await waitForPlayer(alice, "Bob");
    await alice.click("#start");
    await playQuestion(1, [[bob, RIGHT[0]], [alice, WRONG[0]]], [alice, bob]);
    await alice.click("#next");
    await playQuestion(2, [[bob, RIGHT[1]]], [alice, bob]);

    // Carol arrives during question 2: Bob has answered it, Alice has not.
    const carol = await joinRoom(browser, server.origin, { room, name: "Carol" });
    await waitForQuestion(carol, 2);
    const list = await players(carol);
    assert.deepEqual(Object.keys(list), ["Alice", "Bob", "Carol"]);
    assert.equal(list.Bob.answered, true, "Bob answered before Carol came");
    assert.equal(list.Alice.answered, false);
    assert.match(list.Bob.text, /1 pt/);
    assert.match(list.Alice.text, /host/);
    await screenshot(carol, "quiz-late-joiner");
    // Every page holds the same room.
    const state = await roomState(alice);
    assert.deepEqual(await roomState(bob), state);
    assert.deepEqual(await roomState(carol), state);

    // The game goes on with Carol; everyone ends with the same ranking.
    await answer(alice, RIGHT[1]);
    await answer(carol, RIGHT[1]);
    for (const page of [alice, bob, carol]) await waitForPlayer(page, "Carol", { answered: true });
    await alice.click("#next");
    await playQuestion(3, [[alice, RIGHT[2]], [bob, WRONG[2]], [carol, RIGHT[2]]], [alice, bob, carol]);
    await alice.click("#next");
    await playQuestion(4, [[alice, RIGHT[3]], [bob, RIGHT[3]], [carol, WRONG[3]]], [alice, bob, carol]);
    await alice.click("#next");
    const expected = [
      { rank: 1, name: "Alice", score: 3, left: false },
      { rank: 1, name: "Bob", score: 3, left: false },
      { rank: 3, name: "Carol", score: 2, left: false },
    ];
    for (const page of [alice, bob, carol]) {
      await page.waitForSelector("#results", { state: "visible" });
      assert.deepEqual(await ranking(page), expected, `${page.playerName}'s final scores`);
    }
  } finally {
    await server.stop();
  }
}));

test("one host per room: a second would-be host plays; hosting passes on when the host closes the tab, and when a host's tab dies without a goodbye", { timeout: 180_000 }, shotsOnFailure("quiz-one-host", async () => {
  const server = await startServer();
  try {
    const room = unique("host");
    // `grace: 2`: a player without a stream for 2 s counts as gone (5 s by default).
    const query = { grace: 2 };
    const alice = await joinRoom(browser, server.origin, { room, name: "Alice", host: true, query });
    const bob = await joinRoom(browser, server.origin, { room, name: "Bob", host: true, query });
    const carol = await joinRoom(browser, server.origin, { room, name: "Carol", host: true, query });
    for (const page of [alice, bob, carol]) await waitForHost(page, "Alice");
    assert.equal(await showsHostControls(alice), true);
    for (const page of [bob, carol]) {
      assert.equal(await showsHostControls(page), false, `${page.playerName} got host controls`);
      assert.match(await page.textContent("#room-note"), /Alice already hosts this room/);
    }
    await screenshot(bob, "quiz-second-host-plays");

    // Alice closes her tab: the most senior player left, Bob, hosts.
    await alice.close({ runBeforeUnload: true });
    for (const page of [bob, carol]) {
      await waitForActivity(page, "leave", "Alice left");
      await waitForHost(page, "Bob");
    }
    await bob.waitForSelector("#host-controls", { state: "visible" });
    assert.equal(await showsHostControls(carol), false);
    await bob.click("#start");
    await waitForQuestion(carol, 1);

    // Bob's tab crashes mid-question: no goodbye. His stream's presence
    // leaves, Carol declares him gone after the grace, and hosts; the game goes on.
    const cdp = await bob.context().newCDPSession(bob);
    cdp.send("Page.crash").catch(() => {}); // answers never: the page is gone
    await waitForActivity(carol, "leave", "Bob left (connection closed)");
    await waitForHost(carol, "Carol");
    await carol.waitForSelector("#host-controls", { state: "visible" });
    await carol.click("#next");
    await waitForQuestion(carol, 2);
    await screenshot(carol, "quiz-host-gone-without-goodbye");
    assert.deepEqual(carol.errors, []);
  } finally {
    await server.stop();
  }
}));

test("the players list stays on one line per player at 1280 px, long names included", { timeout: 120_000 }, shotsOnFailure("quiz-layout", async () => {
  const server = await startServer();
  try {
    const room = unique("layout");
    const host = await joinRoom(browser, server.origin, { room, name: "Maximilian-Alexandra-Q", host: true });
    const player = await joinRoom(browser, server.origin, { room, name: "Bartholomew Fitzgerald" });
    await player.setViewportSize({ width: 1280, height: 800 });
    await waitForPlayer(host, "Bartholomew Fitzgerald");
    await host.click("#start");
    await waitForQuestion(player, 1);
    await answer(player, 1);
    await answer(host, 1);
    await waitForPlayer(player, "Maximilian-Alexandra-Q", { answered: true });
    const rows = await player.$$eval("#players li", (items) =>
      items.map((li) => {
        const card = li.closest(".card").getBoundingClientRect();
        const boxes = [...li.children].map((child) => child.getBoundingClientRect());
        return {
          name: li.dataset.name,
          lines: new Set(boxes.map((b) => Math.round(b.top + b.height / 2))).size,
          tagHeights: [...li.querySelectorAll(".tag")].map((t) => t.getBoundingClientRect().height),
          inside: boxes.every((b) => b.right <= card.right - 8),
        };
      }),
    );
    await screenshot(player, "quiz-1280");
    for (const row of rows) {
      assert.equal(row.lines, 1, `${row.name}'s row wraps: ${JSON.stringify(row)}`);
      assert.ok(Math.max(...row.tagHeights) < 2 * Math.min(...row.tagHeights), `a tag wraps in ${row.name}'s row`);
      assert.ok(row.inside, `${row.name}'s row overflows the card`);
    }
  } finally {
    await server.stop();
  }
}));

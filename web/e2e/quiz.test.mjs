// The live quiz room in headless Chromium against a real tidings-server
// (in-memory broker): two players in one room, and a server restart mid-quiz.
// Run: scripts/test-e2e.sh
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { screenshot, screenshotOpenPages, screenshotSideBySide, startBrowser, startServer, unique } from "./support/harness.mjs";
import {
  activity,
  answer,
  blockStream,
  countActivity,
  joinRoom,
  lastOpenedAt,
  players,
  waitForActivity,
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

test("two players: each sees the other join (no echo of their own), answers reach both, a closed tab leaves", { timeout: 120_000 }, async () => {
  const server = await startServer();
  try {
    const room = "rustaceans"; // this test's own server: no other test shares the room
    const alice = await joinRoom(browser, server.origin, { room, name: "Alice", host: true });
    const bob = await joinRoom(browser, server.origin, { room, name: "Bob" });

    // Alice hears Bob's join; Bob learns about Alice from her reply.
    await waitForActivity(alice, "join", "Bob joined");
    await waitForActivity(bob, "here", "Alice is in the room");
    // Each player's own join was published before what they just saw, on the
    // same topic, so an echo would already be on screen. `exclude` kept it out.
    for (const page of [alice, bob]) {
      const joins = (await activity(page)).filter((e) => e.kind === "join").map((e) => e.text);
      assert.ok(!joins.some((text) => text.includes(page.playerName)), `${page.playerName} got an echo of their own join: ${joins}`);
    }
    assert.deepEqual(Object.keys(await players(alice)).sort(), ["Alice", "Bob"]);
    assert.deepEqual(Object.keys(await players(bob)).sort(), ["Alice", "Bob"]);

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

// The quiz across two tidings-server instances sharing a real Redis
// (TIDINGS_TEST_REDIS_URL, default redis://127.0.0.1:6379). Each player's
// browser talks to "its" instance through a failover proxy (a load balancer
// with health checks); when one instance stops, its player's page reconnects
// through the proxy to the other and resumes from the shared history.
// Run: scripts/test-e2e.sh
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { deleteRedisKey, redisUrl, screenshotOpenPages, screenshotSideBySide, startBrowser, startFailoverProxy, startServer, unique } from "./support/harness.mjs";
import {
  answer,
  blockStream,
  countActivity,
  joinRoom,
  lastOpenedAt,
  waitForActivity,
  waitForInstance,
  waitForPlayer,
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

test("two instances with Redis: players on different instances share the room; one instance stops and its player goes on", { timeout: 120_000 }, async (t) => {
  const streamKey = unique("tidings-e2e:");
  const stops = [() => deleteRedisKey(redisUrl, streamKey)];
  try {
    let a;
    try {
      a = await startServer({ redis: redisUrl, streamKey, instance: { n: 1, of: 2 } });
    } catch (error) {
      if (/not available in this build/.test(error.message)) return t.skip("tidings-server has no cluster mode yet");
      throw error;
    }
    stops.push(() => a.stop());
    const b = await startServer({ redis: redisUrl, streamKey, instance: { n: 2, of: 2 } });
    stops.push(() => b.stop());
    const toA = await startFailoverProxy([a.origin, b.origin]);
    stops.push(() => toA.stop());
    const toB = await startFailoverProxy([b.origin, a.origin]);
    stops.push(() => toB.stop());

    const room = unique("cluster");
    const alice = await joinRoom(browser, toA.origin, { room, name: "Alice", host: true });
    const bob = await joinRoom(browser, toB.origin, { room, name: "Bob" });
    await waitForActivity(alice, "join", "Bob joined");
    await waitForActivity(bob, "self", "Alice (host) is here");
    // Each page names the instance that serves it (not the proxy in front).
    await waitForInstance(alice, a.listen, "1");
    await waitForInstance(bob, b.listen, "2");
    assert.match(await alice.textContent("#instance"), new RegExp(`instance 1 of 2 · ${a.listen}`));
    assert.match(await alice.getAttribute("#instance", "title"), new RegExp(streamKey));
    assert.equal(toA.requests.get(b.origin), 0, "Alice's traffic went to instance A only");
    assert.equal(toB.requests.get(a.origin), 0, "Bob's traffic went to instance B only");

    await alice.click("#start");
    await waitForQuestion(alice, 1);
    await waitForQuestion(bob, 1);
    await answer(alice, 1);
    await waitForPlayer(bob, "Alice", { answered: true });

    // Instance A dies. While Alice's page is away (its stream requests held
    // off by the test), Bob answers on B.
    const unblock = await blockStream(alice);
    await a.stop("SIGKILL");
    await waitForState(alice, "reconnecting");
    const before = await bob.evaluate(() => window.tidingsDemo.published.length);
    await answer(bob, 1);
    await bob.waitForFunction((n) => window.tidingsDemo.published.length > n, before);
    const answeredAt = (await bob.evaluate(() => window.tidingsDemo.published.at(-1))).at;
    await unblock();

    // Alice's page reconnects by itself, through the proxy to B, and resumes
    // from the shared history: Bob's answer arrives once.
    await waitForPlayer(alice, "Bob", { answered: true });
    await waitForState(alice, "open");
    assert.ok((await lastOpenedAt(alice)) > answeredAt, "Alice reconnected before Bob answered: the gap was not tested");
    assert.ok(toA.requests.get(b.origin) > 0, "Alice's page was not moved to instance B");
    await waitForInstance(alice, b.listen, "2");
    assert.equal(await countActivity(alice, "answer", "Bob answered"), 1, "Bob's answer exactly once");

    // The quiz goes on with everyone on B.
    await alice.click("#next");
    await waitForQuestion(alice, 2);
    await waitForQuestion(bob, 2);
    await answer(bob, 2);
    await waitForPlayer(alice, "Bob", { answered: true });
    for (const page of [alice, bob]) {
      assert.equal(await countActivity(page, "question", "Question 1 of"), 1);
      assert.equal(await countActivity(page, "question", "Question 2 of"), 1);
    }
    await screenshotSideBySide(browser, [alice, bob], "cluster-failover");
  } catch (error) {
    await screenshotOpenPages("failed-cluster");
    throw error;
  } finally {
    for (const stop of stops.reverse()) await stop();
  }
});

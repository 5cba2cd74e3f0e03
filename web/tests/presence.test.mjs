// `client.presence(topic)` and `tidings.join` / `tidings.leave` in headless
// Chromium against two real tidings-server processes sharing a real Redis.
// Run: scripts/test-web.sh (builds web/pkg and the server first).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { mintToken, openPage, startBrowser, startProxy, startRedis, startServer, until } from "./support/harness.mjs";

let redis, primary, secondary, proxy, browser;

before(async () => {
  redis = await startRedis();
  primary = await startServer({ redisUrl: redis.url });
  secondary = await startServer({ redisUrl: redis.url });
  proxy = await startProxy(primary.origin);
  browser = await startBrowser();
});

after(async () => {
  await browser?.close();
  await proxy?.stop();
  await primary?.stop();
  await secondary?.stop();
  await redis?.stop();
});

/** A page with a client connected with `options`; presence events go to `window.seen`. */
async function member(options, url = "/events") {
  const page = await openPage(browser, proxy);
  await page.evaluate(
    async ({ options, url }) => {
      window.seen = [];
      window.client = await window.tidings.connect(url, options);
      window.client.on("tidings.connected", (data) => (window.connectionId = data.connectionId));
      for (const type of ["tidings.join", "tidings.leave"]) {
        window.client.on(type, (data, meta) => window.seen.push({ type: meta.type, id: data.connectionId, info: data.info, topic: data.topic }));
      }
    },
    { options, url },
  );
  await until(() => page.evaluate(() => window.connectionId), "the stream to connect");
  return page;
}

test("presence lists both players with their info, pages, and tells a presence stream who joins and leaves", { timeout: 120_000 }, async () => {
  const topic = `demo:presence${process.pid}`;
  const watcher = await member({ topics: [topic], presence: true, presenceInfo: { name: "Watcher" } });
  const ann = await member({ topics: [topic], presenceInfo: { name: "Ann" } });
  const annId = await ann.evaluate(() => window.connectionId);

  const listed = await watcher.evaluate((topic) => window.client.presence(topic), topic);
  assert.equal(listed.topic, topic);
  assert.equal(listed.total, 2);
  assert.equal(listed.next, null);
  assert.deepEqual(listed.clients.map((c) => c.info.name), ["Watcher", "Ann"]);
  assert.equal(listed.clients[1].connectionId, annId);
  assert.equal(listed.clients[1].verified, false);
  const paged = await ann.evaluate((topic) => window.client.presence(topic, { limit: 1 }), topic);
  assert.equal(paged.clients.length, 1);
  assert.equal(typeof paged.next, "string");
  const rest = await ann.evaluate(([topic, cursor]) => window.client.presence(topic, { limit: 1, cursor }), [topic, paged.next]);
  assert.equal(rest.clients[0].connectionId, annId);

  await until(async () => (await watcher.evaluate(() => window.seen.length)) >= 2, "the joins");
  await ann.close();
  await until(async () => (await watcher.evaluate(() => window.seen.length)) >= 3, "Ann's leave");
  const seen = await watcher.evaluate(() => window.seen);
  assert.deepEqual(
    seen.map((e) => [e.type, e.info.name, e.topic]),
    [
      ["tidings.join", "Watcher", topic],
      ["tidings.join", "Ann", topic],
      ["tidings.leave", "Ann", topic],
    ],
  );
  assert.equal(seen[2].id, annId);
  await until(async () => (await watcher.evaluate((topic) => window.client.presence(topic), topic)).total === 1, "Ann gone from the list");
  await watcher.close();
});

test("presence needs the rights to subscribe: a token for another topic gets an auth error", { timeout: 60_000 }, async () => {
  const token = await mintToken({ subscribe: ["team:>"] });
  const page = await member({ topics: ["team:1"], token });
  const error = await page.evaluate(() =>
    window.client.presence("other:1").then(
      () => null,
      (e) => ({ kind: e.kind, status: e.status }),
    ),
  );
  assert.deepEqual(error, { kind: "auth", status: 403 });
  const own = await page.evaluate(() => window.client.presence("team:1"));
  assert.equal(own.total, 1);
  assert.deepEqual(own.clients[0].info, { sub: null });
  assert.equal(own.clients[0].verified, true);
  await page.close();
});

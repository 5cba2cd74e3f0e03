// `shared: true`: tabs of one origin share a single stream, and another tab
// takes over (resuming after the last id) when the leading tab goes away.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { publish, startBrowser, startProxy, startServer, until } from "./support/harness.mjs";

let server, proxy, browser;

before(async () => {
  server = await startServer();
  proxy = await startProxy(server.origin);
  browser = await startBrowser();
});

after(async () => {
  await browser?.close();
  await proxy?.stop();
  await server?.stop();
});

async function openTab(context, topic) {
  const page = await context.newPage();
  page.on("pageerror", (error) => console.error("page error:", error));
  await page.goto(proxy.origin + "/");
  await page.waitForFunction(() => window.loaded === true);
  await page.evaluate(async (topic) => {
    window.log = [];
    window.client = await window.tidings.connect("/events", { topics: [topic], shared: true, initialDelay: 50 });
    window.client.on("n", (data) => window.log.push(data));
  }, topic);
  return page;
}

const logOf = (page) => page.evaluate(() => window.log);

test("tabs share one stream and hand it over when the leader closes", { timeout: 60_000 }, async () => {
  const topic = `demo:shared${process.pid}`;
  const context = await browser.newContext();
  const first = await openTab(context, topic);
  const second = await openTab(context, topic);
  await until(async () => (await second.evaluate(() => window.client.state.kind)) === "open", "the follower to see the open stream");

  const ids = await publish(server.origin, [1, 2].map((n) => ({ topic, type: "n", data: n })));
  await until(async () => (await logOf(first)).length === 2 && (await logOf(second)).length === 2, "both tabs to get 2 events");
  assert.deepEqual(await logOf(first), [1, 2]);
  assert.deepEqual(await logOf(second), [1, 2]);
  assert.equal(proxy.requestsFor(topic).length, 1, "one stream for both tabs");
  assert.equal(await first.evaluate(() => window.client.isLeader), true);
  assert.equal(await second.evaluate(() => window.client.isLeader), false);

  await first.close(); // the leading tab goes away: its lock is released
  await until(async () => await second.evaluate(() => window.client.isLeader), "the second tab to lead");
  await until(() => proxy.openStreams(topic) === 1, "the new leader's stream");
  const takeover = proxy.requestsFor(topic).at(-1);
  assert.equal(takeover.url.searchParams.get("lastEventId"), ids[1], "the new leader resumes after the last id");
  await publish(server.origin, [{ topic, type: "n", data: 3 }]);
  await until(async () => (await logOf(second)).length === 3, "the third event");
  assert.deepEqual(await logOf(second), [1, 2, 3]);
  assert.equal(proxy.requestsFor(topic).length, 2);

  await second.evaluate(() => window.client.close());
  await until(() => proxy.openStreams(topic) === 0, "the stream to close");
  await context.close();
});

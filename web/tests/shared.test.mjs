// `shared: true`: tabs of one origin holding the same credentials share a
// single stream, another tab takes over (resuming after the last id) when
// the leading tab goes away, and tabs of different accounts never share.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { mintToken, publish, startBrowser, startProxy, startServer, until } from "./support/harness.mjs";

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

/** A browser context (one origin's tabs) that records every BroadcastChannel
 * name and posted message, to check no raw token travels between tabs. */
async function newContext() {
  const context = await browser.newContext();
  await context.addInitScript(() => {
    window.channelTraffic = [];
    const Native = window.BroadcastChannel;
    window.BroadcastChannel = class extends Native {
      constructor(name) {
        super(name);
        window.channelTraffic.push(`name ${name}`);
      }
      postMessage(message) {
        window.channelTraffic.push(JSON.stringify(message));
        super.postMessage(message);
      }
    };
  });
  return context;
}

/** A tab with a shared client; `nextToken` is what its getToken returns. */
async function openTab(context, options, { nextToken } = {}) {
  const page = await context.newPage();
  page.on("pageerror", (error) => console.error("page error:", error));
  await page.goto(proxy.origin + "/");
  await page.waitForFunction(() => window.loaded === true);
  await page.evaluate(
    async ({ options, nextToken }) => {
      window.log = [];
      window.errors = [];
      if (nextToken) options.getToken = async () => nextToken;
      window.client = await window.tidings.connect("/events", { ...options, shared: true, initialDelay: 50 });
      window.client.on("n", (data) => window.log.push(data));
      window.client.onError((e) => window.errors.push({ kind: e.kind, status: e.status ?? null }));
    },
    { options, nextToken },
  );
  return page;
}

const logOf = (page) => page.evaluate(() => window.log);
const stateOf = (page) => page.evaluate(() => window.client.state.kind);
const leads = (page) => page.evaluate(() => window.client.isLeader);
const settle = () => new Promise((resolve) => setTimeout(resolve, 300));

/** No raw token in a channel name, a channel message or a lock name. */
async function assertNoTokenShared(pages, tokens) {
  for (const page of pages) {
    const traffic = await page.evaluate(() => window.channelTraffic);
    const locks = await page.evaluate(async () => {
      const { held, pending } = await navigator.locks.query();
      return [...held, ...pending].map((lock) => lock.name);
    });
    assert.ok(traffic.length > 0, "the tab used a channel");
    for (const token of tokens) {
      const signature = token.split(".")[2];
      for (const text of [...traffic, ...locks]) {
        assert.ok(!text.includes(token) && !text.includes(signature), `a token leaked into ${text}`);
      }
    }
  }
}

test("tabs share one stream and hand it over when the leader closes", { timeout: 60_000 }, async () => {
  const topic = `demo:shared${process.pid}`;
  const context = await newContext();
  const first = await openTab(context, { topics: [topic] });
  await until(async () => (await stateOf(first)) === "open", "the first tab's stream");
  const second = await openTab(context, { topics: [topic] });
  await until(async () => (await stateOf(second)) === "open", "the follower to see the open stream");

  const ids = await publish(server.origin, [1, 2].map((n) => ({ topic, type: "n", data: n })));
  await until(async () => (await logOf(first)).length === 2 && (await logOf(second)).length === 2, "both tabs to get 2 events");
  assert.deepEqual(await logOf(first), [1, 2]);
  assert.deepEqual(await logOf(second), [1, 2]);
  assert.equal(proxy.openStreams(topic), 1, "one stream for both tabs");
  // The leader's stream, and the follower's short check of its own credentials.
  assert.equal(proxy.requestsFor(topic).length, 2);
  assert.equal(await leads(first), true);
  assert.equal(await leads(second), false);

  await first.close(); // the leading tab goes away: its lock is released
  await until(() => leads(second), "the second tab to lead");
  await until(() => proxy.openStreams(topic) === 1, "the new leader's stream");
  const takeover = proxy.requestsFor(topic).at(-1);
  assert.equal(takeover.url.searchParams.get("lastEventId"), ids[1], "the new leader resumes after the last id");
  await publish(server.origin, [{ topic, type: "n", data: 3 }]);
  await until(async () => (await logOf(second)).length === 3, "the third event");
  assert.deepEqual(await logOf(second), [1, 2, 3]);
  assert.equal(proxy.requestsFor(topic).length, 3);

  await second.evaluate(() => window.client.close());
  await until(() => proxy.openStreams(topic) === 0, "the stream to close");
  await context.close();
});

test("tabs of two accounts never share: a refused tab hears nothing, and logout in one does not feed the other", { timeout: 60_000 }, async () => {
  const acme = `order:status:acme${process.pid}`;
  const topic = `${acme}:42`;
  const acmeToken = mintToken({ subscribe: [`${acme}:>`], sub: "alice" });
  const globexToken = mintToken({ subscribe: [`order:status:globex${process.pid}:>`], sub: "bob" });
  const publisher = mintToken({ publish: [`${acme}:>`] });
  const context = await newContext();

  const a = await openTab(context, { topics: [topic], token: acmeToken });
  await until(async () => (await stateOf(a)) === "open", "tab A's stream");
  // Tab B asks for acme's topic with globex's token: its own credentials
  // are checked, refused, and it never joins A's stream.
  const b = await openTab(context, { topics: [topic], token: globexToken });
  await until(async () => (await stateOf(b)) === "closed", "tab B refused");
  assert.deepEqual(await b.evaluate(() => window.errors), [{ kind: "auth", status: 403 }]);

  await publish(server.origin, [{ topic, type: "n", data: 1 }], publisher);
  await until(async () => (await logOf(a)).length === 1, "A's event");

  // A refreshed token of the same account (same subject and grants, another
  // expiry): that tab shares A's stream.
  const acmeRefreshed = mintToken({ subscribe: [`${acme}:>`], sub: "alice", ttl: "2h" });
  assert.notEqual(acmeRefreshed, acmeToken);
  const c = await openTab(context, { topics: [topic], token: acmeRefreshed });
  await until(async () => (await stateOf(c)) === "open", "tab C following A");
  assert.equal(await leads(c), false);
  assert.equal(proxy.openStreams(topic), 1, "C shares A's stream");
  await publish(server.origin, [{ topic, type: "n", data: 2 }], publisher);
  await until(async () => (await logOf(c)).length === 1, "C's event");

  // Logout in A: C takes over with its own token; B still hears nothing.
  await a.evaluate(() => window.client.close());
  await until(() => leads(c), "C to lead");
  await until(() => proxy.openStreams(topic) === 1, "C's own stream");
  const takeover = proxy.requestsFor(topic).at(-1);
  assert.equal(takeover.url.searchParams.get("access_token"), acmeRefreshed, "C leads with its own token");
  await publish(server.origin, [{ topic, type: "n", data: 3 }], publisher);
  await until(async () => (await logOf(c)).length === 2, "C's second event");
  await settle();
  assert.deepEqual(await logOf(a), [1, 2]);
  assert.deepEqual(await logOf(c), [2, 3]);
  assert.deepEqual(await logOf(b), [], "the globex tab never sees acme's events");
  assert.equal(await stateOf(b), "closed");

  await assertNoTokenShared([a, b, c], [acmeToken, acmeRefreshed, globexToken]);
  await c.evaluate(() => window.client.close());
  await context.close();
});

test("a token of another account in the leading tab takes that tab out of the group", { timeout: 60_000 }, async () => {
  const topic = `demo:switch${process.pid}`;
  const alice = mintToken({ subscribe: ["demo:>"], sub: "alice" });
  const alice2 = mintToken({ subscribe: ["demo:>"], sub: "alice", ttl: "2h" });
  const bob = mintToken({ subscribe: ["demo:>"], sub: "bob", ttl: "3h" });
  const bob2 = mintToken({ subscribe: ["demo:>"], sub: "bob", ttl: "4h" });
  const context = await newContext();

  // A (alice, leading) and C (alice) share; D (bob) has a stream of its own.
  const a = await openTab(context, { topics: [topic], token: alice }, { nextToken: bob2 });
  await until(async () => (await stateOf(a)) === "open", "A's stream");
  const c = await openTab(context, { topics: [topic], token: alice2 });
  await until(async () => (await stateOf(c)) === "open", "C following A");
  const d = await openTab(context, { topics: [topic], token: bob });
  await until(async () => (await stateOf(d)) === "open", "D's stream");
  assert.equal(await leads(d), true, "another account: a group of its own");
  assert.equal(proxy.openStreams(topic), 2);

  // A's token expires and its getToken answers with bob's account (the user
  // switched accounts in that tab): A leaves alice's group for bob's.
  proxy.expireStreams(topic, ({ url }) => url.searchParams.get("access_token") === alice);
  await until(() => leads(c), "C to take alice's stream over");
  await until(async () => proxy.openStreams(topic) === 2 && (await stateOf(a)) === "open", "A in bob's group");
  assert.equal(await leads(a), false, "D leads bob's group");
  const aliceStream = proxy.requestsFor(topic).filter((r) => r.url.searchParams.get("access_token") === alice2).at(-1);
  assert.ok(aliceStream, "alice's group resumed with C's own token");

  const [id] = await publish(server.origin, [{ topic, type: "n", data: "after the switch" }]);
  for (const page of [a, c, d]) await until(async () => (await logOf(page)).length === 1, "one event in every tab");
  await settle();
  for (const page of [a, c, d]) assert.deepEqual(await logOf(page), ["after the switch"]);
  assert.equal(await a.evaluate(() => window.client.lastEventId), id);
  assert.deepEqual(await a.evaluate(() => window.errors), [], "a switch is not an error");
  await assertNoTokenShared([a, c, d], [alice, alice2, bob, bob2]);
  for (const page of [a, c, d]) await page.evaluate(() => window.client.close());
  await until(() => proxy.openStreams(topic) === 0, "every stream closed");
  await context.close();
});
